// Package plugin is `kubectl m2m`: get a token for an M2MClient, rotate its secret, revoke its tokens, describe it,
// verify a token, show why the token server refused the client's requests, find the client of a
// token or client ID, and rotate the signing keys. It follows kubectl's conventions: -n, --context and --kubeconfig, errors on
// stderr, exit code 1 on failure and 2 on bad usage.
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// command is one subcommand of kubectl m2m.
type command struct {
	// name is the word after kubectl m2m.
	name string
	// description is one line, a sentence that says what the command does: the top-level usage
	// lists it beside the name, and the command's --help starts with it.
	description string
	// usage is the command's synopsis.
	usage string
}

// commands are the subcommands, in the order the usage lists them.
var commands = []command{
	{"token", "Print an access token for an M2MClient, got with its Secret's credentials as its pods get one.",
		"kubectl m2m token NAME [-n NS] [--scope S]... [--audience A]... [--service-account SA] [--public | --token-url URL] [-o json]"},
	{"rotate", "Rotate an M2MClient's secret or key now (--revoke-previous: refuse every earlier one at once; --start, then --complete or --cancel: a rotation its holder completes), and wait until the manager has acted.",
		"kubectl m2m rotate NAME [-n NS] [--revoke-previous | --start | --complete | --cancel] [--timeout 2m]"},
	{"revoke", "Revoke every token an M2MClient was issued until now (spec.revokeTokensIssuedBefore): resource servers that verify with pkg/m2mauth refuse them within seconds; its credentials keep working (rotate --revoke-previous refuses those).",
		"kubectl m2m revoke NAME [-n NS]"},
	{"describe", "Show an M2MClient's ID, scopes, audiences, token lifetime, credentials and conditions.",
		"kubectl m2m describe NAME [-n NS]"},
	{"verify", "Verify an access token as a resource server would, and print its claims.",
		"kubectl m2m verify TOKEN [--system-namespace m2m-system | --issuer URL] [--ca-file F] (--audience A... | --any-audience) [--scope S]..."},
	{"why", "Show why the token server recently refused an M2MClient's requests, and what to do about each reason.",
		"kubectl m2m why NAME [-n NS] [--system-namespace m2m-system] [--token-url URL] [--ca-file FILE]"},
	{"whois", "Find the M2MClient of an access token (decoded, not verified) or a client ID, with its state and scopes, and whether the token's key is still published.",
		"kubectl m2m whois TOKEN-OR-CLIENT-ID [-n NS] [--system-namespace m2m-system] [--ca-file FILE]"},
	{"rotate-signing-key", "Rotate the token signing keys now: planned, or --emergency when they may have been copied.",
		"kubectl m2m rotate-signing-key [--emergency] [-n m2m-system] [--secret m2m-signing-keys] [--timeout 2m]"},
}

var usage = func() string {
	var b strings.Builder
	b.WriteString("kubectl m2m: machine-to-machine clients of m2m-operator.\n\nCommands:\n")
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(w, "  %s\t%s\n", c.name, c.description)
	}
	_ = w.Flush()
	b.WriteString("\nUsage:\n")
	for _, c := range commands {
		b.WriteString("  " + c.usage + "\n")
	}
	b.WriteString("\nFlags common to kubectl: -n/--namespace, --context, --kubeconfig.\n" +
		"Run kubectl m2m COMMAND --help for a command's flags.\n")
	return b.String()
}()

// isHelp reports whether arg asks for help, as kubectl's own commands take it.
func isHelp(arg string) bool { return arg == "-h" || arg == "--help" || arg == "help" }

// errUsage marks mistakes in the command line: exit code 2.
var errUsage = errors.New("usage")

// Run runs the plugin with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "error: %v\n\n%s", err, usage)
		return 2
	default:
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: a command is required", errUsage)
	}
	if isHelp(args[0]) {
		if len(args) < 2 {
			_, err := io.WriteString(stdout, usage)
			return err
		}
		// `kubectl m2m help token` is `kubectl m2m token --help`.
		args = []string{args[1], "--help"}
	}
	cmd := args[0]
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == cmd })
	if i < 0 {
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	// Each command registers only the flags it reads, so that its --help lists just those.
	flags := pflag.NewFlagSet("kubectl m2m "+cmd, pflag.ContinueOnError)
	flags.SetOutput(io.Discard)
	f := registerFlags(cmd, flags)
	if err := flags.Parse(args[1:]); errors.Is(err, pflag.ErrHelp) {
		_, err := fmt.Fprintf(stdout, "%s\n\nUsage:\n  %s\n\nFlags:\n%s", commands[i].description, commands[i].usage, flags.FlagUsages())
		return err
	} else if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	rest := flags.Args()
	if cmd == "rotate-signing-key" {
		return f.rotateSigningKey(ctx, stdout, rest)
	}
	if len(rest) != 1 {
		return fmt.Errorf("%w: %s takes exactly one argument", errUsage, cmd)
	}
	if cmd == "verify" {
		return f.verify(ctx, stdout, rest[0])
	}
	if _, err := f.holderStep(); err != nil {
		return err
	}
	return f.runOnCluster(ctx, cmd, stdout, rest[0])
}

