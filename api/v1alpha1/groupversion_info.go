// Package v1alpha1 contains the m2m.dev/v1alpha1 API: the M2MClient resource, which declares a
// machine-to-machine OAuth 2.0 client whose credentials the manager keeps in a Secret.
// +kubebuilder:object:generate=true
// +groupName=m2m.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "m2m.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
