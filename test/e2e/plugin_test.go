package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/plugin"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func kubeconfigFile(t *testing.T) string {
	t.Helper()
	return testenv.Kubeconfig(t, env, envtest.User{Name: "plugin-user", Groups: []string{"system:masters"}})
}

func kubectlM2M(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := plugin.Run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestKubectlM2MGetsATokenDescribesRotatesAndVerifies(t *testing.T) {
	kc := kubeconfigFile(t)
	ns := namespace(t)
	obj := billingClient(ns, "cli")
	s := readyClient(t, obj)
	common := []string{"-n", ns, "--kubeconfig", kc}

	code, out, errOut := kubectlM2M(append([]string{"describe", "cli"}, common...)...)
	if code != 0 || !strings.Contains(out, obj.Status.ClientID) || !strings.Contains(out, "..."+string(s.Data[m2mv1alpha1.SecretKeyClientSecret])[39:]) || !strings.Contains(out, "CredentialsReady") {
		t.Fatalf("describe: %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, string(s.Data[m2mv1alpha1.SecretKeyClientSecret])) {
		t.Fatal("describe printed the secret")
	}

	code, out, errOut = kubectlM2M(append([]string{"token", "cli", "--scope", "read:invoices"}, common...)...)
	token := strings.TrimSpace(out)
	if code != 0 || strings.Count(token, ".") != 2 {
		t.Fatalf("token: %d %q %s", code, out, errOut)
	}
	// The token verifies with the issuer the manager publishes for the install: no --issuer.
	code, out, errOut = kubectlM2M(append([]string{"verify", token, "--audience", "https://payments.example.com", "--scope", "read:invoices"}, common...)...)
	var claims map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &claims) != nil || claims["client_id"] != obj.Status.ClientID || claims["iss"] != issuer {
		t.Fatalf("verify: %d %s %s", code, out, errOut)
	}
	code, out, _ = kubectlM2M(append([]string{"token", "cli", "-o", "json"}, common...)...)
	if code != 0 || !strings.Contains(out, `"access_token"`) || !strings.Contains(out, `"token_type": "Bearer"`) {
		t.Fatalf("token -o json: %d %s", code, out)
	}

	code, out, errOut = kubectlM2M(append([]string{"rotate", "cli"}, common...)...)
	if code != 0 || !strings.Contains(out, "rotated") {
		t.Fatalf("rotate: %d %s %s", code, out, errOut)
	}
	fresh := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(s), fresh); err != nil {
		t.Fatal(err)
	}
	if string(fresh.Data[m2mv1alpha1.SecretKeyClientSecret]) == string(s.Data[m2mv1alpha1.SecretKeyClientSecret]) {
		t.Fatal("rotate returned before the Secret carried a new secret")
	}
}

func TestKubectlM2MReportsErrorsOnStderrWithKubectlExitCodes(t *testing.T) {
	kc := kubeconfigFile(t)
	if code, out, errOut := kubectlM2M("token", "nobody", "-n", "default", "--kubeconfig", kc); code != 1 || out != "" || !strings.HasPrefix(errOut, "error: ") {
		t.Fatalf("a missing client: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := kubectlM2M("frobnicate", "x", "--kubeconfig", kc); code != 2 || !strings.Contains(errOut, "Usage") {
		t.Fatalf("an unknown command: %d %q", code, errOut)
	}
	if code, _, _ := kubectlM2M(); code != 2 {
		t.Fatal("no command is not a usage error")
	}
	if code, _, errOut := kubectlM2M("verify", "a.b.c", "--issuer", issuer, "--any-audience"); code != 1 || !strings.Contains(errOut, "malformed") {
		t.Fatalf("verify of garbage: %d %q", code, errOut)
	}
}
