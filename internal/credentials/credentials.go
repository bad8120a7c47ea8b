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
	"strings"
	"time"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

const (
	// HashPrefix names the hash function of an accepted secret's hash.
	HashPrefix = "sha256:"

	// ClientIDPrefix makes generated client IDs recognisable in logs and configuration.
	ClientIDPrefix = "m2m-"

	// MinSecretLength is the shortest client secret the manager accepts from a user-edited Secret:
	// 32 characters of base64url carry 192 bits, and any shorter secret is refused as weak.
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
	return ""
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
	presented := []byte(Hash(secret))
	match := 0
	for i := range entries {
		eq := subtle.ConstantTimeCompare(presented, []byte(entries[i].Hash))
		if Accepted(entries[i], now) {
			match |= eq
		}
	}
	return match == 1
}
