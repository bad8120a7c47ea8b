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

// KeyPlan is what to do with a key set now, and when to look again: the key ring's plan, whose
// Drop lists retired keys past retention and next keys of another algorithm (which never
// signed), or in an emergency every key.
type KeyPlan struct {
	keyring.Plan
	// SignsFrom, when set, is when the next key signs because a planned rotation was asked for:
	// Apply records it on the next key, the one the ring keeps or the one it adds.
	SignsFrom time.Time
}

// Empty reports whether the plan changes nothing.
func (p KeyPlan) Empty() bool { return p.Plan.Empty() && p.SignsFrom.IsZero() }

// rules are the signing keys' ring: a key is published for Prepublish, longer than verifiers
// cache the JWKS, before it signs, and never before the active key's period is over.
func rules(policy Policy) keyring.Rules {
	return keyring.Rules{Noun: "key", Prepublish: policy.Prepublish, FullTerm: true}
}

// Plan decides the next step of the key set's life at now, with ask the rotation that the
// Secret asks for and that has not been done yet.
func Plan(s *Set, policy Policy, ask keyring.Ask, now time.Time) KeyPlan {
	if ask == keyring.AskEmergency {
		return emergency(s)
	}
	// The next key the ring keeps: the first of the policy's algorithm. When it was published
	// for an asked rotation, the active key's term ends when it signs.
	var next *Key
	for _, k := range s.Keys {
		if k.State == StateNext && k.Algorithm == policy.Algorithm {
			next = k
			break
		}
	}
	var signsFrom *time.Time
	if next != nil {
		signsFrom = next.SignsFrom
	}
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
			switch {
			case k.Algorithm != policy.Algorithm:
				// The algorithm changed: rotate as soon as a key of the new one is published.
				rotateAt = now
				v.Reason = fmt.Sprintf("is %s, not %s", k.Algorithm, policy.Algorithm)
			case ask == keyring.AskPlanned:
				rotateAt = now
				v.Reason = fmt.Sprintf("was asked to rotate (%s)", keyring.RotateAnnotation)
			case signsFrom != nil && signsFrom.Before(rotateAt):
				rotateAt = *signsFrom
				v.Reason = fmt.Sprintf("was asked to rotate (%s) and signs until %s", keyring.RotateAnnotation, stamp(rotateAt))
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
	p := KeyPlan{Plan: keyring.Decide(keys, rules(policy), now)}
	if ask == keyring.AskPlanned && !p.Promote {
		// The successor signs once published for the prepublish time, and not before now.
		stored := now.UTC().Truncate(time.Second) // as keys record times
		switch {
		case p.AddNext:
			p.SignsFrom = stored.Add(policy.Prepublish)
		case next != nil:
			p.SignsFrom = later(next.CreatedAt.Add(policy.Prepublish), stored)
			p.Why = append(p.Why, fmt.Sprintf("a rotation was asked for (%s); next key %s, published at %s, signs from %s", keyring.RotateAnnotation, next.KID, stamp(next.CreatedAt), stamp(p.SignsFrom)))
		}
	}
	return p
}

// emergency is the plan of an emergency rotation: every key goes at once, since whoever copied
// one copied them all (they share the Secret), and a new key that no one could have copied signs
// at once. Tokens of every earlier key stop verifying as soon as verifiers fetch the JWKS again.
func emergency(s *Set) KeyPlan {
	var p keyring.Plan
	for _, k := range s.Keys {
		p.Drop = append(p.Drop, k.KID)
		p.Why = append(p.Why, fmt.Sprintf("%s key %s goes at once: an emergency rotation was asked for (%s), and every private key in the Secret may have been copied", k.State, k.KID, keyring.EmergencyAnnotation))
	}
	p.AddActive = true
	p.Why = append(p.Why, "a new key signs at once; verifiers learn it when they next fetch the JWKS")
	return KeyPlan{Plan: p}
}

// Apply carries out a plan on a copy of the set: new keys are of the policy's algorithm.
func Apply(s *Set, plan KeyPlan, policy Policy, now time.Time) (*Set, error) {
	keys, err := keyring.Apply(s.Keys, plan.Plan, func(k *Key) string { return k.KID }, func(state State) (*Key, error) {
		return Generate(policy.Algorithm, state, now)
	}, now)
	if err != nil {
		return nil, err
	}
	if !plan.SignsFrom.IsZero() {
		for _, k := range keys {
			if k.State == StateNext {
				at := plan.SignsFrom
				k.SignsFrom = &at
			}
		}
	}
	return &Set{Keys: keys}, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// stamp is how sentences give a time: RFC 3339 in UTC.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
