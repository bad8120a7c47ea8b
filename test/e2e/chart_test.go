package e2e

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// nonDefaultValues sets every value the chart has to something other than its default.
const nonDefaultValues = `
image: {repository: registry.example.com/m2m, tag: v9.9.9, pullPolicy: Always, pullSecrets: [regcred]}
issuerURL: https://m2m.example.com
signingAlgorithm: EdDSA
watchNamespaces: [team-a, team-b]
manager:
  replicas: 2
  logLevel: debug
  resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {memory: 128Mi}}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]}]}}}
  topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app.kubernetes.io/component: manager}}}]
  priorityClassName: system-cluster-critical
  podLabels: {team: platform}
  podAnnotations: {example.com/owner: platform}
tokenServer:
  replicas: 3
  logLevel: error
  defaultAudience: https://api.example.com
  federatedIssuers: [{issuer: https://token.actions.example.com}]
  trustedProxies: [10.0.0.0/8, fd00::/8]
  trustedProxyHeader: Forwarded
  failureLimit: {rate: 5, burst: 50}
  resources: {requests: {cpu: 200m, memory: 128Mi}, limits: {memory: 512Mi}}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
  priorityClassName: system-cluster-critical
  podLabels: {team: platform}
  podAnnotations: {example.com/owner: platform}
  podDisruptionBudget: {enabled: true, minAvailable: 2}
metrics: {scraperNamespaceLabel: example.com/prometheus}
`

