package tokenload

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

// server answers 200 to every client but "refused", and records the client IDs it saw.
func server(t *testing.T) (*httptest.Server, func() map[string]int) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PostFormValue("client_id")
		mu.Lock()
		seen[id]++
		mu.Unlock()
		if id == "refused" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"x"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

func TestClosedLoopCyclesThroughEveryClientAndCountsFailures(t *testing.T) {
	srv, seen := server(t)
	creds := func(i int) (string, string) {
		if i == 3 {
			return "refused", "s"
		}
		return fmt.Sprintf("c%d", i), "s"
	}
	run := Load{Issuer: srv.URL, Clients: 5, Workers: 2, Credentials: creds}.Closed(context.Background())
	time.Sleep(200 * time.Millisecond)
	res := run.Stop()
	if res.OK == 0 || res.Non2xx[http.StatusUnauthorized] == 0 || res.TransportErrors != 0 {
		t.Fatalf("got %d OK, %v non-2xx, %d transport errors", res.OK, res.Non2xx, res.TransportErrors)
	}
	if res.Requests() != int64(len(res.Latencies)) || res.Failed() != res.Non2xx[http.StatusUnauthorized] {
		t.Errorf("%d requests, %d latencies, %d failed", res.Requests(), len(res.Latencies), res.Failed())
	}
	for _, id := range []string{"c0", "c1", "c2", "refused", "c4"} {
		if seen()[id] == 0 {
			t.Errorf("client %s was never asked for", id)
		}
	}
}

func TestOpenLoopHoldsTheRate(t *testing.T) {
	srv, _ := server(t)
	creds := func(i int) (string, string) { return fmt.Sprintf("c%d", i), "s" }
	run := Load{Issuer: srv.URL, Clients: 10, Workers: 4, Credentials: creds}.Open(context.Background(), 500)
	time.Sleep(time.Second)
	res := run.Stop()
	if res.Failed() != 0 || res.Missed != 0 {
		t.Fatalf("%d failed, %d missed", res.Failed(), res.Missed)
	}
	if r := res.Rate(); r < 350 || r > 600 {
		t.Errorf("rate %.0f/s, want about 500/s", r)
	}
}

func TestAServerThatDoesNotAnswerIsATransportError(t *testing.T) {
	srv, _ := server(t)
	srv.Close()
	run := Load{Issuer: srv.URL, Clients: 1, Workers: 1, Credentials: func(int) (string, string) { return "c", "s" }}.Closed(context.Background())
	time.Sleep(50 * time.Millisecond)
	res := run.Stop()
	if res.TransportErrors == 0 || res.OK != 0 || res.Failed() != res.TransportErrors {
		t.Fatalf("got %d transport errors, %d OK, %d failed", res.TransportErrors, res.OK, res.Failed())
	}
}

// dpopServer verifies the DPoP proof of every request as the token server does and records the
// proofs' key thumbprints and jtis; it refuses with 400 a request without a valid proof, and, with
// nonce set, one whose proof does not carry it, which it sends on every answer.
func dpopServer(t *testing.T, nonce string) (*httptest.Server, func() (keys, jtis map[string]int)) {
	var mu sync.Mutex
	keys, jtis := map[string]int{}, map[string]int{}
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opts := dpop.VerifyOptions{Method: http.MethodPost, URLs: []string{issuer.TokenURL(srv.URL)}}
		if nonce != "" {
			w.Header().Set("DPoP-Nonce", nonce)
			opts.Nonce = func(n string) error {
				if n != nonce {
					return errors.New("stale nonce")
				}
				return nil
			}
		}
		p, err := dpop.Verify(r.Header.Get("DPoP"), opts)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		keys[p.JKT]++
		jtis[p.JTI]++
		mu.Unlock()
		_, _ = w.Write([]byte(`{"access_token":"x","token_type":"DPoP"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, func() (map[string]int, map[string]int) {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(keys), maps.Clone(jtis)
	}
}

// With proofs made ahead as without: every proof is used once, a worker whose share runs out
// makes more, and each is valid.
func TestWithDPoPEveryRequestCarriesAFreshValidProofSignedWithItsWorkersKey(t *testing.T) {
	for _, ahead := range []int{0, 30} {
		t.Run(fmt.Sprintf("%d proofs made ahead", ahead), func(t *testing.T) { freshProofs(t, ahead) })
	}
}

func freshProofs(t *testing.T, ahead int) {
	srv, seen := dpopServer(t, "")
	creds := func(i int) (string, string) { return fmt.Sprintf("c%d", i), "s" }
	run := Load{Issuer: srv.URL, Clients: 5, Workers: 3, Credentials: creds, DPoP: true, ProofsAhead: ahead}.Closed(context.Background())
	time.Sleep(300 * time.Millisecond)
	res := run.Stop()
	if res.OK == 0 || res.Failed() != 0 {
		t.Fatalf("got %d OK, %v non-2xx, %d transport errors", res.OK, res.Non2xx, res.TransportErrors)
	}
	keys, jtis := seen()
	if ahead > 0 && int(res.OK) <= ahead {
		t.Fatalf("%d requests, not past the %d proofs made ahead", res.OK, ahead)
	}
	if len(keys) != 3 {
		t.Errorf("proofs were signed with %d keys, want one per worker (3)", len(keys))
	}
	for jti, n := range jtis {
		if n != 1 {
			t.Errorf("the proof with jti %q was sent %d times", jti, n)
		}
	}
}

func TestWithDPoPAWorkerPutsTheServersNonceInItsNextProof(t *testing.T) {
	srv, _ := dpopServer(t, "server-nonce")
	creds := func(i int) (string, string) { return fmt.Sprintf("c%d", i), "s" }
	run := Load{Issuer: srv.URL, Clients: 5, Workers: 2, Credentials: creds, DPoP: true}.Closed(context.Background())
	time.Sleep(300 * time.Millisecond)
	res := run.Stop()
	// Each worker's first proof has no nonce to carry and is refused; every later one carries it.
	if res.OK == 0 || res.Non2xx[http.StatusBadRequest] > 2 {
		t.Fatalf("got %d OK and %d refused, want at most one refusal per worker", res.OK, res.Non2xx[http.StatusBadRequest])
	}
}

func TestWithoutDPoPNoProofIsSent(t *testing.T) {
	srv, _ := dpopServer(t, "")
	run := Load{Issuer: srv.URL, Clients: 1, Workers: 1, Credentials: func(int) (string, string) { return "c", "s" }}.Closed(context.Background())
	time.Sleep(50 * time.Millisecond)
	res := run.Stop()
	if res.OK != 0 || res.Non2xx[http.StatusBadRequest] == 0 {
		t.Fatalf("got %d OK, %v non-2xx: a request carried a proof", res.OK, res.Non2xx)
	}
}
