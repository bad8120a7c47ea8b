package controllers

// Condition types of an M2MClient.
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
	// ReasonCredentialsReady: the Secret carries a client secret whose hash is accepted.
	ReasonCredentialsReady = "CredentialsReady"
	// ReasonSecretConflict: a Secret of the configured name exists and belongs to something else.
	// The manager never overwrites it; delete it or set spec.secret.name on a new client.
	ReasonSecretConflict = "SecretConflict"
	// ReasonWeakSecret: someone wrote a client_secret into the Secret that is too short (or
	// otherwise unfit). It is not accepted; the previously accepted secrets stay accepted.
	ReasonWeakSecret = "WeakSecret"
	// ReasonDuplicateClientID: an earlier M2MClient in the cluster already has this client ID.
	// The later client gets no status.clientID, so the token server never sees two clients with
	// one ID.
	ReasonDuplicateClientID = "DuplicateClientID"
)

// Event reasons. Events are emitted on transitions only.
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
)