func writeValues(t *testing.T, values string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(path, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// helm lint --strict passes with the default values and with every value changed.
func TestTheChartPassesHelmLintStrict(t *testing.T) {
	for name, args := range map[string][]string{
		"default values":     nil,
		"non-default values": {"-f", writeValues(t, nonDefaultValues)},
		"a public door":      {"-f", writeValues(t, publicDoorValues)},
	} {
		if out, err := helmCommand(t, append([]string{"lint", "--strict", chartDir()}, args...)...); err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
}

// A bad value fails at install time, with the value's path in the message.
func TestTheValuesSchemaRefusesBadValues(t *testing.T) {
	for _, bad := range []string{
		"tokenServer.replicas=two", "signingAlgorithm=HS256", "issuerURL=ftp://x", "manager.logLevel=loud",
		"image.pullPolicy=Sometimes", "watchNamespaces[0]=Team_A", "tokenServer.federatedIssuers[0].issuer=https://a,b",
		"tokenServr.replicas=2", "tokenServer.defaultAudience=123",
		"tokenServer.trustedProxies[0]=lb.example.com", "tokenServer.trustedProxyHeader=X-Real-IP", "tokenServer.failureLimit.burst=0",
		"previousIssuerURL=ftp://x", "publicDoor.host=https://auth.example.com", "publicDoor.host=auth.example.com:443",
		"publicDoor.host=Auth.example.com", "publicDoor.host=*.example.com", "publicDoor.host=192.0.2.1", "publicDoor.gatway.enabled=true",
		"publicDoor.gateway.parentRefs[0].namespace=Gateway_System", "publicDoor.gateway.parentRefs[0].port=0",
		"publicDoor.tls.certManager.issuerRef.kind=Vault", "publicDoor.tls.secretName=My_Secret", "publicDoor.ingress.annotations.a=1",
		"tokenServer.issuanceLimit.perMinute=-1", "tokenServer.issuanceLimit.burst=0",
		"tokenServer.podCertificates.enabled=yes", "tokenServer.podCertificates.enable=false",
	} {
		if out, err := helmCommand(t, "template", "m2m", chartDir(), "--set", bad); err == nil {
			t.Errorf("--set %s was accepted:\n%.300s", bad, out)
		}
	}
}

// normalized is obj with what legitimately differs between the chart and config/default taken
// out: the informational app.kubernetes.io/* and helm.sh/* labels of the object (selectors and
// pod labels stay), and the image (a release's tag against kustomize's latest).
func normalized(obj *unstructured.Unstructured) map[string]any {
	o := obj.DeepCopy()
	labels := o.GetLabels()
	for k := range labels {
		if strings.HasPrefix(k, "app.kubernetes.io/") || strings.HasPrefix(k, "helm.sh/") {
			delete(labels, k)
		}
	}
	o.SetLabels(labels)
	if len(labels) == 0 {
		unstructured.RemoveNestedField(o.Object, "metadata", "labels")
	}
	if containers, ok, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers"); ok {
		for _, c := range containers {
			delete(c.(map[string]any), "image")
		}
		_ = unstructured.SetNestedSlice(o.Object, containers, "spec", "template", "spec", "containers")
	}
	return o.Object
}

func objectKey(o *unstructured.Unstructured) string {
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// The chart's default rendering in m2m-system is config/default object by object, apart from
// the Namespace (Helm's --create-namespace makes it), the CRDs (crds/, a generated copy) and the
// differences normalized takes out.
func TestTheChartsDefaultRenderingIsConfigDefault(t *testing.T) {
	sameObjects(t, renderConfig(t, "default"), renderChart(t))
}

// sameObjects checks that a chart rendering has the objects of a config/ overlay's, each equal
// once normalized, apart from the Namespace and the CRDs.
func sameObjects(t *testing.T, config, chart []byte) {
	t.Helper()
	want := map[string]map[string]any{}
	for _, obj := range decodeObjects(t, config) {
		if obj.GetKind() != "Namespace" && obj.GetKind() != "CustomResourceDefinition" {
			want[objectKey(obj)] = normalized(obj)
		}
	}
	got := map[string]map[string]any{}
	for _, obj := range decodeObjects(t, chart) {
		got[objectKey(obj)] = normalized(obj)
	}
	for key, w := range want {
		g, ok := got[key]
		if !ok {
			t.Errorf("the chart lacks %s", key)
			continue
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s differs:\nchart:  %v\nconfig: %v", key, g, w)
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("the chart has %s, which config/ lacks", key)
		}
	}
}

// The chart installs onto the real API server in any namespace, with the default values and with
// every value changed: every object is accepted (namespaced ones stored, cluster-scoped ones
// checked with a server-side dry run), names follow the release namespace, and watchNamespaces
// binds the RBAC in those namespaces only.
func TestTheChartInstallsWithDefaultAndNonDefaultValues(t *testing.T) {
	ctx := context.Background()
	for name, args := range map[string][]string{
		"default values":     nil,
		"non-default values": {"-f", writeValues(t, nonDefaultValues)},
	} {
		t.Run(name, func(t *testing.T) {
			ns := namespace(t)
			for _, watched := range []string{"team-a", "team-b"} {
				if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: watched}}); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
			}
			objs := decodeObjects(t, renderChartIn(t, ns, args...))
			kinds := map[string]bool{}
			for _, obj := range objs {
				if obj.GetKind() == "Namespace" {
					t.Fatalf("the chart renders a Namespace (%s); Helm's --create-namespace is the convention", obj.GetName())
				}
				opts := []client.PatchOption{client.FieldOwner("chart-test"), client.ForceOwnership}
				if obj.GetNamespace() == "" {
					// Cluster-scoped objects share their names with the install this suite runs
					// on (its manager's bindings and status policy): the API server checks them
					// in full, and keeps them not.
					opts = append(opts, client.DryRunAll)
				}
				if err := env.Client.Patch(ctx, obj, client.Apply, opts...); err != nil {
					t.Fatalf("%s was refused: %v", objectKey(obj), err)
				}
				if ons := obj.GetNamespace(); ons != "" && ons != ns && !strings.HasPrefix(ons, "team-") {
					t.Errorf("%s is outside the release namespace", objectKey(obj))
				}
				kinds[objectKey(obj)] = true
			}
			rendered := string(renderChartIn(t, ns, args...))
			if strings.Contains(rendered, "m2m-system") {
				t.Error("the rendering names m2m-system; it must follow the release namespace")
			}
			if !strings.Contains(rendered, "system:serviceaccount:"+ns+":m2m-manager") {
				t.Error("the status policy does not name the manager of the release namespace")
			}
			if name == "non-default values" {
				for _, want := range []string{"RoleBinding team-a/m2m-manager", "RoleBinding team-b/m2m-token-server", "RoleBinding " + ns + "/m2m-manager"} {
					if !kinds[want] {
						t.Errorf("watchNamespaces: no %s", want)
					}
				}
				if kinds["ClusterRoleBinding /m2m-manager"] || kinds["ClusterRoleBinding /m2m-token-server"] {
					t.Error("watchNamespaces still binds the manager or the token server cluster-wide")
				}
				for _, want := range []string{"registry.example.com/m2m:v9.9.9", "--issuer-url=https://m2m.example.com", "--watch-namespaces=team-a,team-b", "--zap-log-level=debug", "--zap-log-level=error", "--signing-algorithm=EdDSA", "priorityClassName: system-cluster-critical", "regcred", "minAvailable: 2", "example.com/prometheus"} {
					if !strings.Contains(rendered, want) {
						t.Errorf("the rendering lacks %q", want)
					}
				}
			} else if !kinds["ClusterRoleBinding /m2m-manager"] || !strings.Contains(rendered, "--issuer-url=https://m2m-token-server."+ns+".svc") || !strings.Contains(rendered, "--tls-cert-file=") {
				t.Error("the default install does not bind the manager cluster-wide or derive the issuer from the release namespace")
			}
			opts := tokenServerOptions(t, []byte(rendered))
			if opts.IssuerURL == "" {
				t.Error("the token server has no issuer")
			}
		})
	}
}

