// Package dpop makes and verifies DPoP proofs (RFC 9449): short-lived JWTs, signed with a key the
// client holds, that bind an access token to that key, so that a copied token is of no use
// without the key. The token server verifies the proofs of token requests and binds the token it
// issues to the proof's key (cnf.jkt); clients make proofs for token and resource requests;
// resource servers verify them against the token's cnf.jkt. It depends on the standard library
// and pkg/jwk alone, so that pkg/m2mauth stays free of Kubernetes modules.
package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

const (
	// Type is the typ header of a DPoP proof.
	Type = "dpop+jwt"
	// MaxProofLength bounds the proof Verify reads; a longer one is refused before any decoding.
	MaxProofLength = 8 << 10
	// MaxJTILength bounds a proof's jti, which a verifier keeps in its replay cache.
	MaxJTILength = 256
	// DefaultMaxAge is how long after its iat Verify accepts a proof when VerifyOptions.MaxAge is
	// zero. A proof is made for one request, so a minute covers any request's latency and keeps
	// the time a captured proof can be replayed (at a verifier that does not remember it) short.
	DefaultMaxAge = time.Minute
	// DefaultMaxClockSkew is how far in the future an iat may be when VerifyOptions.MaxClockSkew
	// is zero.
	DefaultMaxClockSkew = 10 * time.Second
)

// The errors of Verify wrap one of these. RFC 9449 §5 and §7.1 name the error codes they map to.
var (
	// ErrInvalidProof: the proof is missing, malformed, signed wrongly, stale, replayed or for
	// another request (error code invalid_dpop_proof).
	ErrInvalidProof = errors.New("invalid DPoP proof")
	// ErrUseNonce: the proof is otherwise valid but lacks the nonce the verifier requires, or
	// carries one it no longer accepts (error code use_dpop_nonce; the verifier sends a fresh
	// nonce in the DPoP-Nonce header).
	ErrUseNonce = errors.New("the DPoP proof must carry the server's current nonce")
)

// Algorithms returns the signature algorithms of the keys this package signs and verifies with:
// ES256 (P-256), EdDSA (Ed25519) and RS256 (RSA of 2048 to 8192 bits).
func Algorithms() []string { return []string{"ES256", "EdDSA", "RS256"} }

// ProofOptions are the optional parts of a proof.
type ProofOptions struct {
	// Nonce is the server's last DPoP-Nonce, if it sent one.
	Nonce string
	// AccessToken, for a request to a resource server, is the token the proof goes with; the
	// proof then carries its hash (ath).
	AccessToken string
	// Now is the proof's iat; zero means time.Now().
	Now time.Time
	// JTI is the proof's unique ID; empty means 128 random bits.
	JTI string
}

// NewProof returns a DPoP proof for a request of method to rawURL (its query and fragment are
// left out of htu, RFC 9449 §4.2), signed with key: ES256 for a P-256 key, EdDSA for Ed25519, RS256
// for RSA. The header carries the key's public JWK only.
func NewProof(key crypto.Signer, method, rawURL string, o ProofOptions) (string, error) {
	pub, err := jwk.FromPublicKey(key.Public())
	if err != nil {
		return "", err
	}
	if _, err := pub.PublicKey(); err != nil { // the RSA size rules Verify applies
		return "", err
	}
	htu, err := url.Parse(rawURL)
	if err != nil || !htu.IsAbs() || htu.Host == "" {
		return "", errors.New("the URL of a DPoP proof must be absolute")
	}
	htu.RawQuery, htu.ForceQuery, htu.Fragment, htu.RawFragment = "", false, "", ""
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.JTI == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
		o.JTI = base64.RawURLEncoding.EncodeToString(b)
	}
	header, err := json.Marshal(proofHeader{Type: Type, Algorithm: pub.Algorithm, Key: publicJWK(pub)})
	if err != nil {
		return "", err
	}
	c := proofClaims{Method: method, URL: htu.String(), IssuedAt: new(float64(o.Now.Unix())), ID: o.JTI, Nonce: o.Nonce}
	if o.AccessToken != "" {
		c.TokenHash = TokenHash(o.AccessToken)
	}
	claims, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sig, err := jwk.Sign(key, pub.Algorithm, []byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Thumbprint is the RFC 7638 thumbprint of pub (base64url SHA-256), the value of a bound token's
// cnf.jkt.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	k, err := jwk.FromPublicKey(pub)
	if err != nil {
		return "", err
	}
	return k.Thumbprint()
}

