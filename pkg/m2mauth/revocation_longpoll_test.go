package m2mauth

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// A proxy that cuts every long-poll (a route timeout shorter than the wait) while plain requests
// pass: the verifier gives up long-polling, polls, and its list never goes stale.
func TestAVerifierBehindAProxyThatCutsLongPollsFallsBackToPollingAndStaysFresh(t *testing.T) {
	srv := issuerWithList(t, func(w http.ResponseWriter, r *http.Request, iss string, key *signingkeys.Key) {
		if r.URL.Query().Get("wait") != "" {
			http.Error(w, "upstream request timeout", http.StatusGatewayTimeout)
			return
		}
		w.Header().Set("ETag", `"a"`)
		if r.Header.Get("If-None-Match") == `"a"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		now := time.Now()
		_, _ = w.Write([]byte(mint(t, key, jwt.MapClaims{"iss": iss, "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "not_before": map[string]int64{}}, map[string]any{"typ": "revocation-list+jwt"})))
	})
	v, err := NewVerifier(context.Background(), srv.URL, WithAudiences("https://api.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if !v.RevocationStatus().LongPoll {
		t.Fatal("the verifier starts without long-polling")
	}
	deadline := time.Now().Add(time.Minute)
	for v.RevocationStatus().LongPoll {
		if time.Now().After(deadline) {
			t.Fatalf("still long-polling through a proxy that cuts every long-poll: %+v", v.RevocationStatus())
		}
		<-v.revocations.Updated()
	}
	// Two plain requests after the switch: both confirm the list.
	<-v.revocations.Updated()
	<-v.revocations.Updated()
	if st := v.RevocationStatus(); st.Stale || st.LastError != "" {
		t.Fatalf("after falling back to polling: %+v", st)
	}
}

// A caller's transport whose response-header timeout is shorter than the default wait gets a
// wait that its timeout does not cut.
func TestAWaitLongerThanTheCallersResponseHeaderTimeoutIsShortened(t *testing.T) {
	s := newRevocationServer(t, time.Now)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 8 * time.Second
	v, err := NewVerifier(context.Background(), s.URL, WithAudiences("https://api.example.com"), WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	v.revocations.mu.RLock()
	wait := v.revocations.wait
	v.revocations.mu.RUnlock()
	if wait <= 0 || wait+longPollMargin > tr.ResponseHeaderTimeout {
		t.Fatalf("a wait of %s under a response-header timeout of %s", wait, tr.ResponseHeaderTimeout)
	}
}
