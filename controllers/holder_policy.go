package controllers

import (
	"fmt"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// The actions of a rotation that the credential's holder completes (spec.rotation.holder).
const (
	// ActionHolderStart: issue a next credential, accept it with no expiry, and write it under
	// the Secret's next_ key, in the crash-safe order of issue. It also resumes a start that
	// stopped before the Secret carried its next credential; the unwritten one merely expires.
	ActionHolderStart SecretAction = "HolderStart"
	// ActionHolderComplete: the Secret's credential becomes the next one, and every other
	// accepted entry is dropped at once.
	ActionHolderComplete SecretAction = "HolderComplete"
	// ActionHolderCancel: the next credential is no longer accepted and leaves the Secret.
	ActionHolderCancel SecretAction = "HolderCancel"
)

// nextKey is the Secret data key of the next credential of kind.
func nextKey(kind credentials.Kind) string {
	return m2mv1alpha1.NextSecretKeyPrefix + kind.DataKey()
}

// holderNext is the accepted entry without expiry of the started rotation's next credential, or
// nil when no rotation is started or its next credential is no longer accepted without expiry.
func holderNext(obj *m2mv1alpha1.M2MClient) *m2mv1alpha1.AcceptedSecret {
	st := obj.Status.HolderRotation
	if st == nil || st.State != m2mv1alpha1.HolderRotationStarted || st.NextHash == "" {
		return nil
	}
	for i := range obj.Status.AcceptedSecrets {
		if e := &obj.Status.AcceptedSecrets[i]; e.Hash == st.NextHash && e.ExpiresAt == nil {
			return e
		}
	}
	return nil
}

// holderRotation carries out spec.rotation.holder. It is asked once the Secret carries an
// accepted credential without expiry, and before the rules that read two entries without expiry
// as an interrupted or unfinished rotation: while a rotation is started, that is the normal state.
// While one is started nothing else rotates: a scheduled period, a trigger or the rotate
// annotation waits for it to be completed or cancelled (a revocation does not wait: it comes
// first, and drops the next credential with the rest).
func holderRotation(v *secretView) (SecretDecision, bool) {
	st, spec := v.obj.Status.HolderRotation, v.obj.Spec.Rotation.Holder
	if st != nil && st.State == m2mv1alpha1.HolderRotationStarted {
		asked := m2mv1alpha1.HolderRotationStarted
		if spec != nil && spec.ID == st.ID {
			asked = spec.State
		}
		written := v.secret.Data[nextKey(v.kind)]
		switch {
		case st.NextHash != "" && v.hash == st.NextHash:
			return SecretDecision{Action: ActionHolderComplete,
				Why: fmt.Sprintf("the Secret carries the next credential of rotation %q; every earlier credential is dropped", st.ID)}, true
		case holderNext(v.obj) == nil:
			return SecretDecision{Action: ActionHolderCancel,
				Why: fmt.Sprintf("the next credential of rotation %q is no longer accepted (a revocation, a deleted Secret or a credential written by hand replaced it); the rotation is cancelled", st.ID)}, true
		case asked == m2mv1alpha1.HolderRotationCancelled:
			return SecretDecision{Action: ActionHolderCancel,
				Why: fmt.Sprintf("rotation %q is cancelled: its next credential is no longer accepted and the current one stays", st.ID)}, true
		case (len(written) == 0 || v.kind.Fingerprint(string(written)) != st.NextHash) && len(v.obj.Status.AcceptedSecrets) >= maxAcceptedSecrets:
			// Going on adds an entry (the replaced next credential keeps its grace period: the
			// holder may have read it), which a full status cannot take; every rewrite of the
			// next_ key would otherwise add one.
			return SecretDecision{Action: ActionNone, Rotation: RotationDeferred,
				Why: fmt.Sprintf("rotation %q stopped before the Secret carried its next credential, but status already accepts %d credentials; it goes on once the oldest expire", st.ID, len(v.obj.Status.AcceptedSecrets))}, true
		case len(written) == 0 || v.kind.Fingerprint(string(written)) != st.NextHash:
			// Checked before Completed: a next credential that never reached the Secret cannot
			// be the one the holder switched to.
			return SecretDecision{Action: ActionHolderStart,
				Why: fmt.Sprintf("rotation %q stopped before the Secret carried its next credential; it goes on with a fresh one", st.ID)}, true
		case asked == m2mv1alpha1.HolderRotationCompleted:
			return SecretDecision{Action: ActionHolderComplete,
				Why: fmt.Sprintf("rotation %q is completed: the next credential becomes the only one and the previous one is refused at once", st.ID)}, true
		}
		return SecretDecision{Action: ActionNone,
			Why: fmt.Sprintf("rotation %q is started: the current and the next credential are both accepted until it is completed or cancelled; other rotations wait", st.ID)}, true
	}
	// A start waits for an interrupted or unfinished rotation to settle (v.others).
	if spec == nil || spec.State != m2mv1alpha1.HolderRotationStarted || (st != nil && st.ID == spec.ID) || v.others > 0 {
		return SecretDecision{}, false
	}
	if len(v.obj.Status.AcceptedSecrets) >= maxAcceptedSecrets {
		return SecretDecision{Action: ActionNone, Rotation: RotationDeferred,
			Why: fmt.Sprintf("rotation %q is asked for but status already accepts %d credentials; it waits until the oldest expire", spec.ID, len(v.obj.Status.AcceptedSecrets))}, true
	}
	return SecretDecision{Action: ActionHolderStart,
		Why: fmt.Sprintf("rotation %q is started: a next credential is issued into the Secret's %s and accepted alongside the current one", spec.ID, nextKey(v.kind))}, true
}
