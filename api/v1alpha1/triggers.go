package v1alpha1

import "unicode/utf8"

// MaxTriggerLength bounds, in characters, every value that is acted on once per value:
// spec.rotation.trigger and revokeTrigger (their schema's maxLength, and that of the status
// fields that record them), the RotateAnnotation and RevokePreviousAnnotation of an M2MClient
// (the admission policy m2m-rotation-annotations), and the m2m.dev/rotate and
// m2m.dev/rotate-emergency annotations of the manager's own Secrets. The manager records each
// value it acts on (in status, or in a second annotation of the Secret), so an unbounded value
// would be held twice by every cache of the object, and on a Secret would push its annotations
// past the API server's 256 KiB and make every write of it fail, the rotation's included. A date,
// a commit hash or a ticket URL fits; the manager ignores a longer value (TriggerTooLong).
const MaxTriggerLength = 253

// TriggerTooLong reports whether v is over MaxTriggerLength characters: such a value asks for
// nothing and is recorded nowhere.
func TriggerTooLong(v string) bool {
	return len(v) > MaxTriggerLength && utf8.RuneCountInString(v) > MaxTriggerLength
}
