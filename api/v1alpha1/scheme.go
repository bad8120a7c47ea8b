package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// NewScheme returns a scheme with Kubernetes' built-in types and m2m.dev/v1alpha1: the one every
// client of this project (the manager, kubectl m2m, the tests and hack/) builds its client with.
// It lives beside AddToScheme so that it needs nothing but client-go and this package, and light
// clients such as kubectl m2m do not link the manager.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // registering compiled-in types fails only on a programming error
	}
	if err := AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