// TokenHash is the ath of a proof for accessToken: the base64url SHA-256 of its ASCII.
func TokenHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// VerifyOptions say what request a proof must be for.
type VerifyOptions struct {
	// Method is the request's HTTP method (htm must equal it).
	Method string
	// URLs are the accepted htu values: htu must equal one of them, both without query and
	// fragment, scheme and host compared ignoring case, a default port equal to none, and
	// percent-encodings compared decoded where they encode an unreserved character (RFC 9449
	// §4.3, RFC 3986 §6.2.2 and §6.2.3). Dot segments are not removed: such an htu is refused.
	URLs []string
	// Now is the verifier's time; zero means time.Now().
	Now time.Time
	// MaxAge is how long after its iat a proof is accepted; zero means DefaultMaxAge.
	MaxAge time.Duration
	// MaxClockSkew is how far in the future an iat is accepted; zero means DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// Algorithms are the accepted signature algorithms; nil means all of Algorithms().
	Algorithms []string
	// AccessToken, when set, is the token the proof must go with: ath is then required and must
	// be its hash.
	AccessToken string
	// Nonce, when set, is called with the proof's nonce ("" when it has none) and returns an
	// error when the verifier does not accept it; Verify then returns an error wrapping
	// ErrUseNonce. Nil means no nonce is required, and one a proof carries is ignored.
	Nonce func(nonce string) error
}

// Proof is what a verified proof says.
type Proof struct {
	// JKT is the RFC 7638 thumbprint of the proof's key.
	JKT string
	// JTI is the proof's unique ID; a verifier refuses a second proof with the same JKT and
	// JTI until Until.
	JTI string
	// IssuedAt is the proof's iat.
	IssuedAt time.Time
	// Until is when Verify, with the same options, starts to refuse the proof as too old:
	// how long a replay cache must remember it.
	Until time.Time
}

type proofHeader struct {
	Type      string          `json:"typ"`
	Algorithm string          `json:"alg"`
	Key       json.RawMessage `json:"jwk"`
	Critical  json.RawMessage `json:"crit,omitempty"`
}

type proofClaims struct {
	Method    string   `json:"htm"`
	URL       string   `json:"htu"`
	IssuedAt  *float64 `json:"iat"`
	ID        string   `json:"jti"`
	Nonce     string   `json:"nonce,omitempty"`
	TokenHash string   `json:"ath,omitempty"`
}

// publicJWK is the JWK of a proof header: the key's required members and nothing else, so that a
// verifier sees no kid or use to misread.
func publicJWK(k jwk.Key) json.RawMessage {
	raw, _ := json.Marshal(struct {
		KeyType string `json:"kty"`
		Curve   string `json:"crv,omitempty"`
		X       string `json:"x,omitempty"`
		Y       string `json:"y,omitempty"`
		N       string `json:"n,omitempty"`
		E       string `json:"e,omitempty"`
	}{k.KeyType, k.Curve, k.X, k.Y, k.N, k.E})
	return raw
}

// privateMembers are the JWK members of private keys (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// keyTypeOf is the JWK key type and curve each algorithm signs with.
var keyTypeOf = map[string][2]string{"ES256": {"EC", "P-256"}, "EdDSA": {"OKP", "Ed25519"}, "RS256": {"RSA", ""}}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidProof}, args...)...)
}

// Verify checks a DPoP proof against the request o describes and returns what it says. Its
// errors wrap ErrInvalidProof or ErrUseNonce, and never quote the proof.
func Verify(proof string, o VerifyOptions) (*Proof, error) {
	if proof == "" {
		return nil, invalid("no proof")
	}
	if len(proof) > MaxProofLength {
		return nil, invalid("the proof is longer than %d bytes", MaxProofLength)
	}
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return nil, invalid("not a compact JWS")
	}
	h, err := headers.parse(parts[0])
	if err != nil {
		return nil, err
	}
	algs := o.Algorithms
	if algs == nil {
		algs = Algorithms()
	}
	if !slices.Contains(algs, h.alg) {
		return nil, invalid("the algorithm is not accepted")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, invalid("the signature is not base64url")
	}
	if !verifySignature(h.pub, h.alg, parts[0]+"."+parts[1], sig) {
		return nil, invalid("the signature is not the key's")
	}

	var c proofClaims
	if err := decodeClaims(parts[1], &c); err != nil {
		return nil, invalid("the claims are not base64url JSON of the right types")
	}
	if c.Method == "" || c.Method != o.Method {
		return nil, invalid("htm is not the request's method")
	}
	if !urlMatches(c.URL, o.URLs) {
		return nil, invalid("htu is not the request's URL")
	}
	if c.ID == "" || len(c.ID) > MaxJTILength {
		return nil, invalid("jti is missing or longer than %d bytes", MaxJTILength)
	}
	// Past MaxInt64 nanoseconds (year 2262) the conversion below would overflow.
	if c.IssuedAt == nil || math.Abs(*c.IssuedAt) > math.MaxInt64/1e9 {
		return nil, invalid("iat is missing or not a time")
	}
	now, maxAge, skew := o.Now, o.MaxAge, o.MaxClockSkew
	if now.IsZero() {
		now = time.Now()
	}
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	if skew <= 0 {
		skew = DefaultMaxClockSkew
	}
	issued := time.Unix(0, int64(*c.IssuedAt*1e9))
	if issued.Before(now.Add(-maxAge)) || issued.After(now.Add(skew)) {
		return nil, invalid("iat is outside the accepted window")
	}
	if o.AccessToken != "" && subtle.ConstantTimeCompare([]byte(c.TokenHash), []byte(TokenHash(o.AccessToken))) != 1 {
		return nil, invalid("ath is not the hash of the access token")
	}
	if o.Nonce != nil {
		if err := o.Nonce(c.Nonce); err != nil {
			if errors.Is(err, ErrUseNonce) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", ErrUseNonce, err)
		}
	}
	return &Proof{JKT: h.jkt, JTI: c.ID, IssuedAt: issued, Until: issued.Add(maxAge)}, nil
}

