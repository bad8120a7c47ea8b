// Package scheme builds the runtime.Scheme that every client of this project uses: Kubernetes'
// built-in types and m2m.dev/v1alpha1. It imports only client-go and the API, so that light
// clients such as kubectl m2m do not link the manager.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// New returns a scheme with Kubernetes' built-in types and m2m.dev/v1alpha1.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // registering compiled-in types fails only on a programming error
	}
	if err := m2mv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
