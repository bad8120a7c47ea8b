package plugin

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// verify checks its flags, finds the issuer and the CAs to trust, and verifies token. Without
// --issuer it reads both from the install (installLocation), so that a token from kubectl m2m
// token verifies with nothing more than the audience, and never from a client's Secret: whoever
// may edit Secrets in its namespace could name an issuer of theirs there, and verify would
// vouch for tokens they signed.
func (f *commandFlags) verify(ctx context.Context, stdout io.Writer, token string) error {
	switch {
	case len(f.audiences) == 0 && !f.anyAudience:
		return fmt.Errorf("%w: verify needs --audience (the service the token must be for), or --any-audience", errUsage)
	case len(f.audiences) > 0 && f.anyAudience:
		return fmt.Errorf("%w: --audience and --any-audience contradict each other", errUsage)
	case f.client != "" || f.secret != "":
		return fmt.Errorf("%w: verify no longer takes --client or --secret: they trusted the issuer and CA of a credentials Secret, which whoever may edit Secrets in its namespace can change. "+
			"Leave them out: verify reads the install's issuer and CA from ConfigMap %s/%s (--system-namespace), or give --issuer", errUsage, f.systemNamespace, m2mv1alpha1.TokenServerConfigMap)
	}
	var c client.Reader
	if f.issuer == "" {
		_, cluster, _, err := f.cluster()
		if err != nil {
			return err
		}
		c = cluster
	}
	src, err := f.trust(ctx, c)
	if err != nil {
		return err
	}
	return verify(ctx, stdout, token, src, f.scopes, f.audiences)
}

// trust is the issuer that verify trusts and the CA bundles that may sign its certificate:
// --issuer, else the install's (read with c), and --ca-file.
func (f *commandFlags) trust(ctx context.Context, c client.Reader) (tokenServerTrust, error) {
	src := tokenServerTrust{issuer: f.issuer, systemNamespace: f.systemNamespace}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return src, fmt.Errorf("--ca-file: %w", err)
		}
		src.bundles = append(src.bundles, caBundle{"--ca-file " + f.caFile, pem})
	}
	if f.issuer != "" {
		return src, nil
	}
	loc, err := readInstallLocation(ctx, c, f.systemNamespace)
	if err != nil {
		return src, fmt.Errorf("%w; pass --system-namespace with the manager's namespace, or --issuer (and --ca-file for a token server whose CA the system does not trust)", err)
	}
	src.issuer = loc.issuer
	if loc.ca.pem != nil {
		src.bundles = append(src.bundles, loc.ca)
	}
	return src, nil
}

// tokenServerTrust is how verify reaches the token server: its issuer URL, and the CA bundles
// that may sign its certificate besides the system's roots.
type tokenServerTrust struct {
	issuer  string
	bundles []caBundle
	// systemNamespace is where the install's ConfigMap is, for errors.
	systemNamespace string
}

// explain adds to err, when no CA that verify trusts signs the token server's certificate, what
// to pass so that one does.
func (t tokenServerTrust) explain(err error) error {
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		return err
	}
	if len(t.bundles) == 0 {
		return fmt.Errorf("%w: no CA this machine trusts signs the token server's certificate; pass --ca-file with the install's CA bundle (the %s of ConfigMap %s/%s), or leave out --issuer so that verify reads both there",
			err, m2mv1alpha1.SecretKeyCA, t.systemNamespace, m2mv1alpha1.TokenServerConfigMap)
	}
	from := make([]string, 0, len(t.bundles))
	for _, b := range t.bundles {
		from = append(from, b.from)
	}
	return fmt.Errorf("%w: neither the system's roots nor %s sign the token server's certificate", err, strings.Join(from, " nor "))
}

func verify(ctx context.Context, out io.Writer, token string, t tokenServerTrust, scopes, audiences []string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := []m2mauth.VerifierOption{m2mauth.WithAnyAudience()}
	if len(audiences) > 0 {
		opts = []m2mauth.VerifierOption{m2mauth.WithAudiences(audiences...)}
	}
	if len(t.bundles) > 0 {
		hc, err := trustingClient(t.bundles...)
		if err != nil {
			return err
		}
		opts = append(opts, m2mauth.WithHTTPClient(hc))
	}
	v, err := m2mauth.NewVerifier(ctx, t.issuer, opts...)
	if err != nil {
		return t.explain(err)
	}
	defer v.Close()
	if _, err := v.Authenticate(ctx, token, m2mauth.RequiredScopes(scopes...)); err != nil {
		return t.explain(err)
	}
	return printClaims(out, token)
}

// printClaims prints the claims of a verified token as the token carries them (iss, sub, aud,
// exp, scope, client_id, ...), the names resource servers and other JWT tools know them by.
func printClaims(out io.Writer, token string) error {
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return err
	}
	var claims map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber() // exp and iat as the token has them, not as floats
	if err := dec.Decode(&claims); err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(claims)
}
