package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
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

// TokenKubeconfig writes a kubeconfig for the control plane that authenticates with the bearer
// token (a ServiceAccount's, say) into a file of the test's own and returns its path: `kubectl
// m2m why` needs a bearer token, which the client certificates of Kubeconfig's users are not.
func TokenKubeconfig(t testing.TB, e *Env, token string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: e.Config.CAData}
	kc.AuthInfos["token"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["token"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "token"}
	kc.CurrentContext = "token"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
