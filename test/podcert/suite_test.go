// Package podcert tests the manager's signer m2m.dev/pod-client against a real API server that
// authorises and admits nodes as a cluster does, with the test acting as the kubelet.
package podcert

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/podclientca"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// wait bounds how long a test waits for the manager to converge.
const wait = 30 * time.Second

var (
	env *testenv.Env
	// managerConfig and tokenServerConfig authenticate as the manager's and the token server's
	// ServiceAccounts under the RBAC of config/rbac.
	managerConfig, tokenServerConfig *rest.Config
)

// caConfigMap and caSecret are the pod client CA's objects in the manager's namespace.
var (
	caConfigMap = types.NamespacedName{Namespace: signingkeys.DefaultSecret.Namespace, Name: podclientca.ConfigMapName}
	caSecret    = types.NamespacedName{Namespace: signingkeys.DefaultSecret.Namespace, Name: podclientca.SecretName}
)

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	os.Exit(run(m))
}

func run(m *testing.M) int {
	e, err := testenv.StartInstalled(testenv.NodeAuthorization)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, managerConfig, tokenServerConfig = e.Env, e.ManagerConfig, e.TokenServerConfig
	defer func() { _ = e.Stop() }()
	return m.Run()
}

// runManager runs a manager as cfg that sees namespaces only, until the test ends: a request in
// another namespace stays pending.
func runManager(t *testing.T, cfg *rest.Config, namespaces ...string) {
	t.Helper()
	testenv.RunManager(t, cfg, controllers.Options{IssuerURL: "https://m2m.test.example", WatchNamespaces: namespaces, SkipNameValidation: true})
}

// runSerialManager is runManager with one worker per controller: the signer then decides the
// requests it sees in the order the API server stored them, one after the other.
func runSerialManager(t *testing.T, cfg *rest.Config, namespaces ...string) {
	t.Helper()
	testenv.RunManager(t, cfg, controllers.Options{IssuerURL: "https://m2m.test.example", WatchNamespaces: namespaces, SkipNameValidation: true, MaxConcurrentReconciles: 1})
}

// podClient creates an M2MClient in ns whose pods of the ServiceAccounts sas may hold a
// certificate.
func podClient(t *testing.T, c client.Client, ns, name string, disabled bool, sas ...string) *m2mv1alpha1.M2MClient {
	t.Helper()
	obj := &m2mv1alpha1.M2MClient{}
	obj.Namespace, obj.Name = ns, name
	obj.Spec.Disabled = disabled
	obj.Spec.Authentication.PodCertificates = &m2mv1alpha1.PodCertificatePolicy{ServiceAccounts: sas}
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// decided waits until the request has an Issued, Denied or Failed condition and returns it
// with that condition.
func decided(t *testing.T, req *certificatesv1.PodCertificateRequest) (*certificatesv1.PodCertificateRequest, string, string) {
	t.Helper()
	var got certificatesv1.PodCertificateRequest
	var typ, reason string
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(req), &got); err != nil {
			return err
		}
		for _, c := range got.Status.Conditions {
			typ, reason = c.Type, c.Reason
			return nil
		}
		return errors.New("pending")
	})
	return &got, typ, reason
}

// leaf parses the first certificate of a chain.
func leaf(t *testing.T, chain string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(chain))
	if b == nil {
		t.Fatalf("no PEM certificate in %q", chain)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// publishedCAs is the pool of the ConfigMap's ca.crt.
func publishedCAs(t *testing.T) *x509.CertPool {
	t.Helper()
	var cm corev1.ConfigMap
	if err := env.Client.Get(context.Background(), caConfigMap, &cm); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[podclientca.CertKey])) {
		t.Fatalf("ConfigMap %s has no certificate under %s", caConfigMap, podclientca.CertKey)
	}
	return pool
}

// sameKey reports whether a and b are one public key.
func sameKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
