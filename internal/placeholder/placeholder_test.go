package placeholder

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var names = []string{"client_id", "client_secret", "ca.crt"}

func known(n string) bool { return slices.Contains(names, n) }

func TestRender(t *testing.T) {
	values := map[string]string{"client_id": "m2m-a", "client_secret": "s3cret", "ca.crt": "PEM-PEM-PEM"}
	for name, tc := range map[string]struct {
		tpl, want string
		err       string
	}{
		"text without placeholders is itself":                {tpl: "plain\ntext", want: "plain\ntext"},
		"a placeholder becomes its value":                    {tpl: "CLIENT_ID=${client_id}\n", want: "CLIENT_ID=m2m-a\n"},
		"a value may appear twice":                           {tpl: "${client_id}:${client_id}", want: "m2m-a:m2m-a"},
		"a name with a dot is a name":                        {tpl: "${ca.crt}", want: "PEM-PEM-PEM"},
		"$$ is a literal dollar":                             {tpl: "PRICE=$$5 ${client_secret}$$", want: "PRICE=$5 s3cret$"},
		"$${client_id} is a dollar and text":                 {tpl: "$${client_id}", want: "${client_id}"},
		"the empty template is empty":                        {tpl: "", want: ""},
		"a lone dollar is refused":                           {tpl: "HOME=$HOME", err: "lone $ at character 5"},
		"a dollar at the end is refused":                     {tpl: "x$", err: "lone $"},
		"an unclosed placeholder is refused":                 {tpl: "${client_id", err: "no closing }"},
		"an unknown placeholder is refused":                  {tpl: "${password}", err: "${password}: no value"},
		"a name with spaces is not a known name":             {tpl: "${ client_id }", err: "no value"},
		"a Go template is not a placeholder":                 {tpl: "{{ .client_id }}", want: "{{ .client_id }}"},
		"a short template repeating a long value is refused": {tpl: strings.Repeat("${ca.crt}", 3), err: "more than 30 bytes"},
		"the bound counts the result, not the template":      {tpl: strings.Repeat("${client_id}", 3), want: "m2m-am2m-am2m-a"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Render(tc.tpl, values, 30)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Render(%q) = %q, %v; want an error with %q", tc.tpl, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Render(%q) = %q, %v; want %q", tc.tpl, got, err, tc.want)
			}
		})
	}
}

func TestAPlaceholderWithoutAValueIsErrNoValueAndASyntaxErrorIsNot(t *testing.T) {
	if _, err := Render("${client_secret}", map[string]string{"client_id": "x"}, 100); !errors.Is(err, ErrNoValue) {
		t.Errorf("a missing value: %v, want ErrNoValue", err)
	}
	if _, err := Render("$x", map[string]string{}, 100); err == nil || errors.Is(err, ErrNoValue) {
		t.Errorf("a lone $: %v, want a syntax error", err)
	}
}

// The CRD decides with Pattern what the manager decides with Validate: they must agree on every
// template, hostile ones included.
func TestPatternAndValidateAgree(t *testing.T) {
	re := regexp.MustCompile(Pattern(Names(names...)))
	pieces := []string{"", "a", "\n", "$", "$$", "{", "}", "${", "${client_id}", "${ca.crt}", "${ca_crt}", "${cacrt}",
		"${client_id", "${}", "${${client_id}}", "é", "\x00", "${CLIENT_ID}", "${client_secret}x", "$}"}
	check := func(tpl string) {
		if matched, valid := re.MatchString(tpl), Validate(tpl, known) == nil; matched != valid {
			t.Errorf("%q: the pattern matches %v, Validate accepts %v", tpl, matched, valid)
		}
	}
	for _, a := range pieces {
		for _, b := range pieces {
			for _, c := range pieces {
				check(a + b + c)
			}
		}
	}
}

func FuzzPatternAndValidateAgree(f *testing.F) {
	re := regexp.MustCompile(Pattern(Names(names...)))
	for _, s := range []string{"${client_id}", "$$", "$", "${ca.crt}x${", "a$b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tpl string) {
		if matched, valid := re.MatchString(tpl), Validate(tpl, known) == nil; matched != valid {
			t.Errorf("%q: the pattern matches %v, Validate accepts %v", tpl, matched, valid)
		}
	})
}

func TestNamesQuotesMetacharacters(t *testing.T) {
	re := regexp.MustCompile(Pattern(Names("ca.crt")))
	if re.MatchString("${caXcrt}") {
		t.Error("the dot of ca.crt matches any character")
	}
}
