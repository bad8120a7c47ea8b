package keyring

import (
	"maps"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// Annotations that ask for a rotation now. Each is acted on once for each distinct value, and the
// value acted on is recorded in the same write as the rotation, so that a crash does both or
// neither. The signing-key, CA and serving-certificate Secrets share them, so that all three
// rotate alike. A value over m2mv1alpha1.MaxTriggerLength asks for nothing (Ignored): recorded,
// it would double the Secret's annotations, and a value of half their 256 KiB would make every
// write of the Secret fail, the scheduled rotations' and the emergency's included.
const (
	// RotateAnnotation asks for a planned rotation: a successor is published first (a signing
	// key in the JWKS, a CA in the bundle) and takes over after the prepublish time or overlap.
	// On the serving-certificate Secret it issues a new certificate.
	RotateAnnotation = "m2m.dev/rotate"
	// RotatedAnnotation records the RotateAnnotation value last acted on.
	RotatedAnnotation = "m2m.dev/rotated"
	// EmergencyAnnotation, on the signing-key or CA Secret, replaces every key the Secret holds
	// at once: a new one signs, and the others leave the JWKS or the bundle. The
	// serving-certificate Secret does not read it: a new certificate does not stop a leaked key
	// (its CA's emergency rotation does).
	EmergencyAnnotation = "m2m.dev/rotate-emergency"
	// EmergencyRotatedAnnotation records the EmergencyAnnotation value last acted on.
	EmergencyRotatedAnnotation = "m2m.dev/rotated-emergency"
)

// Ask is a rotation that a Secret's annotations ask for and that has not been done yet.
type Ask string

const (
	// AskNone: no rotation is asked for.
	AskNone Ask = ""
	// AskPlanned: publish a successor now, to take over after the prepublish time or overlap.
	AskPlanned Ask = "planned"
	// AskEmergency: the Secret's keys may have been copied; replace them all at once.
	AskEmergency Ask = "emergency"
)

// AskOf reads the rotation that a Secret's annotations ask for. An emergency outranks a planned
// rotation asked for at the same time: the key it makes is as new as a successor would be.
func AskOf(annotations map[string]string) Ask {
	switch {
	case Asked(annotations, EmergencyAnnotation, EmergencyRotatedAnnotation):
		return AskEmergency
	case Asked(annotations, RotateAnnotation, RotatedAnnotation):
		return AskPlanned
	}
	return AskNone
}

// Asked reports whether annotations hold a value of ask that done does not record as acted on,
// and that is not over m2mv1alpha1.MaxTriggerLength.
func Asked(annotations map[string]string, ask, done string) bool {
	v := annotations[ask]
	return v != "" && v != annotations[done] && !m2mv1alpha1.TriggerTooLong(v)
}

// Ignored names the annotations of annotations that ask for a rotation with a value over
// m2mv1alpha1.MaxTriggerLength, which asks for nothing.
func Ignored(annotations map[string]string) []string {
	var names []string
	for _, ask := range []string{RotateAnnotation, EmergencyAnnotation} {
		if m2mv1alpha1.TriggerTooLong(annotations[ask]) {
			names = append(names, ask)
		}
	}
	return names
}

// Acted returns a copy of annotations that records every rotation they ask for as done.
func Acted(annotations map[string]string) map[string]string {
	out := maps.Clone(annotations)
	for ask, done := range map[string]string{RotateAnnotation: RotatedAnnotation, EmergencyAnnotation: EmergencyRotatedAnnotation} {
		if Asked(annotations, ask, done) {
			out[done] = annotations[ask]
		}
	}
	return out
}
