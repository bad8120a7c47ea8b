package v1alpha1

// RolloutPolicy restarts the workloads that read the credentials once, at start (an environment
// variable, a file read at boot), so that they pick up a new credential long before the previous
// one stops being accepted.
type RolloutPolicy struct {
	// RestartTargets are Deployments, StatefulSets and DaemonSets of the client's namespace that
	// the manager restarts once for each new credential that the Secret carries, by writing the
	// credential's version into their pod template's annotation m2m.dev/restarted-for. A target
	// is restarted only if it carries the annotation m2m.dev/restart-on-rotation naming this
	// client: whoever may edit M2MClients cannot make the manager restart a workload whose
	// owners did not opt in. At most 16.
	// +optional
	// +listType=map
	// +listMapKey=kind
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	RestartTargets []RestartTarget `json:"restartTargets,omitempty"`
}

// RestartTarget names a workload of the client's namespace.
type RestartTarget struct {
	// Kind is Deployment, StatefulSet or DaemonSet (apps/v1).
	// +required
	// +kubebuilder:validation:Enum=Deployment;StatefulSet;DaemonSet
	Kind string `json:"kind"`

	// Name is the workload's name, in the client's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// Kinds of a RestartTarget.
const (
	RestartKindDeployment  = "Deployment"
	RestartKindStatefulSet = "StatefulSet"
	RestartKindDaemonSet   = "DaemonSet"
)

// RestartOnRotationAnnotation, on a Deployment, StatefulSet or DaemonSet, names the M2MClients of
// its namespace (separated by commas or spaces) that may restart it: the workload's owners opt in,
// since the manager's RBAC cannot tell one workload from another.
const RestartOnRotationAnnotation = "m2m.dev/restart-on-rotation"

// RestartedForAnnotation, on a restarted workload's pod template, records for each client the
// version of the credential it was last restarted for ("name=version", separated by spaces; the
// version is the first 16 characters of the credential's hash). Writing a new version there is
// the restart (the pod template changes, so the workload rolls its pods), and the same write
// records it: a manager that dies after it does not restart again, one that dies before it
// restarts on its next reconcile.
const RestartedForAnnotation = "m2m.dev/restarted-for"

// ConditionRestartTargetsReady, on a client with spec.rollout.restartTargets, is True when every
// target runs a pod template restarted for the credential the Secret carries, and False, with the
// reasons below, when one could not be restarted. It is absent without restart targets, and for a client whose Secret carries no
// credential (spec.authentication without a secret or key pair). It does
// not change Ready: the credentials are fine, a consumer may not be.
const ConditionRestartTargetsReady = "RestartTargetsReady"

// Reasons of the RestartTargetsReady condition; the message names the targets.
const (
	// ReasonTargetsRestarted: every target was restarted for the current credential.
	ReasonTargetsRestarted = "TargetsRestarted"
	// ReasonRestartNotAllowed: a target does not carry m2m.dev/restart-on-rotation naming the
	// client, so it was not restarted. Its owners add the annotation, or the target is removed.
	ReasonRestartNotAllowed = "RestartNotAllowed"
	// ReasonRestartTargetNotFound: a target does not exist (or is being deleted).
	ReasonRestartTargetNotFound = "RestartTargetNotFound"
	// ReasonRestartFailed: the API server refused to read or patch a target; the message gives
	// its reason. The manager retries.
	ReasonRestartFailed = "RestartFailed"
)

// EventWorkloadRestarted: a restart target was restarted for a new credential, once per target
// and credential. A refused or failed target gets a Warning event with the reason of
// RestartTargetsReady when that condition turns False for a new reason.
const EventWorkloadRestarted = "WorkloadRestarted"
