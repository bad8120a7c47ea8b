package controllers

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestRotationDue(t *testing.T) {
	rotated := metav1.NewTime(now.Add(-2 * time.Hour))
	withPolicy := func(period time.Duration, trigger, lastTrigger, annotation, lastAnnotation string, entries int) *m2mv1alpha1.M2MClient {
		obj := clientWith(entry(current, nil))
		for i := 1; i < entries; i++ {
			hour := time.Hour
			obj.Status.AcceptedSecrets = append(obj.Status.AcceptedSecrets, entry(strings.Repeat("x", i), &hour))
		}
		obj.Status.LastRotationTime = &rotated
		if period > 0 {
			obj.Spec.Rotation.Period = &metav1.Duration{Duration: period}
		}
		obj.Spec.Rotation.Trigger, obj.Status.LastRotationTrigger = trigger, lastTrigger
		if annotation != "" {
			obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: annotation}
		}
		obj.Status.LastRotateAnnotation = lastAnnotation
		return obj
	}
	for sentence, tc := range map[string]struct {
		obj  *m2mv1alpha1.M2MClient
		want RotationReason
	}{
		"no period, trigger or annotation asks for nothing":                {withPolicy(0, "", "", "", "", 1), RotationNotDue},
		"a period not yet over asks for nothing":                           {withPolicy(3*time.Hour, "", "", "", "", 1), RotationNotDue},
		"a period that has passed rotates on schedule":                     {withPolicy(time.Hour, "", "", "", "", 1), RotationScheduled},
		"a period that ends exactly now rotates":                           {withPolicy(2*time.Hour, "", "", "", "", 1), RotationScheduled},
		"a new trigger value rotates":                                      {withPolicy(0, "v2", "v1", "", "", 1), RotationTrigger},
		"a trigger value already acted on asks for nothing":                {withPolicy(0, "v2", "v2", "", "", 1), RotationNotDue},
		"a trigger removed from Git asks for nothing":                      {withPolicy(0, "", "v2", "", "", 1), RotationNotDue},
		"a new annotation value rotates":                                   {withPolicy(0, "", "", "2026-03-01", "", 1), RotationAnnotation},
		"an annotation value already acted on asks for nothing":            {withPolicy(0, "", "", "x", "x", 1), RotationNotDue},
		"a trigger and an annotation at once rotate once, for the trigger": {withPolicy(0, "v3", "v2", "y", "x", 1), RotationTrigger},
		"a due rotation waits while status is full":                        {withPolicy(time.Hour, "", "", "", "", maxAcceptedSecrets), RotationDeferred},
		"an annotation value over 253 characters asks for nothing":         {withPolicy(0, "", "", tooLong, "", 1), RotationNotDue},
		"an annotation value of 253 characters rotates":                    {withPolicy(0, "", "", longest, "", 1), RotationAnnotation},
		"an annotation value over the limit leaves the schedule as it is":  {withPolicy(time.Hour, "", "", tooLong, "x", 1), RotationScheduled},
		"a marked annotation of a cached client asks for nothing":          {marked(withPolicy(0, "", "", "", "x", 1)), RotationNotDue},
	} {
		t.Run(sentence, func(t *testing.T) {
			got, why := RotationDue(tc.obj, now)
			if got != tc.want {
				t.Fatalf("got %q (%s), want %q", got, why, tc.want)
			}
			if got != RotationNotDue && why == "" {
				t.Fatal("a due rotation must say why")
			}
		})
	}
}

func TestNextRotationIsLastRotationPlusPeriod(t *testing.T) {
	obj := clientWith(entry(current, nil))
	if !nextRotation(obj).IsZero() {
		t.Fatal("a client without a period has a next rotation")
	}
	last := metav1.NewTime(now)
	obj.Status.LastRotationTime = &last
	obj.Spec.Rotation.Period = &metav1.Duration{Duration: 720 * time.Hour}
	if got := nextRotation(obj); !got.Equal(now.Add(720 * time.Hour)) {
		t.Fatalf("next rotation %s", got)
	}
}

