package credentials

import (
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestNewSecretIs43CharactersOfBase64URLAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(s) {
			t.Fatalf("secret %d characters, not unpadded base64url of 32 bytes", len(s))
		}
		raw, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(raw) != 32 {
			t.Fatalf("secret does not decode to 32 bytes: %v", err)
		}
		if seen[s] {
			t.Fatal("secret repeated")
		}
		seen[s] = true
	}
}

func TestNewClientIDHasPrefixAndIsURLSafeAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id, err := NewClientID()
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^m2m-[a-z2-7]{26}$`).MatchString(id) {
			t.Fatalf("client ID %q has the wrong shape", id)
		}
		if seen[id] {
			t.Fatal("client ID repeated")
		}
		seen[id] = true
	}
}

func TestHashIsPrefixedUnpaddedBase64URLOfSHA256(t *testing.T) {
	sum := sha256.Sum256([]byte("hello"))
	want := "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
	if got := Hash("hello"); got != want {
		t.Fatalf("Hash = %q, want %q", got, want)
	}
	if got := Hash("hello"); len(got) != len("sha256:")+43 {
		t.Fatalf("hash length %d", len(got))
	}
}

func TestStrengthProblem(t *testing.T) {
	long := make([]byte, 513)
	for i := range long {
		long[i] = 'a'
	}
	for name, tc := range map[string]struct {
		secret string
		weak   bool
	}{
		"a generated secret is strong":            {secret: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", weak: false},
		"32 varied characters are strong":         {secret: "q83vEjRWeJq8nt7wESIzRFVmd4iZqrvM", weak: false},
		"31 characters is weak":                   {secret: "0123456789abcdef0123456789abcde", weak: true},
		"an empty secret is weak":                 {secret: "", weak: true},
		"over 512 characters is refused":          {secret: string(long), weak: true},
		"a trailing newline from echo is refused": {secret: "0123456789abcdef0123456789abcdef\n", weak: true},
	} {
		t.Run(name, func(t *testing.T) {
			if got := StrengthProblem(tc.secret) != ""; got != tc.weak {
				t.Fatalf("weak = %v, want %v", got, tc.weak)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	past := metav1.NewTime(now.Add(-time.Second))
	future := metav1.NewTime(now.Add(time.Minute))
	entries := []m2mv1alpha1.AcceptedSecret{
		{Hash: Hash("current")},
		{Hash: Hash("previous"), ExpiresAt: &future},
		{Hash: Hash("expired"), ExpiresAt: &past},
	}
	for name, tc := range map[string]struct {
		secret string
		want   bool
	}{
		"the current secret without expiry is accepted":         {"current", true},
		"a previous secret within its grace period is accepted": {"previous", true},
		"a secret whose entry has expired is refused":           {"expired", false},
		"an unknown secret is refused":                          {"guess", false},
		"an empty secret is refused":                            {"", false},
		"the hash itself is not a secret":                       {Hash("current"), false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := Verify(entries, tc.secret, now); got != tc.want {
				t.Fatalf("Verify(%q) = %v, want %v", tc.secret, got, tc.want)
			}
		})
	}
	if Verify(entries, "previous", future.Time) {
		t.Fatal("a secret is still accepted at the instant it expires")
	}
}

// Secrets written by hand are adopted only when their estimated strength, without the four
// characters status shows, reaches 128 bits.
func TestAnAdoptedSecretMustHaveAnEstimated128Bits(t *testing.T) {
	for sentence, tc := range map[string]struct {
		secret string
		ok     bool
	}{
		"32 hex digits (128 bits, of which 16 are shown) are refused": {"0123456789abcdef0123456789abcdef", false},
		"64 random hex digits are accepted":                           {"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", true},
		"one character repeated is refused":                           {strings.Repeat("a", 64), false},
		"a two-character pattern is refused":                          {strings.Repeat("ab", 40), false},
		"a sentence of lower-case words is refused":                   {"correcthorsebatterystaplecorrecthorse", false},
		"base64 of 32 random bytes is accepted":                       {"q83vEjRWeJq8nt7wESIzRFVmd4iZqrvM3e7/ABEiM0Q=", true},
		"a 16-character pattern four times is refused":                {strings.Repeat("0123456789abcdef", 4), false},
		"a word six times and digits is refused":                      {strings.Repeat("password", 6) + "12", false},
		"a phrase twice is refused":                                   {strings.Repeat("correcthorsebatterystaple", 2), false},
	} {
		t.Run(sentence, func(t *testing.T) {
			problem := StrengthProblem(tc.secret)
			if (problem == "") != tc.ok {
				t.Fatalf("StrengthProblem = %q (about %.0f bits), want accepted=%v", problem, EstimatedBits(tc.secret), tc.ok)
			}
		})
	}
}

// The estimate never refuses a secret the manager generates.
func TestEveryGeneratedSecretPassesTheStrengthEstimate(t *testing.T) {
	for range 10000 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if p := StrengthProblem(s); p != "" {
			t.Fatalf("a generated secret is refused: %s", p)
		}
	}
}
