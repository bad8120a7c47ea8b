package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// publicDoorValues turns every part of the public door on: the chart's own Gateway, an Ingress
// and the public certificate from cert-manager.
const publicDoorValues = `
issuerURL: https://auth.example.com
previousIssuerURL: https://m2m-token-server.m2m-system.svc
publicDoor:
  host: auth.example.com
  gateway: {enabled: true, gatewayClassName: public}
  ingress:
    enabled: true
    className: nginx
    annotations: {nginx.ingress.kubernetes.io/backend-protocol: HTTPS}
  tls:
    secretName: auth-example-com-tls
    certManager: {enabled: true, issuerRef: {name: letsencrypt}}
`

// gatewayDoor are the chart values of config/public-door.
var gatewayDoor = []string{
	"--set", "publicDoor.host=auth.example.com",
	"--set", "issuerURL=https://auth.example.com",
	"--set", "publicDoor.gateway.enabled=true",
	"--set", "publicDoor.gateway.gatewayClassName=public",
	"--set", "publicDoor.tls.certManager.enabled=true",
	"--set", "publicDoor.tls.certManager.issuerRef.name=letsencrypt",
}

// The chart with a Gateway of its own and cert-manager renders config/public-door object by
// object: one design of the door, two ways to install it.
func TestTheChartsPublicDoorIsConfigPublicDoor(t *testing.T) {
	sameObjects(t, renderConfig(t, "public-door"), renderChart(t, gatewayDoor...))
}

// The door's objects of config/public-door and of the chart (its own Gateway, an Ingress and a
// Certificate; or a route attached to a Gateway of the administrator's) are accepted by a real
// API server with the Gateway API's and cert-manager's CRDs from their pinned modules. The
// Gateway re-encrypts to the token server: the BackendTLSPolicy targets the token server's
// Service, expects the Service's DNS name, and trusts the ConfigMap where the manager publishes
// the CA bundle.
func TestThePublicDoorsObjectsAreAcceptedWithTheirRealCRDs(t *testing.T) {
	installOptionalCRDs(t)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		rendered func(ns string) []byte
		want     []string
	}{
		"config/public-door": {func(string) []byte { return renderConfig(t, "public-door") }, []string{"Gateway", "HTTPRoute", "BackendTLSPolicy", "Certificate"}},
		"the chart with a Gateway of its own, an Ingress and cert-manager": {func(ns string) []byte {
			return renderChartIn(t, ns, "-f", writeValues(t, publicDoorValues))
		}, []string{"Gateway", "HTTPRoute", "BackendTLSPolicy", "Ingress", "Certificate"}},
		"the chart attached to the administrator's Gateway": {func(ns string) []byte {
			return renderChartIn(t, ns, "--set", "publicDoor.host=auth.example.com", "--set", "issuerURL=https://auth.example.com", "--set", "publicDoor.gateway.enabled=true",
				"--set-json", `publicDoor.gateway.parentRefs=[{"name":"public","namespace":"gateway-system","sectionName":"https"}]`)
		}, []string{"HTTPRoute", "BackendTLSPolicy"}},
	} {
		t.Run(name, func(t *testing.T) {
			ns := namespace(t)
			kinds := map[string]bool{}
			for _, obj := range decodeObjects(t, tc.rendered(ns)) {
				group := obj.GroupVersionKind().Group
				if group != "gateway.networking.k8s.io" && group != "cert-manager.io" && obj.GetKind() != "Ingress" {
					continue
				}
				if obj.GetKind() == "BackendTLSPolicy" {
					checkBackendTLSPolicy(t, obj)
				}
				obj.SetNamespace(ns)
				if err := env.Client.Patch(ctx, obj, client.Apply, client.FieldOwner("public-door-test"), client.ForceOwnership); err != nil {
					t.Fatalf("%s was refused: %v", objectKey(obj), err)
				}
				kinds[obj.GetKind()] = true
			}
			for _, want := range tc.want {
				if !kinds[want] {
					t.Errorf("no %s", want)
				}
			}
			if len(kinds) != len(tc.want) {
				t.Errorf("kinds %v, want %v", kinds, tc.want)
			}
		})
	}
}

