package tokenserver

import (
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestIntrospectionSaysActiveOnlyForAValidTokenOfAnEnabledClient(t *testing.T) {
	f := newFixture(t, "")
	_, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
	token := body["access_token"].(string)
	introspect := func(tok string) (int, map[string]any) {
		resp, out := f.do(t, call{path: "/oauth2/introspect", contentType: form, body: formBody("token", tok), basicUser: goodID, basicPass: goodSecret})
		return resp.StatusCode, out
	}
	code, out := introspect(token)
	if code != 200 || out["active"] != true || out["client_id"] != goodID || out["scope"] != "read:invoices write:payments" {
		t.Fatalf("%d %v", code, out)
	}
	parts := strings.Split(token, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"client_id":"m2m-good","iss":"`+testIssuer+`","exp":9999999999}`)) + "." + parts[2]
	for sentence, tok := range map[string]string{
		"a tampered payload": tampered,
		"garbage":            "not-a-jwt",
	} {
		if code, out := introspect(tok); code != 200 || len(out) != 1 || out["active"] != false {
			t.Fatalf("%s: %d %v, want exactly {active: false}", sentence, code, out)
		}
	}
	f.clock.Step(16 * time.Minute)
	if _, out := introspect(token); out["active"] != false {
		t.Fatalf("an expired token is active: %v", out)
	}
	resp, out := f.do(t, call{path: "/oauth2/introspect", contentType: form, body: formBody("token", token)})
	if resp.StatusCode != 401 || out["error"] != ErrInvalidClient {
		t.Fatalf("an unauthenticated caller got %d %v", resp.StatusCode, out)
	}
}

func TestIntrospectionSaysInactiveOnceTheClientIsDisabledOrDeleted(t *testing.T) {
	clients := mapClients{goodID: testClient(goodID, goodSecret), bareID: testClient(bareID, bareSecret)}
	f := serve(t, signingkeys.EdDSA, clients)
	_, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
	token := body["access_token"].(string)
	active := func() any {
		_, out := f.do(t, call{path: "/oauth2/introspect", contentType: form, body: formBody("token", token), basicUser: bareID, basicPass: bareSecret})
		return out["active"]
	}
	if active() != true {
		t.Fatal("a fresh token is inactive")
	}
	clients[goodID].Spec.Disabled = true
	if active() != false {
		t.Fatal("a disabled client's token is still active")
	}
	delete(clients, goodID)
	if active() != false {
		t.Fatal("a deleted client's token is still active")
	}
}

func TestIntrospectionSaysInactiveForATokenTheRevocationListRevokes(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	src := &fakeRevocations{changed: make(chan struct{})}
	clk := clocktesting.NewFakeClock(t0)
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{goodID: testClient(goodID, goodSecret), bareID: testClient(bareID, bareSecret)}, Keys: keys, Clock: clk, Revocations: src})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	f := &fixture{srv: srv, clock: clk}
	_, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
	token := body["access_token"].(string)
	active := func() any {
		_, out := f.do(t, call{path: "/oauth2/introspect", contentType: form, body: formBody("token", token), basicUser: bareID, basicPass: bareSecret})
		return out["active"]
	}
	if active() != true {
		t.Fatal("the token is inactive before any revocation")
	}
	src.set(map[string]int64{goodID: t0.Unix() + 1})
	if active() != false {
		t.Fatal("a token issued before its client's not-before is active")
	}
	src.set(map[string]int64{goodID: t0.Unix()})
	if active() != true {
		t.Fatal("a token issued at its client's not-before is inactive")
	}
}
