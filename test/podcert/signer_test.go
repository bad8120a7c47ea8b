package podcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/podclientca"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

const signer = m2mv1alpha1.PodClientSignerName

// Kubernetes 1.37 serves PodCertificateRequests in certificates.k8s.io/v1 with no flag: the
// feature gate is GA and on, and the API version is on by default.
func TestTheTestAPIServerServesPodCertificateRequestsInCertificatesV1(t *testing.T) {
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	list, err := dc.ServerResourcesForGroupVersion(certificatesv1.SchemeGroupVersion.String())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range list.APIResources {
		names = append(names, r.Name)
	}
	if !slices.Contains(names, "podcertificaterequests") || !slices.Contains(names, "podcertificaterequests/status") {
		t.Fatalf("certificates.k8s.io/v1 serves %v", names)
	}
}

// The test acts as the kubelet only if the API server lets it do what a kubelet does, and holds
// it to a kubelet's limits (NodeRestriction).
func TestAKubeletRequestsACertificateForAPodOfItsNodeAndNotOfAnother(t *testing.T) {
	ns := testenv.Namespace(t, env.Client)
	kubeletA, nodeA := testenv.Kubelet(t, env, ns+"-a")
	kubeletB, nodeB := testenv.Kubelet(t, env, ns+"-b")
	pod := testenv.PodWithCertificate(t, env.Client, ns, "web-1", "web", signer, nodeA)
	if _, _, err := testenv.RequestPodCertificate(t, env, kubeletA, pod, nodeA, signer); err != nil {
		t.Fatalf("the pod's own node: %v", err)
	}
	_, _, err := testenv.RequestPodCertificate(t, env, kubeletB, pod, nodeB, signer)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "not the requesting node") && !strings.Contains(err.Error(), "not running on node") {
		t.Fatalf("node b asked for a certificate of a pod on node a: %v, want NodeRestriction's Forbidden", err)
	}
}

func TestAPodOfAServiceAccountAClientNamesGetsACertificateOfItsServiceAccountAloneFromThePublishedCA(t *testing.T) {
	ns := testenv.Namespace(t, env.Client)
	runManager(t, managerConfig, ns)
	podClient(t, env.Client, ns, "billing", false, "web")
	kubelet, node := testenv.Kubelet(t, env, ns)
	pod := testenv.PodWithCertificate(t, env.Client, ns, "web-1", "web", signer, node)
	req, key, err := testenv.RequestPodCertificate(t, env, kubelet, pod, node, signer)
	if err != nil {
		t.Fatal(err)
	}
	got, typ, reason := decided(t, req)
	if typ != certificatesv1.PodCertificateRequestConditionTypeIssued {
		t.Fatalf("%s %s: %v", typ, reason, got.Status.Conditions)
	}
	// The kubelet reads the certificate back, as it does to write the pod's volume.
	if err := kubelet.Get(context.Background(), client.ObjectKeyFromObject(req), got); err != nil {
		t.Fatal(err)
	}
	cert := leaf(t, got.Status.CertificateChain)
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://m2m.dev/ns/"+ns+"/sa/web" {
		t.Errorf("URI SANs %v, want exactly spiffe://m2m.dev/ns/%s/sa/web", cert.URIs, ns)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Errorf("other names: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage %v, want ClientAuth alone", cert.ExtKeyUsage)
	}
	if !sameKey(key.Public(), cert.PublicKey) {
		t.Error("the certificate is not of the key the kubelet made")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: publishedCAs(t), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("does not chain to the CA of ConfigMap %s: %v", caConfigMap, err)
	}
	if lifetime := cert.NotAfter.Sub(cert.NotBefore); lifetime > 24*time.Hour {
		t.Errorf("lives %s, more than a day", lifetime)
	}
}

func TestAPodOfAServiceAccountNoEnabledClientNamesIsDeniedWithTheReason(t *testing.T) {
	ns := testenv.Namespace(t, env.Client)
	runManager(t, managerConfig, ns)
	podClient(t, env.Client, ns, "billing", false, "web")
	podClient(t, env.Client, ns, "off", true, "batch")
	kubelet, node := testenv.Kubelet(t, env, ns)
	for sa, want := range map[string]string{"other": controllers.PodCertReasonServiceAccountNotNamed, "batch": controllers.PodCertReasonClientDisabled} {
		pod := testenv.PodWithCertificate(t, env.Client, ns, sa+"-1", sa, signer, node)
		req, _, err := testenv.RequestPodCertificate(t, env, kubelet, pod, node, signer)
		if err != nil {
			t.Fatal(err)
		}
		got, typ, reason := decided(t, req)
		if typ != certificatesv1.PodCertificateRequestConditionTypeDenied || reason != want {
			t.Errorf("ServiceAccount %s: %s %s, want Denied %s", sa, typ, reason, want)
		}
		if msg := got.Status.Conditions[0].Message; !strings.Contains(msg, `"`+sa+`"`) {
			t.Errorf("the denial %q does not name ServiceAccount %q", msg, sa)
		}
		if got.Status.CertificateChain != "" {
			t.Errorf("a denied request carries a certificate")
		}
	}
}

