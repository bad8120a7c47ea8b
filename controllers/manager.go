// The manager's assembly: its cache, indexes and  cmd/manager, hack/ and the
// integration tests all build the manager with NewManager, so the tests run what ships. It lives
// beside the controllers it wires, so that nothing outside cmd/manager, hack/ and the tests
// imports this package and every import points down.

package controllers

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/podclientca"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/sourcewatch"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// Options configure the manager. The zero value of each optional field is a sensible default.
type Options struct {
	// IssuerURL is the token server's issuer URL. Required.
	IssuerURL string
	// InClusterURL is where pods reach the token server when the issuer is a public door
	// (M2MClientReconciler.InClusterURL); empty means the issuer URL.
	InClusterURL string
	// WatchNamespaces limits the manager to these namespaces; empty means all.
	WatchNamespaces []string
	// MetricsAddr serves Prometheus metrics; "0" disables them.
	MetricsAddr string
	// ProbeAddr serves /healthz and /readyz; "0" or "" disables them.
	ProbeAddr string
	// LeaderElection makes only one replica reconcile at a time.
	LeaderElection bool
	// LeaderElectionNamespace holds the lease; defaults to the pod's namespace.
	LeaderElectionNamespace string
	// LeaseDuration, RenewDeadline and RetryPeriod time leader election: how long a standby
	// waits after the last renewal before it takes the lease, how long the leader keeps trying
	// to renew before it steps down, and how often both try. Zero means controller-runtime's
	// default (15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// MaxConcurrentReconciles is the number of M2MClients reconciled at once.
	MaxConcurrentReconciles int
	// MaxSourcesPerNamespace bounds the distinct source Secrets (spec.authentication.source)
	// that the manager watches for one namespace; 0 means DefaultMaxSourcesPerNamespace, and a
	// negative value means no bound.
	MaxSourcesPerNamespace int
	// Clock is the manager's time source; tests pass a fake one.
	Clock clock.Clock
	// SigningKeySecret is the Secret of JWT signing keys; defaults to signingkeys.DefaultSecret.
	SigningKeySecret types.NamespacedName
	// SigningKeys is the signing-key rotation policy; zero fields take signingkeys.DefaultPolicy's.
	SigningKeys signingkeys.Policy
	// StatusKeyPeriod is how long a status MAC key signs before its successor; 0 means
	// statusmac.DefaultPeriod, and a negative value never rotates.
	StatusKeyPeriod time.Duration
	// ServingCert, when set, makes the manager issue and rotate the token server's serving
	// certificate from a CA it keeps.
	ServingCert *ServingCertOptions
	// StatusPolicyName is the admission policy (and binding) that lets only the manager write
	// status, which the manager checks is installed; defaults to DefaultStatusPolicyName.
	StatusPolicyName string
	// CABundleSecret, when set instead of ServingCert, is a Secret whose ca.crt signs the token
	// server's certificate (cert-manager's): the manager copies it into credentials Secrets.
	CABundleSecret types.NamespacedName
	// WrapClient, when set, wraps the client the controllers read and write with; tests use it
	// to inject failures.
	WrapClient func(client.Client) client.Client
	// DisablePodClientSigner turns off the signer m2m.dev/pod-client (PodClientSigner), which
	// otherwise runs when the API server serves PodCertificateRequests.
	DisablePodClientSigner bool
	// SkipNameValidation lets tests run several managers, one after another, in one process.
	SkipNameValidation bool
}

// ServingCertOptions configure the serving certificate the manager issues.
type ServingCertOptions struct {
	// CASecret holds the CA (manager only); CertSecret the certificate (kubernetes.io/tls,
	// mounted by the token server).
	CASecret, CertSecret types.NamespacedName
	// Hosts are names the certificate covers besides the issuer URL's host (the Service's).
	Hosts []string
	// Policy is the lifetime and rotation policy; zero fields take servingcert.DefaultPolicy's.
	Policy servingcert.Policy
}

// DefaultMaxConcurrentReconciles is how many M2MClients are reconciled at once unless told
// otherwise (cmd/manager's --max-concurrent-reconciles).
const DefaultMaxConcurrentReconciles = 8

