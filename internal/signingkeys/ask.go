package signingkeys

import "maps"

// Annotations of the signing-key Secret that ask for a rotation now. Each is acted on once for
// each distinct value, and the value acted on is recorded in the same write as the rotation, so
// that a crash either does both or neither. RotateAnnotation and RotatedAnnotation are the names
// the CA and serving-certificate Secrets use (internal/servingcert), so that all three rotate the
// same way.
const (
	// RotateAnnotation asks for a planned rotation: a successor is published at once and signs
	// once it has been published for the policy's prepublish time.
	RotateAnnotation = "m2m.dev/rotate"
	// RotatedAnnotation records the RotateAnnotation value last acted on.
	RotatedAnnotation = "m2m.dev/rotated"
	// EmergencyAnnotation asks for an emergency rotation: every key in the Secret goes at once,
	// and a new key signs at once.
	EmergencyAnnotation = "m2m.dev/rotate-emergency"
	// EmergencyRotatedAnnotation records the EmergencyAnnotation value last acted on.
	EmergencyRotatedAnnotation = "m2m.dev/rotated-emergency"
)

// Ask is a rotation that the Secret's annotations ask for and that has not been done yet.
type Ask string

const (
	// AskNone: no rotation is asked for.
	AskNone Ask = ""
	// AskPlanned: publish a successor now, to sign after the prepublish time.
	AskPlanned Ask = "planned"
	// AskEmergency: the keys in the Secret may have been copied; replace them all at once.
	AskEmergency Ask = "emergency"
)

// AskOf reads the rotation that annotations ask for. An emergency outranks a planned rotation
// asked for at the same time: it replaces the key that the planned one would.
func AskOf(annotations map[string]string) Ask {
	switch {
	case asked(annotations, EmergencyAnnotation, EmergencyRotatedAnnotation):
		return AskEmergency
	case asked(annotations, RotateAnnotation, RotatedAnnotation):
		return AskPlanned
	}
	return AskNone
}

func asked(annotations map[string]string, ask, done string) bool {
	v := annotations[ask]
	return v != "" && v != annotations[done]
}

// Acted returns a copy of annotations that records every rotation they ask for as done.
func Acted(annotations map[string]string) map[string]string {
	out := maps.Clone(annotations)
	for ask, done := range map[string]string{RotateAnnotation: RotatedAnnotation, EmergencyAnnotation: EmergencyRotatedAnnotation} {
		if asked(annotations, ask, done) {
			out[done] = annotations[ask]
		}
	}
	return out
}
