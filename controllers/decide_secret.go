package controllers

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
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
	// ActionAwaitSource: the source Secret of spec.authentication.source, or its entry, does not
	// exist yet. Issue nothing; a credential accepted from it before stays in use.
	ActionAwaitSource SecretAction = "AwaitSource"
	// ActionRefuseSource: the source Secret is one the manager does not read (one that does not
	// opt in for the client, one the manager writes, an entry too large, a namespace at its bound
	// of sources). Accept nothing from it.
	ActionRefuseSource SecretAction = "RefuseSource"
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
	// Revoke: the action is part of a revocation. Once the Secret carries the credential it
	// issues (or, for ActionCompleteRotation, already carries), every other accepted entry is
	// dropped at once instead of given the grace period.
	Revoke bool
}

// secretView is what the rules of DecideSecret look at: the object, its Secret, and what is
// derived from them once.
type secretView struct {
	obj    *m2mv1alpha1.M2MClient
	secret *corev1.Secret
	now    time.Time
	// id is the client ID that obj holds the binding of, which an orphaned Secret must carry
	// (OwnedBy).
	id string
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
// never touch a foreign Secret; follow the source of a credential someone else supplies, and
// nothing else; give a Secret without a secret one; carry out a revocation,
// whatever else the Secret carries; refuse a weak new secret; then follow what the Secret carries
// (lost status, adoption, a rotation the holder completes, an interrupted rotation); and only in the steady state ask whether a
// rotation is due.
var secretRules = []secretRule{
	foreignSecret,
	suppliedCredential,
	noSecret,
	revocation,
	weakNewSecret,
	lostStatus,
	newSecretInSecret,
	previousSecretBack,
	holderRotation,
	interruptedRotation,
	unfinishedRotation,
	credentialOutdated,
	rotationDue,
}

// DecideSecret says what to do with the credentials Secret of obj at now, for the client ID that
// obj's status or spec names (decideSecret). secret is nil when no Secret of that name exists.
func DecideSecret(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, now time.Time) SecretDecision {
	return decideSecret(obj, secret, credentials.KindOf(obj), clientIDOf(obj), now)
}

// DecideSuppliedSecret is DecideSecret for a client whose credential comes from a source Secret
// (spec.authentication.source), which holds supply.
func DecideSuppliedSecret(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, supply credentials.Supply, now time.Time) SecretDecision {
	return decideSecret(obj, secret, credentials.Sourced{Kind: credentials.KindOf(obj), Supply: supply}, clientIDOf(obj), now)
}

// decideSecret is DecideSecret for a client of kind (its KindOf, or the Sourced one of it) that
// holds the binding of id, which status may not name yet (a client created again, whose orphaned
// Secret carries id).
//
// The credential is the Secret's client_secret, or its private_key when the manager generates a
// key pair (spec.authentication.keyPair). Invariant, outside a rotation in progress: exactly one
// accepted entry has no expiry, and it is the fingerprint of the Secret's credential; while a
// rotation of spec.rotation.holder is started, a second one is its next credential.
func decideSecret(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, kind credentials.Kind, id string, now time.Time) SecretDecision {
	v := &secretView{obj: obj, secret: secret, now: now, id: id, kind: kind}
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
	if v.secret == nil {
		return SecretDecision{}, false
	}
	owner, why := OwnedBy(v.secret, v.obj, v.id)
	if owner.MayWrite() {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionConflict, Why: fmt.Sprintf("Secret %s/%s exists and is not owned by this M2MClient (%s); it is left untouched", v.secret.Namespace, v.secret.Name, why)}, true
}

// suppliedCredential decides alone for a credential that someone else supplies
// (spec.authentication.source): the Secret carries the source's value once its fingerprint is
// accepted, and no other. It never issues a value of the manager's, never adopts what someone
// writes into the Secret (the source is the credential's only origin; only a lost status is
// rebuilt from the Secret, as for every kind, before the source's value follows), and never
// rotates on the manager's schedule or triggers: a new value in the source is the rotation.
func suppliedCredential(v *secretView) (SecretDecision, bool) {
	src := v.kind.Source()
	if src == nil {
		return SecretDecision{}, false
	}
	where := fmt.Sprintf("Secret %s (entry %s)", src.Secret, src.Key)
	carried := v.entry != nil && v.entry.ExpiresAt == nil
	meanwhile := "; the manager issues no credential of its own, so the client has none until it does"
	if carried {
		meanwhile = "; the credential accepted from it before stays in use"
	}
	switch {
	case src.Refused != "":
		return SecretDecision{Action: ActionRefuseSource, Why: fmt.Sprintf("the source %s is not read: %s%s", where, src.Refused, meanwhile)}, true
	case src.Missing != "":
		return SecretDecision{Action: ActionAwaitSource, Why: fmt.Sprintf("waiting for the secret store to write the source: %s%s", src.Missing, meanwhile)}, true
	}
	hash := v.kind.Fingerprint(src.Value)
	problem := v.kind.Problem(src.Value)
	var entry *m2mv1alpha1.AcceptedSecret
	others := 0
	for i := range v.obj.Status.AcceptedSecrets {
		e := &v.obj.Status.AcceptedSecrets[i]
		switch {
		case e.Hash == hash && credentials.FormOf(e) == v.kind.Form():
			entry = e
		case e.Hash == hash && v.kind.Form() == credentials.FormSecret:
			problem = "the thumbprint input of a public key in status, which anyone who can read the client can compute"
		case e.ExpiresAt == nil:
			others++
		}
	}
	if problem != "" {
		return SecretDecision{Action: ActionRefuseWeak, Why: fmt.Sprintf("the %s in the source %s is %s and is not accepted%s", src.Key, where, problem, meanwhile)}, true
	}
	current := entry != nil && entry.ExpiresAt == nil
	// A revocation that the client started before it named a source ends with the source's
	// value: every other credential is dropped then, not given the grace period.
	revoke := v.obj.Status.RevocationPending
	switch {
	case len(v.obj.Status.AcceptedSecrets) == 0 && v.value != "" && v.hash != hash && v.kind.Problem(v.value) == "":
		// Status was lost, or the client was created again over its orphaned Secret, after the
		// store moved on: the value the pods hold is accepted back first, so that the store's
		// value follows as a rotation with the grace period instead of cutting them off.
		return SecretDecision{Action: ActionRecoverStatus, Secret: v.value, Why: fmt.Sprintf("status had no credentials; the one Secret %s carries was accepted back, and the source's follows as a rotation", secretName(v.obj))}, true
	case len(v.obj.Status.AcceptedSecrets) == 0:
		return SecretDecision{Action: ActionGenerate, Why: fmt.Sprintf("the source %s holds the client's first credential", where)}, true
	case current && v.hash == hash && others > 0:
		return SecretDecision{Action: ActionCompleteRotation, Revoke: revoke, Why: "the Secret carries the source's credential; the previous credentials' grace period starts"}, true
	case current && v.hash == hash:
		return SecretDecision{Action: ActionNone, Why: "the Secret carries the source's credential"}, true
	case current:
		// A rotation stopped between accepting the value and writing the Secret, or someone
		// wrote another value into the Secret, which is not accepted.
		return SecretDecision{Action: ActionResumeRotation, Rotation: RotationResumed, Revoke: revoke, Why: fmt.Sprintf("the Secret does not carry the accepted credential of the source %s; it is written again", where)}, true
	}
	return SecretDecision{Action: ActionRotate, Rotation: RotationSource, Revoke: revoke, Why: fmt.Sprintf("the source %s holds a new credential", where)}, true
}

func noSecret(v *secretView) (SecretDecision, bool) {
	var d SecretDecision
	switch {
	case v.value != "":
		return SecretDecision{}, false
	case len(v.obj.Status.AcceptedSecrets) == 0:
		return SecretDecision{Action: ActionGenerate, Why: "the client has no credentials yet"}, true
	case v.secret == nil:
		d = SecretDecision{Action: ActionGenerate, Why: fmt.Sprintf("Secret %s was deleted", secretName(v.obj))}
	default:
		d = SecretDecision{Action: ActionGenerate, Why: fmt.Sprintf("Secret %s has no %s", secretName(v.obj), v.key)}
	}
	if due, _ := RevocationDue(v.obj); due || v.obj.Status.RevocationPending {
		d.Rotation, d.Revoke = RotationRevoke, true
		d.Why += "; every earlier credential is revoked once it carries the new one"
	}
	return d, true
}

// revocation carries out a revocation asked for (RevocationDue) or in progress
// (status.revocationPending): it issues a fresh credential, which replaces whatever the Secret
// carries (even one written by a person, which would otherwise be adopted or refused), and once
// the Secret carries the credential that the revocation issued, it drops every other one. A
// revocation asked for issues even when the Secret already carries the newest entry: that
// credential predates the request. A lost status is rebuilt first (lostStatus), and the values
// present then count as handled, as at creation: a client restored from a backup is not revoked
// again.
func revocation(v *secretView) (SecretDecision, bool) {
	st := &v.obj.Status
	due, why := RevocationDue(v.obj)
	if (!due && !st.RevocationPending) || (st.ClientID == "" && len(st.AcceptedSecrets) == 0) {
		return SecretDecision{}, false
	}
	switch {
	case due:
		return SecretDecision{Action: ActionRotate, Rotation: RotationRevoke, Revoke: true,
			Why: why + "; every earlier credential is revoked once the Secret carries a new one"}, true
	case v.entry != nil && v.entry == v.newest:
		return SecretDecision{Action: ActionCompleteRotation, Revoke: true,
			Why: "the Secret carries the credential that a revocation issued; every earlier credential is dropped"}, true
	}
	return SecretDecision{Action: ActionResumeRotation, Rotation: RotationResumed, Revoke: true,
		Why: "a revocation stopped before the Secret carried its credential; it goes on with a fresh one"}, true
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
	return SecretDecision{Action: ActionRefuseWeak, Why: fmt.Sprintf("the %s in Secret %s is %s and is not accepted; the previously accepted credentials stay in use", v.key, secretName(v.obj), problem)}, true
}

func lostStatus(v *secretView) (SecretDecision, bool) {
	if v.entry != nil || v.obj.Status.ClientID != "" || len(v.obj.Status.AcceptedSecrets) > 0 {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionRecoverStatus, Why: fmt.Sprintf("status had no credentials; they were rebuilt from Secret %s", secretName(v.obj)), Secret: v.value}, true
}

func newSecretInSecret(v *secretView) (SecretDecision, bool) {
	if v.entry != nil {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionAdopt, Why: fmt.Sprintf("a new %s was written to Secret %s and is accepted; previous credentials expire after the grace period", v.key, secretName(v.obj)), Secret: v.value}, true
}

func previousSecretBack(v *secretView) (SecretDecision, bool) {
	if v.entry.ExpiresAt == nil {
		return SecretDecision{}, false
	}
	return SecretDecision{Action: ActionAdopt, Why: fmt.Sprintf("Secret %s was set back to a previous %s, which is accepted again; other credentials expire after the grace period", secretName(v.obj), v.key), Secret: v.value}, true
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
	if why == "" || len(v.obj.Status.AcceptedSecrets) >= maxAcceptedSecrets {
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
