package controlplane_test

import (
	"strings"
	"testing"

	"k8s.io/client-go/discovery"

	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// The control plane is built by hack/control-plane.sh with version ldflags, so that clients that
// check the server version (and envtest itself) see the pinned release.
func TestTheTestAPIServerReportsThePinnedKubernetesVersion(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.GitVersion, "v1.37.") || v.Major != "1" || v.Minor != "37" {
		t.Fatalf("server version %+v, want v1.37.x", v)
	}
}
