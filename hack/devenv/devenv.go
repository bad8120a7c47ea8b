// Package devenv runs the whole system on one machine for `make dev`: a local kube-apiserver and
// etcd, the CRDs, the manager, and the sample M2MClients.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/gateway"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// Options say where the system's files are and how it is reached.
type Options struct {
	// Root is the repository root: config/ is read from it.
	Root string
	// StateDir holds the kubeconfig and everything else `make dev` keeps.
	StateDir string
	// Assets is the directory of kube-apiserver, etcd and kubectl.
	Assets string
	// IssuerURL is the issuer written into the credentials Secrets; empty means DefaultIssuerURL,
	// or DefaultTLSIssuerURL with TLS.
	IssuerURL string
	// TLS serves the token server over HTTPS, as installs do: the manager keeps a CA and issues
	// the certificate into CertSecret, and the token server reads it from TLSDir, which devenv
	// keeps in step with the Secret as the kubelet keeps a mount.
	TLS bool
	// PublicDoor serves the issuer as a public door, as a Gateway with a BackendTLSPolicy does in
	// a cluster: a gateway (test/support/gateway) terminates TLS for the issuer's host with a
	// certificate of its own CA (PublicCAFile) and re-encrypts to the token server, which
	// listens at InClusterURL, trusts the gateway's X-Forwarded-For, and writes both URLs into
	// the credentials Secrets. It implies TLS; the issuer defaults to DefaultPublicIssuerURL.
	PublicDoor bool
	// InClusterURL is where the token server listens behind the public door, the URL that
	// pods would use; empty means DefaultTLSIssuerURL. Only with PublicDoor.
	InClusterURL string
	// DefaultAudience is the token server's --default-audience; empty means IssuerURL.
	DefaultAudience string
	// TokenServerMetrics and ManagerMetrics are where the token server and the manager serve
	// /metrics (a port of 0 takes a free one); empty serves none.
	TokenServerMetrics, ManagerMetrics string
	// Out receives what a person should read.
	Out io.Writer
	// SkipNameValidation lets tests start several systems in one process.
	SkipNameValidation bool
}

// Where `make dev` serves the metrics of the token server and of the manager.
const (
	DefaultTokenServerMetrics = "127.0.0.1:9090"
	DefaultManagerMetrics     = "127.0.0.1:9091"
)

// System is a running development system.
type System struct {
	Options
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client
	env        *envtest.Environment
	// tokenListener and doorListener are taken before anything else starts, so that the ports
	// are this system's from the start (another process could take them while the control plane
	// starts), and a port in use fails at once.
	tokenListener, doorListener net.Listener
	stop                        context.CancelFunc
	// done receives the exit of the manager and of the token server.
	done chan error

	// PluginDir holds kubectl-m2m, built from Root, for `kubectl m2m` with it on the PATH.
	PluginDir string
	// TokenServerMetricsURL and ManagerMetricsURL are the /metrics URLs; empty when not served.
	TokenServerMetricsURL, ManagerMetricsURL string
	// certMount keeps TLSDir in step with CertSecret; nil without TLS.
	certMount *mount
	// gateway serves the public door; nil without one. doorSource is the address it connects
	// to the token server from, empty where the system chose.
	gateway    *gateway.Gateway
	doorSource string
}

