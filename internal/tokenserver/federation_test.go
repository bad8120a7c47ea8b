package tokenserver

import (
	"flag"
	"testing"
)

func TestFederatedIssuerFlags(t *testing.T) {
	for sentence, tc := range map[string]struct {
		args []string
		want []FederatedIssuer
		ok   bool
	}{
		"an issuer alone":                         {[]string{"--federated-issuer=https://token.actions.example.com"}, []FederatedIssuer{{Issuer: "https://token.actions.example.com"}}, true},
		"an issuer and its JWKS URL":              {[]string{"--federated-issuer=https://oidc.other-cluster.example,https://keys.example/jwks"}, []FederatedIssuer{{Issuer: "https://oidc.other-cluster.example", JWKSURL: "https://keys.example/jwks"}}, true},
		"repeated, each issuer":                   {[]string{"--federated-issuer=https://a.example", "--federated-issuer=https://b.example"}, []FederatedIssuer{{Issuer: "https://a.example"}, {Issuer: "https://b.example"}}, true},
		"an empty issuer is refused":              {[]string{"--federated-issuer="}, nil, false},
		"a relative issuer is refused":            {[]string{"--federated-issuer=issuer.example"}, nil, false},
		"an empty JWKS after a comma is refused":  {[]string{"--federated-issuer=https://a.example,"}, nil, false},
		"a JWKS URL of another scheme is refused": {[]string{"--federated-issuer=https://a.example,file:///etc/keys"}, nil, false},
	} {
		t.Run(sentence, func(t *testing.T) {
			o, err := ParseArgs(flag.NewFlagSet("t", flag.ContinueOnError), append([]string{"--issuer-url=https://m2m.example"}, tc.args...))
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if tc.ok && len(o.FederatedIssuers) != len(tc.want) {
				t.Fatalf("got %+v", o.FederatedIssuers)
			}
			for i := range tc.want {
				if o.FederatedIssuers[i] != tc.want[i] {
					t.Fatalf("got %+v, want %+v", o.FederatedIssuers, tc.want)
				}
			}
		})
	}
}
