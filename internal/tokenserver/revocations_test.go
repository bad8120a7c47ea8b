package tokenserver

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// fakeRevocations is a RevocationSource whose content a test sets.
type fakeRevocations struct {
	mu      sync.Mutex
	entries map[string]int64
	changed chan struct{}
}

func (f *fakeRevocations) Revoked(func(*CachedClient) bool) Revocations {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Revocations{NotBefore: f.entries}
}

func (f *fakeRevocations) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeRevocations) set(entries map[string]int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = entries
	close(f.changed)
	f.changed = make(chan struct{})
}

func getList(t *testing.T, url, etag string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// parseList verifies the list with key and returns its claims.
func parseList(t *testing.T, key *signingkeys.Key, raw string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	tok, err := jwt.NewParser(jwt.WithTimeFunc(func() time.Time { return t0 })).ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return key.Signer().Public(), nil })
	if err != nil {
		t.Fatalf("the list does not verify with the token key: %v", err)
	}
	if tok.Header["typ"] != RevocationListType || tok.Header["kid"] != key.KID {
		t.Fatalf("header %v", tok.Header)
	}
	return claims
}

func TestTheRevocationListIsSignedWithTheTokenKeyAndALongPollAnswersWhenItChanges(t *testing.T) {
	key, keys := staticKeys(t, signingkeys.ES256)
	src := &fakeRevocations{entries: map[string]int64{"m2m-a": t0.Unix()}, changed: make(chan struct{})}
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{}, Keys: keys, Clock: clocktesting.NewFakeClock(t0), Revocations: src})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	resp, body := getList(t, srv.URL+RevocationsPath, "")
	claims := parseList(t, key, body)
	if claims["iss"] != testIssuer || claims["exp"].(float64)-claims["iat"].(float64) != revocationListTTL.Seconds() {
		t.Fatalf("claims %v", claims)
	}
	if nb := claims["not_before"].(map[string]any); len(nb) != 1 || nb["m2m-a"] != float64(t0.Unix()) {
		t.Fatalf("not_before %v", nb)
	}
	etag := resp.Header.Get("ETag")

	if resp, _ := getList(t, srv.URL+RevocationsPath+"?wait=1", etag); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("a long-poll on an unchanged list answered %d, want 304", resp.StatusCode)
	}

	type answer struct {
		resp *http.Response
		body string
	}
	done := make(chan answer, 1)
	go func() {
		resp, body := getList(t, srv.URL+RevocationsPath+"?wait=30", etag)
		done <- answer{resp, body}
	}()
	// The long-poll may start before or after this change; either way it answers with it.
	time.Sleep(100 * time.Millisecond)
	src.set(map[string]int64{"m2m-a": t0.Unix(), "m2m-b": RevokedForever})
	a := <-done
	if a.resp.StatusCode != http.StatusOK || a.resp.Header.Get("ETag") == etag {
		t.Fatalf("the long-poll answered %d with ETag %s after a change", a.resp.StatusCode, a.resp.Header.Get("ETag"))
	}
	if nb := parseList(t, key, a.body)["not_before"].(map[string]any); nb["m2m-b"] != float64(RevokedForever) {
		t.Fatalf("not_before after the change %v", nb)
	}

	var meta Metadata
	_, raw := getList(t, srv.URL+"/.well-known/oauth-authorization-server", "")
	if err := json.Unmarshal([]byte(raw), &meta); err != nil || meta.RevocationListURI != testIssuer+RevocationsPath {
		t.Fatalf("metadata names the list at %q (%v)", meta.RevocationListURI, err)
	}
}

func TestTheRevocationListIsGzippedForClientsThatAcceptIt(t *testing.T) {
	key, keys := staticKeys(t, signingkeys.ES256)
	src := &fakeRevocations{entries: map[string]int64{"m2m-a": t0.Unix()}, changed: make(chan struct{})}
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{}, Keys: keys, Clock: clocktesting.NewFakeClock(t0), Revocations: src})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, RevocationsPath, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	s.Handler().ServeHTTP(rec, req)
	if rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", rec.Header().Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	parseList(t, key, string(raw))
}

