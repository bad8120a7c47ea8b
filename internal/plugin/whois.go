package plugin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/httpjson"
)

// clientIDField is the selectable field of M2MClients that holds their client ID.
const clientIDField = "status.clientID"

// maxWhoisArgument bounds what whois decodes: the token server's tokens are a few hundred bytes,
// and whois must not spend memory on whatever is pasted into it.
const maxWhoisArgument = 16 << 10

// clientIDPattern is the CRD's pattern for client IDs (status.clientID), with its length.
var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,128}$`)

// unverifiedToken is what whois reads in a token without checking its signature: nothing in it
// may be trusted, so whois fetches nothing from the URLs it names.
type unverifiedToken struct {
	issuer, keyID string
	// expires is nil when the token has no exp.
	expires *time.Time
}

// whoisSubject is whois's argument: a client ID, or a token and the client ID it names.
type whoisSubject struct {
	clientID string
	// token is nil when the argument is a client ID.
	token *unverifiedToken
}

// parseWhoisArgument decides whether arg is a JWT or a client ID, and reads the token's claims
// without verifying it. A client ID may hold two dots, so arg is a token only when its first
// part decodes to a JOSE header.
func parseWhoisArgument(arg string) (whoisSubject, error) {
	if len(arg) > maxWhoisArgument {
		return whoisSubject{}, fmt.Errorf("the argument is %d bytes: neither a client ID nor a token of the token server is longer than %d", len(arg), maxWhoisArgument)
	}
	parts := strings.Split(arg, ".")
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if len(parts) != 3 || decodeSegment(parts[0], &header) != nil || header.Alg == "" {
		if !clientIDPattern.MatchString(arg) {
			return whoisSubject{}, fmt.Errorf("%q is neither a JWT nor a client ID (1 to 128 of A-Z a-z 0-9 . _ ~ -)", arg)
		}
		return whoisSubject{clientID: arg}, nil
	}
	var claims struct {
		Issuer   string       `json:"iss"`
		Expires  *json.Number `json:"exp"`
		ClientID any          `json:"client_id"`
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return whoisSubject{}, fmt.Errorf("the argument has a JWT header but its payload is not base64url-encoded JSON: %w", err)
	}
	id, _ := claims.ClientID.(string)
	if !clientIDPattern.MatchString(id) {
		return whoisSubject{}, fmt.Errorf("the token has no client_id claim that is a client ID (it has %q): it is not an access token of m2m-operator's token server", fmt.Sprint(claims.ClientID))
	}
	tok := &unverifiedToken{issuer: claims.Issuer, keyID: header.Kid}
	if claims.Expires != nil {
		sec, err := claims.Expires.Float64()
		if err != nil || math.IsNaN(sec) || math.IsInf(sec, 0) || math.Abs(sec) > 1<<40 {
			return whoisSubject{}, fmt.Errorf("the token's exp %s is not a time in seconds", claims.Expires)
		}
		exp := time.Unix(int64(sec), 0).UTC()
		tok.expires = &exp
	}
	return whoisSubject{clientID: id, token: tok}, nil
}

// decodeSegment decodes one base64url part of a JWT into v.
func decodeSegment(seg string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}

// whoisSearch is where whois looked for the client and what it found.
type whoisSearch struct {
	// clients are the M2MClients whose status.clientID is the ID.
	clients []m2mv1alpha1.M2MClient
	// namespace is "" when whois searched every namespace, else the one it searched.
	namespace string
	// binding is the ID's ClientIDBinding, read only when no client was found; nil when there is
	// none or the caller may not read it (bindingErr says why).
	binding    *m2mv1alpha1.ClientIDBinding
	bindingErr error
}

// where says where whois searched, for its output.
func (s whoisSearch) where() string {
	if s.namespace == "" {
		return "all namespaces"
	}
	return "namespace " + s.namespace + " only (you may not list M2MClients in all namespaces; -n chooses another)"
}

// findClient finds the M2MClients of id with the field selector on status.clientID: in every
// namespace, or in ns when the caller may not list them all. When it finds none it reads the
// ID's ClientIDBinding, which administrators may read and which outlives a deleted client.
// whois never reads Secrets.
func findClient(ctx context.Context, c client.Reader, id, ns string) (whoisSearch, error) {
	sel := client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector(clientIDField, id)}
	list := &m2mv1alpha1.M2MClientList{}
	s := whoisSearch{}
	err := c.List(ctx, list, sel)
	if apierrors.IsForbidden(err) {
		s.namespace = ns
		err = c.List(ctx, list, sel, client.InNamespace(ns))
	}
	if apierrors.IsBadRequest(err) && strings.Contains(err.Error(), "field label not supported") {
		return s, fmt.Errorf("the API server does not select M2MClients by %s (%w): their CRD is older than this kubectl m2m (upgrade m2m-operator's CRDs), or Kubernetes is older than 1.32", clientIDField, err)
	}
	if err != nil {
		return s, fmt.Errorf("listing M2MClients with --field-selector %s=%s in %s: %w", clientIDField, id, s.where(), err)
	}
	s.clients = list.Items
	if len(s.clients) > 0 {
		return s, nil
	}
	b := &m2mv1alpha1.ClientIDBinding{}
	if err := c.Get(ctx, types.NamespacedName{Name: m2mv1alpha1.ClientIDBindingName(id)}, b); err != nil {
		s.bindingErr = err
	} else if b.Spec.ClientID == id {
		s.binding = b
	}
	return s, nil
}

// tokenServerKeys fetches the key IDs that the install's token server publishes: the jwks_uri
// of the metadata under its issuer, which the install's ConfigMap names; never the token's iss.
func tokenServerKeys(ctx context.Context, hc *http.Client, issuer string) (map[string]bool, error) {
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := httpjson.Get(ctx, hc, issuer+"/.well-known/oauth-authorization-server", &meta); err != nil {
		return nil, err
	}
	if strings.HasPrefix(issuer, "https://") && !strings.HasPrefix(meta.JWKSURI, "https://") {
		return nil, fmt.Errorf("the metadata of %s names a jwks_uri that is not https: %q", issuer, meta.JWKSURI)
	}
	var set struct {
		Keys []struct {
			KeyID string `json:"kid"`
		} `json:"keys"`
	}
	if err := httpjson.Get(ctx, hc, meta.JWKSURI, &set); err != nil {
		return nil, err
	}
	kids := map[string]bool{}
	for _, k := range set.Keys {
		kids[k.KeyID] = true
	}
	return kids, nil
}

// keyPublished says whether the token's key is in the install's JWKS, or why whois could not
// tell: the install's issuer and CA come from its ConfigMap in systemNS (installLocation).
func keyPublished(ctx context.Context, c client.Reader, tok *unverifiedToken, systemNS, caFile string) string {
	if tok.keyID == "" {
		return "the token has no kid"
	}
	loc, err := readInstallLocation(ctx, c, systemNS)
	if err != nil {
		return fmt.Sprintf("not checked: %v; pass --system-namespace with the manager's namespace", err)
	}
	if strings.TrimSuffix(tok.issuer, "/") != strings.TrimSuffix(loc.issuer, "/") {
		return "not checked: the token's issuer is not this install's (" + loc.issuer + "), and whois fetches keys only from the install's"
	}
	bundles, err := caBundles(loc.ca, caFile)
	if err != nil {
		return "not checked: " + err.Error()
	}
	hc, err := trustingClient(bundles...)
	if err != nil {
		return "not checked: " + err.Error()
	}
	kids, err := tokenServerKeys(ctx, hc, strings.TrimSuffix(loc.issuer, "/"))
	switch {
	case err != nil:
		return "not checked: " + err.Error()
	case kids[tok.keyID]:
		return "published in the install's JWKS"
	}
	return "NOT published in the install's JWKS (any more): resource servers refuse the token"
}

// caBundles are the install's CA, if it publishes one, and --ca-file.
func caBundles(install caBundle, caFile string) ([]caBundle, error) {
	var bundles []caBundle
	if install.pem != nil {
		bundles = append(bundles, install)
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		bundles = append(bundles, caBundle{"--ca-file " + caFile, pem})
	}
	return bundles, nil
}

// expiry says when the token expires, relative to now.
func expiry(exp *time.Time, now time.Time) string {
	if exp == nil {
		return "never (the token has no exp)"
	}
	at := exp.UTC().Format(time.RFC3339)
	if d := exp.Sub(now).Round(time.Second); d > 0 {
		return fmt.Sprintf("%s (in %s)", at, d)
	}
	return fmt.Sprintf("%s (EXPIRED %s ago)", at, now.Sub(*exp).Round(time.Second))
}

// readiness is the Ready condition of obj, as whois prints it.
func readiness(obj *m2mv1alpha1.M2MClient) string {
	cond := apimeta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady)
	if cond == nil {
		return "Unknown (no Ready condition yet: the manager has not reconciled the client)"
	}
	if cond.Message == "" {
		return fmt.Sprintf("%s (%s)", cond.Status, cond.Reason)
	}
	return fmt.Sprintf("%s (%s: %s)", cond.Status, cond.Reason, cond.Message)
}

// errNoClient is whois's answer when nothing has the ID.
var errNoClient = errors.New("no M2MClient has client ID")

// whois prints who holds arg: the M2MClient whose client ID it is, or whose client ID the token
// names, and for a token what it claims and whether its key is still published.
func whois(ctx context.Context, c client.Reader, out io.Writer, arg, ns, systemNS, caFile string, now time.Time) error {
	subject, err := parseWhoisArgument(arg)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if tok := subject.token; tok != nil {
		fmt.Fprintf(w, "Token:\tdecoded WITHOUT verifying its signature: anyone can write these claims (kubectl m2m verify checks it)\n")
		fmt.Fprintf(w, "Issuer:\t%s\n", printable(tok.issuer))
		fmt.Fprintf(w, "Expires:\t%s\n", expiry(tok.expires, now))
		fmt.Fprintf(w, "Key ID:\t%s: %s\n", printable(tok.keyID), keyPublished(ctx, c, tok, systemNS, caFile))
	}
	fmt.Fprintf(w, "Client ID:\t%s\n", subject.clientID)
	s, err := findClient(ctx, c, subject.clientID, ns)
	if err != nil {
		_ = w.Flush()
		return err
	}
	switch {
	case len(s.clients) > 0:
		fmt.Fprintf(w, "Found by:\t--field-selector %s=%s in %s\n", clientIDField, subject.clientID, s.where())
		for i := range s.clients {
			obj := &s.clients[i]
			scopes := make([]string, 0, len(obj.Spec.Scopes))
			for _, sc := range obj.Spec.Scopes {
				scopes = append(scopes, string(sc))
			}
			state := string(obj.Status.State)
			if obj.Spec.Disabled {
				state += " (spec.disabled: the token server issues it no tokens)"
			}
			fmt.Fprintf(w, "Namespace:\t%s\n", obj.Namespace)
			fmt.Fprintf(w, "Name:\t%s\n", obj.Name)
			fmt.Fprintf(w, "Ready:\t%s\n", readiness(obj))
			fmt.Fprintf(w, "State:\t%s\n", state)
			fmt.Fprintf(w, "Scopes:\t%s\n", strings.Join(scopes, " "))
		}
		return w.Flush()
	case s.binding != nil:
		fmt.Fprintf(w, "Found by:\tClientIDBinding %s (no M2MClient in %s has the ID: the client was deleted, or has not taken its ID yet)\n", s.binding.Name, s.where())
		fmt.Fprintf(w, "Namespace:\t%s\n", s.binding.Spec.Namespace)
		fmt.Fprintf(w, "Name:\t%s\n", s.binding.Spec.Name)
		return w.Flush()
	}
	if err := w.Flush(); err != nil {
		return err
	}
	why := "and it has no ClientIDBinding"
	switch {
	case apierrors.IsForbidden(s.bindingErr):
		why = "and you may not read ClientIDBindings, which would name a deleted client's namespace and name; an administrator can: kubectl get m2mbinding " + m2mv1alpha1.ClientIDBindingName(subject.clientID)
	case s.bindingErr != nil && !apierrors.IsNotFound(s.bindingErr):
		why = fmt.Sprintf("and its ClientIDBinding could not be read: %v", s.bindingErr)
	}
	return fmt.Errorf("%w %s in %s, %s", errNoClient, subject.clientID, s.where(), why)
}

// printable is s as it is, or quoted when it holds a control or other unprintable character: the
// claims of a token whois has not verified must not write lines of their own, or escape codes,
// into what an on-call engineer reads.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}
