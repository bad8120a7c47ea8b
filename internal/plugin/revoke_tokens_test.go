package plugin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// kubectl m2m revoke on a laptop whose clock is behind the cluster's revokes up to the cluster's
// time, and on one ahead up to its own: the later of the two.
func TestRevokeTakesTheLaterOfTheLocalAndTheAPIServersClock(t *testing.T) {
	server := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", server.Format(http.TimeFormat))
		_, _ = w.Write([]byte(`{}`))
	}))
	defer api.Close()
	cfg := &rest.Config{Host: api.URL}
	if got := clusterNow(context.Background(), cfg, server.Add(-5*time.Minute)); !got.Equal(server) {
		t.Fatalf("a laptop 5 minutes behind: %s, want the API server's %s", got, server)
	}
	ahead := server.Add(time.Minute)
	if got := clusterNow(context.Background(), cfg, ahead); !got.Equal(ahead) {
		t.Fatalf("a laptop a minute ahead: %s, want its own %s", got, ahead)
	}
	api.Close()
	behind := server.Add(-5 * time.Minute)
	if got := clusterNow(context.Background(), cfg, behind); !got.Equal(behind) {
		t.Fatalf("an API server that cannot be asked: %s, want the local %s", got, behind)
	}
}
