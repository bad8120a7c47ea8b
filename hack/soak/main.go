// Command soak runs the token server for a long time at a constant rate below its maximum, across
// many clients that the real manager rotates once in the middle, and checks that the token
// server's memory ends where it was after the warm-up, that no request failed, and that every
// client rotated exactly once. `make soak` runs it; results go in docs/reliability.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/hack/internal/rotatingclients"
	"github.com/m2m-dev/m2m-operator/hack/internal/tokenload"
	"github.com/m2m-dev/m2m-operator/hack/internal/tokenserverprocess"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

const ns = "soak"

// secondTrigger is the spec.rotation.trigger that rotates every client in the middle of the run.
const secondTrigger = "v2"

type options struct {
	duration, measure, kubeletDelay, grace, sampleEvery time.Duration
	clients, connections, workers                       int
	fraction                                            float64
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 30*time.Minute, "Length of the constant-rate load.")
	flag.IntVar(&o.clients, "clients", 10000, "M2MClients, all in the load and all rotated once.")
	flag.Float64Var(&o.fraction, "fraction", 0.8, "Rate of the soak, as a fraction of the measured maximum.")
	flag.DurationVar(&o.measure, "measure", 20*time.Second, "Length of the closed-loop run that measures the maximum rate (after a 3 s warm-up).")
	flag.IntVar(&o.connections, "connections", 16, "Workers of the closed-loop run, as bench-token's wrk connections.")
	flag.IntVar(&o.workers, "workers", 64, "Workers (connections) that send the constant-rate load.")
	flag.DurationVar(&o.kubeletDelay, "kubelet-delay", 0, "How long after a Secret changes its pod reads the new value, as a kubelet-refreshed volume; 0 means 60 s, or a tenth of a shorter -duration.")
	flag.DurationVar(&o.grace, "grace-period", 0, "spec.rotation.gracePeriod of the clients; 0 means a quarter of -duration, at least twice -kubelet-delay.")
	flag.DurationVar(&o.sampleEvery, "sample", 10*time.Second, "How often the token server's RSS is read.")
	flag.Parse()
	if o.kubeletDelay == 0 {
		o.kubeletDelay = min(time.Minute, o.duration/10)
	}
	if o.grace == 0 {
		o.grace = max(o.duration/4, 2*o.kubeletDelay)
	}
	logf.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	pass, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if !pass {
		os.Exit(1)
	}
}

// warmUp is how long the constant-rate load runs before the RSS that the end is compared with:
// the first 2 minutes, or a tenth of a shorter run.
func warmUp(duration time.Duration) time.Duration { return min(2*time.Minute, duration/10) }

