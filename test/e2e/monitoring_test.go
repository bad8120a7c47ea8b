package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

var (
	metricName = regexp.MustCompile(`\bm2m_[a-z0-9_]+\b`)
	fqName     = regexp.MustCompile(`fqName: "([^"]+)"`)
)

// family is a sample name's metric family: a histogram's _bucket, _sum and _count are its own.
func family(name string, known map[string]bool) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && known[base] {
			return base
		}
	}
	return name
}

// knownMetrics are the metric families the token server serves (read from its /metrics after a
// token and a failure, so that its vectors have series) and those the manager registers.
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	s := readyClient(t, billingClient(namespace(t), "monitored"))
	testenv.Eventually(t, wait, func() error {
		_, err := credentialsOf(s).Token(context.Background())
		return err
	})
	postToken(t, "application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=m2m-nobody&client_secret=x")
	known := map[string]bool{}
	for _, line := range metricsLines(t) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			known[f[2]] = true
		}
	}
	descs := make(chan *prometheus.Desc, 64)
	for _, c := range []prometheus.Collector{controllers.Rotations, controllers.RotationFailures, controllers.FleetErrors, &controllers.FleetCollector{}} {
		c.Describe(descs)
	}
	close(descs)
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			known[m[1]] = true
		}
	}
	return known
}

// Every metric that the Grafana dashboard and the alerts query exists, in the token server's or
// the manager's metrics: a renamed metric fails here, not on a dashboard nobody looks at.
func TestEveryMetricTheDashboardAndTheAlertsQueryExists(t *testing.T) {
	known := knownMetrics(t)
	root := controlplane.Root()
	var exprs []string
	raw, err := os.ReadFile(filepath.Join(root, "config", "grafana", "m2m-operator.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	rules := 0
	for _, obj := range decodeObjects(t, renderConfig(t, "prometheus")) {
		if obj.GetKind() != "PrometheusRule" {
			continue
		}
		groups, _, _ := unstructured.NestedSlice(obj.Object, "spec", "groups")
		for _, g := range groups {
			for _, r := range g.(map[string]any)["rules"].([]any) {
				exprs = append(exprs, r.(map[string]any)["expr"].(string))
				rules++
			}
		}
	}
	if len(exprs) < 10 || rules < 5 {
		t.Fatalf("only %d queries and %d alerts found", len(exprs), rules)
	}
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			if !known[family(name, known)] {
				t.Errorf("%q queries %s, which no component serves", e, name)
			}
		}
	}
}

// The manager's metrics describe the running system: clients by state and reason, the signing
// key's age, rotations by cause, and a rotated secret in its (one-hour) grace period as expiring
// within the hour.
func TestTheManagerReportsItsClientsRotationsAndSigningKey(t *testing.T) {
	obj := billingClient(namespace(t), "counted")
	readyClient(t, obj)
	triggered := testutil.ToFloat64(controllers.Rotations.WithLabelValues("Trigger"))
	o := &m2mv1alpha1.M2MClient{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), o); err != nil {
		t.Fatal(err)
	}
	o.Spec.Rotation.Trigger = "metrics-test"
	if err := env.Client.Update(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if testutil.ToFloat64(controllers.Rotations.WithLabelValues("Trigger")) <= triggered {
			return fmt.Errorf("m2m_manager_rotations_total{cause=\"Trigger\"} did not grow")
		}
		return nil
	})
	// The gauges read the manager's cache, which sees the grace period a moment after the rotation.
	testenv.Eventually(t, wait, func() error {
		families, err := metrics.Registry.Gather()
		if err != nil {
			return err
		}
		var ready, keyAge, expiring float64
		for _, f := range families {
			for _, m := range f.GetMetric() {
				switch f.GetName() {
				case "m2m_manager_clients":
					labels := map[string]string{}
					for _, l := range m.GetLabel() {
						labels[l.GetName()] = l.GetValue()
					}
					if labels["state"] == "Active" && labels["reason"] == "CredentialsReady" {
						ready = m.GetGauge().GetValue()
					}
				case "m2m_manager_signing_key_age_seconds":
					keyAge = m.GetGauge().GetValue()
				case "m2m_manager_credentials_expiring_within_hour":
					expiring = m.GetGauge().GetValue()
				}
			}
		}
		if ready < 1 || keyAge <= 0 || expiring < 1 {
			return fmt.Errorf("m2m_manager_clients{Active,CredentialsReady} = %v, signing key age %v, expiring within the hour %v", ready, keyAge, expiring)
		}
		return nil
	})
}

