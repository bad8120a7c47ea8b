package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
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
// and when the serving certificate expires. The client gauges come from counts that the cache's
// events keep (WatchClients), so that a scrape does not walk every client.
type FleetCollector struct {
	Reader client.Reader
	// APIReader reads the certificate Secret when the cache lacks it (cert-manager's).
	APIReader  client.Reader
	Clock      clock.PassiveClock
	KeySecret  types.NamespacedName
	CertSecret types.NamespacedName // zero when the manager issues no serving certificate

	clients *fleetCounts // nil until WatchClients
}

var (
	clientsDesc  = prometheus.NewDesc("m2m_manager_clients", "M2MClients by state (Active, Disabled) and the reason of their Ready condition.", []string{"state", "reason"}, nil)
	expiringDesc = prometheus.NewDesc("m2m_manager_credentials_expiring_within_hour", "Accepted secrets and keys in their grace period that stop being accepted within the hour.", nil, nil)
	keyAgeDesc   = prometheus.NewDesc("m2m_manager_signing_key_age_seconds", "How long the active signing key has signed.", nil, nil)
	certDesc     = prometheus.NewDesc("m2m_manager_serving_cert_expiry_timestamp_seconds", "When the token server's serving certificate expires (Unix time).", nil, nil)
)

// eventSource is the part of an informer (controller-runtime's or client-go's) that WatchClients uses.
type eventSource interface {
	AddEventHandler(toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}

// WatchClients makes the client gauges follow inf, the cache's M2MClient informer. Until inf has
// delivered its initial list, scrapes count as FleetErrors and leave those gauges out, as a list
// of a cache that has not synced did.
func (c *FleetCollector) WatchClients(inf eventSource) error {
	counts := newFleetCounts()
	reg, err := inf.AddEventHandler(counts)
	if err != nil {
		return err
	}
	counts.synced = reg.HasSynced
	c.clients = counts
	return nil
}

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
	if ms, ok := c.clients.metrics(now); !ok {
		FleetErrors.Inc()
	} else {
		for _, m := range ms {
			ch <- m
		}
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

// fleetCounts is the M2MClient side of the fleet gauges, kept by the informer's events: each
// event subtracts what the old version counted and adds what the new one counts. A scrape then
// costs the number of distinct (state, reason) pairs and of distinct grace-period expiries, not
// the number of clients; listing the cache at each scrape copied every cached object's struct
// (86 MiB and 0.15 to 0.3 s per scrape at 100,000 clients, docs/benchmarks.md).
type fleetCounts struct {
	mu      sync.Mutex
	byState map[fleetKey]int
	// expiries counts the accepted entries that have an expiry, by that expiry (in UTC without a
	// monotonic reading, so that equal instants are equal keys): whether one expires within the
	// hour depends on the time of the scrape.
	expiries map[time.Time]int
	synced   func() bool
}

type fleetKey struct{ state, reason string }

func newFleetCounts() *fleetCounts {
	return &fleetCounts{byState: map[fleetKey]int{}, expiries: map[time.Time]int{}}
}

func (f *fleetCounts) OnAdd(obj any, _ bool) { f.change(nil, obj) }

func (f *fleetCounts) OnUpdate(oldObj, newObj any) { f.change(oldObj, newObj) }

func (f *fleetCounts) OnDelete(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj // the last version the cache held, which is what was counted
	}
	f.change(obj, nil)
}

func (f *fleetCounts) change(oldObj, newObj any) {
	o, _ := oldObj.(*m2mv1alpha1.M2MClient)
	n, _ := newObj.(*m2mv1alpha1.M2MClient)
	f.mu.Lock()
	defer f.mu.Unlock()
	if o != nil {
		f.count(o, -1)
	}
	if n != nil {
		f.count(n, 1)
	}
}

func (f *fleetCounts) count(o *m2mv1alpha1.M2MClient, d int) {
	k := fleetKeyOf(o)
	if f.byState[k] += d; f.byState[k] == 0 {
		delete(f.byState, k)
	}
	for _, e := range o.Status.AcceptedSecrets {
		if e.ExpiresAt == nil {
			continue
		}
		t := e.ExpiresAt.Round(0).UTC()
		if f.expiries[t] += d; f.expiries[t] == 0 {
			delete(f.expiries, t)
		}
	}
}

func fleetKeyOf(o *m2mv1alpha1.M2MClient) fleetKey {
	k := fleetKey{state: string(o.Status.State), reason: "Unknown"}
	if ready := meta.FindStatusCondition(o.Status.Conditions, m2mv1alpha1.ConditionReady); ready != nil {
		k.reason = ready.Reason
	}
	if k.state == "" {
		k.state = "Unknown"
	}
	return k
}

// metrics returns the client gauges at now, or false before the informer has synced. The
// metrics are built under the lock and sent after it, so that a slow scrape never holds up the
// informer's events.
func (f *fleetCounts) metrics(now time.Time) ([]prometheus.Metric, bool) {
	if f == nil || f.synced == nil || !f.synced() {
		return nil, false
	}
	hour := now.Add(time.Hour)
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := make([]prometheus.Metric, 0, len(f.byState)+1)
	for k, n := range f.byState {
		ms = append(ms, prometheus.MustNewConstMetric(clientsDesc, prometheus.GaugeValue, float64(n), k.state, k.reason))
	}
	expiring := 0
	for t, n := range f.expiries {
		if t.After(now) && t.Before(hour) {
			expiring += n
		}
	}
	return append(ms, prometheus.MustNewConstMetric(expiringDesc, prometheus.GaugeValue, float64(expiring))), true
}

func (c *FleetCollector) keys(ctx context.Context, s *corev1.Secret) (*signingkeys.Set, error) {
	if err := c.Reader.Get(ctx, c.KeySecret, s); err != nil {
		return nil, err
	}
	return signingkeys.Parse(s.Data[signingkeys.DataKey])
}
