package controllers

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
	// EventSecretRetired: spec.authentication.clientSecret became false; the client secret left
	// the Secret and stays accepted for the grace period.
	EventSecretRetired = "SecretRetired"
	// EventStatusDiscarded: status held fields the manager did not write (they carry no valid
	// MAC: someone else wrote them, or the object was restored with a new UID). They were
	// discarded, and the credentials rebuilt as after a lost status.
	EventStatusDiscarded = "StatusDiscarded"
)
