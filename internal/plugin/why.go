package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
)

// refusalsPath is the token server's tokenserver.RefusalsPath, below the issuer; the plugin does
// not link the token server.
const refusalsPath = "/refusals"

// refusalsAnswer is the token server's tokenserver.RefusalsAnswer.
type refusalsAnswer struct {
	Replica  string    `json:"replica"`
	Since    time.Time `json:"since"`
	Kept     int       `json:"kept"`
	Total    uint64    `json:"total"`
	Refusals []struct {
		Time     time.Time `json:"time"`
		Endpoint string    `json:"endpoint"`
		Reason   string    `json:"reason"`
		Method   string    `json:"method"`
		From     string    `json:"from"`
		Help     string    `json:"help"`
	} `json:"refusals"`
}

// errNoBearerToken is the answer to a kubeconfig whose user has no bearer token to show the
// token server.
var errNoBearerToken = errors.New("kubectl m2m why needs a Kubernetes bearer token, which the token server checks with the API server, and this kubeconfig's user has none " +
	"(it authenticates with a client certificate, or a username and password). " +
	"Use a kubeconfig with a token, a token file or an exec plugin that gives one (OIDC and cloud logins do), for example a ServiceAccount's from " +
	"`kubectl create token SA -n NS` with view rights on the client's namespace; or ask an administrator to read the token server's log with --zap-log-level=debug")

var errPlainHTTP = errors.New("kubectl m2m why sends your Kubernetes token only over https or to a loopback address")

// why prints the refusals of the client key that the token server remembers, asking it with the
// kubeconfig user's bearer token. The token server is the install's (the manager's ConfigMap in
// systemNS) unless tokenURL and caFile say otherwise.
func why(ctx context.Context, cfg *rest.Config, c client.Reader, out io.Writer, key types.NamespacedName, systemNS, tokenURL, caFile string) error {
	base, bundles, err := tokenServerOf(ctx, c, systemNS, tokenURL, caFile)
	if err != nil {
		return err
	}
	trusted, err := trustingClient(bundles...)
	if err != nil {
		return err
	}
	rt, err := rest.HTTPWrappersForConfig(cfg, bearerOnly{base: trusted.Transport})
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: rt, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	q := url.Values{"namespace": {key.Namespace}, "name": {key.Name}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+refusalsPath+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if errors.Is(err, errNoBearerToken) || errors.Is(err, errPlainHTTP) {
		return errors.Unwrap(err) // bearerOnly's words, without the client's "Get URL:"
	}
	if err != nil {
		return fmt.Errorf("asking the token server %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return refusalsError(resp.StatusCode, body, base, key)
	}
	var a refusalsAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("the token server %s answered something other than refusals: %w", base, err)
	}
	return printRefusals(out, key, a)
}

// tokenServerOf finds the token server that why asks, and the CA bundles that may sign its
// certificate: the install's token_url and ca.crt (installLocation), unless --token-url or
// --ca-file give them. Never the client's Secret, whose owner could point it at a server of their
// own that would receive the caller's Kubernetes token. With --token-url the ConfigMap is only
// read for its ca.crt, and may be unreadable.
func tokenServerOf(ctx context.Context, c client.Reader, systemNS, tokenURL, caFile string) (base string, bundles []caBundle, err error) {
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return "", nil, err
		}
		bundles = append(bundles, caBundle{"--ca-file " + caFile, pem})
	}
	if tokenURL == "" || caFile == "" {
		loc, err := readInstallLocation(ctx, c, systemNS)
		switch {
		case err != nil && tokenURL == "":
			return "", nil, fmt.Errorf("%w; pass --system-namespace with the manager's namespace, or --token-url (and --ca-file for a token server whose CA the system does not trust)", err)
		case err == nil && tokenURL == "":
			// The in-cluster URL, never the public door's: the request carries the caller's
			// Kubernetes token, and the door does not route it.
			tokenURL = loc.tokenURL
		}
		if err == nil && caFile == "" && loc.ca.pem != nil {
			bundles = append(bundles, loc.ca)
		}
	}
	base, ok := strings.CutSuffix(tokenURL, issuer.TokenPath)
	if !ok || base == "" {
		return "", nil, fmt.Errorf("the token URL %q does not end with %s; pass the token endpoint with --token-url", tokenURL, issuer.TokenPath)
	}
	return base, bundles, nil
}

// bearerOnly sends a request only with a bearer token, whichever way the kubeconfig gave it, and
// only over https or to a loopback address: never a password, never a token in the clear.
type bearerOnly struct{ base http.RoundTripper }

func (b bearerOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" && !issuer.Loopback(r.URL.String()) {
		return nil, fmt.Errorf("the token server %s is plain http: %w", r.URL.Host, errPlainHTTP)
	}
	if scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " "); !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, errNoBearerToken
	}
	return b.base.RoundTrip(r)
}

// refusalsError says what a refused request to the token server means for the user.
func refusalsError(status int, body []byte, base string, key types.NamespacedName) error {
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	switch status {
	case http.StatusUnauthorized:
		return fmt.Errorf("the token server %s does not accept your Kubernetes token (%s): is it a token of this cluster?", base, e.Message)
	case http.StatusForbidden:
		return fmt.Errorf("you may not get m2mclients %s in namespace %s, so the token server shows none of its refusals (kubectl auth can-i get m2mclients/%s -n %s)", key.Name, key.Namespace, key.Name, key.Namespace)
	case http.StatusNotFound:
		return fmt.Errorf("the token server %s serves no refusals: is it older than this kubectl m2m?", base)
	case http.StatusTooManyRequests:
		return fmt.Errorf("the token server %s is checking too many callers at once; retry in a second", base)
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(body))
	}
	return fmt.Errorf("the token server %s answered %d: %s", base, status, e.Message)
}

// printRefusals prints the refusals as a table, then what to do about each reason once.
func printRefusals(out io.Writer, key types.NamespacedName, a refusalsAnswer) error {
	replica := a.Replica
	if replica == "" {
		replica = "(unnamed)"
	}
	since := a.Since.UTC().Format(time.RFC3339)
	if len(a.Refusals) == 0 {
		_, err := fmt.Fprintf(out, "No refusals of M2MClient %s remembered by token server replica %s since %s.\n"+
			"Each replica remembers only the requests it refused: with several replicas, run this again to reach another.\n", key, replica, since)
		return err
	}
	fmt.Fprintf(out, "Token server replica %s refused M2MClient %s %d times since %s; the latest %d:\n\n", replica, key, a.Total, since, len(a.Refusals))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tENDPOINT\tREASON\tMETHOD\tFROM")
	help := map[string]string{}
	var order []string
	for _, r := range a.Refusals {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format(time.RFC3339), r.Endpoint, r.Reason, r.Method, r.From)
		if _, ok := help[r.Reason]; !ok {
			help[r.Reason] = r.Help
			order = append(order, r.Reason)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nWhat to do:")
	for _, reason := range order {
		fmt.Fprintf(out, "  %s: %s\n", reason, help[reason])
	}
	_, err := fmt.Fprintf(out, "\nEach replica remembers only the requests it refused (the latest %d per client): with several replicas, run this again to reach another.\n", a.Kept)
	return err
}
