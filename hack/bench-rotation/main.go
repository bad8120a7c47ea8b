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
	"os"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/hack/internal/rotatingclients"
	"github.com/m2m-dev/m2m-operator/hack/internal/tokenload"
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
		// Without an IssuanceLimit, off: 16 closed-loop consumers over 1,000 clients ask each
		// for more than the default of 600 tokens a minute, and what is measured is the rotation.
		_ = tokenserver.Run(ctx, env.Config, tokenserver.Options{IssuerURL: issuer, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret})
	}()

	fmt.Printf("creating %d clients...\n", n)
	clients := rotatingclients.Clients{Client: c, Namespace: ns, N: n}
	if err := clients.Create(ctx, time.Hour); err != nil {
		return err
	}
	if err := clients.Wait(ctx, 10*time.Minute, func(*m2mv1alpha1.M2MClient) bool { return true }); err != nil {
		return err
	}
	// The "kubelet": hands every new Secret value to its pod after the delay.
	mounts, err := clients.Follow(ctx, env.Config, delay)
	if err != nil {
		return err
	}

	// Consumers.
	load := tokenload.Load{Issuer: issuer, Clients: n, Workers: workers, Credentials: func(i int) (string, string) { return mounts[i].Get(time.Now()) }}.Closed(ctx)
	time.Sleep(3 * time.Second) // consumers warm up before the rotations

	fmt.Printf("rotating %d clients at once (trigger v1 -> v2) under load from %d consumers...\n", n, workers)
	start := time.Now()
	if err := clients.Trigger(ctx, "v2"); err != nil {
		return err
	}
	triggered := time.Since(start)
	if err := clients.Wait(ctx, 10*time.Minute, rotatingclients.Rotated("v2")); err != nil {
		return err
	}
	rotated := time.Since(start)
	// Keep the load on until every consumer has seen its new secret.
	time.Sleep(delay + 2*time.Second)
	res := load.Stop()

	fmt.Printf("\nclients rotated:          %d (trigger updates sent in %s)\n", n, triggered.Round(time.Millisecond))
	fmt.Printf("time until all rotated:   %s\n", rotated.Round(time.Millisecond))
	fmt.Printf("consumer re-read delay:   %s\n", delay)
	fmt.Printf("token requests:           %d, failed: %d\n", res.Requests(), res.Failed())
	fmt.Printf("token latency p50 / p99:  %s / %s (Go client, %d connections)\n", res.Percentile(0.5).Round(time.Microsecond), res.Percentile(0.99).Round(time.Microsecond), workers)
	return nil
}
