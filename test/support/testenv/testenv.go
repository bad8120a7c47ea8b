// Package testenv starts a real kube-apiserver and etcd (envtest) with the m2m.dev CRDs
// installed, for integration tests. The binaries come from hack/control-plane.sh.
package testenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
)

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	Client client.Client
}

// Start starts a control plane with the CRDs of config/crd/bases installed. Options adjust the
// environment before it starts.
func Start(options ...func(*envtest.Environment)) (*Env, error) {
	assets, err := controlplane.Assets()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(controlplane.Root(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	for _, o := range options {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		// Start can fail after the processes are up (installing CRDs); never leave them behind.
		_ = env.Stop()
		return nil, fmt.Errorf("starting envtest from %s: %w", assets, err)
	}
	// Integration tests create many objects; the default client rate limit would dominate.
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Environment: env, Config: cfg, Client: c}, nil
}

// RestartableAPIServer keeps the API server's certificates in dir, so that the API server can be
// stopped and started again (env.ControlPlane.APIServer) and clients still trust it. A stop that
// takes longer than three seconds kills the process, as a crash would (etcd's at the end too).
func RestartableAPIServer(dir string) func(*envtest.Environment) {
	return func(e *envtest.Environment) {
		e.ControlPlane.APIServer = &envtest.APIServer{CertDir: dir}
		// envtest sets the API server's stop timeout from this one when it starts.
		e.ControlPlaneStopTimeout = 3 * time.Second
	}
}

// Main runs a test binary's tests against a control plane that *env points to while they run.
func Main(m *testing.M, env **Env) int {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stopping:", err)
	}
	return code
}

// Eventually calls check until it returns nil, and fails the test with its last error after
// timeout. It bounds a wait for the system to converge; it asserts nothing about speed.
func Eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), pollInterval, timeout, true, func(context.Context) (bool, error) {
		last = check()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("condition not met after %s: %v", timeout, last)
	}
}

// pollInterval is how often Eventually and WaitOK look again.
const pollInterval = 50 * time.Millisecond

// WaitOK polls url until it answers 200, and returns the last status and body otherwise after
// timeout. It bounds a wait for a server to come up; it asserts nothing about speed.
func WaitOK(url string, timeout time.Duration) error {
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), pollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err
			return false, nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return true, nil
		}
		last = fmt.Errorf("%s answered %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
		return false, nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

// RunManager starts a manager built with controllers.NewManager and stops it when the test ends,
// or sooner when the test calls the function it returns, which waits until the manager is gone.
func RunManager(t testing.TB, cfg *rest.Config, o controllers.Options) (stop func()) {
	t.Helper()
	mgr, err := controllers.NewManager(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("manager: %v", err)
		}
	})
	t.Cleanup(stop)
	return stop
}

// RunTokenServer runs the token server on ln, with cfg and the command-line flags args, until the
// test ends, when it must stop without an error.
func RunTokenServer(t testing.TB, cfg *rest.Config, ln net.Listener, args ...string) {
	t.Helper()
	o, err := tokenserver.ParseArgs(flag.NewFlagSet("token-server", flag.ContinueOnError), args)
	if err != nil {
		t.Fatal(err)
	}
	o.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tokenserver.Run(ctx, cfg, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("token server: %v", err)
		}
	})
}

// Version is one stored version of an object, in etcd's order.
type Version struct {
	RV     int64
	Object client.Object
	Type   watch.EventType
	// At is when the watch delivered it: a moment after etcd stored it.
	At time.Time
}

// Record collects every version of the objects of list's kind in ns, from now until the returned
// function is called; it returns them in the order etcd stored them. etcd's revisions order
// writes across resources, which lets a test check the order of a controller's writes.
//
// When the watch ends (the API server closes watchers that fall behind, as on a busy machine, or
// goes away), Record watches again from the last version it saw, once the API server answers. A
// restarted API server's watch cache may no longer reach that far back (410 Gone); Record then
// lists the objects and records those written since, so that only a version written and
// overwritten again between the restart and that list can be missed.
func Record(ctx context.Context, cfg *rest.Config, list client.ObjectList, ns string) (func() []Version, error) {
	_, stop, err := record(ctx, cfg, list, ns)
	return stop, err
}

// RecordThrough is Record whose returned function first waits, up to a minute, until the
// recorder has seen an object version at least rv (one the caller read after its last write of
// interest), so that the last versions are not lost to a watch a moment behind.
func RecordThrough(ctx context.Context, cfg *rest.Config, list client.ObjectList, ns string) (func(rv string) []Version, error) {
	r, stop, err := record(ctx, cfg, list, ns)
	if err != nil {
		return nil, err
	}
	return func(rv string) []Version {
		want, _ := strconv.ParseInt(rv, 10, 64)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			r.mu.Lock()
			seen := r.rv >= want
			r.mu.Unlock()
			if seen {
				break
			}
		}
		return stop()
	}, nil
}

