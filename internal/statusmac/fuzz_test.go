package statusmac

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// FuzzVerify feeds arbitrary MACs and status fields to the verifier: it must never panic, and a
// MAC sealed for one status must verify for none that differs in a field the MAC covers.
func FuzzVerify(f *testing.F) {
	f.Add("ns", "name", "uid", "m2m-id", "sha256:abc", "v1.k.AAAA", "other-id")
	f.Add("", "", "", "", "", "", "")
	f.Add("a\x00b", "c", "d", "e", "f", "v1..", "e")
	key, err := Generate(StateActive, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	set := &Set{Keys: []*Key{key}}
	f.Fuzz(func(t *testing.T, ns, name, uid, id, hash, mac, otherID string) {
		obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)}}
		obj.Status.ClientID = id
		obj.Status.ClientIDMAC = mac
		obj.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{{Hash: hash, MAC: mac}}
		_ = set.VerifyClientID(obj)
		_ = set.VerifyEntry(obj, &obj.Status.AcceptedSecrets[0])
		if id == "" {
			return
		}
		if err := set.Seal(obj); err != nil {
			t.Fatal(err)
		}
		if !set.VerifyClientID(obj) || !set.VerifyEntry(obj, &obj.Status.AcceptedSecrets[0]) {
			t.Fatal("a status the set sealed does not verify")
		}
		if otherID != id && otherID != "" {
			moved := obj.DeepCopy()
			moved.Status.ClientID = otherID
			if set.VerifyClientID(moved) || set.VerifyEntry(moved, &moved.Status.AcceptedSecrets[0]) {
				t.Fatalf("a MAC sealed for client ID %q verifies for %q", id, otherID)
			}
		}
	})
}
