package controllers

import (
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

func TestTheManagersCacheKeepsTheAnnotationsTheManagerReadsAndDropsTheLastAppliedConfiguration(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{}
	obj.Annotations = map[string]string{
		m2mv1alpha1.RotateAnnotation:       "2026-12-07",
		corev1.LastAppliedConfigAnnotation: strings.Repeat("x", 100_000),
	}
	out, _ := trimClient(obj)
	got := out.(*m2mv1alpha1.M2MClient).Annotations
	if got[m2mv1alpha1.RotateAnnotation] != "2026-12-07" {
		t.Fatal("the rotate annotation was dropped: rotations on annotation would never happen")
	}
	if _, ok := got[corev1.LastAppliedConfigAnnotation]; ok {
		t.Fatal("the last-applied configuration, a second copy of the spec, is cached")
	}
}