// revocationFixture is an InformerRevocations over stores filled by the test, never run.
func revocationFixture(t *testing.T) (*InformerRevocations, toolscache.Store, toolscache.Store) {
	t.Helper()
	_, keys := staticKeys(t, signingkeys.ES256)
	newInformer := func(obj runtime.Object) toolscache.SharedIndexInformer {
		return toolscache.NewSharedIndexInformer(&toolscache.ListWatch{}, obj, 0, toolscache.Indexers{})
	}
	clients := &InformerClients{informers: []toolscache.SharedIndexInformer{newInformer(&m2mv1alpha1.M2MClient{})}}
	r := &InformerRevocations{clients: clients, bindings: newInformer(&m2mv1alpha1.ClientIDBinding{}), changed: make(chan struct{}), deleted: map[string]seenClient{}, disabled: map[string]seenClient{}, now: func() time.Time { return t0 }}
	r.trusted = func(c *CachedClient) bool { return keys.current().trustsClientID(c) }
	return r, convertingStore{clients.informers[0].GetStore()}, r.bindings.GetStore()
}

// convertingStore is an informer's store that converts the M2MClients a test adds as the
// informer's transform does.
type convertingStore struct{ toolscache.Store }

func (s convertingStore) Add(obj any) error    { return s.Store.Add(convertForStore(obj)) }
func (s convertingStore) Update(obj any) error { return s.Store.Update(convertForStore(obj)) }
func (s convertingStore) Delete(obj any) error { return s.Store.Delete(convertForStore(obj)) }

func convertForStore(obj any) any {
	converted, _ := cacheable(obj)
	return converted
}

func binding(id string, revokedBefore *metav1.Time, deletedAt bool) *m2mv1alpha1.ClientIDBinding {
	b := &m2mv1alpha1.ClientIDBinding{ObjectMeta: metav1.ObjectMeta{Name: id, UID: types.UID(id)}, Spec: m2mv1alpha1.ClientIDBindingSpec{ClientID: id, Namespace: "ns", Name: id}}
	b.Status.TokensRevokedBefore = revokedBefore
	if deletedAt {
		b.Status.DeletedAt = revokedBefore
	}
	return b
}

func TestTheListRevokesDisabledRevokedAndDeletedClientsAndNeverAForgedClientID(t *testing.T) {
	r, clients, bindings := revocationFixture(t)
	t1, t2 := metav1.NewTime(t0.Add(-2*time.Minute)), metav1.NewTime(t0.Add(-time.Minute))

	revoked := testClient("m2m-revoked", goodSecret)
	revoked.Spec.RevokeTokensIssuedBefore = &t1
	disabled := testClient("m2m-disabled", goodSecret)
	disabled.Spec.Disabled = true
	// A tenant writes a victim's ID into its own status: no valid MAC, so nothing is published.
	forged := testClient("m2m-forger", goodSecret)
	forged.Status.ClientID = "m2m-victim"
	forged.Spec.Disabled = true
	forged.Spec.RevokeTokensIssuedBefore = &t2
	plain := testClient("m2m-plain", goodSecret)
	deleted := testClient("m2m-deleted", goodSecret)
	for _, c := range []*m2mv1alpha1.M2MClient{revoked, disabled, forged, plain, deleted} {
		if err := clients.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	// Every client's ID is bound to it, but the forger's victim's ID is bound elsewhere.
	for _, c := range []*m2mv1alpha1.M2MClient{revoked, disabled, plain, deleted} {
		_ = bindings.Add(binding(c.Status.ClientID, nil, false))
	}
	_ = bindings.Add(binding("m2m-victim", nil, false))
	// A client deleted while no token server ran: the manager's record alone.
	_ = bindings.Add(binding("m2m-gone", &t1, true))
	// A client disabled and enabled again: its tokens from before stay refused.
	_ = bindings.Add(binding("m2m-plain", &t2, false))

	if err := clients.Delete(deleted); err != nil {
		t.Fatal(err)
	}
	r.clientDeleted(NewCachedClient(deleted))

	want := map[string]int64{
		"m2m-revoked":  t1.Unix(),
		"m2m-disabled": RevokedForever,
		"m2m-gone":     t1.Unix(),
		"m2m-plain":    t2.Unix(),
		"m2m-deleted":  RevokedForever,
	}
	if got := r.Revoked(r.trusted).NotBefore; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("revoked %v, want %v", got, want)
	}

	// Before status MACs are enforced every client ID is believed; the binding, which only the
	// manager writes, still keeps the forger from revoking its victim's tokens.
	if got, ok := r.Revoked(func(*CachedClient) bool { return true }).NotBefore["m2m-victim"]; ok {
		t.Fatalf("a forged client ID, believed, revoked its victim's tokens before %d", got)
	}

	// Once the manager records the deletion, its record replaces this process's memory.
	_ = bindings.Add(binding("m2m-deleted", &t2, true))
	want["m2m-deleted"] = t2.Unix()
	if got := r.Revoked(r.trusted).NotBefore; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the manager's record: %v, want %v", got, want)
	}
}

