package outage

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// apiServerOutage is how long the API server stays stopped each time.
const apiServerOutage = 10 * time.Second

// The API server stops for 10 s and starts again, twice, each time while the manager rotates
// every client of the fleet (half the rotations asked for before the stop, half while the API server is down), and
// pods ask for tokens all along with what they read from their Secrets. No request fails, the
// token server's cache catches up by itself, and each rotation asked for writes exactly one new
// secret into each client's Secret.
func TestTwoAPIServerRestartsRefuseNoValidCredentialAndRotateEachClientOnce(t *testing.T) {
	ctx := context.Background()
	f := newLoadedFleet(t, clients)
	k, l := f.kubelet, f.load
	markers := testenv.Namespace(t, env.Client)

	const restarts = 2
	for round := 1; round <= restarts; round++ {
		value := fmt.Sprintf("restart-%d", round)
		half := len(f.names) / 2
		if err := f.rotate(value, f.names[:half]); err != nil {
			t.Fatal(err)
		}
		failedBefore := l.failed.Load()
		stopped := time.Now()
		start := stopAPIServer(t)
		t.Logf("restart %d: the API server stopped in %s with %d of %d rotations asked for, %d new secrets in Secrets so far", round, time.Since(stopped).Round(time.Millisecond), half, len(f.names), k.changed.Load())
		asked := make(chan error, 1)
		go func() { asked <- f.rotate(value, f.names[half:]) }()
		testenv.Eventually(t, apiServerOutage, func() error {
			if s, err := staleness(); err != nil || s <= 0 {
				return fmt.Errorf("staleness %v (%v) while the API server is down", s, err)
			}
			return nil
		})
		time.Sleep(time.Until(stopped.Add(apiServerOutage)))
		if err := start(); err != nil {
			t.Fatal(err)
		}
		up := time.Now()

		// A client created now gets tokens once the manager has written its Secret and the token
		// server's cache has its status.
		marker := &m2mv1alpha1.M2MClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: markers, Name: value},
			Spec:       m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:things"}},
		}
		if err := env.Client.Create(ctx, marker); err != nil {
			t.Fatal(err)
		}
		if err := <-asked; err != nil {
			t.Fatal(err)
		}
		took := waitAll(t, up, settle, []check{
			{"manager: new client Ready", func() error { return ready(marker) }},
			{"token server: new client gets a token", func() error {
				return getsToken(marker)
			}},
			{fmt.Sprintf("manager: all %d clients rotated", len(f.names)), func() error { return f.settled(value) }},
		})
		// The token server has caught up; its metric says so too. (Before, it may have read 0
		// for a moment: a watch resumed against the new API server is open until it ends with
		// "too old resource version".)
		testenv.Eventually(t, settle, func() error {
			if s, err := staleness(); err != nil || s != 0 {
				return fmt.Errorf("staleness %v (%v) after the token server caught up", s, err)
			}
			return nil
		})
		t.Logf("restart %d: after the API server was up again: %s; since it stopped, %d token requests failed", round, took, l.failed.Load()-failedBefore)
	}

	f.finish(t, restarts)
}

// stopAPIServer stops the API server and returns the function that starts it again, which
// t.Cleanup also calls, so that the API server is back for the next test even when this one
// fails. A stop that takes too long ends in SIGKILL, which is an outage all the same.
func stopAPIServer(t *testing.T) (start func() error) {
	t.Helper()
	if err := env.ControlPlane.APIServer.Stop(); err != nil && !strings.Contains(err.Error(), "timeout waiting for process") {
		t.Fatal(err)
	}
	var once sync.Once
	var err error
	start = func() error {
		once.Do(func() { err = env.ControlPlane.APIServer.Start() })
		return err
	}
	t.Cleanup(func() {
		if err := start(); err != nil {
			t.Errorf("starting the API server again: %v", err)
		}
	})
	return start
}

// ready says whether the manager has made obj Ready.
func ready(obj *m2mv1alpha1.M2MClient) error {
	o := &m2mv1alpha1.M2MClient{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), o); err != nil {
		return err
	}
	if !meta.IsStatusConditionTrue(o.Status.Conditions, m2mv1alpha1.ConditionReady) {
		return fmt.Errorf("%s is not Ready", o.Name)
	}
	return nil
}

// getsToken asks for a token with the credentials in obj's Secret.
func getsToken(obj *m2mv1alpha1.M2MClient) error {
	ctx := context.Background()
	s := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: obj.Name + "-credentials"}, s); err != nil {
		return err
	}
	resp, err := testenv.ClientCredentials(ctx, http.DefaultClient, issuer, string(s.Data[m2mv1alpha1.SecretKeyClientID]), string(s.Data[m2mv1alpha1.SecretKeyClientSecret]))
	if err != nil {
		return err
	}
	if resp.Status != http.StatusOK {
		return fmt.Errorf("status %d, error %q", resp.Status, resp.Error)
	}
	return nil
}

// check is one condition of a recovery.
type check struct {
	name string
	ok   func() error
}

// waitAll polls every check until each has passed once, and says how long after since each
// passed; it fails the test when one has not passed after timeout.
func waitAll(t *testing.T, since time.Time, timeout time.Duration, checks []check) string {
	t.Helper()
	start := time.Now()
	took := make([]time.Duration, len(checks))
	passed := make([]bool, len(checks))
	last := make([]error, len(checks))
	for {
		pending := 0
		for i, c := range checks {
			if passed[i] {
				continue
			}
			if last[i] = c.ok(); last[i] == nil {
				passed[i], took[i] = true, time.Since(since)
			} else {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if time.Since(start) > timeout {
			for i, c := range checks {
				if !passed[i] {
					t.Errorf("%s: not after %s: %v", c.name, timeout, last[i])
				}
			}
			t.FailNow()
		}
		time.Sleep(250 * time.Millisecond)
	}
	parts := make([]string, len(checks))
	for i, c := range checks {
		parts[i] = fmt.Sprintf("%s in %s", c.name, took[i].Round(10*time.Millisecond))
	}
	return strings.Join(parts, ", ")
}
