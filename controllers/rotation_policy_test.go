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
