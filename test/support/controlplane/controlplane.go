// Package controlplane finds the kube-apiserver, etcd and kubectl binaries that
// hack/control-plane.sh builds from Go modules, and the helm binary that hack/helm.sh builds; both
// are cached per user.
package controlplane

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Assets returns the directory of the control plane binaries: KUBEBUILDER_ASSETS when set, else
// what hack/control-plane.sh prints (it builds them when they are missing).
func Assets() (string, error) { return cached("KUBEBUILDER_ASSETS", "control-plane.sh") }

// Helm returns the path of the helm binary: M2M_HELM when set, else what hack/helm.sh prints (it
// builds Helm when it is missing).
func Helm() (string, error) { return cached("M2M_HELM", "helm.sh") }

// OptionalCRDs returns the directory of the optional integrations' CRDs (PrometheusRule,
// ServiceMonitor, cert-manager's Certificate and issuers, the Gateway API's GatewayClass, Gateway,
// HTTPRoute and BackendTLSPolicy, External Secrets Operator's ExternalSecret, Flux's
// Kustomization): M2M_OPTIONAL_CRDS when set, else what hack/optional-crds.sh
// prints (it builds them when they are missing).
func OptionalCRDs() (string, error) { return cached("M2M_OPTIONAL_CRDS", "optional-crds.sh") }

// cached returns the environment variable when set, else the path that a hack/ script, which
// builds and caches a tool, prints.
func cached(envVar, script string) (string, error) {
	if path := os.Getenv(envVar); path != "" {
		return path, nil
	}
	cmd := exec.Command(filepath.Join(Root(), "hack", script))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/%s: %w (run `make test`, or set %s)", script, err, envVar)
	}
	return strings.TrimSpace(string(out)), nil
}