// Start starts the control plane, installs the CRDs, starts the manager and applies the samples.
func Start(o Options) (*System, error) {
	var err error
	o.TLS = o.TLS || o.PublicDoor
	if o.IssuerURL, err = issuerOf(o); err != nil {
		return nil, err
	}
	if o.InClusterURL, err = inClusterOf(o, o.IssuerURL); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, err
	}
	s := &System{Options: o}
	if err := s.listen(); err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: o.Assets,
		CRDDirectoryPaths:     []string{filepath.Join(o.Root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	token, err := writeTokenFile(o.StateDir, env)
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		s.closeListeners()
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	s.env, s.Config = env, cfg
	if err := s.start(token); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// listen takes the token server's port, and the public door's.
func (s *System) listen() error {
	u, err := url.Parse(s.tokenServerURL())
	if err != nil {
		return err
	}
	if s.tokenListener, err = net.Listen("tcp", u.Host); err != nil {
		return fmt.Errorf("the token server cannot listen on %s (is another make dev running?): %w", u.Host, err)
	}
	if !s.PublicDoor {
		return nil
	}
	if u, err = url.Parse(s.IssuerURL); err != nil {
		s.closeListeners()
		return err
	}
	if s.doorListener, err = net.Listen("tcp", u.Host); err != nil {
		s.closeListeners()
		return fmt.Errorf("the public door cannot listen on %s (is another make dev running?): %w", u.Host, err)
	}
	return nil
}

// closeListeners closes the listeners that nothing serves yet.
func (s *System) closeListeners() {
	for _, l := range []*net.Listener{&s.tokenListener, &s.doorListener} {
		if *l != nil {
			_ = (*l).Close()
			*l = nil
		}
	}
}

func (s *System) start(token string) error {
	s.Kubeconfig = filepath.Join(s.StateDir, "kubeconfig")
	if err := writeKubeconfig(s.Kubeconfig, s.Config, token); err != nil {
		return err
	}
	if err := s.buildPlugin(); err != nil {
		return err
	}
	var err error
	if s.Client, err = client.New(s.Config, client.Options{Scheme: m2mv1alpha1.NewScheme()}); err != nil {
		return err
	}
	// As in a cluster: the RBAC and admission policies of config/, and each component as its
	// ServiceAccount (only the manager's may write M2MClient status).
	managerConfig, tokenServerConfig, err := testenv.InstallRBAC(context.Background(), s.env, s.Client, s.Root)
	if err != nil {
		return err
	}
	if err := manifests.Create(context.Background(), s.Client, filepath.Join(s.Root, "config", "admission")); err != nil {
		return err
	}
	managerMetrics, err := s.managerMetrics()
	if err != nil {
		return err
	}
	mgr, err := controllers.NewManager(managerConfig, controllers.Options{IssuerURL: s.IssuerURL, InClusterURL: s.InClusterURL, MetricsAddr: managerMetrics,
		SkipNameValidation: s.SkipNameValidation, ServingCert: s.servingCert()})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan error, 2)
	go func() { s.done <- mgr.Start(ctx) }()

	var clientAddresses tokenserver.ClientAddresses
	if s.PublicDoor {
		if clientAddresses, err = s.startDoor(); err != nil {
			s.done <- nil
			return err
		}
	}
	ln := s.tokenListener
	s.tokenListener = nil // the token server closes it
	metricsLn, err := s.tokenServerMetrics()
	if err != nil {
		_ = ln.Close()
		s.done <- nil
		return err
	}
	o := tokenserver.Options{
		IssuerURL:        s.IssuerURL,
		InClusterURL:     s.InClusterURL,
		DefaultAudience:  s.DefaultAudience,
		Listener:         ln,
		MetricsListener:  metricsLn,
		SigningKeySecret: signingkeys.DefaultSecret,
		ClientAddresses:  clientAddresses,
		// As the binary's flags have it by default, so that make dev shows what an install does.
		IssuanceLimit: tokenserver.DefaultIssuanceLimit,
	}
	if s.TLS {
		if err := s.mountCertificate(ctx); err != nil {
			_ = ln.Close()
			s.done <- nil
			return err
		}
		o.TLSCertFile, o.TLSKeyFile = filepath.Join(s.TLSDir(), servingcert.TLSCert), filepath.Join(s.TLSDir(), servingcert.TLSKey)
	}
	go func() {
		// As a pod waits for the Secret it mounts: the token server cannot serve HTTPS before.
		if s.TLS {
			if err := s.waitForCertificate(ctx); err != nil {
				_ = ln.Close()
				s.done <- err
				return
			}
		}
		s.done <- tokenserver.Run(ctx, tokenServerConfig, o)
	}()
	return manifests.Create(ctx, s.Client, filepath.Join(s.Root, "config", "samples"))
}

// WaitReady waits until every M2MClient is Ready, and returns them.
func (s *System) WaitReady(ctx context.Context) ([]m2mv1alpha1.M2MClient, error) {
	var list m2mv1alpha1.M2MClientList
	ready := 0
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if err := s.Client.List(ctx, &list); err != nil {
			return false, err
		}
		ready = 0
		for i := range list.Items {
			if meta.IsStatusConditionTrue(list.Items[i].Status.Conditions, m2mv1alpha1.ConditionReady) {
				ready++
			}
		}
		// The door routes no probe: its metadata says that it reaches the token server, whose
		// own /readyz says that it is ready.
		return ready == len(list.Items) && answers(ctx, s.tokenServerURL()+"/readyz", s.CAFile()) &&
			(!s.PublicDoor || answers(ctx, s.IssuerURL+"/.well-known/oauth-authorization-server", s.PublicCAFile())), nil
	})
	if err != nil && s.TLS && !s.certificateIssued() {
		return nil, fmt.Errorf("the manager has not issued the token server's certificate into Secret %s (see its log), so the token server does not serve: %w", CertSecret, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%d of %d M2MClients are Ready: %w", ready, len(list.Items), err)
	}
	return list.Items, nil
}

