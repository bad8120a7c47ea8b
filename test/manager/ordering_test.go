package manager

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// Every version of the Secret that the manager wrote carries a secret that the client's status
// accepted before that version was stored.
func TestTheSecretNeverCarriesASecretThatStatusDidNotAcceptFirst(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recorded, err := testenv.RecordCredentials(ctx, env.Config, ns)
	if err != nil {
		t.Fatal(err)
	}

	create(t, newClient(ns, "ordered"))
	waitReady(t, ns, "ordered", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	for range 3 {
		s := secretOf(t, ns, "ordered-credentials")
		if err := env.Client.Delete(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitReplaced(t, s)
		waitReady(t, ns, "ordered", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	}
	time.Sleep(500 * time.Millisecond) // let the last watch events arrive
	secrets, clients := recorded()
	checked, err := testenv.AcceptedBefore(secrets, clients, func(status client.Object, secret string) bool {
		return acceptedNow(status.(*m2mv1alpha1.M2MClient), secret)
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 4 {
		t.Fatalf("only %d Secret versions were observed; the test saw too little to judge", checked)
	}
}