// An upgrade never changes the issuer by itself (every resource server pins it): with issuerURL
// unset, the chart keeps the --issuer-url of the install it upgrades, an http one included, and
// then serves plain HTTP as that install did. A new install gets https. Helm renders against the
// real API server (helm template --dry-run=server), where its lookup sees the installed Deployment.
func TestAnUpgradeKeepsTheIssuerOfTheInstallItUpgrades(t *testing.T) {
	render := func(ns string) string {
		out, err := renderOnTheServer(t, ns)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	fresh := namespace(t)
	if out := render(fresh); !strings.Contains(out, "--issuer-url=https://m2m-token-server."+fresh+".svc") || !strings.Contains(out, "--tls-cert-file=") {
		t.Fatal("a new install is not https")
	}

	ns := namespace(t)
	old := "http://m2m-token-server." + ns + ".svc:8080"
	installedTokenServer(t, ns, old)
	out := render(ns)
	if strings.Count(out, "--issuer-url="+old) != 2 || strings.Contains(out, "--tls-cert-file=") || !strings.Contains(out, "port: 8080") {
		t.Fatalf("the upgrade does not keep the http issuer %s for the manager and the token server", old)
	}
}

// renderOnTheServer renders the chart as release m2m in ns against the real API server (helm
// template --dry-run=server), where Helm's lookup sees what is installed.
func renderOnTheServer(t *testing.T, ns string, args ...string) ([]byte, error) {
	t.Helper()
	return helmCommand(t, append([]string{"template", "m2m", chartDir(), "-n", ns, "--dry-run=server", "--kubeconfig", kubeconfigFile(t)}, args...)...)
}

// installedTokenServer stores in ns the token server Deployment of an earlier install whose
// issuer is issuer, for the chart's lookup to find.
func installedTokenServer(t *testing.T, ns, issuer string) {
	t.Helper()
	labels := map[string]string{"app.kubernetes.io/name": "m2m-operator", "app.kubernetes.io/component": "token-server"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m2m-token-server"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "token-server", Image: "ghcr.io/m2m-dev/m2m-operator:0.0.9", Args: []string{"--issuer-url=" + issuer, "--listen-address=:8080"},
			}}}},
		},
	}
	if err := env.Client.Create(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}

// A client-side render of an upgrade (helm template --is-upgrade, as GitOps tools do) cannot read
// the installed issuer, so it fails unless issuerURL is set, rather than change the issuer.
func TestAnUpgradeRenderedWithoutTheClusterNeedsTheIssuer(t *testing.T) {
	if out, err := helmCommand(t, "template", "m2m", chartDir(), "-n", "m2m-system", "--is-upgrade"); err == nil || !strings.Contains(err.Error(), "set issuerURL") {
		t.Fatalf("an upgrade rendered without the cluster and without issuerURL: %v\n%.200s", err, out)
	}
	if _, err := helmCommand(t, "template", "m2m", chartDir(), "-n", "m2m-system", "--is-upgrade", "--set", "issuerURL=https://m2m.example.com"); err != nil {
		t.Fatal(err)
	}
}
