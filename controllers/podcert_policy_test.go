package controllers

import (
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestDecidePodCertificate(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	caLong := now.Add(10 * 365 * 24 * time.Hour)
	request := func(edit ...func(*certificatesv1.PodCertificateRequest)) *certificatesv1.PodCertificateRequest {
		r := &certificatesv1.PodCertificateRequest{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "req"},
			Spec: certificatesv1.PodCertificateRequestSpec{
				SignerName: m2mv1alpha1.PodClientSignerName, PodName: "web-1", PodUID: "pod-uid",
				ServiceAccountName: "web", ServiceAccountUID: "sa-uid", NodeName: "node-a", NodeUID: "node-uid",
				MaxExpirationSeconds: ptr.To[int32](86400),
			},
		}
		for _, e := range edit {
			e(r)
		}
		return r
	}
	pod := func(uid, sa, node string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web-1", UID: types.UID(uid)},
			Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: node},
		}
	}
	thePod := pod("pod-uid", "web", "node-a")
	client := func(name string, disabled bool, sas ...string) m2mv1alpha1.M2MClient {
		c := m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name}}
		c.Spec.Disabled = disabled
		if sas != nil {
			c.Spec.Authentication.PodCertificates = &m2mv1alpha1.PodCertificatePolicy{ServiceAccounts: sas}
		}
		return c
	}
	naming := []m2mv1alpha1.M2MClient{client("billing", false, "web")}
	decided := func(typ string) func(*certificatesv1.PodCertificateRequest) {
		return func(r *certificatesv1.PodCertificateRequest) {
			r.Status.Conditions = []metav1.Condition{{Type: typ, Status: metav1.ConditionTrue, Reason: "X"}}
		}
	}
	replaced := pod("other-uid", "web", "node-a")
	terminating := pod("pod-uid", "web", "node-a")
	terminating.DeletionTimestamp = &metav1.Time{Time: now}
	finished := pod("pod-uid", "web", "node-a")
	finished.Status.Phase = corev1.PodSucceeded
	deleting := client("billing", false, "web")
	deleting.DeletionTimestamp = &metav1.Time{Time: now}

	for sentence, tc := range map[string]struct {
		req        *certificatesv1.PodCertificateRequest
		pod        *corev1.Pod
		clients    []m2mv1alpha1.M2MClient
		caNotAfter time.Time
		action     podCertAction
		reason     string
		// inMessage is a part of the message that says why.
		inMessage string
	}{
		"a pod of a ServiceAccount an enabled client names gets a certificate": {
			request(), thePod, naming, caLong, podCertIssue, PodCertReasonIssued, "billing"},
		"a pod of a ServiceAccount that no client names is denied, and the message names the ServiceAccount": {
			request(), thePod, []m2mv1alpha1.M2MClient{client("billing", false, "batch"), client("plain", false)}, caLong, podCertDeny, PodCertReasonServiceAccountNotNamed, `"web"`},
		"a pod in a namespace without clients is denied": {
			request(), thePod, nil, caLong, podCertDeny, PodCertReasonServiceAccountNotNamed, "spec.authentication.podCertificates.serviceAccounts"},
		"a ServiceAccount named only by a disabled client is denied, and the message names the client": {
			request(), thePod, []m2mv1alpha1.M2MClient{client("billing", true, "web")}, caLong, podCertDeny, PodCertReasonClientDisabled, "billing"},
		"a ServiceAccount named by a disabled and an enabled client gets a certificate": {
			request(), thePod, []m2mv1alpha1.M2MClient{client("a", true, "web"), client("b", false, "web")}, caLong, podCertIssue, PodCertReasonIssued, "b"},
		"a pod being deleted is denied": {
			request(), terminating, naming, caLong, podCertDeny, PodCertReasonPodFinished, "web-1"},
		"a pod that has finished is denied": {
			request(), finished, naming, caLong, podCertDeny, PodCertReasonPodFinished, "web-1"},
		"a client being deleted names no ServiceAccount": {
			request(), thePod, []m2mv1alpha1.M2MClient{deleting}, caLong, podCertDeny, PodCertReasonServiceAccountNotNamed, ""},
		"a request of another signer is left alone": {
			request(func(r *certificatesv1.PodCertificateRequest) { r.Spec.SignerName = "example.com/other" }), thePod, naming, caLong, podCertIgnore, "", ""},
		"a request of another signer is left alone even when no client names its ServiceAccount": {
			request(func(r *certificatesv1.PodCertificateRequest) { r.Spec.SignerName = "m2m.dev/pod-client-x" }), thePod, nil, caLong, podCertIgnore, "", ""},
		"an issued request is not decided again": {
			request(decided(certificatesv1.PodCertificateRequestConditionTypeIssued)), thePod, naming, caLong, podCertIgnore, "", ""},
		"a denied request is not decided again, even once a client names its ServiceAccount": {
			request(decided(certificatesv1.PodCertificateRequestConditionTypeDenied)), thePod, naming, caLong, podCertIgnore, "", ""},
		"a failed request is not decided again": {
			request(decided(certificatesv1.PodCertificateRequestConditionTypeFailed)), thePod, naming, caLong, podCertIgnore, "", ""},
		"a request for a pod that is gone is denied": {
			request(), nil, naming, caLong, podCertDeny, PodCertReasonPodNotFound, "web-1"},
		"a request for a pod since replaced by another of its name is denied": {
			request(), replaced, naming, caLong, podCertDeny, PodCertReasonPodReplaced, "other-uid"},
		"a request naming another ServiceAccount than the pod runs as is denied": {
			request(), pod("pod-uid", "admin", "node-a"), []m2mv1alpha1.M2MClient{client("c", false, "web", "admin")}, caLong, podCertDeny, PodCertReasonServiceAccountMismatch, `"admin"`},
		"a request from another node than the pod's is denied": {
			request(), pod("pod-uid", "web", "node-b"), naming, caLong, podCertDeny, PodCertReasonNodeMismatch, "node-b"},
		"a request with unverifiedUserAnnotations is denied, since the signer recognises none": {
			request(func(r *certificatesv1.PodCertificateRequest) {
				r.Spec.UnverifiedUserAnnotations = map[string]string{"example.com/role": "admin"}
			}), thePod, naming, caLong, podCertDeny, certificatesv1.PodCertificateRequestConditionInvalidUserConfig, "example.com/role"},
		"a CA that would expire before the certificate fails the request": {
			request(), thePod, naming, now.Add(time.Hour), podCertFail, PodCertReasonCAExpiring, "expires"},
	} {
		t.Run(sentence, func(t *testing.T) {
			d := decidePodCertificate(podCertInput{Request: tc.req, Pod: tc.pod, Clients: tc.clients, Now: now, CANotAfter: tc.caNotAfter})
			if d.Action != tc.action || d.Reason != tc.reason {
				t.Fatalf("action %d reason %q (%s), want action %d reason %q", d.Action, d.Reason, d.Message, tc.action, tc.reason)
			}
			if !strings.Contains(d.Message, tc.inMessage) {
				t.Errorf("message %q does not say %q", d.Message, tc.inMessage)
			}
		})
	}
}

