package m2mauth

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Lists from replicas that have not seen a revocation yet, signed later than the one that
// carried it, or an older list replayed, never take the revocation back: not-befores are merged,
// the latest of each kept. The "every token" state of a disabled client follows the latest
// list, so that enabling a client again takes effect.
func TestAListWithoutARevocationTheVerifierHasSeenDoesNotTakeItBackWhateverItsIAT(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	v := newRevocationVerifier(t, s, clk, WithRevocationWait(0))
	old := s.signed(t, s.URL, "revocation-list+jwt", map[string]int64{}, clk.Now())
	clk.Advance(10 * time.Second)
	s.setList(map[string]int64{"m2m-a": clk.Now().Unix(), "m2m-b": revokedForever})
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	tokA, tokB := tokenAt(t, s, "m2m-a", t0), tokenAt(t, s, "m2m-b", t0.Add(2*time.Minute))
	if _, err := v.Authenticate(context.Background(), tokA); !errors.Is(err, ErrRevoked) {
		t.Fatalf("want revoked: %v", err)
	}
	clk.Advance(time.Minute)
	s.serveBody(old)
	if err := refetch(v); err != nil {
		t.Fatalf("an older list is a list: %v", err)
	}
	if _, err := v.Authenticate(context.Background(), tokA); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after the older list: %v, want ErrRevoked", err)
	}
	s.setList(map[string]int64{}) // a lagging replica, signing now
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Authenticate(context.Background(), tokA); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after a newer list without the entry: %v, want ErrRevoked", err)
	}
	// m2m-b was enabled again: the latest list no longer says every token; its token issued
	// after the (merged) nothing is accepted.
	if _, err := v.Authenticate(context.Background(), tokB); err != nil {
		t.Fatalf("a token of a client the latest list no longer disables: %v", err)
	}
	if got := v.RevocationStatus().Failures; got != 0 {
		t.Fatalf("%d failures counted", got)
	}
}

// After half the list's life the verifier asks without If-None-Match, for the list signed again:
// a 304, which carries no signature, cannot keep a list fresh past its exp (one answered to an
// unconditional request is refused).
func TestAfterHalfItsLifeTheVerifierAsksForTheListSignedAgain(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	v := newRevocationVerifier(t, s, clk, WithRevocationWait(0))
	clk.Advance(6 * time.Minute) // past half of the list's 10 minutes
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	v.revocations.mu.RLock()
	iat := v.revocations.issuedAt
	v.revocations.mu.RUnlock()
	if !iat.Equal(clk.Now().Truncate(time.Second)) {
		t.Fatalf("after half the list's life the verifier holds a list signed at %s, want one signed now (%s)", iat, clk.Now())
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
