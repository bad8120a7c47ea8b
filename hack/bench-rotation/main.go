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
	"os"
	"time"

	"go.uber.org/zap/zapcore"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/hack/internal/rotatingclients"
	"github.com/m2m-dev/m2m-operator/hack/internal/system"
	"github.com/m2m-dev/m2m-operator/hack/internal/tokenload"
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
	ctx, cancel := context.WithCancel(context.Background())
	sys, err := system.Start(ctx, ns, controllers.Options{MaxConcurrentReconciles: 8})
	if err != nil {
		cancel()
		return err
	}
	// The manager and the token server stop before the control plane.
	defer func() { cancel(); _ = sys.Env.Stop() }()
	env, c, issuer := sys.Env, sys.Env.Client, sys.Issuer

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
