package m2mauth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// Two replicas whose views differ answer alternately behind one Service, so every answer is a
// new list: the verifier still waits 200 ms between requests instead of asking in a tight loop.
// The bound is an upper one (a slow machine asks less, never more).
func TestAVerifierBetweenReplicasThatDisagreeKeepsAGapBetweenRequests(t *testing.T) {
	var n atomic.Int64
	srv := issuerWithList(t, func(w http.ResponseWriter, r *http.Request, iss string, key *signingkeys.Key) {
		list, etag := map[string]int64{}, `"b"`
		if n.Add(1)%2 == 0 {
			list, etag = map[string]int64{"m2m-deleted": 253402300799}, `"a"`
		}
		now := time.Now()
		w.Header().Set("ETag", etag)
		_, _ = w.Write([]byte(mint(t, key, jwt.MapClaims{"iss": iss, "iat": now.Unix() - 1, "exp": now.Add(10 * time.Minute).Unix(), "not_before": list}, map[string]any{"typ": "revocation-list+jwt"})))
	})
	v, err := NewVerifier(context.Background(), srv.URL, WithAudiences("https://api.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	const window = 2 * time.Second
	time.Sleep(window)
	v.Close()
	// One request when the verifier is built, then at most one per 200 ms.
	if got, most := n.Load(), int64(window/(200*time.Millisecond))+2; got > most {
		t.Fatalf("%d list requests in %s, want at most %d", got, window, most)
	}
}

// issuerWithList is an issuer with metadata, a JWKS of one ES256 key, and list as its revocation
// list's handler.
func issuerWithList(t *testing.T, list func(w http.ResponseWriter, r *http.Request, iss string, key *signingkeys.Key)) *httptest.Server {
	t.Helper()
	key := genKey(t, signingkeys.ES256)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks", "m2m_revocation_list_uri": srv.URL + "/revocations"})
		case "/jwks":
			_ = json.NewEncoder(w).Encode((&signingkeys.Set{Keys: []*signingkeys.Key{key}}).Published(t0, time.Hour))
		case "/revocations":
			list(w, r, srv.URL, key)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}