func run(o options) (bool, error) {
	work, err := os.MkdirTemp("", "soak")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(work)
	env, err := testenv.Start()
	if err != nil {
		return false, err
	}
	defer func() { _ = env.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sys, err := start(ctx, env, work, o)
	if sys != nil {
		defer sys.stop()
	}
	if err != nil {
		return false, err
	}

	step("measuring the maximum rate: closed loop, %d workers, 3 s warm-up and %s", o.connections, o.measure)
	maxRes, err := sys.measureMax(ctx, o)
	if err != nil {
		return false, err
	}
	rate := o.fraction * maxRes.Rate()
	step("maximum %.0f tokens/s (p50 %s, p99 %s); soak at %.0f tokens/s for %s, %d workers, clients rotated at %s",
		maxRes.Rate(), ms(maxRes.Percentile(0.5)), ms(maxRes.Percentile(0.99)), rate, o.duration, o.workers, o.duration/2)
	out := sys.soak(ctx, o, rate)
	rotatedOnce, switched, err := checkRotations(ctx, sys.clients, sys.mounts)
	if err != nil {
		return false, err
	}
	// The manager stops before the report, so that what it logs while stopping comes first.
	sys.stopManager()

	fmt.Printf("\nsoak:                     %s at %.0f tokens/s (%.0f%% of %.0f measured closed-loop), %d clients, %d workers, %d cores\n", o.duration, rate, 100*o.fraction, maxRes.Rate(), o.clients, o.workers, runtime.NumCPU())
	out.print(o)
	if held := out.load.Rate() / rate; held < 0.95 {
		fmt.Printf("[NOTE] the rate was not held: %.0f%% of %.0f tokens/s (the manager, the API server and etcd share the machine, most of all during the rotation, and other work may take more of it than when the maximum was measured)\n", 100*held, rate)
	}
	v := judge(out.samples, warmUp(o.duration), out.load, rotatedOnce, switched, o.clients)
	for _, line := range v.lines {
		fmt.Println(line)
	}
	if v.pass {
		fmt.Println("soak: PASS")
	} else {
		fmt.Println("soak: FAIL")
	}
	return v.pass, nil
}

// system is what the soak runs: the manager in this process, the clients and their pods' view of
// their Secrets, and the token server's process.
type system struct {
	clients     rotatingclients.Clients
	mounts      []*rotatingclients.Mount
	ts          *tokenserverprocess.Process
	stopManager func()
}

// start runs the manager, creates the clients and waits until they are Ready, then starts the
// token server from its binary (so that the RSS read is its own) and waits until it caches
// them. A system it returns with an error must still be stopped.
func start(ctx context.Context, env *testenv.Env, work string, o options) (*system, error) {
	c := env.Client
	for _, name := range []string{"m2m-system", ns} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return nil, err
		}
	}
	bin, err := tokenserverprocess.Build(work)
	if err != nil {
		return nil, err
	}
	ts, err := tokenserverprocess.New(env.Environment, bin, work)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	mgr, err := controllers.NewManager(cfg, controllers.Options{IssuerURL: ts.Issuer, MaxConcurrentReconciles: 8})
	if err != nil {
		return nil, err
	}
	mgrCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = mgr.Start(mgrCtx); close(done) }()
	sys := &system{
		clients:     rotatingclients.Clients{Client: c, Namespace: ns, N: o.clients},
		ts:          ts,
		stopManager: sync.OnceFunc(func() { cancel(); <-done }),
	}

	// Clients created before the manager has its status keys would only be retried.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := testenv.StatusKeys(ctx, c)
		return err == nil, nil
	}); err != nil {
		return sys, fmt.Errorf("the manager wrote no status keys: %w", err)
	}
	step("creating %d clients (grace period %s); the manager makes them Ready", o.clients, o.grace)
	if err := sys.clients.Create(ctx, o.grace); err != nil {
		return sys, err
	}
	if err := sys.clients.Wait(ctx, 30*time.Minute, func(*m2mv1alpha1.M2MClient) bool { return true }); err != nil {
		return sys, err
	}
	// The default flags, as installed: the issuance limit stays on, its buckets part of the
	// memory watched. Each client asks at the load's rate divided by -clients, 1 to 2 a second
	// at 10,000 clients on 2 cores, under the default of 600 a minute; with far fewer clients,
	// the limit refuses and the soak fails.
	if err := ts.Start(); err != nil {
		return sys, err
	}
	if err := ts.WaitCached(o.clients); err != nil {
		return sys, err
	}
	if sys.mounts, err = sys.clients.Follow(ctx, env.Config, o.kubeletDelay); err != nil {
		return sys, err
	}
	step("token server cached %d clients, RSS %s idle", o.clients, mib(ts.RSS()))
	return sys, nil
}

func (sys *system) stop() {
	sys.ts.Stop()
	sys.stopManager()
}

// load is the token load with the credentials each client's pod reads at the time.
func (sys *system) load(workers int) tokenload.Load {
	return tokenload.Load{Issuer: sys.ts.Issuer, Clients: sys.clients.N, Workers: workers, Credentials: func(i int) (string, string) {
		return sys.mounts[i].Get(time.Now())
	}}
}

// measureMax finds the maximum rate as bench-token does: a closed loop of o.connections workers,
// 3 s of warm-up, then o.measure measured.
func (sys *system) measureMax(ctx context.Context, o options) (tokenload.Result, error) {
	closed := sys.load(o.connections)
	warm := closed.Closed(ctx)
	time.Sleep(3 * time.Second)
	warm.Stop()
	m := closed.Closed(ctx)
	time.Sleep(o.measure)
	res := m.Stop()
	if res.Failed() > 0 {
		return res, fmt.Errorf("the closed-loop run failed %d of %d requests", res.Failed(), res.Requests())
	}
	return res, nil
}

// soakResult is what the constant-rate load measured.
type soakResult struct {
	load    tokenload.Result
	samples []sample
	peak    int64
	rot     rotationResult
}

