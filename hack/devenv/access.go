package devenv

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// tokenFile is the API server's static token file in the state directory.
const tokenFile = "tokens.csv"

// writeTokenFile gives the dev user m2m-dev a bearer token of its own (a static token of the API
// server), rather than envtest's client certificate: `kubectl m2m why` sends a bearer token to
// the token server, which asks the API server who it is. It returns the token.
func writeTokenFile(stateDir string, env *envtest.Environment) (string, error) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails (Go 1.24+)
	token := base64.RawURLEncoding.EncodeToString(raw)
	path := filepath.Join(stateDir, tokenFile)
	if err := os.WriteFile(path, []byte(token+`,m2m-dev,m2m-dev,"system:masters"`+"\n"), 0o600); err != nil {
		return "", err
	}
	env.ControlPlane.GetAPIServer().Configure().Set("token-auth-file", path)
	return token, nil
}

// writeKubeconfig writes a kubeconfig for the API server of cfg that authenticates with token.
func writeKubeconfig(path string, cfg *rest.Config, token string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["m2m-dev"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["m2m-dev"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["m2m-dev"] = &clientcmdapi.Context{Cluster: "m2m-dev", AuthInfo: "m2m-dev", Namespace: "default"}
	kc.CurrentContext = "m2m-dev"
	return clientcmd.WriteToFile(*kc, path)
}

// buildPlugin builds kubectl-m2m into the state directory, so that `kubectl m2m` works with it
// on the PATH, as after an install.
func (s *System) buildPlugin() error {
	s.PluginDir = filepath.Join(s.StateDir, "bin")
	build := exec.Command("go", "build", "-o", filepath.Join(s.PluginDir, "kubectl-m2m"), "./cmd/kubectl-m2m")
	build.Dir = s.Root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building kubectl-m2m: %w\n%s", err, out)
	}
	return nil
}

// tokenServerMetrics listens where the token server serves /metrics; nil when it serves none.
func (s *System) tokenServerMetrics() (net.Listener, error) {
	if s.TokenServerMetrics == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", s.TokenServerMetrics)
	if err != nil {
		return nil, fmt.Errorf("the token server cannot serve metrics on %s: %w", s.TokenServerMetrics, err)
	}
	s.TokenServerMetricsURL = "http://" + ln.Addr().String() + "/metrics"
	return ln, nil
}

// managerMetrics is the manager's metrics address, with a free port for a port of 0:
// controller-runtime listens itself and does not say where.
func (s *System) managerMetrics() (string, error) {
	if s.ManagerMetrics == "" {
		return "0", nil
	}
	addr := s.ManagerMetrics
	if host, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", err
		}
		addr = ln.Addr().String()
		_ = ln.Close()
	}
	s.ManagerMetricsURL = "http://" + addr + "/metrics"
	return addr, nil
}
