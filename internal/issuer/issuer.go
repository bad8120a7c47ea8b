// Package issuer parses the issuer URL that the manager and the token server share, and derives
// the URLs the token server serves from it.
package issuer

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Parse checks that raw is an issuer identifier (RFC 8414 §2): an absolute http or https URL with
// a host and no query or fragment. It returns the URL without a trailing slash.
func Parse(raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("the issuer URL is required, for example https://m2m.example.com")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("issuer URL %q: %w", raw, err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return "", fmt.Errorf("issuer URL %q: the scheme must be https (or http)", raw)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("issuer URL %q has no host", raw)
	case u.User != nil:
		return "", fmt.Errorf("issuer URL %q must not contain user information", raw)
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("issuer URL %q must not have a query", raw)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", fmt.Errorf("issuer URL %q must not have a fragment", raw)
	}
	return strings.TrimSuffix(raw, "/"), nil
}

// Loopback reports whether the issuer's host is a loopback address or localhost, where plain
// http is expected.
func Loopback(issuerURL string) bool {
	u, err := url.Parse(issuerURL)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TokenPath is the path of the token endpoint below the issuer.
const TokenPath = "/oauth2/token"

// TokenURL is the token endpoint of the issuer.
func TokenURL(issuerURL string) string {
	return strings.TrimSuffix(issuerURL, "/") + TokenPath
}

// SameHost reports whether host (a request's Host: a name or address, with or without a port)
// is the host of the URL u, the scheme's default port being the same as none.
func SameHost(u, host string) bool {
	parsed, err := url.Parse(u)
	if err != nil {
		return false
	}
	return strings.EqualFold(withoutDefaultPort(parsed.Scheme, parsed.Host), withoutDefaultPort(parsed.Scheme, host))
}

func withoutDefaultPort(scheme, host string) string {
	switch {
	case scheme == "https":
		return strings.TrimSuffix(host, ":443")
	case scheme == "http":
		return strings.TrimSuffix(host, ":80")
	}
	return host
}