// soak sends rate requests per second for o.duration, rotates every client in the middle, and
// reads the token server's RSS every o.sampleEvery, printing progress every six readings.
func (sys *system) soak(ctx context.Context, o options, rate float64) soakResult {
	open := sys.load(o.workers).Open(ctx, rate)
	start := time.Now()
	out := soakResult{samples: []sample{{0, sys.ts.RSS()}}, rot: rotationResult{err: fmt.Errorf("not every Secret held a new secret at the end")}}
	tick := time.NewTicker(o.sampleEvery)
	defer tick.Stop()
	var reported int64
	rotation := make(chan rotationResult, 1)
	rotateAt := time.After(o.duration / 2)
	end := time.After(o.duration)
	for {
		select {
		case <-tick.C:
			out.samples = append(out.samples, sample{time.Since(start), sys.ts.RSS()})
			if len(out.samples)%6 == 1 {
				ok, failed := open.Counts()
				changed, switched := followed(sys.mounts, time.Now())
				step("%s: %d requests (%.0f/s in the last %s), %d failed, token server RSS %s; Secrets rotated %d, pods on their Secret's current secret %d",
					time.Since(start).Round(time.Second), ok+failed, float64(ok+failed-reported)/(6*o.sampleEvery).Seconds(), 6*o.sampleEvery, failed, mib(sys.ts.RSS()), changed, switched)
				reported = ok + failed
			}
		case <-rotateAt:
			step("rotating every client (spec.rotation.trigger %s -> %s)", rotatingclients.FirstTrigger, secondTrigger)
			go func() { rotation <- rotate(ctx, sys.clients, sys.mounts, o.duration/2) }()
		case out.rot = <-rotation:
			if out.rot.err != nil {
				step("rotation: %v", out.rot.err)
			} else {
				step("every Secret holds a new secret, %s after the first trigger update", out.rot.all.Round(time.Second))
			}
		case <-end:
			out.samples = append(out.samples, sample{time.Since(start), sys.ts.RSS()})
			out.load = open.Stop()
			out.peak = sys.ts.PeakRSS()
			return out
		}
	}
}

func (out soakResult) print(o options) {
	res := out.load
	fmt.Printf("requests:                 %d sent, %.0f/s achieved, %d not sent (no free worker for 1 s)\n", res.Requests(), res.Rate(), res.Missed)
	fmt.Printf("failed:                   %d non-2xx%s, %d without an answer\n", res.Failed()-res.TransportErrors, byStatus(res.Non2xx), res.TransportErrors)
	fmt.Printf("latency from due time:    p50 %s, p99 %s, p99.9 %s, max %s\n", ms(res.Percentile(0.5)), ms(res.Percentile(0.99)), ms(res.Percentile(0.999)), ms(res.Percentile(1)))
	if out.rot.err != nil {
		fmt.Printf("rotation:                 %v\n", out.rot.err)
	} else {
		fmt.Printf("rotation:                 trigger updates sent in %s, every Secret changed %s after the first\n", out.rot.sent.Round(time.Millisecond), out.rot.all.Round(time.Second))
	}
	fmt.Printf("pods:                     new secret read %s after the Secret changed; previous secret accepted for %s\n", o.kubeletDelay, o.grace)
	fmt.Printf("token server RSS (MiB), every %s from the start of the load:\n%s", o.sampleEvery, formatSamples(out.samples))
	fmt.Printf("token server peak RSS:    %s\n\n", mib(out.peak))
}

type rotationResult struct {
	sent, all time.Duration
	err       error
}

// rotate changes every client's trigger and waits, for at most timeout, until the Secret of each
// holds a new secret. It watches the informer's view, not the API server, so that waiting adds
// no load.
func rotate(ctx context.Context, clients rotatingclients.Clients, mounts []*rotatingclients.Mount, timeout time.Duration) rotationResult {
	start := time.Now()
	if err := clients.Trigger(ctx, secondTrigger); err != nil {
		return rotationResult{err: err}
	}
	sent := time.Since(start)
	for time.Since(start) < timeout {
		if changed, _ := followed(mounts, time.Now()); changed == len(mounts) {
			return rotationResult{sent: sent, all: time.Since(start)}
		}
		time.Sleep(time.Second)
	}
	return rotationResult{sent: sent, err: fmt.Errorf("not every Secret held a new secret %s after the first trigger update", timeout)}
}

