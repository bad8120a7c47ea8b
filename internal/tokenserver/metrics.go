package tokenserver

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	issued   *prometheus.CounterVec
	failures *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(cfg Config) (*metrics, error) {
	m := &metrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "m2m_tokens_issued_total",
			Help: "Access tokens issued, by client ID.",
		}, []string{"client"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "m2m_token_failures_total",
			Help: "Failed token and introspection requests, by reason and client ID (\"unknown\" before the client is authenticated).",
		}, []string{"reason", "client"}),
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
