package tokenserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// Options configure a running token server.
type Options struct {
	IssuerURL string
	// InClusterURL and PreviousIssuerURL are Config's (--in-cluster-url, --previous-issuer-url).
	InClusterURL, PreviousIssuerURL string
	ListenAddress                   string
	SigningKeySecret                types.NamespacedName
	WatchNamespaces                 []string
	DefaultAudience                 string
	// TLSCertFile and TLSKeyFile serve HTTPS; both or neither. They are reloaded when they change.
	TLSCertFile, TLSKeyFile string
	// ClientCAFile is the PEM bundle of the pod-client CA (--client-ca-file): set, the TLS
	// listener asks for client certificates and verifies those given against it, and
	// tls_client_auth is offered. It is read again when it changes.
	ClientCAFile string
	Clock        clock.Clock
	// Listener, when set, is served instead of listening on ListenAddress.
	Listener net.Listener
	// DebugAddress, when set, serves net/http/pprof there, apart from the OAuth endpoints.
	DebugAddress string
	// MetricsAddress serves /metrics, apart from the OAuth endpoints; empty or "0" disables it.
	MetricsAddress string
	// MetricsListener, when set, is served instead of listening on MetricsAddress.
	MetricsListener net.Listener
	// FederatedIssuers are the issuers whose tokens clients may accept (--federated-issuer).
	FederatedIssuers []FederatedIssuer
	// PerClientMetrics labels the token counters by client ID too (--metrics-per-client).
	PerClientMetrics bool
	// ClientAddresses finds the client's address behind trusted proxies (--trusted-proxies,
	// --trusted-proxy-header).
	ClientAddresses ClientAddresses
	// FailureLimit limits failed authentications by source (--failure-rate, --failure-burst,
	// --failure-sources); the zero value, unlike the flags' defaults, limits nothing.
	FailureLimit FailureLimit
	// IssuanceLimit limits the token requests of each client (--issuance-per-minute,
	// --issuance-burst); the zero value, unlike the flags' defaults, limits nothing.
	IssuanceLimit IssuanceLimit
	// DPoPNonces requires the server's nonce in DPoP proofs (--dpop-nonce).
	DPoPNonces bool
	// RevocationWaiters bounds the long-polls of the revocation list held at once
	// (--max-revocation-waiters).
	RevocationWaiters int
}