// answers says whether a GET of url gets 200, over TLS trusting caFile (none for plain HTTP).
func answers(ctx context.Context, url, caFile string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	hc, err := httpClient(caFile)
	if err != nil {
		return false
	}
	defer hc.CloseIdleConnections() // a client per poll
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Kubectl is the path of the kubectl binary built with the control plane.
func (s *System) Kubectl() string {
	return filepath.Join(s.Assets, "kubectl")
}

// PrintNextSteps tells a person how to use the running system: commands to paste, which never
// contain a secret themselves.
func (s *System) PrintNextSteps(clients []m2mv1alpha1.M2MClient) {
	w := s.Out
	kubectl := s.Kubectl()
	fmt.Fprintf(w, "\nm2m-operator is running on a local control plane.\n\n")
	fmt.Fprintf(w, "  kubeconfig:    %s\n", s.Kubeconfig)
	fmt.Fprintf(w, "  kubectl:       %s\n", kubectl)
	if s.PublicDoor {
		fmt.Fprintf(w, "  public door:   %s, the issuer, as a Gateway serves it: its own certificate (CA %s, for curl --cacert), re-encrypted to the token server; each credentials Secret's public_token_url\n", issuer.TokenURL(s.IssuerURL), s.PublicCAFile())
		fmt.Fprintf(w, "  token server:  %s, the in-cluster URL, for pods: each credentials Secret's token_url; tokens through either door carry the issuer %s\n", issuer.TokenURL(s.InClusterURL), s.IssuerURL)
		if s.doorSource != "" {
			fmt.Fprintf(w, "  forwarded:     the token server trusts the X-Forwarded-For of the door only (it connects from %s, --trusted-proxies)\n", s.doorSource)
		} else {
			fmt.Fprintf(w, "  forwarded:     the door connects from 127.0.0.1, which the token server trusts (--trusted-proxies): any local process can name its address in X-Forwarded-For\n")
		}
	} else {
		fmt.Fprintf(w, "  token server:  %s\n", issuer.TokenURL(s.IssuerURL))
	}
	fmt.Fprintf(w, "  JWKS:          %s/.well-known/jwks.json\n", s.IssuerURL)
	aud := s.DefaultAudience
	if aud == "" {
		aud = s.IssuerURL + " (the issuer)"
	}
	fmt.Fprintf(w, "  default aud:   %s, for clients with no spec.audiences\n", aud)
	if s.TokenServerMetricsURL != "" || s.ManagerMetricsURL != "" {
		fmt.Fprintf(w, "  metrics:       %s (token server), %s (manager)\n", orNone(s.TokenServerMetricsURL), orNone(s.ManagerMetricsURL))
	}
	fmt.Fprintf(w, "  kubectl m2m:   %s, on the PATH below; the kubeconfig's user has a bearer token, which kubectl m2m why needs\n", filepath.Join(s.PluginDir, "kubectl-m2m"))
	if strings.HasPrefix(s.IssuerURL, "http://") {
		fmt.Fprintf(w, "  transport:     plain HTTP on loopback, for development only; installs serve HTTPS (docs/operations.md#tls)\n")
	}
	if s.TLS {
		fmt.Fprintf(w, "  transport:     HTTPS with the manager's CA (Secret %s), as installs serve (docs/operations.md#tls); the token server reads its certificate from %s, kept in step with Secret %s as the kubelet keeps a mount\n", CASecret, s.TLSDir(), CertSecret)
		fmt.Fprintf(w, "  CA bundle:     %s, kept current, for curl --cacert; kubectl m2m token uses each credentials Secret's ca.crt by itself, why and verify the same CA from ConfigMap %s/%s\n", s.CAFile(), signingkeys.DefaultSecret.Namespace, m2mv1alpha1.TokenServerConfigMap)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Try, in another terminal:\n\n")
	for _, line := range s.NextSteps(clients) {
		fmt.Fprintf(w, "  %s\n", line)
	}
	if line := s.EmergencyCARotation(); line != "" {
		fmt.Fprintf(w, "\nA compromised CA, as the runbook says (docs/operations.md#tls): the token server then serves a certificate of a new CA, and the CA bundle above and every credentials Secret's ca.crt hold only the new CA:\n\n  %s\n", line)
	}
	fmt.Fprintf(w, "\nPress Ctrl-C to stop everything.\n")
}

// NextSteps are the shell lines PrintNextSteps prints: list the clients, read the first sample's
// credentials from its Secret, get a token with a JSON body as in Stytch's docs (through the
// public door when there is one, as a machine outside the cluster does), send a wrong secret and
// see why it was refused.
func (s *System) NextSteps(clients []m2mv1alpha1.M2MClient) []string {
	kubectl := s.Kubectl()
	ns, name, secret := "default", "NAME", "NAME-credentials"
	for i, c := range clients {
		if c.Namespace == ns && m2mv1alpha1.SecretAuthentication(&clients[i]) {
			name, secret = c.Name, c.Status.SecretName
			break
		}
	}
	body := `"{\"client_id\":\"$CLIENT_ID\",\"client_secret\":\"%s\",\"grant_type\":\"client_credentials\"}"`
	curl := "curl -s"
	switch {
	case s.PublicDoor:
		curl += " --cacert " + s.PublicCAFile()
	case s.TLS:
		curl += " --cacert " + s.CAFile()
	}
	steps := []string{
		"export KUBECONFIG=" + s.Kubeconfig,
		"export PATH=" + s.PluginDir + ":$PATH",
		kubectl + " get m2mclients -A",
	}
	if s.TLS {
		// The Secret's token_url and ca.crt: nothing to configure.
		steps = append(steps, fmt.Sprintf("%s m2m token %s -n %s", kubectl, name, ns))
	}
	return append(steps,
		fmt.Sprintf("CLIENT_ID=$(%s -n %s get secret %s -o jsonpath='{.data.client_id}' | base64 -d)", kubectl, ns, secret),
		fmt.Sprintf("CLIENT_SECRET=$(%s -n %s get secret %s -o jsonpath='{.data.client_secret}' | base64 -d)", kubectl, ns, secret),
		fmt.Sprintf("%s %s -H 'Content-Type: application/json' -d "+body, curl, issuer.TokenURL(s.IssuerURL), "$CLIENT_SECRET"),
		curl+" "+s.IssuerURL+"/.well-known/jwks.json",
		fmt.Sprintf("%s %s -H 'Content-Type: application/json' -d "+body, curl, issuer.TokenURL(s.IssuerURL), "not-the-secret"),
		fmt.Sprintf("%s m2m why %s -n %s", kubectl, name, ns),
	)
}

func orNone(url string) string {
	if url == "" {
		return "none"
	}
	return url
}

// Stop stops the manager and the control plane, and removes the kubeconfig, which names ports
// that are about to close.
func (s *System) Stop() error {
	s.closeListeners()
	var errs []error
	if err := s.stopDoor(); err != nil {
		errs = append(errs, fmt.Errorf("public door: %w", err))
	}
	if s.stop != nil {
		s.stop()
		for range cap(s.done) {
			if err := <-s.done; err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		}
	}
	if s.certMount != nil {
		<-s.certMount.done
		_ = os.RemoveAll(s.TLSDir()) // a private key, and a CA that ends with the control plane
	}
	if err := s.env.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("control plane: %w", err))
	}
	if s.Kubeconfig != "" {
		_ = os.Remove(s.Kubeconfig)
	}
	_ = os.Remove(filepath.Join(s.StateDir, tokenFile))
	return errors.Join(errs...)
}

// Describe is a one-line summary for logs.
func Describe(c m2mv1alpha1.M2MClient) string {
	return strings.Join([]string{c.Namespace + "/" + c.Name, c.Status.ClientID, string(c.Status.State)}, " ")
}
