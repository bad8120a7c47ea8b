package v1alpha1

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// repoFile reads a file of the repository by its path from the root.
func repoFile(t *testing.T, path string) []byte {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Every value acted on once per value has the one bound: the schema's maxLength of the triggers
// and of the status fields that record values, and the admission policy's bound of the two
// annotations, are MaxTriggerLength.
func TestEveryValueActedOnOncePerValueIsBoundedByMaxTriggerLength(t *testing.T) {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(repoFile(t, "config/crd/bases/m2m.dev_m2mclients.yaml"), &crd); err != nil {
		t.Fatal(err)
	}
	props := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties
	rotation, status := props["spec"].Properties["rotation"].Properties, props["status"].Properties
	for name, prop := range map[string]apiextensionsv1.JSONSchemaProps{
		"spec.rotation.trigger": rotation["trigger"], "spec.rotation.revokeTrigger": rotation["revokeTrigger"],
		"status.lastRotationTrigger": status["lastRotationTrigger"], "status.lastRotateAnnotation": status["lastRotateAnnotation"],
		"status.lastRevokeTrigger": status["lastRevokeTrigger"], "status.lastRevokeAnnotation": status["lastRevokeAnnotation"],
	} {
		if prop.MaxLength == nil || *prop.MaxLength != MaxTriggerLength {
			t.Errorf("%s: maxLength %v, want %d", name, prop.MaxLength, MaxTriggerLength)
		}
	}
	var policy admissionregistrationv1.ValidatingAdmissionPolicy
	if err := yaml.Unmarshal([]byte(strings.Split(string(repoFile(t, "config/admission/rotation_annotations.yaml")), "\n---\n")[0]), &policy); err != nil {
		t.Fatal(err)
	}
	for _, v := range policy.Spec.Variables {
		if v.Name == "maxLength" && v.Expression != strconv.Itoa(MaxTriggerLength) {
			t.Errorf("the policy bounds values to %s characters, want %d", v.Expression, MaxTriggerLength)
		}
	}
	if bounded := policyList(t, "rotation_annotations.yaml", "bounded"); !slices.Equal(bounded, []string{RotateAnnotation, RevokePreviousAnnotation}) {
		t.Errorf("the policy bounds %v", bounded)
	}
}

func TestTriggerTooLongCountsCharactersNotBytes(t *testing.T) {
	for value, want := range map[string]bool{
		"":                                    false,
		strings.Repeat("x", 253):              false,
		strings.Repeat("x", 254):              true,
		strings.Repeat("é", 253):              false, // 506 bytes
		strings.Repeat("é", 254):              true,
		strings.Repeat("x", 252) + "\xff\xfe": true, // invalid UTF-8 counts a rune per byte
	} {
		if got := TriggerTooLong(value); got != want {
			t.Errorf("TriggerTooLong of %d bytes = %v, want %v", len(value), got, want)
		}
	}
}
