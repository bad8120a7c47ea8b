// Package tokenload asks a token server for tokens with the credentials of many clients, in turn,
// with form bodies: in a closed loop (each worker sends its next request when the last one is
// answered, which finds the rate the machine can sustain) or in an open loop (requests at a
// constant rate, whatever the answers take); optionally each request with a fresh DPoP proof,
// signed with a P-256 key of its worker's. bench-rotation, bench-token and the soak use it.
package tokenload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

// Credentials returns client i's ID and secret as its pod has them now.
type Credentials func(i int) (id, secret string)

// Load is who asks, and where.
type Load struct {
	// Issuer is the token server's issuer URL; requests go to its token endpoint.
	Issuer string
	// Clients is how many clients there are; requests cycle through all of them.
	Clients int
	// Credentials gives each request its client's credentials.
	Credentials Credentials
	// Workers is how many requests may be in flight at once, each on a connection of its own.
	Workers int
	// DPoP sends a DPoP proof (RFC 9449) made for each request, in the generator's time, as a
	// client that holds its proof key would: each worker signs with an ES256 key of its own and
	// puts the last DPoP-Nonce it was sent into its next proof.
	DPoP bool
	// ProofsAhead, with DPoP, is how many proofs the workers make, together, before the run
	// starts (each used once, with a jti of its own and the iat of when it was made), so that the
	// generator's signing does not take the cores from the server it measures; a worker that uses
	// its share up makes the rest as it goes. They carry no nonce: for a server without one.
	ProofsAhead int
}

// Result counts what a run sent and got.
type Result struct {
	// OK is the number of 2xx answers.
	OK int64
	// Non2xx counts the other answers by HTTP status.
	Non2xx map[int]int64
	// TransportErrors is the number of requests that got no answer.
	TransportErrors int64
	// Missed, in an open loop, is the number of requests never sent because every worker stayed
	// busy for a second's worth of requests: the rate was not held.
	Missed int64
	// Elapsed is how long the run lasted.
	Elapsed time.Duration
	// Latencies, sorted: in a closed loop from send to answer; in an open loop from when the
	// request was due, so that waiting for a free worker counts.
	Latencies []time.Duration
}

// Requests is the number of requests sent.
func (r Result) Requests() int64 { return r.OK + r.Failed() }

// Failed is the number of requests that got no 2xx answer.
func (r Result) Failed() int64 {
	n := r.TransportErrors
	for _, c := range r.Non2xx {
		n += c
	}
	return n
}

// Rate is the requests sent per second.
func (r Result) Rate() float64 { return float64(r.Requests()) / r.Elapsed.Seconds() }

// Percentile is the latency below which the fraction p of the requests took, 0 without any.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[int(p*float64(len(r.Latencies)-1))]
}

// Run is a load that is running.
type Run struct {
	start   time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	missed  atomic.Int64
	workers []*worker
}

type worker struct {
	// key and nonce are the worker's DPoP key and the last nonce it was sent, used by its own
	// goroutine only.
	key   *ecdsa.PrivateKey
	nonce string
	// ahead are proofs made before the run, used from the end.
	ahead []string

	mu        sync.Mutex
	ok, errs  int64
	non2xx    map[int]int64
	latencies []time.Duration
}

// Closed starts Workers workers that each send a request as soon as the last is answered,
// worker w asking for clients w, w+Workers, ...
func (l Load) Closed(ctx context.Context) *Run {
	r, ctx := l.begin(ctx)
	httpc := l.httpClient()
	for wi, w := range r.workers {
		r.wg.Go(func() {
			for i := wi % l.Clients; ctx.Err() == nil; i = (i + l.Workers) % l.Clients {
				start := time.Now()
				w.record(l.send(ctx, httpc, w, i), start)
			}
		})
	}
	return r
}

