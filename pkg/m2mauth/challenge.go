package m2mauth

import (
	"net/http"
	"strings"
)

// refusesToken reports whether resp refuses the request's bearer token as invalid (RFC 6750 §3.1).
func refusesToken(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized {
		return false
	}
	for _, c := range parseChallenges(resp.Header.Values("WWW-Authenticate")) {
		if c.is("Bearer") && c.params["error"] == "invalid_token" {
			return true
		}
	}
	return false
}

// challenge is one challenge of a WWW-Authenticate field (RFC 9110 §11.6.1): its scheme and its
// parameters by lower-case name (names are case-insensitive; values are not).
type challenge struct {
	scheme string
	params map[string]string
}

func (c challenge) is(scheme string) bool { return strings.EqualFold(c.scheme, scheme) }

// parseChallenges reads the challenges of WWW-Authenticate field values (RFC 9110 §11.2):
//
//	challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//	auth-param = token BWS "=" BWS ( token / quoted-string )
//
// Challenges are separated by commas as parameters are. A value is read up to the first thing
// that is not well formed, and the rest of it ignored: whatever a resource server says there
// does not count. The first of repeated parameters counts.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		l := &lexer{s: v}
		for {
			l.skip(isListSeparator)
			scheme := l.take(isTchar)
			if scheme == "" {
				break // the end of the value, or something that is not a challenge
			}
			c := challenge{scheme: scheme, params: map[string]string{}}
			if l.skip(isWhitespace) == 0 {
				if l.done() || l.peek() == ',' {
					out = append(out, c)
					continue
				}
				break
			}
			ok := l.token68() || l.params(c.params)
			out = append(out, c)
			if !ok {
				break
			}
		}
	}
	return out
}

type lexer struct {
	s string
	i int
}

func (l *lexer) done() bool { return l.i >= len(l.s) }

func (l *lexer) peek() byte {
	if l.done() {
		return 0
	}
	return l.s[l.i]
}

// skip passes the bytes that ok accepts and says how many.
func (l *lexer) skip(ok func(byte) bool) int {
	return len(l.take(ok))
}

// take returns the bytes from here that ok accepts, and passes them.
func (l *lexer) take(ok func(byte) bool) string {
	start := l.i
	for !l.done() && ok(l.s[l.i]) {
		l.i++
	}
	return l.s[start:l.i]
}

// atElementEnd reports whether the list element ends here, after optional whitespace.
func (l *lexer) atElementEnd() bool {
	l.skip(isWhitespace)
	return l.done() || l.peek() == ','
}

// token68 passes a token68 that is the challenge's only credentials, if there is one here.
func (l *lexer) token68() bool {
	mark := l.i
	if l.take(isToken68Char) != "" {
		l.skip(func(b byte) bool { return b == '=' })
		if l.atElementEnd() {
			return true
		}
	}
	l.i = mark
	return false
}

// params reads auth-params into into until the next challenge or the end of the value, and
// reports false at something that is not well formed.
func (l *lexer) params(into map[string]string) bool {
	for {
		mark := l.i
		l.skip(isListSeparator)
		name := l.take(isTchar)
		l.skip(isWhitespace)
		if name == "" || l.peek() != '=' {
			l.i = mark // the next challenge's scheme, or the end
			return true
		}
		l.i++
		l.skip(isWhitespace)
		var value string
		if l.peek() == '"' {
			v, ok := l.quoted()
			if !ok {
				return false
			}
			value = v
		} else if value = l.take(isTchar); value == "" {
			return false
		}
		name = strings.ToLower(name)
		if _, seen := into[name]; !seen {
			into[name] = value
		}
		if !l.atElementEnd() {
			return false
		}
	}
}

// quoted reads a quoted-string, at its opening quote, without its quotes and escapes.
func (l *lexer) quoted() (string, bool) {
	var b strings.Builder
	for l.i++; !l.done(); l.i++ {
		switch c := l.s[l.i]; c {
		case '"':
			l.i++
			return b.String(), true
		case '\\':
			if l.i++; l.done() {
				return "", false
			}
			b.WriteByte(l.s[l.i])
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}

func isWhitespace(b byte) bool { return b == ' ' || b == '\t' }

func isListSeparator(b byte) bool { return b == ',' || isWhitespace(b) }

func isAlnum(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}

// isTchar: RFC 9110 §5.6.2.
func isTchar(b byte) bool { return isAlnum(b) || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0 }

// isToken68Char: RFC 9110 §11.2, the padding apart.
func isToken68Char(b byte) bool { return isAlnum(b) || strings.IndexByte("-._~+/", b) >= 0 }
