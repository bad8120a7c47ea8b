package outage

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// kubeletDelay is how long after the kubelet sees a changed Secret its pod reads the new
// credentials from the volume. Real kubelets take a minute or more; the manager writes a secret's
// hash into status before the Secret, and the token server follows status a moment behind.
const kubeletDelay = 2 * time.Second

// mount is one client's Secret as its pod reads it.
type mount struct {
	id, secret string
	// generation counts the secrets the pod has read, the first one included.
	generation int
	next       string
	nextAt     time.Time
}

// kubelet mounts the Secrets of a fleet's clients into their pods: it watches them (an informer,
// which lists and watches again by itself after the API server returns) and hands each change to
// the pod kubeletDelay later. While the API server is away, pods keep what they have.
type kubelet struct {
	mu     sync.Mutex
	mounts map[string]*mount // by client name
	// changed counts the Secrets that carry a new secret, as the kubelet sees them.
	changed atomic.Int64
}

func startKubelet(t *testing.T, f *fleet) *kubelet {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	k := &kubelet{mounts: map[string]*mount{}}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(f.ns))
	inf := factory.Core().V1().Secrets().Informer()
	see := func(o any) {
		if s, ok := o.(*corev1.Secret); ok {
			k.see(s)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, o any) { see(o) }}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	factory.Start(ctx.Done())
	if !toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("the kubelet's informer never synced")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, name := range f.names {
		if k.mounts[name] == nil {
			t.Fatalf("client %s has no Secret", name)
		}
	}
	return k
}

func (k *kubelet) see(s *corev1.Secret) {
	name := s.Labels[m2mv1alpha1.ClientLabel]
	secret := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	if name == "" || secret == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	m := k.mounts[name]
	switch {
	case m == nil:
		k.mounts[name] = &mount{id: string(s.Data[m2mv1alpha1.SecretKeyClientID]), secret: secret, generation: 1}
	case secret != m.secret && secret != m.next:
		m.next, m.nextAt = secret, time.Now().Add(kubeletDelay)
		k.changed.Add(1)
	}
}

// read is what the pod of client name reads from its volume now.
func (k *kubelet) read(name string) mount {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := k.mounts[name]
	if m.next != "" && !time.Now().Before(m.nextAt) {
		m.secret, m.next = m.next, ""
		m.generation++
	}
	return *m
}

// load is pods asking for tokens with the credentials they read from their volumes, one client
// after another, by several workers at once. Every refusal counts as failed: the token server
// reads a client past its cache when it refuses a secret while its cache may be behind, so a
// secret the manager put into a Secret is accepted even before the cache has its status.
type load struct {
	ok, failed atomic.Int64
	// rotated counts the successful requests made with a secret that a rotation wrote.
	rotated  atomic.Int64
	firstErr atomic.Value
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, f *fleet, k *kubelet) *load {
	t.Helper()
	const workers = 4
	l := &load{stopCh: make(chan struct{})}
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; l.running(); i = (i + workers) % len(f.names) {
				m := k.read(f.names[i])
				resp, err := testenv.ClientCredentials(context.Background(), httpc, issuer, m.id, m.secret)
				switch {
				case err != nil:
					l.fail(fmt.Errorf("client %s: %w", f.names[i], err))
				case resp.Status != http.StatusOK:
					l.fail(fmt.Errorf("client %s, secret %d: status %d, error %q", f.names[i], m.generation, resp.Status, resp.Error))
				default:
					l.ok.Add(1)
					if m.generation > 1 {
						l.rotated.Add(1)
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func (l *load) running() bool {
	select {
	case <-l.stopCh:
		return false
	default:
		return true
	}
}

func (l *load) fail(err error) {
	l.failed.Add(1)
	l.firstErr.CompareAndSwap(nil, err.Error())
}

// stop ends the load and waits for its workers; it may be called more than once.
func (l *load) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

func (l *load) String() string {
	return fmt.Sprintf("%d of %d token requests failed (first: %v)", l.failed.Load(), l.failed.Load()+l.ok.Load(), l.firstErr.Load())
}

// loaded is a fleet whose pods ask for tokens all along, with every version of its Secrets
// recorded from the start.
type loaded struct {
	*fleet
	kubelet  *kubelet
	load     *load
	recorded func() []testenv.Version
}

func newLoadedFleet(t *testing.T, n int) *loaded {
	t.Helper()
	f := newFleet(t, n)
	recorded, err := testenv.Record(context.Background(), env.Config, &corev1.SecretList{}, f.ns)
	if err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t, f)
	return &loaded{fleet: f, kubelet: k, load: startLoad(t, f, k), recorded: recorded}
}

// finish lets every pod read its last secret and ask with it, stops the load, and checks that
// each client's Secret got exactly one new secret for each of the rotations asked for, and that
// no token request failed.
func (lf *loaded) finish(t *testing.T, rotations int) {
	t.Helper()
	time.Sleep(kubeletDelay + time.Second)
	l := lf.load
	l.stop()
	changes := newSecrets(lf.recorded())
	for _, name := range lf.names {
		if n := changes[name+"-credentials"]; n != rotations {
			t.Errorf("Secret of %s: %d new secrets for %d rotations asked for", name, n, rotations)
		}
	}
	t.Logf("%d token requests, %d with a rotated secret; %s", l.ok.Load()+l.failed.Load(), l.rotated.Load(), l)
	if l.failed.Load() != 0 || l.ok.Load() == 0 {
		t.Fatal(l)
	}
	if l.rotated.Load() == 0 {
		t.Fatal("no token request used a rotated secret: the load did not follow the rotations")
	}
}

// newSecrets counts, for each Secret, how many times a recorded version carried a client_secret
// other than the version before it.
func newSecrets(versions []testenv.Version) map[string]int {
	sort.SliceStable(versions, func(i, j int) bool { return versions[i].RV < versions[j].RV })
	last, changes := map[string]string{}, map[string]int{}
	for _, v := range versions {
		s, ok := v.Object.(*corev1.Secret)
		if !ok || v.Type == watch.Deleted {
			continue
		}
		secret := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
		if prev, seen := last[s.Name]; seen && prev != secret {
			changes[s.Name]++
		}
		last[s.Name] = secret
	}
	return changes
}
