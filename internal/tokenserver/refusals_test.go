package tokenserver

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// logLines is a logger that keeps what it logs at up to verbosity.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger(verbosity int) logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{Verbosity: verbosity})
}

func (l *logLines) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// serveWith runs a Server of clients with cfg's other fields as given.
func serveWith(t *testing.T, clients ClientSource, cfg Config) (*Server, *fixture) {
	t.Helper()
	key, keys := staticKeys(t, signingkeys.ES256)
	clk := clocktesting.NewFakeClock(t0)
	cfg.IssuerURL, cfg.Clients, cfg.Keys, cfg.Clock = testIssuer, clients, keys, clk
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, &fixture{srv: srv, key: key, clock: clk}
}

// With debug logging on, a refused request is one line with its reason, OAuth error, client and
// address, and neither the secret presented nor an unknown client ID the caller chose.
func TestARefusalIsLoggedAtDebugLevelWithItsReasonAndClientButNotTheSecret(t *testing.T) {
	var logs logLines
	_, f := serveWith(t, mapClients{goodID: testClient(goodID, goodSecret)}, Config{Log: logs.logger(1)})
	const wrong = "a-wrong-secret-0123456789abcdefghijklmnopqrstuv"
	if code, _ := tokenFor(t, f, goodID, wrong); code != 401 {
		t.Fatalf("a wrong secret got %d", code)
	}
	const madeUp = "m2m-made-up-by-the-caller"
	tokenFor(t, f, madeUp, wrong)
	got := logs.all()
	for _, want := range []string{`"msg"="refused a request"`, `"reason"="wrong_secret"`, `"error"="invalid_client"`, `"namespace"="ns"`, `"name"="` + goodID + `"`, `"clientID"="` + goodID + `"`, `"method"="client_secret_post"`, `"remote"="127.0.0.1"`, `"reason"="unknown_client"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the debug log lacks %s:\n%s", want, got)
		}
	}
	for _, never := range []string{wrong, madeUp} {
		if strings.Contains(got, never) {
			t.Errorf("the debug log holds %q:\n%s", never, got)
		}
	}
}

// At the default level a refusal logs nothing: a flood of bad requests must not flood the log.
func TestARefusalLogsNothingAtTheDefaultLevel(t *testing.T) {
	var logs logLines
	_, f := serveWith(t, mapClients{goodID: testClient(goodID, goodSecret)}, Config{Log: logs.logger(0)})
	tokenFor(t, f, goodID, "a-wrong-secret-0123456789abcdefghijklmnopqrstuv")
	if got := logs.all(); got != "" {
		t.Fatalf("a refusal logged at the default level: %s", got)
	}
}

// A client's memory keeps its latest RefusalsPerClient refusals, oldest first, and counts them
// all; a request for a client ID that names no client is never remembered, however many come.
func TestTheLatestRefusalsOfAClientAreRememberedAndUnknownClientIDsTakeNoMemory(t *testing.T) {
	s, f := serveWith(t, mapClients{goodID: testClient(goodID, goodSecret)}, Config{})
	const refused = RefusalsPerClient + 5
	for i := range refused {
		f.clock.SetTime(t0.Add(time.Duration(i) * time.Second))
		tokenFor(t, f, goodID, "a-wrong-secret-0123456789abcdefghijklmnopqrstuv")
	}
	for i := range 2000 {
		tokenFor(t, f, fmt.Sprintf("m2m-made-up-%d", i), "guess")
	}
	recs, total := s.refusals.recall(types.NamespacedName{Namespace: "ns", Name: goodID})
	if total != refused || len(recs) != RefusalsPerClient {
		t.Fatalf("%d records of %d refusals, want %d of %d", len(recs), total, RefusalsPerClient, refused)
	}
	if first := time.Unix(0, recs[0].at); !first.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("the oldest record kept is of %s, want the sixth refusal's", first)
	}
	if recs[RefusalsPerClient-1].reason != reasonWrongSecret || recs[0].method != methodPost {
		t.Fatalf("the records say %s by %s", recs[0].reason.name, recs[0].method)
	}
	if n := s.refusals.size(); n != 1 {
		t.Fatalf("the memory holds %d clients after a flood of made-up client IDs, want 1", n)
	}
}

// A tenant that floods refusals of its own client pushes out only that client's records.
func TestAFloodOfOneClientsRefusalsKeepsAnotherNamespacesRecords(t *testing.T) {
	victim, flooder := clientIn("team-b", goodID, goodSecret), clientIn("team-a", "m2m-flooder", attackerSecret)
	s, f := serveWith(t, mapClients{goodID: victim, "m2m-flooder": flooder}, Config{})
	tokenFor(t, f, goodID, "the-victims-old-secret-0123456789abcdefghijk")
	for range 10 * RefusalsPerClient {
		tokenFor(t, f, "m2m-flooder", "not-it-0123456789abcdefghijklmnopqrstuvwxyz")
	}
	recs, _ := s.refusals.recall(types.NamespacedName{Namespace: "team-b", Name: goodID})
	if len(recs) != 1 || recs[0].reason != reasonWrongSecret {
		t.Fatalf("the victim's records after another namespace's flood: %v", recs)
	}
}

// Whoever may write status copies another namespace's client ID into its own client: refusals
// of that ID stay with the client the manager gave it, and none reach the copy's owner.
func TestAStatusClaimingAnotherClientsIDDoesNotGetItsRefusals(t *testing.T) {
	victim := clientIn("team-b", goodID, goodSecret)
	squatter := squatterOf(victim)
	s, f := serveWith(t, listClients{victim, squatter}, Config{})
	tokenFor(t, f, goodID, "the-victims-old-secret-0123456789abcdefghijk")
	if recs, _ := s.refusals.recall(types.NamespacedName{Namespace: "team-a", Name: squatter.Name}); len(recs) != 0 {
		t.Fatalf("the squatter sees %d refusals of the victim's ID", len(recs))
	}
	if recs, _ := s.refusals.recall(types.NamespacedName{Namespace: "team-b", Name: victim.Name}); len(recs) != 1 {
		t.Fatalf("the victim sees %d refusals, want 1", len(recs))
	}
}

// A request refused after the client authenticated (a scope it may not have) is remembered
// too, and a client deleted and created again under its name starts with no records.
func TestRefusalsAfterAuthenticationAreRememberedAndANewClientOfTheNameStartsAfresh(t *testing.T) {
	clients := mapClients{goodID: testClient(goodID, goodSecret)}
	s, f := serveWith(t, clients, Config{})
	f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret, "scope", "admin")})
	key := types.NamespacedName{Namespace: "ns", Name: goodID}
	if recs, _ := s.refusals.recall(key); len(recs) != 1 || recs[0].reason != reasonScopeNotAllowed {
		t.Fatalf("after a scope refusal the client has %v", recs)
	}
	again := testClient(goodID, goodSecret)
	again.UID = "a-new-uid"
	clients[goodID] = seal(again)
	tokenFor(t, f, goodID, "a-wrong-secret-0123456789abcdefghijklmnopqrstuv")
	if recs, total := s.refusals.recall(key); len(recs) != 1 || total != 1 || recs[0].reason != reasonWrongSecret {
		t.Fatalf("the client created again has %d records of %d refusals, want its own one", len(recs), total)
	}
}

// A wrong secret names a client without proving to be it: the metrics count it in the namespace
// of the client it names, where its owner looks, and its owner sees it; a made-up client ID
// counts under "unknown" and creates no series of its own.
func TestAWrongSecretCountsInItsClientsNamespaceAndAMadeUpIDUnderUnknown(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, f := serveWith(t, mapClients{goodID: testClient(goodID, goodSecret)}, Config{Registry: reg})
	tokenFor(t, f, goodID, "a-wrong-secret-0123456789abcdefghijklmnopqrstuv")
	for i := range 3 {
		tokenFor(t, f, fmt.Sprintf("m2m-made-up-%d", i), "a-wrong-secret-0123456789abcdefghijklmnopqrstuv")
	}
	if n := testutil.ToFloat64(s.metrics.failures.WithLabelValues("wrong_secret", "ns")); n != 1 {
		t.Fatalf("wrong_secret in the client's namespace: %v, want 1", n)
	}
	if n := testutil.ToFloat64(s.metrics.failures.WithLabelValues("unknown_client", unknown)); n != 3 {
		t.Fatalf("unknown_client under %q: %v, want 3", unknown, n)
	}
	if n := testutil.CollectAndCount(reg, "m2m_token_failures_total"); n != 2 {
		t.Fatalf("%d failure series, want 2", n)
	}
	if recs, _ := s.refusals.recall(types.NamespacedName{Namespace: "ns", Name: goodID}); len(recs) != 1 {
		t.Fatalf("the client's owner sees %d refusals, want 1", len(recs))
	}
}

// presence is a ClientPresence over a set of UIDs.
type presence map[types.UID]bool

func (p presence) Present(_ types.NamespacedName, uid types.UID) bool { return p[uid] }

// The records of deleted clients go once the memory has doubled: it holds at most twice the
// clients with refusals that exist (and refusalsPruneFloor), however many come and go.
func TestTheRecordsOfDeletedClientsGoOnceTheMemoryDoubles(t *testing.T) {
	live := presence{}
	m := newRefusalMemory(clocktesting.NewFakeClock(t0), struct {
		mapClients
		presence
	}{mapClients{}, live})
	client := func(i int) *m2mv1alpha1.M2MClient {
		return &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "churn", Name: fmt.Sprint("c", i), UID: types.UID(fmt.Sprint("uid-", i))}}
	}
	const keep = 10
	for i := range keep {
		live[client(i).UID] = true
	}
	for i := range 20 * refusalsPruneFloor {
		m.remember(NewCachedClient(client(i)), refusalRecord{reason: reasonWrongSecret})
		if n := m.size(); n > refusalsPruneFloor {
			t.Fatalf("after %d clients, of which %d exist, the memory holds %d", i+1, keep, n)
		}
	}
	for i := range keep {
		if recs, _ := m.recall(types.NamespacedName{Namespace: "churn", Name: client(i).Name}); len(recs) != 1 {
			t.Fatalf("client %d, which exists, lost its records", i)
		}
	}
}
