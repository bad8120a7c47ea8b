// Command bench-rotation rotates N clients at once (a trigger change on each) while consumers keep
// asking the token server for tokens with the credentials they have "mounted", re-reading each
// Secret only after a kubelet-like delay. It reports how long until every client has rotated and
// how many token requests failed. `make bench-rotation` runs it; results go in
// docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

const ns = "bench"

func main() {
	n := flag.Int("clients", 1000, "Clients rotated at once.")
	workers := flag.Int("connections", 16, "Concurrent token consumers.")
	delay := flag.Duration("kubelet-delay", 60*time.Second, "How long after a change a consumer sees the new Secret, as a kubelet-refreshed volume.")
	flag.Parse()
	logf.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	if err := run(*n, *workers, *delay); err != nil {
		fmt.Fprintln(os.Stderr, "bench-rotation:", err)
		os.Exit(1)
	}
}

// mounted is what one consumer pod sees of one client's Secret: updated only after the delay.
type mounted struct {
	mu               sync.Mutex
	id, secret, next string
	nextAt           time.Time
}

func (m *mounted) get(now time.Time) (string, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.next != "" && !now.Before(m.nextAt) {
		m.secret, m.next = m.next, ""
	}
	return m.id, m.secret
}

func run(n, workers int, delay time.Duration) error {
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := env.Client
	for _, name := range []string{"m2m-system", ns} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	issuer := "http://" + ln.Addr().String()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	mgr, err := controllers.NewManager(cfg, controllers.Options{IssuerURL: issuer, MaxConcurrentReconciles: 8})
	if err != nil {
		return err
	}
	go func() { _ = mgr.Start(ctx) }()
	go func() {
		_ = tokenserver.Run(ctx, env.Config, tokenserver.Options{IssuerURL: issuer, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret})
	}()

	fmt.Printf("creating %d clients...\n", n)
	for i := range n {
		obj := &m2mv1alpha1.M2MClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("client-%04d", i)},
			Spec: m2mv1alpha1.M2MClientSpec{
				Scopes:    []m2mv1alpha1.Scope{"read:things"},
				Audiences: []m2mv1alpha1.Audience{"https://api.example.com"},
				Rotation:  m2mv1alpha1.RotationPolicy{Trigger: "v1", GracePeriod: &metav1.Duration{Duration: time.Hour}},
			},
		}
		if err := c.Create(ctx, obj); err != nil {
			return err
		}
	}
	mounts := make([]*mounted, n)
	if err := waitFor(ctx, c, n, func(o *m2mv1alpha1.M2MClient) bool { return true }); err != nil {
		return err
	}
	secrets := &corev1.SecretList{}
	if err := c.List(ctx, secrets, client.InNamespace(ns)); err != nil {
		return err
	}
	byName := map[string]corev1.Secret{}
	for _, s := range secrets.Items {
		byName[s.Name] = s
	}
	for i := range n {
		s := byName[fmt.Sprintf("client-%04d-credentials", i)]
		mounts[i] = &mounted{id: string(s.Data[m2mv1alpha1.SecretKeyClientID]), secret: string(s.Data[m2mv1alpha1.SecretKeyClientSecret])}
	}

	// The "kubelet": watches the Secrets and hands each change to its pod after the delay.
	w, err := clientWithWatch(env.Config).Watch(ctx, &corev1.SecretList{}, client.InNamespace(ns))
	if err != nil {
		return err
	}
	go func() {
		for ev := range w.ResultChan() {
			s, ok := ev.Object.(*corev1.Secret)
			if !ok {
				continue
			}
			var i int
			if _, err := fmt.Sscanf(s.Name, "client-%04d-credentials", &i); err != nil || i >= n {
				continue
			}
			m := mounts[i]
			m.mu.Lock()
			if v := string(s.Data[m2mv1alpha1.SecretKeyClientSecret]); v != m.secret {
				m.next, m.nextAt = v, time.Now().Add(delay)
			}
			m.mu.Unlock()
		}
	}()

	// Consumers.
	var ok, failed atomic.Int64
	var latMu sync.Mutex
	var latencies []time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for wi := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := wi; ; i = (i + workers) % n {
				select {
				case <-stop:
					return
				default:
				}
				id, secret := mounts[i].get(time.Now())
				start := time.Now()
				resp, err := testenv.ClientCredentials(ctx, httpc, issuer, id, secret)
				if err != nil || resp.Status != http.StatusOK {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				latMu.Lock()
				latencies = append(latencies, time.Since(start))
				latMu.Unlock()
			}
		}()
	}
	time.Sleep(3 * time.Second) // consumers warm up before the rotations

	fmt.Printf("rotating %d clients at once (trigger v1 -> v2) under load from %d consumers...\n", n, workers)
	start := time.Now()
	sem := make(chan struct{}, 16)
	var rwg sync.WaitGroup
	for i := range n {
		rwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer rwg.Done()
			defer func() { <-sem }()
			_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
				o := &m2mv1alpha1.M2MClient{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("client-%04d", i)}, o); err != nil {
					return err
				}
				o.Spec.Rotation.Trigger = "v2"
				return c.Update(ctx, o)
			})
		}()
	}
	rwg.Wait()
	triggered := time.Since(start)
	if err := waitFor(ctx, c, n, func(o *m2mv1alpha1.M2MClient) bool {
		return o.Status.LastRotationTrigger == "v2" && credentials.Entries(o.Status.AcceptedSecrets).Unexpiring() == 1 && len(o.Status.AcceptedSecrets) == 2
	}); err != nil {
		return err
	}
	rotated := time.Since(start)
	// Keep the load on until every consumer has seen its new secret.
	time.Sleep(delay + 2*time.Second)
	close(stop)
	wg.Wait()

	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	pct := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }
	fmt.Printf("\nclients rotated:          %d (trigger updates sent in %s)\n", n, triggered.Round(time.Millisecond))
	fmt.Printf("time until all rotated:   %s\n", rotated.Round(time.Millisecond))
	fmt.Printf("consumer re-read delay:   %s\n", delay)
	fmt.Printf("token requests:           %d, failed: %d\n", ok.Load()+failed.Load(), failed.Load())
	fmt.Printf("token latency p50 / p99:  %s / %s (Go client, %d connections)\n", pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), workers)
	return nil
}

func clientWithWatch(cfg *rest.Config) client.WithWatch {
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		panic(err)
	}
	return c
}

// waitFor waits until n clients are Ready and satisfy done.
func waitFor(ctx context.Context, c client.Client, n int, done func(*m2mv1alpha1.M2MClient) bool) error {
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		var list m2mv1alpha1.M2MClientList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		count := 0
		for i := range list.Items {
			o := &list.Items[i]
			if meta.IsStatusConditionTrue(o.Status.Conditions, m2mv1alpha1.ConditionReady) && done(o) {
				count++
			}
		}
		if count == n {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("clients did not settle")
}
