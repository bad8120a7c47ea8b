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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// With --client or --secret, verify takes the issuer and the CA that signs the token server's
// certificate from that Secret, as the client's pods do: a token of an https install verifies
// with no flag but the audience.
func TestVerifyWithTheClientsSecretTrustsItsCAAndIssuer(t *testing.T) {
	issuer, dir, stop := inprocess.TLSTokenServer()
	defer stop()
	token := exampleToken(t, issuer, dir)
	ca, err := os.ReadFile(filepath.Join(dir, m2mv1alpha1.SecretKeyCA))
	if err != nil {
		t.Fatal(err)
	}
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "example"}}
	obj.Status.SecretName = "example-credentials"
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "example-credentials"},
		Data: map[string][]byte{m2mv1alpha1.SecretKeyIssuer: []byte(issuer), m2mv1alpha1.SecretKeyCA: ca}}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(obj, s).Build()
	for sentence, names := range map[string][2]string{
		"--client reads the M2MClient's Secret": {"example", ""},
		"--secret reads the Secret it names":    {"", "example-credentials"},
	} {
		t.Run(sentence, func(t *testing.T) {
			var src tokenServerTrust
			if err := src.readSecret(context.Background(), c, "billing", names[0], names[1]); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := verify(context.Background(), &out, token, src, nil, []string{"https://billing.example.com"}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), `"client_id": "m2m-example"`) {
				t.Fatalf("no claims printed:\n%s", out.String())
			}
		})
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
	if code := Run(context.Background(), args, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "pass --client NAME") || !strings.Contains(stderr.String(), "--ca-file") {
		t.Fatalf("without the CA: exit code %d, stderr %q; want 1 and what to pass", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := Run(context.Background(), append(args, "--ca-file", filepath.Join(dir, m2mv1alpha1.SecretKeyCA)), &stdout, &stderr); code != 0 {
		t.Fatalf("with --ca-file: exit code %d; stderr: %s", code, stderr.String())
	}
}

// verify needs to know which issuer to trust, from exactly one place.
func TestVerifyWithoutAnIssuerOrWithTwoSecretsIsAUsageError(t *testing.T) {
	for sentence, args := range map[string][]string{
		"no --client, --secret or --issuer": {"verify", "a.b.c", "--any-audience"},
		"both --client and --secret":        {"verify", "a.b.c", "--any-audience", "--client", "a", "--secret", "b"},
	} {
		t.Run(sentence, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Run(context.Background(), args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
			}
		})
	}
}
