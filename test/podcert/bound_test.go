package podcert

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/podclientca"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/podcert"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
	"github.com/m2m-dev/m2m-operator/test/support/volume"
)

// The whole path of a certificate-bound token with nothing played but the kubelet: the manager
// signs the pod's PodCertificateRequest and publishes its CA, the token server trusts the CA
// through --client-ca-file (a file that does not exist yet when it starts, as the chart's
// optional ConfigMap mount is before the manager publishes it), pkg/m2mauth gets a token over
// mutual TLS from the kubelet's credential bundle, and a resource server using the library
// accepts it from that pod only: another pod of the same ServiceAccount, with its own certificate
// from the same signer, and a holder with no certificate are refused.
func TestAPodCertificateFromTheManagerGetsATokenFromTheTokenServerThatOnlyThatPodCanUse(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := testenv.Namespace(t, env.Client)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "https://" + ln.Addr().String()
	system := signingkeys.DefaultSecret.Namespace
	certSecret := types.NamespacedName{Namespace: system, Name: "m2m-token-server-tls"}
	testenv.RunManager(t, managerConfig, controllers.Options{
		IssuerURL: issuer, WatchNamespaces: []string{ns}, SkipNameValidation: true,
		ServingCert: &controllers.ServingCertOptions{CASecret: types.NamespacedName{Namespace: system, Name: "m2m-ca"}, CertSecret: certSecret},
	})

	// The kubelet's mounts of the token server: its serving certificate, and the optional
	// ConfigMap of the pod-client CA, empty until the test projects it.
	root := t.TempDir()
	servingDir, clientCADir := filepath.Join(root, "tls"), filepath.Join(root, "pod-client-ca")
	follow(t, certSecret, servingDir)
	testenv.Eventually(t, wait, func() error {
		_, err := os.Stat(filepath.Join(servingDir, servingcert.TLSKey))
		return err
	})
	testenv.RunTokenServer(t, tokenServerConfig, ln, "--issuer-url="+issuer, "--watch-namespaces="+ns,
		"--tls-cert-file="+filepath.Join(servingDir, servingcert.TLSCert), "--tls-key-file="+filepath.Join(servingDir, servingcert.TLSKey),
		"--client-ca-file="+filepath.Join(clientCADir, podclientca.CertKey), "--signing-key-secret="+signingkeys.DefaultSecret.String(), "--metrics-bind-address=0")
	testenv.Eventually(t, wait, func() error {
		hc, err := testenv.BundleClient(filepath.Join(servingDir, servingcert.TLSCA))
		if err != nil {
			return err
		}
		resp, err := hc.Get(issuer + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})

	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "billing"}}
	obj.Spec.Audiences = []m2mv1alpha1.Audience{"https://payments.example.com"}
	obj.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), PodCertificates: &m2mv1alpha1.PodCertificatePolicy{ServiceAccounts: []string{"worker"}}}
	testenv.CreateReady(t, env.Client, obj, wait)
	secretDir := filepath.Join(root, "credentials")
	follow(t, types.NamespacedName{Namespace: ns, Name: obj.Status.SecretName}, secretDir)
	testenv.Eventually(t, wait, func() error {
		_, err := os.Stat(filepath.Join(secretDir, m2mv1alpha1.SecretKeyCA))
		return err
	})

	kubelet, node := testenv.Kubelet(t, env, ns)
	bundle := issuedBundle(t, kubelet, node, ns, "worker-1")
	other := issuedBundle(t, kubelet, node, ns, "worker-2")
	certsDir := filepath.Join(root, "pod-certificate")
	if err := volume.Project(certsDir, map[string][]byte{"credentialbundle.pem": bundle}); err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := env.Client.Get(ctx, caConfigMap, &cm); err != nil {
		t.Fatal(err)
	}
	if err := volume.Project(clientCADir, map[string][]byte{podclientca.CertKey: []byte(cm.Data[podclientca.CertKey])}); err != nil {
		t.Fatal(err)
	}

	ts, err := m2mauth.NewTokenSource(ctx, secretDir, m2mauth.PodCertificate(filepath.Join(certsDir, "credentialbundle.pem")))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("a token over mutual TLS with the pod's certificate: %v", err)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, claims); err != nil {
		t.Fatal(err)
	}
	if cnf, _ := claims["cnf"].(map[string]any); tok.Type() != "Bearer" || cnf["x5t#S256"] != bundleThumbprint(t, bundle) {
		t.Fatalf("token type %q, cnf %v; want Bearer bound to the certificate of worker-1", tok.Type(), claims["cnf"])
	}

	v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://payments.example.com"), m2mauth.WithCAFile(filepath.Join(secretDir, m2mv1alpha1.SecretKeyCA)))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	api := httptest.NewUnstartedServer(m2mauth.Middleware(v)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	apiCA := podcert.NewCA(t)
	api.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{apiCA.Server(t)}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: publishedCAs(t)}
	api.StartTLS()
	defer api.Close()

	hc := &http.Client{Transport: m2mauth.NewTransport(ts, &http.Transport{TLSClientConfig: &tls.Config{RootCAs: apiCA.Pool()}})}
	resp, err := hc.Get(api.URL + "/invoices")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the resource server answered %d to the bound token from worker-1", resp.StatusCode)
	}

	otherCert, err := tls.X509KeyPair(other, other)
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*tls.Certificate{"worker-2's certificate": &otherCert, "no certificate": nil} {
		cfg := &tls.Config{RootCAs: apiCA.Pool()}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+"/invoices", nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Do(req)
		if err != nil {
			t.Fatalf("with %s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("worker-1's token presented with %s got %d, want 401", name, resp.StatusCode)
		}
	}
}

// follow keeps dir in step with the Secret key, as the kubelet keeps a mounted Secret, until the
// test ends; it stops before the test's temporary directories go.
func follow(t *testing.T, key types.NamespacedName, dir string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		volume.Follow(ctx, env.Client, key, dir, 200*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// issuedBundle acts as the kubelet for a new pod name of ServiceAccount worker in ns: it asks for
// the pod's certificate, waits for the manager to issue it, and returns the credential bundle
// the kubelet writes (the private key as PKCS #8, then the issued chain).
func issuedBundle(t *testing.T, kubelet client.Client, node *corev1.Node, ns, name string) []byte {
	t.Helper()
	pod := testenv.PodWithCertificate(t, env.Client, ns, name, "worker", signer, node)
	req, key, err := testenv.RequestPodCertificate(t, env, kubelet, pod, node, signer)
	if err != nil {
		t.Fatal(err)
	}
	got, typ, reason := decided(t, req)
	if typ != certificatesv1.PodCertificateRequestConditionTypeIssued {
		t.Fatalf("%s: %s %s", name, typ, reason)
	}
	if err := kubelet.Get(context.Background(), client.ObjectKeyFromObject(req), got); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), got.Status.CertificateChain...)
}

// bundleThumbprint is the x5t#S256 of a credential bundle's leaf.
func bundleThumbprint(t *testing.T, bundle []byte) string {
	t.Helper()
	_, rest := pem.Decode(bundle)
	sum := sha256.Sum256(leaf(t, string(rest)).Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
