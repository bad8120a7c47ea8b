package controllers_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/operator"
)

// version is one stored version of an object, in etcd's order.
type version struct {
	rv     int64
	obj    client.Object
	events watch.EventType
}

// record collects every version of the objects of list's kind in ns until ctx ends.
func record(t *testing.T, ctx context.Context, list client.ObjectList, ns string) func() []version {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, list, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []version
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			obj, ok := ev.Object.(client.Object)
			if !ok {
				continue
			}
			rv, _ := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
			mu.Lock()
			seen = append(seen, version{rv: rv, obj: obj, events: ev.Type})
			mu.Unlock()
		}
	}()
	return func() []version {
		w.Stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

// Every version of the Secret that the manager wrote carries a secret that the client's status
// accepted before that version was stored. etcd revisions order writes across resources.
func TestTheSecretNeverCarriesASecretThatStatusDidNotAcceptFirst(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	secrets := record(t, ctx, &corev1.SecretList{}, ns)
	clients := record(t, ctx, &m2mv1alpha1.M2MClientList{}, ns)

	create(t, newClient(ns, "ordered"))
	waitReady(t, ns, "ordered", metav1.ConditionTrue, controllers.ReasonCredentialsReady)
	for range 3 {
		s := secretOf(t, ns, "ordered-credentials")
		if err := env.Client.Delete(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitReplaced(t, s)
		waitReady(t, ns, "ordered", metav1.ConditionTrue, controllers.ReasonCredentialsReady)
	}
	time.Sleep(500 * time.Millisecond) // let the last watch events arrive
	secretVersions, clientVersions := secrets(), clients()

	checked := 0
	for _, sv := range secretVersions {
		if sv.events == watch.Deleted {
			continue
		}
		value := string(sv.obj.(*corev1.Secret).Data["client_secret"])
		var status *m2mv1alpha1.M2MClientStatus
		for _, cv := range clientVersions {
			if cv.rv < sv.rv {
				status = &cv.obj.(*m2mv1alpha1.M2MClient).Status
			}
		}
		if status == nil || !credentials.Verify(status.AcceptedSecrets, value, time.Now()) {
			t.Fatalf("Secret version %d carries a secret that no earlier status accepted", sv.rv)
		}
		checked++
	}
	if checked < 4 {
		t.Fatalf("only %d Secret versions were observed; the test saw too little to judge", checked)
	}
}
