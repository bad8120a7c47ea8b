package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// Counters of what the manager did, by label values from a closed set.
var (
	// Rotations counts credentials issued to replace others, by cause: Scheduled, Trigger,
	// Annotation, Algorithm, Revoke, Resumed, Source (a secret store wrote a new value into the
	// source Secret), or Recreated (the Secret or its credential was
	// deleted).
	Rotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "m2m_manager_rotations_total",
		Help: "Credentials issued to replace others, by cause (Scheduled, Trigger, Annotation, Algorithm, Revoke, Resumed, Source, Recreated, HolderStart).",
	}, []string{"cause"})
	// FleetErrors counts scrapes whose fleet gauges could not be read (they are then absent).
	FleetErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "m2m_manager_fleet_metric_errors_total",
		Help: "Scrapes whose fleet gauges (clients, expiring credentials, signing key, serving certificate) could not be read; those gauges are then absent.",
	})
	// RotationFailures counts credential writes that the API server refused (the reconcile is
	// retried with the same credential).
	RotationFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "m2m_manager_secret_write_failures_total",
		Help: "Writes of a credentials Secret that the API server refused, during a rotation or otherwise; each is retried.",
	})
	// UndecodableClients counts the M2MClient versions the manager's cache left out because they
	// did not decode.
	UndecodableClients = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "m2m_manager_undecodable_clients_total",
		Help: "M2MClient versions left out of the manager's cache because they did not decode; each is queued for repair.",
	})
	// StatusesRepaired counts the M2MClient statuses that did not decode and that the manager
	// removed, so that it rebuilds them.
	StatusesRepaired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "m2m_manager_statuses_repaired_total",
		Help: "M2MClient statuses the manager removed because they did not decode; it rebuilds each from the client's binding and Secret.",
	})
)

// FleetCollector reports, at each scrape, gauges read from the manager's cache: clients by state
// and Ready reason, accepted credentials that expire within the hour, the age of the signing key,
// and when the serving certificate expires.
type FleetCollector struct {
	Reader client.Reader
	// APIReader reads the certificate Secret when the cache lacks it (cert-manager's).
	APIReader  client.Reader
	Clock      clock.PassiveClock
	KeySecret  types.NamespacedName
	CertSecret types.NamespacedName // zero when the manager issues no serving certificate
}

var (
	clientsDesc  = prometheus.NewDesc("m2m_manager_clients", "M2MClients by state (Active, Disabled) and the reason of their Ready condition.", []string{"state", "reason"}, nil)
	expiringDesc = prometheus.NewDesc("m2m_manager_credentials_expiring_within_hour", "Accepted secrets and keys in their grace period that stop being accepted within the hour.", nil, nil)
	keyAgeDesc   = prometheus.NewDesc("m2m_manager_signing_key_age_seconds", "How long the active signing key has signed.", nil, nil)
	certDesc     = prometheus.NewDesc("m2m_manager_serving_cert_expiry_timestamp_seconds", "When the token server's serving certificate expires (Unix time).", nil, nil)
)

func (c *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- clientsDesc
	ch <- expiringDesc
	ch <- keyAgeDesc
	ch <- certDesc
}

func (c *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := c.Clock.Now()
	var list m2mv1alpha1.M2MClientList
	// Read-only: the cache's objects as they are, not a copy of each per scrape.
	if err := c.Reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		FleetErrors.Inc()
	} else {
		type key struct{ state, reason string }
		counts := map[key]int{}
		expiring := 0
		for i := range list.Items {
			o := &list.Items[i]
			reason := "Unknown"
			if ready := meta.FindStatusCondition(o.Status.Conditions, m2mv1alpha1.ConditionReady); ready != nil {
				reason = ready.Reason
			}
			state := string(o.Status.State)
			if state == "" {
				state = "Unknown"
			}
			counts[key{state, reason}]++
			for _, e := range o.Status.AcceptedSecrets {
				if e.ExpiresAt != nil && e.ExpiresAt.After(now) && e.ExpiresAt.Time.Before(now.Add(time.Hour)) {
					expiring++
				}
			}
		}
		for k, n := range counts {
			ch <- prometheus.MustNewConstMetric(clientsDesc, prometheus.GaugeValue, float64(n), k.state, k.reason)
		}
		ch <- prometheus.MustNewConstMetric(expiringDesc, prometheus.GaugeValue, float64(expiring))
	}
	s := &corev1.Secret{}
	if set, err := c.keys(ctx, s); err != nil {
		FleetErrors.Inc()
	} else if k := set.Active(); k != nil && k.ActiveAt != nil {
		ch <- prometheus.MustNewConstMetric(keyAgeDesc, prometheus.GaugeValue, now.Sub(*k.ActiveAt).Seconds())
	}
	if c.CertSecret.Name != "" {
		s := &corev1.Secret{}
		err := c.Reader.Get(ctx, c.CertSecret, s)
		if apierrors.IsNotFound(err) && c.APIReader != nil {
			err = c.APIReader.Get(ctx, c.CertSecret, s) // cert-manager's Secret may lack the label
		}
		cert, perr := servingcert.ParseCert(s.Data[servingcert.TLSCert])
		if err != nil || perr != nil {
			FleetErrors.Inc()
		} else {
			ch <- prometheus.MustNewConstMetric(certDesc, prometheus.GaugeValue, float64(cert.NotAfter.Unix()))
		}
	}
}

func (c *FleetCollector) keys(ctx context.Context, s *corev1.Secret) (*signingkeys.Set, error) {
	if err := c.Reader.Get(ctx, c.KeySecret, s); err != nil {
		return nil, err
	}
	return signingkeys.Parse(s.Data[signingkeys.DataKey])
}
