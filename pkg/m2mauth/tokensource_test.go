package m2mauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTokenServer accepts exactly one secret for one client, which the test changes to rotate.
type fakeTokenServer struct {
	*httptest.Server
	mu     sync.Mutex
	secret string
	issued atomic.Int64
}

func newFakeTokenServer(t *testing.T, secret string, ttl time.Duration) *fakeTokenServer {
	s := &fakeTokenServer{secret: secret}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, sec, ok := r.BasicAuth()
		if !ok {
			_ = r.ParseForm()
			id, sec = r.Form.Get("client_id"), r.Form.Get("client_secret")
		}
		s.mu.Lock()
		want := s.secret
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if id != "m2m-a" || sec != want {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		n := s.issued.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("token-%d", n), "token_type": "Bearer", "expires_in": int(ttl / time.Second)})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *fakeTokenServer) rotate(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secret = secret
}

// mountSecret writes a Secret volume the way the kubelet does: the files are symlinks through
// ..data, which points at a timestamped directory and is swapped atomically on every change.
func mountSecret(t *testing.T, dir, tokenURL, secret string, version int) {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..2026_11_28_%d", version))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{"client_id": "m2m-a", "client_secret": secret, "token_url": tokenURL} {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func TestTheTokenSourceReusesATokenAndFollowsARotatedSecretWithoutARestart(t *testing.T) {
	srv := newFakeTokenServer(t, "secret-one", time.Hour)
	dir := t.TempDir()
	mountSecret(t, dir, srv.URL, "secret-one", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts, err := NewTokenSource(ctx, dir, RefreshBefore(59*time.Minute+59*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := ts.Token(); again.AccessToken != first.AccessToken {
		t.Fatal("a fresh token was not reused")
	}

	// The Secret rotates: the kubelet swaps ..data; the old secret stops working.
	mountSecret(t, dir, srv.URL, "secret-two", 2)
	srv.rotate("secret-two")
	time.Sleep(1100 * time.Millisecond) // the reused token is due for renewal (1s before expiry)
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("the token source failed after the rotation: %v", err)
	}
	if tok.AccessToken == first.AccessToken {
		t.Fatal("no new token was fetched")
	}
}

// Without the file watch (the kubelet swap not seen yet), an invalid_client makes the token
// source read the files again and retry once.
func TestAnInvalidClientRereadsTheFilesAndRetriesOnce(t *testing.T) {
	srv := newFakeTokenServer(t, "secret-one", time.Hour)
	dir := t.TempDir()
	mountSecret(t, dir, srv.URL, "secret-one", 1)
	s := &fileTokenSource{ctx: context.Background(), dir: dir, cfg: tokenSourceConfig{}}
	if err := s.reload(); err != nil {
		t.Fatal(err)
	}
	mountSecret(t, dir, srv.URL, "secret-two", 2)
	srv.rotate("secret-two")
	if _, err := s.Token(); err != nil {
		t.Fatalf("no retry with the new files: %v", err)
	}
	srv.rotate("secret-three") // the files still say secret-two: one retry, then the error
	if _, err := s.Token(); err == nil {
		t.Fatal("a secret the server refuses got a token")
	}
}

func TestNewTokenSourceSaysWhichFileIsMissing(t *testing.T) {
	if _, err := NewTokenSource(context.Background(), t.TempDir()); err == nil {
		t.Fatal("an empty directory gave a token source")
	}
}
