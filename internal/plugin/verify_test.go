package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/inprocess"
)

// exampleToken gets a token of the in-process token server's client from its directory, trusting
// the directory's ca.crt when it has one.
func exampleToken(t *testing.T, issuer, dir string) string {
	t.Helper()
	read := func(name string) []byte { b, _ := os.ReadFile(filepath.Join(dir, name)); return b }
	ctx := context.Background()
	if ca := read("ca.crt"); len(ca) > 0 {
		hc, err := trustingClient(caBundle{"ca.crt", ca})
		if err != nil {
			t.Fatal(err)
		}
		ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	}
	tok, err := (&clientcredentials.Config{ClientID: string(read("client_id")), ClientSecret: string(read("client_secret")), TokenURL: issuer + "/oauth2/token"}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// verify prints the claims by the names the token gives them, as other JWT tools do, not by the
// library's Go field names.
func TestVerifyPrintsTheClaimsUnderTheirNamesInTheToken(t *testing.T) {
	issuer, dir, stop := inprocess.TokenServer()
	defer stop()
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), []string{"verify", exampleToken(t, issuer, dir), "--issuer", issuer, "--audience", "https://billing.example.com"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d; stderr: %s", code, stderr.String())
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &claims); err != nil {
		t.Fatalf("the output is not a JSON object: %v\n%s", err, stdout.String())
	}
	for name, want := range map[string]string{"iss": `"` + issuer + `"`, "sub": `"m2m-example"`, "client_id": `"m2m-example"`, "aud": `"https://billing.example.com"`, "scope": `"read:invoices"`} {
		if got := string(claims[name]); got != want {
			t.Errorf("%s is %s, want %s", name, got, want)
		}
	}
	for _, name := range []string{"exp", "iat", "nbf"} {
		if _, err := json.Number(claims[name]).Int64(); err != nil {
			t.Errorf("%s is %s, want the token's NumericDate", name, claims[name])
		}
	}
	if _, ok := claims["jti"]; !ok {
		t.Error("jti is missing")
	}
	for _, goName := range []string{"ClientID", "Subject", "Scopes", "Audience", "ExpiresAt", "Custom"} {
		if _, ok := claims[goName]; ok {
			t.Errorf("the output names a Go field, %s:\n%s", goName, stdout.String())
		}
	}
}

// Without --issuer, verify takes the issuer and the CA that signs the token server's certificate
// from the install's ConfigMap, never from a client's Secret: a token of the install verifies
// with no flag but the audience, and a token of the issuer a tenant wrote into its client's
// Secret (a token server of theirs, with its CA) is refused.
func TestVerifyTrustsTheInstallsIssuerAndCANeverAClientsSecret(t *testing.T) {
	issuer, dir, stop := inprocess.TLSTokenServer()
	defer stop()
	theirs, theirDir, stopTheirs := inprocess.TLSTokenServer()
	defer stopTheirs()
	ca, err := os.ReadFile(filepath.Join(dir, m2mv1alpha1.SecretKeyCA))
	if err != nil {
		t.Fatal(err)
	}
	theirCA, err := os.ReadFile(filepath.Join(theirDir, m2mv1alpha1.SecretKeyCA))
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).
		WithObjects(append(tenantsSecret(theirs+"/oauth2/token", string(theirCA)), installConfigMap(issuer+"/oauth2/token", string(ca)))...).Build()
	f := &commandFlags{systemNamespace: "m2m-system"}
	src, err := f.trust(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := verify(context.Background(), &out, exampleToken(t, issuer, dir), src, nil, []string{"https://billing.example.com"}); err != nil {
		t.Fatalf("a token of the install: %v", err)
	}
	if !strings.Contains(out.String(), `"client_id": "m2m-example"`) {
		t.Fatalf("no claims printed:\n%s", out.String())
	}
	if err := verify(context.Background(), &bytes.Buffer{}, exampleToken(t, theirs, theirDir), src, nil, []string{"https://billing.example.com"}); err == nil {
		t.Fatal("a token of the issuer in the tenant's Secret verified")
	}
}

// Without the install's ConfigMap, verify says which one it needs and what to pass instead.
func TestVerifyWithoutTheInstallsConfigMapSaysWhatToPass(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(tenantsSecret("https://attacker.example/oauth2/token", "")...).Build()
	_, err := (&commandFlags{systemNamespace: "auth-system"}).trust(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "ConfigMap auth-system/m2m-token-server") || !strings.Contains(err.Error(), "--system-namespace") || !strings.Contains(err.Error(), "--issuer") {
		t.Fatalf("error %v", err)
	}
}

// A token server whose certificate no trusted CA signs: verify says how to trust it, and
// --ca-file does.
func TestVerifySaysHowToTrustTheTokenServersCAAndCAFileDoes(t *testing.T) {
	issuer, dir, stop := inprocess.TLSTokenServer()
	defer stop()
	token := exampleToken(t, issuer, dir)
	args := []string{"verify", token, "--issuer", issuer, "--audience", "https://billing.example.com"}

	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), args, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "ConfigMap m2m-system/m2m-token-server") || !strings.Contains(stderr.String(), "--ca-file") {
		t.Fatalf("without the CA: exit code %d, stderr %q; want 1 and what to pass", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := Run(context.Background(), append(args, "--ca-file", filepath.Join(dir, m2mv1alpha1.SecretKeyCA)), &stdout, &stderr); code != 0 {
		t.Fatalf("with --ca-file: exit code %d; stderr: %s", code, stderr.String())
	}
}

// --client and --secret, which trusted a credentials Secret, are refused as a usage mistake that
// says why and what to do instead, before anything is read or fetched.
func TestVerifyRefusesClientAndSecretAndSaysWhy(t *testing.T) {
	for sentence, args := range map[string][]string{
		"--client": {"verify", "a.b.c", "--any-audience", "--client", "a"},
		"--secret": {"verify", "a.b.c", "--any-audience", "--secret", "b", "--issuer", "https://127.0.0.1:1"},
	} {
		t.Run(sentence, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Run(context.Background(), args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "which whoever may edit Secrets") || !strings.Contains(stderr.String(), "ConfigMap m2m-system/m2m-token-server") {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
			}
		})
	}
}
