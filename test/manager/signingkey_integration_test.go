package manager

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func activeKey(t *testing.T) (*corev1.Secret, *signingkeys.Key, error) {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(ctx, signingkeys.DefaultSecret, s); err != nil {
		return nil, nil, err
	}
	set, err := signingkeys.Parse(s.Data[signingkeys.DataKey])
	if err != nil {
		return nil, nil, err
	}
	if set.Active() == nil {
		return nil, nil, fmt.Errorf("no active key")
	}
	return s, set.Active(), nil
}

func TestTheManagerKeepsASigningKeySecretWithAnActiveES256KeyAndRecreatesItWhenDeleted(t *testing.T) {
	var first *corev1.Secret
	var key *signingkeys.Key
	testenv.Eventually(t, wait, func() (err error) {
		first, key, err = activeKey(t)
		return err
	})
	if key.Algorithm != signingkeys.ES256 {
		t.Fatalf("default algorithm %s, want ES256", key.Algorithm)
	}
	if err := env.Client.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		s, _, err := activeKey(t)
		if err != nil {
			return err
		}
		if s.UID == first.UID {
			return fmt.Errorf("not recreated yet")
		}
		return nil
	})
}