// Open starts sending rate requests per second, due at even intervals, cycling through the
// clients; Workers workers send them. A request that finds a second's worth of requests still
// waiting for a worker is not sent, and counted as missed.
func (l Load) Open(ctx context.Context, rate float64) *Run {
	r, ctx := l.begin(ctx)
	httpc := l.httpClient()
	due := make(chan time.Time, max(1, int(rate)))
	var next atomic.Int64
	for _, w := range r.workers {
		r.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case at := <-due:
					i := int((next.Add(1) - 1) % int64(l.Clients))
					w.record(l.send(ctx, httpc, w, i), at)
				}
			}
		})
	}
	r.wg.Go(func() {
		interval := time.Second / time.Duration(max(1, rate))
		tick := time.NewTicker(max(time.Millisecond, min(10*time.Millisecond, interval)))
		defer tick.Stop()
		var sent int64
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				target := int64(now.Sub(r.start).Seconds() * rate)
				for ; sent < target; sent++ {
					at := r.start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
					select {
					case due <- at:
					default:
						r.missed.Add(1)
					}
				}
			}
		}
	})
	return r
}

func (l Load) begin(ctx context.Context) (*Run, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	r := &Run{cancel: cancel, workers: make([]*worker, l.Workers)}
	var made sync.WaitGroup
	for i := range r.workers {
		w := &worker{non2xx: map[int]int64{}}
		r.workers[i] = w
		if l.DPoP {
			// GenerateKey fails only when the random source does, which crypto/rand's never does.
			w.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			made.Add(1)
			go func() {
				defer made.Done()
				tokenURL := issuer.TokenURL(l.Issuer)
				for range l.ProofsAhead / l.Workers {
					if p, err := dpop.NewProof(w.key, http.MethodPost, tokenURL, dpop.ProofOptions{}); err == nil {
						w.ahead = append(w.ahead, p)
					}
				}
			}()
		}
	}
	made.Wait()
	r.start = time.Now()
	return r, ctx
}

func (l Load) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: l.Workers}, Timeout: 30 * time.Second}
}

// send asks for a token for client i and returns the HTTP status, or 0 when no answer came. A
// request cut short because the run stopped returns -1, and is not counted.
func (l Load) send(ctx context.Context, httpc *http.Client, w *worker, i int) int {
	id, secret := l.Credentials(i)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
	tokenURL := issuer.TokenURL(l.Issuer)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if n := len(w.ahead); n > 0 {
		req.Header.Set("DPoP", w.ahead[n-1])
		w.ahead = w.ahead[:n-1]
	} else if w.key != nil {
		proof, err := dpop.NewProof(w.key, http.MethodPost, tokenURL, dpop.ProofOptions{Nonce: w.nonce})
		if err != nil {
			return 0
		}
		req.Header.Set("DPoP", proof)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return -1
		}
		return 0
	}
	if n := resp.Header.Get("DPoP-Nonce"); n != "" && w.key != nil {
		w.nonce = n
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (w *worker) record(status int, since time.Time) {
	if status < 0 {
		return
	}
	d := time.Since(since)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case status == 0:
		w.errs++
	case status >= 200 && status < 300:
		w.ok++
	default:
		w.non2xx[status]++
	}
	w.latencies = append(w.latencies, d)
}

// Counts is what the run has counted so far: 2xx answers and failed requests.
func (r *Run) Counts() (ok, failed int64) {
	for _, w := range r.workers {
		w.mu.Lock()
		ok += w.ok
		failed += w.errs
		for _, c := range w.non2xx {
			failed += c
		}
		w.mu.Unlock()
	}
	return ok, failed
}

// Stop stops the load, waits for the requests in flight and returns the result.
func (r *Run) Stop() Result {
	r.cancel()
	r.wg.Wait()
	res := Result{Non2xx: map[int]int64{}, Missed: r.missed.Load(), Elapsed: time.Since(r.start)}
	for _, w := range r.workers {
		res.OK += w.ok
		res.TransportErrors += w.errs
		for s, c := range w.non2xx {
			res.Non2xx[s] += c
		}
		res.Latencies = append(res.Latencies, w.latencies...)
	}
	slices.Sort(res.Latencies)
	return res
}