// decodePart decodes a base64url JWS part holding a JSON object into v, whose members are
// names. JSON names are case-sensitive and encoding/json matches them in any case, so a member
// that is one of names in another case ("TYP") is refused rather than read as it.
func decodePart(part string, v any, names ...string) error {
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return err
	}
	for m := range members {
		for _, n := range names {
			if m != n && strings.EqualFold(m, n) {
				return fmt.Errorf("member %q is not %q", m, n)
			}
		}
	}
	return json.Unmarshal(raw, v)
}

// decodeClaims decodes the claims in one pass over the JSON: the members as raw values, each
// name checked against the claims' in any case (decodePart's rule), then the claims read from
// their members alone.
func decodeClaims(part string, c *proofClaims) error {
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return err
	}
	fields := [...]struct {
		name string
		to   any
	}{{"htm", &c.Method}, {"htu", &c.URL}, {"iat", &c.IssuedAt}, {"jti", &c.ID}, {"nonce", &c.Nonce}, {"ath", &c.TokenHash}}
	for m, v := range members {
		for _, f := range fields {
			if !strings.EqualFold(m, f.name) {
				continue
			}
			if m != f.name {
				return fmt.Errorf("member %q is not %q", m, f.name)
			}
			if err := json.Unmarshal(v, f.to); err != nil {
				return err
			}
		}
	}
	return nil
}

func verifySignature(pub crypto.PublicKey, alg, input string, sig []byte) bool {
	digest := sha256.Sum256([]byte(input))
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if alg != "ES256" || len(sig) != 64 {
			return false
		}
		return ecdsa.Verify(p, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	case *rsa.PublicKey:
		return alg == "RS256" && rsa.VerifyPKCS1v15(p, crypto.SHA256, digest[:], sig) == nil
	case ed25519.PublicKey:
		return alg == "EdDSA" && ed25519.Verify(p, []byte(input), sig)
	}
	return false
}

// urlMatches reports whether htu equals one of urls after normalisation.
func urlMatches(htu string, urls []string) bool {
	got, ok := normalizeURL(htu)
	if !ok {
		return false
	}
	for _, u := range urls {
		if want, ok := normalizeURL(u); ok && want == got {
			return true
		}
	}
	return false
}

// normalizeURL returns scheme://host[:port]/path of an absolute http(s) URL: scheme and host in
// lower case, a default port dropped, an empty path as /, percent-encodings of unreserved
// characters decoded and the others in upper case; query and fragment dropped.
func normalizeURL(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Opaque != "" {
		return "", false
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname())
	if scheme != "http" && scheme != "https" || host == "" {
		return "", false
	}
	if port := u.Port(); port != "" && !(scheme == "http" && port == "80" || scheme == "https" && port == "443") {
		host += ":" + port
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6
	}
	path := normalizePercent(u.EscapedPath())
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, true
}

func normalizePercent(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) {
			b.WriteByte(p[i])
			continue
		}
		v, err := hexByte(p[i+1 : i+3])
		if err != nil {
			b.WriteByte(p[i])
			continue
		}
		if isUnreserved(v) {
			b.WriteByte(v)
		} else {
			b.WriteString(strings.ToUpper(p[i : i+3]))
		}
		i += 2
	}
	return b.String()
}

func hexByte(s string) (byte, error) {
	var v byte
	for _, c := range []byte(s) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		default:
			return 0, errors.New("not hex")
		}
	}
	return v, nil
}

func isUnreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