// rotated is true of a client that has acted on the second trigger and holds one current
// secret; the previous one may have expired since.
func rotated(o *m2mv1alpha1.M2MClient) bool {
	return o.Status.LastRotationTrigger == secondTrigger && credentials.Entries(o.Status.AcceptedSecrets).Unexpiring() == 1
}

// checkRotations counts the clients whose Secret changed exactly once and whose status acted on
// the second trigger, with one current secret; and the pods that read their Secret's value now.
func checkRotations(ctx context.Context, clients rotatingclients.Clients, mounts []*rotatingclients.Mount) (rotatedOnce, switched int, err error) {
	var list m2mv1alpha1.M2MClientList
	if err := clients.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return 0, 0, err
	}
	byName := map[string]*m2mv1alpha1.M2MClient{}
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	for i, m := range mounts {
		o := byName[clients.Name(i)]
		if o != nil && rotated(o) && m.Changes() == 1 {
			rotatedOnce++
		}
	}
	_, switched = followed(mounts, time.Now())
	return rotatedOnce, switched, nil
}

// followed counts the Secrets whose client_secret changed since the start, and the pods that
// read their Secret's value at now.
func followed(mounts []*rotatingclients.Mount, now time.Time) (changed, switched int) {
	for _, m := range mounts {
		if m.Changes() > 0 {
			changed++
		}
		if m.Switched(now) {
			switched++
		}
	}
	return changed, switched
}

type sample struct {
	at  time.Duration
	kib int64
}

type verdict struct {
	pass  bool
	lines []string
}

// judge applies the pass criteria: the RSS of the last sample within 10% of the first sample at
// or after warm-up; no request failed; every client rotated exactly once, and every pod reads
// its new secret.
func judge(samples []sample, warm time.Duration, res tokenload.Result, rotatedOnce, switched, n int) verdict {
	v := verdict{pass: true}
	check := func(ok bool, format string, args ...any) {
		mark := "PASS"
		if !ok {
			mark, v.pass = "FAIL", false
		}
		v.lines = append(v.lines, fmt.Sprintf("[%s] "+format, append([]any{mark}, args...)...))
	}
	base, last := -1, len(samples)-1
	for i, s := range samples {
		if s.at >= warm {
			base = i
			break
		}
	}
	if base < 0 || base == last || samples[base].kib == 0 || samples[last].kib == 0 {
		check(false, "RSS at the end within 10%% of RSS after the warm-up (%s): no sample after the warm-up to compare", warm)
	} else {
		b, e := samples[base], samples[last]
		change := float64(e.kib-b.kib) / float64(b.kib)
		check(change <= 0.10 && change >= -0.10, "RSS at the end within 10%% of RSS after the warm-up (%s): %s at %s, %s at %s (%+.1f%%)",
			warm, mib(b.kib), b.at.Round(time.Second), mib(e.kib), e.at.Round(time.Second), 100*change)
	}
	check(res.Failed() == 0, "zero non-2xx responses (and none without an answer): %d failed of %d", res.Failed(), res.Requests())
	check(rotatedOnce == n && switched == n, "every client rotated exactly once: %d of %d (Secret changed once, status at trigger %s with one current secret); pods reading the new secret: %d of %d",
		rotatedOnce, n, secondTrigger, switched, n)
	return v
}

// formatSamples writes the samples six to a line, each line starting with its first sample's time.
func formatSamples(samples []sample) string {
	var b strings.Builder
	for i, s := range samples {
		if i%6 == 0 {
			fmt.Fprintf(&b, "  %7s ", s.at.Round(time.Second))
		}
		fmt.Fprintf(&b, " %6.1f", float64(s.kib)/1024)
		if i%6 == 5 || i == len(samples)-1 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

var stepMu sync.Mutex

// step prints a progress line with the wall-clock time.
func step(format string, args ...any) {
	stepMu.Lock()
	defer stepMu.Unlock()
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// byStatus lists counts by HTTP status, as " (401: 3, 503: 1)", or nothing when there are none.
func byStatus(counts map[int]int64) string {
	var parts []string
	for _, status := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d: %d", status, counts[status]))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
