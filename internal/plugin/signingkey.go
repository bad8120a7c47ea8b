package plugin

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// registerSigningKeyFlags registers the flags of rotate-signing-key.
func registerSigningKeyFlags(f *commandFlags, flags *pflag.FlagSet) {
	flags.BoolVar(&f.emergency, "emergency", false, "the keys may have been copied: remove every signing key from the JWKS now (tokens they signed stop verifying) and sign with a new one at once")
	flags.StringVar(&f.secret, "secret", signingkeys.DefaultSecret.Name, "the signing-key Secret (the manager's --signing-key-secret); -n is its namespace, "+signingkeys.DefaultSecret.Namespace+" by default")
	flags.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the manager to rotate")
}

// rotateSigningKey runs rotate-signing-key, which takes no argument. The Secret is in the
// install's namespace, not the kubeconfig's, unless -n says otherwise.
func (f *commandFlags) rotateSigningKey(ctx context.Context, out io.Writer, args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("%w: rotate-signing-key takes no argument", errUsage)
	}
	cfg, err := f.kube.ToRESTConfig()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		return err
	}
	return rotateSigningKey(ctx, c, out, f.signingKeySecret(), f.emergency, f.timeout)
}

// signingKeySecret is the Secret that --secret and -n name: the install's unless they say
// otherwise, whatever namespace the kubeconfig's context has.
func (f *commandFlags) signingKeySecret() types.NamespacedName {
	key := types.NamespacedName{Namespace: signingkeys.DefaultSecret.Namespace, Name: f.secret}
	if ns := f.kube.Namespace; ns != nil && *ns != "" {
		key.Namespace = *ns
	}
	return key
}

// rotateSigningKey asks the manager for a rotation of the signing keys in the Secret of key,
// with the annotation of its mode and a new value, waits until the manager has recorded that
// value as acted on (it does so in the write that rotates), and says what happens next.
func rotateSigningKey(ctx context.Context, c client.Client, out io.Writer, key types.NamespacedName, emergency bool, timeout time.Duration) error {
	before, _, err := readSigningKeys(ctx, c, key)
	if err != nil {
		return err
	}
	ask, done := keyring.RotateAnnotation, keyring.RotatedAnnotation
	if emergency {
		ask, done = keyring.EmergencyAnnotation, keyring.EmergencyRotatedAnnotation
	}
	value := strconv.FormatInt(time.Now().UnixNano(), 10)
	// Only the annotation is sent: a patch of metadata, never of the keys.
	patch := &corev1.Secret{}
	patch.Namespace, patch.Name = key.Namespace, key.Name
	body := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, ask, value)
	if err := c.Patch(ctx, patch, client.RawPatch(types.MergePatchType, []byte(body))); err != nil {
		return fmt.Errorf("annotating the signing-key Secret %s: %w", key, err)
	}
	var after *signingkeys.Set
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		set, s, err := readSigningKeys(ctx, c, key)
		switch {
		case ctx.Err() != nil:
			return false, nil // the timeout, which is reported below
		case err != nil || s.Annotations[done] != value:
			return false, err
		}
		after = set
		return true, nil
	})
	switch {
	case wait.Interrupted(err) && ctx.Err() == nil:
		return fmt.Errorf("the manager did not act on %s=%s of Secret %s within %s; is it running, and is %s its --signing-key-secret?", ask, value, key, timeout, key)
	case err != nil:
		return err
	}
	if emergency {
		return reportEmergency(out, before, after)
	}
	return reportPlanned(out, before, after)
}

// readSigningKeys reads and parses the signing-key Secret of key.
func readSigningKeys(ctx context.Context, c client.Client, key types.NamespacedName) (*signingkeys.Set, *corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := c.Get(ctx, key, s); err != nil {
		return nil, nil, fmt.Errorf("reading the signing-key Secret %s (set -n and --secret to the manager's --signing-key-secret): %w", key, err)
	}
	set, err := signingkeys.Parse(s.Data[signingkeys.DataKey])
	if err != nil {
		return nil, nil, fmt.Errorf("the signing-key Secret %s: %w; the manager leaves a Secret it cannot read as it is", key, err)
	}
	return set, s, nil
}

func reportPlanned(out io.Writer, before, after *signingkeys.Set) error {
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	active := after.Active()
	if old := before.Active(); old != nil && active.KID != old.KID {
		// A successor published long enough before the rotation was asked for signs at once.
		_, err := fmt.Fprintf(out, "planned rotation: key %s signs now; key %s retired and stays in the JWKS until every token it signed has expired\n", active.KID, old.KID)
		return err
	}
	for _, k := range after.Keys {
		if k.State == signingkeys.StateNext && k.SignsFrom != nil {
			_, err := fmt.Fprintf(out, "planned rotation: key %s is in the JWKS since %s and signs from %s; until then key %s signs, and after it stays in the JWKS until every token it signed has expired\n",
				k.KID, stamp(k.CreatedAt), stamp(*k.SignsFrom), active.KID)
			return err
		}
	}
	return fmt.Errorf("the manager acted on the rotation, but the signing-key Secret shows no successor of key %s; see the manager's log", active.KID)
}

func reportEmergency(out io.Writer, before, after *signingkeys.Set) error {
	var gone []string
	for _, k := range before.Keys {
		if after.Find(k.KID) == nil {
			gone = append(gone, fmt.Sprintf("%s (%s)", k.KID, k.State))
		}
	}
	_, err := fmt.Fprintf(out, "emergency rotation: key %s signs now, unpublished before.\n"+
		"Removed from the JWKS: %s. Resource servers refuse the tokens they signed once they fetch the JWKS again: "+
		"pkg/m2mauth within %s (its max-age), or sooner when it meets a token of %s: it fetches for an unknown key at most every 30s by default, "+
		"so for up to 30s it may refuse tokens of %s too. Workloads holding an older token get it refused until they fetch a new one.\n"+
		"The status keys rotate too: their successor signs in %s and every client's status is sealed again; no client's credentials change.\n",
		after.Active().KID, strings.Join(gone, ", "), signingkeys.JWKSMaxAge, after.Active().KID, after.Active().KID, statusmac.Prepublish)
	return err
}
