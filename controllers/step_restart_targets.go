package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// The manager may get and patch every Deployment, StatefulSet and DaemonSet it can reach (RBAC
// cannot name objects that do not exist yet); the opt-in annotation on the workload, which
// DecideRestart checks, is what limits it to those whose owners asked.
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get;patch

// restartTargetRecheck is how often a client with a target that was refused, missing or failed
// looks again: workloads are not watched (a watch of every workload of the cluster would cost
// the manager's memory for the few that opt in), so no event says when one has opted in.
const restartTargetRecheck = 30 * time.Second

// restartTargets restarts the targets of spec.rollout that opted in and were not restarted for
// the credential the Secret now carries, and reports them in RestartTargetsReady. It runs after
// SyncSecret: a pod restarted earlier could read the previous credential again.
func (c *clientReconcile) restartTargets(ctx context.Context) (stepResult, error) {
	obj := c.obj
	var targets []m2mv1alpha1.RestartTarget
	if obj.Spec.Rollout != nil {
		targets = obj.Spec.Rollout.RestartTargets
	}
	version := ""
	if c.kind != nil && c.secret != nil {
		version = RestartVersion(c.kind.Fingerprint(string(c.secret.Data[c.kind.DataKey()])))
	}
	if len(targets) == 0 || version == "" {
		// A client that authenticates without a credential in the Secret has nothing to
		// restart for.
		meta.RemoveStatusCondition(&obj.Status.Conditions, m2mv1alpha1.ConditionRestartTargetsReady)
		return proceed, nil
	}
	var restarted, refused, missing, failed []string
	var retry error
	for _, target := range targets {
		name := target.Kind + " " + target.Name
		d, err := c.r.restartTarget(ctx, obj, target, version)
		switch {
		case apierrors.IsConflict(err):
			// The workload changed since it was read: decide again with a fresh copy, not
			// a failure to report.
			return proceed, err
		case err != nil:
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
			retry = err
		case d.Action == RestartNow:
			restarted = append(restarted, name)
			c.r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, m2mv1alpha1.EventWorkloadRestarted, "Restart",
				"%s restarted for credential version %s: it %s", name, version, d.Why)
		case d.Action == RestartRefused:
			refused = append(refused, name+" "+d.Why)
		case d.Action == RestartMissing:
			missing = append(missing, name+" "+d.Why)
		}
	}
	before := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionRestartTargetsReady).DeepCopy()
	cond := metav1.Condition{Type: m2mv1alpha1.ConditionRestartTargetsReady, Status: metav1.ConditionFalse, ObservedGeneration: obj.Generation}
	switch {
	case len(failed) > 0:
		cond.Reason, cond.Message = m2mv1alpha1.ReasonRestartFailed, "could not restart "+strings.Join(failed, "; ")
	case len(refused) > 0:
		cond.Reason, cond.Message = m2mv1alpha1.ReasonRestartNotAllowed, "not restarted: "+strings.Join(refused, "; ")
	case len(missing) > 0:
		cond.Reason, cond.Message = m2mv1alpha1.ReasonRestartTargetNotFound, "not restarted: "+strings.Join(missing, "; ")
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, m2mv1alpha1.ReasonTargetsRestarted
		cond.Message = fmt.Sprintf("every restart target was restarted for credential version %s", version)
		if len(restarted) > 0 {
			cond.Message += " (now: " + strings.Join(restarted, ", ") + ")"
		}
	}
	meta.SetStatusCondition(&obj.Status.Conditions, cond)
	if cond.Status == metav1.ConditionFalse {
		if before == nil || before.Reason != cond.Reason {
			// Once the condition is written: a run that started from a stale copy loses its
			// status write and says nothing.
			c.persisted = append(c.persisted, func() {
				c.r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, cond.Reason, "Restart", "%s", cond.Message)
			})
		}
		if retry != nil {
			// Backoff, as for any failed write; the condition is written on the way out.
			return proceed, retry
		}
		if next := c.now.Add(restartTargetRecheck); c.wake.IsZero() || next.Before(c.wake) {
			c.wake = next
		}
	}
	return proceed, nil
}

// restartTarget reads the target straight from the API server (the manager caches no workloads),
// decides, and restarts it when DecideRestart says so: one patch of the pod template's annotation,
// which is both the restart and its record, with the resourceVersion read, so that two clients
// that restart one workload at once do not overwrite each other's record.
func (r *M2MClientReconciler) restartTarget(ctx context.Context, obj *m2mv1alpha1.M2MClient, target m2mv1alpha1.RestartTarget, version string) (RestartDecision, error) {
	w, template := newRestartWorkload(target.Kind)
	if w == nil {
		return RestartDecision{}, fmt.Errorf("kind %q is not Deployment, StatefulSet or DaemonSet", target.Kind)
	}
	seen := RestartWorkload{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: target.Name}, w)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return RestartDecision{}, err
	default:
		seen = RestartWorkload{
			Exists:   true,
			Deleting: !w.GetDeletionTimestamp().IsZero(),
			OptIn:    w.GetAnnotations()[m2mv1alpha1.RestartOnRotationAnnotation],
			Record:   template.Annotations[m2mv1alpha1.RestartedForAnnotation],
		}
	}
	d := DecideRestart(obj.Name, version, seen)
	if d.Action != RestartNow {
		return d, nil
	}
	base := w.DeepCopyObject().(client.Object)
	if template.Annotations == nil {
		template.Annotations = map[string]string{}
	}
	template.Annotations[m2mv1alpha1.RestartedForAnnotation] = d.Record
	if err := r.Patch(ctx, w, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return RestartDecision{}, err
	}
	return d, nil
}

// newRestartWorkload returns an empty workload of kind and its pod template, or nil for another
// kind (which the CRD refuses).
func newRestartWorkload(kind string) (client.Object, *corev1.PodTemplateSpec) {
	switch kind {
	case m2mv1alpha1.RestartKindDeployment:
		d := &appsv1.Deployment{}
		return d, &d.Spec.Template
	case m2mv1alpha1.RestartKindStatefulSet:
		s := &appsv1.StatefulSet{}
		return s, &s.Spec.Template
	case m2mv1alpha1.RestartKindDaemonSet:
		d := &appsv1.DaemonSet{}
		return d, &d.Spec.Template
	}
	return nil, nil
}