// ServiceAccounts in spec.authentication.podCertificates are names in the client's own
// namespace: a tenant who may write M2MClients in its namespace alone gets no certificate for
// another namespace's ServiceAccount by naming it, and cannot write a certificate itself.
func TestATenantCannotGetACertificateForAnotherNamespacesServiceAccount(t *testing.T) {
	ctx := context.Background()
	own := testenv.Namespace(t, env.Client)
	victim := testenv.Namespace(t, env.Client)
	runManager(t, managerConfig, own, victim)
	tenant := testenv.Tenant(t, env, own, testenv.GrantClients)
	podClient(t, tenant, own, "grab", false, "web")
	for _, name := range []string{victim + "/web", "system:serviceaccount:" + victim + ":web"} {
		obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: own, Name: "grab-qualified"}}
		obj.Spec.Authentication.PodCertificates = &m2mv1alpha1.PodCertificatePolicy{ServiceAccounts: []string{name}}
		if err := tenant.Create(ctx, obj); !apierrors.IsInvalid(err) {
			t.Errorf("a client naming ServiceAccount %q: %v, want Invalid", name, err)
		}
	}
	kubelet, node := testenv.Kubelet(t, env, own)
	pod := testenv.PodWithCertificate(t, env.Client, victim, "web-1", "web", signer, node)
	req, _, err := testenv.RequestPodCertificate(t, env, kubelet, pod, node, signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, typ, reason := decided(t, req); typ != certificatesv1.PodCertificateRequestConditionTypeDenied || reason != controllers.PodCertReasonServiceAccountNotNamed {
		t.Errorf("the victim's pod, its ServiceAccount named by the tenant's client only: %s %s, want Denied", typ, reason)
	}
	// Nor can the tenant ask for a certificate as if it were a kubelet.
	own2pod := testenv.PodWithCertificate(t, env.Client, own, "web-1", "web", signer, node)
	if _, _, err := testenv.RequestPodCertificate(t, env, tenant, own2pod, node, signer); !apierrors.IsForbidden(err) {
		t.Errorf("the tenant created a PodCertificateRequest: %v, want Forbidden", err)
	}
}

// The API server lets only who may "sign" for a signer write a request's status; the manager's
// RBAC grants that for m2m.dev/pod-client alone. A tenant who may even write the status of
// requests in its namespace cannot issue itself a certificate of the signer. The manager does
// not watch the namespace, so that the request stays pending for the tenant to try.
func TestATenantWhoMayWriteRequestStatusCannotIssueForTheSigner(t *testing.T) {
	ctx := context.Background()
	ns := testenv.Namespace(t, env.Client)
	kubelet, node := testenv.Kubelet(t, env, ns)
	pod := testenv.PodWithCertificate(t, env.Client, ns, "web-1", "web", signer, node)
	req, key, err := testenv.RequestPodCertificate(t, env, kubelet, pod, node, signer)
	if err != nil {
		t.Fatal(err)
	}
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pcr-status"}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"podcertificaterequests", "podcertificaterequests/status"},
		Verbs: []string{"get", "list", "watch", "update", "patch"},
	}}}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pcr-status"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tenant:" + ns + ":" + string(testenv.GrantClients)}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// A certificate from a CA of the tenant's own, for the request's key.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "web-1"}, NotBefore: now, NotAfter: now.Add(2 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{m2mv1alpha1.PodIdentity(ns, "web")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	var current certificatesv1.PodCertificateRequest
	if err := tenant.Get(ctx, client.ObjectKeyFromObject(req), &current); err != nil {
		t.Fatal(err)
	}
	current.Status.CertificateChain = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	current.Status.NotBefore, current.Status.NotAfter = &metav1.Time{Time: now}, &metav1.Time{Time: now.Add(2 * time.Hour)}
	current.Status.BeginRefreshAt = &metav1.Time{Time: now.Add(time.Hour)}
	current.Status.Conditions = []metav1.Condition{{Type: certificatesv1.PodCertificateRequestConditionTypeIssued, Status: metav1.ConditionTrue, Reason: "Issued", LastTransitionTime: metav1.Time{Time: now}}}
	err = tenant.Status().Update(ctx, &current)
	// The API server's status strategy refuses it as an invalid field (422), not a 403.
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), `not permitted to "sign" for signer "`+signer+`"`) {
		t.Fatalf("the tenant wrote an Issued status: %v, want a refusal for want of \"sign\"", err)
	}
}