func TestPodCertificateTimes(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	for sentence, tc := range map[string]struct {
		maxSeconds *int32
		lifetime   time.Duration
	}{
		"a request of a day gets a day":                            {ptr.To[int32](86400), 24 * time.Hour},
		"a request of the API's maximum, 91 days, gets a day":      {ptr.To[int32](7862400), 24 * time.Hour},
		"a request of the API's minimum, an hour, gets an hour":    {ptr.To[int32](3600), time.Hour},
		"a request of two hours gets two hours":                    {ptr.To[int32](7200), 2 * time.Hour},
		"a request without a maximum (never stored so) gets a day": {nil, 24 * time.Hour},
	} {
		t.Run(sentence, func(t *testing.T) {
			req := &certificatesv1.PodCertificateRequest{
				ObjectMeta: metav1.ObjectMeta{Namespace: "team"},
				Spec: certificatesv1.PodCertificateRequestSpec{
					SignerName: m2mv1alpha1.PodClientSignerName, PodName: "p", PodUID: "u", ServiceAccountName: "web", NodeName: "n",
					MaxExpirationSeconds: tc.maxSeconds,
				},
			}
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u"}, Spec: corev1.PodSpec{ServiceAccountName: "web", NodeName: "n"}}
			c := m2mv1alpha1.M2MClient{}
			c.Spec.Authentication.PodCertificates = &m2mv1alpha1.PodCertificatePolicy{ServiceAccounts: []string{"web"}}
			d := decidePodCertificate(podCertInput{Request: req, Pod: p, Clients: []m2mv1alpha1.M2MClient{c}, Now: now, CANotAfter: now.Add(1000 * time.Hour)})
			if d.Action != podCertIssue {
				t.Fatalf("action %d (%s), want an issue", d.Action, d.Message)
			}
			if got := d.NotAfter.Sub(d.NotBefore); got != tc.lifetime {
				t.Errorf("lifetime %s, want %s", got, tc.lifetime)
			}
			// The API server's rules on the status: notBefore within 5 minutes of its time,
			// whole seconds as in the certificate, beginRefreshAt at least 10 minutes from
			// either end.
			if d.NotBefore.After(now) || now.Sub(d.NotBefore) > 5*time.Minute || !d.NotBefore.Equal(d.NotBefore.Truncate(time.Second)) {
				t.Errorf("notBefore %s for now %s", d.NotBefore, now)
			}
			if d.BeginRefreshAt.Before(d.NotBefore.Add(10*time.Minute)) || d.BeginRefreshAt.After(d.NotAfter.Add(-10*time.Minute)) {
				t.Errorf("beginRefreshAt %s outside [notBefore+10m, notAfter-10m] of %s..%s", d.BeginRefreshAt, d.NotBefore, d.NotAfter)
			}
			if want := d.NotBefore.Add(tc.lifetime / 2); !d.BeginRefreshAt.Equal(want) {
				t.Errorf("beginRefreshAt %s, want half way, %s", d.BeginRefreshAt, want)
			}
		})
	}
}
