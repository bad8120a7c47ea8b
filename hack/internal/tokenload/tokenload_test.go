package tokenload

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
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
