package signingkeys

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// DefaultSecret is where the manager keeps the signing keys, and where the token server reads
// them, unless --signing-key-secret says otherwise.
var DefaultSecret = types.NamespacedName{Namespace: "m2m-system", Name: "m2m-signing-keys"}

// ParseSecretRef parses the "namespace/name" of --signing-key-secret.
func ParseSecretRef(s string) (types.NamespacedName, error) {
	if ns, name, ok := strings.Cut(s, "/"); ok && ns != "" && name != "" && !strings.Contains(name, "/") {
		return types.NamespacedName{Namespace: ns, Name: name}, nil
	}
	return types.NamespacedName{}, fmt.Errorf("signing-key Secret %q is not namespace/name", s)
}
