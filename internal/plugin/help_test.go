package plugin

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// Every command says in one line what it does: the usage lists it beside the command's name, and
// the command's --help starts with it. A command added to the table without one fails here.
func TestEveryCommandHasAOneLineDescriptionInTheUsageAndAtTheTopOfItsHelp(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			d := c.description
			if strings.TrimSpace(d) == "" || strings.Contains(d, "\n") {
				t.Fatalf("the command table gives %s no one-line description: %q", c.name, d)
			}
			listed := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(c.name) + ` +` + regexp.QuoteMeta(d) + `$`)
			if !listed.MatchString(usage) {
				t.Errorf("the usage does not list %s with its description:\n%s", c.name, usage)
			}
			for _, args := range [][]string{{c.name, "--help"}, {"help", c.name}} {
				var stdout, stderr bytes.Buffer
				if code := Run(context.Background(), args, &stdout, &stderr); code != 0 {
					t.Fatalf("%q: exit code %d; stderr:\n%s", args, code, stderr.String())
				}
				if first, _, _ := strings.Cut(stdout.String(), "\n"); first != d {
					t.Errorf("%q starts with %q, want the description %q", args, first, d)
				}
			}
		})
	}
}
