// Package layout checks the import structure that keeps each thing in one home: light clients
// and the public library link neither the manager nor Kubernetes modules they do not need, the
// pure decision tests need no control plane, and the token server's authenticators stay apart.
package layout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
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

// Outside tests and hack/, only cmd/manager imports the controllers (the manager's assembly,
// controllers.NewManager, lives beside them), and nothing under pkg/ imports internal/.
func TestOnlyCmdManagerImportsTheControllersAndPkgImportsNothingInternal(t *testing.T) {
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...") {
		pkg, imports, _ := strings.Cut(line, " ")
		rel := strings.TrimPrefix(pkg, module+"/")
		if strings.HasPrefix(rel, "hack/") || strings.HasPrefix(rel, "test/") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if imp == module+"/controllers" && rel != "cmd/manager" {
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

// Only the step list knows the order of an M2MClient's reconcile steps: no step calls another,
// so that adding, removing or moving a step is one line of clientSteps.
func TestNoReconcileStepCallsAnother(t *testing.T) {
	fset := token.NewFileSet()
	dir := filepath.Join(controlplane.Root(), "controllers")
	pkgs, err := parser.ParseDir(fset, dir, func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	files := pkgs["controllers"].Files
	steps := map[string]bool{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if vs, ok := n.(*ast.ValueSpec); ok && len(vs.Names) == 1 && vs.Names[0].Name == "clientSteps" {
				ast.Inspect(vs, func(n ast.Node) bool {
					// A method expression (*clientReconcile).step names a step.
					if sel, ok := n.(*ast.SelectorExpr); ok {
						if _, ok := sel.X.(*ast.ParenExpr); ok {
							steps[sel.Sel.Name] = true
						}
					}
					return true
				})
			}
			return true
		})
	}
	if len(steps) < 2 {
		t.Fatalf("found the steps %v in clientSteps; the test no longer sees the list", steps)
	}
	for name, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && steps[sel.Sel.Name] {
				t.Errorf("%s: %s calls the step %s; only clientSteps orders the steps", filepath.Base(name), fset.Position(call.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}