// commandFlags are the values of every command's flags; each command registers only its own.
type commandFlags struct {
	kube                     *genericclioptions.ConfigFlags
	scopes, audiences        []string
	tokenURL, output, issuer string
	timeout                  time.Duration
	anyAudience              bool
	public                   bool
	serviceAccount           string
	emergency                bool
	revokePrevious           bool
	start, complete, cancel  bool
	client, secret, caFile   string
	systemNamespace          string
}

// registerFlags registers the flags of cmd on flags and returns where their values go.
func registerFlags(cmd string, flags *pflag.FlagSet) *commandFlags {
	f := &commandFlags{kube: genericclioptions.NewConfigFlags(true)}
	f.kube.AddFlags(flags)
	switch cmd {
	case "token":
		flags.StringArrayVar(&f.scopes, "scope", nil, "scope to request (repeatable)")
		flags.StringArrayVar(&f.audiences, "audience", nil, "audience to request (repeatable)")
		flags.StringVar(&f.tokenURL, "token-url", "", "token endpoint, instead of the Secret's token_url")
		registerPublicFlag(f, flags, "the Secret's")
		flags.StringVar(&f.serviceAccount, "service-account", "", "authenticate as this ServiceAccount of the client's namespace (a token from the TokenRequest API), instead of with the Secret's client secret or key pair")
		registerSystemNamespaceFlag(f, flags, "token --service-account")
		flags.StringVarP(&f.output, "output", "o", "", "json prints the whole token response")
	case "rotate":
		flags.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the new secret")
		flags.BoolVar(&f.revokePrevious, "revoke-previous", false, "stop accepting every earlier secret or key at once, instead of after the grace period (after a leak); pods that still hold one are refused until they read the Secret again")
		flags.BoolVar(&f.start, "start", false, "start a rotation that the credential's holder completes: a next credential goes into the Secret under next_client_secret (next_private_key) and both are accepted until --complete or --cancel")
		flags.BoolVar(&f.complete, "complete", false, "complete the started rotation: the next credential becomes the only one and the previous one is refused at once")
		flags.BoolVar(&f.cancel, "cancel", false, "cancel the started rotation: the next credential is refused and the current one stays")
	case "rotate-signing-key":
		registerSigningKeyFlags(f, flags)
	case "verify":
		registerSystemNamespaceFlag(f, flags, "verify")
		flags.StringVar(&f.issuer, "issuer", "", "issuer URL, instead of the install's; verify then reads nothing from the cluster")
		flags.StringVar(&f.caFile, "ca-file", "", "PEM CA bundle to trust for the token server's certificate, besides the system's roots and the install's ca.crt")
		// Removed: they trusted a credentials Secret, which tenants can write. Kept hidden so
		// that a script that passes them learns why, rather than of an unknown flag.
		flags.StringVar(&f.client, "client", "", "")
		flags.StringVar(&f.secret, "secret", "", "")
		_ = flags.MarkHidden("client")
		_ = flags.MarkHidden("secret")
		flags.StringArrayVar(&f.scopes, "scope", nil, "scope the token must have (repeatable)")
		flags.StringArrayVar(&f.audiences, "audience", nil, "audience the token must be for; repeated, any of them (required unless --any-audience)")
		flags.BoolVar(&f.anyAudience, "any-audience", false, "accept a token for any audience")
	case "why":
		registerSystemNamespaceFlag(f, flags, "why")
		flags.StringVar(&f.tokenURL, "token-url", "", "token endpoint, instead of the install's token_url")
		flags.StringVar(&f.caFile, "ca-file", "", "PEM CA bundle that signs the token server's certificate, instead of the install's ca.crt")
	case "whois":
		registerSystemNamespaceFlag(f, flags, "whois")
		flags.StringVar(&f.caFile, "ca-file", "", "PEM CA bundle to trust for the token server's certificate when fetching its JWKS, besides the system's roots and the install's ca.crt")
	}
	return f
}

