package v1alpha1

import "time"

// DefaultTokenTTL is the lifetime of the tokens of a client without spec.tokenTTL: the CRD's
// default of the field (its +kubebuilder:default), which the token server also applies to an
// object stored without it.
const DefaultTokenTTL = time.Hour

// Keys of a client's credentials Secret, as the manager writes them and workloads read them.
const (
	// SecretKeyClientID holds the client ID.
	SecretKeyClientID = "client_id"
	// SecretKeyClientSecret holds the current client secret.
	SecretKeyClientSecret = "client_secret"
	// SecretKeyPrivateKey holds the private key of a generated key pair (PKCS #8, PEM).
	SecretKeyPrivateKey = "private_key"
	// NextSecretKeyPrefix, before the key of the credential, is the key of the next credential
	// while a rotation of spec.rotation.holder is started (next_client_secret, next_private_key).
	NextSecretKeyPrefix = "next_"
	// SecretKeyTokenURL holds the token endpoint, for golang.org/x/oauth2/clientcredentials.
	SecretKeyTokenURL = "token_url"
	// SecretKeyIssuer holds the issuer, the "iss" of the client's tokens.
	SecretKeyIssuer = "issuer"
	// SecretKeyPublicTokenURL holds the token endpoint under the issuer, the public door that
	// machines outside the cluster use, when it is not token_url: token_url is then the
	// in-cluster Service's, for pods, which get tokens with the same issuer either way.
	SecretKeyPublicTokenURL = "public_token_url"
	// SecretKeyCA holds the PEM bundle of the CAs that sign the token server's certificate,
	// when the manager issues it and the issuer is https.
	SecretKeyCA = "ca.crt"
)

// Labels the manager sets on the Secrets it writes.
const (
	// ManagedByLabel marks the Secrets the manager writes; its cache sees only those.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel.
	ManagedByValue = "m2m-operator"
	// ClientLabel names the M2MClient a credentials Secret belongs to.
	ClientLabel = "m2m.dev/client"
)

// OrphanAnnotation, with the value Orphan, is on the credentials Secret of an M2MClient with
// spec.secret.deletionPolicy Orphan, which has no owner reference: it says that the manager wrote
// the Secret to outlive its client, for a client of the same namespace and name to take back.
const OrphanAnnotation = "m2m.dev/deletion-policy"

// Condition types of an M2MClient, in status.conditions.
const (
	// ConditionReady is True when the Secret holds credentials that the token server accepts, and
	// the client ID is the client's own: a token server with default settings issues tokens to
	// the client (to one without spec.audiences for the default audience, the issuer). The token
	// server's flags, which the manager cannot see, can still change that (--watch-namespaces,
	// --default-audience). When it is False, the reason says what a human must fix.
	ConditionReady = "Ready"
)

