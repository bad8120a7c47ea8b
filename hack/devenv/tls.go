package devenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// The issuers of make dev: plain HTTP by default, HTTPS with TLS (make dev TLS=1).
const (
	DefaultIssuerURL    = "http://127.0.0.1:8080"
	DefaultTLSIssuerURL = "https://127.0.0.1:8443"
)

// The Secrets of the manager's CA and of the token server's certificate, named as in an install
// (config/default's --serving-cert-secret), so that the runbook's commands work as written.
var (
	CASecret   = types.NamespacedName{Namespace: signingkeys.DefaultSecret.Namespace, Name: "m2m-ca"}
	CertSecret = types.NamespacedName{Namespace: signingkeys.DefaultSecret.Namespace, Name: "m2m-token-server-tls"}
)

// issuerOf is the issuer URL of o: the default one for its transport (or its public door) when it
// names none, and an error when the issuer's scheme contradicts TLS.
func issuerOf(o Options) (string, error) {
	switch {
	case o.IssuerURL == "" && o.PublicDoor:
		return DefaultPublicIssuerURL, nil
	case o.IssuerURL == "" && o.TLS:
		return DefaultTLSIssuerURL, nil
	case o.IssuerURL == "":
		return DefaultIssuerURL, nil
	case o.TLS && !strings.HasPrefix(o.IssuerURL, "https://"):
		return "", fmt.Errorf("with TLS the token server serves HTTPS, so the issuer URL must be https://, not %s (or leave it unset for %s)", o.IssuerURL, DefaultTLSIssuerURL)
	case !o.TLS && strings.HasPrefix(o.IssuerURL, "https://"):
		return "", fmt.Errorf("the issuer URL %s is https://, but without TLS the token server serves plain HTTP: add -tls (make dev TLS=1)", o.IssuerURL)
	}
	return o.IssuerURL, nil
}

// TLSDir holds the files of the token server's certificate (tls.crt, tls.key, and the CA bundle
// ca.crt), kept in step with CertSecret; empty without TLS.
func (s *System) TLSDir() string {
	if !s.TLS {
		return ""
	}
	return filepath.Join(s.StateDir, "tls")
}

// CAFile is the CA bundle that clients without a credentials Secret trust (curl --cacert);
// empty without TLS.
func (s *System) CAFile() string {
	if !s.TLS {
		return ""
	}
	return filepath.Join(s.TLSDir(), servingcert.TLSCA)
}

// servingCert is what makes the manager issue the token server's certificate, as an install's
// --serving-cert-secret does, for the issuer's host (added by the manager) and localhost.
func (s *System) servingCert() *controllers.ServingCertOptions {
	if !s.TLS {
		return nil
	}
	return &controllers.ServingCertOptions{CASecret: CASecret, CertSecret: CertSecret, Hosts: []string{"localhost"}}
}

// mountCertificate starts keeping TLSDir in step with CertSecret, after removing the files of an
// earlier run, whose CA no longer exists: the token server must wait for this run's.
func (s *System) mountCertificate(ctx context.Context) error {
	if err := os.RemoveAll(s.TLSDir()); err != nil {
		return err
	}
	fmt.Fprintf(s.Out, "waiting for the manager to issue the token server's certificate into Secret %s; the token server serves HTTPS once it is in %s\n", CertSecret, s.TLSDir())
	var err error
	s.certMount, err = startMount(ctx, s.Config, CertSecret, s.TLSDir(), servingcert.TLSCert, servingcert.TLSKey, servingcert.TLSCA)
	return err
}

// waitForCertificate returns once the token server's certificate is in TLSDir, or when ctx ends.
func (s *System) waitForCertificate(ctx context.Context) error {
	select {
	case <-s.certMount.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// certificateIssued says whether the token server's certificate has reached TLSDir.
func (s *System) certificateIssued() bool {
	select {
	case <-s.certMount.ready:
		return true
	default:
		return false
	}
}

// httpClient reaches the token server: over TLS trusting only the CA bundle caFile, read again
// at each call since a CA rotation changes it, or with no caFile over plain HTTP.
func httpClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return http.DefaultClient, nil
	}
	bundle, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, errors.New(caFile + " holds no certificate")
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}}}, nil
}

// EmergencyCARotation is the runbook's command for a compromised CA (docs/operations.md#tls), as
// a line to paste after the NextSteps' exports; empty without TLS.
func (s *System) EmergencyCARotation() string {
	if !s.TLS {
		return ""
	}
	return fmt.Sprintf("%s -n %s annotate secret %s %s=$(date +%%s)", s.Kubectl(), CASecret.Namespace, CASecret.Name, keyring.EmergencyAnnotation)
}
