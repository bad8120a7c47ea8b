// Package tls runs the manager with its serving certificate and the token server over HTTPS
// against a real API server: what the default install does.
package tls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
	"github.com/m2m-dev/m2m-operator/test/support/volume"
)

const wait = 30 * time.Second

// overlap is the CA rotation's overlap here: longer than the simulated kubelet (500 ms) and the
// token server's certificate reload (controller-runtime's certwatcher polls every 10 s) take.
const overlap = 15 * time.Second

var (
	env        *testenv.Env
	issuer     string
	caSecret   = types.NamespacedName{Namespace: "m2m-system", Name: "m2m-ca"}
	certSecret = types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-tls"}
)

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	os.Exit(run(m))
}

func run(m *testing.M) int {
	e, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env = e
	defer func() { _ = e.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	managerConfig, tokenServerConfig, err := testenv.InstallRBAC(ctx, e.Environment, e.Client, controlplane.Root())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	issuer = "https://" + ln.Addr().String()
	mgr, err := controllers.NewManager(managerConfig, controllers.Options{IssuerURL: issuer, ServingCert: &controllers.ServingCertOptions{
		CASecret: caSecret, CertSecret: certSecret, Hosts: []string{"m2m-token-server.m2m-system.svc"},
		Policy: servingcert.Policy{CAValidity: 1000 * time.Hour, CARenewBefore: 100 * time.Hour, Overlap: overlap, CertValidity: 90 * time.Hour},
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = mgr.Start(ctx) }()

	// The kubelet: the serving certificate's Secret, mounted as files, refreshed every 500 ms.
	dir, err := os.MkdirTemp("", "m2m-tls")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	defer cancel() // stop the token server before its files go
	go mountSecret(ctx, certSecret, dir, 500*time.Millisecond)
	if err := waitForFile(filepath.Join(dir, servingcert.TLSKey), wait); err != nil {
		fmt.Fprintln(os.Stderr, "the manager never issued the serving certificate:", err)
		return 1
	}
	go func() {
		_ = tokenserver.Run(ctx, tokenServerConfig, tokenserver.Options{
			IssuerURL: issuer, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret,
			TLSCertFile: filepath.Join(dir, servingcert.TLSCert), TLSKeyFile: filepath.Join(dir, servingcert.TLSKey),
		})
	}()
	if err := waitReady(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "the token server never became ready over HTTPS:", err)
		return 1
	}
	return m.Run()
}

// mountSecret keeps dir in step with the Secret key, as the kubelet keeps a mounted Secret, looking
// every period, until ctx ends.
func mountSecret(ctx context.Context, key types.NamespacedName, dir string, period time.Duration) {
	volume.Follow(ctx, env.Client, key, dir, period)
}

func waitForFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not appear", path)
}

// waitReady waits until /readyz answers 200 over TLS verified against the CA bundle.
func waitReady(ctx context.Context, dir string) error {
	deadline := time.Now().Add(wait)
	var last error
	for time.Now().Before(deadline) {
		hc, err := testenv.BundleClient(filepath.Join(dir, servingcert.TLSCA))
		if err == nil {
			var resp *http.Response
			if resp, err = hc.Get(issuer + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				err = fmt.Errorf("readyz: %d", resp.StatusCode)
			}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

// served is the certificate the token server presents now (without verifying it).
func served(t *testing.T) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", issuer[len("https://"):], &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the certificate only
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func secret(t *testing.T, key types.NamespacedName) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), key, s); err != nil {
		t.Fatal(err)
	}
	return s
}
