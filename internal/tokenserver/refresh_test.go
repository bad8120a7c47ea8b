package tokenserver

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// behindClients is a cache that has not seen the client's newest status; fresh is what the API
// server has, or nil when a read past the cache is not allowed (the cache is not behind, or the
// reads are used up).
type behindClients struct {
	cached, fresh *m2mv1alpha1.M2MClient
	reads         int
}

func (b *behindClients) Candidates(id string) []*CachedClient {
	if id == b.cached.Status.ClientID {
		return []*CachedClient{NewCachedClient(b.cached)}
	}
	return nil
}

func (b *behindClients) Refresh(_ context.Context, c *CachedClient, accepts func(*CachedClient) bool) *CachedClient {
	b.reads++
	if b.fresh == nil {
		return nil
	}
	if fresh := NewCachedClient(b.fresh); accepts(fresh) {
		return fresh
	}
	return nil
}

// After an API-server restart the manager may catch up before the token server and give pods a
// secret whose hash the token server's cache has not seen: that secret is checked once more
// against the client as the API server has it. What the API server has must still carry the
// manager's MAC and the same client ID.
func TestASecretTheCacheHasNotSeenIsCheckedAgainstTheAPIServersClient(t *testing.T) {
	const newSecret = "the-new-secret-the-cache-has-not-seen-0123456789"
	rotated := func(mutate func(*m2mv1alpha1.M2MClient)) *m2mv1alpha1.M2MClient {
		c := testClient(goodID, goodSecret).DeepCopy()
		c.Status.AcceptedSecrets = append(c.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(newSecret)})
		seal(c)
		if mutate != nil {
			mutate(c)
		}
		return c
	}
	for _, tc := range []struct {
		sentence string
		fresh    *m2mv1alpha1.M2MClient
		secret   string
		want     int
	}{
		{sentence: "the new secret is accepted from the API server's client", fresh: rotated(nil), secret: newSecret, want: http.StatusOK},
		{sentence: "no read past the cache is allowed: refused as before", fresh: nil, secret: newSecret, want: http.StatusUnauthorized},
		{sentence: "a wrong secret is refused after the read too", fresh: rotated(nil), secret: "a-wrong-secret-0123456789abcdefghijklmnopqrstu", want: http.StatusUnauthorized},
		{sentence: "a status without the manager's MAC is not trusted", fresh: rotated(func(c *m2mv1alpha1.M2MClient) {
			c.Status.AcceptedSecrets[1].MAC = ""
		}), secret: newSecret, want: http.StatusUnauthorized},
		{sentence: "a status naming another client ID is not this client", fresh: rotated(func(c *m2mv1alpha1.M2MClient) {
			c.Status.ClientID = "m2m-someone-else"
			seal(c)
		}), secret: newSecret, want: http.StatusUnauthorized},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			clients := &behindClients{cached: testClient(goodID, goodSecret), fresh: tc.fresh}
			f := serve(t, "ES256", clients)
			resp, _ := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", tc.secret)})
			if resp.StatusCode != tc.want {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
			if clients.reads != 1 {
				t.Fatalf("%d reads past the cache for one refused secret, want 1", clients.reads)
			}
		})
	}
	// A secret the cache accepts never costs a read.
	clients := &behindClients{cached: testClient(goodID, goodSecret)}
	f := serve(t, "ES256", clients)
	if resp, _ := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)}); resp.StatusCode != http.StatusOK || clients.reads != 0 {
		t.Fatalf("HTTP %d with %d reads past the cache for a secret the cache accepts", resp.StatusCode, clients.reads)
	}
}

// countingReader answers every Get with obj and counts them.
type countingReader struct {
	obj  *m2mv1alpha1.M2MClient
	gets int
}

func (r *countingReader) Get(_ context.Context, _ client.ObjectKey, out client.Object, _ ...client.GetOption) error {
	r.gets++
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(r.obj)
	if err != nil {
		return err
	}
	out.(*unstructured.Unstructured).Object = u
	return nil
}

func (r *countingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return nil
}