func record(ctx context.Context, cfg *rest.Config, list client.ObjectList, ns string) (*recorder, func() []Version, error) {
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w, err := wc.Watch(ctx, list, client.InNamespace(ns))
	if err != nil {
		cancel()
		return nil, nil, err
	}
	r := &recorder{c: wc, list: list, ns: ns}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.follow(ctx, w)
	}()
	return r, func() []Version {
		cancel()
		<-done
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.seen
	}, nil
}

// recorder keeps the versions that Record sees.
type recorder struct {
	c    client.WithWatch
	list client.ObjectList
	ns   string
	mu   sync.Mutex
	seen []Version
	// rv is the highest resourceVersion seen (the first events of a watch, the objects that
	// exist, come in no order), where a new watch starts.
	rv int64
}

// follow records the events of w, and of the watches that replace it when it ends, until ctx ends.
func (r *recorder) follow(ctx context.Context, w watch.Interface) {
	for {
		// With no version seen, there is no place to watch from but a list.
		expired := r.drain(w) || r.rv == 0
		for ctx.Err() == nil {
			if expired {
				if err := r.relist(ctx); err != nil {
					time.Sleep(pollInterval)
					continue
				}
			}
			var err error
			from := strconv.FormatInt(r.rv, 10)
			w, err = r.c.Watch(ctx, r.list, client.InNamespace(r.ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: from, AllowWatchBookmarks: true}})
			if err == nil {
				break
			}
			expired = apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
			time.Sleep(pollInterval)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// drain records w's events until it ends, and reports whether it ended because the API server
// no longer has the version it started from.
func (r *recorder) drain(w watch.Interface) (expired bool) {
	defer w.Stop()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			err := apierrors.FromObject(ev.Object)
			return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
		}
		obj, ok := ev.Object.(client.Object)
		if !ok {
			continue
		}
		rv, _ := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
		r.mu.Lock()
		r.rv = max(r.rv, rv)
		if ev.Type != watch.Bookmark {
			r.seen = append(r.seen, Version{RV: rv, Object: obj, Type: ev.Type, At: time.Now()})
		}
		r.mu.Unlock()
	}
	return false
}

// relist records the objects written since the last version seen, as modified, and moves on to
// the list's version.
func (r *recorder) relist(ctx context.Context) error {
	list := r.list.DeepCopyObject().(client.ObjectList)
	if err := r.c.List(ctx, list, client.InNamespace(r.ns)); err != nil {
		return err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return err
	}
	listed, err := strconv.ParseInt(list.GetResourceVersion(), 10, 64)
	if err != nil {
		return err
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var fresh []Version
	for _, item := range items {
		obj, ok := item.(client.Object)
		if !ok {
			continue
		}
		if rv, _ := strconv.ParseInt(obj.GetResourceVersion(), 10, 64); rv > r.rv {
			fresh = append(fresh, Version{RV: rv, Object: obj, Type: watch.Modified, At: now})
		}
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].RV < fresh[j].RV })
	r.seen = append(r.seen, fresh...)
	r.rv = listed
	return nil
}

// RecordCredentials records the Secrets and the M2MClients of ns, for AcceptedBefore.
func RecordCredentials(ctx context.Context, cfg *rest.Config, ns string) (func() (secrets, clients []Version), error) {
	secrets, err := Record(ctx, cfg, &corev1.SecretList{}, ns)
	if err != nil {
		return nil, err
	}
	clients, err := Record(ctx, cfg, &m2mv1alpha1.M2MClientList{}, ns)
	if err != nil {
		return nil, err
	}
	return func() ([]Version, []Version) { return secrets(), clients() }, nil
}

// AcceptedBefore checks that every version of a Secret in secrets carries a client_secret that
// the latest earlier version of the client in clients accepted at now. It returns how many
// Secret versions it checked, or an error naming the first that fails.
func AcceptedBefore(secrets, clients []Version, accepts func(status client.Object, secret string) bool) (int, error) {
	return AcceptedBeforeUnder(m2mv1alpha1.SecretKeyClientSecret, secrets, clients, accepts)
}

// AcceptedBeforeUnder is AcceptedBefore for the Secret's data key (next_client_secret, say);
// a version without that key is not checked.
func AcceptedBeforeUnder(key string, secrets, clients []Version, accepts func(status client.Object, secret string) bool) (int, error) {
	checked := 0
	for _, sv := range secrets {
		if sv.Type == watch.Deleted {
			continue
		}
		secret, ok := sv.Object.(*corev1.Secret)
		if !ok || (key != m2mv1alpha1.SecretKeyClientSecret && len(secret.Data[key]) == 0) {
			continue
		}
		var before client.Object
		for _, cv := range clients {
			if cv.RV < sv.RV {
				before = cv.Object
			}
		}
		if before == nil || !accepts(before, string(secret.Data[key])) {
			return checked, fmt.Errorf("Secret version %d carries a %s that no earlier status accepted", sv.RV, key)
		}
		checked++
	}
	return checked, nil
}