// NewManager returns a manager with the M2MClient controller registered.
func NewManager(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	issuerURL, err := issuer.Parse(o.IssuerURL)
	if err != nil {
		return nil, err
	}
	if o.InClusterURL != "" {
		if o.InClusterURL, err = issuer.Parse(o.InClusterURL); err != nil {
			return nil, fmt.Errorf("the in-cluster URL: %w", err)
		}
	}
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if o.CABundleSecret.Name != "" && o.ServingCert != nil {
		return nil, fmt.Errorf("the manager either issues the serving certificate or takes the CA bundle of another issuer's Secret, not both")
	}
	signer, err := o.podClientSignerRuns(cfg)
	if err != nil {
		return nil, err
	}
	repair := newStatusRepair()
	cacheOpts := o.cacheOptions(signer)
	if cacheOpts.HTTPClient, err = repair.cacheHTTPClient(cfg); err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  m2mv1alpha1.NewScheme(),
		Cache:                   cacheOpts,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "m2m-manager.m2m.dev",
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		LeaseDuration:           durationOrDefault(o.LeaseDuration),
		RenewDeadline:           durationOrDefault(o.RenewDeadline),
		RetryPeriod:             durationOrDefault(o.RetryPeriod),
		// Step down at once on SIGTERM so that the next leader starts without waiting out the lease.
		LeaderElectionReleaseOnCancel: true,
		Controller:                    ctrlconfig.Controller{SkipNameValidation: &o.SkipNameValidation},
		NewClient: func(cfg *rest.Config, opts client.Options) (client.Client, error) {
			c, err := client.New(cfg, opts)
			if err != nil || o.WrapClient == nil {
				return c, err
			}
			return o.WrapClient(c), nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	repair.start(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("m2m-manager"))
	if err := mgr.Add(repair); err != nil {
		return nil, err
	}
	if err := mgr.Add(&statusPolicyCheck{reader: mgr.GetAPIReader(), name: o.StatusPolicyName}); err != nil {
		return nil, err
	}
	if err := setupControllers(mgr, o, issuerURL, signer); err != nil {
		return nil, err
	}
	fleet := &FleetCollector{Reader: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock, KeySecret: o.SigningKeySecret}
	if o.ServingCert != nil {
		fleet.CertSecret = o.ServingCert.CertSecret
	}
	if o.CABundleSecret.Name != "" {
		fleet.CertSecret = o.CABundleSecret // cert-manager's certificate Secret
	}
	// The informer the M2MClient controller watches; the cache has not started, so this only
	// creates it.
	inf, err := mgr.GetCache().GetInformer(context.Background(), &m2mv1alpha1.M2MClient{})
	if err != nil {
		return nil, err
	}
	if err := fleet.WatchClients(inf); err != nil {
		return nil, err
	}
	registerMetrics(fleet)
	if err := addProbes(mgr, o.ProbeAddr); err != nil {
		return nil, err
	}
	return mgr, nil
}

// durationOrDefault is nil, controller-runtime's default, for zero.
func durationOrDefault(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

// DefaultMaxSourcesPerNamespace is how many sources (distinct Secret entries) the manager reads
// for one namespace unless told otherwise (cmd/manager's --max-sources-per-namespace): it keeps
// the last reading of each (at most credentials.MaxSourceValueBytes of value), and a tenant who
// may create M2MClients must not make it keep any number of them.
const DefaultMaxSourcesPerNamespace = 256

// setDefaults fills in what o leaves unset and refuses key policies that cannot work.
func (o *Options) setDefaults() error {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.MaxConcurrentReconciles <= 0 {
		o.MaxConcurrentReconciles = DefaultMaxConcurrentReconciles
	}
	switch {
	case o.MaxSourcesPerNamespace == 0:
		o.MaxSourcesPerNamespace = DefaultMaxSourcesPerNamespace
	case o.MaxSourcesPerNamespace < 0:
		o.MaxSourcesPerNamespace = 0
	}
	if o.MetricsAddr == "" {
		o.MetricsAddr = "0"
	}
	if o.SigningKeySecret.Name == "" {
		o.SigningKeySecret = signingkeys.DefaultSecret
	}
	if o.StatusPolicyName == "" {
		o.StatusPolicyName = DefaultStatusPolicyName
	}
	d := signingkeys.DefaultPolicy
	if o.SigningKeys.Algorithm == "" {
		o.SigningKeys.Algorithm = d.Algorithm
	}
	if o.SigningKeys.Period == 0 {
		o.SigningKeys.Period = d.Period
	}
	if o.SigningKeys.Prepublish == 0 {
		o.SigningKeys.Prepublish = d.Prepublish
	}
	if o.SigningKeys.Retention == 0 {
		o.SigningKeys.Retention = d.Retention
	}
	if o.StatusKeyPeriod == 0 {
		o.StatusKeyPeriod = statusmac.DefaultPeriod
	} else if o.StatusKeyPeriod > 0 && o.StatusKeyPeriod <= statusmac.Prepublish {
		return fmt.Errorf("the status key rotation period %s must exceed the prepublish time %s", o.StatusKeyPeriod, statusmac.Prepublish)
	}
	if err := o.validateLeaderElection(); err != nil {
		return err
	}
	return o.SigningKeys.Validate()
}

// validateLeaderElection refuses timings that client-go's leader election would refuse, naming
// the flags, so that shortening one (the lease, say) without the others fails with a reason
// rather than client-go's message after the manager has started.
func (o *Options) validateLeaderElection() error {
	lease, renew, retry := o.LeaseDuration, o.RenewDeadline, o.RetryPeriod
	if lease == 0 {
		lease = 15 * time.Second
	}
	if renew == 0 {
		renew = 10 * time.Second
	}
	if retry == 0 {
		retry = 2 * time.Second
	}
	if renew >= lease {
		return fmt.Errorf("the leader-election renew deadline (--leader-elect-renew-deadline, %s) must be less than the lease duration (--leader-elect-lease-duration, %s)", renew, lease)
	}
	// client-go retries with up to 20% jitter, and needs a retry to fit in the renew deadline.
	if float64(renew) <= 1.2*float64(retry) {
		return fmt.Errorf("the leader-election renew deadline (--leader-elect-renew-deadline, %s) must exceed 1.2 times the retry period (--leader-elect-retry-period, %s)", renew, retry)
	}
	return nil
}

// cacheOptions caches the watched namespaces, and of Secrets and ConfigMaps only those the manager
// wrote.
func (o *Options) cacheOptions(podClientSigner bool) cache.Options {
	// Only the Secrets the manager wrote, not every Secret in the cluster.
	secrets := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue})}
	cacheOpts := cache.Options{
		// managedFields are never read here and are a large share of each object's memory.
		DefaultTransform: cache.TransformStripManagedFields(),
	}
	if len(o.WatchNamespaces) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		// The signing-key Secret lives in the operator's namespace, watched or not.
		secrets.Namespaces = map[string]cache.Config{o.SigningKeySecret.Namespace: {}}
		if sc := o.ServingCert; sc != nil {
			secrets.Namespaces[sc.CASecret.Namespace] = cache.Config{}
			secrets.Namespaces[sc.CertSecret.Namespace] = cache.Config{}
		}
		if o.CABundleSecret.Name != "" {
			secrets.Namespaces[o.CABundleSecret.Namespace] = cache.Config{}
		}
		for _, ns := range o.WatchNamespaces {
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
			secrets.Namespaces[ns] = cache.Config{}
		}
	}
	// One entry for Secrets: ByObject is keyed by pointer, so a second &corev1.Secret{} key would
	// be a second, conflicting entry. The cache maps every type of ByObject when it is made, so
	// PodCertificateRequests are there only when the API server serves them.
	cacheOpts.ByObject = map[client.Object]cache.ByObject{
		&corev1.Secret{}:         secrets,
		&m2mv1alpha1.M2MClient{}: {Transform: trimClient},
		// The one ConfigMap the manager writes, in its own namespace, where its Role lets it
		// watch: never every ConfigMap of the cluster.
		&corev1.ConfigMap{}: {
			Namespaces: map[string]cache.Config{o.SigningKeySecret.Namespace: {}},
			Label:      labels.SelectorFromSet(labels.Set{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue}),
		},
	}
	if podClientSigner {
		// The signer's own requests only: those of other signers are none of its business.
		cacheOpts.ByObject[&certificatesv1.PodCertificateRequest{}] = cache.ByObject{Field: fields.OneTermEqualSelector("spec.signerName", m2mv1alpha1.PodClientSignerName)}
	}
	return cacheOpts
}

