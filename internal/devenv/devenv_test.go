package devenv

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/m2m-dev/m2m-operator/internal/controlplane"
)

// The system behind `make dev` comes up with the samples Ready, the commands it prints get a
// token when pasted into a shell, and stopping it leaves no kubeconfig pointing at closed ports.
func TestTheDevSystemMakesTheSamplesReadyAndStopsCleanly(t *testing.T) {
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + l.Addr().String()
	l.Close()
	sys, err := Start(Options{Root: controlplane.Root(), StateDir: t.TempDir(), Assets: assets, IssuerURL: issuer, Out: &out})
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

	// Run the printed lines exactly as a person would paste them.
	script := strings.Join(sys.NextSteps(clients), "\n")
	for _, line := range sys.NextSteps(clients) {
		if !strings.Contains(out.String(), line) {
			t.Fatalf("the line %q is not printed", line)
		}
	}
	shell := exec.Command("bash", "-euo", "pipefail", "-c", script)
	shell.Env = os.Environ()
	got, err := shell.CombinedOutput()
	if err != nil {
		t.Fatalf("the printed commands failed: %v\n%s", err, got)
	}
	for _, want := range []string{clients[0].Status.ClientID, "Active", `"access_token":"`, `"token_type":"Bearer"`, `"keys":[{`} {
		if !strings.Contains(string(got), want) {
			t.Fatalf("the printed commands' output lacks %q:\n%s", want, got)
		}
	}

	stopped = true
	if err := sys.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sys.Kubeconfig); !os.IsNotExist(err) {
		t.Fatalf("the kubeconfig is still there after stopping: %v", err)
	}
}
