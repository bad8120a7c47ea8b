package manager

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// An emergency value of 150 KiB on the signing-key Secret, which recorded beside itself would be
// over the API server's 256 KiB of annotations and fail every write of the Secret, asks for
// nothing: a successor due on schedule is published, and a later short value still rotates.
func TestASigningKeySecretWithALongEmergencyValueKeepsItsScheduleAndRotatesForAShortOne(t *testing.T) {
	var secret *corev1.Secret
	testenv.Eventually(t, wait, func() (err error) {
		secret, _, err = activeKey(t)
		return err
	})
	t.Cleanup(func() {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: signingkeys.DefaultSecret.Namespace, Name: signingkeys.DefaultSecret.Name}}
		if err := env.Client.Patch(ctx, s, annotationsPatch(t, map[string]any{keyring.EmergencyAnnotation: nil, keyring.RotateAnnotation: nil})); err != nil {
			t.Error(err)
		}
	})
	set, err := signingkeys.Parse(secret.Data[signingkeys.DataKey])
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("the test needs a Secret with one key, not %d", len(set.Keys))
	}
	// The active key as it is a minute after its successor was due.
	p := signingkeys.DefaultPolicy
	since := time.Now().Add(-(p.Period - p.Prepublish) - time.Minute).UTC().Truncate(time.Second)
	set.Keys[0].CreatedAt, set.Keys[0].ActiveAt = since, &since
	data, err := set.Encode()
	if err != nil {
		t.Fatal(err)
	}
	secret.Data[signingkeys.DataKey] = data
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[keyring.EmergencyAnnotation] = strings.Repeat("x", 150<<10)
	if err := env.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, signingkeys.DefaultSecret, s); err != nil {
			return err
		}
		got, err := signingkeys.Parse(s.Data[signingkeys.DataKey])
		if err != nil {
			return err
		}
		if len(got.Keys) != 2 || got.Active() == nil || got.Active().KID != set.Keys[0].KID {
			return fmt.Errorf("no successor on schedule, or the active key was replaced: %d keys", len(got.Keys))
		}
		return nil
	})

	value := "after-long-" + t.Name()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: signingkeys.DefaultSecret.Namespace, Name: signingkeys.DefaultSecret.Name}}
	if err := env.Client.Patch(ctx, s, annotationsPatch(t, map[string]any{keyring.RotateAnnotation: value})); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(ctx, signingkeys.DefaultSecret, s); err != nil {
			return err
		}
		if s.Annotations[keyring.RotatedAnnotation] != value {
			return fmt.Errorf("the short value is not acted on yet")
		}
		return nil
	})
	if _, recorded := s.Annotations[keyring.EmergencyRotatedAnnotation]; recorded {
		t.Fatal("the long emergency value was recorded")
	}
}
