package tokenserver

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// switchingKeys is a KeySource whose key state a test replaces, as SecretKeys does when the
// signing-key Secret changes.
type switchingKeys struct {
	signing *signingkeys.Set
	st      atomic.Pointer[keyState]
}

func newSwitchingKeys(t *testing.T, status *statusmac.Set) *switchingKeys {
	t.Helper()
	key, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	k := &switchingKeys{signing: &signingkeys.Set{Keys: []*signingkeys.Key{key}}}
	k.use(t, status)
	return k
}

// use loads status as the status keys, a new key state as a new Secret version makes.
func (k *switchingKeys) use(t *testing.T, status *statusmac.Set) {
	t.Helper()
	st, err := newKeyState(k.signing, status, t0, signingkeys.DefaultRetention)
	if err != nil {
		t.Fatal(err)
	}
	k.st.Store(st)
}

func (k *switchingKeys) current() *keyState { return k.st.Load() }

func memoServer(t *testing.T, clients ClientSource, keys KeySource) *Server {
	t.Helper()
	s, err := New(Config{IssuerURL: testIssuer, Clients: clients, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// secretOf authenticates id with secret through the server's authenticators.
func secretOf(s *Server, id, secret string) (*CachedClient, *oauthError) {
	client, _, bad := s.authenticate(context.Background(), &tokenRequest{clientID: id, clientSecret: secret, secretGiven: true})
	return client, bad
}

func newStatusKeys(t *testing.T, enforced bool) *statusmac.Set {
	t.Helper()
	k, err := statusmac.Generate(statusmac.StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	set := &statusmac.Set{Keys: []*statusmac.Key{k}}
	if enforced {
		since := t0
		set.EnforcedSince = &since
	}
	return set
}

// A new version of a client whose entry someone edited after its MACs were verified (another
// secret's hash under the old MAC) is verified anew: the verdicts of the earlier version are not
// its verdicts, and the edited entry is refused while the untouched one still accepts.
func TestAnEntryEditedAfterVerificationIsRefusedInTheNewObjectVersion(t *testing.T) {
	const forgedSecret = "the-secret-someone-wrote-into-status-0123456789ab"
	obj := testClient(goodID, goodSecret)
	obj.Status.AcceptedSecrets = append(obj.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash("the-second-secret-0123456789abcdefghijklmnopq")})
	seal(obj)
	clients := cachedClients{goodID: NewCachedClient(obj)}
	s := memoServer(t, clients, newSwitchingKeys(t, testStatusKeys))
	if _, bad := secretOf(s, goodID, goodSecret); bad != nil {
		t.Fatalf("the sealed client was refused: %v", bad)
	}
	edited := obj.DeepCopy()
	edited.ResourceVersion = "2"
	edited.Status.AcceptedSecrets[1].Hash = credentials.Hash(forgedSecret) // its MAC is the old entry's
	clients[goodID] = NewCachedClient(edited)
	if _, bad := secretOf(s, goodID, forgedSecret); bad == nil || bad.reason != reasonWrongSecret {
		t.Fatalf("the edited entry's secret: %v, want wrong_secret", bad)
	}
	if _, bad := secretOf(s, goodID, goodSecret); bad != nil {
		t.Fatalf("the untouched entry of the new version was refused: %v", bad)
	}
}

// Status keys replaced by a set without the key that sealed a client (the manager's key
// rotation gone wrong, or a forged status under a key no longer trusted): the cached client's
// verdicts under the old set are not used, and it is refused until the old key is back.
func TestAStatusKeySetWithoutTheSealingKeyRefusesAClientVerifiedUnderTheOldSet(t *testing.T) {
	cached := NewCachedClient(testClient(goodID, goodSecret))
	keys := newSwitchingKeys(t, testStatusKeys)
	s := memoServer(t, cachedClients{goodID: cached}, keys)
	if _, bad := secretOf(s, goodID, goodSecret); bad != nil {
		t.Fatalf("under the sealing key: %v", bad)
	}
	keys.use(t, newStatusKeys(t, true))
	if _, bad := secretOf(s, goodID, goodSecret); bad == nil {
		t.Fatal("a client sealed under a key no longer in the set was accepted")
	}
	keys.use(t, testStatusKeys)
	if _, bad := secretOf(s, goodID, goodSecret); bad != nil {
		t.Fatalf("with the sealing key back: %v", bad)
	}
}

// A client without MACs (written by a manager of a version before them) is accepted while
// status is not enforced; once a Secret version enforces it, the same cached client is refused.
func TestVerdictsTakenBeforeEnforcementDoNotAcceptAClientAfterIt(t *testing.T) {
	legacy := NewCachedClient(&m2mv1alpha1.M2MClient{
		Status: m2mv1alpha1.M2MClientStatus{ClientID: goodID, AcceptedSecrets: []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(goodSecret)}}},
	})
	notYet := newStatusKeys(t, false)
	keys := newSwitchingKeys(t, notYet)
	s := memoServer(t, cachedClients{goodID: legacy}, keys)
	if _, bad := secretOf(s, goodID, goodSecret); bad != nil {
		t.Fatalf("before enforcement: %v", bad)
	}
	enforced := *notYet
	since := t0.Add(time.Minute)
	enforced.EnforcedSince = &since
	keys.use(t, &enforced)
	if _, bad := secretOf(s, goodID, goodSecret); bad == nil {
		t.Fatal("a client without MACs was accepted after enforcement")
	}
}

// The MACs of a cached client are verified once per status key set, not per request: requests
// under one set share one memo, and a new set makes another.
func TestACachedClientsMACsAreVerifiedOncePerStatusKeySet(t *testing.T) {
	cached := NewCachedClient(testClient(goodID, goodSecret))
	keys := newSwitchingKeys(t, testStatusKeys)
	s := memoServer(t, cachedClients{goodID: cached}, keys)
	_, _ = secretOf(s, goodID, goodSecret)
	first := cached.verdicts.Load()
	if first == nil || first.keys != testStatusKeys || !first.clientID || !first.entries[0] {
		t.Fatalf("after one request the memo is %+v", first)
	}
	_, _ = secretOf(s, goodID, "a-wrong-secret-0123456789abcdefghijklmnopqrst")
	if cached.verdicts.Load() != first {
		t.Fatal("a second request under the same key set verified the MACs again")
	}
	other := newStatusKeys(t, true)
	keys.use(t, other)
	_, _ = secretOf(s, goodID, goodSecret)
	if v := cached.verdicts.Load(); v == first || v.keys != other {
		t.Fatal("a new status key set did not verify the MACs again")
	}
}

// An unknown client's decoy is a cached client of the same shape, whose verdicts are memoized
// as a known client's are: after the first unknown client, each costs a memo look-up as a known
// client does, not a MAC verification.
func TestTheDecoyOfAnUnknownClientTakesTheMemoizedPath(t *testing.T) {
	s := memoServer(t, cachedClients{}, newSwitchingKeys(t, testStatusKeys))
	var auth *secretAuth
	for _, a := range s.authenticators {
		if sa, ok := a.(*secretAuth); ok {
			auth = sa
		}
	}
	if _, bad := secretOf(s, "m2m-nobody", goodSecret); bad == nil || bad.reason != reasonUnknownClient {
		t.Fatalf("an unknown client: %v", bad)
	}
	first := auth.decoyClient.verdicts.Load()
	if first == nil || len(first.entries) != 2 || !first.entries[0] || !first.entries[1] {
		t.Fatalf("the decoy's memo after an unknown client: %+v", first)
	}
	_, _ = secretOf(s, "m2m-nobody-else", goodSecret)
	if auth.decoyClient.verdicts.Load() != first {
		t.Fatal("a second unknown client verified the decoy's MACs again")
	}
}

// The client-ID index follows the store: an update that changes a client's ID moves it, a
// second client of one ID (a forged status) is a second candidate, a client being deleted is
// none, and a delete removes it: one that names only the namespace and name (the stub of a
// deleted object, or of one that no longer decodes, whose ID may differ from the indexed
// version's), and a tombstone after a relist.
func TestTheClientIDIndexFollowsAddsUpdatesAndDeletesOfTheStore(t *testing.T) {
	version := func(name, id string, deleting bool) *CachedClient {
		obj := testClient(id, goodSecret)
		obj.Name = name
		if deleting {
			obj.DeletionTimestamp = &metav1.Time{Time: t0}
		}
		return NewCachedClient(obj)
	}
	s := &InformerClients{}
	want := func(id string, names ...string) {
		t.Helper()
		var got []string
		for _, c := range s.Candidates(id) {
			got = append(got, c.Name)
		}
		if fmt.Sprint(got) != fmt.Sprint(names) {
			t.Fatalf("candidates of %s: %v, want %v", id, got, names)
		}
	}
	a1 := version("a", "m2m-x", false)
	s.index(a1, false)
	want("m2m-x", "a")
	s.index(version("a", "m2m-y", false), false)
	want("m2m-x")
	want("m2m-y", "a")
	s.index(version("b", "m2m-y", false), false)
	want("m2m-y", "a", "b")
	s.index(version("b", "m2m-y", true), false)
	want("m2m-y", "a")
	// A stub: the namespace and name, no client ID.
	s.index(NewCachedClient(&m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}), true)
	want("m2m-y")
	s.index(toolscache.DeletedFinalStateUnknown{Key: "ns/b", Obj: a1}, false)
	if len(s.byID) != 0 || len(s.byKey) != 0 {
		t.Fatalf("after every delete the index holds %d client IDs and %d keys", len(s.byID), len(s.byKey))
	}
}

// The cache verifies a new version's status MACs before requests can find it, so that no request
// pays for (or can be timed paying for) a verification another request did not.
func TestANewClientVersionIsVerifiedBeforeRequestsCanFindIt(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	s := &InformerClients{}
	s.VerifyOnArrival(keys)
	s.index(NewCachedClient(testClient(goodID, goodSecret)), false)
	found := s.Candidates(goodID)
	if len(found) != 1 {
		t.Fatalf("%d candidates, want the client", len(found))
	}
	v := found[0].verdicts.Load()
	if v == nil || v.keys != keys.current().status || !v.clientID || len(v.entries) == 0 || !v.entries[0] {
		t.Fatalf("the client was offered with verdicts %+v, want its MACs verified under the current status keys", v)
	}
}
