package v1alpha1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/m2m-dev/m2m-operator/internal/placeholder"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// TokenClaims are static claims by name, for example {"team": "billing", "tier": 1}. A name that
// equals a reserved claim ignoring case (ReservedClaims) is refused: decoders that match names
// ignoring case, such as Go's encoding/json, would read it as the reserved claim. The rule's
// list is ReservedClaims; a test keeps the two equal.
// +kubebuilder:validation:MaxProperties=64
type TokenClaims map[string]apiextensionsv1.JSON

// ReservedClaims are the claim names that tokenClaims may not use, in any case: the registered
// claims of RFC 7519 §4.1, those of RFC 9068 (client_id, scope, auth_time, acr, amr), those this
// server sets or will set for sender-constrained and delegated tokens (cnf of RFC 8705/9449, act
// and may_act of RFC 8693, azp), and names that verifiers read with a meaning (sid, nonce, typ,
// token_type, client_assertion).
var ReservedClaims = []string{
	"iss", "sub", "aud", "exp", "nbf", "iat", "jti",
	"client_id", "scope",
	"cnf", "act", "may_act", "azp",
	"auth_time", "acr", "amr",
	"sid", "nonce", "typ", "token_type", "client_assertion",
}

// GuardedClaims are claim names that resource servers read with a meaning, as authorization or
// as the caller's identity: Azure's scp, roles, groups, wids, oid, tid and upn, permissions,
// entitlements and Spring's authorities, Keycloak's realm_access, resource_access and clientId,
// Cognito's groups, Okta's cid, Azure v1's appid, and the OpenID Connect identity claims
// preferred_username and email (compared ignoring case, as IsReservedClaim compares). No list of
// names can be complete: resource servers should authorise on scope, which no client sets. A client's tokenClaims may set them only where an administrator allows them with the
// namespace annotation AllowedClaimsAnnotation (admission policy m2m-guarded-token-claims, whose
// list a test keeps equal to this one). Unlike ReservedClaims, the token server does not drop
// them: it reads no Namespaces, so it cannot know what an administrator allowed.
var GuardedClaims = []string{"scp", "roles", "groups", "permissions", "entitlements", "authorities", "realm_access", "resource_access",
	"cognito:groups", "wids", "cid", "appid", "clientid", "oid", "tid", "upn", "preferred_username", "email"}

// claimFolds maps the non-ASCII letters that decoders fold into ASCII ones; the token server asks
// IsReservedClaim for every custom claim of every token, so it is built once.
var claimFolds = strings.NewReplacer("ſ", "s", "\u212a", "k", "ı", "i", "İ", "i")

// IsReservedClaim reports whether name equals a reserved claim ignoring case, including the
// non-ASCII letters that some decoders fold into ASCII ones: Go's encoding/json folds "ſ" (long s)
// to "s" and the Kelvin sign "K" to "k"; Java's equalsIgnoreCase folds "ı" and "İ" to "i".
func IsReservedClaim(name string) bool {
	folded := strings.ToLower(claimFolds.Replace(name))
	for _, r := range ReservedClaims {
		if folded == r {
			return true
		}
	}
	return false
}

// MaxTokenClaimsBytes bounds the JSON encoding of a client's tokenClaims. Claim values are
// free-form JSON, whose size neither the schema nor CEL can bound, so the manager reports a client
// over it as not Ready (ReasonClaimsTooLarge) and the token server keeps its claims out of its
// cache and issues it no token. 4 KiB of claims keep a token within the 8 KiB header that proxies
// commonly accept, with room for the registered claims and the signature.
const MaxTokenClaimsBytes = 4096

// TooLarge reports whether c's JSON encoding is over MaxTokenClaimsBytes.
func (c TokenClaims) TooLarge() bool {
	if len(c) == 0 {
		return false
	}
	raw, err := json.Marshal(c)
	return err != nil || len(raw) > MaxTokenClaimsBytes
}

// ErrTokenClaimsTooLarge is RenderTokenClaims' error for claims that encode, rendered, to more
// than MaxTokenClaimsBytes.
var ErrTokenClaimsTooLarge = errors.New("spec.tokenClaims encode to more than the bound")

// RenderTokenClaims returns spec.tokenClaims with each top-level string value that holds a "${"
// read as a placeholder template ("${name}" for the trustedMetadata entry name, "$$" for "$";
// strings without "${" are issued as written, as before templates existed), and with
// every other value (number, boolean, null, list, object, and the strings inside lists and
// objects) as it is: only a whole claim is templated, so its shape stays what the tenant wrote.
// A metadata entry stands for its string, or for the JSON text of a number or boolean; one that
// is missing, null, a list or an object is no value, and the claims fail to render. Claims
// without a template are returned as they are, unencoded. The rendered claims are bounded as
// written claims are (ErrTokenClaimsTooLarge): a short template can repeat a long value.
func (s *M2MClientSpec) RenderTokenClaims() (TokenClaims, error) {
	var out TokenClaims
	values := map[string]string(nil)
	for name, raw := range s.TokenClaims {
		tpl, ok := templateOf(raw.Raw)
		if !ok {
			continue
		}
		if values == nil {
			values = metadataValues(s.TrustedMetadata)
		}
		rendered, err := placeholder.Render(tpl, values, MaxTokenClaimsBytes)
		if errors.Is(err, placeholder.ErrNoValue) {
			return nil, fmt.Errorf("spec.tokenClaims.%s: %w: spec.trustedMetadata has no string, number or boolean of that name", name, err)
		} else if errors.Is(err, placeholder.ErrTooLarge) {
			return nil, fmt.Errorf("spec.tokenClaims.%s: %w", name, ErrTokenClaimsTooLarge)
		} else if err != nil {
			return nil, fmt.Errorf("spec.tokenClaims.%s: %w", name, err)
		}
		if out == nil {
			out = make(TokenClaims, len(s.TokenClaims))
			for n, v := range s.TokenClaims {
				out[n] = v
			}
		}
		enc, _ := json.Marshal(rendered) // a string always encodes
		out[name] = apiextensionsv1.JSON{Raw: enc}
	}
	if out == nil {
		out = s.TokenClaims
	}
	if out.TooLarge() {
		return nil, ErrTokenClaimsTooLarge
	}
	return out, nil
}

// templateOf returns the string of a JSON string value that holds a "${", the only ones read as
// templates: a claim written before templates existed ("costs $5") is issued as it was.
func templateOf(raw []byte) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' || !bytes.ContainsRune(raw, '$') {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil || !strings.Contains(s, "${") {
		return "", false
	}
	return s, true
}

// metadataValues are the trustedMetadata entries a template can name, as the text they stand for.
func metadataValues(metadata map[string]apiextensionsv1.JSON) map[string]string {
	values := make(map[string]string, len(metadata))
	for name, raw := range metadata {
		var v any
		if json.Unmarshal(raw.Raw, &v) != nil {
			continue
		}
		switch v := v.(type) {
		case string:
			values[name] = v
		case bool, float64:
			values[name] = strings.TrimSpace(string(raw.Raw))
		}
	}
	return values
}