// checkBackendTLSPolicy checks that policy makes the Gateway verify the token server as its
// certificate says it is, against the CA bundle the manager keeps.
func checkBackendTLSPolicy(t *testing.T, policy *unstructured.Unstructured) {
	t.Helper()
	var spec struct {
		TargetRefs []struct{ Group, Kind, Name string }
		Validation struct {
			Hostname          string
			CACertificateRefs []struct{ Group, Kind, Name string }
		}
	}
	raw, _ := json.Marshal(policy.Object["spec"])
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	target := struct{ Group, Kind, Name string }{"", "Service", "m2m-token-server"}
	ca := struct{ Group, Kind, Name string }{"", "ConfigMap", m2mv1alpha1.TokenServerConfigMap}
	if len(spec.TargetRefs) != 1 || spec.TargetRefs[0] != target {
		t.Errorf("the BackendTLSPolicy targets %+v, want the token server's Service", spec.TargetRefs)
	}
	if want := "m2m-token-server." + policy.GetNamespace() + ".svc"; spec.Validation.Hostname != want {
		t.Errorf("the BackendTLSPolicy expects %q, want the Service's name %q", spec.Validation.Hostname, want)
	}
	// The Gateway API reads the bundle from the key ca.crt, where the manager writes it.
	if len(spec.Validation.CACertificateRefs) != 1 || spec.Validation.CACertificateRefs[0] != ca || m2mv1alpha1.SecretKeyCA != "ca.crt" {
		t.Errorf("the BackendTLSPolicy trusts %+v, want the ConfigMap %s", spec.Validation.CACertificateRefs, m2mv1alpha1.TokenServerConfigMap)
	}
}

// routedPaths are the paths that the HTTPRoutes and Ingresses of a rendering send to the token
// server, by kind.
func routedPaths(t *testing.T, rendered []byte) map[string][]string {
	t.Helper()
	paths := map[string][]string{}
	for _, obj := range decodeObjects(t, rendered) {
		switch obj.GetKind() {
		case "HTTPRoute":
			rules, _, _ := unstructured.NestedSlice(obj.Object, "spec", "rules")
			for _, r := range rules {
				matches, _, _ := unstructured.NestedSlice(r.(map[string]any), "matches")
				for _, m := range matches {
					v, _, _ := unstructured.NestedString(m.(map[string]any), "path", "value")
					paths["HTTPRoute"] = append(paths["HTTPRoute"], v)
				}
			}
		case "Ingress":
			ing := &networkingv1.Ingress{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, ing); err != nil {
				t.Fatal(err)
			}
			for _, r := range ing.Spec.Rules {
				for _, p := range r.HTTP.Paths {
					paths["Ingress"] = append(paths["Ingress"], p.Path)
				}
			}
		}
	}
	return paths
}

// The public door routes what clients and verifiers outside use, and nothing else: every
// endpoint that the token server's discovery document names and the discovery documents, each a
// path that the running token server serves; not /refusals, which takes a Kubernetes bearer
// token, nor the probes. The Gateway, the Ingress and config/ agree.
func TestThePublicDoorRoutesOnlyThePathsClientsOutsideUse(t *testing.T) {
	var doc map[string]any
	resp, err := http.Get(issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"}
	for _, key := range []string{"token_endpoint", "jwks_uri", "introspection_endpoint", "m2m_revocation_list_uri"} {
		u, err := url.Parse(doc[key].(string))
		if err != nil || u.Path == "" {
			t.Fatalf("the discovery document's %s is %v", key, doc[key])
		}
		want = append(want, u.Path)
	}
	slices.Sort(want)

	chart := routedPaths(t, renderChart(t, "-f", writeValues(t, publicDoorValues)))
	config := routedPaths(t, renderConfig(t, "public-door"))
	for name, got := range map[string][]string{"the chart's HTTPRoute": chart["HTTPRoute"], "the chart's Ingress": chart["Ingress"], "config/public-door's HTTPRoute": config["HTTPRoute"]} {
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s routes %v, want %v", name, got, want)
		}
	}
	for _, p := range want {
		resp, err := http.Get(issuer + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			t.Errorf("the token server does not serve %s", p)
		}
	}
}

