package tokenserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

// keyState is one loaded key set and its JWKS document, swapped in whole.
type keyState struct {
	set    *signingkeys.Set
	active *signingkeys.Key
	// header is the base64url JOSE header of tokens signed by active.
	header    string
	jwks      []byte
	etag      string
	loadedAt  time.Time
	published map[string]bool
	// status authenticates what the server trusts in M2MClient status; nil while the manager has
	// written no status keys (a version without MACs), which enforces nothing.
	status *statusmac.Set
	// dpopNonces make and check DPoP server nonces (dpopNonceSources).
	dpopNonces []dpop.NonceSource
}

// trustsClientID reports whether c's status.clientID may be believed. The MAC is verified once
// per object version and status key set (CachedClient.verdictsUnder).
func (st *keyState) trustsClientID(c *CachedClient) bool {
	return !st.status.Enforced() || c.verdictsUnder(st.status).clientID
}

// trustsEntry reports whether entry i of c's status may be believed.
func (st *keyState) trustsEntry(c *CachedClient, i int) bool {
	// Verified before enforcement too, so that the work is the same either way.
	ok := c.verdictsUnder(st.status).entries[i]
	return ok || !st.status.Enforced()
}

// KeySource gives the token server its signing keys.
type KeySource interface {
	current() *keyState
}

// SecretKeys follows the signing-key Secret with a get and a watch on that one Secret: the only
// Secret access the token server has. A Secret that does not parse is reported and ignored; the
// keys loaded before stay in use.
type SecretKeys struct {
	clientset kubernetes.Interface
	ref       types.NamespacedName
	clock     clock.PassiveClock
	// maxTokenAge bounds how long a retired key stays in the JWKS.
	maxTokenAge time.Duration
	state       atomic.Pointer[keyState]
	// loadErrors counts Secret versions that did not parse.
	loadErrors atomic.Int64
	// seen is the resourceVersion last loaded, and statusRaw the status keys as that version
	// held them; only Run's goroutine uses them.
	seen      string
	statusRaw []byte
}

// NewSecretKeys prepares a SecretKeys; Run loads and follows the Secret.
func NewSecretKeys(clientset kubernetes.Interface, ref types.NamespacedName, clk clock.PassiveClock, maxTokenAge time.Duration) *SecretKeys {
	return &SecretKeys{clientset: clientset, ref: ref, clock: clk, maxTokenAge: maxTokenAge}
}

func (k *SecretKeys) current() *keyState { return k.state.Load() }

// LoadErrors counts the Secret versions that did not load.
func (k *SecretKeys) LoadErrors() int64 { return k.loadErrors.Load() }

// Loaded reports whether a key set with an active key is loaded.
func (k *SecretKeys) Loaded() bool {
	st := k.state.Load()
	return st != nil && st.active != nil
}

// Run gets the Secret, then watches it, until ctx ends. Errors are retried with backoff.
func (k *SecretKeys) Run(ctx context.Context) {
	logger := log.FromContext(ctx).WithValues("secret", k.ref.String())
	// Without keys the server cannot be ready, so a failing API server is retried often.
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 5, Cap: 5 * time.Second}
	delay := backoff
	for ctx.Err() == nil {
		err := k.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			logger.Info("following the signing-key Secret; retrying", "error", err.Error())
		} else {
			delay = backoff // a watch that ran and ended normally is no failure
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay.Step()):
		}
	}
}

// follow gets the Secret and watches it from that version until the watch ends.
func (k *SecretKeys) follow(ctx context.Context) error {
	secrets := k.clientset.CoreV1().Secrets(k.ref.Namespace)
	from := "" // watch from now: the API server first sends the Secret, if it exists, as ADDED
	s, err := secrets.Get(ctx, k.ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		log.FromContext(ctx).Info("waiting for the manager to create the signing-key Secret", "secret", k.ref.String())
	case err != nil:
		return err
	default:
		k.load(ctx, s)
		from = s.ResourceVersion
	}
	w, err := secrets.Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", k.ref.Name).String(),
		ResourceVersion: from,
	})
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if s, ok := ev.Object.(*corev1.Secret); ok {
					k.load(ctx, s)
				}
			case watch.Deleted:
				// Keep signing with the keys in memory; the manager writes the Secret again.
				log.FromContext(ctx).Info("the signing-key Secret was deleted; keeping the loaded keys")
			case watch.Error:
				return apierrors.FromObject(ev.Object)
			}
		}
	}
}

