// Package controlplane finds the kube-apiserver, etcd and kubectl binaries that
// hack/control-plane.sh builds from Go modules and caches per user.
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
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Assets returns the directory of the control plane binaries: KUBEBUILDER_ASSETS when set, else
// what hack/control-plane.sh prints (it builds them when they are missing).
func Assets() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(Root(), "hack", "control-plane.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/control-plane.sh: %w (run `make test`, or set KUBEBUILDER_ASSETS)", err)
	}
	return strings.TrimSpace(string(out)), nil
}
