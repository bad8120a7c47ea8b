package testenv

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// NodeAuthorization makes the API server authorise and admit nodes' requests as a cluster does:
// the Node authorizer before RBAC, and the NodeRestriction admission plugin. A test that acts as
// a kubelet (Kubelet) is then held to what a kubelet may do: a PodCertificateRequest only for a
// pod bound to its node that mounts a podCertificate volume of the signer, with the pod's,
// ServiceAccount's and node's UIDs. The PodCertificateRequest API itself needs nothing: it is GA
// in Kubernetes 1.37 and served by default.
func NodeAuthorization(e *envtest.Environment) {
	args := e.ControlPlane.GetAPIServer().Configure()
	args.Set("authorization-mode", "Node", "RBAC")
	args.Append("enable-admission-plugins", "NodeRestriction")
}

// Kubelet creates the Node name and returns it with a client that impersonates its kubelet
// (system:node:<name>, group system:nodes), as a kubelet's client certificate authenticates it.
func Kubelet(t testing.TB, e *Env, name string) (client.Client, *corev1.Node) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := e.Client.Create(context.Background(), node); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:node:" + name, Groups: []string{"system:nodes", "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c, node
}

// PodWithCertificate creates a ServiceAccount sa (unless it exists) and a pod of it bound to node
// that mounts a podCertificate projected volume of signer, as a Deployment's pod is once the
// scheduler has placed it. It returns the pod as the API server has it.
func PodWithCertificate(t testing.TB, c client.Client, ns, name, sa, signer string, node *corev1.Node) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	account := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}
	if err := c.Create(ctx, account); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			NodeName:           node.Name,
			Containers:         []corev1.Container{{Name: "app", Image: "example.invalid/app"}},
			Volumes: []corev1.Volume{{Name: "m2m-client-cert", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{PodCertificate: &corev1.PodCertificateProjection{
					SignerName: signer, KeyType: "ECDSAP256", CredentialBundlePath: "credentialbundle.pem",
				}}},
			}}}},
		},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// RequestPodCertificate makes a key and creates, as kubelet (Kubelet's client), the
// PodCertificateRequest that the kubelet creates for pod's podCertificate volume of signer: an
// empty PKCS #10 request signed by the key (the proof of possession the API server checks),
// the pod's, its ServiceAccount's and node's names and UIDs. It returns the request as created
// and the private key, which never leaves the test.
func RequestPodCertificate(t testing.TB, e *Env, kubelet client.Client, pod *corev1.Pod, node *corev1.Node, signer string) (*certificatesv1.PodCertificateRequest, crypto.Signer, error) {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: pod.Spec.ServiceAccountName}, sa); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	req := &certificatesv1.PodCertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: pod.Namespace, GenerateName: "req-",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}},
		},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: signer,
			PodName:    pod.Name, PodUID: pod.UID,
			ServiceAccountName: sa.Name, ServiceAccountUID: sa.UID,
			NodeName: types.NodeName(node.Name), NodeUID: node.UID,
			MaxExpirationSeconds: ptr.To[int32](86400),
			StubPKCS10Request:    csr,
		},
	}
	return req, key, kubelet.Create(ctx, req)
}
