package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Kubeconfig writes a kubeconfig for user of the control plane into a file of the test's own and
// returns its path, for commands that take --kubeconfig, as kubectl m2m does.
func Kubeconfig(t testing.TB, e *Env, user envtest.User) string {
	t.Helper()
	u, err := e.AddUser(user, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
