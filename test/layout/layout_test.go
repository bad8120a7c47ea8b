// Package layout checks the import structure that keeps each thing in one home: light clients
// and the public library link neither the manager nor Kubernetes modules they do not need, the
// pure decision tests need no control plane, and the token server's authenticators stay apart.
package layout

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
)

const module = "github.com/m2m-dev/m2m-operator"

// goList runs `go list` in the repository and returns its output lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = controlplane.Root()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func TestKubectlM2MLinksNeitherTheControllersNorTheManager(t *testing.T) {
	for _, dep := range goList(t, "-deps", "./cmd/kubectl-m2m") {
		if dep == module+"/controllers" || dep == "sigs.k8s.io/controller-runtime/pkg/manager" {
			t.Errorf("kubectl-m2m links %s", dep)
		}
	}
}

func TestThePublicLibraryLinksNoKubernetesModuleAndNothingInternal(t *testing.T) {
	for _, dep := range goList(t, "-deps", "./pkg/m2mauth") {
		if strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, module+"/internal") || strings.HasPrefix(dep, module+"/controllers") {
			t.Errorf("pkg/m2mauth links %s", dep)
		}
	}
}

// Outside tests and hack/, only the manager's assembly imports the controllers, and nothing
// under pkg/ imports internal/.
func TestOnlyTheManagersAssemblyImportsTheControllersAndPkgImportsNothingInternal(t *testing.T) {
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...") {
		pkg, imports, _ := strings.Cut(line, " ")
		rel := strings.TrimPrefix(pkg, module+"/")
		if strings.HasPrefix(rel, "hack/") || strings.HasPrefix(rel, "test/") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if imp == module+"/controllers" && rel != "internal/operator" {
				t.Errorf("%s imports the controllers", rel)
			}
			if strings.HasPrefix(rel, "pkg/") && strings.HasPrefix(imp, module+"/internal") {
				t.Errorf("%s imports %s", rel, imp)
			}
		}
	}
}

// The controllers' tests are pure: their test binary links no control plane.
func TestTheControllersTestsNeedNoControlPlane(t *testing.T) {
	for _, dep := range goList(t, "-test", "-deps", "./controllers") {
		if dep == "sigs.k8s.io/controller-runtime/pkg/envtest" || strings.HasPrefix(dep, module+"/test/support") {
			t.Errorf("the controllers' tests link %s", dep)
		}
	}
}
