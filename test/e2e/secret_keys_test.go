package e2e

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/oauth2/clientcredentials"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// An application that reads CLIENT_ID and friends from an env file the Secret carries gets
// tokens, and kubectl m2m and the library keep finding the credentials of the same Secret.
func TestAnAppReadingRenamedKeysAndAnEnvFileGetsTokensAndTheToolsStillFindTheCredentials(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	obj := billingClient(ns, "renamed")
	obj.Spec.Secret.Keys = map[string]m2mv1alpha1.SecretDataKey{"client_secret": "CLIENT_SECRET"}
	obj.Spec.Secret.Templates = map[string]m2mv1alpha1.SecretDataTemplate{
		"app.env": "CLIENT_ID=${client_id}\nCLIENT_SECRET=${client_secret}\nOAUTH_TOKEN_URL=${token_url}\n"}
	s := readyClient(t, obj)

	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(s.Data["app.env"])), "\n") {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	app := clientcredentials.Config{ClientID: env["CLIENT_ID"], ClientSecret: env["CLIENT_SECRET"], TokenURL: env["OAUTH_TOKEN_URL"]}
	if _, err := app.Token(ctx); err != nil {
		t.Fatalf("the app reading app.env gets no token: %v", err)
	}
	if string(s.Data["CLIENT_SECRET"]) != env["CLIENT_SECRET"] {
		t.Fatal("the copy of client_secret differs from app.env's")
	}

	code, out, errOut := kubectlM2M("token", "renamed", "-n", ns, "--kubeconfig", kubeconfigFile(t))
	if code != 0 || strings.Count(strings.TrimSpace(out), ".") != 2 {
		t.Fatalf("kubectl m2m token: %d %q %s", code, out, errOut)
	}
	dir := t.TempDir()
	writeVolume(t, dir, s)
	ts, err := m2mauth.NewTokenSource(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(); err != nil {
		t.Fatalf("the library finds no credentials in the volume: %v", err)
	}
}
