package tokenserver

import (
	"net/http"
	"testing"
)

func TestMetadataAdvertisesURLsDerivedFromTheIssuer(t *testing.T) {
	f := newFixture(t, "")
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		resp, body := f.do(t, call{method: http.MethodGet, path: path})
		if resp.StatusCode != 200 || body["issuer"] != testIssuer || body["token_endpoint"] != testIssuer+"/oauth2/token" ||
			body["jwks_uri"] != testIssuer+"/.well-known/jwks.json" || body["introspection_endpoint"] != testIssuer+"/oauth2/introspect" {
			t.Fatalf("%s: %v", path, body)
		}
		grants, _ := body["grant_types_supported"].([]any)
		if len(grants) != 1 || grants[0] != "client_credentials" {
			t.Fatalf("grant types %v", grants)
		}
	}
}