// Reasons of the Ready condition.
const (
	// ReasonCredentialsReady: the Secret carries a client secret whose hash is accepted, or a
	// private key whose public key is accepted, or the client authenticates without either.
	ReasonCredentialsReady = "CredentialsReady"
	// ReasonSecretConflict: a Secret of the configured name exists and belongs to something else.
	// The manager never overwrites it; delete it or set spec.secret.name on a new client.
	ReasonSecretConflict = "SecretConflict"
	// ReasonWeakSecret: someone wrote a client_secret into the Secret that is too short (or
	// otherwise unfit), or a private_key that is not a usable key of the configured algorithm. It is not accepted; the previously accepted secrets stay accepted.
	ReasonWeakSecret = "WeakSecret"
	// ReasonSecretWriteFailed: the API server refused to write the Secret (it is immutable, a
	// quota or a webhook refused it), or spec.secret.keys and templates render to more than
	// MaxDerivedSecretBytes; the message gives its reason. The manager retries with the
	// same pending secret, so status does not grow; the previous secrets stay accepted.
	ReasonSecretWriteFailed = "SecretWriteFailed"
	// ReasonDuplicateClientID: the client ID is bound (a ClientIDBinding) to another M2MClient,
	// which may since have been deleted; only an administrator's release of the binding frees it.
	// The client gets no status.clientID, so the token server never sees two clients with one ID.
	ReasonDuplicateClientID = "DuplicateClientID"
	// ReasonClaimsTooLarge: spec.tokenClaims encodes to more than MaxTokenClaimsBytes. The token
	// server issues the client no token until the claims are made smaller.
	ReasonClaimsTooLarge = "ClaimsTooLarge"
	// ReasonSourceSecretMissing: spec.authentication.source names a Secret, or an entry of it,
	// that does not exist yet; the manager waits for the secret store to write it, and issues
	// nothing of its own meanwhile. A credential accepted from the source before stays accepted.
	// Unlike the other reasons of a False Ready, this one ends without a human (the store's next
	// sync), so the client is Reconciling, not Stalled.
	ReasonSourceSecretMissing = "SourceSecretMissing"
	// ReasonSourceSecretRefused: spec.authentication.source names a Secret the manager will not
	// read: one whose m2m.dev/source-for annotation does not name the client, the client's own
	// credentials Secret or another Secret the manager writes, an entry over MaxSourceValueBytes, or a namespace already at the manager's limit of watched sources
	// (--max-sources-per-namespace). The message says which.
	ReasonSourceSecretRefused = "SourceSecretRefused"
)

// Condition types of the kstatus convention (sigs.k8s.io/cli-utils/pkg/kstatus), which Flux's
// health checks and kstatus-based tools read instead of Ready. They have abnormal-true polarity:
// the manager sets them only while True and removes them otherwise, so that a healthy client
// carries Ready alone. Both are derived from Ready at the end of each reconcile.
const (
	// ConditionReconciling is True while the manager is still on its way to a verdict on the
	// client, one it reaches without anyone's help: no reconcile has set Ready yet (the first one
	// failed and is retried, or waits for the CA bundle), or Ready is False only because the
	// secret store has not written the source yet (ReasonSourceSecretMissing). A rotation's grace period and a
	// rotation of spec.rotation.holder are not Reconciling: the client is Ready meanwhile, and
	// the holder's rotation waits for a human.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True while Ready is False, but for ReasonSourceSecretMissing: every other reason of a False Ready names
	// something that only a human ends (a foreign Secret, a weak secret, a Secret the API server
	// refuses, a client ID bound elsewhere, claims too large). It carries Ready's reason and
	// message, so kstatus reports Failed with what to fix.
	ConditionStalled = "Stalled"
)

// Reasons of the Reconciling condition. Stalled takes the reason of the Ready condition.
const (
	// ReasonAwaitingCABundle: the issuer is https and the CA bundle that credentials Secrets
	// carry is not in its Secret yet; the manager writes no Secret without it and retries.
	ReasonAwaitingCABundle = "AwaitingCABundle"
	// ReasonIssuingCredentials: the manager has not yet completed a reconcile that sets Ready
	// (the last one failed and is retried with backoff).
	ReasonIssuingCredentials = "IssuingCredentials"
)

