package signingkeys

import (
	"fmt"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/keyring"
)

// JWKSMaxAge is how long verifiers may cache the JWKS (the token server's Cache-Control max-age).
// A key must be published for longer than this before it signs.
const JWKSMaxAge = 5 * time.Minute

// DefaultRetention is how long a retired key stays published: the longest token lifetime the
// API allows (spec.tokenTTL at most 24h) plus five minutes of clock skew.
const DefaultRetention = 24*time.Hour + 5*time.Minute

// DefaultPolicy is the manager's signing-key policy unless flags change it.
var DefaultPolicy = Policy{Algorithm: ES256, Period: 90 * 24 * time.Hour, Prepublish: 24 * time.Hour, Retention: DefaultRetention}

// Policy is the signing-key rotation policy.
type Policy struct {
	// Algorithm of new keys. An active key of another algorithm is rotated away.
	Algorithm Algorithm
	// Period is how long a key signs before the next one takes over.
	Period time.Duration
	// Prepublish is how long a key is in the JWKS as "next" before it signs.
	Prepublish time.Duration
	// Retention is how long a retired key stays published: the longest token lifetime plus clock
	// skew, so that every token it signed expires first.
	Retention time.Duration
}

// Validate checks that the policy can work.
func (p Policy) Validate() error {
	if _, err := ParseAlgorithm(string(p.Algorithm)); err != nil {
		return err
	}
	switch {
	case p.Prepublish <= JWKSMaxAge:
		return fmt.Errorf("the signing-key prepublish time %s must exceed the JWKS cache lifetime of %s, or verifiers may meet a token before its key", p.Prepublish, JWKSMaxAge)
	case p.Period <= p.Prepublish:
		return fmt.Errorf("the signing-key rotation period %s must exceed the prepublish time %s", p.Period, p.Prepublish)
	}
	return nil
}

// KeyPlan is what to do with a key set now, and when to look again: the key ring's plan. Its
// Drop lists retired keys past retention, and next keys of another algorithm (which never signed).
type KeyPlan = keyring.Plan

// rules are the signing keys' ring: a key is published for Prepublish, longer than verifiers
// cache the JWKS, before it signs, and never before the active key's period is over.
func rules(policy Policy) keyring.Rules {
	return keyring.Rules{Noun: "key", Prepublish: policy.Prepublish, FullTerm: true}
}

// Plan decides the next step of the key set's life at now.
func Plan(s *Set, policy Policy, now time.Time) KeyPlan {
	keys := make([]keyring.Key, 0, len(s.Keys))
	for _, k := range s.Keys {
		v := keyring.Key{ID: k.KID, State: k.State}
		switch k.State {
		case StateNext:
			v.At = k.CreatedAt
			if k.Algorithm != policy.Algorithm {
				v.Reason = fmt.Sprintf("it is %s, not %s, and never signed", k.Algorithm, policy.Algorithm)
			}
		case StateActive:
			rotateAt := k.Since().Add(policy.Period)
			v.Reason = fmt.Sprintf("signs until %s, the end of its period", rotateAt.UTC().Format(time.RFC3339))
			if k.Algorithm != policy.Algorithm {
				// The algorithm changed: rotate as soon as a key of the new one is published.
				rotateAt = now
				v.Reason = fmt.Sprintf("is %s, not %s", k.Algorithm, policy.Algorithm)
			}
			v.At = rotateAt.Add(-policy.Prepublish)
		case StateRetired:
			// A retirement not recorded keeps the key: its tokens' ages are unknown.
			if k.RetiredAt != nil {
				v.At = k.RetiredAt.Add(policy.Retention)
				v.Reason = "every token it signed has expired"
			}
		}
		keys = append(keys, v)
	}
	return keyring.Decide(keys, rules(policy), now)
}

// Apply carries out a plan on a copy of the set: new keys are of the policy's algorithm.
func Apply(s *Set, plan KeyPlan, policy Policy, now time.Time) (*Set, error) {
	keys, err := keyring.Apply(s.Keys, plan, func(k *Key) string { return k.KID }, func(state State) (*Key, error) {
		return Generate(policy.Algorithm, state, now)
	}, now)
	if err != nil {
		return nil, err
	}
	return &Set{Keys: keys}, nil
}