// setupControllers registers the M2MClient, signing-key, token-server ConfigMap and (when the
// manager issues it) serving-certificate controllers.
func setupControllers(mgr ctrl.Manager, o Options, issuerURL string, podClientSigner bool) error {
	r := &M2MClientReconciler{
		Client:          mgr.GetClient(),
		APIReader:       mgr.GetAPIReader(),
		Recorder:        mgr.GetEventRecorder("m2m-manager"),
		Clock:           o.Clock,
		IssuerURL:       issuerURL,
		InClusterURL:    o.InClusterURL,
		KeySecret:       o.SigningKeySecret,
		WatchNamespaces: o.WatchNamespaces,
	}
	sources, err := newSourceWatcher(mgr, o.MaxSourcesPerNamespace)
	if err != nil {
		return err
	}
	r.Sources = sources
	if o.CABundleSecret.Name != "" {
		r.CASecret, r.CABundleKey = o.CABundleSecret, servingcert.TLSCA
	}
	if sc := o.ServingCert; sc != nil {
		r.CASecret, r.CABundleKey = sc.CASecret, servingcert.Bundle
		if err := setupServingCert(mgr, o, issuerURL); err != nil {
			return err
		}
	}
	if err := r.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: o.MaxConcurrentReconciles}); err != nil {
		return fmt.Errorf("setting up the M2MClient controller: %w", err)
	}
	revocations := &BindingRevocationReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock, WatchNamespaces: o.WatchNamespaces,
	}
	if err := revocations.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the ClientIDBinding revocation controller: %w", err)
	}
	keys := &SigningKeyReconciler{
		Client:          mgr.GetClient(),
		APIReader:       mgr.GetAPIReader(),
		Clock:           o.Clock,
		Secret:          o.SigningKeySecret,
		Policy:          o.SigningKeys,
		StatusKeyPeriod: max(o.StatusKeyPeriod, 0),
	}
	if err := keys.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the signing-key controller: %w", err)
	}
	location := &TokenServerConfigMapReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		ConfigMap: types.NamespacedName{Namespace: o.SigningKeySecret.Namespace, Name: m2mv1alpha1.TokenServerConfigMap},
		IssuerURL: issuerURL, InClusterURL: o.InClusterURL, CASecret: r.CASecret, CABundleKey: r.CABundleKey,
	}
	if err := location.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the token server's ConfigMap controller: %w", err)
	}
	if !podClientSigner {
		return nil
	}
	return setupPodClientSigner(mgr, o)
}