// Run serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	logger := log.FromContext(ctx)
	iss, err := issuer.Parse(o.IssuerURL)
	if err != nil {
		return err
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if o.ClientCAFile != "" && o.TLSCertFile == "" {
		return errors.New("--client-ca-file needs --tls-cert-file: client certificates come with TLS")
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	clients, err := NewInformerClients(cfg, o.WatchNamespaces, o.Clock)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	keys := NewSecretKeys(cs, o.SigningKeySecret, o.Clock, signingkeys.DefaultRetention)
	clients.VerifyOnArrival(keys)
	serviceAccounts := NewClusterServiceAccounts(cs, o.Clock)
	federation := NewFederation(o.FederatedIssuers, o.Clock)
	revocations, err := NewInformerRevocations(cfg, clients, keys)
	if err != nil {
		return err
	}
	replica, _ := os.Hostname() // a pod's name
	srv, err := New(Config{
		IssuerURL:          iss,
		InClusterURL:       o.InClusterURL,
		PreviousIssuerURL:  o.PreviousIssuerURL,
		DefaultAudience:    o.DefaultAudience,
		Clients:            clients,
		Keys:               keys,
		Revocations:        revocations,
		ServiceAccounts:    serviceAccounts,
		Federation:         federation,
		Clock:              o.Clock,
		Registry:           prometheus.NewRegistry(),
		PerClientMetrics:   o.PerClientMetrics,
		Staleness:          clients.Staleness,
		CachedClients:      clients.Count,
		UndecodableClients: clients.Undecodable,
		KeyLoadErrors:      keys.LoadErrors,
		Log:                logger,
		Access:             KubernetesAccess{Client: cs},
		Replica:            replica,
		ClientAddresses:    o.ClientAddresses,
		FailureLimit:       o.FailureLimit,
		IssuanceLimit:      o.IssuanceLimit,
		DPoPNonces:         o.DPoPNonces,
		RevocationWaiters:  o.RevocationWaiters,
		ClientCertificates: o.ClientCAFile != "",
		Ready: func() error {
			switch {
			case !clients.Synced():
				return errors.New("the M2MClient cache has not synced")
			case !revocations.Synced():
				return errors.New("the ClientIDBinding cache has not synced")
			case !keys.Loaded():
				return errors.New("no signing key is loaded")
			}
			return nil
		},
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clients.Start(ctx)
	revocations.Start(ctx)
	go keys.Run(ctx)
	go serviceAccounts.Run(ctx)
	federation.Run(ctx)

	httpServer := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	ln, err := o.listen(ctx, srv)
	if err != nil {
		return err
	}
	if o.PreviousIssuerURL != "" {
		// A move that is never finished keeps the old audience accepted for good: say so at
		// every start.
		logger.Info("during a move of the issuer: assertions for the other issuer are accepted, and its tokens introspected; remove --previous-issuer-url once the move is done", "otherIssuer", o.PreviousIssuerURL)
	}
	logger.Info("token server listening", "address", ln.Addr().String(), "issuer", iss, "tls", o.TLSCertFile != "")

	return serveUntilDone(ctx, httpServer, ln)
}

// listen opens the token port (over TLS with a certificate file, which it reloads when the file
// changes) and serves the metrics and debug ports until ctx ends.
func (o Options) listen(ctx context.Context, srv *Server) (net.Listener, error) {
	var err error
	ln := o.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", o.ListenAddress); err != nil {
			return nil, fmt.Errorf("listening on %s: %w", o.ListenAddress, err)
		}
	}
	metricsLn := o.MetricsListener
	if metricsLn == nil && o.MetricsAddress != "" && o.MetricsAddress != "0" {
		if metricsLn, err = net.Listen("tcp", o.MetricsAddress); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("listening on %s for metrics: %w", o.MetricsAddress, err)
		}
	}
	if metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.MetricsHandler())
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = ms.Serve(metricsLn) }()
		go func() { <-ctx.Done(); _ = ms.Close() }()
	}
	if o.DebugAddress != "" {
		debug := http.NewServeMux()
		debug.HandleFunc("/debug/pprof/", pprof.Index)
		debug.HandleFunc("/debug/pprof/profile", pprof.Profile)
		debug.HandleFunc("/debug/pprof/trace", pprof.Trace)
		dbg := &http.Server{Addr: o.DebugAddress, Handler: debug, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = dbg.ListenAndServe() }()
		go func() { <-ctx.Done(); _ = dbg.Close() }()
	}
	if o.TLSCertFile != "" {
		watcher, err := certwatcher.New(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("loading the TLS certificate: %w", err)
		}
		go func() { _ = watcher.Start(ctx) }()
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: watcher.GetCertificate, NextProtos: []string{"http/1.1"}}
		if o.ClientCAFile != "" {
			ca := &clientCAFile{path: o.ClientCAFile}
			if _, err := ca.pool(); err != nil {
				// A file that is there but holds no certificate is a mistake to see at start; a
				// missing one is the optional ConfigMap not published yet.
				if _, serr := os.Stat(o.ClientCAFile); !errors.Is(serr, fs.ErrNotExist) {
					_ = ln.Close()
					return nil, err
				}
				log.FromContext(ctx).Info("--client-ca-file does not exist yet: no client certificates are asked for until it does", "file", o.ClientCAFile)
			}
			cfg.GetConfigForClient = ca.configFor(cfg)
		}
		ln = tls.NewListener(ln, cfg)
	}
	return ln, nil
}

// serveUntilDone serves on ln until ctx ends, then shuts down, giving requests in flight 10 s to finish.
func serveUntilDone(ctx context.Context, httpServer *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- httpServer.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	if err := httpServer.Shutdown(shutdown); err != nil {
		return err
	}
	return nil
}
