package tokenserver

import (
	"net/http"
	"strconv"
	"time"
)

// jwks serves the public keys with an ETag, so that verifiers revalidate cheaply.
func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	st := s.cfg.Keys.current()
	if st == nil {
		http.Error(w, "no signing keys are loaded yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(JWKSMaxAge/time.Second)))
	w.Header().Set("ETag", st.etag)
	if r.Header.Get("If-None-Match") == st.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_, _ = w.Write(st.jwks)
}
