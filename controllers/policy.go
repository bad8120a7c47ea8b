package controllers

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// SecretAction is what the reconciler does to bring the Secret and status.acceptedSecrets into
// agreement.
type SecretAction string

const (
	// ActionNone: the Secret carries the one current secret and no rotation is due.
	ActionNone SecretAction = "None"
	// ActionGenerate: the Secret has no secret (it is missing, or its client_secret is empty).
	// Issue a new one.
	ActionGenerate SecretAction = "Generate"
	// ActionRotate: the Secret carries the one current secret and a rotation is due (Rotation
	// says why). Issue a new one; the current one gets the grace period.
	ActionRotate SecretAction = "Rotate"
	// ActionAdopt: the Secret carries a secret that status does not list as current (a person
	// or tool wrote it). Accept its hash and start the previous secrets' grace period.
	ActionAdopt SecretAction = "Adopt"
	// ActionRecoverStatus: status has no client ID and no hashes, but the Secret does: status was
	// lost (a restore without status, or a manual wipe). Rebuild it from the Secret.
	ActionRecoverStatus SecretAction = "RecoverStatus"
	// ActionCompleteRotation: the Secret carries the newest secret, but earlier secrets have no
	// expiry yet. Start their grace period. Reached after a crash between writing a new secret
	// and expiring the old ones.
	ActionCompleteRotation SecretAction = "CompleteRotation"
	// ActionResumeRotation: status accepts a newer secret than the one the Secret carries: a
	// rotation persisted its hash and stopped before writing the Secret. That secret was never
	// written anywhere and its plaintext is gone, so the rotation goes on by issuing a fresh
	// secret; the unwritten hash merely expires.
	ActionResumeRotation SecretAction = "ResumeRotation"
	// ActionRefuseWeak: the Secret carries a new secret that is unfit. Accept nothing.
	ActionRefuseWeak SecretAction = "RefuseWeak"
	// ActionConflict: the Secret is not this client's. Never touch it.
	ActionConflict SecretAction = "Conflict"
)

// Issues reports whether the action issues a new secret (generate, rotate or resume): the one
// path that writes the crash-safe order.
func (a SecretAction) Issues() bool {
	return a == ActionGenerate || a == ActionRotate || a == ActionResumeRotation
}

// SecretDecision is an action and the sentence that explains it.
type SecretDecision struct {
	Action SecretAction
	// Why is a sentence for events, conditions and logs. It never contains a secret.
	Why string
	// Secret is the credential the Secret carries (its client_secret, or its private_key for a
	// key pair), for ActionAdopt and ActionRecoverStatus.
	Secret string
	// Rotation says why a rotation happens (ActionRotate, and RotationResumed for
	// ActionResumeRotation), or that a due rotation waits (RotationDeferred, with ActionNone).
	Rotation RotationReason
}

// SecretName is the name of the client's credentials Secret.
func SecretName(obj *m2mv1alpha1.M2MClient) string {
	if obj.Spec.Secret.Name != "" {
		return obj.Spec.Secret.Name
	}
	return obj.Name + "-credentials"
}