// Reasons of the events the manager emits on an M2MClient. Events are emitted on transitions
// only.
const (
	// EventCredentialsCreated: the first client secret was generated and written to the Secret.
	EventCredentialsCreated = "CredentialsCreated"
	// EventSecretRecreated: the Secret was deleted, or lost its client_secret, and was written
	// again with a new secret. The previous secret stays accepted for the grace period.
	EventSecretRecreated = "SecretRecreated"
	// EventSecretAdopted: someone wrote a new client_secret into the Secret, and it is accepted.
	EventSecretAdopted = "SecretAdopted"
	// EventStatusRecovered: the status had lost its credentials and was rebuilt from the Secret.
	EventStatusRecovered = "StatusRecovered"
	// EventSecretExpired: a previous secret's grace period ended and it is no longer accepted.
	EventSecretExpired = "SecretExpired"
	// EventRotated: the secret was replaced by a new one, on schedule, for a new trigger or
	// annotation value, or to resume a rotation that a crash interrupted. The message says which.
	EventRotated = "Rotated"
	// EventRevoked: a revocation (spec.rotation.revokeTrigger or the m2m.dev/revoke-previous
	// annotation) is complete: the Secret carries a new credential and every earlier one was
	// dropped from status at once. The message says how many, and that pods still holding one are
	// refused until they read the Secret again.
	EventRevoked = "Revoked"
	// EventHolderRotation: a rotation of spec.rotation.holder was started, completed or
	// cancelled. The message names the rotation and says which credentials are accepted.
	EventHolderRotation = "HolderRotation"
	// EventSecretRetired: spec.authentication.clientSecret became false; the client secret left
	// the Secret and stays accepted for the grace period.
	EventSecretRetired = "SecretRetired"
	// EventStatusDiscarded: status held fields the manager did not write (they carry no valid
	// MAC: someone else wrote them, or the object was restored with a new UID). They were
	// discarded, and the credentials rebuilt as after a lost status.
	EventStatusDiscarded = "StatusDiscarded"
	// EventStatusUndecodable: status held a value that does not decode (a time the API server's
	// date-time check accepted and Go's RFC 3339 parser does not), which made every LIST of
	// M2MClients fail. The manager removed the status and rebuilds it as after a lost status.
	EventStatusUndecodable = "StatusUndecodable"
	// EventAnnotationTooLong: the m2m.dev/rotate or m2m.dev/revoke-previous annotation has a
	// value over MaxTriggerLength characters (where the admission policy that refuses it is not
	// installed). The manager ignores it: it rotates nothing and is not recorded in status.
	EventAnnotationTooLong = "AnnotationTooLong"
	// EventRotationNotApplicable: a rotation annotation (m2m.dev/rotate or
	// m2m.dev/revoke-previous) was set on a client whose credential comes from
	// spec.authentication.source. The store is the credential's only origin, so the manager
	// rotates nothing; the value is recorded as handled, and the event says to change the value
	// in the store.
	EventRotationNotApplicable = "RotationNotApplicable"
)

// SourceForAnnotation, on a Secret, names the M2MClients of its namespace (separated by commas or
// spaces) that may take their credential from it (spec.authentication.source). Whoever may write
// the Secret decides: the manager's RBAC cannot tell one Secret from another, and a tenant who
// may create M2MClients must not make the manager copy a Secret of the namespace that was not
// meant for it (a database password, say) into a credentials Secret it can read.
const SourceForAnnotation = "m2m.dev/source-for"

// ComponentLabel marks each of the manager's own Secrets (not the credentials Secrets), and its
// ConfigMap, with the component it holds.
const ComponentLabel = "app.kubernetes.io/component"

// Values of ComponentLabel.
const (
	// SigningKeyComponent: the signing-key Secret, which also holds the status keys.
	SigningKeyComponent = "signing-keys"
	// CAComponent: the CA that signs the token server's serving certificate.
	CAComponent = "ca"
	// ServingCertComponent: the token server's serving certificate.
	ServingCertComponent = "serving-cert"
	// TokenServerLocationComponent: the ConfigMap TokenServerConfigMap.
	TokenServerLocationComponent = "token-server-location"
)

// TokenServerConfigMap is the ConfigMap, in the manager's namespace (the signing-key Secret's),
// where the manager publishes where its token server is, under the keys of a credentials Secret
// and with the values it writes there: SecretKeyIssuer, SecretKeyTokenURL and, with an https
// issuer whose CA bundle the manager knows, SecretKeyCA. Only administrators and the manager may
// write it and every authenticated user may read it (config/rbac), as kube-root-ca.crt, so that
// kubectl m2m why and verify find the token server there: a credentials Secret says the same,
// but whoever may edit Secrets in the client's namespace can change it.
const TokenServerConfigMap = "m2m-token-server"

// AllowedClaimsAnnotation, on a namespace, lists the GuardedClaims (separated by spaces or
// commas) that its clients' tokenClaims may set. Tenants with the usual edit or admin roles
// cannot edit namespaces.
const AllowedClaimsAnnotation = "m2m.dev/allowed-claims"
