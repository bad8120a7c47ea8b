package tokenserver

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// RevocationsPath serves the revocation list: per client ID, the Unix time before which its
// tokens are revoked, as a JWT signed with the token keys (typ RevocationListType).
const RevocationsPath = "/revocations"

// RevocationListType is the typ of the revocation list's JWT.
const RevocationListType = "revocation-list+jwt"

// RevokedForever is the not-before of a client ID whose every token is refused: a disabled
// client, or one this server saw deleted before the manager recorded it. It is a fixed value
// (9999-12-31T23:59:59Z), not the time of the list, so that replicas with the same view publish
// the same content and a verifier's If-None-Match holds across them.
const RevokedForever int64 = 253402300799

const (
	// revocationListTTL is the exp of a signed list. A verifier refuses a list past its exp, so
	// a copied old list cannot be replayed to it for longer; the server signs the list again
	// after half of it.
	revocationListTTL = 10 * time.Minute
	// revocationRebuildEvery bounds how often the list is rebuilt while what it reads changes: a
	// rebuild reads every cached client and binding, and a list of 100,000 entries takes 230 ms
	// to encode, sign and compress (BenchmarkRevocationList100k).
	revocationRebuildEvery = 200 * time.Millisecond
	// MaxRevocationWait is the longest ?wait= a request may ask for: under the 60 s idle
	// timeouts of common proxies in front of the public door.
	MaxRevocationWait = 30 * time.Second
	// DefaultRevocationWaiters bounds the long-polls a replica holds: each holds a connection
	// and a goroutine (about 10 KiB), so that anyone who can reach the endpoint cannot make the
	// process hold without bound, and a past-the-bound verifier still gets its answer.
	DefaultRevocationWaiters = 2048
	// revocationHorizon is how old a not-before may be and still matter: a token issued before
	// it has expired (spec.tokenTTL is at most 24h) with the verifiers' clock skew to spare, the
	// same bound as a retired signing key's retention. Older entries are left out, so that a
	// tenant creating and deleting clients in a loop cannot grow the list without bound.
	revocationHorizon = signingkeys.DefaultRetention
)

// Revocations is the content of the revocation list.
type Revocations struct {
	// NotBefore is, per client ID, the Unix time before which its tokens are refused;
	// RevokedForever refuses every token (a disabled client, a deletion not recorded yet).
	NotBefore map[string]int64
	// Floor is, for a client ID whose NotBefore is RevokedForever, the time before which its
	// tokens stay refused after that state ends (the disable or deletion as first seen, and
	// what the binding records). Verifiers merge it with the other finite times; the state
	// itself they take from the latest list, so that enabling a client takes effect.
	Floor map[string]int64
}

// RevocationSource gives the content of the revocation list.
type RevocationSource interface {
	// Revoked returns the list's content. trusted says whether a client's status.clientID may
	// be believed (its MAC holds).
	Revoked(trusted func(*CachedClient) bool) Revocations
	// Changed returns a channel closed at the next change of what Revoked reads.
	Changed() <-chan struct{}
}

// revocationDoc is one built and signed list.
type revocationDoc struct {
	etag     string
	jwt      []byte
	gzipped  []byte
	signedAt time.Time
	kid      string
	// entries are the list's, for introspection.
	entries Revocations
}

// revocationPublisher builds, signs and caches the list for every request.
type revocationPublisher struct {
	s      *Server
	source RevocationSource

	mu      sync.Mutex
	doc     *revocationDoc
	content []byte // the canonical JSON of the entries of doc
	builtAt time.Time
	// seen is the source's change channel that was current when doc was built: a closed one
	// means doc may be out of date.
	seen <-chan struct{}
}

// emptySource publishes nothing: a server without a RevocationSource (tests).
type emptySource struct{}

func (emptySource) Revoked(func(*CachedClient) bool) Revocations { return Revocations{} }
func (emptySource) Changed() <-chan struct{}                     { return nil }

