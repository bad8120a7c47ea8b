package devenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// `make dev TLS=1` serves the token server over HTTPS with a certificate of the manager's CA, as
// installs do, and says so: the printed steps get tokens with curl --cacert and with kubectl m2m
// token (the Secret's ca.crt). The runbook's emergency CA rotation, pasted as printed, reaches the
// token server's files: it serves a certificate of the new CA, a client that trusts its Secret's
// new ca.crt gets a token, and one that trusts only the old CA fails its handshake.
func TestTheDevSystemWithTLSServesTheManagersCertificateAndFollowsAnEmergencyCARotation(t *testing.T) {
	var out bytes.Buffer
	iss := freeIssuer(t, "https")
	sys, clients, _ := startReady(t, Options{StateDir: t.TempDir(), IssuerURL: iss, TLS: true, Out: &out})
	ctx := context.Background()
	sys.PrintNextSteps(clients)
	for _, want := range []string{"waiting for the manager to issue the token server's certificate", "HTTPS with the manager's CA", "--cacert " + sys.CAFile(), sys.EmergencyCARotation()} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the printed steps lack %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "plain HTTP") {
		t.Fatalf("the printed steps say plain HTTP of an HTTPS token server:\n%s", out.String())
	}
	got := runPrinted(t, out.String(), sys.NextSteps(clients)...)
	for _, want := range []string{`"access_token":"`, `"keys":[{`, "wrong_secret"} {
		if !strings.Contains(got, want) {
			t.Fatalf("the printed commands' output lacks %q:\n%s", want, got)
		}
	}
	if !regexp.MustCompile(`(?m)^eyJ[\w-]+\.[\w-]+\.[\w-]+$`).MatchString(got) {
		t.Fatalf("kubectl m2m token printed no token:\n%s", got)
	}

	oldCA := certOf(t, sys, CASecret, servingcert.CACert)
	cert := servedBy(t, iss)
	if err := cert.CheckSignatureFrom(oldCA); err != nil {
		t.Fatalf("the token server's certificate is not of the manager's CA: %v", err)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if err := cert.VerifyHostname(host); err != nil {
			t.Fatalf("the token server's certificate does not cover %s: %v", host, err)
		}
	}
	c := clients[0]
	for i := range clients {
		if m2mv1alpha1.SecretAuthentication(&clients[i]) {
			c = clients[i]
			break
		}
	}
	credentials := secretOf(t, sys, c.Namespace, c.Status.SecretName)
	oldBundle := credentials.Data[m2mv1alpha1.SecretKeyCA]

	runPrinted(t, out.String(), sys.NextSteps(clients)[0], sys.EmergencyCARotation())
	testenv.Eventually(t, time.Minute, func() error {
		ca := secretOf(t, sys, CASecret.Namespace, CASecret.Name)
		if ca.Annotations[keyring.EmergencyRotatedAnnotation] == "" {
			return errors.New("the manager has not acted on the emergency")
		}
		newCA, err := servingcert.ParseCert(ca.Data[servingcert.CACert])
		if err != nil {
			return err
		}
		if err := servedBy(t, iss).CheckSignatureFrom(newCA); err != nil {
			return errors.New("the token server does not serve a certificate of the new CA yet")
		}
		if onDisk, _ := os.ReadFile(sys.CAFile()); !bytes.Equal(onDisk, ca.Data[servingcert.Bundle]) {
			return errors.New(sys.CAFile() + " is not the new bundle yet")
		}
		credentials = secretOf(t, sys, c.Namespace, c.Status.SecretName)
		if !bytes.Equal(credentials.Data[m2mv1alpha1.SecretKeyCA], ca.Data[servingcert.Bundle]) {
			return errors.New("the Secret's ca.crt is not the new bundle yet")
		}
		resp, err := testenv.ClientCredentials(ctx, trusting(t, credentials.Data[m2mv1alpha1.SecretKeyCA]), iss,
			string(credentials.Data[m2mv1alpha1.SecretKeyClientID]), string(credentials.Data[m2mv1alpha1.SecretKeyClientSecret]))
		if err != nil || resp.AccessToken == "" {
			return errors.New("a client with the new ca.crt gets no token: " + string(resp.Raw))
		}
		return nil
	})
	_, err := testenv.ClientCredentials(ctx, trusting(t, oldBundle), iss,
		string(credentials.Data[m2mv1alpha1.SecretKeyClientID]), string(credentials.Data[m2mv1alpha1.SecretKeyClientSecret]))
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("a client that trusts only the old CA is not refused by the handshake: %v", err)
	}
}

// An issuer URL that contradicts the transport is refused before anything starts, with what to
// do; none takes the default of the transport.
func TestTheDevSystemsIssuerMatchesItsTransport(t *testing.T) {
	for _, c := range []struct {
		issuer string
		tls    bool
		want   string
	}{
		{"", false, DefaultIssuerURL},
		{"", true, DefaultTLSIssuerURL},
		{"https://127.0.0.1:9443", true, "https://127.0.0.1:9443"},
		{"http://127.0.0.1:8080", true, ""},
		{"https://127.0.0.1:8443", false, ""},
	} {
		got, err := issuerOf(Options{IssuerURL: c.issuer, TLS: c.tls})
		if got != c.want || (err == nil) != (c.want != "") {
			t.Errorf("issuer %q with TLS %v: got %q, %v; want %q", c.issuer, c.tls, got, err, c.want)
		}
	}
}

// certOf parses the certificate under key in the Secret name.
func certOf(t *testing.T, sys *System, name types.NamespacedName, key string) *x509.Certificate {
	t.Helper()
	cert, err := servingcert.ParseCert(secretOf(t, sys, name.Namespace, name.Name).Data[key])
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func secretOf(t *testing.T, sys *System, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := sys.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// servedBy is the certificate the token server of iss presents now, read without verifying it.
func servedBy(t *testing.T, iss string) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(iss, "https://"), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the certificate only
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// trusting is a client that trusts only the CAs of bundle, on new connections.
func trusting(t *testing.T, bundle []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("the bundle holds no certificate")
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}}}
}
