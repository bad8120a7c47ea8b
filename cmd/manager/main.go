// Command manager runs the m2m-operator controllers: it keeps each M2MClient's credentials Secret
// and the accepted secret hashes in its status.
package main

import (
	// CA roots in the binary, for images without a CA bundle (make image builds from scratch).
	_ "golang.org/x/crypto/x509roots/fallback"

	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-logr/logr"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

func main() {
	var (
		o          controllers.Options
		namespaces string
		qps        float64
		burst      int
		zapOpts    = zap.Options{}
	)
	flag.StringVar(&o.IssuerURL, "issuer-url", "", "The token server's issuer URL (required). Secrets get issuer and token_url from it.")
	flag.StringVar(&o.InClusterURL, "in-cluster-url", "", "Where pods reach the token server (its Service) when the issuer is a public door under another name: Secrets then get token_url from it and public_token_url from the issuer, and the serving certificate covers its host. Empty means the issuer URL.")
	flag.StringVar(&namespaces, "watch-namespaces", "", "Comma-separated namespaces to manage M2MClients in. Empty means all namespaces.")
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	flag.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints; 0 disables them.")
	flag.BoolVar(&o.LeaderElection, "leader-elect", false, "Use leader election, so that only one replica reconciles at a time.")
	flag.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election lease. Defaults to the pod's namespace.")
	flag.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "How long a standby waits after the leader's last renewal before it takes the lease.")
	flag.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew the lease before it steps down; less than the lease duration.")
	flag.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "How often the leader renews and a standby tries to take the lease.")
	flag.IntVar(&o.MaxConcurrentReconciles, "max-concurrent-reconciles", controllers.DefaultMaxConcurrentReconciles, "How many M2MClients are reconciled at once.")
	flag.IntVar(&o.MaxSourcesPerNamespace, "max-sources-per-namespace", controllers.DefaultMaxSourcesPerNamespace, "How many distinct source Secrets (spec.authentication.source) the manager watches for one namespace; a client whose namespace is at the bound gets Ready False, SourceSecretRefused. -1: no bound.")
	flag.Float64Var(&qps, "kube-api-qps", 100, "Sustained queries per second to the API server.")
	flag.IntVar(&burst, "kube-api-burst", 200, "Burst of queries to the API server.")
	flag.StringVar(&o.StatusPolicyName, "status-policy-name", controllers.DefaultStatusPolicyName, "Name of the ValidatingAdmissionPolicy and its binding that let only this manager write M2MClient status; the manager says when they are missing (m2m_manager_status_policy_installed). The chart names them after its release.")
	keySecret := flag.String("signing-key-secret", signingkeys.DefaultSecret.String(), "namespace/name of the Secret that holds the JWT signing keys.")
	algorithm := flag.String("signing-algorithm", string(signingkeys.ES256), "Algorithm of new signing keys: ES256, RS256 or EdDSA. Changing it rotates to a key of the new algorithm.")
	flag.DurationVar(&o.SigningKeys.Period, "signing-key-rotation-period", signingkeys.DefaultPolicy.Period, "How long a signing key signs before the next takes over.")
	flag.DurationVar(&o.SigningKeys.Prepublish, "signing-key-prepublish", signingkeys.DefaultPolicy.Prepublish, "How long a new signing key is in the JWKS before it signs.")
	flag.DurationVar(&o.StatusKeyPeriod, "status-key-rotation-period", statusmac.DefaultPeriod, "How long the key that authenticates M2MClient status (kept in the signing-key Secret) signs before the next takes over; negative never rotates.")
	certSecret := flag.String("serving-cert-secret", "", "namespace/name of the kubernetes.io/tls Secret of the token server's serving certificate, which the manager issues and rotates from its own CA; empty: the manager issues none (an https issuer then needs another source, such as cert-manager).")
	caSecret := flag.String("ca-secret", "", "namespace/name of the Secret of the CA that signs the serving certificate; defaults to m2m-ca in the serving certificate's namespace.")
	caBundleSecret := flag.String("ca-bundle-secret", "", "namespace/name of a Secret whose ca.crt signs the token server's certificate, issued by something else (cert-manager: the Certificate's Secret, labelled app.kubernetes.io/managed-by=m2m-operator so that the manager sees it); copied into credentials Secrets. Not with --serving-cert-secret.")
	certHosts := flag.String("serving-cert-hosts", "", "Comma-separated DNS names or IP addresses the serving certificate covers besides the issuer URL's host (the token server Service's names).")
	sc := controllers.ServingCertOptions{}
	flag.DurationVar(&sc.Policy.CertValidity, "serving-cert-validity", servingcert.DefaultPolicy.CertValidity, "Lifetime of a serving certificate; it is renewed after two thirds.")
	flag.DurationVar(&sc.Policy.CAValidity, "ca-validity", servingcert.DefaultPolicy.CAValidity, "Lifetime of a CA.")
	flag.DurationVar(&sc.Policy.CARenewBefore, "ca-renew-before", servingcert.DefaultPolicy.CARenewBefore, "How long before a CA expires its rotation starts.")
	flag.DurationVar(&sc.Policy.Overlap, "ca-overlap", servingcert.DefaultPolicy.Overlap, "How long a new CA is trusted before it signs, and an old one after: longer than pods take to see a changed Secret.")
	podClientSigner := flag.Bool("pod-client-signer", true, "Sign PodCertificateRequests of the signer m2m.dev/pod-client for pods of the ServiceAccounts an M2MClient names (spec.authentication.podCertificates), from a CA kept in the Secret m2m-pod-client-ca-key and published in the ConfigMap m2m-pod-client-ca of the signing-key Secret's namespace. Runs only when the API server serves certificates.k8s.io/v1 PodCertificateRequests.")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	o.DisablePodClientSigner = !*podClientSigner
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	// The container's memory limit sets the Go runtime's soft limit to 90% of it, unless
	// GOMEMLIMIT is set (or AUTOMEMLIMIT=off): the garbage collector then works harder before the
	// kernel's OOM killer would end the process. Without a cgroup limit (make dev, tests) the
	// runtime stays unlimited.
	_, _ = memlimit.Set(memlimit.WithProvider(memlimit.FromCgroup), memlimit.WithLogger(slog.New(logr.ToSlogHandler(ctrl.Log.WithName("memlimit")))))
	log := ctrl.Log.WithName("setup")

	for _, ns := range strings.Split(namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			o.WatchNamespaces = append(o.WatchNamespaces, ns)
		}
	}
	var err error
	if o.SigningKeySecret, err = signingkeys.ParseSecretRef(*keySecret); err != nil {
		fail(err)
	}
	if o.SigningKeys.Algorithm, err = signingkeys.ParseAlgorithm(*algorithm); err != nil {
		fail(err)
	}
	if *certSecret != "" {
		if sc.CertSecret, err = signingkeys.ParseSecretRef(*certSecret); err != nil {
			fail(fmt.Errorf("--serving-cert-secret: %w", err))
		}
		sc.CASecret = types.NamespacedName{Namespace: sc.CertSecret.Namespace, Name: "m2m-ca"}
		if *caSecret != "" {
			if sc.CASecret, err = signingkeys.ParseSecretRef(*caSecret); err != nil {
				fail(fmt.Errorf("--ca-secret: %w", err))
			}
		}
		for _, h := range strings.Split(*certHosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				sc.Hosts = append(sc.Hosts, h)
			}
		}
		o.ServingCert = &sc
	}
	if *caBundleSecret != "" {
		if o.CABundleSecret, err = signingkeys.ParseSecretRef(*caBundleSecret); err != nil {
			fail(fmt.Errorf("--ca-bundle-secret: %w", err))
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fail(err)
	}
	cfg.QPS, cfg.Burst = float32(qps), burst
	mgr, err := controllers.NewManager(cfg, o)
	if err != nil {
		fail(err)
	}
	log.Info("starting the manager", "issuer", o.IssuerURL, "namespaces", o.WatchNamespaces)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "manager:", err)
	os.Exit(1)
}
