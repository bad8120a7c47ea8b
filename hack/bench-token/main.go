// Command bench-token measures the real token server (the cmd/token-server binary) with N
// M2MClients in its cache, under wrk on loopback, with the issuance limit off and then on (its
// default values); then one client flooding while the others keep their rate, with and without
// the limit; and, in the same run, the signing-only ceiling from `go test -bench`. `make
// bench-token` runs it. With -dpop it runs a Go load generator instead of wrk, plain and with a
// fresh DPoP proof per request (wrk's Lua cannot sign), which `make bench-dpop` runs. Results go
// in docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/hack/internal/fanout"
	"github.com/m2m-dev/m2m-operator/hack/internal/tokenload"
	"github.com/m2m-dev/m2m-operator/hack/internal/tokenserverprocess"
	"github.com/m2m-dev/m2m-operator/hack/internal/wrk"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func main() {
	n := flag.Int("clients", 10000, "M2MClients in the token server's cache.")
	conns := flag.Int("connections", 16, "wrk connections.")
	threads := flag.Int("threads", 1, "wrk threads. One leaves the token server more of a 2-core machine.")
	duration := flag.Duration("duration", 20*time.Second, "Length of the measured load.")
	flag.StringVar(&profile, "cpu-profile", "", "Write a 10 s CPU profile of the token server under load to this file.")
	flag.BoolVar(&narrow, "narrow", true, "Half the requests name a subset of the scopes and an audience; false sends credentials only.")
	flag.BoolVar(&perClient, "per-client-metrics", false, "Run the token server with --metrics-per-client (one metric series per client), as before issue 14.")
	flag.BoolVar(&assertion, "serviceaccount", false, "Clients take no secret and allow a ServiceAccount; every request sends its token (from the TokenRequest API) as the client assertion.")
	flag.DurationVar(&floodFor, "flood-duration", 20*time.Second, "Length of each run with a flooding client; 0 skips them (as does -serviceaccount).")
	flag.Float64Var(&floodRate, "flood-fraction", 0.25, "Rate of the other clients in the flood runs, as a fraction of the tokens/s that wrk measured with the limit off.")
	flag.IntVar(&floodWorkers, "flood-workers", 4, "Closed-loop workers (connections) of the flooding client.")
	flag.IntVar(&floodRounds, "flood-rounds", 2, "Rounds of the flood runs, each the others alone and then with the flooding client, with the limit off and then on.")
	flag.BoolVar(&dpopMode, "dpop", false, "Instead of everything else: the Go load generator at -connections for -duration, plain and then with a fresh DPoP proof (ES256, a key per connection) on every request, -dpop-rounds times, against the token server with default flags.")
	flag.IntVar(&dpopRounds, "dpop-rounds", 2, "Rounds of the -dpop runs, each plain, DPoP and DPoP with proofs made ahead, so that a disturbance of the shared machine shows as a difference between rounds.")
	flag.StringVar(&dpopMemoryLimit, "dpop-gomemlimit", "1GiB", "GOMEMLIMIT of the token server in the -dpop runs, whose tenth is the replay caches' budget; empty leaves the default (no limit).")
	flag.IntVar(&dpopAhead, "dpop-ahead", 120000, "Proofs the -dpop runs of kind \"DPoP ahead\" make before the run, each used once: the server's share of a DPoP request without the generator's signing on the same cores.")
	flag.StringVar(&heapProfile, "heap-profile", "", "After the load of the run with the limit on, write the token server's heap profile (in use, after a collection) to this file, and its allocations since its start to this file plus .allocs.")
	flag.StringVar(&coldProfile, "cold-start-profile", "", "Write a CPU profile of the token server's first start, from its first moments until every client is cached, to this file.")
	flag.StringVar(&memoryLimit, "memory-limit", "256Mi", "The token server's container memory limit to emulate, the chart's default unless changed: GOMEMLIMIT is set to 90% of it, as the token server sets it from its cgroup in a container (the runtime then also collects less often, tokenserver.GCPercent). Empty: no limit, as outside a container.")
	flag.Var(&serverEnv, "env", "KEY=VALUE added to the token server's environment (repeatable), after the memory limit's, for example GOGC=100.")
	flag.Parse()
	logf.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	if err := run(*n, *conns, *threads, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "bench-token:", err)
		os.Exit(1)
	}
}

// envFlags is a repeatable KEY=VALUE flag.
type envFlags []string

func (e *envFlags) String() string { return strings.Join(*e, " ") }

func (e *envFlags) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