// podClientSignerRuns reports whether the signer m2m.dev/pod-client runs: unless it is turned
// off, when the API server serves PodCertificateRequests in certificates.k8s.io/v1 (Kubernetes
// 1.37+, unless turned off there). Otherwise it logs why not, and the rest of the manager works
// without it.
func (o *Options) podClientSignerRuns(cfg *rest.Config) (bool, error) {
	logger := ctrl.Log.WithName("setup")
	if o.DisablePodClientSigner {
		logger.Info("the pod certificate signer is turned off", "signer", m2mv1alpha1.PodClientSignerName)
		return false, nil
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, err
	}
	gv := certificatesv1.SchemeGroupVersion.String()
	list, err := dc.ServerResourcesForGroupVersion(gv)
	if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("looking for the PodCertificateRequest API: %w", err)
	}
	if list != nil && slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == "podcertificaterequests" }) {
		return true, nil
	}
	logger.Info("the API server does not serve "+gv+" PodCertificateRequests; the pod certificate signer does not run", "signer", m2mv1alpha1.PodClientSignerName)
	return false, nil
}

// setupPodClientSigner registers the signer m2m.dev/pod-client and the controller of its CA.
func setupPodClientSigner(mgr ctrl.Manager, o Options) error {
	ns := o.SigningKeySecret.Namespace
	ca := &PodClientCA{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock,
		Secret:    types.NamespacedName{Namespace: ns, Name: podclientca.SecretName},
		ConfigMap: types.NamespacedName{Namespace: ns, Name: podclientca.ConfigMapName},
	}
	if err := (&PodClientCAReconciler{CA: ca}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the pod client CA controller: %w", err)
	}
	signer := &PodCertificateReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock, CA: ca}
	if err := signer.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: o.MaxConcurrentReconciles}); err != nil {
		return fmt.Errorf("setting up the pod certificate signer: %w", err)
	}
	return nil
}

