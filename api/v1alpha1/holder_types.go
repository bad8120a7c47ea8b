package v1alpha1

// HolderRotationState is a step of a rotation that the credential's holder completes.
// +kubebuilder:validation:Enum=Started;Completed;Cancelled
type HolderRotationState string

const (
	// HolderRotationStarted: a next credential is issued and accepted alongside the current one.
	HolderRotationStarted HolderRotationState = "Started"
	// HolderRotationCompleted: the next credential became the only one.
	HolderRotationCompleted HolderRotationState = "Completed"
	// HolderRotationCancelled: the next credential was discarded.
	HolderRotationCancelled HolderRotationState = "Cancelled"
)

// HolderRotation names a rotation that the credential's holder completes, and the step it is
// asked to be at.
type HolderRotation struct {
	// ID names the rotation. A new ID with state Started starts a rotation; an ID that was
	// already acted on, or a new one with another state, starts nothing.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ID string `json:"id"`

	// State is the step asked for: Started, then Completed or Cancelled.
	// +required
	State HolderRotationState `json:"state"`
}

// HolderRotationStatus is the rotation of spec.rotation.holder that the manager last acted on.
type HolderRotationStatus struct {
	// ID is the id of spec.rotation.holder acted on.
	// +required
	// +kubebuilder:validation:MaxLength=253
	ID string `json:"id"`

	// State is the step the rotation is at.
	// +required
	State HolderRotationState `json:"state"`

	// NextHash is, while the rotation is started, the hash of the next credential in
	// status.acceptedSecrets, which the Secret carries under its next_ key.
	// +optional
	// +kubebuilder:validation:Pattern=`^sha256:[A-Za-z0-9_-]{43}$`
	NextHash string `json:"nextHash,omitempty"`
}