// current returns the list as it is now, rebuilt when the source changed (at most every
// revocationRebuildEvery) and signed again when its signature is half through its life or the
// signing key changed.
func (p *revocationPublisher) current() (*revocationDoc, error) {
	st := p.s.cfg.Keys.current()
	if st == nil || st.active == nil {
		return nil, fmt.Errorf("no signing key is loaded yet")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.s.cfg.Clock.Now()
	if p.doc != nil && closed(p.seen) {
		if wait := revocationRebuildEvery - now.Sub(p.builtAt); wait > 0 {
			// Coalesces the changes of a burst into one rebuild.
			p.mu.Unlock()
			time.Sleep(wait)
			p.mu.Lock()
			now = p.s.cfg.Clock.Now()
		}
	}
	content, entries := p.content, Revocations{}
	if p.doc != nil {
		entries = p.doc.entries
	}
	// The source is read again when the list is signed again, not only when it changed: entries
	// age past revocationHorizon without a change.
	if p.doc == nil || closed(p.seen) || now.Sub(p.doc.signedAt) >= revocationListTTL/2 {
		p.seen = p.source.Changed()
		entries = p.source.Revoked(st.trustsClientID)
		if entries.NotBefore == nil {
			entries.NotBefore = map[string]int64{}
		}
		if entries.Floor == nil {
			entries.Floor = map[string]int64{}
		}
		var err error
		// encoding/json sorts map keys: equal views give equal bytes, and equal ETags.
		if content, err = json.Marshal(struct {
			NotBefore map[string]int64 `json:"not_before"`
			Floor     map[string]int64 `json:"floor"`
		}{entries.NotBefore, entries.Floor}); err != nil {
			return nil, err
		}
		p.builtAt = now
		if p.doc != nil && bytes.Equal(content, p.content) && p.doc.kid == st.active.KID && now.Sub(p.doc.signedAt) < revocationListTTL/2 {
			return p.doc, nil
		}
		p.content = content
	} else if p.doc.kid == st.active.KID && now.Sub(p.doc.signedAt) < revocationListTTL/2 {
		return p.doc, nil
	}
	doc, err := p.sign(st, content, entries, now)
	if err != nil {
		return nil, err
	}
	p.doc = doc
	return doc, nil
}

func closed(ch <-chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// sign makes the JWT of content. The ETag is of the content alone, so that it holds across
// signatures and replicas; a verifier that revalidates keeps the list it verified.
func (p *revocationPublisher) sign(st *keyState, content []byte, entries Revocations, now time.Time) (*revocationDoc, error) {
	header, err := json.Marshal(map[string]string{"alg": string(st.active.Algorithm), "kid": st.active.KID, "typ": RevocationListType})
	if err != nil {
		return nil, err
	}
	now = now.Truncate(time.Second)
	// The entries are spliced in as they were marshalled, in key order.
	head, err := json.Marshal(struct {
		Issuer    string `json:"iss"`
		IssuedAt  int64  `json:"iat"`
		ExpiresAt int64  `json:"exp"`
	}{p.s.cfg.IssuerURL, now.Unix(), now.Add(revocationListTTL).Unix()})
	if err != nil {
		return nil, err
	}
	payload := make([]byte, 0, len(head)+len(content)+16)
	payload = append(payload, head[:len(head)-1]...)
	payload = append(payload, ',')
	payload = append(payload, content[1:]...)
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := st.active.Method().Sign(input, st.active.SigningKey())
	if err != nil {
		return nil, err
	}
	jwt := []byte(input + "." + base64.RawURLEncoding.EncodeToString(sig))
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	_, _ = zw.Write(jwt)
	_ = zw.Close()
	sum := sha256.Sum256(content)
	return &revocationDoc{
		etag:     `"` + hex.EncodeToString(sum[:16]) + `"`,
		jwt:      jwt,
		gzipped:  gz.Bytes(),
		signedAt: now,
		kid:      st.active.KID,
		entries:  entries,
	}, nil
}

// revoked reports whether the list revokes a token of client id with claims: its iat is before
// the client's not-before (or missing).
func (p *revocationPublisher) revoked(id string, claims jwt.MapClaims) bool {
	doc, err := p.current()
	if err != nil {
		return false
	}
	nb, listed := doc.entries.NotBefore[id]
	if !listed {
		return false
	}
	iat, err := claims.GetIssuedAt()
	return err != nil || iat == nil || iat.Unix() < nb
}

// revocations serves the list. With If-None-Match of the current ETag and ?wait=N (seconds, up
// to MaxRevocationWait), it holds the request until the list changes or N seconds pass (a
// long-poll): a change reaches waiting verifiers as soon as this server's cache sees it, and an
// idle verifier costs one request every N seconds.
func (s *Server) revocations(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, "wait is a number of seconds", http.StatusBadRequest)
			return
		}
		wait = min(time.Duration(n)*time.Second, MaxRevocationWait)
	}
	doc, err := s.revocationList.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	inm := r.Header.Get("If-None-Match")
	if inm == doc.etag && wait > 0 {
		if s.revocationWaiting.Add(1) > int64(cmp.Or(s.cfg.RevocationWaiters, DefaultRevocationWaiters)) {
			wait = 0
		}
		defer s.revocationWaiting.Add(-1)
	}
	if inm == doc.etag && wait > 0 {
		// The server's write timeout is shorter than a long-poll.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + 10*time.Second))
		timer := time.NewTimer(wait)
		defer timer.Stop()
	poll:
		for doc.etag == inm {
			select {
			case <-s.revocationList.source.Changed():
			case <-timer.C:
				break poll
			case <-r.Context().Done():
				return
			}
			if doc, err = s.revocationList.current(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
	}
	w.Header().Set("ETag", doc.etag)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Vary", "Accept-Encoding")
	if inm == doc.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/"+RevocationListType)
	body := doc.jwt
	if acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		body = doc.gzipped
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(name) == "gzip" && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// InformerRevocations is a RevocationSource over the client cache and an informer on
// ClientIDBindings, which the token server reads and never writes: the revocations are declared
// on the M2MClients (spec.disabled, spec.revokeTokensIssuedBefore) and recorded by the manager on
// the bindings (status.tokensRevokedBefore), which outlive the clients.
type InformerRevocations struct {
	clients  *InformerClients
	bindings toolscache.SharedIndexInformer

	mu      sync.Mutex
	changed chan struct{}
	// deleted are the clients this process saw deleted, by client ID, refused for good until
	// the manager records a deletion of this client on the binding (deletedAt at or after its
	// creation) or a client of the ID is back. A record of an earlier deletion of the ID does not
	// do: the manager, not running, may have missed this one.
	deleted map[string]seenClient
	// disabled are the clients this process saw disabled, by client ID, with the second after
	// it first saw it: the tokens issued before stay refused after an enable until the binding
	// records as much (tokensRevokedBefore at or after it), so that a disable and enable the
	// manager missed still revoke them while this process runs.
	disabled map[string]seenClient
	trusted  func(*CachedClient) bool
	// now is the clock entries are pruned by; nil is time.Now.
	now func() time.Time
}

// NewInformerRevocations prepares the bindings' informer and follows the clients' informers;
// Start runs the former.
func NewInformerRevocations(cfg *rest.Config, clients *InformerClients, keys KeySource) (*InformerRevocations, error) {
	scheme := runtime.NewScheme()
	if err := m2mv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	r := &InformerRevocations{clients: clients, changed: make(chan struct{}), deleted: map[string]seenClient{}, disabled: map[string]seenClient{}}
	r.trusted = func(m *CachedClient) bool {
		st := keys.current()
		return st != nil && st.trustsClientID(m)
	}
	r.bindings = toolscache.NewSharedIndexInformer(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			list := &m2mv1alpha1.ClientIDBindingList{}
			return list, c.List(ctx, list, &client.ListOptions{Raw: &opts})
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return c.Watch(ctx, &m2mv1alpha1.ClientIDBindingList{}, &client.ListOptions{Raw: &opts})
		},
	}, &m2mv1alpha1.ClientIDBinding{}, 0, toolscache.Indexers{})
	if err := r.bindings.SetTransform(func(obj any) (any, error) {
		if b, ok := obj.(*m2mv1alpha1.ClientIDBinding); ok {
			b.ManagedFields, b.Annotations, b.Labels = nil, nil, nil
		}
		return obj, nil
	}); err != nil {
		return nil, err
	}
	notify := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.notify() },
		UpdateFunc: func(any, any) { r.notify() },
		DeleteFunc: func(any) { r.notify() },
	}
	if _, err := r.bindings.AddEventHandler(notify); err != nil {
		return nil, err
	}
	for _, inf := range clients.informers {
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { r.sawDisabled(obj); r.notify() },
			UpdateFunc: func(old, cur any) { r.sawDisabled(cur); r.notifyIfChanged(old, cur) },
			DeleteFunc: r.clientDeleted,
		}); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Start runs the bindings' informer until ctx ends.