// BenchmarkRevocationList100k builds and signs a list of 100,000 revoked clients with generated
// IDs, and reports its size, plain and gzipped.
func BenchmarkRevocationList100k(b *testing.B) {
	_, keys := staticKeys(b, signingkeys.ES256)
	entries := make(map[string]int64, 100000)
	for range 100000 {
		id, err := credentials.NewClientID()
		if err != nil {
			b.Fatal(err)
		}
		entries[id] = t0.Unix()
	}
	src := &fakeRevocations{entries: entries, changed: make(chan struct{})}
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{}, Keys: keys, Clock: clocktesting.NewFakeClock(t0), Revocations: src})
	if err != nil {
		b.Fatal(err)
	}
	var doc *revocationDoc
	for b.Loop() {
		s.revocationList.doc = nil
		if doc, err = s.revocationList.current(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(doc.jwt)), "bytes")
	b.ReportMetric(float64(len(doc.gzipped)), "gzip-bytes")
}

// Long-polls past the bound are answered at once instead of held, so that requests for the list
// cannot make a replica hold connections and goroutines without bound; those under it still wait.
func TestLongPollsPastTheWaitersBoundAreAnsweredAtOnce(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	src := &fakeRevocations{entries: map[string]int64{"m2m-a": t0.Unix()}, changed: make(chan struct{})}
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{}, Keys: keys, Clock: clocktesting.NewFakeClock(t0), Revocations: src, RevocationWaiters: 2})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	resp, _ := getList(t, srv.URL+RevocationsPath, "")
	etag := resp.Header.Get("ETag")

	held := make(chan int, 2)
	for range 2 {
		go func() {
			resp, _ := getList(t, srv.URL+RevocationsPath+"?wait=30", etag)
			held <- resp.StatusCode
		}()
	}
	for s.revocationWaiting.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	// The third is answered while the first two are still held.
	if resp, _ := getList(t, srv.URL+RevocationsPath+"?wait=30", etag); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("the long-poll past the bound answered %d, want 304", resp.StatusCode)
	}
	select {
	case code := <-held:
		t.Fatalf("a long-poll under the bound was answered (%d) before the list changed", code)
	default:
	}
	src.set(map[string]int64{})
	for range 2 {
		if code := <-held; code != http.StatusOK {
			t.Fatalf("a held long-poll answered %d after the change, want 200", code)
		}
	}
	if n := s.revocationWaiting.Load(); n != 0 {
		t.Fatalf("%d waiters counted after every long-poll ended", n)
	}
}

// A client deleted again after the manager recorded an earlier deletion of its ID (re-created
// and deleted while the manager was away) stays refused: the old record does not cover it.
func TestADeletionTheManagerMissedStaysRevokedDespiteAnEarlierRecordOfTheID(t *testing.T) {
	r, clients, bindings := revocationFixture(t)
	earlier := metav1.NewTime(t0.Add(-time.Hour))
	_ = bindings.Add(binding("m2m-b", &earlier, true))
	again := testClient("m2m-b", goodSecret)
	again.CreationTimestamp = metav1.NewTime(t0.Add(-time.Minute))
	_ = clients.Add(again)
	_ = clients.Delete(again)
	r.clientDeleted(NewCachedClient(again))
	if got := r.Revoked(r.trusted).NotBefore["m2m-b"]; got != RevokedForever {
		t.Fatalf("the client deleted after the recorded deletion: not-before %d, want RevokedForever", got)
	}
	recorded := metav1.NewTime(t0)
	_ = bindings.Update(binding("m2m-b", &recorded, true))
	if got := r.Revoked(r.trusted).NotBefore["m2m-b"]; got != recorded.Unix() {
		t.Fatalf("once the manager records this deletion: %d, want its record %d", got, recorded.Unix())
	}
}

