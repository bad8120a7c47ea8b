package controllers

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// BindingRecord is what a binding's status says once the manager has seen its client c (nil
// when the client is gone) at now. tokensRevokedBefore is raised, never lowered:
//   - to the second after the manager first sees the client disabled (disabledSince) or gone
//     (deletedAt): tokens carry iat in whole seconds, and one issued in this second, before the
//     manager looked, must be refused too;
//   - to the creation of a client whose UID differs from the one recorded, or that was created
//     in a later second than the binding (created for an earlier client of the ID) while no
//     UID is recorded: the client was deleted and created again, perhaps between two looks, and
//     every token of the old one was issued before the new one existed. Its creation second,
//     not the one after: the new client's own first tokens must not be refused;
//   - to spec.revokeTokensIssuedBefore, up to the second after now: a revocation stays when the
//     spec moves back (a GitOps sync, an edit), while a mistaken time in the future binds only
//     while it is in the spec.
func BindingRecord(st m2mv1alpha1.ClientIDBindingStatus, bindingCreated time.Time, c *m2mv1alpha1.M2MClient, now time.Time) m2mv1alpha1.ClientIDBindingStatus {
	st = *st.DeepCopy()
	raise := func(t metav1.Time) {
		if st.TokensRevokedBefore == nil || st.TokensRevokedBefore.Before(&t) {
			st.TokensRevokedBefore = t.DeepCopy()
		}
	}
	mark := metav1.NewTime(now.Truncate(time.Second).Add(time.Second))
	if c == nil {
		st.DisabledSince = nil
		if st.DeletedAt == nil {
			st.DeletedAt = mark.DeepCopy()
			raise(mark)
		}
		return st
	}
	created := c.CreationTimestamp.Truncate(time.Second)
	if st.ClientUID != "" && st.ClientUID != string(c.UID) || st.ClientUID == "" && bindingCreated.Truncate(time.Second).Before(created) {
		raise(metav1.NewTime(created))
		// A disable of the old client says nothing about the new one.
		st.DisabledSince = nil
	}
	st.ClientUID = string(c.UID)
	if t := c.Spec.RevokeTokensIssuedBefore; t != nil {
		if t.Before(&mark) {
			raise(*t)
		} else {
			raise(mark)
		}
	}
	st.DeletedAt = nil
	switch {
	case c.Spec.Disabled:
		if st.DisabledSince == nil {
			st.DisabledSince = mark.DeepCopy()
			raise(mark)
		}
	default:
		st.DisabledSince = nil
	}
	return st
}
