// Command backend is the part of a SaaS backend that gives its customers M2M credentials
// (docs/saas.md): one M2MClient per customer in a namespace that holds nothing else, the secret
// read once from the credentials Secret and shown, never stored, and rotations that the customer
// completes once it has switched. It prints JSON, as the backend's API would answer its UI.
//
//	saas-backend [-kubeconfig FILE] [-namespace customers] create CUSTOMER
//	saas-backend [-kubeconfig FILE] [-namespace customers] rotate-start|rotate-complete|rotate-cancel CUSTOMER
//	saas-backend [-kubeconfig FILE] [-namespace customers] delete CUSTOMER
//
// In the cluster it runs as the ServiceAccount of config/samples/saas/rbac.yaml, with no
// kubeconfig. It needs only client-go.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
)

var m2mClients = schema.GroupVersionResource{Group: "m2m.dev", Version: "v1alpha1", Resource: "m2mclients"}

// The SaaS's API: the audience it checks in every token, and the scopes every customer's
// machine is given.
const apiAudience = "https://api.example.com"

var customerScopes = []any{"read:invoices", "write:invoices"}

// backend reaches the M2MClients and their Secrets in the customers' namespace.
type backend struct {
	clients dynamic.ResourceInterface
	secrets corev1client.SecretInterface
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file; empty means $KUBECONFIG, or the ServiceAccount's in a cluster")
	namespace := flag.String("namespace", "customers", "the namespace of the customers' clients, which holds nothing else")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: saas-backend [-kubeconfig FILE] [-namespace customers] create|rotate-start|rotate-complete|rotate-cancel|delete CUSTOMER")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	b, err := newBackend(*kubeconfig, *namespace)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var answer map[string]string
		if answer, err = b.run(ctx, flag.Arg(0), flag.Arg(1)); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(answer)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func newBackend(kubeconfig, namespace string) (*backend, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &backend{clients: dyn.Resource(m2mClients).Namespace(namespace), secrets: cs.CoreV1().Secrets(namespace)}, nil
}

func (b *backend) run(ctx context.Context, command, customer string) (map[string]string, error) {
	switch command {
	case "create":
		return b.create(ctx, customer)
	case "rotate-start":
		return b.startRotation(ctx, customer)
	case "rotate-complete":
		return b.endRotation(ctx, customer, "Completed")
	case "rotate-cancel":
		return b.endRotation(ctx, customer, "Cancelled")
	case "delete":
		return map[string]string{"deleted": customer}, b.clients.Delete(ctx, customer, metav1.DeleteOptions{})
	}
	return nil, fmt.Errorf("unknown command %q: create, rotate-start, rotate-complete, rotate-cancel or delete", command)
}

// create makes the customer's client, waits until it is Ready, and returns its credentials,
// read once from the Secret: the customer is shown them now, and the backend keeps no copy.
func (b *backend) create(ctx context.Context, customer string) (map[string]string, error) {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "m2m.dev/v1alpha1",
		"kind":       "M2MClient",
		"metadata":   map[string]any{"name": customer},
		"spec": map[string]any{
			"clientName": customer,
			"scopes":     customerScopes,
			"audiences":  []any{apiAudience},
			// The API reads the customer from each token, not from a table of client IDs.
			"tokenClaims": map[string]any{"customer": customer},
		},
	}}
	if _, err := b.clients.Create(ctx, obj, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("customer %s already has a client, whose secret was shown when it was created: start a rotation to give it a new one", customer)
	} else if err != nil {
		return nil, err
	}
	obj, err := b.waitFor(ctx, customer, func(obj *unstructured.Unstructured) bool {
		name, _, _ := unstructured.NestedString(obj.Object, "status", "secretName")
		return name != "" && ready(obj)
	})
	if err != nil {
		return nil, err
	}
	s, err := b.secretOf(ctx, obj)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		"client_id":     string(s.Data["client_id"]),
		"client_secret": string(s.Data["client_secret"]),
		// Behind a public door, token_url is the in-cluster Service's, for pods.
		"token_url": cmp.Or(string(s.Data["public_token_url"]), string(s.Data["token_url"])),
	}, nil
}

