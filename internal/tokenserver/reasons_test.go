package tokenserver

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the table of refusal reasons in docs/token-server.md from the code")

const (
	reasonsDoc   = "../../docs/token-server.md"
	reasonsBegin = "<!-- The table is generated from internal/tokenserver/reasons.go: go test ./internal/tokenserver -run TestTheDocsListTheRefusalReasonsOfTheCode -update-docs -->\n"
	reasonsEnd   = "<!-- end of the generated table -->\n"
)

// reasonsTable is the Markdown table of every reason.
func reasonsTable() string {
	var b strings.Builder
	b.WriteString("| reason | error (status) | what it means, and what to do |\n| --- | --- | --- |\n")
	for _, r := range reasons {
		fmt.Fprintf(&b, "| `%s` | `%s` (%d) | %s |\n", r.name, r.code, r.status, strings.ReplaceAll(r.help, "|", `\|`))
	}
	return b.String()
}

// docs/token-server.md lists the reasons of m2m_token_failures_total (and of the debug log and
// `kubectl m2m why`) exactly as the code has them.
func TestTheDocsListTheRefusalReasonsOfTheCode(t *testing.T) {
	raw, err := os.ReadFile(reasonsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	before, rest, ok := strings.Cut(doc, reasonsBegin)
	table, after, ok2 := strings.Cut(rest, reasonsEnd)
	if !ok || !ok2 {
		t.Fatalf("docs/token-server.md lacks the lines that enclose the table of reasons:\n%s%s", reasonsBegin, reasonsEnd)
	}
	want := reasonsTable()
	if table == want {
		return
	}
	if *updateDocs {
		if err := os.WriteFile(reasonsDoc, []byte(before+reasonsBegin+want+reasonsEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("docs/token-server.md's table of reasons differs from internal/tokenserver/reasons.go; run\n  go test ./internal/tokenserver -run %s -update-docs", t.Name())
}

// Each reason has its own name, one OAuth error with the status of that error, and help; an
// invalid_client reason is always 401, as RFC 6749 §5.2 has it.
func TestEveryReasonHasOneNameAnErrorWithItsStatusAndHelp(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range reasons {
		switch {
		case seen[r.name]:
			t.Errorf("two reasons are named %s", r.name)
		case r.help == "" || !strings.HasSuffix(r.help, "."):
			t.Errorf("%s: help %q is not a sentence", r.name, r.help)
		case r.code == ErrInvalidClient && r.status != http.StatusUnauthorized,
			r.code == ErrTemporarilyUnavailable && r.status != http.StatusServiceUnavailable,
			r.code != ErrInvalidClient && r.code != ErrTemporarilyUnavailable && r.status/100 != 4:
			t.Errorf("%s: %s with status %d", r.name, r.code, r.status)
		}
		seen[r.name] = true
	}
}

// Every reason declared is given somewhere: the docs list no reason the server never gives.
func TestEveryDeclaredReasonIsGivenSomewhere(t *testing.T) {
	fset := token.NewFileSet()
	declared := map[string]bool{}
	used := map[string]bool{}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				if len(n.Values) != 1 {
					return true
				}
				if call, ok := n.Values[0].(*ast.CallExpr); ok {
					if fn, ok := call.Fun.(*ast.Ident); ok && fn.Name == "newReason" {
						declared[n.Names[0].Name] = true
					}
				}
			case *ast.Ident:
				if strings.HasPrefix(n.Name, "reason") && n.Obj == nil {
					used[n.Name] = true
				}
			}
			return true
		})
	}
	if len(declared) != len(reasons) {
		t.Fatalf("found %d reason declarations, the list has %d; the test no longer sees them", len(declared), len(reasons))
	}
	for name := range declared {
		if !used[name] {
			t.Errorf("%s is declared and never given", name)
		}
	}
}
