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

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// verify checks its flags, finds the issuer and the CAs to trust, and verifies token. With
// --client or --secret it reads both from that Secret, as the client's pods have them, so that a
// token from kubectl m2m token verifies with nothing more than the audience.
func (f *commandFlags) verify(ctx context.Context, stdout io.Writer, token string) error {
	switch {
	case len(f.audiences) == 0 && !f.anyAudience:
		return fmt.Errorf("%w: verify needs --audience (the service the token must be for), or --any-audience", errUsage)
	case len(f.audiences) > 0 && f.anyAudience:
		return fmt.Errorf("%w: --audience and --any-audience contradict each other", errUsage)
	case f.client != "" && f.secret != "":
		return fmt.Errorf("%w: --client and --secret each name the Secret to read; give one", errUsage)
	case f.issuer == "" && f.client == "" && f.secret == "":
		return fmt.Errorf("%w: verify needs --client NAME (the M2MClient whose Secret names the issuer and its CA), --secret NAME, or --issuer URL", errUsage)
	}
	src := tokenServerTrust{issuer: f.issuer}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		src.bundles = append(src.bundles, caBundle{"--ca-file " + f.caFile, pem})
	}
	if f.client != "" || f.secret != "" {
		_, c, ns, err := f.cluster()
		if err != nil {
			return err
		}
		if err := src.readSecret(ctx, c, ns, f.client, f.secret); err != nil {
			return err
		}
	}
	return verify(ctx, stdout, token, src, f.scopes, f.audiences)
}

// tokenServerTrust is how verify reaches the token server: its issuer URL, and the CA bundles
// that may sign its certificate besides the system's roots.
type tokenServerTrust struct {
	issuer  string
	bundles []caBundle
}

// readSecret takes the issuer (unless one was given) and the ca.crt of the credentials Secret of
// the M2MClient clientName, or of the Secret secretName, in namespace ns.
func (t *tokenServerTrust) readSecret(ctx context.Context, c client.Client, ns, clientName, secretName string) error {
	if clientName != "" {
		obj, err := getClient(ctx, c, types.NamespacedName{Namespace: ns, Name: clientName})
		if err != nil {
			return err
		}
		if obj.Status.SecretName == "" {
			return fmt.Errorf("M2MClient %s/%s has no credentials yet (see kubectl m2m describe %s)", ns, clientName, clientName)
		}
		secretName = obj.Status.SecretName
	}
	s := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: secretName}, s); err != nil {
		return fmt.Errorf("reading Secret %s/%s: %w", ns, secretName, err)
	}
	if t.issuer == "" {
		if t.issuer = string(s.Data[m2mv1alpha1.SecretKeyIssuer]); t.issuer == "" {
			return fmt.Errorf("Secret %s/%s has no issuer: name the credentials Secret of an M2MClient, or pass --issuer", ns, secretName)
		}
	}
	if ca := s.Data[m2mv1alpha1.SecretKeyCA]; len(ca) > 0 {
		t.bundles = append(t.bundles, caBundle{"the ca.crt of Secret " + ns + "/" + secretName, ca})
	}
	return nil
}

// explain adds to err, when no CA that verify trusts signs the token server's certificate, what
// to pass so that one does.
func (t tokenServerTrust) explain(err error) error {
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		return err
	}
	if len(t.bundles) == 0 {
		return fmt.Errorf("%w: no CA this machine trusts signs the token server's certificate; pass --client NAME (and -n) so that the ca.crt of the client's Secret is used, or --ca-file with that ca.crt", err)
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
