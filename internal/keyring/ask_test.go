package keyring

import (
	"slices"
	"strings"
	"testing"
)

// long is a value of 150 KiB, which recorded beside itself would be over the API server's 256 KiB
// of annotations; longest is the longest value acted on.
var (
	long    = strings.Repeat("x", 150<<10)
	longest = strings.Repeat("x", 253)
)

func TestAskOf(t *testing.T) {
	for sentence, tc := range map[string]struct {
		annotations map[string]string
		want        Ask
	}{
		"no annotation asks for nothing":                              {nil, AskNone},
		"a new rotate value asks for a planned rotation":              {map[string]string{RotateAnnotation: "1"}, AskPlanned},
		"a rotate value already acted on asks for nothing":            {map[string]string{RotateAnnotation: "1", RotatedAnnotation: "1"}, AskNone},
		"a new emergency value asks for an emergency":                 {map[string]string{EmergencyAnnotation: "1"}, AskEmergency},
		"an emergency value already acted on asks for nothing":        {map[string]string{EmergencyAnnotation: "1", EmergencyRotatedAnnotation: "1"}, AskNone},
		"an emergency value other than the one acted on asks again":   {map[string]string{EmergencyAnnotation: "2", EmergencyRotatedAnnotation: "1"}, AskEmergency},
		"an empty emergency value asks for nothing":                   {map[string]string{EmergencyAnnotation: "", EmergencyRotatedAnnotation: "1"}, AskNone},
		"an emergency outranks a planned rotation asked at once":      {map[string]string{RotateAnnotation: "1", EmergencyAnnotation: "1"}, AskEmergency},
		"a new rotate value beside an emergency acted on is planned":  {map[string]string{RotateAnnotation: "2", EmergencyAnnotation: "1", EmergencyRotatedAnnotation: "1"}, AskPlanned},
		"an emergency value recorded as a planned one is still asked": {map[string]string{EmergencyAnnotation: "1", RotatedAnnotation: "1"}, AskEmergency},
		"an emergency value over 253 characters asks for nothing":     {map[string]string{EmergencyAnnotation: long}, AskNone},
		"a rotate value over 253 characters asks for nothing":         {map[string]string{RotateAnnotation: long}, AskNone},
		"an emergency value over the limit hides no planned rotation": {map[string]string{EmergencyAnnotation: long, RotateAnnotation: "2"}, AskPlanned},
		"an emergency value of 253 characters asks for an emergency":  {map[string]string{EmergencyAnnotation: longest}, AskEmergency},
	} {
		t.Run(sentence, func(t *testing.T) {
			if got := AskOf(tc.annotations); got != tc.want {
				t.Fatalf("asks for %q, want %q", got, tc.want)
			}
		})
	}
}

// An emergency's write records both values, so that a planned rotation asked with it does not
// follow it with a needless successor; other annotations stay.
func TestActedRecordsEveryValueAskedForAndKeepsOtherAnnotations(t *testing.T) {
	in := map[string]string{RotateAnnotation: "p", EmergencyAnnotation: "e", "team": "platform"}
	out := Acted(in)
	if AskOf(out) != AskNone || out[RotatedAnnotation] != "p" || out[EmergencyRotatedAnnotation] != "e" || out["team"] != "platform" {
		t.Fatalf("annotations %v", out)
	}
	if _, changed := in[RotatedAnnotation]; changed {
		t.Fatal("Acted changed its input")
	}
}

// A value over the limit is recorded nowhere, and Ignored names it, so that the controllers can
// say why nothing rotates.
func TestAValueOverTheLimitIsNotRecordedAndIsNamedAsIgnored(t *testing.T) {
	in := map[string]string{EmergencyAnnotation: long, RotateAnnotation: "p"}
	out := Acted(in)
	if _, recorded := out[EmergencyRotatedAnnotation]; recorded || out[RotatedAnnotation] != "p" {
		t.Fatalf("recorded %d characters of emergency value, and %q of planned", len(out[EmergencyRotatedAnnotation]), out[RotatedAnnotation])
	}
	if got := Ignored(in); !slices.Equal(got, []string{EmergencyAnnotation}) {
		t.Fatalf("Ignored: %v", got)
	}
	if got := Ignored(map[string]string{EmergencyAnnotation: longest, RotateAnnotation: longest}); got != nil {
		t.Fatalf("values within the limit are ignored: %v", got)
	}
}
