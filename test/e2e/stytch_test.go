package e2e

import (
	"context"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"sigs.k8s.io/yaml"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// The client of Stytch's M2M guide, as a manifest: a name, a description, scopes and trusted
// metadata, and no audience.
const stytchGuideClient = `
apiVersion: m2m.dev/v1alpha1
kind: M2MClient
metadata: {name: foo-service, namespace: default}
spec:
  clientName: Foo Service
  description: M2M Guide
  scopes: ["read:settings", "write:settings"]
  trustedMetadata: {api_version: v2}
`

// audienceOf returns the "aud" of a token the test trusts (its signature is checked elsewhere).
func audienceOf(t *testing.T, raw string) []string {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err != nil {
		t.Fatal(err)
	}
	aud, err := claims.GetAudience()
	if err != nil {
		t.Fatal(err)
	}
	return aud
}

// A client that names no audience gets tokens from a token server with default settings, with
// the JSON body of Stytch's docs and with x/oauth2's clientcredentials; their audience is the
// issuer, and pkg/m2mauth accepts them with the issuer as the audience and the scopes required.
func TestAStytchShapedClientWithNoAudiencesGetsTokensWhoseAudienceIsTheIssuer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj := &m2mv1alpha1.M2MClient{}
	if err := yaml.UnmarshalStrict([]byte(stytchGuideClient), obj); err != nil {
		t.Fatal(err)
	}
	obj.Namespace = namespace(t)
	s := readyClient(t, obj)
	id, secret := string(s.Data[m2mv1alpha1.SecretKeyClientID]), string(s.Data[m2mv1alpha1.SecretKeyClientSecret])

	code, out := postToken(t, "application/json", `{"client_id":"`+id+`","client_secret":"`+secret+`","grant_type":"client_credentials"}`)
	if code != 200 || out["scope"] != "read:settings write:settings" {
		t.Fatalf("Stytch's JSON body: %d %v", code, out)
	}
	fromJSON, _ := out["access_token"].(string)
	if aud := audienceOf(t, fromJSON); len(aud) != 1 || aud[0] != issuer {
		t.Fatalf("the JSON body's token has aud %v, want [%s]", aud, issuer)
	}

	tok, err := credentialsOf(s, "read:settings").Token(ctx)
	if err != nil {
		t.Fatalf("clientcredentials: %v", err)
	}
	if aud := audienceOf(t, tok.AccessToken); len(aud) != 1 || aud[0] != issuer {
		t.Fatalf("the clientcredentials token has aud %v, want [%s]", aud, issuer)
	}

	v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences(issuer))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	payments, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://payments.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer payments.Close()
	for name, raw := range map[string]string{"JSON body": fromJSON, "clientcredentials": tok.AccessToken} {
		claims, err := v.Authenticate(ctx, raw, m2mauth.RequiredScopes("read:settings"))
		if err != nil {
			t.Fatalf("m2mauth refused the %s token: %v", name, err)
		}
		if claims.ClientID != id {
			t.Fatalf("the %s token is for %q, want %q", name, claims.ClientID, id)
		}
		// trustedMetadata describes the client to those who read the M2MClient; tokens do not
		// carry it (docs/api.md).
		if v, ok := claims.Custom["api_version"]; ok {
			t.Fatalf("the %s token carries the client's trustedMetadata api_version: %v", name, v)
		}
		// A service that wants tokens meant for it alone checks its own audience: the shared
		// default audience is not it.
		if _, err := payments.Authenticate(ctx, raw); err == nil {
			t.Fatalf("the %s token, for the installation, passed as a token for payments", name)
		}
	}
}