// A disable and enable the manager did not see still revoke the tokens issued before, while
// this process runs, until the binding records them.
func TestADisableTheManagerMissedRevokesTheEarlierTokensUntilTheBindingRecordsIt(t *testing.T) {
	r, clients, bindings := revocationFixture(t)
	c := testClient("m2m-c", goodSecret)
	_ = bindings.Add(binding("m2m-c", nil, false))
	c.Spec.Disabled = true
	_ = clients.Add(c)
	r.sawDisabled(NewCachedClient(c))
	enabled := c.DeepCopy()
	enabled.Spec.Disabled = false
	_ = clients.Update(enabled)
	want := t0.Add(time.Second).Unix()
	if got := r.Revoked(r.trusted).NotBefore["m2m-c"]; got != want {
		t.Fatalf("after an enable the manager missed: not-before %d, want %d", got, want)
	}
	marked := metav1.NewTime(t0.Add(time.Second))
	_ = bindings.Update(binding("m2m-c", &marked, false))
	got := r.Revoked(r.trusted).NotBefore["m2m-c"]
	if _, kept := r.disabled["m2m-c"]; got != marked.Unix() || kept {
		t.Fatal("the binding's record did not replace this process's memory")
	}
}

// One namespace's churn of revocations cannot grow the list past its bound: its oldest
// entries go, and other namespaces keep all of theirs.
func TestANamespacesRevocationsPastTheBoundLeaveOutItsOldestAndNoOtherNamespaces(t *testing.T) {
	entries := map[string]int64{"other-1": 1, "other-2": 2}
	for i := range maxRevocationsPerNamespace + 5 {
		entries[fmt.Sprintf("churn-%05d", i)] = int64(1000 + i)
	}
	capPerNamespace(entries, nil, func(id string) string { return id[:5] })
	churn := 0
	for id := range entries {
		if id[:5] == "churn" {
			churn++
		}
	}
	if churn != maxRevocationsPerNamespace || entries["other-1"] != 1 || entries["other-2"] != 2 {
		t.Fatalf("%d entries of the churning namespace (bound %d); the others: %d, %d", churn, maxRevocationsPerNamespace, entries["other-1"], entries["other-2"])
	}
	if _, kept := entries["churn-00000"]; kept {
		t.Fatal("the oldest entry of the churning namespace was kept")
	}
	if _, kept := entries[fmt.Sprintf("churn-%05d", maxRevocationsPerNamespace+4)]; !kept {
		t.Fatal("the newest entry of the churning namespace was left out")
	}
}

// countingRevocations is fakeRevocations that counts its reads.
type countingRevocations struct {
	fakeRevocations
	reads atomic.Int64
}

func (c *countingRevocations) Revoked(trusted func(*CachedClient) bool) Revocations {
	c.reads.Add(1)
	return c.fakeRevocations.Revoked(trusted)
}

// Every long-poll is woken by a change and asks for the list: one change is one rebuild, not
// one per waiter, so that many waiters cannot keep the list's lock held rebuilding.
func TestOneChangeIsOneRebuildHoweverManyWaitersAsk(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	src := &countingRevocations{fakeRevocations: fakeRevocations{entries: map[string]int64{"m2m-a": t0.Unix()}, changed: make(chan struct{})}}
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{}, Keys: keys, Clock: clocktesting.NewFakeClock(t0), Revocations: src})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.revocationList.current(); err != nil {
		t.Fatal(err)
	}
	src.set(map[string]int64{"m2m-a": t0.Unix(), "m2m-b": t0.Unix()})
	before := src.reads.Load()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, err := s.revocationList.current(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := src.reads.Load() - before; n != 1 {
		t.Fatalf("one change read the source %d times for 32 callers", n)
	}
}

