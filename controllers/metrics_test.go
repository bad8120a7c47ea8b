package controllers

import (
	"fmt"
	"math/rand/v2"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// listedGauges is what the fleet collector reported when it listed every cached client at each
// scrape (its code before the counts, kept as the reference): "state/reason" to count, and
// "expiring" to the credentials expiring within the hour.
func listedGauges(list *m2mv1alpha1.M2MClientList, now time.Time) map[string]float64 {
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
	out := map[string]float64{"expiring": float64(expiring)}
	for k, n := range counts {
		out[k.state+"/"+k.reason] = float64(n)
	}
	return out
}

// listOf copies the cache's objects into a list the way controller-runtime's cache reader does
// for a List with UnsafeDisableDeepCopy: the pointers' structs into the list's items.
func listOf(t testing.TB, objs []any) *m2mv1alpha1.M2MClientList {
	list := &m2mv1alpha1.M2MClientList{}
	ros := make([]runtime.Object, 0, len(objs))
	for _, o := range objs {
		ros = append(ros, o.(*m2mv1alpha1.M2MClient))
	}
	if err := meta.SetList(list, ros); err != nil {
		t.Fatal(err)
	}
	return list
}

// fleetSource stands for the cache's M2MClient informer: it hands its handler over and says
// whether the initial list has been delivered.
type fleetSource struct {
	toolscache.ResourceEventHandlerRegistration // only HasSynced, below, is called
	handler                                     toolscache.ResourceEventHandler
	synced                                      bool
}

func (s *fleetSource) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	s.handler = h
	return s, nil
}

func (s *fleetSource) HasSynced() bool { return s.synced }

// scrape gathers the collector's client gauges as listedGauges reports them, and the number of
// FleetErrors the scrape added.
func scrape(t testing.TB, c *FleetCollector) (map[string]float64, float64) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	before := counterValue(t, FleetErrors)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if f.GetName() == "m2m_manager_credentials_expiring_within_hour" {
				out["expiring"] = m.GetGauge().GetValue()
			} else if l := m.GetLabel(); f.GetName() == "m2m_manager_clients" {
				// A metric's label pairs come sorted by name: reason, then state.
				out[l[1].GetValue()+"/"+l[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return out, counterValue(t, FleetErrors) - before
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return families[0].GetMetric()[0].GetCounter().GetValue()
}

func newTestFleet(t testing.TB, clock *clocktesting.FakeClock) (*FleetCollector, *fleetSource) {
	src := &fleetSource{synced: true}
	c := &FleetCollector{Reader: fake.NewClientBuilder().Build(), Clock: clock, KeySecret: signingkeys.DefaultSecret}
	if err := c.WatchClients(src); err != nil {
		t.Fatal(err)
	}
	return c, src
}

// randomClient is a version of the client named name with a status drawn from the values the
// gauges distinguish, expiries around now included.
func randomClient(r *rand.Rand, name string, now time.Time) *m2mv1alpha1.M2MClient {
	o := &m2mv1alpha1.M2MClient{}
	o.Namespace, o.Name = "team", name
	o.Status.State = []m2mv1alpha1.ClientState{"", m2mv1alpha1.ClientStateActive, m2mv1alpha1.ClientStateDisabled}[r.IntN(3)]
	if reason := []string{"", "CredentialsReady", "SecretWriteFailed", "SourceMissing"}[r.IntN(4)]; reason != "" {
		o.Status.Conditions = []metav1.Condition{{Type: m2mv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: reason}}
	}
	expiries := []*metav1.Time{
		nil,
		{Time: now},
		{Time: now.Add(-time.Minute)},
		{Time: now.Add(time.Minute)},
		{Time: now.Add(59 * time.Minute)},
		{Time: now.Add(time.Hour)},
		{Time: now.Add(90 * time.Minute)},
		{Time: now.Add(3 * time.Hour)},
	}
	for range r.IntN(4) {
		o.Status.AcceptedSecrets = append(o.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: "h", ExpiresAt: expiries[r.IntN(len(expiries))]})
	}
	return o
}

func TestTheClientGaugesKeptFromEventsEqualAListOfTheCacheAfterEachAddUpdateAndDelete(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	c, src := newTestFleet(t, clock)
	now := clock.Now()
	r := rand.New(rand.NewPCG(25, 1))
	cache := map[string]*m2mv1alpha1.M2MClient{}
	names := func() []string {
		var ns []string
		for n := range cache {
			ns = append(ns, n)
		}
		return ns
	}
	for step := range 2000 {
		var op string
		switch existing := names(); {
		case len(existing) == 0 || r.IntN(3) == 0:
			op = "add"
			o := randomClient(r, fmt.Sprintf("c%d", step), now)
			cache[o.Name] = o
			src.handler.OnAdd(o, false)
		case r.IntN(3) == 0:
			name := existing[r.IntN(len(existing))]
			old := cache[name]
			delete(cache, name)
			if r.IntN(2) == 0 {
				op = "delete"
				src.handler.OnDelete(old)
			} else {
				// A deletion the watch missed: the informer hands over the last version it held.
				op = "delete (final state unknown)"
				src.handler.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "team/" + name, Obj: old})
			}
		default:
			op = "update"
			name := existing[r.IntN(len(existing))]
			o := randomClient(r, name, now)
			src.handler.OnUpdate(cache[name], o)
			cache[name] = o
		}
		objs := make([]any, 0, len(cache))
		for _, o := range cache {
			objs = append(objs, o)
		}
		// The expiring gauge depends on the scrape's time as well as on the events.
		for _, at := range []time.Duration{0, 30 * time.Minute} {
			clock.SetTime(now.Add(at))
			got, errs := scrape(t, c)
			want := listedGauges(listOf(t, objs), now.Add(at))
			// The one error is the signing key's, which these tests do not write.
			if errs != 1 || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("step %d (%s), %s after: the gauges %v (%v errors), a list of the cache gives %v", step, op, at, got, errs, want)
			}
		}
		clock.SetTime(now)
	}
}