// A new install with a public door: both binaries take https://<host> as the issuer and the
// Service as the URL pods reach (--in-cluster-url), the token server's certificate (from the
// cluster's CA) covers the Service's name and not the public one, the token port stays open to
// every source (the Gateway's and the Ingress controller's pods among them), and a host alone
// renders no door objects.
func TestANewInstallWithAPublicDoorHasThePublicIssuerAndTheServiceForPods(t *testing.T) {
	ns := namespace(t)
	rendered := renderChartIn(t, ns, "--set", "publicDoor.host=auth.example.com", "--set", "issuerURL=https://auth.example.com",
		"--set", "tls.certManager.enabled=true", "--set", "tls.certManager.issuerRef.name=m2m-ca-issuer")
	service := "https://m2m-token-server." + ns + ".svc"
	if args := containerArgs(t, rendered, "m2m-manager", "manager"); !slices.Contains(args, "--issuer-url=https://auth.example.com") || !slices.Contains(args, "--in-cluster-url="+service) {
		t.Errorf("the manager's args %v, want the issuer https://auth.example.com and the in-cluster URL %s", args, service)
	}
	if o := tokenServerOptions(t, rendered); o.IssuerURL != "https://auth.example.com" || o.InClusterURL != service || o.PreviousIssuerURL != "" {
		t.Errorf("the token server's issuer %q, in-cluster URL %q, previous issuer %q; want https://auth.example.com, %s and none", o.IssuerURL, o.InClusterURL, o.PreviousIssuerURL, service)
	}
	for _, obj := range decodeObjects(t, rendered) {
		switch obj.GetKind() {
		case "Gateway", "HTTPRoute", "BackendTLSPolicy", "Ingress":
			t.Errorf("a host alone renders %s", objectKey(obj))
		case "Certificate":
			names, _, _ := unstructured.NestedStringSlice(obj.Object, "spec", "dnsNames")
			if !slices.Contains(names, "m2m-token-server."+ns+".svc") || slices.Contains(names, "auth.example.com") {
				t.Errorf("the token server's certificate covers %v; want the Service's name, and not the public one, which the public certificate covers", names)
			}
		case "NetworkPolicy":
			np := &networkingv1.NetworkPolicy{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, np); err != nil {
				t.Fatal(err)
			}
			for _, rule := range np.Spec.Ingress {
				for _, p := range rule.Ports {
					if p.Port.String() == "https" && len(rule.From) != 0 {
						t.Errorf("%s limits the token port to %v", obj.GetName(), rule.From)
					}
				}
			}
		}
	}
}

// An upgrade that adds a public door to an install with another issuer fails, naming both
// issuers and the migration, rather than change the issuer that resource servers pin and that
// assertions carry as their audience. Said explicitly (issuerURL and previousIssuerURL), the
// upgrade renders the new issuer for both binaries and the previous one for the token server.
// An install whose issuer is already the door's keeps it without a word.
func TestAnUpgradeToAPublicDoorChangesTheIssuerOnlyWhenToldTo(t *testing.T) {
	ns := namespace(t)
	old := "https://m2m-token-server." + ns + ".svc"
	installedTokenServer(t, ns, old)
	_, err := renderOnTheServer(t, ns, "--set", "publicDoor.host=auth.example.com")
	for _, want := range []string{old, "https://auth.example.com", "issuerURL=https://auth.example.com", "previousIssuerURL=" + old, "docs/operations.md#moving-to-a-public-issuer"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("an upgrade to a public door without issuerURL: %v, want a refusal that says %q", err, want)
		}
	}

	// The new issuer alone, without keeping the old one accepted, is no move either.
	_, err = renderOnTheServer(t, ns, "--set", "publicDoor.host=auth.example.com", "--set", "issuerURL=https://auth.example.com")
	if err == nil || !strings.Contains(err.Error(), "previousIssuerURL="+old) {
		t.Fatalf("an upgrade to a public door with issuerURL alone: %v, want a refusal that says previousIssuerURL=%s", err, old)
	}

	out, err := renderOnTheServer(t, ns, "--set", "publicDoor.host=auth.example.com",
		"--set", "issuerURL=https://auth.example.com", "--set", "previousIssuerURL="+old)
	if err != nil {
		t.Fatal(err)
	}
	manager := containerArgs(t, out, "m2m-manager", "manager")
	if !slices.Contains(manager, "--issuer-url=https://auth.example.com") || !slices.Contains(manager, "--in-cluster-url="+old) || strings.Contains(strings.Join(manager, " "), "--previous-issuer-url") {
		t.Errorf("the manager's args %v, want the new issuer and the Service, and no previous issuer", manager)
	}
	if o := tokenServerOptions(t, out); o.IssuerURL != "https://auth.example.com" || o.InClusterURL != old || o.PreviousIssuerURL != old {
		t.Errorf("the token server's issuer %q, in-cluster URL %q, previous issuer %q; want https://auth.example.com, %s and %s", o.IssuerURL, o.InClusterURL, o.PreviousIssuerURL, old, old)
	}

	moved := namespace(t)
	installedTokenServer(t, moved, "https://auth.example.com")
	out, err = renderOnTheServer(t, moved, "--set", "publicDoor.host=auth.example.com")
	if err != nil {
		t.Fatalf("an upgrade of an install whose issuer is the door's: %v", err)
	}
	if !slices.Contains(containerArgs(t, out, "m2m-token-server", "token-server"), "--issuer-url=https://auth.example.com") {
		t.Error("the upgrade does not keep the door's issuer")
	}
}

