package m2mauth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
	received := v.revocations.receivedAt
	v.revocations.mu.RUnlock()
	if !received.Equal(clk.Now()) {
		t.Fatalf("after half the list's life the verifier last took a list at %s, want one now (%s): a 304 kept the old signature", received, clk.Now())
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

// A disabled client's floor stays merged after the "every token" entry is gone from a later list
// (a replica that has not seen the disable yet): its tokens issued before the disable stay
// refused, and those issued after its floor are accepted.
func TestAFloorOutlivesTheEveryTokenEntryInALaterList(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	v := newRevocationVerifier(t, s, clk, WithRevocationWait(0))
	floor := t0.Add(30 * time.Second)
	s.serveBody(mint(t, s.key, jwt.MapClaims{"iss": s.URL, "iat": clk.Now().Unix(), "exp": clk.Now().Add(10 * time.Minute).Unix(),
		"not_before": map[string]int64{"m2m-d": revokedForever}, "floor": map[string]int64{"m2m-d": floor.Unix()}}, map[string]any{"typ": "revocation-list+jwt"}))
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	before, after := tokenAt(t, s, "m2m-d", t0), tokenAt(t, s, "m2m-d", floor.Add(time.Second))
	if _, err := v.Authenticate(context.Background(), after); !errors.Is(err, ErrRevoked) {
		t.Fatalf("every token of a disabled client: %v, want ErrRevoked", err)
	}
	s.setList(map[string]int64{}) // a lagging replica
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Authenticate(context.Background(), before); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a token from before the disable, after a list without it: %v, want ErrRevoked", err)
	}
	if _, err := v.Authenticate(context.Background(), after); err != nil {
		t.Fatalf("a token from after the floor: %v", err)
	}
}

// A merged not-before that no list has carried for the merge window goes: the merge is bounded
// by what lists carried lately, not by everything a tenant's churn ever published.
func TestAMergedEntryNoListCarriesGoesAfterTheMergeWindow(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	v := newRevocationVerifier(t, s, clk, WithRevocationWait(0))
	s.setList(map[string]int64{"m2m-gone": clk.Now().Unix()})
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	s.setList(map[string]int64{})
	clk.Advance(revocationMergeWindow - time.Minute)
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	if v.RevocationStatus().Entries != 1 {
		t.Fatal("the entry went before the merge window ended")
	}
	clk.Advance(2 * time.Minute)
	s.setList(map[string]int64{"m2m-other": clk.Now().Unix()})
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	v.revocations.mu.RLock()
	_, kept := v.revocations.notBefore["m2m-gone"]
	v.revocations.mu.RUnlock()
	if kept {
		t.Fatal("an entry no list carried for longer than the merge window is still held")
	}
}

// A finite not-before still to come refuses the client's tokens while a list carries it, and is
// merged as now: once lists no longer carry it, later tokens are accepted, so a mistaken year
// does not stay behind in the verifier.
func TestAFutureNotBeforeIsMergedAsNow(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	v := newRevocationVerifier(t, s, clk, WithRevocationWait(0))
	s.setList(map[string]int64{"m2m-y": clk.Now().Add(365 * 24 * time.Hour).Unix()})
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	clk.Advance(3 * time.Minute)
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	later := tokenAt(t, s, "m2m-y", clk.Now())
	if _, err := v.Authenticate(context.Background(), later); !errors.Is(err, ErrRevoked) {
		t.Fatalf("while the list carries a time still to come: %v, want ErrRevoked", err)
	}
	s.setList(map[string]int64{})
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	// Merged as the time of the last list that carried it, plus the clock skew.
	clk.Advance(2 * time.Minute)
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Authenticate(context.Background(), tokenAt(t, s, "m2m-y", clk.Now())); err != nil {
		t.Fatalf("a token after the merged time, once no list carries the future one: %v", err)
	}
}
