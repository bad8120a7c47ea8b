package failover

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// Two token-server replicas, each its own process, behind a round-robin front; clients ask for
// tokens without pause through an x/oauth2 client whose transport retries once on a connection
// error. One replica is killed with SIGKILL. No request may fail after its retry, and the
// survivor must answer every request sent after the kill.
func TestKillingATokenServerReplicaFailsNoRequestThatRetriesOnce(t *testing.T) {
	n := clientCount(t)
	const workers = 16
	managerConfig, tokenServerConfig := componentConfigs(t)
	ns := testenv.Namespace(t, env.Client)
	frontLn := listen(t)
	issuer := "http://" + frontLn.Addr().String()
	testenv.RunManager(t, managerConfig, controllers.Options{IssuerURL: issuer, WatchNamespaces: []string{ns}, SkipNameValidation: true})
	secrets := createClients(t, ns, n)

	kubeconfig := writeKubeconfig(t, tokenServerConfig)
	replicas, addrs := make([]*child, 2), make([]string, 2)
	for i := range replicas {
		ln := listen(t)
		addrs[i] = ln.Addr().String()
		file, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		replicas[i] = startChild(t, fmt.Sprintf("token-server-%d", i), roleTokenServer,
			[]string{kubeconfigEnv + "=" + kubeconfig, issuerEnv + "=" + issuer, namespaceEnv + "=" + ns}, file)
		// Only the replica may hold its socket: were the test's copy open, connections to a
		// dead replica would wait in the backlog instead of being refused.
		file.Close()
		ln.Close()
	}
	for _, a := range addrs {
		if err := testenv.WaitOK("http://"+a+"/readyz", settleTimeout(n)); err != nil {
			t.Fatal(err)
		}
	}
	f := startFront(frontLn, addrs)
	t.Cleanup(func() { _ = f.Close() })

	rt := &retryOnce{base: &http.Transport{MaxIdleConnsPerHost: workers}, pause: 200 * time.Millisecond}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: rt})
	load := startLoad(n, workers, func(i int) error {
		s := secrets[i]
		_, err := (&clientcredentials.Config{
			ClientID: string(s.Data[m2mv1alpha1.SecretKeyClientID]), ClientSecret: string(s.Data[m2mv1alpha1.SecretKeyClientSecret]),
			TokenURL: string(s.Data[m2mv1alpha1.SecretKeyTokenURL]), AuthStyle: oauth2.AuthStyleInParams,
		}).Token(ctx)
		return err
	})
	t.Cleanup(load.stop)
	load.waitEveryClientServedAfter(t, time.Time{})
	time.Sleep(time.Second)

	killedAt := time.Now()
	replicas[0].kill()
	deadAt := time.Now()
	load.waitEveryClientServedAfter(t, deadAt)
	time.Sleep(time.Until(deadAt.Add(2 * time.Second)))
	load.stop()

	if failed := load.failed.Load(); failed != 0 {
		t.Fatalf("%d of %d token requests failed after their retry; first: %v", failed, failed+load.ok.Load(), load.firstErr.Load())
	}
	var before, after [2]int
	retries := 0
	// The survivor carries all the load from the last connection error, or the last answer of
	// the dead replica, on.
	recovered := killedAt
	for _, o := range rt.results() {
		r, _ := strconv.Atoi(o.replica)
		if o.end.Before(killedAt) {
			before[r]++
		}
		if o.start.After(deadAt) {
			after[r]++
		}
		if !o.failedAt.IsZero() {
			retries++
			recovered = latest(recovered, o.failedAt)
		}
		if r == 0 {
			recovered = latest(recovered, o.end)
		}
	}
	if before[0] == 0 || before[1] == 0 {
		t.Fatalf("before the kill the replicas answered %v requests; both must carry load", before)
	}
	if after[0] != 0 || after[1] == 0 {
		t.Fatalf("of the requests sent after the kill, the dead replica answered %d and the survivor %d", after[0], after[1])
	}
	out, ok := f.takenOut(0)
	if _, survivorOut := f.takenOut(1); !ok || survivorOut {
		t.Fatalf("the front took the dead replica out: %v, the survivor: %v", ok, survivorOut)
	}
	t.Logf("%d clients, %d workers: %d token requests, %d failed after one retry, %d needed the retry",
		n, workers, load.ok.Load()+load.failed.Load(), load.failed.Load(), retries)
	t.Logf("before the kill the replicas answered %d and %d requests; after it the survivor answered %d", before[0], before[1], after[1])
	t.Logf("from the kill: %s until the front took the dead replica out, %s until the survivor carried all the load (the last connection error)",
		out.Sub(killedAt).Round(time.Millisecond), recovered.Sub(killedAt).Round(time.Millisecond))
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// retryOnce sends a request a second time when its first attempt gets no HTTP response (a
// connection error), after a pause, as x/oauth2 users do with a retrying transport under their
// http.Client (go-retryablehttp waits at least 1 s). An immediate retry would often take another
// pooled connection to the dead replica, closing at that very moment, and fail too. It records
// each request's outcome for the test.
type retryOnce struct {
	base  http.RoundTripper
	pause time.Duration

	mu       sync.Mutex
	outcomes []outcome
}

