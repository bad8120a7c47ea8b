package controllers

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/placeholder"
)

// derivedKeysAnnotation records which entries of the Secret the manager derived from its own
// (spec.secret.keys and spec.secret.templates), so that a name that leaves the spec leaves the
// Secret, while entries that others add are left alone.
const derivedKeysAnnotation = "m2m.dev/derived-keys"

// errDerivedEntries says that spec.secret.keys or templates cannot be rendered; the Secret is
// not written until the spec is fixed.
var errDerivedEntries = errors.New("spec.secret.keys and templates cannot be rendered")

// renderDerived adds to secret the copies of spec.secret.keys and the entries of
// spec.secret.templates, built from the manager's entries that secret already carries, and
// removes the ones it derived before that the spec no longer names. It runs after the manager's
// entries are rendered, so that a derived entry changes in the same write as its source.
func renderDerived(tpl m2mv1alpha1.SecretTemplate, secret *corev1.Secret) error {
	own := map[string]string{}
	for _, k := range m2mv1alpha1.CredentialsSecretKeys {
		if v, ok := secret.Data[k]; ok {
			own[k] = string(v)
		}
	}
	derived := map[string]string{}
	for from, to := range tpl.Keys {
		if v, ok := own[from]; ok {
			derived[string(to)] = v
		}
	}
	known := func(name string) bool { return slices.Contains(m2mv1alpha1.CredentialsSecretKeys, name) }
	for name, text := range tpl.Templates {
		// A template the CRD should have refused (stored before a stricter CRD, or written past
		// it) is an error, not an entry the application reads half built.
		if err := placeholder.Validate(string(text), known); err != nil {
			return fmt.Errorf("%w: template %s: %v", errDerivedEntries, name, err)
		}
		v, err := placeholder.Render(string(text), own, m2mv1alpha1.MaxDerivedSecretBytes)
		switch {
		case errors.Is(err, placeholder.ErrNoValue):
			continue
		case err != nil:
			return fmt.Errorf("%w: template %s %v", errDerivedEntries, name, err)
		}
		derived[name] = v
	}
	size := 0
	for name, v := range derived {
		// A name the CRD should have refused: written, it would replace the credential that
		// the manager, the library and the token server's hash agree on.
		if known(name) {
			return fmt.Errorf("%w: %s is an entry of the manager's", errDerivedEntries, name)
		}
		size += len(v)
	}
	if size > m2mv1alpha1.MaxDerivedSecretBytes {
		return fmt.Errorf("%w: together they render to %d bytes, more than %d", errDerivedEntries, size, m2mv1alpha1.MaxDerivedSecretBytes)
	}

	for _, k := range strings.Split(secret.Annotations[derivedKeysAnnotation], ",") {
		// Whoever edits the annotation could name the manager's entries; those stay.
		if _, ok := derived[k]; !ok && !slices.Contains(m2mv1alpha1.CredentialsSecretKeys, k) {
			delete(secret.Data, k)
		}
	}
	names := make([]string, 0, len(derived))
	for k, v := range derived {
		secret.Data[k] = []byte(v)
		names = append(names, k)
	}
	slices.Sort(names)
	if len(names) > 0 {
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations[derivedKeysAnnotation] = strings.Join(names, ",")
	} else {
		delete(secret.Annotations, derivedKeysAnnotation)
		if len(secret.Annotations) == 0 {
			secret.Annotations = nil
		}
	}
	return nil
}
