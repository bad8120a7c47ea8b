package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// DefaultStatusPolicyName is the ValidatingAdmissionPolicy (and its binding) that lets only the
// manager write M2MClient status, as config/admission/status_writer.yaml names it. The chart
// names it after its release, so that two releases in one cluster have one each, and tells the
// manager the name (Options.StatusPolicyName, --status-policy-name).
const DefaultStatusPolicyName = "m2m-manager-writes-status"

// statusPolicyRecheck is how often the manager looks again whether the policy is installed: an
// administrator may add or remove it at any time, and no watch of admission policies is worth
// its cache for one object.
const statusPolicyRecheck = 5 * time.Minute

// StatusPolicyInstalled is 1 while the status-writer policy and its binding exist and deny, 0
// while they do not, and -1 while the manager may not read them (its rules are bound in watched
// namespaces only).
var StatusPolicyInstalled = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "m2m_manager_status_policy_installed",
	Help: "1 while the status-writer admission policy (--status-policy-name, m2m-manager-writes-status by default) and its Deny binding exist, 0 while they do not (anyone who may write M2MClient status can then store values that no client can decode, or delay its own rotations), -1 when the manager may not read them.",
})

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get

// statusPolicyCheck says loudly, at start-up and every statusPolicyRecheck, when the
// status-writer policy is missing: where it is, the docs' guarantees about status do not hold.
type statusPolicyCheck struct {
	reader client.Reader
	// name is the policy's and its binding's.
	name string
}

// Start implements manager.Runnable.
func (c *statusPolicyCheck) Start(ctx context.Context) error {
	t := time.NewTicker(statusPolicyRecheck)
	defer t.Stop()
	for {
		c.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check reads the policy and its binding, and sets StatusPolicyInstalled.
func (c *statusPolicyCheck) check(ctx context.Context) {
	logger := log.FromContext(ctx).WithName("status-policy")
	installed, err := c.installed(ctx)
	switch {
	case apierrors.IsForbidden(err):
		StatusPolicyInstalled.Set(-1)
		logger.V(1).Info("cannot read admission policies to check for " + c.name + " (the manager's rules are bound in watched namespaces only)")
	case err != nil:
		logger.Error(err, "checking for the status-writer admission policy")
	case installed:
		StatusPolicyInstalled.Set(1)
	default:
		StatusPolicyInstalled.Set(0)
		logger.Error(nil, "the admission policy "+c.name+" or its Deny binding is not installed: anyone who may write M2MClient status (often granted with m2m.dev \"*\") can store status the manager then discards or repairs, delay its own client's rotations, and put back earlier entries; install config/admission or the chart's policies (Kubernetes 1.30+)")
	}
}

func (c *statusPolicyCheck) installed(ctx context.Context) (bool, error) {
	key := types.NamespacedName{Name: c.name}
	if err := c.reader.Get(ctx, key, &admissionregistrationv1.ValidatingAdmissionPolicy{}); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	b := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	if err := c.reader.Get(ctx, key, b); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	for _, a := range b.Spec.ValidationActions {
		if a == admissionregistrationv1.Deny {
			return b.Spec.PolicyName == c.name, nil
		}
	}
	return false, nil
}