// outcome is what became of one request.
type outcome struct {
	start, end time.Time
	// replica is the one that answered (the front's replicaHeader); empty when none did.
	replica string
	// failedAt is when the first attempt failed, for a request that needed the retry.
	failedAt time.Time
}

func (r *retryOnce) RoundTrip(req *http.Request) (*http.Response, error) {
	o := outcome{start: time.Now()}
	resp, err := r.base.RoundTrip(req)
	if err != nil && req.Context().Err() == nil && req.GetBody != nil {
		o.failedAt = time.Now()
		time.Sleep(r.pause)
		again := req.Clone(req.Context())
		if again.Body, err = req.GetBody(); err == nil {
			resp, err = r.base.RoundTrip(again)
		}
	}
	o.end = time.Now()
	if err == nil {
		o.replica = resp.Header.Get(replicaHeader)
	}
	r.mu.Lock()
	r.outcomes = append(r.outcomes, o)
	r.mu.Unlock()
	return resp, err
}

func (r *retryOnce) results() []outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]outcome(nil), r.outcomes...)
}

// load is workers asking for tokens without pause, each taking clients in turn.
type load struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	// lastOK is when each client last got a token, in Unix nanoseconds.
	lastOK []atomic.Int64

	stopOnce sync.Once
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

// startLoad starts workers that call request for clients 0..n-1 in turn; an error is a failed
// request. It must name no secret.
func startLoad(n, workers int, request func(i int) error) *load {
	l := &load{lastOK: make([]atomic.Int64, n), stopCh: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w % n; ; i = (i + workers) % n {
				select {
				case <-l.stopCh:
					return
				default:
				}
				if err := request(i); err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v", clientName(i), err))
					continue
				}
				l.ok.Add(1)
				l.lastOK[i].Store(time.Now().UnixNano())
			}
		}()
	}
	return l
}

// stop ends the load and waits for the requests in flight.
func (l *load) stop() {
	l.stopOnce.Do(func() { close(l.stopCh) })
	l.wg.Wait()
}

// waitEveryClientServedAfter waits until every client has got a token after t.
func (l *load) waitEveryClientServedAfter(tb *testing.T, t time.Time) {
	tb.Helper()
	testenv.Eventually(tb, settleTimeout(len(l.lastOK)), func() error {
		for i := range l.lastOK {
			if l.lastOK[i].Load() <= t.UnixNano() {
				return fmt.Errorf("%s has had no token since %s (failed requests so far: %d)", clientName(i), t.Format(time.StampMilli), l.failed.Load())
			}
		}
		return nil
	})
}
