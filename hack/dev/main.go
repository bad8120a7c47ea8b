// Command dev runs the whole m2m-operator system on a local control plane until interrupted.
// `make dev` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/m2m-dev/m2m-operator/hack/devenv"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
)

func main() {
	root, _ := os.Getwd()
	o := devenv.Options{Out: os.Stdout}
	flag.StringVar(&o.Root, "root", root, "Repository root.")
	flag.StringVar(&o.StateDir, "state-dir", filepath.Join(root, ".dev"), "Where the kubeconfig and state are kept.")
	flag.StringVar(&o.IssuerURL, "issuer-url", "", "Issuer URL written into the credentials Secrets (default "+devenv.DefaultIssuerURL+", "+devenv.DefaultTLSIssuerURL+" with -tls, "+devenv.DefaultPublicIssuerURL+" with -public: the door).")
	flag.BoolVar(&o.TLS, "tls", false, "Serve the token server over HTTPS with the manager's CA, as installs do.")
	flag.BoolVar(&o.PublicDoor, "public", false, "Serve the issuer as a public door, as a Gateway does: a gateway with a certificate of its own CA (in the state directory's public-ca.crt) re-encrypts to the token server at -in-cluster-url, whose credentials Secrets say token_url (in-cluster) and public_token_url (the door). Implies -tls; the issuer defaults to "+devenv.DefaultPublicIssuerURL+".")
	flag.StringVar(&o.InClusterURL, "in-cluster-url", "", "With -public, where the token server listens behind the door, the URL pods would use (default "+devenv.DefaultTLSIssuerURL+").")
	flag.StringVar(&o.DefaultAudience, "default-audience", "", `The "aud" of tokens for clients with no spec.audiences; empty means the issuer URL.`)
	flag.StringVar(&o.TokenServerMetrics, "token-server-metrics-address", devenv.DefaultTokenServerMetrics, "Where the token server serves /metrics; empty serves none.")
	flag.StringVar(&o.ManagerMetrics, "manager-metrics-address", devenv.DefaultManagerMetrics, "Where the manager serves /metrics; empty serves none.")
	verbose := flag.Bool("v", false, "Log debug detail, with a line per request the token server refuses.")
	flag.Parse()
	level := zapcore.InfoLevel
	if *verbose {
		level = zapcore.DebugLevel
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(level)))

	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

// run runs the system until Ctrl-C (or SIGTERM) and stops it. A stop that was asked for and went
// cleanly is a success, also while the samples were still getting Ready: make dev then ends
// without an error of its own.
func run(o devenv.Options) (err error) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	assets, err := controlplane.Assets()
	if err != nil {
		return err
	}
	o.Assets = assets
	fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd from", assets)
	sys, err := devenv.Start(o)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "stopping")
		err = errors.Join(err, sys.Stop())
	}()
	waitCtx, waitCancel := context.WithTimeout(ctx, time.Minute)
	clients, err := sys.WaitReady(waitCtx)
	waitCancel()
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	for _, c := range clients {
		fmt.Fprintln(os.Stderr, "ready:", devenv.Describe(c))
	}
	sys.PrintNextSteps(clients)
	<-ctx.Done()
	return nil
}
