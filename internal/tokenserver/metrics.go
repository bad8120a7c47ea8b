package tokenserver

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	issued    *prometheus.CounterVec
	failures  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	perClient bool
}

// unknown labels a failure of a request whose client ID names no client (or that has none).
const unknown = "unknown"

// labels are the namespace, and with per-client metrics the client ID, of client (nil: unknown).
// By namespace alone, the series are bounded by the namespaces, whatever the number of clients.
func (m *metrics) labels(client *CachedClient) []string {
	ns, id := unknown, unknown
	if client != nil {
		ns, id = client.Namespace, client.Status.ClientID
	}
	if m.perClient {
		return []string{ns, id}
	}
	return []string{ns}
}

func newMetrics(cfg Config) (*metrics, error) {
	labels := []string{"namespace"}
	by := "namespace"
	if cfg.PerClientMetrics {
		labels, by = append(labels, "client"), "namespace and client ID"
	}
	m := &metrics{
		perClient: cfg.PerClientMetrics,
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "m2m_tokens_issued_total",
			Help: "Access tokens issued, by " + by + ".",
		}, labels),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "m2m_token_failures_total",
			Help: "Failed token and introspection requests, by reason and " + by + " (\"unknown\" when the client ID names no client).",
		}, append([]string{"reason"}, labels...)),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "m2m_request_duration_seconds",
			Help:    "Time to answer a request, by endpoint.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"endpoint"}),
	}
	cs := []prometheus.Collector{m.issued, m.failures, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	if cfg.Staleness != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "m2m_client_cache_staleness_seconds",
			Help: "How far behind the API server the M2MClient cache may be: 0 while its watch is open, else the time since the last message from the API server.",
		}, func() float64 { return cfg.Staleness().Seconds() }))
	}
	if cfg.KeyLoadErrors != nil {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "m2m_signing_key_load_errors_total",
			Help: "Versions of the signing-key Secret that did not load; the keys loaded before stay in use.",
		}, func() float64 { return float64(cfg.KeyLoadErrors()) }))
	}
	if cfg.CachedClients != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "m2m_clients_cached",
			Help: "M2MClients in the token server's cache.",
		}, func() float64 { return float64(cfg.CachedClients()) }))
	}
	if cfg.UndecodableClients != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "m2m_clients_undecodable",
			Help: "M2MClients left out of the token server's cache because they do not decode (the log names them); they get no tokens.",
		}, func() float64 { return float64(cfg.UndecodableClients()) }))
	}
	for _, c := range cs {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// timed observes the latency of an endpoint's handler.
func (m *metrics) timed(endpoint string, h http.HandlerFunc) http.Handler {
	return promhttp.InstrumentHandlerDuration(m.latency.MustCurryWith(prometheus.Labels{"endpoint": endpoint}), h)
}
