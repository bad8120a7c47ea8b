package outage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// settle bounds every wait for the system to converge; at 1,000 clients on 2 cores a fleet
// takes a while to become Ready.
const settle = 5 * time.Minute

// fleet is n clients of one namespace.
type fleet struct {
	ns    string
	names []string
}

// newFleet creates n clients in a namespace of the test's own, with a grace period longer than
// any test, so that a secret a pod has mounted stays valid through it, and waits until every
// client is Ready.
func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	f := &fleet{ns: testenv.Namespace(t, env.Client)}
	for i := range n {
		f.names = append(f.names, fmt.Sprintf("client-%04d", i))
	}
	err := each(f.names, func(name string) error {
		return env.Client.Create(context.Background(), &m2mv1alpha1.M2MClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
			Spec: m2mv1alpha1.M2MClientSpec{
				Scopes:    []m2mv1alpha1.Scope{"read:things"},
				Audiences: []m2mv1alpha1.Audience{"https://api.example.com"},
				Rotation:  m2mv1alpha1.RotationPolicy{GracePeriod: &metav1.Duration{Duration: 24 * time.Hour}},
			},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, settle, func() error { return f.settled("") })
	return f
}

// each calls do for every name, 16 at a time, until it succeeds for each: a call that fails is
// tried again, so that the calls span an outage of the API server.
func each(names []string, do func(name string) error) error {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	var last atomic.Value
	deadline := time.Now().Add(settle)
	for _, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for {
				err := do(name)
				if err == nil {
					return
				}
				if time.Now().After(deadline) {
					last.Store(fmt.Errorf("%s: %w", name, err))
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	err, _ := last.Load().(error)
	return err
}

// rotate asks the named clients for one rotation each, with the m2m.dev/rotate annotation set to
// value.
func (f *fleet) rotate(value string, names []string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{m2mv1alpha1.RotateAnnotation: value}}})
	if err != nil {
		return err
	}
	return each(names, func(name string) error {
		obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name}}
		return env.Client.Patch(context.Background(), obj, client.RawPatch(types.MergePatchType, patch))
	})
}

// settled says, when every client is Ready and has acted on the rotate annotation's value,
// with one current secret which its Secret carries and no rotation in progress, and otherwise
// how many are not yet.
func (f *fleet) settled(annotation string) error {
	ctx := context.Background()
	var list m2mv1alpha1.M2MClientList
	if err := env.Client.List(ctx, &list, client.InNamespace(f.ns)); err != nil {
		return err
	}
	var secrets corev1.SecretList
	if err := env.Client.List(ctx, &secrets, client.InNamespace(f.ns)); err != nil {
		return err
	}
	byName := map[string]*corev1.Secret{}
	for i := range secrets.Items {
		byName[secrets.Items[i].Name] = &secrets.Items[i]
	}
	pending, example := len(f.names)-len(list.Items), ""
	for i := range list.Items {
		o := &list.Items[i]
		s := byName[o.Status.SecretName]
		switch {
		case !meta.IsStatusConditionTrue(o.Status.Conditions, m2mv1alpha1.ConditionReady) || o.Status.ObservedGeneration != o.Generation:
			example = o.Name + " is not Ready"
		case o.Status.LastRotateAnnotation != annotation:
			example = fmt.Sprintf("%s acted on rotate annotation %q, not %q", o.Name, o.Status.LastRotateAnnotation, annotation)
		case s == nil || credentials.Entries(o.Status.AcceptedSecrets).Unexpiring() != 1 || controllers.DecideSecret(o, s, time.Now()).Action != controllers.ActionNone:
			example = o.Name + " has a rotation in progress"
		default:
			continue
		}
		pending++
	}
	if pending > 0 {
		return fmt.Errorf("%d of %d clients not settled, for example %s", pending, len(f.names), example)
	}
	return nil
}

// staleness is the token server's m2m_client_cache_staleness_seconds.
func staleness() (float64, error) {
	return testenv.Metric(metricsURL, "m2m_client_cache_staleness_seconds")
}