func (k *SecretKeys) load(ctx context.Context, s *corev1.Secret) {
	if s.ResourceVersion != "" && s.ResourceVersion == k.seen {
		return // a watch that starts again may send the version already loaded
	}
	k.seen = s.ResourceVersion
	set, err := signingkeys.Parse(s.Data[signingkeys.DataKey])
	if err != nil {
		k.loadErrors.Add(1)
		log.FromContext(ctx).Error(err, "the signing-key Secret does not parse; keeping the keys loaded before", "resourceVersion", s.ResourceVersion)
		return
	}
	var status *statusmac.Set
	raw, hasStatus := s.Data[statusmac.DataKey]
	prev := k.state.Load()
	switch {
	case !hasStatus:
	case prev != nil && prev.status != nil && bytes.Equal(raw, k.statusRaw):
		// The status keys as loaded before (the Secret changed for a signing key): the same set,
		// so that the MAC verdicts memoized under it (CachedClient.verdictsUnder) still hold,
		// rather than every client's being verified again at its next request.
		status = prev.status
	default:
		if status, err = statusmac.Parse(raw); err != nil {
			k.loadErrors.Add(1)
			log.FromContext(ctx).Error(err, "the status keys do not parse; keeping the keys loaded before", "resourceVersion", s.ResourceVersion)
			return
		}
	}
	if prev != nil && prev.status.Enforced() && !status.Enforced() {
		// Enforcement is never undone by a Secret that lost it (an old manager, a restore).
		status = prev.status
		log.FromContext(ctx).Info("the signing-key Secret no longer enforces authenticated status; keeping the status keys loaded before")
	}
	st, err := newKeyState(set, status, k.clock.Now(), k.maxTokenAge)
	if err != nil {
		k.loadErrors.Add(1)
		log.FromContext(ctx).Error(err, "building the JWKS")
		return
	}
	k.state.Store(st)
	k.statusRaw = raw
	kid := ""
	if st.active != nil {
		kid = st.active.KID
	}
	log.FromContext(ctx).Info("loaded signing keys", "keys", len(set.Keys), "activeKid", kid, "resourceVersion", s.ResourceVersion)
}

func newKeyState(set *signingkeys.Set, status *statusmac.Set, now time.Time, maxTokenAge time.Duration) (*keyState, error) {
	jwks := set.Published(now, maxTokenAge)
	doc, err := json.Marshal(jwks)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(doc)
	published := map[string]bool{}
	for _, j := range jwks.Keys {
		published[j.KeyID] = true
	}
	var header string
	if active := set.Active(); active != nil {
		h, err := json.Marshal(map[string]string{"alg": string(active.Algorithm), "kid": active.KID, "typ": "at+jwt"})
		if err != nil {
			return nil, err
		}
		header = base64.RawURLEncoding.EncodeToString(h)
	}
	return &keyState{
		header:     header,
		set:        set,
		active:     set.Active(),
		jwks:       doc,
		etag:       `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`,
		loadedAt:   now,
		published:  published,
		status:     status,
		dpopNonces: dpopNonceSources(set),
	}, nil
}

// StaticKeys is a KeySource with a fixed key set, for tests and benchmarks.
type StaticKeys struct{ st *keyState }

// NewStaticKeys builds a StaticKeys from a set and status keys (nil enforces nothing).
func NewStaticKeys(set *signingkeys.Set, status *statusmac.Set, now time.Time) (*StaticKeys, error) {
	st, err := newKeyState(set, status, now, signingkeys.DefaultRetention)
	if err != nil {
		return nil, err
	}
	return &StaticKeys{st: st}, nil
}

func (s *StaticKeys) current() *keyState { return s.st }
