package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/m2m-dev/m2m-operator/internal/controlplane"
)

// config/default, rendered by kustomize (kubectl's, built with the control plane), is accepted
// by a real API server, object by object. Nothing runs the Pods: envtest has no nodes.
func TestTheProductionManifestsRenderAndAreAccepted(t *testing.T) {
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(controlplane.Root(), "config", "default")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(rendered), 4096)
	var kinds []string
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := env.Client.Patch(context.Background(), obj, client.Apply, client.FieldOwner("manifests-test"), client.ForceOwnership); err != nil {
			t.Fatalf("%s %s/%s was refused: %v", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
		}
		kinds = append(kinds, obj.GetKind()+"/"+obj.GetName())
	}
	for _, want := range []string{
		"CustomResourceDefinition/m2mclients.m2m.dev", "Namespace/m2m-system",
		"ServiceAccount/m2m-manager", "ServiceAccount/m2m-token-server",
		"ClusterRole/m2m-manager", "ClusterRole/m2m-token-server",
		"Deployment/m2m-manager", "Deployment/m2m-token-server",
		"Service/m2m-token-server", "PodDisruptionBudget/m2m-token-server",
	} {
		if !slices.Contains(kinds, want) {
			t.Errorf("config/default lacks %s; it has %v", want, kinds)
		}
	}
}
