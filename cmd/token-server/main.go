// Command token-server issues OAuth 2.0 access tokens (RFC 9068 JWTs) to the cluster's
// M2MClients with the client credentials grant. It reads M2MClients and its one signing-key
// Secret from the API server, and no other Secret.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
)

func main() {
	var o tokenserver.Options
	var namespaces, keySecret string
	zapOpts := zap.Options{}
	flag.StringVar(&o.IssuerURL, "issuer-url", "", "The issuer URL (required). Every URL the server advertises derives from it.")
	flag.StringVar(&o.ListenAddress, "listen-address", ":8080", "Address to serve on.")
	flag.StringVar(&keySecret, "signing-key-secret", signingkeys.DefaultSecret.String(), "namespace/name of the signing-key Secret the manager writes.")
	flag.StringVar(&namespaces, "watch-namespaces", "", "Comma-separated namespaces whose M2MClients may get tokens. Empty means all.")
	flag.StringVar(&o.DefaultAudience, "default-audience", "", "Audience of tokens for clients with no spec.audiences.")
	flag.StringVar(&o.TLSCertFile, "tls-cert-file", "", "PEM certificate for HTTPS; reloaded when it changes.")
	flag.StringVar(&o.TLSKeyFile, "tls-key-file", "", "PEM private key for HTTPS; reloaded when it changes.")
	flag.StringVar(&o.DebugAddress, "debug-address", "", "Address of a net/http/pprof endpoint for profiling; empty (the default) disables it. Never expose it.")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	for _, ns := range strings.Split(namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			o.WatchNamespaces = append(o.WatchNamespaces, ns)
		}
	}
	var err error
	if o.SigningKeySecret, err = signingkeys.ParseSecretRef(keySecret); err != nil {
		fail(err)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fail(err)
	}
	ctx := log.IntoContext(ctrl.SetupSignalHandler(), ctrl.Log.WithName("token-server"))
	if err := tokenserver.Run(ctx, cfg, o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "token-server:", err)
	os.Exit(1)
}
