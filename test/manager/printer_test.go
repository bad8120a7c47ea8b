package manager

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// kubectl get m2mclients -o wide shows the API server's table. A column of type date shows the
// time since a moment, which for a moment to come is "<invalid>": NEXT ROTATION, always in the
// future, must be shown as the time itself.
func TestKubectlGetWideShowsWhenTheNextRotationIs(t *testing.T) {
	ns := namespace(t)
	obj := newClient(ns, "rotating")
	obj.Spec.Rotation.Period = &metav1.Duration{Duration: 720 * time.Hour}
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	ready := waitReady(t, ns, "rotating", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if ready.Status.NextRotationTime == nil {
		t.Fatal("a client with a rotation period has no nextRotationTime, so the test cannot fail")
	}

	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	server, _, err := rest.DefaultServerUrlFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, server.JoinPath("apis/m2m.dev/v1alpha1/namespaces", ns, "m2mclients").String(), nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatalf("HTTP %d: %v: %.300s", resp.StatusCode, err, body)
	}
	column := -1
	for i, c := range table.ColumnDefinitions {
		if c.Name == "Next Rotation" {
			column = i
		}
	}
	if column < 0 || len(table.Rows) != 1 {
		t.Fatalf("no Next Rotation column (%d) or not one row (%d)", column, len(table.Rows))
	}
	cell, _ := table.Rows[0].Cells[column].(string)
	next, err := time.Parse(time.RFC3339, cell)
	if err != nil || !next.Equal(ready.Status.NextRotationTime.Time) {
		t.Fatalf("Next Rotation shows %q, want %s", cell, ready.Status.NextRotationTime.UTC().Format(time.RFC3339))
	}
}