// runOnCluster runs a command on the M2MClient name of the kubeconfig's namespace.
func (f *commandFlags) runOnCluster(ctx context.Context, cmd string, stdout io.Writer, name string) error {
	cfg, c, ns, err := f.cluster()
	if err != nil {
		return err
	}
	key := types.NamespacedName{Namespace: ns, Name: name}
	switch cmd {
	case "token":
		return token(ctx, c, stdout, key, f)
	case "rotate":
		step, err := f.holderStep()
		if err != nil {
			return err
		}
		if err := rotatedByTheManager(ctx, c, key); err != nil {
			return err
		}
		if step != "" {
			return rotateHolder(ctx, c, stdout, key, step, f.timeout)
		}
		if f.revokePrevious {
			return revoke(ctx, c, stdout, key, f.timeout)
		}
		return rotate(ctx, c, stdout, key, f.timeout)
	case "revoke":
		return revokeTokens(ctx, c, stdout, key, clusterNow(ctx, cfg, time.Now()))
	case "describe":
		return describe(ctx, c, stdout, key)
	case "why":
		return why(ctx, cfg, c, stdout, key, f.systemNamespace, f.tokenURL, f.caFile)
	case "whois":
		// name is the token or client ID; ns is searched only when the caller may not list
		// M2MClients in every namespace.
		return whois(ctx, c, stdout, name, ns, f.systemNamespace, f.caFile, time.Now())
	}
	panic("unreachable: commands lists " + cmd + " but run does not handle it")
}

// cluster is the kubeconfig's cluster (its config and a client) and namespace (-n).
func (f *commandFlags) cluster() (*rest.Config, client.Client, string, error) {
	cfg, err := f.kube.ToRESTConfig()
	if err != nil {
		return nil, nil, "", err
	}
	ns, _, err := f.kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	return cfg, c, ns, err
}

func getClient(ctx context.Context, c client.Client, key types.NamespacedName) (*m2mv1alpha1.M2MClient, error) {
	obj := &m2mv1alpha1.M2MClient{}
	if err := c.Get(ctx, key, obj); err != nil {
		return nil, fmt.Errorf("M2MClient %s: %w", key, err)
	}
	return obj, nil
}

// token prints a token for key's client, got as its pods get one, with the token command's flags f.
func token(ctx context.Context, c client.Client, out io.Writer, key types.NamespacedName, f *commandFlags) error {
	scopes, audiences, output, serviceAccount := f.scopes, f.audiences, f.output, f.serviceAccount
	tokenURL, givenTokenURL := f.tokenURL, f.tokenURL
	if f.public && tokenURL != "" {
		return errPublicAndTokenURL
	}
	obj, err := getClient(ctx, c, key)
	if err != nil {
		return err
	}
	if obj.Status.SecretName == "" {
		return fmt.Errorf("M2MClient %s has no credentials yet (see kubectl m2m describe %s)", key, key.Name)
	}
	s := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: obj.Status.SecretName}, s); err != nil {
		return fmt.Errorf("reading Secret %s: %w", obj.Status.SecretName, err)
	}
	if tokenURL == "" {
		if tokenURL, err = urlOf(s.Data, f.public, "Secret "+obj.Status.SecretName); err != nil {
			return err
		}
	}
	if bundle := s.Data[m2mv1alpha1.SecretKeyCA]; len(bundle) > 0 {
		// The manager's CA signs the token server's certificate: trust it, as pods do.
		hc, err := trustingClient(caBundle{"the ca.crt of Secret " + obj.Status.SecretName, bundle})
		if err != nil {
			return err
		}
		ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	}
	cc := clientcredentials.Config{
		ClientID:       string(s.Data[m2mv1alpha1.SecretKeyClientID]),
		ClientSecret:   string(s.Data[m2mv1alpha1.SecretKeyClientSecret]),
		TokenURL:       tokenURL,
		Scopes:         scopes,
		EndpointParams: url.Values{"audience": audiences},
	}
	if pemKey := s.Data[m2mv1alpha1.SecretKeyPrivateKey]; len(pemKey) > 0 && serviceAccount == "" {
		// A generated key pair: an assertion signed with the key, as the pod would send.
		key, _, err := jwk.ParsePrivateKeyPEM(pemKey)
		if err != nil {
			return fmt.Errorf("the private_key in Secret %s: %w", obj.Status.SecretName, err)
		}
		ts, err := m2mauth.NewPrivateKeyTokenSource(ctx, m2mauth.PrivateKeyClient{
			ClientID: cc.ClientID, TokenURL: tokenURL, Issuer: string(s.Data[m2mv1alpha1.SecretKeyIssuer]), Key: key},
			m2mauth.Scopes(scopes...), m2mauth.Audiences(audiences...))
		if err != nil {
			return err
		}
		return printToken(out, ts, output)
	}
	if serviceAccount != "" {
		// What a pod running as the ServiceAccount would send: a token for the issuer, from the
		// TokenRequest API, as the client assertion. The caller mints that token, so its
		// audience, where it goes and whom to trust come from the install's ConfigMap, never
		// from the client's Secret, which tenants can write.
		loc, err := readInstallLocation(ctx, c, f.systemNamespace)
		if err != nil {
			return fmt.Errorf("%w; --service-account sends a token minted for you only to the install's token server", err)
		}
		if givenTokenURL == "" {
			if cc.TokenURL, err = loc.url(f.public); err != nil {
				return err
			}
		}
		if !strings.HasPrefix(cc.TokenURL, "https://") && !issuer.Loopback(cc.TokenURL) {
			return fmt.Errorf("the token server %s is plain http: a ServiceAccount token goes only over https or to a loopback address", cc.TokenURL)
		}
		var bundles []caBundle
		if loc.ca.pem != nil {
			bundles = append(bundles, loc.ca)
		}
		hc, err := trustingClient(bundles...)
		if err != nil {
			return err
		}
		ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: serviceAccount}}
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: []string{loc.issuer}, ExpirationSeconds: ptr.To[int64](600)}}
		if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
			return fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", key.Namespace, serviceAccount, err)
		}
		cc.ClientSecret, cc.AuthStyle = "", oauth2.AuthStyleInParams
		cc.EndpointParams.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		cc.EndpointParams.Set("client_assertion", tr.Status.Token)
	} else if cc.ClientSecret == "" {
		return fmt.Errorf("Secret %s has neither client_secret nor private_key: M2MClient %s authenticates with a ServiceAccount; run kubectl m2m token %s --service-account SA, with one of its spec.authentication.serviceAccounts",
			obj.Status.SecretName, key, key.Name)
	}
	return printToken(out, cc.TokenSource(ctx), output)
}

