package controllers

import (
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestTheManagersCacheKeepsNoFreeFormValuesOnlyWhetherTheClaimsAreTooLarge(t *testing.T) {
	big := apiextensionsv1.JSON{Raw: []byte(`"` + strings.Repeat("x", m2mv1alpha1.MaxTokenClaimsBytes) + `"`)}
	small := apiextensionsv1.JSON{Raw: []byte(`"billing"`)}
	for _, tc := range []struct {
		sentence    string
		claims      m2mv1alpha1.TokenClaims
		annotations map[string]string
		tooLarge    bool
	}{
		{sentence: "claims over the bound are dropped and marked", claims: m2mv1alpha1.TokenClaims{"blob": big}, tooLarge: true},
		{sentence: "a short claim that renders a long trustedMetadata value over the bound is marked", claims: m2mv1alpha1.TokenClaims{"owner": {Raw: []byte(`"${owner}"`)}}, tooLarge: true},
		{sentence: "claims within the bound are dropped without a mark", claims: m2mv1alpha1.TokenClaims{"team": small}},
		{sentence: "a mark the tenant wrote itself is removed", claims: m2mv1alpha1.TokenClaims{"team": small}, annotations: map[string]string{claimsTooLargeMark: "true"}},
		{sentence: "a client without claims is not marked", annotations: map[string]string{}},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			obj := &m2mv1alpha1.M2MClient{}
			obj.Annotations = tc.annotations
			obj.Spec.TokenClaims = tc.claims
			obj.Spec.TrustedMetadata = map[string]apiextensionsv1.JSON{"owner": big}
			out, err := trimClient(obj)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*m2mv1alpha1.M2MClient)
			if got.Spec.TokenClaims != nil || got.Spec.TrustedMetadata != nil {
				t.Fatalf("the cache keeps free-form values: claims %d, metadata %d", len(got.Spec.TokenClaims), len(got.Spec.TrustedMetadata))
			}
			if claimsTooLarge(got) != tc.tooLarge {
				t.Fatalf("claimsTooLarge = %v, want %v", claimsTooLarge(got), tc.tooLarge)
			}
		})
	}
}

func TestTheManagersCacheKeepsOfTheObjectsMetadataOnlyWhatTheManagerReads(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{}
	obj.Name, obj.Namespace, obj.UID = "c", "team-a", "uid-1"
	obj.Annotations = map[string]string{
		m2mv1alpha1.RotateAnnotation:         "2026-12-07",
		m2mv1alpha1.RevokePreviousAnnotation: "2026-12-08",
		corev1.LastAppliedConfigAnnotation:   strings.Repeat("x", 100_000),
		"team.example.com/notes":             strings.Repeat("x", 100_000),
	}
	obj.Labels = map[string]string{"app": strings.Repeat("x", 63)}
	obj.Finalizers = []string{"example.com/keep"}
	obj.Spec.Secret.Annotations = map[string]string{"reloader.stakater.com/match": "true"}
	out, _ := trimClient(obj)
	got := out.(*m2mv1alpha1.M2MClient)
	if got.Annotations[m2mv1alpha1.RotateAnnotation] != "2026-12-07" {
		t.Fatal("the rotate annotation was dropped: rotations on annotation would never happen")
	}
	if got.Annotations[m2mv1alpha1.RevokePreviousAnnotation] != "2026-12-08" {
		t.Fatal("the revoke-previous annotation was dropped: kubectl m2m rotate --revoke-previous would never revoke")
	}
	if len(got.Annotations) != 2 || got.Labels != nil || got.Finalizers != nil {
		t.Fatalf("the cache keeps metadata the manager never reads: %d annotations, %d labels, %d finalizers", len(got.Annotations), len(got.Labels), len(got.Finalizers))
	}
	if got.Name != "c" || got.UID != "uid-1" || got.Spec.Secret.Annotations["reloader.stakater.com/match"] != "true" {
		t.Fatal("the cache dropped what the manager reads: the object's name and UID, or the annotations it copies onto the Secret")
	}
}

func TestTheManagersCacheKeepsNoRotationAnnotationValueOverTheLimitOnlyThatItWasThere(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{}
	obj.Annotations = map[string]string{
		m2mv1alpha1.RotateAnnotation:         strings.Repeat("x", 120<<10),
		m2mv1alpha1.RevokePreviousAnnotation: "2026-12-08",
		longAnnotationsMark:                  m2mv1alpha1.RevokePreviousAnnotation, // the tenant's own
	}
	out, _ := trimClient(obj)
	got := out.(*m2mv1alpha1.M2MClient)
	size := 0
	for k, v := range got.Annotations {
		size += len(k) + len(v)
	}
	if size > 200 {
		t.Fatalf("the cache keeps %d bytes of annotations: %v", size, slices.Sorted(maps.Keys(got.Annotations)))
	}
	if got.Annotations[m2mv1alpha1.RevokePreviousAnnotation] != "2026-12-08" {
		t.Fatal("the revoke-previous annotation within the limit was dropped")
	}
	if ignored := IgnoredAnnotations(got); !slices.Equal(ignored, []string{m2mv1alpha1.RotateAnnotation}) {
		t.Fatalf("the cached client says %v are ignored, want only the rotate annotation", ignored)
	}
}
