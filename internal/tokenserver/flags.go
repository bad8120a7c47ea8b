package tokenserver

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"strings"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// ParseArgs parses the token server's command line (without the program name) into Options.
// Flags that belong to others, such as logging, are registered on fs by the caller first. The
// manifests in config/ and the chart are checked by parsing their args with it.
func ParseArgs(fs *flag.FlagSet, args []string) (Options, error) {
	var o Options
	var namespaces, keySecret string
	fs.StringVar(&o.IssuerURL, "issuer-url", "", "The issuer URL (required). Every URL the server advertises derives from it.")
	fs.StringVar(&o.InClusterURL, "in-cluster-url", "", "Where pods reach this server (its Service), when that is not the issuer, as with a public door under the issuer's name: metadata fetched there names endpoints under it. Empty means the issuer URL.")
	fs.StringVar(&o.PreviousIssuerURL, "previous-issuer-url", "", "During a move to another --issuer-url, the other issuer (never the issuer itself): the one before it, or just before the move the coming one. Client assertions may name it as their audience, and introspection recognises its tokens. Empty outside a move.")
	fs.StringVar(&o.ListenAddress, "listen-address", ":8080", "Address to serve on.")
	fs.StringVar(&keySecret, "signing-key-secret", signingkeys.DefaultSecret.String(), "namespace/name of the signing-key Secret the manager writes.")
	fs.StringVar(&namespaces, "watch-namespaces", "", "Comma-separated namespaces whose M2MClients may get tokens. Empty means all.")
	fs.StringVar(&o.DefaultAudience, "default-audience", "", `The "aud" of tokens for clients with no spec.audiences. Empty means the issuer URL.`)
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", "", "PEM certificate for HTTPS; reloaded when it changes.")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", "", "PEM private key for HTTPS; reloaded when it changes.")
	fs.StringVar(&o.ClientCAFile, "client-ca-file", "", "PEM bundle of the manager's pod-client CA (the ConfigMap m2m-pod-client-ca): the HTTPS listener asks for client certificates, verifies those given against it, and offers tls_client_auth with tokens bound to the certificate (RFC 8705). Needs --tls-cert-file, and TLS passthrough in any proxy in front. Reloaded when it changes. Empty (the default): no client certificates.")
	fs.StringVar(&o.MetricsAddress, "metrics-bind-address", ":9090", `Address of the Prometheus /metrics endpoint, apart from the token port; "0" disables it.`)
	fs.BoolVar(&o.PerClientMetrics, "metrics-per-client", false, "Label the token counters by client ID as well as by namespace: one series per client that asks for a token, which costs memory in the token server and in Prometheus with many clients.")
	fs.StringVar(&o.DebugAddress, "debug-address", "", "Address of a net/http/pprof endpoint for profiling; empty (the default) disables it. Never expose it.")
	fs.Func("federated-issuer", `An issuer whose tokens clients may accept as client assertions (spec.authentication.federated): "ISSUER_URL", or "ISSUER_URL,JWKS_URL" when its keys are not at the jwks_uri of its discovery document. Repeatable.`, func(s string) error {
		f, err := ParseFederatedIssuer(s)
		if err != nil {
			return err
		}
		o.FederatedIssuers = append(o.FederatedIssuers, f)
		return nil
	})
	var trustedProxies string
	fs.StringVar(&trustedProxies, "trusted-proxies", "", "Comma-separated networks (CIDRs) of the proxies in front of the token server, whose --trusted-proxy-header names the client's address. Empty means the connection's address is the client's.")
	fs.StringVar(&o.ClientAddresses.Header, "trusted-proxy-header", HeaderXForwardedFor, `The header in which the trusted proxies name the client: "X-Forwarded-For" or "Forwarded" (RFC 7239). Only this one is read.`)
	fs.Float64Var(&o.FailureLimit.Rate, "failure-rate", DefaultFailureRate, "Failed authentications a second that one source address (an IPv6 /64) may make in the long run, on each replica; a source over the limit gets 429 before its credentials are checked. 0 disables the limit.")
	fs.IntVar(&o.FailureLimit.Burst, "failure-burst", DefaultFailureBurst, "Failed authentications that one source address may make at once, on each replica.")
	fs.IntVar(&o.FailureLimit.Sources, "failure-sources", DefaultFailureSources, "The most source addresses whose failures each replica remembers.")
	fs.IntVar(&o.IssuanceLimit.PerMinute, "issuance-per-minute", DefaultIssuancePerMinute, "Token requests a minute that one authenticated client may make in the long run, on each replica, unless its spec.issuanceLimit sets its own; a client over the limit gets 429. 0 disables the limit for every client, overrides included.")
	fs.IntVar(&o.IssuanceLimit.Burst, "issuance-burst", DefaultIssuanceBurst, "Token requests that one authenticated client may make at once, on each replica, unless its spec.issuanceLimit sets its own.")
	fs.BoolVar(&o.DPoPNonces, "dpop-nonce", false, "Require the server's nonce (RFC 9449 §8) in DPoP proofs: a client's first proof is refused with use_dpop_nonce and a DPoP-Nonce header, and a captured proof can be replayed at another replica only within the nonce's life (15 to 30 seconds) rather than the proof's (a minute, plus 10 seconds of clock skew). Every replica accepts every replica's nonces, derived from the signing keys.")
	fs.IntVar(&o.RevocationWaiters, "max-revocation-waiters", DefaultRevocationWaiters, "Requests for the revocation list that each replica holds at once until the list changes (long-polls, about 10 KiB each); past it, a request is answered at once and its verifier asks again a second later.")
	if err := fs.Parse(args); err != nil {
		return Options{}, err
	}
	if o.RevocationWaiters < 1 {
		return Options{}, fmt.Errorf("--max-revocation-waiters must be at least 1, not %d", o.RevocationWaiters)
	}
	for _, ns := range strings.Split(namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			o.WatchNamespaces = append(o.WatchNamespaces, ns)
		}
	}
	var err error
	if o.ClientAddresses.Trusted, err = ParseTrustedProxies(trustedProxies); err != nil {
		return Options{}, err
	}
	if h := o.ClientAddresses.Header; h != HeaderXForwardedFor && h != HeaderForwarded {
		return Options{}, fmt.Errorf("--trusted-proxy-header %q: use %q or %q", h, HeaderXForwardedFor, HeaderForwarded)
	}
	// NaN and infinities parse as floats, and a rate too small to refill within the longest
	// Retry-After refuses a source for ever while telling it to come back.
	if r := o.FailureLimit.Rate; math.IsNaN(r) || math.IsInf(r, 0) || (r != 0 && r < minFailureRate) {
		return Options{}, fmt.Errorf("--failure-rate %v: 0 (off), or a number of failures a second from %g (one a day)", r, minFailureRate)
	}
	if o.FailureLimit.Rate < 0 || o.FailureLimit.Burst < 1 || o.FailureLimit.Sources < 1 {
		return Options{}, errors.New("--failure-rate must be 0 or more, --failure-burst and --failure-sources 1 or more")
	}
	if o.IssuanceLimit.PerMinute < 0 || o.IssuanceLimit.Burst < 1 {
		return Options{}, errors.New("--issuance-per-minute must be 0 or more, --issuance-burst 1 or more")
	}
	if o.SigningKeySecret, err = signingkeys.ParseSecretRef(keySecret); err != nil {
		return Options{}, err
	}
	return o, nil
}

// ResolvedDefaultAudience is the "aud" that a server started with o gives the tokens of clients
// with no spec.audiences.
func (o Options) ResolvedDefaultAudience() (string, error) {
	iss, err := issuer.Parse(o.IssuerURL)
	if err != nil {
		return "", err
	}
	return EffectiveDefaultAudience(iss, o.DefaultAudience)
}