var (
	heapProfile     string
	coldProfile     string
	memoryLimit     string
	serverEnv       envFlags
	profile         string
	narrow          bool
	assertion       bool
	perClient       bool
	floodFor        time.Duration
	floodRate       float64
	floodWorkers    int
	floodRounds     int
	dpopMode        bool
	dpopRounds      int
	dpopAhead       int
	dpopMemoryLimit string
)

func secretFor(i int) string {
	return fmt.Sprintf("bench-secret-%06d-0123456789abcdefghijklmnop", i)
}

func clientID(i int) string { return fmt.Sprintf("m2m-bench-%05d", i) }

func run(n, conns, threads int, duration time.Duration) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil && !dpopMode {
		return fmt.Errorf("wrk is not installed (make bench-token installs it with apt-get)")
	}
	work, err := os.MkdirTemp("", "bench-token")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	ctx := context.Background()
	c := env.Client

	fmt.Printf("seeding %d M2MClients (status written directly, no manager)...\n", n)
	if err := seed(ctx, c, n); err != nil {
		return err
	}

	bin, err := tokenserverprocess.Build(work)
	if err != nil {
		return err
	}
	ts, err := tokenserverprocess.New(env.Environment, bin, work)
	if err != nil {
		return err
	}
	if memoryLimit != "" {
		q, err := resource.ParseQuantity(memoryLimit)
		if err != nil {
			return fmt.Errorf("-memory-limit: %w", err)
		}
		ts.Env = append(ts.Env, "GOMEMLIMIT="+strconv.FormatInt(q.Value()/10*9, 10))
	}
	ts.Env = append(ts.Env, serverEnv...)
	fmt.Printf("token server environment: %s\n", strings.Join(ts.Env, " "))
	issuer := ts.Issuer
	if dpopMode {
		defer ts.Stop()
		return dpopRuns(ts, n, conns, duration)
	}
	saToken := ""
	if assertion {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "bench-sa"}}
		if err := c.Create(ctx, sa); err != nil {
			return err
		}
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{issuer}, ExpirationSeconds: ptr.To[int64](3600)}}
		if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
			return fmt.Errorf("requesting a ServiceAccount token: %w", err)
		}
		saToken = tr.Status.Token
	}
	script := filepath.Join(work, "tokens.lua")
	if err := writeScript(script, n, narrow, saToken); err != nil {
		return err
	}
	var extra []string
	if profile != "" || coldProfile != "" || heapProfile != "" {
		extra = append(extra, "--debug-address", "127.0.0.1:6060")
	}
	if perClient {
		extra = append(extra, "--metrics-per-client")
	}
	load := wrkLoad{wrk: wrk, script: script, threads: threads, conns: conns, duration: duration}
	defer ts.Stop()

	// The limit off first: the run this benchmark had before the limit existed.
	off, err := load.measure(ts, n, false, append(slices.Clone(extra), "--issuance-per-minute=0")...)
	if err != nil {
		return err
	}
	var floods []floodRun
	flooding := floodFor > 0 && !assertion
	rate := floodRate * off.res.RPS
	if flooding {
		fmt.Printf("flood runs with the limit off: the others at %.0f tokens/s, one client with %d workers, %s each...\n", rate, floodWorkers, floodFor)
		floods = append(floods, floodRuns("limit off", issuer, n, rate)...)
	}
	ts.Stop()
	on, err := load.measure(ts, n, true, extra...)
	if err != nil {
		return err
	}
	if flooding {
		fmt.Printf("flood runs with the limit on (defaults)...\n")
		floods = append(floods, floodRuns("limit on", issuer, n, rate)...)
	}
	floor, err := load.httpFloor(ts)
	if err != nil {
		return err
	}
	ts.Stop()

	fmt.Println("signing-only ceiling: go test -bench BenchmarkSignAccessToken on", runtime.NumCPU(), "cores...")
	bench := exec.Command("go", "test", "-run", "^$", "-bench", "^BenchmarkSignAccessToken$", "-benchtime", "3s", "-cpu", strconv.Itoa(runtime.NumCPU()), "./internal/tokenserver")
	bench.Dir = controlplane.Root()
	bout, err := bench.Output()
	if err != nil {
		return fmt.Errorf("go test -bench: %w\n%s", err, bout)
	}
	nsPerOp, err := parseBench(string(bout))
	if err != nil {
		return err
	}
	ceiling := 1e9 / nsPerOp

	fmt.Printf("\nclients cached:           %d\n", n)
	fmt.Printf("load:                     wrk -t%d -c%d -d%s, form bodies cycling through all clients, narrowing half: %v, ServiceAccount assertions: %v\n", threads, conns, duration, narrow, assertion)
	fmt.Printf("signing-only ceiling:     %.0f signatures/s (%.1f µs/op wall on %d cores)\n", ceiling, nsPerOp/1000, runtime.NumCPU())
	for _, m := range []struct {
		name string
		m    measured
	}{{"issuance limit off (--issuance-per-minute=0)", off}, {"issuance limit on (default flags)", on}} {
		res := m.m.res
		fmt.Printf("\n%s\nwrk: %s\n", m.name, strings.TrimSpace(m.m.raw))
		fmt.Printf("tokens/s:                 %.0f\n", res.RPS)
		fmt.Printf("latency p50 / p99:        %s / %s\n", res.P50, res.P99)
		fmt.Printf("non-2xx responses:        %d (socket errors: %s)\n", res.Non2xx, res.SocketErrors)
		fmt.Printf("throughput / ceiling:     %.0f%%\n", 100*res.RPS/ceiling)
		fmt.Printf("token server CPU:         %.2f cores, %s a token (signing-only: %s a signature)\n", m.m.cpu.Seconds()/duration.Seconds(), perRequest(m.m.cpu, duration, res.RPS).Round(100*time.Nanosecond), time.Duration(nsPerOp*float64(runtime.NumCPU())).Round(100*time.Nanosecond))
		fmt.Printf("token server RSS:         %d MiB idle with %d clients, %d MiB after the load, %d MiB peak\n", m.m.rssIdle>>10, n, m.m.rssAfter>>10, m.m.rssPeak>>10)
	}
	fmt.Printf("\nHTTP floor (wrk GET of the JWKS, a cached document of %d bytes, on the same server: no authentication, no signature)\n", floor.bytes)
	fmt.Printf("requests/s:               %.0f\n", floor.res.RPS)
	fmt.Printf("token server CPU:         %.2f cores, %s a request\n", floor.cpu.Seconds()/duration.Seconds(), perRequest(floor.cpu, duration, floor.res.RPS).Round(100*time.Nanosecond))
	fmt.Printf("latency p50 / p99:        %s / %s\n", floor.res.P50, floor.res.P99)
	fmt.Printf("tokens/s / HTTP floor:    %.0f%% (limit off), %.0f%% (limit on)\n", 100*off.res.RPS/floor.res.RPS, 100*on.res.RPS/floor.res.RPS)
	if flooding {
		fmt.Printf("\nflood runs, %s each: the other %d clients in an open loop at %.0f tokens/s (%.0f%% of the limit-off run), client 0 in a closed loop with %d workers\n", floodFor, n-1, rate, 100*floodRate, floodWorkers)
		fmt.Printf("%-42s %12s %9s %9s %8s %8s | %10s %9s %9s\n", "run", "others tok/s", "p50", "p99", "failed", "missed", "flooder", "200", "429")
		for _, f := range floods {
			o, fl := f.others, f.flooder
			fmt.Printf("%-42s %12.0f %9s %9s %8d %8d | %10d %9d %9d\n", f.name, float64(o.OK)/o.Elapsed.Seconds(), o.Percentile(0.5).Round(10*time.Microsecond), o.Percentile(0.99).Round(10*time.Microsecond), o.Failed(), o.Missed, fl.Requests(), fl.OK, fl.Non2xx[http.StatusTooManyRequests])
		}
	}
	return nil
}

