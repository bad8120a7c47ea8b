package outage

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/controllers"
)

const (
	// A slow etcd answers each request etcdLatency late, for etcdSlow; a paused one answers
	// nothing for etcdPause.
	etcdLatency = 500 * time.Millisecond
	etcdSlow    = 10 * time.Second
	etcdPause   = 10 * time.Second

	// managerRequesters is how many requests the manager can have waiting for an answer at once,
	// besides posting events: one for each M2MClient worker, the signing-key worker, each
	// informer (M2MClients, the manager's Secrets, ClientIDBindings; a new list or watch), the
	// status repair and the status-policy check. Each sends its next request only after the
	// answer to its last. Events are posted each on its own, but the manager records them only
	// after a write has been answered.
	managerRequesters = controllers.DefaultMaxConcurrentReconciles + 1 + 3 + 1 + 1

	// settling is how long after etcd stops the requests already under way, and the events the
	// manager recorded just before, have surely been sent; from then on every requester waits.
	settling = time.Second
)

// etcd answers every request 500 ms late for 10 s, while every client is asked to rotate, and
// then answers nothing for 10 s, while half the clients rotate and the other half are asked to.
// Pods ask for tokens all along, and the token server refuses none: it issues from its cache.
// Once etcd answers again, every rotation completes, each with exactly one new secret.
//
// While etcd is paused, a request to the API server waits until etcd answers (or, after a
// minute, the API server gives up); nothing fails, so the workers' rate limiter (5 ms per
// client, doubling with each failure) never comes into play, and a bound derived from it would
// allow thousands of requests in 10 s. The bound is what waiting allows: once the requests
// under way when etcd stopped have been sent, at most one more for each of the manager's
// requesters. A manager that gave up on a request and tried again, or sent requests without
// waiting for answers, would send more.
//
// Both faults, because they differ: a slow etcd lets the manager work, slowly; a paused one
// stops it.
func TestWhileEtcdIsSlowOrPausedTokensKeepComingAndTheManagerWaitsWithoutHotLooping(t *testing.T) {
	f := newLoadedFleet(t, clients)
	l := f.load

	requests, served := managerRequests.Load(), l.ok.Load()
	etcdLink.setDelay(etcdLatency)
	t.Cleanup(func() { etcdLink.setDelay(0) })
	slow := time.Now()
	asked := make(chan error, 1)
	go func() { asked <- f.rotate("slow", f.names) }()
	time.Sleep(etcdSlow)
	etcdLink.setDelay(0)
	restored := time.Now()
	if err := <-asked; err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd slow (%s a request) for %s: the manager sent %d requests, the token server issued %d tokens", etcdLatency, restored.Sub(slow).Round(time.Millisecond), managerRequests.Load()-requests, l.ok.Load()-served)
	took := waitAll(t, restored, settle, []check{{fmt.Sprintf("manager: all %d clients rotated", len(f.names)), func() error { return f.settled("slow") }}})
	t.Logf("after etcd was fast again: %s", took)

	half := len(f.names) / 2
	if err := f.rotate("paused", f.names[:half]); err != nil {
		t.Fatal(err)
	}
	requests, served = managerRequests.Load(), l.ok.Load()
	resume := pauseEtcd(t)
	paused := time.Now()
	go func() { asked <- f.rotate("paused", f.names[half:]) }()
	time.Sleep(settling)
	settled := managerRequests.Load()
	time.Sleep(time.Until(paused.Add(etcdPause)))
	sent := managerRequests.Load() - settled
	resume()
	resumed := time.Now()
	t.Logf("etcd paused for %s with %d rotations under way and %d asked for: the manager sent %d requests (%d after the first %s), the token server issued %d tokens", resumed.Sub(paused).Round(time.Millisecond), half, len(f.names)-half, managerRequests.Load()-requests, sent, settling, l.ok.Load()-served)
	if sent > managerRequesters {
		t.Errorf("the manager sent %d requests while etcd was paused, after the first %s; it has %d requesters, each waiting for its answer", sent, settling, managerRequesters)
	}
	if err := <-asked; err != nil {
		t.Fatal(err)
	}
	took = waitAll(t, resumed, settle, []check{{fmt.Sprintf("manager: all %d clients rotated", len(f.names)), func() error { return f.settled("paused") }}})
	t.Logf("after etcd answered again: %s; the manager sent %d requests since it was paused", took, managerRequests.Load()-requests)

	f.finish(t, 2)
}

// slowLink sits between kube-apiserver and etcd and holds every chunk that the API server sends
// to etcd for a delay before passing it on, in order: each request (etcd's gRPC over HTTP/2)
// then reaches etcd that much later, while etcd's answers and watch events come back at once.
// The delay is zero until a test sets one.
type slowLink struct {
	ln     net.Listener
	target func() string // the etcd address, known once etcd has started
	delay  atomic.Int64  // nanoseconds
	wg     sync.WaitGroup
}

func newSlowLink() (*slowLink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &slowLink{ln: ln}
	l.wg.Add(1)
	go l.serve()
	return l, nil
}

// URL is what the API server takes as --etcd-servers.
func (l *slowLink) URL() string { return "http://" + l.ln.Addr().String() }

// setDelay holds each chunk to etcd for d from now on; 0 passes them on at once.
func (l *slowLink) setDelay(d time.Duration) { l.delay.Store(int64(d)) }

func (l *slowLink) close() {
	_ = l.ln.Close()
	l.wg.Wait()
}

func (l *slowLink) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.pipe(c)
	}
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe joins one API server connection to etcd.
func (l *slowLink) pipe(c net.Conn) {
	e, err := net.Dial("tcp", l.target())
	if err != nil {
		_ = c.Close()
		return
	}
	done := make(chan struct{})
	closeBoth := sync.OnceFunc(func() { close(done); _ = c.Close(); _ = e.Close() })
	go func() {
		_, _ = io.Copy(c, e)
		closeBoth()
	}()
	queue := make(chan chunk, 4096)
	go func() {
		defer closeBoth()
		for ch := range queue {
			time.Sleep(time.Until(ch.due))
			if _, err := e.Write(ch.data); err != nil {
				return
			}
		}
	}()
	defer close(queue)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			select {
			case queue <- chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(time.Duration(l.delay.Load()))}:
			case <-done:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// etcdPID finds the etcd process that keeps its data in dataDir.
func etcdPID(dataDir string) (int, error) {
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if filepath.Base(args[0]) != "etcd" {
			continue
		}
		for i, a := range args {
			if a == "--data-dir="+dataDir || a == "--data-dir" && i+1 < len(args) && args[i+1] == dataDir {
				return strconv.Atoi(filepath.Base(filepath.Dir(p)))
			}
		}
	}
	return 0, fmt.Errorf("no etcd process with --data-dir=%s", dataDir)
}

// pauseEtcd stops the etcd process (SIGSTOP) and returns the function that resumes it, which
// t.Cleanup also calls, so that etcd answers again for the next test even when this one fails.
func pauseEtcd(t *testing.T) (resume func()) {
	t.Helper()
	pid, err := etcdPID(env.ControlPlane.Etcd.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resume = sync.OnceFunc(func() {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Errorf("resuming etcd: %v", err)
		}
	})
	t.Cleanup(resume)
	return resume
}
