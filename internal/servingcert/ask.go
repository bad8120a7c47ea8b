package servingcert

import "maps"

// Annotations that ask for a rotation now. Each is acted on once for each distinct value, and the
// value acted on is recorded in the same write as the rotation, so that a crash does both or
// neither. The names are those of the signing-key Secret (internal/signingkeys), so that the
// Secrets rotate alike.
const (
	// RotateAnnotation, on the CA Secret, starts a planned CA rotation (a successor joins the
	// bundle and signs after the overlap); on the serving-certificate Secret, it issues a new
	// certificate.
	RotateAnnotation = "m2m.dev/rotate"
	// RotatedAnnotation records the RotateAnnotation value last acted on.
	RotatedAnnotation = "m2m.dev/rotated"
	// EmergencyAnnotation, on the CA Secret only, replaces the CA at once: a new CA signs, and
	// every CA the Secret held leaves the bundle.
	EmergencyAnnotation = "m2m.dev/rotate-emergency"
	// EmergencyRotatedAnnotation records the EmergencyAnnotation value last acted on.
	EmergencyRotatedAnnotation = "m2m.dev/rotated-emergency"
)

// Ask is a CA rotation that the CA Secret's annotations ask for and that has not been done yet.
type Ask string

const (
	// AskNone: no rotation is asked for.
	AskNone Ask = ""
	// AskPlanned: add a successor to the bundle now, to sign after the overlap.
	AskPlanned Ask = "planned"
	// AskEmergency: the CA Secret may have been copied, or a serving key leaked; replace every CA
	// at once.
	AskEmergency Ask = "emergency"
)

// AskOf reads the CA rotation that the CA Secret's annotations ask for. An emergency outranks a
// planned rotation asked for at the same time: the CA it makes is as new as a successor would be.
func AskOf(annotations map[string]string) Ask {
	switch {
	case Asked(annotations, EmergencyAnnotation, EmergencyRotatedAnnotation):
		return AskEmergency
	case Asked(annotations, RotateAnnotation, RotatedAnnotation):
		return AskPlanned
	}
	return AskNone
}

// Asked reports whether annotations hold a value of ask that done does not record as acted on.
func Asked(annotations map[string]string, ask, done string) bool {
	v := annotations[ask]
	return v != "" && v != annotations[done]
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
