package m2mauth

import (
	"context"
	"errors"
	"testing"
	"time"
)

// An older list still within its exp (replayed to an http issuer's verifier, cached by a proxy,
// or from a lagging replica) is refused, and the newer list in use keeps the client revoked. It
// is not counted as a failure: a replica a moment behind the others must not push the verifier
// into backing off until its list goes stale.
func TestAListSignedBeforeTheOneInUseIsIgnoredWithoutCountingAsAFailureAndTheClientStaysRevoked(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	v := newRevocationVerifier(t, s, clk, WithRevocationWait(0))
	old := s.signed(t, s.URL, "revocation-list+jwt", map[string]int64{}, clk.Now())
	clk.Advance(10 * time.Second)
	s.setList(map[string]int64{"m2m-a": clk.Now().Unix()})
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	tok := tokenAt(t, s, "m2m-a", t0)
	if _, err := v.Authenticate(context.Background(), tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("want revoked: %v", err)
	}
	clk.Advance(time.Minute)
	s.serveBody(old)
	failures := v.RevocationStatus().Failures
	if err := refetch(v); !errors.Is(err, ErrRevocationUnavailable) || !errors.Is(err, errOlderList) {
		t.Fatalf("the older list: %v, want ErrRevocationUnavailable (errOlderList)", err)
	}
	if got := v.RevocationStatus().Failures; got != failures {
		t.Fatalf("the older list counted as a failure: %d failures, were %d", got, failures)
	}
	if _, err := v.Authenticate(context.Background(), tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after the older list: %v, want ErrRevoked", err)
	}
}

// A verifier whose clock is a little behind the token server's takes a list just signed.
func TestAVerifierSecondsBehindTheTokenServerTakesAFreshList(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, func() time.Time { return clk.Now().Add(30 * time.Second) })
	v, err := NewVerifier(context.Background(), s.URL, WithAudiences("https://api.example.com"), clk.option())
	if err != nil {
		t.Fatalf("a verifier 30 s behind the issuer: %v", err)
	}
	v.Close()
}
