package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
)

// renderConfig renders a kustomize directory under config/ with the kubectl built with the
// control plane.
func renderConfig(t *testing.T, dir string) []byte {
	t.Helper()
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(controlplane.Root(), "config", dir)).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/%s: %v", dir, err)
	}
	return rendered
}

// renderChart runs `helm template` on the chart in m2m-system with extra arguments (--set ...).
func renderChart(t *testing.T, args ...string) []byte {
	t.Helper()
	return renderChartIn(t, "m2m-system", args...)
}

// renderChartIn is renderChart for a release in namespace ns.
func renderChartIn(t *testing.T, ns string, args ...string) []byte {
	t.Helper()
	rendered, err := helmCommand(t, append([]string{"template", "m2m", chartDir(), "--namespace", ns}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return rendered
}

func chartDir() string { return filepath.Join(controlplane.Root(), "charts", "m2m-operator") }

// helmCommand runs the cached Helm and returns its output, or an error with its stderr.
func helmCommand(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	helm, err := controlplane.Helm()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %v: %v\n%s", args, err, stderr.String())
	}
	return out, nil
}

func decodeObjects(t *testing.T, rendered []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifests.Decode(rendered)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// podSpec returns the pod template of a Deployment in rendered manifests.
func podSpec(t *testing.T, rendered []byte, deployment string) corev1.PodSpec {
	t.Helper()
	for _, obj := range decodeObjects(t, rendered) {
		if obj.GetKind() != "Deployment" || obj.GetName() != deployment {
			continue
		}
		d := &appsv1.Deployment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, d); err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Spec
	}
	t.Fatalf("no Deployment %s", deployment)
	return corev1.PodSpec{}
}

// containerArgs returns the args of a Deployment's container in rendered manifests.
func containerArgs(t *testing.T, rendered []byte, deployment, container string) []string {
	t.Helper()
	for _, c := range podSpec(t, rendered, deployment).Containers {
		if c.Name == container {
			return c.Args
		}
	}
	t.Fatalf("no container %s in Deployment %s", container, deployment)
	return nil
}

// tokenServerOptions parses the token server's args in rendered manifests with the token
// server's own flag parser, so an unknown or malformed flag fails here and not in a cluster.
func tokenServerOptions(t *testing.T, rendered []byte) tokenserver.Options {
	t.Helper()
	// The binary's other flags: controller-runtime's --kubeconfig and the logging flags.
	fs := flag.NewFlagSet("token-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("kubeconfig", "", "")
	(&zap.Options{}).BindFlags(fs)
	o, err := tokenserver.ParseArgs(fs, containerArgs(t, rendered, "m2m-token-server", "token-server"))
	if err != nil {
		t.Fatalf("the token server would not start with the rendered args: %v", err)
	}
	return o
}

// config/default, rendered by kustomize (kubectl's, built with the control plane), is accepted
// by a real API server, object by object. Nothing runs the Pods: envtest has no nodes.
func TestTheProductionManifestsRenderAndAreAccepted(t *testing.T) {
	var kinds []string
	for _, obj := range decodeObjects(t, renderConfig(t, "default")) {
		if err := env.Client.Patch(context.Background(), obj, client.Apply, client.FieldOwner("manifests-test"), client.ForceOwnership); err != nil {
			t.Fatalf("%s %s/%s was refused: %v", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
		}
		if strings.HasPrefix(obj.GetKind(), "ValidatingAdmissionPolicy") {
			// The other tests of this suite store objects as a cluster without the policies would.
			t.Cleanup(func() { _ = env.Client.Delete(context.Background(), obj) })
		}
		kinds = append(kinds, obj.GetKind()+"/"+obj.GetName())
	}
	for _, want := range []string{
		"CustomResourceDefinition/m2mclients.m2m.dev", "Namespace/m2m-system",
		"ServiceAccount/m2m-manager", "ServiceAccount/m2m-token-server",
		"ClusterRole/m2m-manager", "ClusterRole/m2m-token-server",
		"Deployment/m2m-manager", "Deployment/m2m-token-server",
		"Service/m2m-token-server", "PodDisruptionBudget/m2m-token-server",
		"ValidatingAdmissionPolicy/m2m-reserved-token-claims", "ValidatingAdmissionPolicyBinding/m2m-reserved-token-claims",
		"ValidatingAdmissionPolicy/m2m-manager-writes-status", "ValidatingAdmissionPolicyBinding/m2m-manager-writes-status",
		"ValidatingAdmissionPolicy/m2m-namespace-scopes-and-audiences", "ValidatingAdmissionPolicy/m2m-namespace-issuance-limit", "ValidatingAdmissionPolicy/m2m-namespace-require-dpop", "ClusterRole/m2m-m2mclient-editor", "ClusterRole/m2m-m2mclient-viewer",
		"NetworkPolicy/m2m-token-server",
	} {
		if !slices.Contains(kinds, want) {
			t.Errorf("config/default lacks %s; it has %v", want, kinds)
		}
	}
}

// A client with no spec.audiences gets a token on every install: the token server of
// config/default and of the chart has a default audience, the issuer unless a value sets it.
func TestEveryInstallGivesClientsWithNoAudiencesTheIssuerOrTheConfiguredAudience(t *testing.T) {
	for sentence, tc := range map[string]struct {
		rendered    func(t *testing.T) []byte
		wantIssuer  string
		wantDefault string
	}{
		"config/default uses the issuer": {
			func(t *testing.T) []byte { return renderConfig(t, "default") },
			"https://m2m-token-server.m2m-system.svc", "https://m2m-token-server.m2m-system.svc",
		},
		"the chart with default values uses the issuer": {
			func(t *testing.T) []byte { return renderChart(t) },
			"https://m2m-token-server.m2m-system.svc", "https://m2m-token-server.m2m-system.svc",
		},
		"the chart follows a changed issuer": {
			func(t *testing.T) []byte { return renderChart(t, "--set", "issuerURL=https://m2m.example.com") },
			"https://m2m.example.com", "https://m2m.example.com",
		},
		"the chart passes a value that YAML would read as a number, set as a string": {
			func(t *testing.T) []byte { return renderChart(t, "--set-string", "tokenServer.defaultAudience=123") },
			"https://m2m-token-server.m2m-system.svc", "123",
		},
		"the chart passes tokenServer.defaultAudience on": {
			func(t *testing.T) []byte {
				return renderChart(t, "--set", "tokenServer.defaultAudience=https://api.example.com")
			},
			"https://m2m-token-server.m2m-system.svc", "https://api.example.com",
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			o := tokenServerOptions(t, tc.rendered(t))
			if len(o.FederatedIssuers) != 0 {
				t.Fatalf("federated issuers %+v without any configured", o.FederatedIssuers)
			}
			if o.IssuerURL != tc.wantIssuer {
				t.Fatalf("--issuer-url %q, want %q", o.IssuerURL, tc.wantIssuer)
			}
			if got, err := o.ResolvedDefaultAudience(); err != nil || got != tc.wantDefault {
				t.Fatalf("the default audience is %q (%v), want %q", got, err, tc.wantDefault)
			}
		})
	}
}

// The chart passes tokenServer.federatedIssuers to the token server, with and without a JWKS URL,
// as the flags its parser reads.
func TestTheChartPassesFederatedIssuers(t *testing.T) {
	o := tokenServerOptions(t, renderChart(t,
		"--set", "tokenServer.federatedIssuers[0].issuer=https://token.actions.example.com",
		"--set", "tokenServer.federatedIssuers[1].issuer=https://oidc.other.example",
		"--set", "tokenServer.federatedIssuers[1].jwksURL=https://keys.other.example/jwks"))
	want := []tokenserver.FederatedIssuer{{Issuer: "https://token.actions.example.com"}, {Issuer: "https://oidc.other.example", JWKSURL: "https://keys.other.example/jwks"}}
	if len(o.FederatedIssuers) != 2 || o.FederatedIssuers[0] != want[0] || o.FederatedIssuers[1] != want[1] {
		t.Fatalf("federated issuers %+v, want %+v", o.FederatedIssuers, want)
	}
}

// The chart passes tokenServer.trustedProxies, trustedProxyHeader, failureLimit and
// issuanceLimit to the token server as the flags its parser reads, and by default leaves the
// flags' defaults: the issuance limit on, the failure limit off.
func TestTheChartPassesTrustedProxiesAndTheLimits(t *testing.T) {
	o := tokenServerOptions(t, renderChart(t,
		"--set", "tokenServer.trustedProxies={10.0.0.0/8,fd00::/8}",
		"--set", "tokenServer.trustedProxyHeader=Forwarded",
		"--set-json", `tokenServer.failureLimit={"rate":0.5,"burst":20}`,
		"--set-json", `tokenServer.issuanceLimit={"perMinute":300,"burst":50}`))
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(o.ClientAddresses.Trusted, want) || o.ClientAddresses.Header != tokenserver.HeaderForwarded {
		t.Fatalf("client addresses %+v, want %v behind Forwarded", o.ClientAddresses, want)
	}
	if o.FailureLimit.Rate != 0.5 || o.FailureLimit.Burst != 20 {
		t.Fatalf("failure limit %+v, want rate 0.5 and burst 20", o.FailureLimit)
	}
	if o.IssuanceLimit != (tokenserver.IssuanceLimit{PerMinute: 300, Burst: 50}) {
		t.Fatalf("issuance limit %+v, want 300 a minute and 50 at once", o.IssuanceLimit)
	}
	if off := tokenServerOptions(t, renderChart(t, "--set", "tokenServer.issuanceLimit.perMinute=0")); off.IssuanceLimit.PerMinute != 0 {
		t.Fatalf("perMinute 0 left the issuance limit at %+v, want it off", off.IssuanceLimit)
	}
	d := tokenServerOptions(t, renderChart(t))
	if len(d.ClientAddresses.Trusted) != 0 || d.FailureLimit.Rate != tokenserver.DefaultFailureRate || d.FailureLimit.Burst != tokenserver.DefaultFailureBurst {
		t.Fatalf("by default: %+v %+v", d.ClientAddresses, d.FailureLimit)
	}
	if d.IssuanceLimit != tokenserver.DefaultIssuanceLimit {
		t.Fatalf("by default the issuance limit is %+v, want %+v", d.IssuanceLimit, tokenserver.DefaultIssuanceLimit)
	}
}

// Pod certificates work on every TLS install by default: the token server of config/default and
// of the chart reads --client-ca-file from the ConfigMap m2m-pod-client-ca, mounted as optional
// (a cluster where the signer does not run has none, and the pod must start there). The value
// tokenServer.podCertificates.enabled=false, or a plain-HTTP install, leaves both out.
func TestEveryTLSInstallMountsThePodClientCAAsOptionalAndPassesItUnlessTurnedOff(t *testing.T) {
	const file = "/etc/m2m/pod-client-ca/ca.crt"
	for sentence, tc := range map[string]struct {
		rendered func(t *testing.T) []byte
		want     bool
	}{
		"config/default":                      {func(t *testing.T) []byte { return renderConfig(t, "default") }, true},
		"the chart with default values":       {func(t *testing.T) []byte { return renderChart(t) }, true},
		"the chart with the value turned off": {func(t *testing.T) []byte { return renderChart(t, "--set", "tokenServer.podCertificates.enabled=false") }, false},
		"the chart serving plain HTTP": {func(t *testing.T) []byte {
			return renderChart(t, "--set", "tls.enabled=false", "--set", "issuerURL=http://m2m-token-server.m2m-system.svc:8080")
		}, false},
	} {
		t.Run(sentence, func(t *testing.T) {
			rendered := tc.rendered(t)
			got := tokenServerOptions(t, rendered).ClientCAFile
			if tc.want && got != file || !tc.want && got != "" {
				t.Fatalf("--client-ca-file %q, want it %v at %s", got, tc.want, file)
			}
			spec := podSpec(t, rendered, "m2m-token-server")
			var volume string
			for _, v := range spec.Volumes {
				if v.ConfigMap != nil && v.ConfigMap.Name == "m2m-pod-client-ca" {
					if v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional {
						t.Errorf("the ConfigMap m2m-pod-client-ca is mounted as required: the pod would not start where the signer does not run")
					}
					volume = v.Name
				}
			}
			var mountedAt string
			for _, c := range spec.Containers {
				for _, m := range c.VolumeMounts {
					if volume != "" && m.Name == volume && c.Name == "token-server" {
						mountedAt = m.MountPath
					}
				}
			}
			if tc.want && mountedAt+"/ca.crt" != file || !tc.want && volume != "" {
				t.Fatalf("the ConfigMap is volume %q mounted at %q; want it %v at the directory of %s", volume, mountedAt, tc.want, file)
			}
		})
	}
}

// The roles that aggregate into Kubernetes' edit, admin and view grant M2MClients and never their
// status, which only the manager writes.
func TestTheAggregatedUserRolesNeverGrantStatus(t *testing.T) {
	want := map[string][]string{
		"m2m-m2mclient-editor": {"rbac.authorization.k8s.io/aggregate-to-edit", "rbac.authorization.k8s.io/aggregate-to-admin"},
		"m2m-m2mclient-viewer": {"rbac.authorization.k8s.io/aggregate-to-view"},
	}
	for _, obj := range decodeObjects(t, renderConfig(t, "default")) {
		labels, ok := want[obj.GetName()]
		if obj.GetKind() != "ClusterRole" || !ok {
			continue
		}
		delete(want, obj.GetName())
		for _, l := range labels {
			if obj.GetLabels()[l] != "true" {
				t.Errorf("%s lacks the label %s", obj.GetName(), l)
			}
		}
		rules, _, _ := unstructured.NestedSlice(obj.Object, "rules")
		for _, r := range rules {
			resources, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
			for _, res := range resources {
				if res != "m2mclients" {
					t.Errorf("%s grants %s", obj.GetName(), res)
				}
			}
		}
	}
	if len(want) > 0 {
		t.Fatalf("config/default lacks %v", want)
	}
}

// Any workload may reach the token port (and the kubelet the manager's probes); only namespaces
// labelled as scrapers reach the metrics ports, whose series name clients and failure reasons.
func TestTheNetworkPoliciesOpenMetricsToScrapersOnly(t *testing.T) {
	seen := 0
	for _, obj := range decodeObjects(t, renderConfig(t, "default")) {
		if obj.GetKind() != "NetworkPolicy" {
			continue
		}
		seen++
		np := &networkingv1.NetworkPolicy{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, np); err != nil {
			t.Fatal(err)
		}
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				switch p.Port.String() {
				case "http", "https", "probes":
					if len(rule.From) != 0 {
						t.Errorf("%s: port %s is limited to %v", obj.GetName(), p.Port.String(), rule.From)
					}
				case "metrics":
					if len(rule.From) != 1 || rule.From[0].NamespaceSelector == nil || rule.From[0].NamespaceSelector.MatchLabels["m2m.dev/metrics-scraper"] != "true" || rule.From[0].PodSelector != nil {
						t.Errorf("the metrics port is open to %v", rule.From)
					}
				default:
					t.Errorf("%s opens port %s", obj.GetName(), p.Port.String())
				}
			}
		}
	}
	if seen != 2 {
		t.Fatalf("config/default has %d NetworkPolicies; want the token server's and the manager's", seen)
	}
}

// tokenServer.dpop.nonce passes --dpop-nonce, which the token server's own parser reads; the
// default leaves nonces off.
func TestTheChartsDPoPNonceValueTurnsOnServerNonces(t *testing.T) {
	if tokenServerOptions(t, renderChart(t)).DPoPNonces {
		t.Fatal("the chart's defaults require DPoP nonces")
	}
	if !tokenServerOptions(t, renderChart(t, "--set", "tokenServer.dpop.nonce=true")).DPoPNonces {
		t.Fatal("tokenServer.dpop.nonce=true does not require DPoP nonces")
	}
}
