package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

func TestTrustStatus(t *testing.T) {
	key, err := statusmac.Generate(statusmac.StateActive, now)
	if err != nil {
		t.Fatal(err)
	}
	enforced := &statusmac.Set{Keys: []*statusmac.Key{key}, EnforcedSince: &now}
	upgrading := &statusmac.Set{Keys: []*statusmac.Key{key}}
	hour, forever := time.Hour, 9999*24*time.Hour
	sealed := func(entries ...m2mv1alpha1.AcceptedSecret) *m2mv1alpha1.M2MClient {
		obj := clientWith(entries...)
		if err := enforced.Seal(obj); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	addedHash := sealed(entry(current, nil))
	addedHash.Status.AcceptedSecrets = append(addedHash.Status.AcceptedSecrets, entry(old, &forever))
	stolenID := sealed(entry(current, nil))
	stolenID.Status.ClientID = "m2m-victim"
	newUID := sealed(entry(current, nil))
	newUID.UID = "uid-restored"
	legacy := clientWith(entry(current, nil), entry(old, &forever))
	oddID := clientWith(entry(current, nil))
	oddID.Status.ClientID = "abc@clients"
	pemKey, _ := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Issue()
	keyEntry, _ := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Entry(pemKey, now)
	keyEntry.ExpiresAt = ptr.To(metav1.NewTime(now.Add(forever)))
	addedKeyBeforeEnforcement := clientWith(entry(current, nil), keyEntry)

	for sentence, tc := range map[string]struct {
		obj       *m2mv1alpha1.M2MClient
		keys      *statusmac.Set
		clientID  string
		kept      int
		discarded int
		check     func(StatusTrust) bool
	}{
		"a status the manager sealed is kept whole":                                                    {sealed(entry(current, nil), entry(old, &hour)), enforced, "m2m-id", 2, 0, nil},
		"a hash someone else added is discarded and the rest kept":                                     {addedHash, enforced, "m2m-id", 1, 1, nil},
		"a client ID someone else wrote is discarded with every entry":                                 {stolenID, enforced, "", 0, 2, nil},
		"a restored object (new UID) has lost its status":                                              {newUID, enforced, "", 0, 2, nil},
		"entries without a client ID are discarded":                                                    {clientWith(), enforced, "", 0, 0, nil},
		"an upgrade keeps what the previous version wrote":                                             {legacy, upgrading, "m2m-id", 2, 0, func(tr StatusTrust) bool { return tr.Migrated == 2 }},
		"an upgrade keeps a grace entry at most one grace period from now":                             {legacy, upgrading, "m2m-id", 2, 0, func(tr StatusTrust) bool { return tr.Entries[1].ExpiresAt.Time.Equal(now.Add(time.Hour)) }},
		"an upgrade with no status keys at all still keeps what the version wrote":                     {legacy, nil, "m2m-id", 2, 0, nil},
		"an upgrade does not take over a client ID no version could have issued":                       {oddID, upgrading, "", 0, 2, nil},
		"an upgrade never takes over a key's entry without a MAC, which no version without MACs wrote": {addedKeyBeforeEnforcement, upgrading, "m2m-id", 1, 1, nil},
	} {
		t.Run(sentence, func(t *testing.T) {
			tr := TrustStatus(tc.obj, tc.keys, now)
			if tr.ClientID != tc.clientID || len(tr.Entries) != tc.kept || tr.Discarded != tc.discarded {
				t.Fatalf("got ID %q, %d kept, %d discarded", tr.ClientID, len(tr.Entries), tr.Discarded)
			}
			if tc.check != nil && !tc.check(tr) {
				t.Fatalf("got %+v", tr)
			}
		})
	}
}
