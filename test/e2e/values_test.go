package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var (
	emptyValue   = regexp.MustCompile(`^( *)([A-Za-z]+): (\[\]|\{\})$`)
	mappingValue = regexp.MustCompile(`^( *)([A-Za-z]+):$`)
	exampleLine  = regexp.MustCompile(`^( *)#   ([A-Za-z]+):(.*)$`)
)

// Every list or map value that values.yaml leaves empty shows in its comments how to set it, as
// `#   key: value` (continued on lines `#   - ...` or `#     ...`): an example the chart takes.
func TestEveryEmptyListOrMapValueHasAnExampleThatTheChartTakes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	type parent struct {
		indent int
		key    string
	}
	var path []parent
	found := 0
	for i, line := range lines {
		m := mappingValue.FindStringSubmatch(line)
		if m == nil {
			m = emptyValue.FindStringSubmatch(line)
		}
		if m == nil {
			continue
		}
		indent := len(m[1])
		for len(path) > 0 && path[len(path)-1].indent >= indent {
			path = path[:len(path)-1]
		}
		if len(m) == 3 {
			path = append(path, parent{indent, m[2]})
			continue
		}
		keys := []string{}
		for _, p := range path {
			keys = append(keys, p.key)
		}
		found++
		name := strings.Join(append(keys, m[2]), ".")
		snippet := exampleOf(lines, i, indent, m[2])
		if snippet == "" {
			t.Errorf("values.yaml shows no example for %s (a comment line %q above it)", name, strings.Repeat(" ", indent)+"#   "+m[2]+": ...")
			continue
		}
		var value map[string]any
		if err := yaml.Unmarshal([]byte(snippet), &value); err != nil || len(value) != 1 {
			t.Errorf("the example of %s is not YAML that sets it: %v\n%s", name, err, snippet)
			continue
		}
		if v := value[m[2]]; v == nil || len(strings.Trim(yamlOf(t, v), "[]{}")) == 0 {
			t.Errorf("the example of %s is empty:\n%s", name, snippet)
			continue
		}
		for j := len(keys) - 1; j >= 0; j-- {
			value = map[string]any{keys[j]: value}
		}
		out, err := yaml.Marshal(value)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := helmCommand(t, "template", "m2m", chartDir(), "-f", writeValues(t, string(out))); err != nil {
			t.Errorf("the chart refuses the example of %s:\n%s%v", name, out, err)
		}
	}
	if found == 0 {
		t.Fatal("no empty list or map value found in values.yaml; the test no longer reads it right")
	}
}

// exampleOf is the YAML of the example for key, whose line is lines[at] at indent: a line
// `#   key: ...` above it, among the comments and sibling keys of its mapping, with its
// continuation lines; "" when there is none.
func exampleOf(lines []string, at, indent int, key string) string {
	prefix := strings.Repeat(" ", indent) + "#   "
	for j := at - 1; j >= 0; j-- {
		line := lines[j]
		if strings.TrimSpace(line) == "" || len(line)-len(strings.TrimLeft(line, " ")) < indent {
			return ""
		}
		m := exampleLine.FindStringSubmatch(line)
		if m == nil || len(m[1]) != indent || m[2] != key {
			continue
		}
		snippet := key + ":" + m[3] + "\n"
		for _, next := range lines[j+1:] {
			rest, ok := strings.CutPrefix(next, prefix)
			if !ok || !(strings.HasPrefix(rest, "- ") || strings.HasPrefix(rest, " ")) {
				break
			}
			snippet += rest + "\n"
		}
		return snippet
	}
	return ""
}

func yamlOf(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