// Values that make no working door are refused, each with what to change; a host alone (for a
// proxy of the administrator's own) is a door.
func TestTheChartRefusesAPublicDoorThatCannotWork(t *testing.T) {
	host := []string{"--set", "publicDoor.host=auth.example.com", "--set", "issuerURL=https://auth.example.com"}
	withHost := func(set ...string) []string {
		var args []string
		for _, s := range set {
			args = append(args, "--set", s)
		}
		return append(slices.Clone(host), args...)
	}
	for sentence, tc := range map[string]struct {
		args []string
		want string // "" when the values are accepted
	}{
		"a Gateway without a host":                                      {[]string{"--set", "publicDoor.gateway.enabled=true", "--set", "publicDoor.gateway.gatewayClassName=public"}, "needs publicDoor.host"},
		"an Ingress without a host":                                     {[]string{"--set", "publicDoor.ingress.enabled=true", "--set", "publicDoor.tls.secretName=x"}, "needs publicDoor.host"},
		"a Gateway neither attached nor made":                           {withHost("publicDoor.gateway.enabled=true"), "needs parentRefs"},
		"a Gateway both attached and made":                              {withHost("publicDoor.gateway.enabled=true", "publicDoor.gateway.gatewayClassName=public", "publicDoor.gateway.parentRefs[0].name=public"), "not both"},
		"the chart's Gateway without a certificate":                     {withHost("publicDoor.gateway.enabled=true", "publicDoor.gateway.gatewayClassName=public"), "needs the public certificate"},
		"an Ingress without a certificate":                              {withHost("publicDoor.ingress.enabled=true"), "needs the public certificate"},
		"cert-manager without an issuer":                                {withHost("publicDoor.tls.certManager.enabled=true"), "needs publicDoor.tls.certManager.issuerRef.name"},
		"a door with TLS off":                                           {withHost("tls.enabled=false"), "needs tls.enabled=true"},
		"a door with an http issuer":                                    {withHost("issuerURL=http://auth.example.com"), "set issuerURL to https://auth.example.com"},
		"a door with another https issuer":                              {withHost("issuerURL=https://m2m.example.com"), "set issuerURL to https://auth.example.com"},
		"a previous issuer that is the issuer":                          {withHost("previousIssuerURL=https://auth.example.com"), "is the issuer itself"},
		"a host alone, for a proxy of the administrator's":              {host, ""},
		"a host without the issuer, which a render cannot tell is new":  {[]string{"--set", "publicDoor.host=auth.example.com"}, "needs issuerURL set, to https://auth.example.com"},
		"a Gateway of the administrator's, which holds the certificate": {withHost("publicDoor.gateway.enabled=true", "publicDoor.gateway.parentRefs[0].name=public"), ""},
	} {
		t.Run(sentence, func(t *testing.T) {
			_, err := helmCommand(t, append([]string{"template", "m2m", chartDir()}, tc.args...)...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("%v, want a refusal that says %q", err, tc.want)
			}
		})
	}
}
