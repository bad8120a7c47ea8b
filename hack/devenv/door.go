package devenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/gateway"
)

// DefaultPublicIssuerURL is the issuer of make dev PUBLIC=1: the public door, which a gateway
// serves with a certificate of its own CA, in front of the token server at DefaultTLSIssuerURL,
// its in-cluster URL.
const DefaultPublicIssuerURL = "https://localhost:9443"

// inClusterOf is the in-cluster URL of o, where the token server itself listens behind the
// public door: DefaultTLSIssuerURL when o names none, and empty without a door. It is an error
// to name one without a door, or one on the door's host, which could not tell its callers from
// the door's.
func inClusterOf(o Options, issuerURL string) (string, error) {
	switch {
	case !o.PublicDoor && o.InClusterURL != "":
		return "", fmt.Errorf("the in-cluster URL %s is where the token server listens behind a public door: add -public (make dev PUBLIC=1)", o.InClusterURL)
	case !o.PublicDoor:
		return "", nil
	case o.InClusterURL == "":
		o.InClusterURL = DefaultTLSIssuerURL
	case !strings.HasPrefix(o.InClusterURL, "https://"):
		return "", fmt.Errorf("the token server behind the public door serves HTTPS, so the in-cluster URL must be https://, not %s", o.InClusterURL)
	}
	u, err := url.Parse(o.InClusterURL)
	if err != nil {
		return "", err
	}
	if issuer.SameHost(issuerURL, u.Host) {
		return "", fmt.Errorf("the in-cluster URL %s is on the public door's host and port (%s): give the token server an address of its own", o.InClusterURL, issuerURL)
	}
	return o.InClusterURL, nil
}

// tokenServerURL is where the token server listens: the in-cluster URL behind a public door,
// else the issuer.
func (s *System) tokenServerURL() string {
	if s.InClusterURL != "" {
		return s.InClusterURL
	}
	return s.IssuerURL
}

// PublicCAFile is the CA bundle of the public door's certificate, for curl --cacert; empty
// without a door. It is apart from TLSDir, which mirrors a Secret and keeps no other file.
func (s *System) PublicCAFile() string {
	if !s.PublicDoor {
		return ""
	}
	return filepath.Join(s.StateDir, "public-ca.crt")
}

// startDoor serves the public door at the issuer's host, in front of the token server, and
// returns the client address options under which the token server believes the door.
func (s *System) startDoor() (tokenserver.ClientAddresses, error) {
	u, err := url.Parse(s.IssuerURL)
	if err != nil {
		return tokenserver.ClientAddresses{}, err
	}
	ln := s.doorListener
	s.doorListener = nil // the door closes it
	s.doorSource = doorSource()
	trusted := "127.0.0.1"
	if s.doorSource != "" {
		trusted = s.doorSource
	}
	g, err := gateway.Start(ln, gateway.Options{Hosts: []string{u.Hostname()}, Backend: s.InClusterURL, BackendCAFile: s.CAFile(), Source: s.doorSource})
	if err != nil {
		_ = ln.Close()
		return tokenserver.ClientAddresses{}, err
	}
	s.gateway = g
	if err := os.WriteFile(s.PublicCAFile(), g.CA, 0o600); err != nil {
		return tokenserver.ClientAddresses{}, err
	}
	return tokenserver.ClientAddresses{Trusted: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(trusted), 32)}, Header: tokenserver.HeaderXForwardedFor}, nil
}

// doorSource is the loopback address the door connects to the token server from, which no
// caller on this machine uses (they connect from 127.0.0.1): the token server then trusts the
// X-Forwarded-For of the door only, as it trusts a Gateway's. Empty where the system has no
// such address (macOS has only 127.0.0.1 by default): the door then connects from 127.0.0.1,
// and every local process can name its own address.
func doorSource() string {
	const source = "127.0.0.2"
	ln, err := net.Listen("tcp", source+":0")
	if err != nil {
		return ""
	}
	_ = ln.Close()
	return source
}

// stopDoor stops the door and removes its CA, which ends with it.
func (s *System) stopDoor() error {
	if s.gateway == nil {
		return nil
	}
	err := s.gateway.Close()
	if rmErr := os.Remove(s.PublicCAFile()); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	return err
}
