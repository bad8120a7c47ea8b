package e2e

import (
	"strings"
	"testing"
)

// An https issuer on a plain listener is no install at all (clients that follow the issuer speak
// TLS to it): the chart refuses it with what to change, and renders the two that agree.
func TestTheChartRefusesAnHTTPSIssuerWithTLSOff(t *testing.T) {
	_, err := helmCommand(t, "template", "m2m", chartDir(), "--set", "issuerURL=https://m2m.example.com", "--set", "tls.enabled=false")
	if err == nil || !strings.Contains(err.Error(), "keep tls.enabled=true") || !strings.Contains(err.Error(), "http:// issuerURL") {
		t.Fatalf("an https issuer with tls.enabled=false: %v, want a refusal that says what to change", err)
	}
	for sentence, tc := range map[string]struct {
		set  []string
		want string
	}{
		"an http issuer with TLS off serves plain HTTP": {[]string{"issuerURL=http://m2m.example.com", "tls.enabled=false"}, "--listen-address=:8080"},
		"the default issuer with TLS off is http":       {[]string{"tls.enabled=false"}, "--issuer-url=http://m2m-token-server.m2m-system.svc:8080"},
		"an https issuer with TLS on serves HTTPS":      {[]string{"issuerURL=https://m2m.example.com", "tls.enabled=true"}, "--tls-cert-file="},
	} {
		t.Run(sentence, func(t *testing.T) {
			var args []string
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			if out := string(renderChart(t, args...)); !strings.Contains(out, tc.want) {
				t.Fatalf("the rendering lacks %s", tc.want)
			}
		})
	}
}
