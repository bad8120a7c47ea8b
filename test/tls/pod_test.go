package tls

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// mountCredentials mounts the credentials Secret of key into a directory, as the kubelet does,
// refreshed every period until the test ends, and returns the directory once ca.crt is there.
func mountCredentials(t *testing.T, key types.NamespacedName, period time.Duration) string {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	dir := t.TempDir()
	go mountSecret(ctx, key, dir, period)
	if err := waitForFile(filepath.Join(dir, m2mv1alpha1.SecretKeyCA), wait); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tokenLoad is a pod that asks for a token every 20 ms, each time with a new token source from
// the files of its mounted Secret as they are then: a new connection and TLS handshake.
type tokenLoad struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	// lastFailedStart is when the last failed request started.
	lastFailedStart atomic.Pointer[time.Time]
	stop            chan struct{}
	wg              sync.WaitGroup
}

// startTokenLoad starts the requests and waits for the first 5.
func startTokenLoad(t *testing.T, dir string) *tokenLoad {
	t.Helper()
	l := &tokenLoad{stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			started := time.Now()
			ctx, cancel := context.WithCancel(context.Background())
			ts, err := m2mauth.NewTokenSource(ctx, dir)
			if err == nil {
				_, err = ts.Token()
			}
			cancel()
			if err != nil {
				l.failed.Add(1)
				l.firstErr.CompareAndSwap(nil, err.Error())
				l.lastFailedStart.Store(&started)
			} else {
				l.ok.Add(1)
			}
		}
	}()
	t.Cleanup(l.Stop)
	l.waitFor(t, 5)
	return l
}

// waitFor waits until n more requests than now have succeeded.
func (l *tokenLoad) waitFor(t *testing.T, n int64) {
	t.Helper()
	want := l.ok.Load() + n
	testenv.Eventually(t, wait, func() error {
		if l.ok.Load() < want {
			return errors.New("too few tokens so far")
		}
		return nil
	})
}

// Stop ends the requests and waits for the one in flight; it may be called more than once.
func (l *tokenLoad) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// failedSince reports whether a request that started after at failed.
func (l *tokenLoad) failedSince(at time.Time) bool {
	last := l.lastFailedStart.Load()
	return last != nil && last.After(at)
}
