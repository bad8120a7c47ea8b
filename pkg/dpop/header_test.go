package dpop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A header checked before is still held to each caller's algorithms, and a proof with it still
// needs its own valid signature and claims: the cache saves parsing, never a check.
func TestAHeaderCheckedBeforeStillMeetsEveryCheckOfTheNextProof(t *testing.T) {
	keys(t)
	ok, err := NewProof(edKey, "POST", tokenURL, ProofOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ok, defaultVerifyOptions); err != nil {
		t.Fatal(err)
	}
	esOnly := defaultVerifyOptions
	esOnly.Algorithms = []string{"ES256"}
	if _, err := Verify(ok, esOnly); !errors.Is(err, ErrInvalidProof) {
		t.Fatalf("an EdDSA proof whose header was checked before, to a caller accepting ES256 only: %v", err)
	}
	other, err := NewProof(edKey, "POST", tokenURL, ProofOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	parts, otherParts := strings.Split(ok, "."), strings.Split(other, ".")
	if parts[0] != otherParts[0] {
		t.Fatal("two proofs of one key have different headers; the test needs them equal")
	}
	swapped := parts[0] + "." + otherParts[1] + "." + parts[2]
	if _, err := Verify(swapped, defaultVerifyOptions); !errors.Is(err, ErrInvalidProof) {
		t.Fatalf("a cached header with another proof's claims and this one's signature: %v", err)
	}
	wrongURL, err := NewProof(edKey, "POST", "https://elsewhere.example.com/token", ProofOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(wrongURL, defaultVerifyOptions); !errors.Is(err, ErrInvalidProof) {
		t.Fatalf("a cached header with claims for another URL: %v", err)
	}
}

// A flood of proofs of distinct keys keeps the cache within its two generations, and a header
// that fails its checks is never kept.
func TestTheHeaderCacheStaysWithinItsBoundAndKeepsNoFailedHeader(t *testing.T) {
	keys(t)
	c := &headerCache{}
	for i := range 3*headerCacheEntries + 7 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p, err := NewProof(k, "POST", tokenURL, ProofOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.parse(strings.Split(p, ".")[0]); err != nil {
			t.Fatalf("header %d: %v", i, err)
		}
		if n := len(c.cur) + len(c.prev); n > 2*headerCacheEntries {
			t.Fatalf("%d headers cached after %d, bound %d", n, i+1, 2*headerCacheEntries)
		}
	}
	header, claims := validParts(t)
	header["typ"] = "jwt"
	bad := strings.Split(forge(t, ecKey, "ES256", header, claims), ".")[0]
	if _, err := c.parse(bad); !errors.Is(err, ErrInvalidProof) {
		t.Fatalf("a header of the wrong typ: %v", err)
	}
	if _, cached := c.cur[bad]; cached {
		t.Fatal("a header that failed was cached")
	}
	long := strings.Repeat("A", maxCachedHeader+1)
	if _, err := c.parse(long); err == nil {
		t.Fatal(fmt.Sprintf("a %d-byte junk header passed", len(long)))
	}
}
