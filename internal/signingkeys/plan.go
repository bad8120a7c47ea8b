package signingkeys

import (
	"fmt"
	"time"
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

// KeyPlan is what to do with a key set now, and when to look again.
type KeyPlan struct {
	// AddActive: there is no active key and no next key to promote; make one that signs at once.
	AddActive bool
	// AddNext: publish a new key of the policy's algorithm as next.
	AddNext bool
	// Promote: the next key starts signing and the active key retires.
	Promote bool
	// Drop lists keys to remove: retired keys past retention, and next keys of another algorithm
	// (which never signed).
	Drop []string
	// Why explains each step, for logs and events.
	Why []string
	// WakeAt is when the plan changes next; zero for never.
	WakeAt time.Time
}

// Empty reports whether the plan changes nothing.
func (p KeyPlan) Empty() bool {
	return !p.AddActive && !p.AddNext && !p.Promote && len(p.Drop) == 0
}

// Plan decides the next step of the key set's life at now.
func Plan(s *Set, policy Policy, now time.Time) KeyPlan {
	var plan KeyPlan
	wake := func(t time.Time) {
		if t.After(now) && (plan.WakeAt.IsZero() || t.Before(plan.WakeAt)) {
			plan.WakeAt = t
		}
	}
	var next *Key
	for _, k := range s.Keys {
		switch k.State {
		case StateNext:
			if k.Algorithm != policy.Algorithm || next != nil {
				plan.Drop = append(plan.Drop, k.KID)
				plan.Why = append(plan.Why, fmt.Sprintf("next key %s (%s) is not needed; it never signed", k.KID, k.Algorithm))
				continue
			}
			next = k
		case StateRetired:
			if k.RetiredAt != nil {
				gone := k.RetiredAt.Add(policy.Retention)
				if !now.Before(gone) {
					plan.Drop = append(plan.Drop, k.KID)
					plan.Why = append(plan.Why, fmt.Sprintf("retired key %s: every token it signed has expired", k.KID))
				} else {
					wake(gone)
				}
			}
		}
	}

	active := s.Active()
	if active == nil {
		if next != nil {
			plan.Promote = true
			plan.Why = append(plan.Why, fmt.Sprintf("no key signs; next key %s starts at once", next.KID))
		} else {
			plan.AddActive = true
			plan.Why = append(plan.Why, "no key signs; a new key starts at once")
		}
		return plan
	}

	activeAt := active.CreatedAt
	if active.ActiveAt != nil {
		activeAt = *active.ActiveAt
	}
	rotateAt := activeAt.Add(policy.Period)
	if active.Algorithm != policy.Algorithm {
		rotateAt = now // the algorithm changed: rotate as soon as a key of the new one is published
	}
	if next == nil {
		publishAt := rotateAt.Add(-policy.Prepublish)
		if !now.Before(publishAt) {
			plan.AddNext = true
			plan.Why = append(plan.Why, fmt.Sprintf("a %s key is published as next; it signs from %s", policy.Algorithm, maxTime(rotateAt, now.Add(policy.Prepublish)).UTC().Format(time.RFC3339)))
			wake(maxTime(rotateAt, now.Add(policy.Prepublish)))
		} else {
			wake(publishAt)
		}
		return plan
	}
	startAt := maxTime(rotateAt, next.CreatedAt.Add(policy.Prepublish))
	if !now.Before(startAt) {
		plan.Promote = true
		plan.Why = append(plan.Why, fmt.Sprintf("next key %s starts signing; key %s retires", next.KID, active.KID))
	} else {
		wake(startAt)
	}
	return plan
}

// Apply carries out a plan on a copy of the set.
func Apply(s *Set, plan KeyPlan, policy Policy, now time.Time) (*Set, error) {
	out := &Set{}
	drop := map[string]bool{}
	for _, kid := range plan.Drop {
		drop[kid] = true
	}
	for _, k := range s.Keys {
		if !drop[k.KID] {
			c := *k
			out.Keys = append(out.Keys, &c)
		}
	}
	if plan.Promote {
		for _, k := range out.Keys {
			at := now.UTC().Truncate(time.Second)
			switch k.State {
			case StateActive:
				k.State, k.RetiredAt = StateRetired, &at
			case StateNext:
				k.State, k.ActiveAt = StateActive, &at
			}
		}
	}
	for _, add := range []struct {
		yes   bool
		state State
	}{{plan.AddActive, StateActive}, {plan.AddNext, StateNext}} {
		if add.yes {
			k, err := Generate(policy.Algorithm, add.state, now)
			if err != nil {
				return nil, err
			}
			out.Keys = append(out.Keys, k)
		}
	}
	return out, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