func TestRevocationDue(t *testing.T) {
	withValues := func(trigger, lastTrigger, annotation, lastAnnotation string) *m2mv1alpha1.M2MClient {
		obj := clientWith(entry(current, nil))
		obj.Spec.Rotation.RevokeTrigger, obj.Status.LastRevokeTrigger = trigger, lastTrigger
		obj.Annotations = map[string]string{m2mv1alpha1.RevokePreviousAnnotation: annotation}
		obj.Status.LastRevokeAnnotation = lastAnnotation
		return obj
	}
	rotateOnly := withValues("", "", "", "")
	rotateOnly.Spec.Rotation.Trigger = "v9"
	rotateOnly.Annotations[m2mv1alpha1.RotateAnnotation] = "now"
	for sentence, tc := range map[string]struct {
		obj  *m2mv1alpha1.M2MClient
		want bool
	}{
		"a new revokeTrigger value asks for a revocation":                   {withValues("leak-2", "leak-1", "", ""), true},
		"a revokeTrigger value already acted on asks for nothing":           {withValues("leak-1", "leak-1", "", ""), false},
		"a revokeTrigger emptied in Git asks for nothing":                   {withValues("", "leak-1", "", ""), false},
		"a new revoke-previous annotation value asks for a revocation":      {withValues("", "", "1764000000", ""), true},
		"a revoke-previous annotation already acted on asks for nothing":    {withValues("", "", "1764000000", "1764000000"), false},
		"a rotate trigger or annotation alone asks for no revocation":       {rotateOnly, false},
		"a new annotation value asks for a revocation whatever the trigger": {withValues("leak-1", "leak-1", "x", "y"), true},
		"a revoke-previous annotation over 253 characters asks for nothing": {withValues("", "", tooLong, "1764000000"), false},
		"a revoke-previous annotation of 253 characters asks for one":       {withValues("", "", longest, "1764000000"), true},
	} {
		t.Run(sentence, func(t *testing.T) {
			got, why := RevocationDue(tc.obj)
			if got != tc.want {
				t.Fatalf("got %v (%s), want %v", got, why, tc.want)
			}
			if got && why == "" {
				t.Fatal("a due revocation must say why")
			}
		})
	}
}

// tooLong is one character over MaxTriggerLength (in characters, not bytes: "é" is two bytes);
// longest is MaxTriggerLength characters of more bytes than that.
var (
	tooLong = strings.Repeat("x", m2mv1alpha1.MaxTriggerLength+1)
	longest = strings.Repeat("é", m2mv1alpha1.MaxTriggerLength)
)

// marked is obj as trimClient leaves it when its rotate and revoke-previous annotations were over
// the limit: without them, with longAnnotationsMark.
func marked(obj *m2mv1alpha1.M2MClient) *m2mv1alpha1.M2MClient {
	obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: tooLong, m2mv1alpha1.RevokePreviousAnnotation: tooLong}
	trimmed, _ := trimClient(obj)
	return trimmed.(*m2mv1alpha1.M2MClient)
}

func TestAnAnnotationValueOverTheLimitIsIgnoredWithAReasonAndNeverRecorded(t *testing.T) {
	for sentence, obj := range map[string]*m2mv1alpha1.M2MClient{
		"a client read past the cache": withValuesOf(tooLong),
		"a client in the cache":        marked(clientWith(entry(current, nil))),
	} {
		t.Run(sentence, func(t *testing.T) {
			if reason, why := RotationDue(obj, now); reason != RotationNotDue || !strings.Contains(why, "m2m.dev/rotate annotation is over 253 characters and is ignored") {
				t.Fatalf("RotationDue: %q, %q", reason, why)
			}
			if due, why := RevocationDue(obj); due || !strings.Contains(why, "m2m.dev/revoke-previous annotation is over 253 characters and is ignored") {
				t.Fatalf("RevocationDue: %v, %q", due, why)
			}
			if got := IgnoredAnnotations(obj); len(got) != 2 {
				t.Fatalf("IgnoredAnnotations: %v, want both", got)
			}
			obj.Status.LastRotateAnnotation, obj.Status.LastRevokeAnnotation = "x", "y"
			handleRevocationValues(obj)
			if obj.Status.LastRevokeAnnotation != "" {
				t.Fatalf("status records %d characters of revoke-previous annotation", len(obj.Status.LastRevokeAnnotation))
			}
		})
	}
	if got := IgnoredAnnotations(withValuesOf(longest)); len(got) != 0 {
		t.Fatalf("values within the limit are ignored: %v", got)
	}
	// A mark that a tenant writes itself beside a value within the limit hides nothing.
	forged := withValuesOf("v2")
	forged.Annotations[longAnnotationsMark] = m2mv1alpha1.RotateAnnotation
	if reason, _ := RotationDue(forged, now); reason != RotationAnnotation {
		t.Fatalf("a forged mark hid a rotation: %q", reason)
	}
}

// withValuesOf is a client whose rotate and revoke-previous annotations are both value.
func withValuesOf(value string) *m2mv1alpha1.M2MClient {
	obj := clientWith(entry(current, nil))
	obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: value, m2mv1alpha1.RevokePreviousAnnotation: value}
	return obj
}

func TestStatusKeepsNoValueActedOnOverTheLimit(t *testing.T) {
	st := m2mv1alpha1.M2MClientStatus{LastRotationTrigger: tooLong, LastRotateAnnotation: tooLong, LastRevokeTrigger: "v1", LastRevokeAnnotation: longest}
	dropLongRecords(&st)
	if st.LastRotationTrigger != "" || st.LastRotateAnnotation != "" {
		t.Fatalf("values over the limit are kept: %d and %d characters", len(st.LastRotationTrigger), len(st.LastRotateAnnotation))
	}
	if st.LastRevokeTrigger != "v1" || st.LastRevokeAnnotation != longest {
		t.Fatal("values within the limit were dropped")
	}
}
