package controllers

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// StatusTrust is what the manager keeps of the status it read: what it can vouch for.
type StatusTrust struct {
	// ClientID is status.clientID when it is kept, else "".
	ClientID string
	// Entries are the accepted entries that are kept.
	Entries []m2mv1alpha1.AcceptedSecret
	// Discarded counts what was dropped (the client ID counts as one): fields the manager did
	// not write, which it treats as lost status.
	Discarded int
	// Migrated counts entries kept without a valid MAC because enforcement has not started
	// (an upgrade from a version without MACs).
	Migrated int
}

// TrustStatus decides which of obj's status the manager vouches for at now. Once the status keys
// are enforced, only what carries a valid MAC: anything else was written by someone else and is
// treated as lost. Before that (an upgrade), it takes over what the previous version wrote, as
// the token server of that version accepted it: a secret in its grace period, whose plaintext is
// gone and cannot be proven, stays accepted at most one grace period from now.
func TrustStatus(obj *m2mv1alpha1.M2MClient, keys *statusmac.Set, now time.Time) StatusTrust {
	st := &obj.Status
	if st.ClientID != "" && !m2mv1alpha1.ValidClientID(st.ClientID) {
		// No ID of this form was ever issued or bound: someone else wrote it.
		return StatusTrust{Discarded: 1 + len(st.AcceptedSecrets)}
	}
	if !keys.Enforced() {
		t := StatusTrust{ClientID: st.ClientID}
		latest := metav1.NewTime(now.Add(gracePeriod(obj)).Truncate(time.Second))
		for i := range st.AcceptedSecrets {
			e := st.AcceptedSecrets[i]
			verified := st.ClientID != "" && keys.VerifyEntry(obj, &e)
			if credentials.FormOf(&e) == credentials.FormKey && !verified {
				// No version without MACs wrote a key's entry: someone else did.
				t.Discarded++
				continue
			}
			if !verified {
				t.Migrated++
				if e.ExpiresAt != nil && e.ExpiresAt.After(latest.Time) {
					e.ExpiresAt = latest.DeepCopy()
				}
			}
			t.Entries = append(t.Entries, e)
		}
		return t
	}
	if st.ClientID == "" {
		return StatusTrust{Discarded: len(st.AcceptedSecrets)}
	}
	if !keys.VerifyClientID(obj) {
		return StatusTrust{Discarded: 1 + len(st.AcceptedSecrets)}
	}
	t := StatusTrust{ClientID: st.ClientID}
	for i := range st.AcceptedSecrets {
		if keys.VerifyEntry(obj, &st.AcceptedSecrets[i]) {
			t.Entries = append(t.Entries, st.AcceptedSecrets[i])
		} else {
			t.Discarded++
		}
	}
	return t
}
