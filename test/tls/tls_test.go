package tls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/plugin"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func annotate(t *testing.T, key types.NamespacedName, value string) {
	t.Helper()
	annotateWith(t, key, keyring.RotateAnnotation, value)
}

func annotateWith(t *testing.T, key types.NamespacedName, annotation, value string) {
	t.Helper()
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, annotation, value))
	s := secret(t, key)
	if err := env.Client.Patch(context.Background(), s, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

// A pod that mounts its credentials Secret, and nothing else, gets tokens over HTTPS: the
// Secret's https token_url and ca.crt are all it needs. It keeps getting them, every request on a
// new TLS connection, while the serving certificate is replaced and then the CA rotates, with no
// failed request.
func TestAPodWithOnlyItsSecretGetsTokensOverHTTPSThroughCertificateAndCARotations(t *testing.T) {
	ns := testenv.Namespace(t, env.Client)
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "billing"},
		Spec: m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:invoices"}}}
	testenv.CreateReady(t, env.Client, obj, wait)
	credentials := types.NamespacedName{Namespace: ns, Name: "billing-credentials"}
	s := secret(t, credentials)
	if !strings.HasPrefix(string(s.Data[m2mv1alpha1.SecretKeyTokenURL]), "https://") || !bytes.Equal(s.Data[m2mv1alpha1.SecretKeyCA], secret(t, caSecret).Data[servingcert.Bundle]) {
		t.Fatalf("the credentials Secret has token_url %q and ca.crt %d bytes; want https and the CA bundle", s.Data[m2mv1alpha1.SecretKeyTokenURL], len(s.Data[m2mv1alpha1.SecretKeyCA]))
	}

	dir := mountCredentials(t, credentials, time.Second)
	load := startTokenLoad(t, dir)

	// The serving certificate is replaced (as on its schedule, after two thirds of its life).
	before := served(t)
	annotate(t, certSecret, "cert-1")
	testenv.Eventually(t, wait, func() error {
		if served(t).SerialNumber.Cmp(before.SerialNumber) == 0 {
			return errors.New("the token server still serves the previous certificate")
		}
		return nil
	})

	// The CA rotates: its successor joins the bundle, signs after the overlap, and the old CA
	// leaves the bundle after another.
	oldCA, err := servingcert.ParseCert(secret(t, caSecret).Data[servingcert.CACert])
	if err != nil {
		t.Fatal(err)
	}
	annotate(t, caSecret, "ca-1")
	testenv.Eventually(t, 2*overlap+wait, func() error {
		ca := secret(t, caSecret)
		if len(ca.Data[servingcert.PreviousCert]) > 0 || len(ca.Data[servingcert.NextCert]) > 0 || bytes.Count(ca.Data[servingcert.Bundle], []byte("BEGIN CERTIFICATE")) != 1 {
			return errors.New("the CA rotation is not over")
		}
		if served(t).CheckSignatureFrom(oldCA) == nil {
			return errors.New("the token server still serves a certificate of the old CA")
		}
		if cur, err := os.ReadFile(filepath.Join(dir, m2mv1alpha1.SecretKeyCA)); err != nil || !bytes.Equal(cur, ca.Data[servingcert.Bundle]) {
			return errors.New("the mounted ca.crt is not the new bundle yet")
		}
		return nil
	})
	load.waitFor(t, 50) // requests after the old CA left every bundle
	load.Stop()
	if load.failed.Load() != 0 {
		t.Fatalf("%d of %d token requests failed across a certificate and a CA rotation; first: %v", load.failed.Load(), load.ok.Load()+load.failed.Load(), load.firstErr.Load())
	}
	t.Logf("%d token requests over new TLS connections, none failed", load.ok.Load())
}

// kubectl m2m token reaches the token server over HTTPS with the CA bundle of the client's
// Secret, as pods do, and nothing else.
func TestKubectlM2MGetsATokenOverHTTPSWithTheSecretsCA(t *testing.T) {
	ctx := context.Background()
	ns := testenv.Namespace(t, env.Client)
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cli"},
		Spec: m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:invoices"}}}
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	path := testenv.Kubeconfig(t, env, envtest.User{Name: "plugin-user", Groups: []string{"system:masters"}})
	testenv.Eventually(t, wait, func() error {
		var out, errOut bytes.Buffer
		if code := plugin.Run(ctx, []string{"token", "cli", "-n", ns, "--kubeconfig", path}, &out, &errOut); code != 0 {
			return fmt.Errorf("exit %d: %s", code, errOut.String())
		}
		if strings.Count(strings.TrimSpace(out.String()), ".") != 2 {
			return fmt.Errorf("not a JWT: %q", out.String())
		}
		return nil
	})
}
