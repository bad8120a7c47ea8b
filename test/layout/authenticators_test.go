package layout

import (
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
)

// listFile is where the token server's ordered list of authenticators lives.
const listFile = "authenticators.go"

// The token server's client authentication is an ordered list of authenticators, one file each
// (internal/tokenserver/auth_*.go), so that a new way to authenticate is one file, its test and
// one line in the list. That holds while each authenticator reads alone: no authenticator file
// uses what another one declares (they share what the rest of the package declares), the rest of
// the server reaches them only through the list, and every one of them is in it.
func TestTokenServerAuthenticatorsUseNoOtherAuthenticatorAndAreReachedThroughTheList(t *testing.T) {
	uses := packageUses(t, "./internal/tokenserver")
	inList := map[string]bool{}
	var authFiles int
	for user, declarers := range uses {
		if isAuthenticator(user) {
			authFiles++
		}
		for declarer, names := range declarers {
			switch {
			case user == declarer || !isAuthenticator(declarer):
			case user == listFile:
				inList[declarer] = true
			case isAuthenticator(user):
				t.Errorf("the authenticator %s uses %s of the authenticator %s: share it through %s or another file of the package", user, names, declarer, listFile)
			default:
				t.Errorf("%s uses %s of the authenticator %s: the server reaches authenticators only through the list in %s", user, names, declarer, listFile)
			}
		}
	}
	if authFiles < 2 {
		t.Fatalf("found %d authenticator files: the check sees nothing", authFiles)
	}
	for user := range uses {
		if isAuthenticator(user) && !inList[user] {
			t.Errorf("the authenticator %s is not in the list of %s", user, listFile)
		}
	}
}

func isAuthenticator(file string) bool { return strings.HasPrefix(file, "auth_") }

// packageUses type-checks the package pattern names (its files without tests) and returns, for
// each of its files, the files of the package that declare what it uses, and the names used.
func packageUses(t *testing.T, pattern string) map[string]map[string][]string {
	t.Helper()
	root := controlplane.Root()
	dir := goList(t, "-f", "{{.Dir}}", pattern)[0]
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range strings.Fields(goList(t, "-f", `{{join .GoFiles " "}}`, pattern)[0]) {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// The imports' export data, which the build cache holds once the package has been built.
	exports := map[string]string{}
	for _, line := range goList(t, "-export", "-deps", "-f", "{{if .Export}}{{.ImportPath}}={{.Export}}{{end}}", pattern) {
		if path, file, ok := strings.Cut(line, "="); ok {
			exports[path] = file
		}
	}
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) { return os.Open(exports[path]) })
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}}
	pkg, err := (&types.Config{Importer: imp}).Check(pattern, fset, files, info)
	if err != nil {
		t.Fatalf("type-checking %s in %s: %v", pattern, root, err)
	}
	out := map[string]map[string][]string{}
	for _, f := range files {
		out[filepath.Base(fset.Position(f.Pos()).Filename)] = map[string][]string{}
	}
	for id, obj := range info.Uses {
		if obj.Pkg() != pkg || !obj.Pos().IsValid() {
			continue
		}
		user := filepath.Base(fset.Position(id.Pos()).Filename)
		declarer := filepath.Base(fset.Position(obj.Pos()).Filename)
		if names := out[user][declarer]; !slices.Contains(names, id.Name) {
			out[user][declarer] = append(names, id.Name)
			sort.Strings(out[user][declarer])
		}
	}
	return out
}