// The signer writes nothing into a request of another signer, even when it runs with the rights
// to sign for every signer: it decides by the signer name, not by what RBAC happens to stop.
func TestARequestOfAnotherSignerIsLeftAlone(t *testing.T) {
	ns := testenv.Namespace(t, env.Client)
	runSerialManager(t, env.Config, ns) // an administrator's rights
	podClient(t, env.Client, ns, "billing", false, "web")
	kubelet, node := testenv.Kubelet(t, env, ns)
	ourPod := testenv.PodWithCertificate(t, env.Client, ns, "web-1", "web", signer, node)
	request := func(pod *corev1.Pod, signer string) *certificatesv1.PodCertificateRequest {
		req, _, err := testenv.RequestPodCertificate(t, env, kubelet, pod, node, signer)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	// Once a first request is decided, the signer watches; with one worker it takes the
	// requests it sees in order, so that the other signer's, stored before the last of ours,
	// would be decided before that one is.
	if _, typ, _ := decided(t, request(ourPod, signer)); typ != certificatesv1.PodCertificateRequestConditionTypeIssued {
		t.Fatalf("the signer's own request: %s", typ)
	}
	otherPod := testenv.PodWithCertificate(t, env.Client, ns, "web-other", "web", "example.com/other", node)
	other := request(otherPod, "example.com/other")
	if _, typ, _ := decided(t, request(ourPod, signer)); typ != certificatesv1.PodCertificateRequestConditionTypeIssued {
		t.Fatalf("the signer's own request: %s", typ)
	}
	var got certificatesv1.PodCertificateRequest
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(other), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Conditions) != 0 || got.Status.CertificateChain != "" {
		t.Errorf("the request of example.com/other has status %+v", got.Status)
	}
}

// The CA is stored, then published, then signs: the token server has the CA's certificate
// before any pod presents a certificate of it, even from a manager that starts with no CA.
func TestTheCAIsPublishedBeforeItSignsAnything(t *testing.T) {
	ctx := context.Background()
	for _, obj := range []client.Object{&corev1.ConfigMap{}, &corev1.Secret{}} {
		key := caConfigMap
		if _, ok := obj.(*corev1.Secret); ok {
			key = caSecret
		}
		obj.SetNamespace(key.Namespace)
		obj.SetName(key.Name)
		if err := env.Client.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
	}
	ns := testenv.Namespace(t, env.Client)
	configMaps, err := testenv.Record(ctx, env.Config, &corev1.ConfigMapList{}, caConfigMap.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	requests, err := testenv.Record(ctx, env.Config, &certificatesv1.PodCertificateRequestList{}, ns)
	if err != nil {
		t.Fatal(err)
	}
	podClient(t, env.Client, ns, "billing", false, "web")
	kubelet, node := testenv.Kubelet(t, env, ns)
	pod := testenv.PodWithCertificate(t, env.Client, ns, "web-1", "web", signer, node)
	req, _, err := testenv.RequestPodCertificate(t, env, kubelet, pod, node, signer)
	if err != nil {
		t.Fatal(err)
	}
	runManager(t, managerConfig, ns)
	if _, typ, _ := decided(t, req); typ != certificatesv1.PodCertificateRequestConditionTypeIssued {
		t.Fatalf("%s", typ)
	}
	issued := -1
	var cert *x509.Certificate
	reqs := requests()
	for i, v := range reqs {
		if r := v.Object.(*certificatesv1.PodCertificateRequest); r.Status.CertificateChain != "" {
			issued, cert = i, leaf(t, r.Status.CertificateChain)
			break
		}
	}
	if issued < 0 {
		t.Fatal("recorded no issued version of the request")
	}
	for _, v := range configMaps() {
		cm, ok := v.Object.(*corev1.ConfigMap)
		if !ok || cm.Name != caConfigMap.Name || v.RV > reqs[issued].RV {
			continue
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(cm.Data[podclientca.CertKey]))
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
			return
		}
	}
	t.Fatalf("no version of ConfigMap %s written before the certificate (resourceVersion %d) holds its CA", caConfigMap, reqs[issued].RV)
}

// The ConfigMap is what the token server trusts: the manager puts back its CA when someone edits
// the ConfigMap, or deletes it.
func TestTheManagerPutsBackAnEditedOrDeletedCAConfigMap(t *testing.T) {
	ctx := context.Background()
	ns := testenv.Namespace(t, env.Client)
	runManager(t, managerConfig, ns)
	var secret corev1.Secret
	testenv.Eventually(t, wait, func() error { return env.Client.Get(ctx, caSecret, &secret) })
	want := string(secret.Data[podclientca.CertKey])
	holdsCA := func() error {
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, caConfigMap, &cm); err != nil {
			return err
		}
		if cm.Data[podclientca.CertKey] != want {
			return fmt.Errorf("ca.crt is %q", cm.Data[podclientca.CertKey])
		}
		return nil
	}
	testenv.Eventually(t, wait, holdsCA)
	var cm corev1.ConfigMap
	if err := env.Client.Get(ctx, caConfigMap, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data[podclientca.CertKey] = "a CA of someone else"
	if err := env.Client.Update(ctx, &cm); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, holdsCA)
	if err := env.Client.Delete(ctx, &cm); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, holdsCA)
}