// OwnedBy reports whether secret's controller is the M2MClient obj. The owner's UID is not
// compared, so that a client restored from a backup (with a new UID) finds its Secret again.
func OwnedBy(secret *corev1.Secret, obj *m2mv1alpha1.M2MClient) bool {
	ref := metav1.GetControllerOf(secret)
	if ref == nil {
		return false
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err == nil && gv.Group == m2mv1alpha1.GroupVersion.Group && ref.Kind == "M2MClient" && ref.Name == obj.Name
}

// secretView is what the rules of DecideSecret look at: the object, its Secret, and what is
// derived from them once.
type secretView struct {
	obj    *m2mv1alpha1.M2MClient
	secret *corev1.Secret
	now    time.Time
	// kind is the kind of credential the client's Secret carries; key is its Secret data key.
	kind credentials.Kind
	key  string
	// value is the credential the Secret carries, and hash its fingerprint ("" for a private key
	// that does not parse).
	value, hash string
	// entry is the accepted entry of hash and of the client's kind (a key's entry for a key
	// pair, else a secret's), or nil.
	entry *m2mv1alpha1.AcceptedSecret
	// otherForm: hash is the hash of an entry of another form than the kind's (a key's entry
	// while the client takes a secret). A key's hash input is public, so such a secret is never
	// accepted.
	otherForm bool
	// newest is the newest entry without expiry, of either kind; others counts the other
	// entries without expiry, of either kind, so that switching kind expires the old one.
	newest *m2mv1alpha1.AcceptedSecret
	others int
}

// secretRule returns a decision, or false when it has nothing to say and the next rule decides.
type secretRule func(v *secretView) (SecretDecision, bool)

// secretRules are asked in order; the first that decides wins. The order is the precedence:
// never touch a foreign Secret; give a Secret without a secret one; refuse a weak new secret;
// then follow what the Secret carries (lost status, adoption, an interrupted rotation); and only
// in the steady state ask whether a rotation is due.
var secretRules = []secretRule{
	foreignSecret,
	noSecret,
	weakNewSecret,
	lostStatus,
	newSecretInSecret,
	previousSecretBack,
	interruptedRotation,
	unfinishedRotation,
	credentialOutdated,
	rotationDue,
}

// DecideSecret says what to do with the credentials Secret of obj at now. secret is nil when no
// Secret of that name exists.
//
// The credential is the Secret's client_secret, or its private_key when the manager generates a
// key pair (spec.authentication.keyPair). Invariant, outside a rotation in progress: exactly one
// accepted entry has no expiry, and it is the fingerprint of the Secret's credential.
func DecideSecret(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, now time.Time) SecretDecision {
	v := &secretView{obj: obj, secret: secret, now: now, kind: credentials.KindOf(obj)}
	v.key = v.kind.DataKey()
	if secret != nil {
		v.value = string(secret.Data[v.key])
	}
	if v.value != "" {
		v.hash = v.kind.Fingerprint(v.value)
		st := &obj.Status
		for i := range st.AcceptedSecrets {
			e := &st.AcceptedSecrets[i]
			if v.hash == "" || e.Hash != v.hash {
				continue
			}
			if credentials.FormOf(e) == v.kind.Form() {
				v.entry = e
			} else if v.kind.Form() == credentials.FormSecret {
				v.otherForm = true
			}
		}
		// Entries are in the order they were accepted, so the last one without expiry is the
		// newest.
		for i := range st.AcceptedSecrets {
			if e := &st.AcceptedSecrets[i]; e.ExpiresAt == nil {
				v.newest = e
				if e != v.entry {
					v.others++
				}
			}
		}
	}
	for _, rule := range secretRules {
		if d, ok := rule(v); ok {
			return d
		}
	}
	return SecretDecision{Action: ActionNone, Why: "the Secret carries the current secret"}
}

func foreignSecret(v *secretView) (SecretDecision, bool) {
	if v.secret == nil || OwnedBy(v.secret, v.obj) {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionConflict, Why: fmt.Sprintf("Secret %s/%s exists and is not owned by this M2MClient; it is left untouched", v.secret.Namespace, v.secret.Name)}, true
}

func noSecret(v *secretView) (SecretDecision, bool) {
	switch {
	case v.value != "":
		return SecretDecision{}, false
	case len(v.obj.Status.AcceptedSecrets) == 0:
		return SecretDecision{Action: ActionGenerate, Why: "the client has no credentials yet"}, true
	case v.secret == nil:
		return SecretDecision{Action: ActionGenerate, Why: fmt.Sprintf("Secret %s was deleted", SecretName(v.obj))}, true
	}
	return SecretDecision{Action: ActionGenerate, Why: fmt.Sprintf("Secret %s has no %s", SecretName(v.obj), v.key)}, true
}

// weakNewSecret refuses a secret the manager did not issue (new, or set back to an expiring
// one) when it is unfit; a current secret was checked when it was accepted.
func weakNewSecret(v *secretView) (SecretDecision, bool) {
	if v.entry != nil && v.entry.ExpiresAt == nil {
		return SecretDecision{}, false
	}
	problem := v.kind.Problem(v.value)
	if v.otherForm {
		problem = "the thumbprint input of a public key in status, which anyone who can read the client can compute"
	}
	if problem == "" {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionRefuseWeak, Why: fmt.Sprintf("the %s in Secret %s is %s and is not accepted; the previously accepted credentials stay in use", v.key, SecretName(v.obj), problem)}, true
}

func lostStatus(v *secretView) (SecretDecision, bool) {
	if v.entry != nil || v.obj.Status.ClientID != "" || len(v.obj.Status.AcceptedSecrets) > 0 {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionRecoverStatus, Why: fmt.Sprintf("status had no credentials; they were rebuilt from Secret %s", SecretName(v.obj)), Secret: v.value}, true
}

func newSecretInSecret(v *secretView) (SecretDecision, bool) {
	if v.entry != nil {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionAdopt, Why: fmt.Sprintf("a new %s was written to Secret %s and is accepted; previous credentials expire after the grace period", v.key, SecretName(v.obj)), Secret: v.value}, true
}

func previousSecretBack(v *secretView) (SecretDecision, bool) {
	if v.entry.ExpiresAt == nil {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionAdopt, Why: fmt.Sprintf("Secret %s was set back to a previous %s, which is accepted again; other credentials expire after the grace period", SecretName(v.obj), v.key), Secret: v.value}, true
}

func interruptedRotation(v *secretView) (SecretDecision, bool) {
	if v.newest == v.entry {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionResumeRotation, Rotation: RotationResumed, Why: "a rotation stopped after accepting a new secret and before writing it to the Secret; it goes on with a fresh secret"}, true
}

func unfinishedRotation(v *secretView) (SecretDecision, bool) {
	if v.others == 0 {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionCompleteRotation, Why: "the Secret carries the new secret; the previous secrets' grace period starts"}, true
}

// credentialOutdated rotates a credential that no longer fits the spec (a key pair whose
// algorithm is no longer the one the spec asks for).
func credentialOutdated(v *secretView) (SecretDecision, bool) {
	why := v.kind.Outdated(v.entry)
	if why == "" || len(v.obj.Status.AcceptedSecrets) >= MaxAcceptedSecrets {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionRotate, Rotation: RotationAlgorithm, Why: why}, true
}

func rotationDue(v *secretView) (SecretDecision, bool) {
	switch reason, why := RotationDue(v.obj, v.now); reason {
	case RotationNotDue:
		return SecretDecision{}, false
	case RotationDeferred:
		return SecretDecision{Action: ActionNone, Rotation: reason, Why: why}, true
	default:
		return SecretDecision{Action: ActionRotate, Rotation: reason, Why: why}, true
	}
}

// Unexpiring counts the entries that have no expiry: one in the steady state, more while a
// rotation is in progress.
func Unexpiring(entries []m2mv1alpha1.AcceptedSecret) int {
	n := 0
	for _, e := range entries {
		if e.ExpiresAt == nil {
			n++
		}
	}
	return n
}

// GracePeriod is how long a replaced secret stays accepted.
func GracePeriod(obj *m2mv1alpha1.M2MClient) time.Duration {
	if g := obj.Spec.Rotation.GracePeriod; g != nil {
		return g.Duration
	}
	return time.Hour
}

// Accept returns entries with accepted (credentials.Entry) last and without expiry: entries stay
// in the order they were accepted. An existing entry for its hash keeps its creation time.
func Accept(entries []m2mv1alpha1.AcceptedSecret, accepted m2mv1alpha1.AcceptedSecret) []m2mv1alpha1.AcceptedSecret {
	out := make([]m2mv1alpha1.AcceptedSecret, 0, len(entries)+1)
	accepted.ExpiresAt, accepted.MAC = nil, ""
	for _, e := range entries {
		if e.Hash == accepted.Hash {
			accepted.CreatedAt = e.CreatedAt
			continue
		}
		out = append(out, e)
	}
	return append(out, accepted)
}

// MakeRoom returns entries with at most limit-1 of them, so that one more can be accepted: the
// entries in their grace period that expire first go. Entries without expiry always stay.
func MakeRoom(entries []m2mv1alpha1.AcceptedSecret, limit int) []m2mv1alpha1.AcceptedSecret {
	out := slices.Clone(entries)
	for len(out) >= limit {
		first := -1
		for i, e := range out {
			if e.ExpiresAt != nil && (first < 0 || e.ExpiresAt.Before(out[first].ExpiresAt)) {
				first = i
			}
		}
		if first < 0 {
			break
		}
		out = slices.Delete(out, first, first+1)
	}
	return out
}

// ExpireOthers returns entries where every entry other than current that has no expiry expires
// at now + grace. Entries that already expire keep their time.
func ExpireOthers(entries []m2mv1alpha1.AcceptedSecret, current string, now time.Time, grace time.Duration) []m2mv1alpha1.AcceptedSecret {
	out := make([]m2mv1alpha1.AcceptedSecret, 0, len(entries))
	at := metav1.NewTime(now.Add(grace))
	for _, e := range entries {
		if e.Hash != current && e.ExpiresAt == nil {
			e.ExpiresAt = at.DeepCopy()
		}
		out = append(out, e)
	}
	return out
}

// Prune returns the entries still accepted at now, the number removed, and the earliest time at
// which a kept entry expires (zero when none does).
func Prune(entries []m2mv1alpha1.AcceptedSecret, now time.Time) (kept []m2mv1alpha1.AcceptedSecret, removed int, next time.Time) {
	for _, e := range entries {
		if !credentials.Accepted(e, now) {
			removed++
			continue
		}
		kept = append(kept, e)
		if e.ExpiresAt != nil && (next.IsZero() || e.ExpiresAt.Time.Before(next)) {
			next = e.ExpiresAt.Time
		}
	}
	return kept, removed, next
}

// IDSource says where ResolveClientID found a client ID.
type IDSource string

const (
	// IDFromSpec: spec.clientID, an imported ID.
	IDFromSpec IDSource = "Spec"
	// IDFromStatus: status.clientID, which the manager authenticated (or, before enforcement, a
	// status written by a version without MACs).
	IDFromStatus IDSource = "Status"
	// IDFromBinding: status was lost; a ClientIDBinding gives the ID to this namespace and name.
	IDFromBinding IDSource = "Binding"
	// IDNew: nothing names an ID; a new one is generated.
	IDNew IDSource = "New"
)

// ResolveClientID returns the client ID that obj should have and where it comes from: spec.clientID,
// else status.clientID, else, when status was lost, an ID that a ClientIDBinding already gives
// to obj's namespace and name (bound, oldest first): the one the client's own Secret names if it
// is one of them, else the newest. Only bindings are trusted here: a tenant can write its own
// Secret, so an ID found only there could be another namespace's. "" and IDNew mean a new ID.
func ResolveClientID(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, bound []string) (string, IDSource) {
	switch {
	case obj.Spec.ClientID != "":
		return obj.Spec.ClientID, IDFromSpec
	case obj.Status.ClientID != "":
		return obj.Status.ClientID, IDFromStatus
	case len(bound) > 0:
		if secret != nil && OwnedBy(secret, obj) {
			if id := string(secret.Data[m2mv1alpha1.SecretKeyClientID]); slices.Contains(bound, id) {
				return id, IDFromBinding
			}
		}
		return bound[len(bound)-1], IDFromBinding
	}
	return "", IDNew
}

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
		latest := metav1.NewTime(now.Add(GracePeriod(obj)).Truncate(time.Second))
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

// RotationReason says why a rotation is due.
type RotationReason string

const (
	// RotationNotDue: nothing asks for a rotation.
	RotationNotDue RotationReason = ""
	// RotationScheduled: lastRotationTime + rotation.period has been reached.
	RotationScheduled RotationReason = "Scheduled"
	// RotationTrigger: spec.rotation.trigger has a value not acted on yet.
	RotationTrigger RotationReason = "Trigger"
	// RotationAnnotation: the m2m.dev/rotate annotation has a value not acted on yet.
	RotationAnnotation RotationReason = "Annotation"
	// RotationDeferred: a rotation is asked for, but status already holds as many secrets as it
	// may; it waits until the oldest expire.
	RotationDeferred RotationReason = "Deferred"
	// RotationResumed: a rotation that a crash interrupted goes on.
	RotationResumed RotationReason = "Resumed"
	// RotationAlgorithm: spec.authentication.keyPair.algorithm is not the current key's.
	RotationAlgorithm RotationReason = "Algorithm"
)

// MaxAcceptedSecrets is the size of status.acceptedSecrets that a rotation will not grow past.
const MaxAcceptedSecrets = 100

// RotationDue says whether obj's secret must rotate at now, and why. DecideSecret asks it only in
// the steady state (the Secret carries the one current secret). An empty trigger or annotation value
// asks for nothing: removing it from Git does not rotate.
func RotationDue(obj *m2mv1alpha1.M2MClient, now time.Time) (RotationReason, string) {
	reason, why := RotationNotDue, ""
	st := &obj.Status
	trigger := obj.Spec.Rotation.Trigger
	annotation := obj.Annotations[m2mv1alpha1.RotateAnnotation]
	switch {
	case trigger != "" && trigger != st.LastRotationTrigger:
		reason, why = RotationTrigger, fmt.Sprintf("spec.rotation.trigger changed to %q", trigger)
	case annotation != "" && annotation != st.LastRotateAnnotation:
		reason, why = RotationAnnotation, fmt.Sprintf("the %s annotation changed to %q", m2mv1alpha1.RotateAnnotation, annotation)
	default:
		if next := NextRotation(obj); !next.IsZero() && !now.Before(next) {
			reason, why = RotationScheduled, fmt.Sprintf("the rotation period of %s has passed since %s", obj.Spec.Rotation.Period.Duration, st.LastRotationTime.UTC().Format(time.RFC3339))
		}
	}
	if reason != RotationNotDue && len(st.AcceptedSecrets) >= MaxAcceptedSecrets {
		return RotationDeferred, fmt.Sprintf("a rotation is due (%s) but status already accepts %d secrets; it waits until the oldest expire", why, len(st.AcceptedSecrets))
	}
	return reason, why
}

// NextRotation is when the scheduled rotation is due, or zero when rotation.period is unset.
func NextRotation(obj *m2mv1alpha1.M2MClient) time.Time {
	p := obj.Spec.Rotation.Period
	if p == nil || p.Duration <= 0 || obj.Status.LastRotationTime == nil {
		return time.Time{}
	}
	return obj.Status.LastRotationTime.Add(p.Duration)
}
