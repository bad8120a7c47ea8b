// Package placeholder is the one small template syntax of M2MClient fields that build a value
// from others: "${name}" stands for the value called name, "$$" for a literal "$", and every
// other character for itself. A lone "$" is refused, so that a typo is an error and not text.
//
// The syntax is small enough for a regular expression to decide (Pattern), because admission is
// the API server's OpenAPI and CEL validation, which cannot run a template engine: the CRD's
// pattern is Pattern's output, and a test keeps the two in agreement.
package placeholder

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Pattern is the regular expression (RE2, as the API server's OpenAPI validation and CEL
// run them) that matches exactly the templates whose placeholders all match names, a regular
// expression without anchors or capturing groups (Names builds one from a list).
func Pattern(names string) string {
	return `^(?:[^$]|\$\$|\$\{(?:` + names + `)\})*$`
}

// Names is the alternation of the literal names, for Pattern.
func Names(names ...string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return strings.Join(quoted, "|")
}

// segment is a piece of a parsed template: literal text, or the name of a placeholder.
type segment struct {
	text        string
	placeholder bool
}

// parse splits tpl into its literal text and its placeholders, with allowed deciding which
// names exist; the error says where tpl breaks the syntax.
func parse(tpl string, allowed func(string) bool) ([]segment, error) {
	var segs []segment
	var lit strings.Builder
	for i := 0; i < len(tpl); {
		if tpl[i] != '$' {
			j := strings.IndexByte(tpl[i:], '$')
			if j < 0 {
				j = len(tpl) - i
			}
			lit.WriteString(tpl[i : i+j])
			i += j
			continue
		}
		switch {
		case strings.HasPrefix(tpl[i:], "$$"):
			lit.WriteByte('$')
			i += 2
		case strings.HasPrefix(tpl[i:], "${"):
			end := strings.IndexByte(tpl[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("the placeholder at character %d has no closing }", i)
			}
			name := tpl[i+2 : i+end]
			if !allowed(name) {
				return nil, fmt.Errorf("unknown placeholder ${%s} at character %d", name, i)
			}
			if lit.Len() > 0 {
				segs = append(segs, segment{text: lit.String()})
				lit.Reset()
			}
			segs = append(segs, segment{text: name, placeholder: true})
			i += end + 1
		default:
			return nil, fmt.Errorf("a lone $ at character %d: write $$ for a $, or ${name} for a value", i)
		}
	}
	if lit.Len() > 0 {
		segs = append(segs, segment{text: lit.String()})
	}
	return segs, nil
}

// Validate reports whether tpl is a template whose placeholders are all allowed: the same
// decision as Pattern, with an error that says where.
func Validate(tpl string, allowed func(string) bool) error {
	_, err := parse(tpl, allowed)
	return err
}

// ErrNoValue is Render's error for a placeholder whose value is not given.
var ErrNoValue = errors.New("no value")

// ErrTooLarge is Render's error for a result over its bound.
var ErrTooLarge = errors.New("too large")

// Render replaces each placeholder of tpl by its value in values. It fails if tpl is not valid,
// if a placeholder has no value (ErrNoValue), or if the result would exceed maxBytes: a short
// template that repeats a long value must not make the caller build a large one.
func Render(tpl string, values map[string]string, maxBytes int) (string, error) {
	var missing string
	segs, err := parse(tpl, func(name string) bool {
		_, ok := values[name]
		if !ok && missing == "" {
			missing = name
		}
		return ok
	})
	if missing != "" {
		return "", fmt.Errorf("${%s}: %w", missing, ErrNoValue)
	}
	if err != nil {
		return "", err
	}
	size := 0
	for _, s := range segs {
		if s.placeholder {
			size += len(values[s.text])
		} else {
			size += len(s.text)
		}
		if size > maxBytes {
			return "", fmt.Errorf("renders to more than %d bytes: %w", maxBytes, ErrTooLarge)
		}
	}
	var out strings.Builder
	out.Grow(size)
	for _, s := range segs {
		if s.placeholder {
			out.WriteString(values[s.text])
		} else {
			out.WriteString(s.text)
		}
	}
	return out.String(), nil
}
