package tokenserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/m2m-dev/m2m-operator/internal/httpjson"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// FederatedIssuer is an issuer of OIDC-style tokens (another cluster's ServiceAccount issuer, a
// CI system, a cloud) that an administrator lets clients trust. Its keys come from JWKSURL, or
// from the jwks_uri of its discovery document.
type FederatedIssuer struct {
	Issuer  string
	JWKSURL string
}

// ParseFederatedIssuer reads --federated-issuer: "ISSUER" or "ISSUER,JWKS_URL", each an absolute
// http(s) URL.
func ParseFederatedIssuer(s string) (FederatedIssuer, error) {
	iss, jwks, _ := strings.Cut(s, ",")
	f := FederatedIssuer{Issuer: strings.TrimSpace(iss), JWKSURL: strings.TrimSpace(jwks)}
	urls := []string{f.Issuer}
	if f.JWKSURL != "" || strings.Contains(s, ",") {
		urls = append(urls, f.JWKSURL)
	}
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return FederatedIssuer{}, fmt.Errorf("--federated-issuer %q: %q is not an absolute http(s) URL", s, u)
		}
	}
	return f, nil
}

// Federation verifies tokens of the federated issuers an administrator configured. Tenants
// only name (issuer, subject) pairs of this list in their clients; nothing they write makes the
// token server fetch from another URL.
type Federation struct {
	issuers map[string]*issuerKeys
}

// federationClient fetches discovery documents and keys: bounded times, no redirect to another
// origin.
func federationClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 5 * time.Second
	t.ResponseHeaderTimeout = 10 * time.Second
	return &http.Client{Transport: t, Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != via[0].URL.Scheme || req.URL.Host != via[0].URL.Host || len(via) >= 5 {
			return errors.New("refusing a redirect to another origin")
		}
		return nil
	}}
}

// NewFederation prepares the key caches of issuers; Run reads them.
func NewFederation(issuers []FederatedIssuer, clk clock.PassiveClock) *Federation {
	hc := federationClient()
	f := &Federation{issuers: map[string]*issuerKeys{}}
	for _, fi := range issuers {
		fi := fi
		f.issuers[fi.Issuer] = newIssuerKeys(fi.Issuer, clk, func(ctx context.Context) (string, jwk.Set, error) {
			jwksURL := fi.JWKSURL
			if jwksURL == "" {
				var doc struct {
					Issuer  string `json:"issuer"`
					JWKSURI string `json:"jwks_uri"`
				}
				if err := httpjson.Get(ctx, hc, strings.TrimSuffix(fi.Issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
					return "", jwk.Set{}, err
				}
				if doc.Issuer != fi.Issuer || doc.JWKSURI == "" {
					return "", jwk.Set{}, fmt.Errorf("the discovery document of %s names issuer %q and jwks_uri %q", fi.Issuer, doc.Issuer, doc.JWKSURI)
				}
				// Keys come from the issuer's own scheme and host; another host needs the
				// administrator's ISSUER,JWKS_URL.
				iu, err1 := url.Parse(fi.Issuer)
				ju, err2 := url.Parse(doc.JWKSURI)
				if err1 != nil || err2 != nil || ju.Scheme != iu.Scheme || ju.Host != iu.Host {
					return "", jwk.Set{}, fmt.Errorf("the discovery document of %s names a jwks_uri on another scheme or host: %q", fi.Issuer, doc.JWKSURI)
				}
				jwksURL = doc.JWKSURI
			}
			var set jwk.Set
			if err := httpjson.Get(ctx, hc, jwksURL, &set); err != nil {
				return "", jwk.Set{}, err
			}
			return fi.Issuer, set, nil
		})
	}
	return f
}

// Run reads every issuer's keys, then again every 10 minutes, until ctx ends.
func (f *Federation) Run(ctx context.Context) {
	for _, k := range f.issuers {
		go k.run(ctx)
	}
}

// Trusts reports whether iss is a configured issuer.
func (f *Federation) Trusts(iss string) bool {
	if f == nil {
		return false
	}
	_, ok := f.issuers[iss]
	return ok
}

// Verify checks token, issued by iss (a configured issuer), for one of audiences, and returns
// its subject.
func (f *Federation) Verify(ctx context.Context, iss, token string, audiences []string) (string, error) {
	k, ok := f.issuers[iss]
	if !ok {
		return "", fmt.Errorf("%w: issuer %q is not federated", errAssertion, iss)
	}
	sub, err := k.verify(ctx, token, audiences)
	if err != nil {
		return "", err
	}
	if sub == "" {
		return "", fmt.Errorf("%w: no subject", errAssertion)
	}
	return sub, nil
}
