package tokenserver

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// The headers in which trusted proxies may name the client (--trusted-proxy-header).
const (
	HeaderXForwardedFor = "X-Forwarded-For"
	HeaderForwarded     = "Forwarded"
)

// ClientAddresses finds the address of the client of a request: the connection's, or, when the
// connection comes from a trusted proxy, the one that the proxies name in their header.
type ClientAddresses struct {
	// Trusted are the networks of the proxies in front of the token server. Empty: the
	// connection's address is the client's, whatever the headers say.
	Trusted []netip.Prefix
	// Header is the one header the proxies write, HeaderXForwardedFor (the default) or
	// HeaderForwarded. Only one is read: a proxy that writes one passes the other through as the
	// client sent it, so reading both would let a client name any address.
	Header string
}

// ParseTrustedProxies parses --trusted-proxies: comma-separated CIDRs or single addresses.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("--trusted-proxies: %q is neither a CIDR (10.0.0.0/8, fd00::/8) nor an address", f)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return nil, fmt.Errorf("--trusted-proxies: %q is an IPv4-mapped network shorter than /96; name the IPv4 network instead", f)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if !p.IsValid() {
			return nil, fmt.Errorf("--trusted-proxies: %q is not a network", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (c ClientAddresses) trusted(a netip.Addr) bool {
	// A link-local proxy's address carries its zone (fe80::1%eth0); networks have none.
	a = a.WithZone("").Unmap()
	for _, p := range c.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// of is the client's address of r: the one place the token server decides it, for the limit on
// failed authentications, the refusals and the log. Behind trusted proxies it walks the header's
// hops from the right, as each proxy appends the address it received the request from, and
// takes the first that is not a trusted proxy: hops to the left of it were written by the
// client and prove nothing. A hop to the right of that one that does not parse (written by a
// proxy, so a misconfiguration) makes it fall back to the connection's address. Hops are split
// at commas without regard to quotes, since only the left part that the client wrote could
// hold a quoted comma, and the walk stops before it.
func (c ClientAddresses) of(r *http.Request) netip.Addr {
	peer := remoteAddr(r)
	if len(c.Trusted) == 0 || !c.trusted(peer) {
		return peer
	}
	header, hop := HeaderXForwardedFor, xForwardedForHop
	if c.Header == HeaderForwarded {
		header, hop = HeaderForwarded, forwardedHop
	}
	values := r.Header.Values(header)
	if len(values) == 0 {
		return peer
	}
	hops := strings.Split(strings.Join(values, ","), ",")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := hop(strings.TrimSpace(hops[i]))
		if !ok {
			return peer
		}
		client = a
		if !c.trusted(a) {
			break
		}
	}
	return client
}

// remoteAddr is the address of the connection, never a header the caller writes.
func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// xForwardedForHop parses one X-Forwarded-For hop: an address, IPv6 possibly in brackets, with
// no port (some proxies add one).
func xForwardedForHop(s string) (netip.Addr, bool) {
	return parseNode(s)
}

// forwardedHop parses one RFC 7239 forwarded-element (for=...;proto=...) and returns its for=
// address. An obfuscated or "unknown" node names no address and does not parse.
func forwardedHop(element string) (netip.Addr, bool) {
	for _, pair := range strings.Split(element, ";") {
		name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(name, "for") {
			continue
		}
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		return parseNode(value)
	}
	return netip.Addr{}, false
}

// parseNode parses an address as proxies write it: 192.0.2.1, 192.0.2.1:4711, 2001:db8::1,
// [2001:db8::1] or [2001:db8::1]:4711.
func parseNode(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
