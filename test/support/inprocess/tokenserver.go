// Package inprocess runs the real token server inside a test process, with one client, for
// tests and runnable examples that need a token server but no API server.
package inprocess

import (
	"encoding/pem"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
)

type oneClient struct{ c *tokenserver.CachedClient }

func (o oneClient) Candidates(id string) []*tokenserver.CachedClient {
	if id == o.c.Status.ClientID {
		return []*tokenserver.CachedClient{o.c}
	}
	return nil
}

// TokenServer runs the real token server in process with one client, m2m-example (scope
// read:invoices, audience https://billing.example.com), and writes that client's credentials
// (client_id, client_secret, token_url, issuer) where a pod would mount its Secret. It returns
// the issuer, the directory, and a stop function. It panics on failure: it is for tests.
func TokenServer() (issuerURL, secretDir string, stop func()) {
	return tokenServer("", false)
}

// TLSTokenServer is TokenServer over HTTPS, with a certificate of its own CA, which the
// directory holds as ca.crt, as a Secret does where the manager issues the certificate.
func TLSTokenServer() (issuerURL, secretDir string, stop func()) {
	return tokenServer("", true)
}

// KeyPairTokenServer is TokenServer for a client with a generated key pair of alg: the
// directory holds private_key instead of client_secret.
func KeyPairTokenServer(alg m2mv1alpha1.KeyAlgorithm) (issuerURL, secretDir string, stop func()) {
	return tokenServer(alg, false)
}

func tokenServer(alg m2mv1alpha1.KeyAlgorithm, withTLS bool) (issuerURL, secretDir string, stop func()) {
	var h http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	files := map[string]string{}
	if withTLS {
		srv.StartTLS()
		files[m2mv1alpha1.SecretKeyCA] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	} else {
		srv.Start()
	}
	now := time.Now()
	key, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, now)
	must(err)
	status, err := statusmac.Apply(nil, statusmac.KeyPlan{AddActive: true, Enforce: true}, now)
	must(err)
	keys, err := tokenserver.NewStaticKeys(&signingkeys.Set{Keys: []*signingkeys.Key{key}}, status, now)
	must(err)
	client := &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "example", UID: "example-uid"},
		Spec: m2mv1alpha1.M2MClientSpec{
			Scopes:    []m2mv1alpha1.Scope{"read:invoices"},
			Audiences: []m2mv1alpha1.Audience{"https://billing.example.com"},
		},
		Status: m2mv1alpha1.M2MClientStatus{ClientID: "m2m-example"},
	}
	if alg != "" {
		client.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{Algorithm: alg}
	}
	kind := credentials.KindOf(client)
	secret, err := kind.Issue()
	must(err)
	entry, err := kind.Entry(secret, now)
	must(err)
	client.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{entry}
	must(status.Seal(client))
	s, err := tokenserver.New(tokenserver.Config{IssuerURL: srv.URL, Clients: oneClient{tokenserver.NewCachedClient(client)}, Keys: keys})
	must(err)
	h = s.Handler()
	dir, err := os.MkdirTemp("", "m2m-example-secret")
	must(err)
	maps.Copy(files, map[string]string{"client_id": "m2m-example", kind.DataKey(): secret, "token_url": issuer.TokenURL(srv.URL), "issuer": srv.URL})
	for name, value := range files {
		must(os.WriteFile(filepath.Join(dir, name), []byte(value), 0o600))
	}
	return srv.URL, dir, func() { srv.Close(); _ = os.RemoveAll(dir) }
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
