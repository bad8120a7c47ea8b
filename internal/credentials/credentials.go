// Package credentials makes client IDs and client secrets and holds the contract between the
// manager and the token server: how a secret is hashed into status.acceptedSecrets, and when a
// presented secret is accepted.
package credentials

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"math"
	"strings"
	"time"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

const (
	// HashPrefix names the hash function of an accepted secret's hash.
	HashPrefix = "sha256:"

	// ClientIDPrefix makes generated client IDs recognisable in logs and configuration.
	ClientIDPrefix = "m2m-"

	// MinSecretLength is the shortest client secret the manager accepts from a user-edited Secret;
	// a longer one must also reach MinStrengthBits.
	MinSecretLength = 32

	// MaxSecretLength bounds the secrets the manager accepts from a user-edited Secret.
	MaxSecretLength = 512

	// secretBytes is the entropy of a generated secret: 256 bits.
	secretBytes = 32
)

// clientIDEncoding is lowercase RFC 4648 base32 without padding: URL-safe, and safe in a Basic
// Authorization header without form encoding.
var clientIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewSecret returns 256 bits from crypto/rand as unpadded base64url: 43 characters.
func NewSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// NewClientID returns "m2m-" and 130 random bits as 26 lowercase base32 characters, so that IDs
// generated in any number of clusters never collide.
func NewClientID() (string, error) {
	b := make([]byte, 17) // 136 bits, of which the encoding keeps the first 130
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return ClientIDPrefix + clientIDEncoding.EncodeToString(b)[:26], nil
}

// Hash returns "sha256:" and the unpadded base64url SHA-256 of secret. A fast hash is right here
// because secrets are 256-bit random values: no dictionary or brute force applies to them.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return HashPrefix + base64.RawURLEncoding.EncodeToString(sum[:])
}

// LastFour returns the last four characters of a secret, to tell secrets apart in status.
func LastFour(secret string) string {
	if len(secret) <= 4 {
		return ""
	}
	return secret[len(secret)-4:]
}

// MinStrengthBits is the least estimated strength of a secret someone writes into a Secret. Its
// unsalted SHA-256 hash is readable by anyone who may get M2MClients, so a weaker secret could
// be found offline.
const MinStrengthBits = 128

// StrengthProblem says why a user-supplied secret is refused, or returns "" for a secret the
// manager accepts.
func StrengthProblem(secret string) string {
	switch {
	case len(secret) < MinSecretLength:
		return "shorter than 32 characters"
	case len(secret) > MaxSecretLength:
		return "longer than 512 characters"
	case strings.TrimSpace(secret) != secret:
		return "has leading or trailing white space"
	}
	if bits := EstimatedBits(secret); bits < MinStrengthBits {
		return fmt.Sprintf("too weak: about %d bits of estimated strength, under %d (docs/security.md says how it is estimated)", int(bits), MinStrengthBits)
	}
	return ""
}

// EstimatedBits is an upper estimate of a secret's strength in bits, as if each character but the
// last four (which status shows as lastFour) were drawn at random: the number of those characters
// that are new, times log2 of the alphabet. A character is new unless it ends a run of four that
// appeared before, so a repeated pattern counts once. The alphabet is the smaller of the character
// classes the secret uses (26 lower, 26 upper, 10 digits, 33 other printable ASCII, 128 for any
// non-ASCII) and the number of distinct characters it holds. A 43-character generated secret
// scores about 190 bits; 32 hex digits (128 random bits) score 112, since four of them are shown;
// "password" six times scores about 45. Words are not detected: the estimate refuses the
// obviously weak, it never proves a secret random.
func EstimatedBits(secret string) float64 {
	runes := []rune(secret)
	if len(runes) <= 4 {
		return 0
	}
	counted := runes[:len(runes)-4]
	var lower, upper, digit, other, nonASCII bool
	distinct := map[rune]bool{}
	seen := map[string]bool{}
	fresh := 0
	for i, r := range counted {
		if i < 3 {
			fresh++
		} else if run := string(counted[i-3 : i+1]); !seen[run] {
			seen[run] = true
			fresh++
		}
		distinct[r] = true
		switch {
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= '0' && r <= '9':
			digit = true
		case r < 0x80:
			other = true
		default:
			nonASCII = true
		}
	}
	alphabet := 0
	for _, class := range []struct {
		used bool
		size int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {other, 33}, {nonASCII, 128}} {
		if class.used {
			alphabet += class.size
		}
	}
	alphabet = min(alphabet, len(distinct))
	if alphabet < 2 {
		return 0
	}
	return float64(fresh) * math.Log2(float64(alphabet))
}

// Accepted reports whether entry accepts a secret at now: when it has no expiry or expires
// after now.
func Accepted(entry m2mv1alpha1.AcceptedSecret, now time.Time) bool {
	return entry.ExpiresAt == nil || now.Before(entry.ExpiresAt.Time)
}

// Verify reports whether secret matches an accepted, unexpired entry. It hashes the presented
// secret once and compares it with every entry in constant time, so that the answer's timing
// does not depend on which entry, if any, matched.
func Verify(entries []m2mv1alpha1.AcceptedSecret, secret string, now time.Time) bool {
	return VerifyWith(entries, secret, now, nil)
}

// VerifyWith is Verify that also requires authentic(entry) of the matching entry (nil accepts
// every entry). authentic is asked of every entry, so that the work does not depend on which
// entry matches.
func VerifyWith(entries []m2mv1alpha1.AcceptedSecret, secret string, now time.Time, authentic func(*m2mv1alpha1.AcceptedSecret) bool) bool {
	presented := []byte(Hash(secret))
	match := 0
	for i := range entries {
		eq := subtle.ConstantTimeCompare(presented, []byte(entries[i].Hash))
		ok := authentic == nil || authentic(&entries[i])
		if ok && Accepted(entries[i], now) {
			match |= eq
		}
	}
	return match == 1
}