func TestTheClientGaugesAreAbsentAndCountedAsAnErrorUntilTheInformerHasSynced(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	c, src := newTestFleet(t, clock)
	src.synced = false
	src.handler.OnAdd(randomClient(rand.New(rand.NewPCG(1, 1)), "a", clock.Now()), true)
	got, errs := scrape(t, c)
	if len(got) != 0 || errs != 2 { // the client gauges and the missing signing key
		t.Fatalf("before the sync: gauges %v and %v errors; want none and 2", got, errs)
	}
	src.synced = true
	got, errs = scrape(t, c)
	if got["expiring"] != 0 || len(got) != 2 || errs != 1 {
		t.Fatalf("after the sync: gauges %v and %v errors; want the client's and 1", got, errs)
	}
}

// fleetOf is a collector whose counts have seen n clients, and a cache store holding them.
func fleetOf(t testing.TB, n int) (*FleetCollector, toolscache.Store) {
	clock := clocktesting.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	c, src := newTestFleet(t, clock)
	store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc})
	r := rand.New(rand.NewPCG(uint64(n), 2))
	for i := range n {
		o := randomClient(r, fmt.Sprintf("c%d", i), clock.Now())
		if err := store.Add(o); err != nil {
			t.Fatal(err)
		}
		src.handler.OnAdd(o, true)
	}
	return c, store
}

func TestAScrapeOfTheClientGaugesAllocatesNoMoreAt20000ClientsThanAt1000(t *testing.T) {
	bytes := map[int]uint64{}
	for _, n := range []int{1000, 20000} {
		c, _ := fleetOf(t, n)
		now := c.Clock.Now()
		_, _ = c.clients.metrics(now)
		var before, after goruntime.MemStats
		goruntime.ReadMemStats(&before)
		for range 20 {
			_, _ = c.clients.metrics(now)
		}
		goruntime.ReadMemStats(&after)
		bytes[n] = (after.TotalAlloc - before.TotalAlloc) / 20
	}
	// Listing the cache allocated about 900 bytes per client; the slack is under one byte per
	// client added, for what the runtime itself allocates meanwhile.
	if bytes[20000] > bytes[1000]+19000 {
		t.Fatalf("bytes allocated per scrape: %d at 1,000 clients, %d at 20,000", bytes[1000], bytes[20000])
	}
}

// BenchmarkFleetClientGauges compares a scrape's client gauges listed from the cache (the
// collector before the counts) with the counts kept from events. docs/benchmarks.md records it.
func BenchmarkFleetClientGauges(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		c, store := fleetOf(b, n)
		now := c.Clock.Now()
		b.Run(fmt.Sprintf("list/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				listedGauges(listOf(b, store.List()), now)
			}
		})
		b.Run(fmt.Sprintf("counts/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.clients.metrics(now)
			}
		})
	}
}