// installOptionalCRDs installs the Prometheus Operator's, cert-manager's and the Gateway API's
// CRDs that hack/optional-crds.sh builds, and waits until they serve.
func installOptionalCRDs(t *testing.T) {
	t.Helper()
	dir, err := controlplane.OptionalCRDs()
	if err != nil {
		t.Fatal(err)
	}
	crds, err := manifests.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, crd := range crds {
		if err := env.Client.Patch(ctx, crd, client.Apply, client.FieldOwner("optional-crds"), client.ForceOwnership); err != nil {
			t.Fatalf("%s: %v", crd.GetName(), err)
		}
	}
	for _, crd := range crds {
		testenv.Eventually(t, wait, func() error {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(crd.GroupVersionKind())
			if err := env.Client.Get(ctx, client.ObjectKey{Name: crd.GetName()}, got); err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				if m := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return fmt.Errorf("%s is not established", crd.GetName())
		})
	}
}

// config/prometheus and the chart's monitoring switches are accepted by a real API server with
// the Prometheus Operator's CRDs (generated from its pinned API types): the ServiceMonitor, the
// PrometheusRule and the metrics Service, in a fresh namespace.
func TestTheMonitoringObjectsAreAcceptedWithThePrometheusOperatorsCRDs(t *testing.T) {
	installOptionalCRDs(t)
	ctx := context.Background()
	for name, rendered := range map[string]func(ns string) []byte{
		"config/prometheus": func(string) []byte { return renderConfig(t, "prometheus") },
		"the chart": func(ns string) []byte {
			return renderChartIn(t, ns, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true")
		},
	} {
		ns := namespace(t)
		kinds := map[string]bool{}
		for _, obj := range decodeObjects(t, rendered(ns)) {
			if obj.GetAPIVersion() != "monitoring.coreos.com/v1" && obj.GetName() != "m2m-metrics" {
				continue
			}
			obj.SetNamespace(ns)
			if err := env.Client.Patch(ctx, obj, client.Apply, client.FieldOwner("monitoring-test"), client.ForceOwnership); err != nil {
				t.Fatalf("%s: %s was refused: %v", name, objectKey(obj), err)
			}
			kinds[obj.GetKind()] = true
		}
		for _, want := range []string{"ServiceMonitor", "PrometheusRule", "Service"} {
			if !kinds[want] {
				t.Errorf("%s has no %s", name, want)
			}
		}
	}
}

// With cert-manager, config/cert-manager and the chart's tls.certManager switch give the token
// server a Certificate that the real cert-manager CRD accepts, and the manager takes the CA bundle
// from its Secret instead of issuing a certificate of its own.
func TestTheCertManagerCertificateIsAcceptedAndTheManagerTakesItsCA(t *testing.T) {
	installOptionalCRDs(t)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		rendered func(ns string) []byte
		manager  string
	}{
		"config/cert-manager": {func(string) []byte { return renderConfig(t, "cert-manager") }, "m2m-system"},
		"the chart": {func(ns string) []byte {
			return renderChartIn(t, ns, "--set", "tls.certManager.enabled=true", "--set", "tls.certManager.issuerRef.name=m2m-ca-issuer")
		}, ""},
	} {
		ns := namespace(t)
		rendered := tc.rendered(ns)
		found := false
		for _, obj := range decodeObjects(t, rendered) {
			if obj.GetKind() != "Certificate" {
				continue
			}
			obj.SetNamespace(ns)
			if err := env.Client.Patch(ctx, obj, client.Apply, client.FieldOwner("cert-manager-test"), client.ForceOwnership); err != nil {
				t.Fatalf("%s: the Certificate was refused: %v", name, err)
			}
			found = true
		}
		managerNS := tc.manager
		if managerNS == "" {
			managerNS = ns
		}
		args := strings.Join(containerArgs(t, rendered, "m2m-manager", "manager"), " ")
		if !found || !strings.Contains(args, "--ca-bundle-secret="+managerNS+"/m2m-token-server-tls") || strings.Contains(args, "--serving-cert-secret") {
			t.Errorf("%s: Certificate %v, manager args %s", name, found, args)
		}
	}
}
