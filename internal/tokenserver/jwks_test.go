package tokenserver

import (
	"net/http"
	"testing"
)

func TestJWKSHasTheActiveKeyAnETagAndMaxAge(t *testing.T) {
	f := newFixture(t, "")
	resp, body := f.do(t, call{method: http.MethodGet, path: "/.well-known/jwks.json"})
	keys, _ := body["keys"].([]any)
	if resp.StatusCode != 200 || len(keys) != 1 || keys[0].(map[string]any)["kid"] != f.key.KID {
		t.Fatalf("%d %v", resp.StatusCode, body)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("headers %v", resp.Header)
	}
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/.well-known/jwks.json", nil)
	req.Header.Set("If-None-Match", etag)
	again, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	again.Body.Close()
	if again.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation got %d, want 304", again.StatusCode)
	}
}