// startRotation issues the customer a next secret, accepted alongside the current one until the
// customer says it switched (rotate-complete), and returns it, read once from the Secret.
func (b *backend) startRotation(ctx context.Context, customer string) (map[string]string, error) {
	obj, err := b.clients.Get(ctx, customer, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if _, state := holderRotation(obj); state == "Started" {
		return nil, fmt.Errorf("customer %s has a rotation started: complete or cancel it first", customer)
	}
	id := rand.Text() // each rotation needs an id of its own
	if err := b.setHolderRotation(ctx, customer, id, "Started"); err != nil {
		return nil, err
	}
	obj, err = b.waitFor(ctx, customer, func(obj *unstructured.Unstructured) bool {
		got, state := holderRotation(obj)
		return got == id && state == "Started"
	})
	if err != nil {
		return nil, err
	}
	// The manager accepts the next secret before it writes it into the Secret: wait for the
	// one whose hash status names.
	nextHash, _, _ := unstructured.NestedString(obj.Object, "status", "holderRotation", "nextHash")
	var next string
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		s, err := b.secretOf(ctx, obj)
		if err != nil {
			return false, err
		}
		next = string(s.Data["next_client_secret"])
		sum := sha256.Sum256([]byte(next))
		return next != "" && "sha256:"+base64.RawURLEncoding.EncodeToString(sum[:]) == nextHash, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for customer %s's next secret: %w", customer, err)
	}
	clientID, _, _ := unstructured.NestedString(obj.Object, "status", "clientID")
	return map[string]string{"client_id": clientID, "next_client_secret": next}, nil
}

// endRotation completes the started rotation (the customer switched: its previous secret is
// refused at once) or cancels it (the next secret is refused, the current one kept).
func (b *backend) endRotation(ctx context.Context, customer, state string) (map[string]string, error) {
	obj, err := b.clients.Get(ctx, customer, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	id, current := holderRotation(obj)
	if current != "Started" {
		return nil, fmt.Errorf("customer %s has no rotation started", customer)
	}
	if err := b.setHolderRotation(ctx, customer, id, state); err != nil {
		return nil, err
	}
	if _, err := b.waitFor(ctx, customer, func(obj *unstructured.Unstructured) bool {
		got, now := holderRotation(obj)
		return got == id && now == state
	}); err != nil {
		return nil, err
	}
	return map[string]string{"customer": customer, "rotation": state}, nil
}

func (b *backend) setHolderRotation(ctx context.Context, customer, id, state string) error {
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"rotation": map[string]any{"holder": map[string]any{"id": id, "state": state}}}})
	if err != nil {
		return err
	}
	_, err = b.clients.Patch(ctx, customer, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// waitFor reads the customer's client until done says the manager has acted.
func (b *backend) waitFor(ctx context.Context, customer string, done func(*unstructured.Unstructured) bool) (*unstructured.Unstructured, error) {
	var obj *unstructured.Unstructured
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var err error
		if obj, err = b.clients.Get(ctx, customer, metav1.GetOptions{}); err != nil {
			return false, err
		}
		return done(obj), nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for customer %s's client (kubectl describe m2mclient %s says why): %w", customer, customer, err)
	}
	return obj, nil
}

func (b *backend) secretOf(ctx context.Context, obj *unstructured.Unstructured) (*corev1.Secret, error) {
	name, _, _ := unstructured.NestedString(obj.Object, "status", "secretName")
	if name == "" {
		return nil, errors.New("the client has no credentials Secret yet")
	}
	return b.secrets.Get(ctx, name, metav1.GetOptions{})
}

// holderRotation is the id and state of the rotation the manager last acted on.
func holderRotation(obj *unstructured.Unstructured) (id, state string) {
	id, _, _ = unstructured.NestedString(obj.Object, "status", "holderRotation", "id")
	state, _, _ = unstructured.NestedString(obj.Object, "status", "holderRotation", "state")
	return id, state
}

func ready(obj *unstructured.Unstructured) bool {
	conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conditions {
		if c, ok := c.(map[string]any); ok && c["type"] == "Ready" {
			return c["status"] == "True"
		}
	}
	return false
}