// wrkLoad is the wrk command of the measured runs.
type wrkLoad struct {
	wrk, script    string
	threads, conns int
	duration       time.Duration
}

// measured is one wrk run: its result and output, and the token server's RSS in KiB.
type measured struct {
	res                        wrk.Result
	raw                        string
	rssIdle, rssAfter, rssPeak int64
	// cpu is the token server's CPU time (user and system) during the measured load.
	cpu time.Duration
}

// perRequest is the token server's CPU time for each request of a run of rps requests a second
// for d that took cpu.
func perRequest(cpu, d time.Duration, rps float64) time.Duration {
	if rps <= 0 {
		return 0
	}
	return time.Duration(float64(cpu) / (rps * d.Seconds()))
}

// floorRun is wrk's GET of the JWKS: what HTTP on loopback, wrk and the server's routing,
// metrics and response writing cost without authentication or a signature.
type floorRun struct {
	res   wrk.Result
	bytes int
	cpu   time.Duration
}

// httpFloor loads the running token server's JWKS endpoint with the connections and duration of
// the token runs, after a 3 s warm-up.
func (l wrkLoad) httpFloor(ts *tokenserverprocess.Process) (floorRun, error) {
	url := ts.Issuer + "/.well-known/jwks.json"
	resp, err := http.Get(url)
	if err != nil {
		return floorRun{}, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return floorRun{}, fmt.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	if _, err := exec.Command(l.wrk, "-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.conns), "-d", "3s", url).Output(); err != nil {
		return floorRun{}, fmt.Errorf("wrk warm-up: %w", err)
	}
	cpu := ts.CPU()
	out, err := exec.Command(l.wrk, "-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.conns), "-d", l.duration.String(), "--latency", url).Output()
	if err != nil {
		return floorRun{}, fmt.Errorf("wrk: %w", err)
	}
	return floorRun{res: wrk.Parse(string(out)), bytes: len(body), cpu: ts.CPU() - cpu}, nil
}

// measure starts the token server with args, waits until it caches n clients, warms it up and
// loads it with wrk; when profiled (the run with the limit on), it writes the profiles that
// -cpu-profile and -heap-profile ask for.
func (l wrkLoad) measure(ts *tokenserverprocess.Process, n int, profiled bool, args ...string) (measured, error) {
	started := time.Now()
	if err := ts.Start(args...); err != nil {
		return measured{}, err
	}
	var cold chan struct{}
	if coldProfile != "" {
		cold = make(chan struct{})
		go func(path string) {
			defer close(cold)
			profileColdStart(path, n)
		}(coldProfile)
		coldProfile = "" // the first start only
	}
	if err := ts.WaitCached(n); err != nil {
		return measured{}, err
	}
	// Cold start: from the process's start to every client in its cache (read from its metrics
	// every 200 ms, so up to 200 ms late).
	fmt.Printf("cold start: %d clients cached %s after the token server started\n", n, time.Since(started).Round(10*time.Millisecond))
	if cold != nil {
		<-cold // no load in the profile
	}
	m := measured{rssIdle: ts.RSS()}
	// Warm up connections, caches and the Go runtime, then measure.
	if _, err := exec.Command(l.wrk, "-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.conns), "-d", "3s", "-s", l.script, ts.Issuer).Output(); err != nil {
		return measured{}, fmt.Errorf("wrk warm-up: %w", err)
	}
	if profiled && profile != "" {
		go writeProfile()
	}
	cpu := ts.CPU()
	out, err := exec.Command(l.wrk, "-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.conns), "-d", l.duration.String(), "--latency", "-s", l.script, ts.Issuer).Output()
	if err != nil {
		return measured{}, fmt.Errorf("wrk: %w", err)
	}
	m.cpu = ts.CPU() - cpu
	m.rssAfter, m.rssPeak = ts.RSS(), ts.PeakRSS()
	if profiled && heapProfile != "" {
		writeHeapProfiles(heapProfile)
	}
	m.res, m.raw = wrk.Parse(string(out)), string(out)
	return m, nil
}

// writeProfile writes a 10 s CPU profile of the token server to the -cpu-profile file.
func writeProfile() { writeProfileTo(profile) }

// writeProfileTo writes a 10 s CPU profile of the token server to path.
func writeProfileTo(path string) { fetchProfile(path, "profile?seconds=10", 1) }

// profileColdStart writes a CPU profile of the token server's start to path: it asks for one as
// soon as the debug port answers, long enough to cover the start of n clients (a few seconds
// per 10,000, more on a busy machine); the profile's idle end takes no samples.
func profileColdStart(path string, n int) {
	fetchProfile(path, fmt.Sprintf("profile?seconds=%d", max(5, n/2500)), 500)
}

// writeHeapProfiles writes the token server's heap profile (in use after a collection: what it
// keeps) to path, and its allocations since its start to path.allocs.
func writeHeapProfiles(path string) {
	fetchProfile(path, "heap?gc=1", 1)
	fetchProfile(path+".allocs", "allocs", 1)
}

// fetchProfile writes the token server's pprof profile of query (below /debug/pprof/) to path,
// trying up to tries times, 10 ms apart, while its debug port does not answer yet.
func fetchProfile(path, query string, tries int) {
	for range tries {
		resp, err := http.Get("http://127.0.0.1:6060/debug/pprof/" + query)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
		return
	}
}

// floodRun is one run of the others with or without a flooding client.
type floodRun struct {
	name            string
	others, flooder tokenload.Result
}

// floodRuns are -flood-rounds rounds of the others alone and then with the flooding client,
// alternating, so that a disturbance of the shared machine shows as a difference between rounds.
func floodRuns(limit, issuer string, n int, rate float64) []floodRun {
	var out []floodRun
	for round := range floodRounds {
		out = append(out, flood(fmt.Sprintf("%s, no flooder, round %d", limit, round+1), issuer, n, rate, false))
		out = append(out, flood(fmt.Sprintf("%s, one client flooding, round %d", limit, round+1), issuer, n, rate, true))
	}
	return out
}

// flood sends the other clients' requests (clients 1 to n-1, in turn) at rate a second in an
// open loop for -flood-duration, after a 2 s warm-up; with flooder, client 0 meanwhile asks as
// fast as -flood-workers closed-loop workers can. An open loop keeps the others' rate whatever
// the answers take, so their latency shows what the flooder costs them.
func flood(name, issuer string, n int, rate float64, flooder bool) floodRun {
	ctx := context.Background()
	others := tokenload.Load{Issuer: issuer, Clients: n - 1, Workers: 64, Credentials: func(i int) (string, string) { return clientID(i + 1), secretFor(i + 1) }}
	var f *tokenload.Run
	if flooder {
		f = tokenload.Load{Issuer: issuer, Clients: 1, Workers: floodWorkers, Credentials: func(int) (string, string) { return clientID(0), secretFor(0) }}.Closed(ctx)
	}
	warm := others.Open(ctx, rate)
	time.Sleep(2 * time.Second)
	warm.Stop()
	measuredRun := others.Open(ctx, rate)
	time.Sleep(floodFor)
	out := floodRun{name: name, others: measuredRun.Stop()}
	if f != nil {
		out.flooder = f.Stop()
	}
	return out
}

// seed creates n M2MClients with accepted secrets in their status, as the manager would leave
// them, and the signing-key Secret.
func seed(ctx context.Context, c client.Client, n int) error {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "m2m-system"}}); err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}); err != nil {
		return err
	}
	key, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, time.Now())
	if err != nil {
		return err
	}
	data, err := (&signingkeys.Set{Keys: []*signingkeys.Key{key}}).Encode()
	if err != nil {
		return err
	}
	// Status keys, enforced, as after any manager of this version: every request verifies the
	// MACs of the client ID and of each entry.
	status, err := statusmac.Apply(nil, statusmac.KeyPlan{AddActive: true, Enforce: true}, time.Now())
	if err != nil {
		return err
	}
	statusData, err := status.Encode()
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: signingkeys.DefaultSecret.Namespace, Name: signingkeys.DefaultSecret.Name},
		Data:       map[string][]byte{signingkeys.DataKey: data, statusmac.DataKey: statusData},
	}); err != nil {
		return err
	}
	return fanout.Run(n, 16, func(i int) error {
		obj := &m2mv1alpha1.M2MClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("client-%05d", i)},
			Spec: m2mv1alpha1.M2MClientSpec{
				Scopes:    []m2mv1alpha1.Scope{"read:invoices", "write:payments"},
				Audiences: []m2mv1alpha1.Audience{"https://payments.example.com"},
			},
		}
		if assertion {
			obj.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), ServiceAccounts: []string{"bench-sa"}}
		}
		if err := c.Create(ctx, obj); err != nil {
			return err
		}
		obj.Status = m2mv1alpha1.M2MClientStatus{
			ClientID:        clientID(i),
			AcceptedSecrets: []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(secretFor(i)), CreatedAt: metav1.Now()}},
		}
		if assertion {
			obj.Status.AcceptedSecrets = nil
		}
		if err := status.Seal(obj); err != nil {
			return err
		}
		return c.Status().Update(ctx, obj)
	})
}

// writeScript writes the wrk script of n clients' requests: their secrets, or saToken as each
// one's assertion; with narrow, half of them name a scope and an audience.
func writeScript(path string, n int, narrow bool, saToken string) error {
	bodies := make([]string, n)
	for i := range n {
		form := url.Values{
			"grant_type":    {"client_credentials"},
			"client_id":     {clientID(i)},
			"client_secret": {secretFor(i)},
		}
		if saToken != "" {
			form.Del("client_secret")
			form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
			form.Set("client_assertion", saToken)
		}
		if narrow && i%2 == 0 {
			// Half the requests narrow the token: a subset of the scopes and a named audience.
			form.Set("scope", "read:invoices")
			form.Set("audience", "https://payments.example.com")
		}
		bodies[i] = form.Encode()
	}
	return wrk.WriteScript(path, issuer.TokenPath, bodies)
}

func parseBench(out string) (float64, error) {
	m := regexp.MustCompile(`BenchmarkSignAccessToken\S*\s+\d+\s+([0-9.]+) ns/op`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no benchmark result in:\n%s", out)
	}
	return strconv.ParseFloat(m[1], 64)
}
