package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/undecodable"
)

// listAnswer is a LIST answer of n M2MClients with statuses as the manager writes them.
func listAnswer(b *testing.B, n int) []byte {
	list := &m2mv1alpha1.M2MClientList{TypeMeta: metav1.TypeMeta{APIVersion: m2mv1alpha1.GroupVersion.String(), Kind: "M2MClientList"}}
	for i := range n {
		obj := m2mv1alpha1.M2MClient{TypeMeta: metav1.TypeMeta{APIVersion: m2mv1alpha1.GroupVersion.String(), Kind: "M2MClient"}}
		obj.Namespace, obj.Name, obj.UID = "team-a", fmt.Sprintf("client-%d", i), "0b5e2a8e-7c1d-4f7e-9a52-0c6f1f2f3a4b"
		obj.Spec.Scopes = []m2mv1alpha1.Scope{"read:things", "write:things"}
		obj.Spec.Audiences = []m2mv1alpha1.Audience{"https://api.example.com"}
		obj.Status.ClientID = fmt.Sprintf("m2m-client-%020d", i)
		obj.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(fmt.Sprint(i)), CreatedAt: metav1.Now(), MAC: strings.Repeat("m", 43)}}
		obj.Status.Conditions = []metav1.Condition{{Type: m2mv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: m2mv1alpha1.ReasonCredentialsReady, LastTransitionTime: metav1.Now(), Message: "credentials are in the Secret"}}
		list.Items = append(list.Items, obj)
	}
	raw, err := json.Marshal(list)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

type staticAnswer struct{ body []byte }

func (s staticAnswer) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(string(s.body)))}, nil
}

// BenchmarkCacheListDecode is what the manager's cache pays per LIST of 1,000 clients: the typed
// decode alone ("typed"), and through the filter that first decodes each object on its own
// ("filtered").
func BenchmarkCacheListDecode(b *testing.B) {
	body := listAnswer(b, 1000)
	decoder := serializer.NewCodecFactory(m2mv1alpha1.NewScheme()).UniversalDeserializer()
	typed := func(r io.Reader) {
		raw, _ := io.ReadAll(r)
		if _, _, err := decoder.Decode(raw, nil, &m2mv1alpha1.M2MClientList{}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("typed", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			typed(strings.NewReader(string(body)))
		}
	})
	b.Run("filtered", func(b *testing.B) {
		hc := newStatusRepair().filterTransport(staticAnswer{body}, "")
		req, _ := http.NewRequest(http.MethodGet, "https://api/apis/m2m.dev/v1alpha1/m2mclients", nil)
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			resp, err := hc.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			typed(resp.Body)
			resp.Body.Close()
		}
	})
}

// A repaired object is looked at again after the longest delay, so that its key's delay is
// forgotten once it decodes or is gone: a status writer who poisons, waits for the repair and
// deletes, under new names, cannot make the queue's delays pile up.
func TestARepairedObjectIsLookedAtAgainSoThatItsDelayCanBeForgotten(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(time.Now())
	s := newStatusRepair()
	s.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](repairFirstDelay, repairMaxDelay),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Clock: clk})
	defer s.queue.ShutDown()
	stored := true
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(_ context.Context, _ client.WithWatch, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
			if !stored {
				return apierrors.NewNotFound(m2mv1alpha1.GroupVersion.WithResource("m2mclients").GroupResource(), key.Name)
			}
			u := obj.(*unstructured.Unstructured)
			u.SetNamespace(key.Namespace)
			u.SetName(key.Name)
			u.Object["status"] = map[string]any{"lastRotationTime": "2026-01-01t00:00:00z"}
			return nil
		},
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			return nil
		},
	}).Build()
	s.start(c, c, events.NewFakeRecorder(10))
	key := types.NamespacedName{Namespace: "team-a", Name: "poisoned"}
	s.report(undecodable.Object{Namespace: key.Namespace, Name: key.Name})
	clk.Step(repairFirstDelay)
	if k, _ := s.queue.Get(); k != key {
		t.Fatalf("got %v from the queue, want %v", k, key)
	}
	s.repairOne(ctx, key)
	s.queue.Done(key)
	if s.queue.NumRequeues(key) == 0 {
		t.Fatal("the repair forgot the delay at once: a status poisoned again would be repaired again at once")
	}

	stored = false // deleted after its repair
	clk.Step(repairMaxDelay)
	got := make(chan types.NamespacedName)
	go func() {
		for {
			k, shutdown := s.queue.Get()
			if shutdown {
				return
			}
			s.queue.Done(k)
			if k == key {
				got <- k
				return
			}
		}
	}()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("a repaired object was never looked at again: its key keeps its delay for good")
	}
	s.repairOne(ctx, key)
	if n := s.queue.NumRequeues(key); n != 0 {
		t.Fatalf("the key of a deleted object keeps its delay (%d requeues)", n)
	}
}
