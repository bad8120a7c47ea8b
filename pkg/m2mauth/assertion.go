package m2mauth

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// jwtBearer is the client_assertion_type of RFC 7523 §2.2.
const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is how long a signed assertion is valid: the token server takes at most 5
// minutes, and a short one is worth less to whoever captures it.
const assertionLifetime = time.Minute

// PrivateKeyClient is a client that authenticates with a private key the caller holds
// (private_key_jwt, RFC 7523 §3): a key in an HSM or a cloud KMS behind a crypto.Signer, whose
// public key is in the M2MClient's spec.authentication.publicKeys, or a key in memory.
type PrivateKeyClient struct {
	// ClientID is the client's client ID, the assertion's iss and sub.
	ClientID string
	// TokenURL is the token endpoint.
	TokenURL string
	// Issuer is the token server's issuer identifier, the assertion's aud.
	Issuer string
	// Key signs the assertions: a P-256 key (ES256), an RSA key (RS256) or an Ed25519 key
	// (EdDSA). Only its Sign method is called, so a hardware-backed signer works.
	Key crypto.Signer
	// KeyID is the kid of the public key in spec.authentication.publicKeys. Unset, it is the
	// RFC 7638 thumbprint of Key's public key, which a key pair the manager generated uses.
	KeyID string
}

// NewPrivateKeyTokenSource returns a token source that authenticates with c's key: each token
// request carries a fresh client assertion (a new jti, valid for one minute) signed by c.Key.
// Tokens are cached, refreshed, and dropped when a resource server refuses them (Invalidator),
// as NewTokenSource does. ctx bounds every request (once it ends, requests fail, as with
// golang.org/x/oauth2's sources), and its oauth2.HTTPClient value, if any, is used for them.
func NewPrivateKeyTokenSource(ctx context.Context, c PrivateKeyClient, opts ...TokenSourceOption) (oauth2.TokenSource, error) {
	cfg, reqCtx, err := tokenSourceSetupWith(ctx, opts, false)
	if err != nil {
		return nil, err
	}
	if cfg.podCert != nil {
		return nil, errors.New("m2mauth: PodCertificate goes with NewTokenSource")
	}
	creds, err := c.credentials(cfg)
	if err != nil {
		return nil, err
	}
	src := tokenSourceFunc(func() (*oauth2.Token, error) { return requestToken(reqCtx, cfg, creds, "") })
	return &cachingTokenSource{src: src, early: cfg.early, now: cfg.now, key: cfg.dpop}, nil
}

func (c PrivateKeyClient) credentials(cfg tokenSourceConfig) (clientCreds, error) {
	switch {
	case c.ClientID == "" || c.TokenURL == "" || c.Issuer == "":
		return clientCreds{}, errors.New("m2mauth: a PrivateKeyClient needs ClientID, TokenURL and Issuer")
	case c.Key == nil:
		return clientCreds{}, errors.New("m2mauth: a PrivateKeyClient needs a Key")
	}
	pub, err := jwk.FromPublicKey(c.Key.Public())
	if err != nil {
		return clientCreds{}, fmt.Errorf("m2mauth: %w", err)
	}
	kid := c.KeyID
	if kid == "" {
		if kid, err = pub.Thumbprint(); err != nil {
			return clientCreds{}, fmt.Errorf("m2mauth: %w", err)
		}
	}
	return clientCreds{
		Config: clientcredentials.Config{ClientID: c.ClientID, TokenURL: c.TokenURL, Scopes: cfg.scopes, EndpointParams: cfg.params},
		issuer: c.Issuer, key: c.Key, kid: kid, alg: pub.Algorithm,
	}, nil
}

type tokenSourceFunc func() (*oauth2.Token, error)

func (f tokenSourceFunc) Token() (*oauth2.Token, error) { return f() }

// clientCreds is what one token request authenticates with: a client secret, or a private key
// that signs an assertion, or (with an assertion file) neither.
type clientCreds struct {
	clientcredentials.Config
	issuer   string
	key      crypto.Signer
	kid, alg string
}

// same reports whether a request with o would authenticate as one with c did.
func (c clientCreds) same(o clientCreds) bool {
	return c.ClientID == o.ClientID && c.ClientSecret == o.ClientSecret && c.TokenURL == o.TokenURL && c.kid == o.kid && c.issuer == o.issuer
}

// requestToken gets a token with creds, bounded by the request timeout: with the client
// secret, the assertion in assertionFile, or an assertion signed with creds.key. With a DPoP key,
// each request carries a fresh proof, and a use_dpop_nonce answer with a nonce is retried once
// with it (RFC 9449 §8).
func requestToken(ctx context.Context, cfg tokenSourceConfig, creds clientCreds, assertionFile string) (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	cc := creds.Config
	var assertion string
	switch {
	case assertionFile != "":
		a, err := readAssertion(assertionFile)
		if err != nil {
			return nil, err
		}
		assertion = a
	case creds.key != nil:
		a, err := signAssertion(creds, cfg.now())
		if err != nil {
			return nil, err
		}
		assertion = a
	}
	if assertion != "" {
		params := url.Values{}
		for k, v := range cc.EndpointParams {
			params[k] = v
		}
		params.Set("client_assertion_type", jwtBearer)
		params.Set("client_assertion", assertion)
		cc.EndpointParams = params
		cc.ClientSecret, cc.AuthStyle = "", oauth2.AuthStyleInParams // client_id in the body, and no secret
	}
	if cfg.dpop == nil {
		return cc.Token(ctx)
	}
	ctx = withProofs(ctx, cfg.dpop)
	tok, err := cc.Token(ctx)
	var re *oauth2.RetrieveError
	if useNonce(err) && errors.As(err, &re) && re.Response != nil && re.Response.Header.Get("DPoP-Nonce") != "" {
		// The proof transport has kept the nonce: one more request, with a new proof (and,
		// for a key-pair client, a new assertion: the token server may remember the first).
		if assertion != "" && assertionFile == "" {
			a, aerr := signAssertion(creds, cfg.now())
			if aerr != nil {
				return nil, aerr
			}
			cc.EndpointParams.Set("client_assertion", a)
		}
		tok, err = cc.Token(ctx)
	}
	return tok, err
}

// signAssertion makes an RFC 7523 §3 client assertion as draft-ietf-oauth-rfc7523bis asks: iss
// and sub are the client ID, aud is the issuer alone, a one-minute lifetime and a random jti.
func signAssertion(c clientCreds, now time.Time) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	method := jwt.GetSigningMethod(c.alg)
	if method == nil {
		return "", fmt.Errorf("m2mauth: no signing method %q", c.alg)
	}
	tok := jwt.NewWithClaims(method, jwt.RegisteredClaims{
		Issuer: c.ClientID, Subject: c.ClientID, Audience: jwt.ClaimStrings{c.issuer},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(assertionLifetime)),
		ID: base64.RawURLEncoding.EncodeToString(jti),
	})
	tok.Header["kid"] = c.kid
	input, err := tok.SigningString()
	if err != nil {
		return "", err
	}
	sig, err := jwk.Sign(c.key, c.alg, []byte(input))
	if err != nil {
		return "", fmt.Errorf("m2mauth: signing the client assertion: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// readAssertion reads a token file that the kubelet (or another agent) keeps fresh.
func readAssertion(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the assertion file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
