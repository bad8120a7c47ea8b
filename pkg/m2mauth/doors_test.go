package m2mauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

const publicIssuer = "https://auth.example.com"

// An in-cluster resource server discovers the keys through the Service while the tokens name
// the public issuer, which it never contacts.
func TestWithDiscoveryURLVerifiesThePublicIssuersTokensWithKeysFetchedInside(t *testing.T) {
	k := genKey(t, signingkeys.ES256)
	var inside *httptest.Server
	inside = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": publicIssuer, "jwks_uri": inside.URL + "/jwks"})
		case "/jwks":
			_ = json.NewEncoder(w).Encode((&signingkeys.Set{Keys: []*signingkeys.Key{k}}).Published(t0, time.Hour))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(inside.Close)
	v, err := NewVerifier(context.Background(), publicIssuer, WithDiscoveryURL(inside.URL), WithHTTPClient(inside.Client()),
		WithAudiences("https://api.example.com"), WithClock(func() time.Time { return t0.Add(time.Minute) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	if _, err := v.Authenticate(context.Background(), mint(t, k, goodClaims(publicIssuer), nil)); err != nil {
		t.Fatalf("a token of the public issuer, keys from inside: %v", err)
	}
	if _, err := v.Authenticate(context.Background(), mint(t, k, goodClaims(inside.URL), nil)); err == nil {
		t.Fatal("a token naming the discovery URL as its issuer was accepted: the issuer is the public one")
	}
}

// Metadata over plain HTTP could name anyone's keys: an https issuer's is fetched over https
// only, wherever the caller points discovery.
func TestWithDiscoveryURLRefusesPlainHTTPForAnHTTPSIssuer(t *testing.T) {
	srv := newJWKSServer(t)
	if _, err := NewVerifier(context.Background(), publicIssuer, WithDiscoveryURL(srv.URL), WithAnyAudience()); !errors.Is(err, ErrJWKS) || srv.fetches.Load() != 0 {
		t.Fatalf("err %v after %d key fetches, want ErrJWKS and none", err, srv.fetches.Load())
	}
}

// PublicDoor sends token requests to the Secret's public_token_url; without the option they go
// to token_url, and with it on a Secret that has no public door the error says so.
func TestPublicDoorTakesTheSecretsPublicTokenURL(t *testing.T) {
	public := newFakeTokenServer(t, "s3cret-value", time.Hour)
	inside := newFakeTokenServer(t, "s3cret-value", time.Hour)
	dir := t.TempDir()
	mountSecret(t, dir, inside.URL, "s3cret-value", 1)
	if _, err := NewTokenSource(context.Background(), dir, PublicDoor()); err == nil || !strings.Contains(err.Error(), "no public door") {
		t.Fatalf("PublicDoor on a Secret without public_token_url: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, secretKeyPublicTokenURL), []byte(public.URL), 0o644); err != nil {
		t.Fatal(err)
	}
	for door, srv := range map[string]*fakeTokenServer{"public": public, "in-cluster": inside} {
		var opts []TokenSourceOption
		if door == "public" {
			opts = append(opts, PublicDoor())
		}
		ts, err := NewTokenSource(context.Background(), dir, opts...)
		if err != nil {
			t.Fatal(err)
		}
		before := srv.issued.Load()
		if _, err := ts.Token(); err != nil || srv.issued.Load() != before+1 {
			t.Fatalf("the %s door issued %d tokens (err %v), want one more", door, srv.issued.Load()-before, err)
		}
	}
}