func (r *InformerRevocations) Start(ctx context.Context) { go r.bindings.RunWithContext(ctx) }

// Synced reports whether the bindings have been listed once.
func (r *InformerRevocations) Synced() bool { return r.bindings.HasSynced() }

// Changed implements RevocationSource.
func (r *InformerRevocations) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *InformerRevocations) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// notifyIfChanged wakes the list only for what it reads: status writes of rotations, the most
// frequent updates, leave it alone.
func (r *InformerRevocations) notifyIfChanged(old, cur any) {
	o, ok1 := old.(*CachedClient)
	c, ok2 := cur.(*CachedClient)
	if ok1 && ok2 && o.Spec.Disabled == c.Spec.Disabled && o.Status.ClientID == c.Status.ClientID &&
		o.Status.ClientIDMAC == c.Status.ClientIDMAC && timeEqual(o.Spec.RevokeTokensIssuedBefore, c.Spec.RevokeTokensIssuedBefore) {
		return
	}
	r.notify()
}

func timeEqual(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

// seenClient is a client this process saw deleted or disabled.
type seenClient struct {
	namespace, name string
	// at is the deleted client's creation, or the second after the disable was seen; seen is
	// the second after the deletion was seen. Unix seconds.
	at, seen int64
}

// clientDeleted refuses the deleted client's tokens at once, before the manager records the
// deletion on the binding.
func (r *InformerRevocations) clientDeleted(obj any) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if c, ok := obj.(*CachedClient); ok && c.Status.ClientID != "" && r.trusted(c) {
		r.mu.Lock()
		r.deleted[c.Status.ClientID] = seenClient{c.Namespace, c.Name, c.created, r.clock().Truncate(time.Second).Add(time.Second).Unix()}
		r.mu.Unlock()
	}
	r.notify()
}