// addProbes serves /healthz, and /readyz once the informers have synced, on the probe address.
func addProbes(mgr ctrl.Manager, probeAddr string) error {
	if probeAddr == "" || probeAddr == "0" {
		return nil
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("informers", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return fmt.Errorf("informers have not synced")
		}
		return nil
	})
}

// servingCertHosts are the names the serving certificate covers: the host of the URL pods use
// (the issuer's, or the in-cluster URL's when the issuer is a public door) and extra. Never the
// door's name: the Gateway or Ingress serves the public certificate, and clients trust this CA
// besides the system's roots, so whoever reads this certificate's key could otherwise answer for
// the public name.
func servingCertHosts(issuerURL, inClusterURL string, extra []string) ([]string, error) {
	u, err := url.Parse(inClusterOr(inClusterURL, issuerURL))
	if err != nil {
		return nil, err
	}
	hosts := []string{u.Hostname()}
	for _, h := range extra {
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts, nil
}

// setupServingCert registers the serving-certificate controller for o.ServingCert.
func setupServingCert(mgr ctrl.Manager, o Options, issuerURL string) error {
	sc := *o.ServingCert
	d := servingcert.DefaultPolicy
	p := &sc.Policy
	for _, f := range []struct{ v, def *time.Duration }{{&p.CAValidity, &d.CAValidity}, {&p.CARenewBefore, &d.CARenewBefore}, {&p.Overlap, &d.Overlap}, {&p.CertValidity, &d.CertValidity}} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if sc.CASecret.Name == "" || sc.CertSecret.Name == "" {
		return fmt.Errorf("the serving certificate needs a CA Secret and a certificate Secret")
	}
	hosts, err := servingCertHosts(issuerURL, o.InClusterURL, sc.Hosts)
	if err != nil {
		return err
	}
	rec := &ServingCertReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock,
		CASecret: sc.CASecret, CertSecret: sc.CertSecret, Hosts: hosts, Policy: *p,
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the serving-certificate controller: %w", err)
	}
	return nil
}

// registerMetrics adds the manager's metrics to controller-runtime's registry, which its
// metrics endpoint serves. The counters are registered once per process; the fleet collector
// of the newest manager replaces an earlier one's (tests start several).
func registerMetrics(fleet *FleetCollector) {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(Rotations, RotationFailures, FleetErrors, UndecodableClients, StatusesRepaired, StatusPolicyInstalled)
	})
	fleetMu.Lock()
	defer fleetMu.Unlock()
	if currentFleet != nil {
		metrics.Registry.Unregister(currentFleet)
	}
	metrics.Registry.MustRegister(fleet)
	currentFleet = fleet
}

var (
	registerOnce sync.Once
	fleetMu      sync.Mutex
	currentFleet *FleetCollector
)

// newSourceWatcher reads source Secrets through the manager's own connection: the metadata of a
// namespace's Secrets through one watch, a source itself with an uncached GET.
func newSourceWatcher(mgr ctrl.Manager, perNamespace int) (*sourcewatch.Watcher, error) {
	mc, err := metadata.NewForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return nil, fmt.Errorf("a metadata client for source Secrets: %w", err)
	}
	api := mgr.GetAPIReader()
	return &sourcewatch.Watcher{
		ListWatch: sourcewatch.SecretMetadata(mc),
		Get: func(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
			s := &corev1.Secret{}
			return s, api.Get(ctx, key, s)
		},
		PerNamespace:    perNamespace,
		MaxValueBytes:   credentials.MaxSourceValueBytes,
		ManagedByLabel:  m2mv1alpha1.ManagedByLabel,
		ManagedByValue:  m2mv1alpha1.ManagedByValue,
		OptInAnnotation: m2mv1alpha1.SourceForAnnotation,
		ClientGroup:     m2mv1alpha1.GroupVersion.Group,
		ClientKind:      "M2MClient",
	}, nil
}
