package tokenserver

import (
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// RefusalsPerClient is how many refusals of each client a token server remembers for its
// owner (`kubectl m2m why`): the latest ones.
const RefusalsPerClient = 20

// refusalsPruneFloor is the number of clients with refusals below which the memory of
// refusals never looks for deleted clients.
const refusalsPruneFloor = 1024

// ClientPresence is a ClientSource that can say whether a client is still there, so that the
// refusals of deleted clients are forgotten.
type ClientPresence interface {
	// Present reports whether the client of that namespace, name and UID is cached.
	Present(key types.NamespacedName, uid types.UID) bool
}

// authMethod is how a refused request tried to authenticate, as far as parsing tells.
type authMethod uint8

const (
	methodNone authMethod = iota
	methodBasic
	methodPost
	methodPrivateKeyJWT
	methodWorkloadToken
)

var authMethodNames = [...]string{
	methodNone:          "none",
	methodBasic:         "client_secret_basic",
	methodPost:          "client_secret_post",
	methodPrivateKeyJWT: "private_key_jwt",
	methodWorkloadToken: "workload_token",
}

func (m authMethod) String() string { return authMethodNames[m] }

// methodOf reads the method from what parsing found: the authenticators decide on more, but
// their order (authenticatorOrder) sends an assertion whose iss is the client ID to
// private_key_jwt, and every other assertion to a workload path (ServiceAccount or federated).
func methodOf(req *tokenRequest) authMethod {
	switch {
	case req == nil:
		return methodNone
	case req.assertionGiven && req.assertionIssuer != "" && req.assertionIssuer == req.clientID:
		return methodPrivateKeyJWT
	case req.assertionGiven:
		return methodWorkloadToken
	case req.basic:
		return methodBasic
	case req.secretGiven:
		return methodPost
	}
	return methodNone
}

// refusalRecord is one refused request of a client. It holds nothing the caller sent but the
// way it authenticated: no secret, assertion or token.
type refusalRecord struct {
	at         int64 // Unix nanoseconds
	reason     *reason
	from       netip.Addr
	method     authMethod
	introspect bool
}

// clientRefusals are a client's latest refusals: a ring that grows to RefusalsPerClient.
type clientRefusals struct {
	uid   types.UID
	total uint64
	// next is where the next record goes once the ring is full.
	next int
	ring []refusalRecord
}

// refusalMemory remembers the latest refusals of each client that exists, in this process:
// RefusalsPerClient records of about 50 bytes each per client. A request whose client ID names
// no client is never remembered, since its ID is the caller's choice; a client's records are
// only ever pushed out by its own. Records of clients that are no longer cached are dropped
// whenever the number of clients with records has doubled since the last look, so the memory
// stays within twice the clients with refusals (and at least refusalsPruneFloor of them).
type refusalMemory struct {
	clock   clock.PassiveClock
	present ClientPresence // nil: never drops a client's records
	since   time.Time

	mu      sync.Mutex
	clients map[types.NamespacedName]*clientRefusals
	pruneAt int
}

func newRefusalMemory(clk clock.PassiveClock, clients ClientSource) *refusalMemory {
	m := &refusalMemory{clock: clk, since: clk.Now(), clients: map[types.NamespacedName]*clientRefusals{}, pruneAt: refusalsPruneFloor}
	m.present, _ = clients.(ClientPresence)
	return m
}

// remember records a refusal of client.
func (m *refusalMemory) remember(client *CachedClient, rec refusalRecord) {
	key := types.NamespacedName{Namespace: client.Namespace, Name: client.Name}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.clients[key]
	if c == nil || c.uid != client.UID {
		// A client created again under the same name starts afresh.
		if c == nil && len(m.clients) >= m.pruneAt {
			m.prune()
		}
		c = &clientRefusals{uid: client.UID}
		m.clients[key] = c
	}
	c.total++
	if len(c.ring) < RefusalsPerClient {
		c.ring = append(c.ring, rec)
		return
	}
	c.ring[c.next] = rec
	c.next = (c.next + 1) % RefusalsPerClient
}

// prune drops the records of clients that are gone. Called with mu held.
func (m *refusalMemory) prune() {
	if m.present != nil {
		for key, c := range m.clients {
			if !m.present.Present(key, c.uid) {
				delete(m.clients, key)
			}
		}
	}
	m.pruneAt = max(2*len(m.clients), refusalsPruneFloor)
}

// recall returns a client's records, oldest first, and how many refusals it had in all.
func (m *refusalMemory) recall(key types.NamespacedName) ([]refusalRecord, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.clients[key]
	if c == nil {
		return nil, 0
	}
	out := make([]refusalRecord, 0, len(c.ring))
	out = append(out, c.ring[c.next:]...)
	out = append(out, c.ring[:c.next]...)
	return out, c.total
}

// size is the number of clients with records.
func (m *refusalMemory) size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.clients)
}

// fail answers r with e, and counts, logs and remembers the refusal. req is nil when the request
// did not parse. client is the client that the request's client ID names (nil when none does),
// whether or not the request proved to be that client's: its namespace labels the metrics, so
// that a wrong secret counts where the client lives. A client ID that names no client labels
// none, so callers create no series of their choosing.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, e *oauthError, req *tokenRequest, client *CachedClient) {
	s.metrics.failures.WithLabelValues(append([]string{e.reason.name}, s.metrics.labels(client)...)...).Inc()
	rec := refusalRecord{
		at:         s.cfg.Clock.Now().UnixNano(),
		reason:     e.reason,
		from:       s.cfg.ClientAddresses.of(r),
		method:     methodOf(req),
		introspect: strings.HasSuffix(r.URL.Path, introspectPath),
	}
	if client != nil {
		s.refusals.remember(client, rec)
	}
	logRefusal(s.cfg.Log, rec, client)
	writeError(w, e)
}

// logRefusal logs a refusal at debug level (V(1), --zap-log-level=debug). The client ID is
// logged only for a client that exists: an unknown one is whatever the caller chose to send.
func logRefusal(log logr.Logger, rec refusalRecord, client *CachedClient) {
	debug := log.V(1)
	if !debug.Enabled() {
		return
	}
	kv := []any{"reason", rec.reason.name, "error", rec.reason.code, "endpoint", endpointName(rec.introspect), "method", rec.method.String(), "remote", rec.from.String()}
	if client != nil {
		kv = append(kv, "namespace", client.Namespace, "name", client.Name, "clientID", client.Status.ClientID)
	}
	debug.Info("refused a request", kv...)
}

func endpointName(introspect bool) string {
	if introspect {
		return "introspect"
	}
	return "token"
}
