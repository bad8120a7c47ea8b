package tokenserver

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func unstructuredClient(ns, name string, poisoned bool) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	u.SetNamespace(ns)
	u.SetName(name)
	if poisoned {
		u.Object["status"] = map[string]any{"lastRotationTime": "2026-01-01t00:00:00z"}
	}
	return u
}

func initialEventsEnd() *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	u.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	return u
}

// In watch-list mode a restarted watch's initial events replace the LIST: an object that did not
// decode and was deleted while no watch was open is no longer counted once they end, and one
// that is still there and still does not decode is.
func TestTheInitialEventsOfAWatchForgetUndecodableObjectsDeletedMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		sentence    string
		initial     bool
		stillStored bool
		want        int
	}{
		{sentence: "a deleted object is forgotten at the end of the initial events", initial: true, want: 0},
		{sentence: "an object still stored and still undecodable stays counted", initial: true, stillStored: true, want: 1},
		{sentence: "a watch without initial events forgets nothing", initial: false, want: 1},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			s := &InformerClients{clock: clocktesting.NewFakeClock(time.Now())}
			s.markUndecodable("team-a/poisoned", true)
			fake := watch.NewFake()
			w := s.observe(context.Background(), fake, "", tc.initial)
			defer w.Stop()
			go func() {
				fake.Add(unstructuredClient("team-b", "fine", false))
				if tc.stillStored {
					fake.Add(unstructuredClient("team-a", "poisoned", true))
				}
				fake.Action(watch.Bookmark, initialEventsEnd())
			}()
			for ev := range w.ResultChan() {
				if ev.Type == watch.Bookmark {
					break
				}
			}
			if got := s.Undecodable(); got != tc.want {
				t.Fatalf("%d undecodable objects counted, want %d", got, tc.want)
			}
		})
	}
}
