package plugin

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/inprocess"
)

// Asking for help is not a mistake: usage goes to stdout and the exit code is 0, as with kubectl.
func TestHelpPrintsUsageOnStdoutAndExitsZero(t *testing.T) {
	for sentence, tc := range map[string]struct {
		args []string
		want string
	}{
		"--help alone prints every command":      {[]string{"--help"}, "kubectl m2m rotate NAME"},
		"-h alone prints every command":          {[]string{"-h"}, "kubectl m2m describe NAME"},
		"help alone prints every command":        {[]string{"help"}, "kubectl m2m verify TOKEN"},
		"token --help prints the token flags":    {[]string{"token", "--help"}, "--token-url"},
		"verify -h prints the verify flags":      {[]string{"verify", "-h"}, "--issuer"},
		"--help after a name still prints usage": {[]string{"rotate", "reports", "--help"}, "--timeout"},
		"help token prints the token flags":      {[]string{"help", "token"}, "--token-url"},
		"rotate --help prints --revoke-previous": {[]string{"rotate", "--help"}, "--revoke-previous"},
	} {
		t.Run(sentence, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Run(context.Background(), tc.args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr.String())
			}
			if stderr.Len() != 0 {
				t.Fatalf("stderr is not empty:\n%s", stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.want) || !strings.Contains(stdout.String(), "Usage:") {
				t.Fatalf("stdout lacks %q:\n%s", tc.want, stdout.String())
			}
		})
	}
}

// A command's help lists the flags it reads and no other command's.
func TestACommandsHelpListsOnlyItsOwnFlags(t *testing.T) {
	for cmd, absent := range map[string][]string{
		"token":    {"--timeout", "--issuer"},
		"rotate":   {"--scope", "--token-url", "--issuer"},
		"describe": {"--scope", "--timeout", "--issuer"},
		"verify":   {"--timeout", "--token-url", "--service-account"},
	} {
		var stdout, stderr bytes.Buffer
		if code := Run(context.Background(), []string{cmd, "--help"}, &stdout, &stderr); code != 0 {
			t.Fatalf("%s --help: exit code %d", cmd, code)
		}
		for _, flag := range absent {
			if strings.Contains(stdout.String(), flag) {
				t.Errorf("%s --help lists %s:\n%s", cmd, flag, stdout.String())
			}
		}
	}
}

// Mistakes still exit 2 with the usage on stderr.
func TestAnUnknownCommandOrMissingArgumentIsAUsageError(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"token"}, {"describe", "a", "b"}} {
		var stdout, stderr bytes.Buffer
		if code := Run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit code %d, want 2", args, code)
		}
		if stdout.Len() != 0 || !strings.Contains(stderr.String(), "Usage:") {
			t.Errorf("%q: stdout %q, stderr %q", args, stdout.String(), stderr.String())
		}
	}
}

// kubectl m2m verify follows the library's rule: an audience is required (or, explicitly, any),
// and a repeated --audience means any of them.
func TestVerifyRequiresAnAudienceAndARepeatedOneMeansAnyOf(t *testing.T) {
	issuer, dir, stop := inprocess.TokenServer()
	defer stop()
	id, _ := os.ReadFile(filepath.Join(dir, "client_id"))
	secret, _ := os.ReadFile(filepath.Join(dir, "client_secret"))
	tok, err := (&clientcredentials.Config{ClientID: string(id), ClientSecret: string(secret), TokenURL: issuer + "/oauth2/token"}).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for sentence, tc := range map[string]struct {
		args []string
		code int
	}{
		"no audience is a usage error":                    {nil, 2},
		"--audience with --any-audience is a usage error": {[]string{"--audience", "https://billing.example.com", "--any-audience"}, 2},
		"the token's audience passes":                     {[]string{"--audience", "https://billing.example.com"}, 0},
		"another audience fails":                          {[]string{"--audience", "https://payments.example.com"}, 1},
		"a repeated --audience passes when one matches":   {[]string{"--audience", "https://payments.example.com", "--audience", "https://billing.example.com"}, 0},
		"--any-audience passes":                           {[]string{"--any-audience"}, 0},
	} {
		t.Run(sentence, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"verify", tok.AccessToken, "--issuer", issuer}, tc.args...)
			if code := Run(context.Background(), args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
		})
	}
}

// A client that authenticates with its pod's ServiceAccount has no secret in its Secret: token
// without --service-account says to use it, rather than send an empty secret.
func TestTokenForAClientWithoutASecretSaysToUseServiceAccount(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "sa-client"}}
	obj.Status.SecretName = "sa-client-credentials"
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "sa-client-credentials"},
		Data: map[string][]byte{m2mv1alpha1.SecretKeyClientID: []byte("m2m-sa"), m2mv1alpha1.SecretKeyTokenURL: []byte("https://127.0.0.1:1/oauth2/token")}}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(obj, s).Build()
	err := token(context.Background(), c, io.Discard, types.NamespacedName{Namespace: "team-a", Name: "sa-client"}, &commandFlags{systemNamespace: "m2m-system"})
	if err == nil || !strings.Contains(err.Error(), "--service-account") {
		t.Fatalf("error %v, want one that says to use --service-account", err)
	}
}
