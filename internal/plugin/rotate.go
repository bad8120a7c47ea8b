package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// errRotatedByTheStore is rotate's error for a client whose credential a secret store writes
// (spec.authentication.source): the manager would only record the ask and warn.
var errRotatedByTheStore = errors.New("the manager does not rotate a credential that a secret store writes")

// rotatedByTheManager refuses, before anything is asked of the manager, a rotation of a client
// whose credential comes from a source Secret, and says where to rotate it instead.
func rotatedByTheManager(ctx context.Context, c client.Client, key types.NamespacedName) error {
	obj, err := getClient(ctx, c, key)
	if err != nil {
		return err
	}
	if src := obj.Spec.Authentication.Source; src != nil {
		return fmt.Errorf("%w: m2mclient/%s takes its credential from Secret %s (entry %s), so rotate it in the store that writes it; the manager accepts the new value and keeps the previous one for spec.rotation.gracePeriod, or drops it at once when that is 0s",
			errRotatedByTheStore, key.Name, src.Name, m2mv1alpha1.SourceKey(obj))
	}
	return nil
}

func rotate(ctx context.Context, c client.Client, out io.Writer, key types.NamespacedName, timeout time.Duration) error {
	obj, err := getClient(ctx, c, key)
	if err != nil {
		return err
	}
	// The rotation is over when the secret current now has started its grace period (or is
	// gone): the manager does that only after the Secret carries the new secret.
	current := ""
	for _, e := range obj.Status.AcceptedSecrets {
		if e.ExpiresAt == nil {
			current = e.Hash
		}
	}
	rotated, err := annotateAndWait(ctx, c, obj, m2mv1alpha1.RotateAnnotation, "rotate", timeout, func(st *m2mv1alpha1.M2MClientStatus, value string) bool {
		if st.LastRotateAnnotation != value || st.LastRotationTime == nil {
			return false
		}
		for _, e := range st.AcceptedSecrets {
			if e.Hash == current && e.ExpiresAt == nil {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "m2mclient/%s rotated at %s\n", key.Name, rotated.Status.LastRotationTime.UTC().Format(time.RFC3339))
	return err
}

// revoke asks for a revocation (the m2m.dev/revoke-previous annotation), waits until the manager
// has finished it, and says what it did, what it means for pods, and what it does not do.
func revoke(ctx context.Context, c client.Client, out io.Writer, key types.NamespacedName, timeout time.Duration) error {
	before, err := getClient(ctx, c, key)
	if err != nil {
		return err
	}
	// The revocation is over once status records the value as acted on and no longer pending:
	// the manager drops the earlier credentials in the same write.
	after, err := annotateAndWait(ctx, c, before.DeepCopy(), m2mv1alpha1.RevokePreviousAnnotation, "revoke its earlier credentials", timeout, func(st *m2mv1alpha1.M2MClientStatus, value string) bool {
		return st.LastRevokeAnnotation == value && !st.RevocationPending
	})
	if err != nil {
		return err
	}
	kept := map[string]bool{}
	for _, e := range after.Status.AcceptedSecrets {
		kept[e.Hash] = true
	}
	dropped := 0
	for _, e := range before.Status.AcceptedSecrets {
		if !kept[e.Hash] {
			dropped++
		}
	}
	st := &after.Status
	credential := "client secret"
	if m2mv1alpha1.KeyPairAuthentication(after) != "" {
		credential = "private key"
	}
	what := fmt.Sprintf("a new %s is in Secret %s", credential, st.SecretName)
	if len(st.AcceptedSecrets) == 0 {
		what = "it takes no credential in its Secret (spec.authentication)"
	}
	ttl := "spec.tokenTTL"
	if after.Spec.TokenTTL != nil {
		ttl = fmt.Sprintf("%s, spec.tokenTTL", after.Spec.TokenTTL.Duration)
	}
	at := ""
	if t := st.LastRevocationTime; t != nil {
		at = " at " + t.UTC().Format(time.RFC3339)
	}
	_, err = fmt.Fprintf(out, "m2mclient/%s revoked%s: %s; %d earlier credential(s) are no longer accepted.\n"+
		"Pods that still hold an earlier credential are refused until they read Secret %s again.\n"+
		"Tokens already issued stay valid until they expire (at most %s).\n",
		key.Name, at, what, dropped, st.SecretName, ttl)
	return err
}

// annotateAndWait gives obj's annotation a new value and waits until done says that the status
// the manager wrote has acted on it; it returns the object as it then was. doing names the
// action in the error when the manager does not act in time.
func annotateAndWait(ctx context.Context, c client.Client, obj *m2mv1alpha1.M2MClient, annotation, doing string, timeout time.Duration, done func(st *m2mv1alpha1.M2MClientStatus, value string) bool) (*m2mv1alpha1.M2MClient, error) {
	key := client.ObjectKeyFromObject(obj)
	value := strconv.FormatInt(time.Now().UnixNano(), 10)
	base := obj.DeepCopy()
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	obj.Annotations[annotation] = value
	if err := c.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		return nil, err
	}
	var acted *m2mv1alpha1.M2MClient
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		obj, err := getClient(ctx, c, key)
		if err != nil {
			return false, err
		}
		if !done(&obj.Status, value) {
			return false, nil
		}
		acted = obj
		return true, nil
	})
	switch {
	case wait.Interrupted(err) && ctx.Err() == nil:
		return nil, fmt.Errorf("m2mclient/%s did not %s within %s; is the manager running?", key.Name, doing, timeout)
	case err != nil:
		return nil, err
	}
	return acted, nil
}