// printToken gets a token from ts and prints it: the access token alone, or with -o json the
// response's fields.
func printToken(out io.Writer, ts oauth2.TokenSource, output string) error {
	if output != "" && output != "json" {
		return fmt.Errorf("%w: -o %s is not supported; use -o json", errUsage, output)
	}
	tok, err := ts.Token()
	if err != nil {
		return err
	}
	if output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{
			"access_token": tok.AccessToken, "token_type": tok.TokenType,
			"expires_in": int(time.Until(tok.Expiry).Round(time.Second) / time.Second), "scope": tok.Extra("scope"),
		})
	}
	_, err = fmt.Fprintln(out, tok.AccessToken)
	return err
}

func describe(ctx context.Context, c client.Client, out io.Writer, key types.NamespacedName) error {
	obj, err := getClient(ctx, c, key)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	scopes := make([]string, 0, len(obj.Spec.Scopes))
	for _, s := range obj.Spec.Scopes {
		scopes = append(scopes, string(s))
	}
	fmt.Fprintf(w, "Name:\t%s/%s\n", obj.Namespace, obj.Name)
	fmt.Fprintf(w, "Client ID:\t%s\n", obj.Status.ClientID)
	fmt.Fprintf(w, "State:\t%s\n", obj.Status.State)
	fmt.Fprintf(w, "Scopes:\t%s\n", strings.Join(scopes, " "))
	fmt.Fprintf(w, "Audiences:\t%s\n", describedAudiences(ctx, c, obj))
	fmt.Fprintf(w, "Token lifetime:\t%s\n", describedTokenTTL(obj))
	fmt.Fprintf(w, "Secret:\t%s\n", obj.Status.SecretName)
	last, next := "-", "-"
	if t := obj.Status.LastRotationTime; t != nil {
		last = t.UTC().Format(time.RFC3339)
	}
	if t := obj.Status.NextRotationTime; t != nil {
		next = t.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "Last rotation:\t%s\n", last)
	fmt.Fprintf(w, "Next rotation:\t%s\n", next)
	if t := obj.Status.LastRevocationTime; t != nil {
		fmt.Fprintf(w, "Last revocation:\t%s\n", t.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "Accepted credentials:\n  CREDENTIAL\tCREATED\tEXPIRES\n")
	for _, e := range obj.Status.AcceptedSecrets {
		expires := "never (current)"
		if st := obj.Status.HolderRotation; st != nil && st.State == m2mv1alpha1.HolderRotationStarted && e.Hash == st.NextHash && e.ExpiresAt == nil {
			expires = "never (next: rotation " + st.ID + " started, in the Secret under " + m2mv1alpha1.NextSecretKeyPrefix + "*)"
		}
		if e.ExpiresAt != nil {
			expires = e.ExpiresAt.UTC().Format(time.RFC3339)
		}
		what := "secret ..." + e.LastFour
		if k := e.PublicKey; k != nil {
			what = k.Algorithm + " key " + k.KeyID
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\n", what, e.CreatedAt.UTC().Format(time.RFC3339), expires)
	}
	fmt.Fprintf(w, "Conditions:\n  TYPE\tSTATUS\tREASON\tMESSAGE\n")
	for _, cond := range obj.Status.Conditions {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
	}
	return w.Flush()
}
