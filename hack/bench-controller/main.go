// Command bench-controller measures how fast the manager makes N new M2MClients Ready, against the
// raw floor of the same API server: the same object creates and status patches done by a plain
// client at the same concurrency. `make bench-controller` runs it; results go in
// docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"go.uber.org/zap/zapcore"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/hack/internal/fanout"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func main() {
	n := flag.Int("n", 1000, "Number of M2MClients.")
	workers := flag.Int("concurrency", 8, "Reconcile workers of the manager, and workers of the floor's plain client.")
	creators := flag.Int("creators", 8, "Concurrent creators of M2MClients.")
	qps := flag.Float64("qps", 500, "Client QPS of the manager and of the floor's client.")
	burst := flag.Int("burst", 1000, "Client burst of the manager and of the floor's client.")
	flag.StringVar(&cpuProfile, "cpu-profile", "", "Write a CPU profile of this process (the manager, the creators and the client) during the operator run to this file.")
	flag.DurationVar(&readyTimeout, "timeout", 30*time.Minute, "How long the operator run may take before the benchmark gives up.")
	flag.Parse()
	logf.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))

	if err := run(*n, *workers, *creators, *qps, *burst); err != nil {
		fmt.Fprintln(os.Stderr, "bench-controller:", err)
		os.Exit(1)
	}
}

var (
	cpuProfile   string
	readyTimeout time.Duration
)

func run(n, workers, creators int, qps float64, burst int) error {
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = float32(qps), burst
	c, err := client.New(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		return err
	}
	ctx := context.Background()
	// The manager keeps its signing and status keys in signingkeys.DefaultSecret's namespace, and
	// no client becomes Ready before the status keys exist.
	for _, ns := range []string{"floor", "operator", signingkeys.DefaultSecret.Namespace} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}

	fmt.Printf("N=%d, %d workers, %d creators, client QPS %.0f burst %d, GOMAXPROCS %d\n", n, workers, creators, qps, burst, runtime.GOMAXPROCS(0))

	floor, err := measureFloor(ctx, c, n, workers)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	fmt.Printf("floor:    %d clients in %s: %.0f clients/s (create M2MClient, patch status, create Secret, patch status; %d workers)\n", n, floor.Round(time.Millisecond), float64(n)/floor.Seconds(), workers)

	op, err := measureOperator(ctx, cfg, c, n, workers, creators)
	if err != nil {
		return fmt.Errorf("operator: %w", err)
	}
	fmt.Printf("operator: %d clients in %s: %.0f clients/s (create M2MClient until Ready)\n", n, op.Round(time.Millisecond), float64(n)/op.Seconds())
	fmt.Printf("ratio:    %.0f%% of the floor\n", 100*floor.Seconds()/op.Seconds())
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	// The manager runs in this process beside the benchmark's own client, so these figures are an
	// upper bound on the manager's; the API server and etcd are other processes.
	fmt.Printf("memory:   heap in use after GC %d MiB, process RSS %s, peak RSS %s\n", ms.HeapInuse>>20, procStatus("VmRSS"), procStatus("VmHWM"))
	return nil
}

// measureFloor does, per client, the API writes the manager does, without the manager: the
// M2MClient is created (by the benchmark, as in the operator run); its status is patched with the
// hash; the Secret is created; the status is patched with Ready. The manager's two status writes
// are what crash safety needs: the hash is persisted before the Secret carries the secret.
func measureFloor(ctx context.Context, c client.Client, n, workers int) (time.Duration, error) {
	start := time.Now()
	err := fanout.Run(n, workers, func(i int) error {
		obj := benchClient("floor", i)
		if err := c.Create(ctx, obj); err != nil {
			return err
		}
		secret, err := credentials.NewSecret()
		if err != nil {
			return err
		}
		base := obj.DeepCopy()
		obj.Status.ClientID = obj.Name
		obj.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(secret), CreatedAt: metav1.Now()}}
		if err := c.Status().Patch(ctx, obj, client.MergeFrom(base)); err != nil {
			return err
		}
		if err := c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "floor", Name: obj.Name + "-credentials"},
			Data:       map[string][]byte{m2mv1alpha1.SecretKeyClientID: []byte(obj.Name), m2mv1alpha1.SecretKeyClientSecret: []byte(secret)},
		}); err != nil {
			return err
		}
		base = obj.DeepCopy()
		meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "CredentialsReady"})
		return c.Status().Patch(ctx, obj, client.MergeFrom(base))
	})
	return time.Since(start), err
}

func measureOperator(ctx context.Context, cfg *rest.Config, c client.Client, n, workers, creators int) (time.Duration, error) {
	mgr, err := controllers.NewManager(cfg, controllers.Options{
		IssuerURL:               "https://m2m.bench.example",
		WatchNamespaces:         []string{"operator"},
		MaxConcurrentReconciles: workers,
	})
	if err != nil {
		return 0, err
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = mgr.Start(mctx) }()
	if !mgr.GetCache().WaitForCacheSync(mctx) {
		return 0, fmt.Errorf("the manager's cache did not sync")
	}

	// Count Ready clients through the manager's own cache: no extra load on the API server.
	var ready atomic.Int64
	seen := sync.Map{}
	inf, err := mgr.GetCache().GetInformer(mctx, &m2mv1alpha1.M2MClient{})
	if err != nil {
		return 0, err
	}
	allReady := make(chan struct{})
	var once sync.Once
	observe := func(o any) {
		obj, ok := o.(*m2mv1alpha1.M2MClient)
		if !ok || !meta.IsStatusConditionTrue(obj.Status.Conditions, m2mv1alpha1.ConditionReady) {
			return
		}
		if _, loaded := seen.LoadOrStore(obj.Name, true); !loaded && ready.Add(1) == int64(n) {
			once.Do(func() { close(allReady) })
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, o any) { observe(o) },
	}); err != nil {
		return 0, err
	}

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return 0, err
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	// Progress, so that a run too long for its timeout still shows its rate.
	progress := time.NewTicker(time.Minute)
	defer progress.Stop()
	go func() {
		for range progress.C {
			fmt.Printf("          %s: %d Ready\n", time.Since(start).Round(time.Second), ready.Load())
		}
	}()
	if err := fanout.Run(n, creators, func(i int) error {
		return c.Create(ctx, benchClient("operator", i))
	}); err != nil {
		return 0, err
	}
	select {
	case <-allReady:
	case <-time.After(readyTimeout):
		return 0, fmt.Errorf("only %d of %d clients became Ready", ready.Load(), n)
	}
	return time.Since(start), nil
}

func benchClient(ns string, i int) *m2mv1alpha1.M2MClient {
	return &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("client-%06d", i)},
		Spec:       m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:things", "write:things"}},
	}
}

// procStatus is a field of /proc/self/status (Linux), or "unknown".
func procStatus(field string) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