// Reads past the cache happen only while it may be behind (a watch closed, or one failed in the
// last two minutes), so that at other times a refused secret costs what it always does and
// tells no one which client IDs exist; a read serves a client's refusals for refreshReuse, and
// reads are limited in all.
func TestTheTokenServerReadsPastItsCacheOnlyWhileItMayBeBehindAndWithinLimits(t *testing.T) {
	yes := func(*CachedClient) bool { return true }
	no := func(*CachedClient) bool { return false }
	clk := clocktesting.NewFakeClock(t0)
	c := testClient(goodID, goodSecret)
	reader := &countingReader{obj: c}
	s := &InformerClients{clock: clk, informers: make([]toolscache.SharedIndexInformer, 1), reader: reader, refreshLimit: rate.NewLimiter(refreshRate, refreshBurst)}
	s.openWatches.Store(1)
	if s.Refresh(context.Background(), NewCachedClient(c), yes) != nil || reader.gets != 0 {
		t.Fatal("a cache whose watch is open and never failed read past itself")
	}
	s.lastWatchError.Store(clk.Now().UnixNano())
	clk.Step(time.Minute)
	if got := s.Refresh(context.Background(), NewCachedClient(c), yes); got == nil || got.UID != c.UID || reader.gets != 1 {
		t.Fatalf("a minute after a watch error: %v after %d reads, want the client after one", got, reader.gets)
	}
	if got := s.Refresh(context.Background(), NewCachedClient(c), yes); got == nil || reader.gets != 1 {
		t.Fatalf("a second refusal within %s: %v after %d reads, want the first read's client again", refreshReuse, got, reader.gets)
	}
	// A secret the last read does not accept (rotated again since) is read for again once the
	// client may be read again (refreshEvery after the last read), rather than refused at once.
	if s.Refresh(context.Background(), NewCachedClient(c), no) != nil || reader.gets != 2 {
		t.Fatalf("%d reads: a secret the last read does not accept was not read for again", reader.gets)
	}
	for i := range 2 * refreshBurst {
		other := c.DeepCopy()
		other.UID = types.UID(fmt.Sprintf("other-%d", i))
		s.Refresh(context.Background(), NewCachedClient(other), yes)
	}
	if reader.gets > 2+refreshBurst {
		t.Fatalf("%d reads at once, over the burst of %d", reader.gets, refreshBurst)
	}
	clk.Step(refreshWindow)
	gets := reader.gets
	c2 := c.DeepCopy()
	c2.UID = "later"
	if s.Refresh(context.Background(), NewCachedClient(c2), yes) != nil || reader.gets != gets {
		t.Fatal("the cache read past itself after the window of the last watch error")
	}
	s.openWatches.Store(0)
	reader.obj = c2
	clk.Step(time.Minute) // the limiter refills, and c2's earlier read is past its reuse
	if s.Refresh(context.Background(), NewCachedClient(c2), yes) == nil {
		t.Fatal("a cache with its watch closed did not read past itself")
	}
	// A client being deleted is no candidate in the cache, nor past it.
	deleting := c.DeepCopy()
	deleting.UID = "deleting"
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}
	reader.obj = deleting
	if s.Refresh(context.Background(), NewCachedClient(deleting), yes) != nil {
		t.Fatal("a client being deleted was read past the cache")
	}
}

// While the API server is away the reflector retries its watch without calling the watch error
// handler; a watch that starts more than a second after the last one ended follows such a gap,
// and the cache counts as behind. A routine renewal (at once) does not.
func TestAWatchThatStartsAfterAGapMakesTheCacheCountAsBehind(t *testing.T) {
	for _, tc := range []struct {
		sentence string
		gap      time.Duration
		behind   bool
	}{
		{"a watch renewed at once", 10 * time.Millisecond, false},
		{"a watch started after the API server was away", 10 * time.Second, true},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(t0)
			s := &InformerClients{clock: clk, informers: make([]toolscache.SharedIndexInformer, 1)}
			s.lastWatchEnd.Store(clk.Now().UnixNano())
			clk.Step(tc.gap)
			w := s.observe(context.Background(), watch.NewFake(), "", false)
			defer w.Stop()
			if got := s.behind(); got != tc.behind {
				t.Fatalf("behind = %v, want %v", got, tc.behind)
			}
		})
	}
}
