package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// writeCert writes a fresh self-signed certificate for 127.0.0.1 and returns its serial number.
func writeCert(t *testing.T, certFile, keyFile string) *big.Int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "m2m-token-server"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then certificate: the watcher reloads on the certificate's change.
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return serial
}

// A second token server, over TLS and with a signing-key Secret that does not exist yet: it is not
// ready until the Secret appears, and it serves a replaced certificate without a restart.
func TestTheTokenServerIsReadyOnlyWithAKeyAndReloadsItsTLSCertificate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writeCert(t, certFile, keyFile)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	keyRef := types.NamespacedName{Namespace: "m2m-system", Name: "second-server-keys"}
	done := make(chan error, 1)
	go func() {
		done <- tokenserver.Run(ctx, env.Config, tokenserver.Options{
			IssuerURL: url, Listener: ln, SigningKeySecret: keyRef, TLSCertFile: certFile, TLSKeyFile: keyFile,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("token server: %v", err)
		}
	})
	// The test trusts whatever certificate is served, and looks at which one it is.
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path string) (int, *big.Int, error) {
		resp, err := httpc.Get(url + path)
		if err != nil {
			return 0, nil, err
		}
		resp.Body.Close()
		return resp.StatusCode, resp.TLS.PeerCertificates[0].SerialNumber, nil
	}

	testenv.Eventually(t, wait, func() error {
		code, serial, err := get("/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || serial.Cmp(first) != 0 {
			return fmt.Errorf("readyz %d with certificate %v, want 503 with the first certificate", code, serial)
		}
		return nil
	})

	key, err := signingkeys.Generate(signingkeys.RS256, signingkeys.StateActive, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, err := (&signingkeys.Set{Keys: []*signingkeys.Key{key}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: keyRef.Namespace, Name: keyRef.Name}, Data: map[string][]byte{signingkeys.DataKey: data}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if code, _, err := get("/readyz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("readyz %d %v after the key Secret appeared", code, err)
		}
		return nil
	})

	second := writeCert(t, certFile, keyFile)
	testenv.Eventually(t, wait, func() error {
		httpc.CloseIdleConnections()
		_, serial, err := get("/healthz")
		if err != nil {
			return err
		}
		if serial.Cmp(second) != 0 {
			return fmt.Errorf("still serving certificate %v", serial)
		}
		return nil
	})
}
