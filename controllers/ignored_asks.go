package controllers

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
)

// ignoredAsks logs the rotation annotations of the manager's own Secrets that keyring ignores for
// their length (keyring.Ignored) once for each value: the administrator who wrote one learns why
// nothing rotates, and a Secret that keeps it logs no error on every reconcile of its lifecycle.
type ignoredAsks struct {
	mu sync.Mutex
	// logged holds, by Secret, the SHA-256 of the ignored values last logged: not the values,
	// which may be large.
	logged map[types.NamespacedName][sha256.Size]byte
}

// report logs s's ignored annotations, unless their values were logged already.
func (l *ignoredAsks) report(logger logr.Logger, s *corev1.Secret) {
	if s == nil {
		return
	}
	key, names := client.ObjectKeyFromObject(s), keyring.Ignored(s.Annotations)
	h := sha256.New()
	for _, name := range names {
		fmt.Fprintf(h, "%s=%d:%s;", name, len(s.Annotations[name]), s.Annotations[name])
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(names) == 0 {
		delete(l.logged, key)
		return
	}
	if last, ok := l.logged[key]; ok && last == sum {
		return
	}
	if l.logged == nil {
		l.logged = map[types.NamespacedName][sha256.Size]byte{}
	}
	l.logged[key] = sum
	logger.Error(nil, fmt.Sprintf("the %s annotation of Secret %s is over %d characters and is ignored: it rotates nothing; write a shorter value (kubectl m2m rotate-signing-key writes one) to rotate",
		strings.Join(names, " and "), key, m2mv1alpha1.MaxTriggerLength), "annotations", names, "maxLength", m2mv1alpha1.MaxTriggerLength)
}
