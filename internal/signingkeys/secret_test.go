package signingkeys

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestParseSecretRef(t *testing.T) {
	if got, err := ParseSecretRef("m2m-system/keys"); err != nil || got != (types.NamespacedName{Namespace: "m2m-system", Name: "keys"}) {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"", "keys", "/keys", "ns/", "a/b/c"} {
		if _, err := ParseSecretRef(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
