package controllers

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// podCertAction is what the signer does with a PodCertificateRequest.
type podCertAction int

const (
	// podCertIgnore: not the signer's request, or already decided.
	podCertIgnore podCertAction = iota
	// podCertIssue signs a certificate.
	podCertIssue
	// podCertDeny sets Denied: the signer will never issue for this request.
	podCertDeny
	// podCertFail sets Failed: the request was fit, the signer cannot issue.
	podCertFail
)

// Reasons of the Denied and Failed conditions the signer sets, besides the API's
// InvalidUnverifiedUserAnnotations. The kubelet puts them into a Warning event on the pod.
const (
	PodCertReasonIssued                 = "Issued"
	PodCertReasonPodNotFound            = "PodNotFound"
	PodCertReasonPodReplaced            = "PodReplaced"
	PodCertReasonServiceAccountMismatch = "ServiceAccountMismatch"
	PodCertReasonNodeMismatch           = "NodeMismatch"
	PodCertReasonPodFinished            = "PodFinished"
	PodCertReasonServiceAccountNotNamed = "ServiceAccountNotNamed"
	PodCertReasonClientDisabled         = "ClientDisabled"
	PodCertReasonCAExpiring             = "CAExpiring"
)

// Lifetimes of pod certificates: the API lets a request ask for up to 91 days; the signer caps
// it at a day, as Kubernetes' own signers do, since nothing revokes a certificate.
const (
	podCertMaxLifetime = 24 * time.Hour
	// podCertBackdate covers clocks a little behind the manager's; the API server accepts a
	// notBefore within 5 minutes of its own time.
	podCertBackdate = time.Minute
)

// podCertInput is what decidePodCertificate decides on.
type podCertInput struct {
	Request *certificatesv1.PodCertificateRequest
	// Pod is the pod named by the request as the API server has it now; nil when it is gone.
	Pod *corev1.Pod
	// Clients are the M2MClients of the request's namespace.
	Clients    []m2mv1alpha1.M2MClient
	Now        time.Time
	CANotAfter time.Time
}

// podCertDecision is decidePodCertificate's verdict.
type podCertDecision struct {
	Action  podCertAction
	Reason  string
	Message string
	// NotBefore, NotAfter and BeginRefreshAt are the certificate's times, for podCertIssue.
	NotBefore, NotAfter, BeginRefreshAt time.Time
	// Clients are the enabled M2MClients that name the ServiceAccount, for podCertIssue.
	Clients []string
}

// decidePodCertificate decides a PodCertificateRequest: the signer m2m.dev/pod-client issues to
// a pod that still runs as the request says (same UID, ServiceAccount and node) when an enabled
// M2MClient of its namespace names its ServiceAccount, and denies otherwise with a reason that
// says which check failed. Requests of other signers, and decided ones, are not its to touch.
func decidePodCertificate(in podCertInput) podCertDecision {
	req := in.Request
	spec := &req.Spec
	if spec.SignerName != m2mv1alpha1.PodClientSignerName || podCertDecided(req) {
		return podCertDecision{Action: podCertIgnore}
	}
	deny := func(reason, format string, args ...any) podCertDecision {
		return podCertDecision{Action: podCertDeny, Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	if len(spec.UnverifiedUserAnnotations) > 0 {
		return deny(certificatesv1.PodCertificateRequestConditionInvalidUserConfig,
			"the signer %s takes no unverifiedUserAnnotations; the request has %s", m2mv1alpha1.PodClientSignerName, strings.Join(slices.Sorted(maps.Keys(spec.UnverifiedUserAnnotations)), ", "))
	}
	pod := in.Pod
	switch {
	case pod == nil:
		return deny(PodCertReasonPodNotFound, "pod %s/%s no longer exists", req.Namespace, spec.PodName)
	case pod.UID != spec.PodUID:
		return deny(PodCertReasonPodReplaced, "pod %s/%s is now another pod (UID %s, the request names %s)", req.Namespace, spec.PodName, pod.UID, spec.PodUID)
	case pod.Spec.ServiceAccountName != spec.ServiceAccountName:
		return deny(PodCertReasonServiceAccountMismatch, "pod %s/%s runs as ServiceAccount %q, the request names %q", req.Namespace, spec.PodName, pod.Spec.ServiceAccountName, spec.ServiceAccountName)
	case pod.Spec.NodeName != string(spec.NodeName):
		return deny(PodCertReasonNodeMismatch, "pod %s/%s is on node %q, the request comes for node %q", req.Namespace, spec.PodName, pod.Spec.NodeName, spec.NodeName)
	case pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return deny(PodCertReasonPodFinished, "pod %s/%s is being deleted or has finished", req.Namespace, spec.PodName)
	}
	var enabled, disabled []string
	for i := range in.Clients {
		c := &in.Clients[i]
		pc := c.Spec.Authentication.PodCertificates
		if pc == nil || !slices.Contains(pc.ServiceAccounts, spec.ServiceAccountName) || c.DeletionTimestamp != nil {
			continue
		}
		if c.Spec.Disabled {
			disabled = append(disabled, c.Name)
		} else {
			enabled = append(enabled, c.Name)
		}
	}
	if len(enabled) == 0 {
		if len(disabled) > 0 {
			slices.Sort(disabled)
			return deny(PodCertReasonClientDisabled, "ServiceAccount %q of namespace %s is named in spec.authentication.podCertificates.serviceAccounts only by disabled M2MClients (%s)", spec.ServiceAccountName, req.Namespace, strings.Join(disabled, ", "))
		}
		return deny(PodCertReasonServiceAccountNotNamed, "no M2MClient of namespace %s names ServiceAccount %q in spec.authentication.podCertificates.serviceAccounts", req.Namespace, spec.ServiceAccountName)
	}
	slices.Sort(enabled)
	lifetime := podCertMaxLifetime
	if m := spec.MaxExpirationSeconds; m != nil {
		lifetime = min(lifetime, time.Duration(*m)*time.Second)
	}
	// Certificates carry whole seconds, and the API server compares the status's times with the
	// certificate's.
	notBefore := in.Now.Add(-podCertBackdate).Truncate(time.Second).UTC()
	notAfter := notBefore.Add(lifetime)
	if notAfter.After(in.CANotAfter) {
		return podCertDecision{Action: podCertFail, Reason: PodCertReasonCAExpiring,
			Message: fmt.Sprintf("the signer's CA expires at %s, before a certificate of %s would", in.CANotAfter.UTC().Format(time.RFC3339), lifetime)}
	}
	return podCertDecision{
		Action: podCertIssue, Reason: PodCertReasonIssued,
		Message:   fmt.Sprintf("ServiceAccount %q is named by M2MClient %s", spec.ServiceAccountName, strings.Join(enabled, ", ")),
		NotBefore: notBefore, NotAfter: notAfter,
		// Half way, as the kubelet's own default: the API server wants it at least 10 minutes
		// after notBefore and before notAfter, and a lifetime is at least an hour.
		BeginRefreshAt: notBefore.Add(lifetime / 2),
		Clients:        enabled,
	}
}

// podCertDecided reports whether the request is Issued, Denied or Failed: its status is then
// immutable.
func podCertDecided(req *certificatesv1.PodCertificateRequest) bool {
	for _, c := range req.Status.Conditions {
		switch c.Type {
		case certificatesv1.PodCertificateRequestConditionTypeIssued, certificatesv1.PodCertificateRequestConditionTypeDenied, certificatesv1.PodCertificateRequestConditionTypeFailed:
			return true
		}
	}
	return false
}
