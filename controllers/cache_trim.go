package controllers

import (
	"errors"
	"strings"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// claimsTooLargeMark marks, on an M2MClient in the manager's cache, that its tokenClaims were over
// m2mv1alpha1.MaxTokenClaimsBytes. trimClient sets it and removes any value the object brought.
const claimsTooLargeMark = "m2m.dev/manager-claims-too-large"

// longAnnotationsMark names, separated by spaces, the triggerAnnotations of an M2MClient in the
// manager's cache whose values were over m2mv1alpha1.MaxTriggerLength: trimClient drops such a
// value, which the manager ignores, and keeps only that it was there, for annotationValue to say
// so. trimClient removes any mark the object brought.
const longAnnotationsMark = "m2m.dev/manager-long-annotations"

// trimClient is the cache transform of M2MClients: it drops what the manager never reads and
// what a tenant can make large, so that the cache's memory is bounded by the schema's limits,
// not by what a tenant writes. tokenClaims and trustedMetadata are free-form JSON whose size no
// schema bounds (8 clients with a 1 MiB claim each grew the heap by about 14 MiB); the manager
// reads only whether the claims are too large, which claimsTooLargeMark keeps. Of the object's
// metadata it keeps what identifies it, its deletion time and the two annotations it reads, those
// within MaxTriggerLength (longAnnotationsMark stands for the others): kubectl's last-applied
// configuration alone repeats the whole spec. The manager writes M2MClients only through
// status patches computed against the cached object, so the dropped fields are never written
// back; an Update of a whole cached M2MClient would erase them, which is why none is made.
func trimClient(obj any) (any, error) {
	c, ok := obj.(*m2mv1alpha1.M2MClient)
	if !ok {
		return obj, nil
	}
	c.ManagedFields = nil
	// Of the object's own labels and annotations the manager reads only the rotate and
	// revoke-previous annotations, and of those only values within MaxTriggerLength: the
	// admission policy bounds them where it is installed, the object's size alone elsewhere.
	read := map[string]string{}
	var long []string
	for _, k := range triggerAnnotations {
		if v, ok := c.Annotations[k]; ok && m2mv1alpha1.TriggerTooLong(v) {
			long = append(long, k)
		} else if ok {
			read[k] = v
		}
	}
	if len(long) > 0 {
		read[longAnnotationsMark] = strings.Join(long, " ")
	}
	c.Labels, c.Annotations, c.Finalizers, c.OwnerReferences = nil, nil, nil, nil
	if renderedTooLarge(&c.Spec) {
		read[claimsTooLargeMark] = "true"
	}
	if len(read) > 0 {
		c.Annotations = read
	}
	c.Spec.TokenClaims = nil
	c.Spec.TrustedMetadata = nil
	return c, nil
}

// claimsTooLarge reports whether obj's tokenClaims are over the bound, from the cache's mark or,
// for an object read past the cache, from the claims themselves.
func claimsTooLarge(obj *m2mv1alpha1.M2MClient) bool {
	return obj.Annotations[claimsTooLargeMark] == "true" || renderedTooLarge(&obj.Spec)
}

// renderedTooLarge reports whether spec's tokenClaims are over the bound as the token server
// issues them: rendered, since a short template can repeat a long trustedMetadata value.
func renderedTooLarge(spec *m2mv1alpha1.M2MClientSpec) bool {
	_, err := spec.RenderTokenClaims()
	return errors.Is(err, m2mv1alpha1.ErrTokenClaimsTooLarge)
}
