package devenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/m2m-dev/m2m-operator/internal/controlplane"
)

// The system behind `make dev` comes up with the samples Ready, its printed kubectl line works
// with its kubeconfig, and stopping it leaves no kubeconfig pointing at closed ports.
func TestTheDevSystemMakesTheSamplesReadyAndStopsCleanly(t *testing.T) {
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sys, err := Start(Options{Root: controlplane.Root(), StateDir: t.TempDir(), Assets: assets, IssuerURL: "http://127.0.0.1:8080", Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = sys.Stop()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clients, err := sys.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(clients) == 0 {
		t.Fatal("config/samples created no M2MClient")
	}
	for _, c := range clients {
		s := &corev1.Secret{}
		if err := sys.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.Status.SecretName}, s); err != nil {
			t.Fatalf("sample %s has no Secret: %v", c.Name, err)
		}
	}
	sys.PrintNextSteps(clients)
	if !strings.Contains(out.String(), sys.Kubeconfig) || !strings.Contains(out.String(), "get m2mclients") {
		t.Fatalf("the printed next steps lack the kubeconfig or a kubectl line:\n%s", out.String())
	}

	kubectl := exec.Command(sys.Kubectl(), "get", "m2mclients", "-A")
	kubectl.Env = append(os.Environ(), "KUBECONFIG="+sys.Kubeconfig)
	got, err := kubectl.CombinedOutput()
	if err != nil || !strings.Contains(string(got), clients[0].Status.ClientID) || !strings.Contains(string(got), "Active") {
		t.Fatalf("kubectl get m2mclients: %v\n%s", err, got)
	}

	stopped = true
	if err := sys.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sys.Kubeconfig); !os.IsNotExist(err) {
		t.Fatalf("the kubeconfig is still there after stopping: %v", err)
	}
}