// A disabled client's list entry refuses every token, and its floor keeps the tokens issued
// before the disable refused at a verifier that later takes a list without the entry (a lagging
// replica): the floor is published beside it.
func TestADisabledClientIsRefusedWholeAndItsFloorIsPublished(t *testing.T) {
	r, clients, bindings := revocationFixture(t)
	c := testClient("m2m-d", goodSecret)
	c.Spec.Disabled = true
	_ = clients.Add(c)
	_ = bindings.Add(binding("m2m-d", nil, false))
	r.sawDisabled(NewCachedClient(c))
	got := r.Revoked(r.trusted)
	if got.NotBefore["m2m-d"] != RevokedForever || got.Floor["m2m-d"] != t0.Add(time.Second).Unix() {
		t.Fatalf("not-before %d, floor %d; want RevokedForever and the second after the disable was seen (%d)", got.NotBefore["m2m-d"], got.Floor["m2m-d"], t0.Add(time.Second).Unix())
	}
}

// A spec revocation of the tokens issued before a time still to come refuses every token until
// then, and its floor is now: a mistaken year 3000 cannot stay behind in verifiers for good.
func TestASpecRevocationInTheFutureRefusesEveryTokenAndPublishesNoFutureTime(t *testing.T) {
	r, clients, bindings := revocationFixture(t)
	c := testClient("m2m-f", goodSecret)
	future := metav1.NewTime(t0.Add(24 * 365 * time.Hour))
	c.Spec.RevokeTokensIssuedBefore = &future
	_ = clients.Add(c)
	_ = bindings.Add(binding("m2m-f", nil, false))
	got := r.Revoked(r.trusted)
	if got.NotBefore["m2m-f"] != RevokedForever || got.Floor["m2m-f"] != t0.Add(time.Second).Unix() {
		t.Fatalf("not-before %d, floor %d; want RevokedForever and now (%d)", got.NotBefore["m2m-f"], got.Floor["m2m-f"], t0.Add(time.Second).Unix())
	}
}

// A client created after its binding (a second client of the ID) whose UID the binding does not
// record yet revokes the tokens issued before its creation, before the manager gets to it.
func TestASecondClientOfAnIDRevokesTheFirstOnesTokensBeforeTheManagerRecordsIt(t *testing.T) {
	r, clients, bindings := revocationFixture(t)
	b := binding("m2m-s", nil, false)
	b.CreationTimestamp = metav1.NewTime(t0.Add(-time.Hour))
	b.Status.ClientUID = "uid-first"
	_ = bindings.Add(b)
	c := testClient("m2m-s", goodSecret) // UID uid-m2m-s
	c.CreationTimestamp = metav1.NewTime(t0.Add(-time.Minute))
	_ = clients.Add(c)
	if got := r.Revoked(r.trusted).NotBefore["m2m-s"]; got != c.CreationTimestamp.Unix() {
		t.Fatalf("not-before %d, want the second client's creation %d", got, c.CreationTimestamp.Unix())
	}
	b = b.DeepCopy()
	b.Status.ClientUID = string(c.UID)
	b.CreationTimestamp = c.CreationTimestamp
	_ = bindings.Update(b)
	if _, listed := r.Revoked(r.trusted).NotBefore["m2m-s"]; listed {
		t.Fatal("a client its binding records is listed without a revocation")
	}
}

// The cap counts a namespace's entries by the bindings' namespaces, and never leaves out a client
// whose every token is refused.
func TestTheCapCountsEntriesByTheBindingsNamespaceAndKeepsEveryDisabledClient(t *testing.T) {
	r, clients, bindings := revocationFixture(t)
	for i := range maxRevocationsPerNamespace + 10 {
		at := metav1.NewTime(t0.Add(-time.Duration(i+1) * time.Second))
		_ = bindings.Add(binding(fmt.Sprintf("m2m-ns-%05d", i), &at, true)) // namespace "ns"
	}
	c := testClient("m2m-off", goodSecret) // namespace "ns"
	c.Spec.Disabled = true
	_ = clients.Add(c)
	// Its own finite time is older than every other entry's.
	old := metav1.NewTime(t0.Add(-time.Hour))
	_ = bindings.Add(binding("m2m-off", &old, false))
	all := r.Revoked(r.trusted)
	got := all.NotBefore
	if got["m2m-off"] != RevokedForever || all.Floor["m2m-off"] != old.Unix() {
		t.Fatalf("the disabled client: not-before %d, floor %d; the cap left out its finite time", got["m2m-off"], all.Floor["m2m-off"])
	}
	if len(got) != maxRevocationsPerNamespace+1 {
		t.Fatalf("%d entries, want the cap's %d and the disabled client", len(got), maxRevocationsPerNamespace)
	}
}