// sawDisabled remembers the first time this process saw a client disabled.
func (r *InformerRevocations) sawDisabled(obj any) {
	c, ok := obj.(*CachedClient)
	if !ok || !c.Spec.Disabled || c.Status.ClientID == "" || !r.trusted(c) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, seen := r.disabled[c.Status.ClientID]; !seen {
		r.disabled[c.Status.ClientID] = seenClient{namespace: c.Namespace, name: c.Name, at: r.clock().Truncate(time.Second).Add(time.Second).Unix()}
	}
}

func (r *InformerRevocations) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// maxRevocationsPerNamespace bounds the finite not-befores of one namespace's clients in the
// list, the latest kept: a tenant creating and deleting clients in a loop (each deletion an entry
// for a day) would otherwise grow the list that every verifier of every tenant reads, past its
// size limit. Past the bound, only that namespace's oldest revocations are left out; the clients
// whose every token is refused (disabled, deleted and not recorded yet) are never left out.
const maxRevocationsPerNamespace = 1000

// Revoked implements RevocationSource. A client's finite not-before is the latest of:
// spec.revokeTokensIssuedBefore (up to the second after now); its binding's
// status.tokensRevokedBefore; the second after this process first saw it disabled, until the
// binding records as much; and, for a client created after its binding (a second client of the
// ID) whose UID the binding does not record yet, its creation. RevokedForever refuses every
// token of a disabled client, one whose spec revokes tokens issued before a time still to come,
// and one this process saw deleted until the binding records that deletion; its finite time goes
// in Floor. A client adds entries only when its binding gives its client ID to its namespace and
// name, which only the manager writes: a forged status.clientID adds nothing even before status
// MACs are enforced. A not-before older than revocationHorizon is left out (every token it
// refuses has expired), and each namespace keeps its maxRevocationsPerNamespace latest.
func (r *InformerRevocations) Revoked(trusted func(*CachedClient) bool) Revocations {
	now := r.clock()
	mark := now.Truncate(time.Second).Add(time.Second).Unix()
	finite, forever := map[string]int64{}, map[string]bool{}
	raise := func(id string, t int64) {
		if t > finite[id] {
			finite[id] = t
		}
	}
	type owner struct {
		namespace, name, clientUID string
		created                    int64
	}
	owners := map[string]owner{}
	recordedDeletion := map[string]int64{}
	recordedBefore := map[string]int64{}
	for _, obj := range r.bindings.GetStore().List() {
		b := obj.(*m2mv1alpha1.ClientIDBinding)
		owners[b.Spec.ClientID] = owner{b.Spec.Namespace, b.Spec.Name, b.Status.ClientUID, b.CreationTimestamp.Unix()}
		if t := b.Status.TokensRevokedBefore; t != nil {
			raise(b.Spec.ClientID, t.Unix())
			recordedBefore[b.Spec.ClientID] = t.Unix()
		}
		if b.Status.DeletedAt != nil {
			recordedDeletion[b.Spec.ClientID] = b.Status.DeletedAt.Unix()
		}
	}
	bound := func(id, namespace, name string) bool {
		o, ok := owners[id]
		return ok && o.namespace == namespace && o.name == name
	}
	live := map[string]bool{}
	for _, inf := range r.clients.informers {
		for _, obj := range inf.GetStore().List() {
			c := obj.(*CachedClient)
			id := c.Status.ClientID
			if id == "" || !trusted(c) || !bound(id, c.Namespace, c.Name) {
				continue
			}
			live[id] = true
			if t := c.Spec.RevokeTokensIssuedBefore; t != nil {
				raise(id, min(t.Unix(), mark))
				if t.Unix() > mark {
					forever[id] = true
				}
			}
			if c.Spec.Disabled {
				forever[id] = true
			}
			if o := owners[id]; o.clientUID != string(c.UID) && o.created < c.created {
				raise(id, c.created)
			}
		}
	}
	horizon := now.Add(-revocationHorizon).Unix()
	r.mu.Lock()
	for id, d := range r.deleted {
		if recorded, ok := recordedDeletion[id]; live[id] || ok && recorded > d.at || d.seen < horizon {
			delete(r.deleted, id)
			continue
		}
		if bound(id, d.namespace, d.name) {
			forever[id] = true
			raise(id, d.seen)
		}
	}
	for id, d := range r.disabled {
		if recordedBefore[id] >= d.at || d.at < horizon {
			delete(r.disabled, id)
			continue
		}
		if bound(id, d.namespace, d.name) {
			raise(id, d.at)
		}
	}
	r.mu.Unlock()
	for id, nb := range finite {
		if nb < horizon {
			delete(finite, id)
		}
	}
	capPerNamespace(finite, forever, func(id string) string { return owners[id].namespace })
	out := Revocations{NotBefore: finite, Floor: map[string]int64{}}
	for id := range forever {
		if nb, ok := finite[id]; ok {
			out.Floor[id] = nb
		}
		finite[id] = RevokedForever
	}
	return out
}

// capPerNamespace leaves out of entries the oldest not-befores of each namespace past
// maxRevocationsPerNamespace, never those of keep.
func capPerNamespace(entries map[string]int64, keep map[string]bool, namespaceOf func(string) string) {
	byNamespace := map[string][]string{}
	for id := range entries {
		if !keep[id] {
			ns := namespaceOf(id)
			byNamespace[ns] = append(byNamespace[ns], id)
		}
	}
	for _, ids := range byNamespace {
		if len(ids) <= maxRevocationsPerNamespace {
			continue
		}
		slices.SortFunc(ids, func(a, b string) int { return cmp.Or(cmp.Compare(entries[b], entries[a]), strings.Compare(a, b)) })
		for _, id := range ids[maxRevocationsPerNamespace:] {
			delete(entries, id)
		}
	}
}
