package plugin

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// holderStep is the step of a rotation that the holder completes which rotate's flags ask for
// (--start, --complete, --cancel), or "" for none; it is a usage error to ask for more than one,
// or for one with --revoke-previous.
func (f *commandFlags) holderStep() (m2mv1alpha1.HolderRotationState, error) {
	var step m2mv1alpha1.HolderRotationState
	n := 0
	for _, s := range []struct {
		set   bool
		state m2mv1alpha1.HolderRotationState
	}{{f.start, m2mv1alpha1.HolderRotationStarted}, {f.complete, m2mv1alpha1.HolderRotationCompleted}, {f.cancel, m2mv1alpha1.HolderRotationCancelled}, {f.revokePrevious, ""}} {
		if s.set {
			n++
			step = s.state
		}
	}
	if n > 1 {
		return "", fmt.Errorf("%w: --start, --complete, --cancel and --revoke-previous exclude each other", errUsage)
	}
	return step, nil
}

// rotateHolder sets spec.rotation.holder to step (a new id for Started, else the started one's)
// and waits until status says the manager acted on it. It prints where the next credential is,
// never the credential.
func rotateHolder(ctx context.Context, c client.Client, out io.Writer, key types.NamespacedName, step m2mv1alpha1.HolderRotationState, timeout time.Duration) error {
	obj, err := getClient(ctx, c, key)
	if err != nil {
		return err
	}
	id := strconv.FormatInt(time.Now().UnixNano(), 10)
	st := obj.Status.HolderRotation
	started := st != nil && st.State == m2mv1alpha1.HolderRotationStarted
	if step == m2mv1alpha1.HolderRotationStarted && started {
		return fmt.Errorf("m2mclient/%s already has rotation %s started; complete it with --complete or discard it with --cancel first", key.Name, st.ID)
	}
	if step != m2mv1alpha1.HolderRotationStarted {
		if !started {
			return fmt.Errorf("m2mclient/%s has no started rotation to %s; start one with --start", key.Name, map[m2mv1alpha1.HolderRotationState]string{m2mv1alpha1.HolderRotationCompleted: "complete", m2mv1alpha1.HolderRotationCancelled: "cancel"}[step])
		}
		id = st.ID
	}
	base := obj.DeepCopy()
	obj.Spec.Rotation.Holder = &m2mv1alpha1.HolderRotation{ID: id, State: step}
	if err := c.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		return err
	}
	var acted *m2mv1alpha1.M2MClient
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		got, err := getClient(ctx, c, key)
		if err != nil {
			return false, err
		}
		st := got.Status.HolderRotation
		if st == nil || st.ID != id || st.State != step {
			return false, nil
		}
		// The manager accepts the next credential before it writes the Secret: a start is done
		// once the Secret carries it. A caller who may not read the Secret waits for status.
		if step == m2mv1alpha1.HolderRotationStarted {
			if written, err := nextWritten(ctx, c, got); err != nil || !written {
				return false, err
			}
		}
		acted = got
		return true, nil
	})
	switch {
	case wait.Interrupted(err) && ctx.Err() == nil:
		return fmt.Errorf("m2mclient/%s did not act on rotation %s (%s) within %s; is the manager running? kubectl describe m2mclient %s shows why", key.Name, id, step, timeout, key.Name)
	case err != nil:
		return err
	}
	dataKey := m2mv1alpha1.SecretKeyClientSecret
	if m2mv1alpha1.KeyPairAuthentication(acted) != "" {
		dataKey = m2mv1alpha1.SecretKeyPrivateKey
	}
	secret := acted.Status.SecretName
	switch step {
	case m2mv1alpha1.HolderRotationStarted:
		_, err = fmt.Fprintf(out, "m2mclient/%s rotation %s started: the next credential is in Secret %s under %s%s; the current and the next one are both accepted until you run --complete (once the holder has switched) or --cancel.\n", key.Name, id, secret, m2mv1alpha1.NextSecretKeyPrefix, dataKey)
	case m2mv1alpha1.HolderRotationCompleted:
		_, err = fmt.Fprintf(out, "m2mclient/%s rotation %s completed: Secret %s carries the new credential under %s, and the previous one is no longer accepted.\n", key.Name, id, secret, dataKey)
	default:
		_, err = fmt.Fprintf(out, "m2mclient/%s rotation %s cancelled: the next credential is no longer accepted; the current one is unchanged.\n", key.Name, id)
	}
	return err
}

// nextWritten reports whether obj's Secret carries the next credential of its started rotation,
// or, for a caller who may not read the Secret, true.
func nextWritten(ctx context.Context, c client.Client, obj *m2mv1alpha1.M2MClient) (bool, error) {
	kind := credentials.KindOf(obj)
	if kind == nil {
		return true, nil
	}
	s := &corev1.Secret{}
	switch err := c.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: obj.Status.SecretName}, s); {
	case apierrors.IsForbidden(err):
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	v := string(s.Data[m2mv1alpha1.NextSecretKeyPrefix+kind.DataKey()])
	return v != "" && kind.Fingerprint(v) == obj.Status.HolderRotation.NextHash, nil
}
