package controllers

import (
	"context"
	"errors"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// clientReconcile is one reconcile of an M2MClient: what the steps share. Each step reads what
// the steps before it left here and adds what it found or did.
type clientReconcile struct {
	r      *M2MClientReconciler
	obj    *m2mv1alpha1.M2MClient
	status *statusPatcher
	keys   *statusmac.Set
	now    time.Time
	// kind is the kind of credential the client's Secret carries, worked out once from the
	// spec; nil when it carries none.
	kind credentials.Kind
	// secret is the client's Secret, nil when there is none (ReadSecret; Credential replaces it
	// with what it wrote).
	secret *corev1.Secret
	// id is the client ID that this client holds the binding of (ClaimClientID).
	id string
	// wake is when something is due next: an expiry or a scheduled rotation (Expire).
	wake time.Time
	// persisted are told once the status that the reconcile ends with is written: what they
	// announce happened only then, not in a run that started from a stale copy and lost.
	persisted []func()
}

// stepResult says whether the reconcile goes on to the next step, or stops here, asking to be run
// again after requeueAfter (zero: when something changes).
type stepResult struct {
	stop         bool
	requeueAfter time.Duration
}

// proceed goes on to the next step.
var proceed = stepResult{}

// stopAndRequeue ends the reconcile; it runs again after d, or when something changes when d is
// zero.
func stopAndRequeue(d time.Duration) stepResult { return stepResult{stop: true, requeueAfter: d} }

// clientStep is one named step of reconciling an M2MClient.
type clientStep struct {
	name string
	run  func(*clientReconcile, context.Context) (stepResult, error)
}

// clientSteps are the steps, in order; only this list knows the order (test/layout checks that
// no step calls another). TrustStatus comes first, so that no step acts on status the manager
// did not write; the client ID is claimed before anything names it; ReconcileCredential accepts a
// credential in status before the Secret carries it; the Secret is synced before
// ExpireEntries removes what it no longer needs; and RestartTargets restarts the workloads that
// read it once, only when it carries the new credential.
var clientSteps = []clientStep{
	{"TrustStatus", (*clientReconcile).trustStatus},
	{"BoundValues", (*clientReconcile).boundValues},
	{"ReadSecret", (*clientReconcile).readSecret},
	{"ReadSource", (*clientReconcile).readSource},
	{"ClaimClientID", (*clientReconcile).claimClientID},
	{"ReconcileCredential", (*clientReconcile).reconcileCredential},
	{"SyncSecret", (*clientReconcile).syncSecret},
	{"ExpireEntries", (*clientReconcile).expireEntries},
	{"RestartTargets", (*clientReconcile).restartTargets},
}

// restartOnUnseenSecret is the step that a reconcile goes back to, once, with the Secret read
// from the API server, when creating the Secret found one of its name outside the cache.
const restartOnUnseenSecret = "ClaimClientID"

// errUnseenSecret says that creating the Secret failed because one of that name exists.
var errUnseenSecret = errors.New("a Secret of that name exists outside the cache")

// run runs the steps in order until one stops or fails, and then requeues for the moment the
// next expiry or rotation is due: reconcilers never poll.
func (c *clientReconcile) run(ctx context.Context) (ctrl.Result, error) {
	restarted := false
	for i := 0; i < len(clientSteps); i++ {
		out, err := clientSteps[i].run(c, ctx)
		if errors.Is(err, errUnseenSecret) && !restarted {
			// Decide again with the Secret that the cache does not hold.
			if c.secret, err = c.r.directSecret(ctx, c.obj); err != nil {
				return ctrl.Result{}, err
			}
			restarted = true
			i = slices.IndexFunc(clientSteps, func(s clientStep) bool { return s.name == restartOnUnseenSecret }) - 1
			continue
		}
		if err != nil {
			return ctrl.Result{}, err
		}
		if out.stop {
			log.FromContext(ctx).V(1).Info("reconcile stopped", "step", clientSteps[i].name)
			return ctrl.Result{RequeueAfter: out.requeueAfter}, nil
		}
	}
	if c.wake.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(c.wake.Sub(c.now), time.Millisecond)}, nil
}
