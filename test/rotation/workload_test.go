package rotation

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// guardedService is a resource server behind pkg/m2mauth's Middleware. It records each request
// that reaches it, refused or not: the workload that sent it (the X-Workload header), the kid of
// its token, and the answer.
type guardedService struct {
	*httptest.Server
	mu  sync.Mutex
	got []serviceRequest
}

type serviceRequest struct {
	workload, kid string
	status        int
}

func newGuardedService(t *testing.T, v *m2mauth.Verifier) *guardedService {
	t.Helper()
	s := &guardedService{}
	guarded := m2mauth.Middleware(v)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		guarded.ServeHTTP(rec, r)
		kid := ""
		raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if parsed, _, err := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{}); err == nil {
			kid, _ = parsed.Header["kid"].(string)
		}
		s.mu.Lock()
		s.got = append(s.got, serviceRequest{r.Header.Get("X-Workload"), kid, rec.status})
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// requestsOf returns what the service got from workload, in order.
func (s *guardedService) requestsOf(workload string) []serviceRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []serviceRequest
	for _, r := range s.got {
		if r.workload == workload {
			out = append(out, r)
		}
	}
	return out
}

// workload is a pod with c's Secret mounted that calls a guardedService through the HTTP client
// that newClient makes from the mounted Secret's token source.
type workload struct {
	name string
	hc   *http.Client
}

func newWorkload(t *testing.T, c loadClient, name string, newClient func(context.Context, oauth2.TokenSource) *http.Client) *workload {
	t.Helper()
	dir := t.TempDir()
	for file, value := range map[string]string{"client_id": c.id, "client_secret": c.secret, "token_url": issuer + "/oauth2/token"} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ts, err := m2mauth.NewTokenSource(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	return &workload{name: name, hc: newClient(ctx, ts)}
}

// call sends one request to s and returns the answer's status and WWW-Authenticate.
func (w *workload) call(t *testing.T, s *guardedService) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Workload", w.name)
	resp, err := w.hc.Do(req)
	if err != nil {
		t.Fatalf("workload %s: %v", w.name, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}
