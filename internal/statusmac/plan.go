package statusmac

import (
	"fmt"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/keyring"
)

// Prepublish is how long a new key only verifies before it signs: longer than any token server
// takes to load the Secret, so that none meets a status sealed with a key it does not know yet.
const Prepublish = 5 * time.Minute

// RetiredMinimum is how long a retired key verifies at least, even once no status in the
// manager's cache uses it, since a token server's cache may trail the manager's.
const RetiredMinimum = 10 * time.Minute

// EnforceDeadline is how long after its first key the set is enforced even if some status is
// still unauthenticated (a status the manager cannot write): an upgrade's window, in which forged
// status works as before it, must end.
const EnforceDeadline = time.Hour

// DefaultPeriod is how long a key signs before the next one takes over.
const DefaultPeriod = 90 * 24 * time.Hour

// Fleet is what the manager's cache says about every M2MClient's status.
type Fleet struct {
	// AllAuthenticated: every status verifies (Set.Authenticated).
	AllAuthenticated bool
	// InUse are the ids of keys that some status's MACs use.
	InUse map[string]bool
}

// KeyPlan is what to do with the set now, and when to look again: the key ring's plan
// (keyring.Plan), and the enforcement that only status keys have.
type KeyPlan struct {
	// AddActive: there is no key that signs; make one that signs at once (a new install, or an
	// upgrade from a version without MACs, where nothing is enforced yet).
	AddActive bool
	// AddNext: the active key is due to be replaced; publish its successor.
	AddNext bool
	// Promote: the next key signs, and the active key retires.
	Promote bool
	// Drop lists retired keys that no status uses any more (and next keys beside the one next).
	Drop []string
	// Enforce: every status is authenticated; from now on the token server trusts nothing else.
	Enforce bool
	// Why explains each step, for logs.
	Why []string
	// WakeAt is when the plan changes next with no change to the fleet; zero for never.
	WakeAt time.Time
}

// Empty reports whether the plan changes nothing.
func (p KeyPlan) Empty() bool {
	return !p.AddActive && !p.AddNext && !p.Promote && len(p.Drop) == 0 && !p.Enforce
}

// ring is the key ring's part of the plan.
func (p KeyPlan) ring() keyring.Plan {
	return keyring.Plan{AddActive: p.AddActive, AddNext: p.AddNext, Promote: p.Promote, Drop: p.Drop}
}

// rules are the status keys' ring: a successor signs once every token server can have loaded
// it, whatever the age of the active key.
var rules = keyring.Rules{Noun: "status key", Prepublish: Prepublish}

// Plan decides the next step for set (nil when the Secret has none yet) at now, with period the
// active key's lifetime (0 for never).
func Plan(set *Set, fleet Fleet, period time.Duration, now time.Time) KeyPlan {
	return plan(set, fleet, period, false, now)
}

// Replace is Plan for keys that may have been copied, as in an emergency rotation of the signing
// keys, which share their Secret: a next key goes (it was copied too) and the active key gets a
// successor at once. The successor signs after Prepublish and the manager seals every status
// again with it, as in a scheduled rotation, so that no status is discarded and no client's
// credentials change; the copied key verifies until no status uses it.
func Replace(set *Set, fleet Fleet, period time.Duration, now time.Time) KeyPlan {
	return plan(set, fleet, period, true, now)
}

func plan(set *Set, fleet Fleet, period time.Duration, replace bool, now time.Time) KeyPlan {
	var keys []keyring.Key
	if set != nil {
		for _, k := range set.Keys {
			v := ringKey(k, fleet, period, now)
			switch {
			case !replace:
			case k.State == StateNext:
				v.Reason = "it may have been copied with the signing keys"
			case k.State == StateActive:
				v.At, v.Reason = now, "may have been copied with the signing keys"
			}
			keys = append(keys, v)
		}
	}
	r := keyring.Decide(keys, rules, now)
	p := KeyPlan{AddActive: r.AddActive, AddNext: r.AddNext, Promote: r.Promote, Drop: r.Drop, Why: r.Why, WakeAt: r.WakeAt}
	if !set.Enforced() && set.Active() != nil {
		deadline := firstKey(set).Add(EnforceDeadline)
		switch {
		case fleet.AllAuthenticated:
			p.Enforce = true
			p.Why = append(p.Why, "every status is authenticated; the token server now ignores whatever is not")
		case !now.Before(deadline):
			p.Enforce = true
			p.Why = append(p.Why, fmt.Sprintf("some status is still unauthenticated %s after the first status key; enforced anyway, and the token server ignores it", EnforceDeadline))
		default:
			wake(&p.WakeAt, deadline)
		}
	}
	return p
}

// ringKey is what the key ring reads of k: an active key is due after period; a retired key
// goes RetiredMinimum after its retirement (at once when that was not recorded), but only once no
// status in the fleet uses it.
func ringKey(k *Key, fleet Fleet, period time.Duration, now time.Time) keyring.Key {
	v := keyring.Key{ID: k.ID, State: k.State}
	switch k.State {
	case StateNext:
		v.At = k.CreatedAt
	case StateActive:
		if period > 0 {
			v.At, v.Reason = k.Since().Add(period), fmt.Sprintf("has signed for %s", period)
		}
	case StateRetired:
		if !fleet.InUse[k.ID] {
			v.At, v.Reason = now, "it authenticates no status any more"
			if k.RetiredAt != nil {
				v.At = k.RetiredAt.Add(RetiredMinimum)
			}
		}
	}
	return v
}

func wake(at *time.Time, t time.Time) {
	if at.IsZero() || t.Before(*at) {
		*at = t
	}
}

// firstKey is when the oldest key of the set was made: when the set, hence the upgrade, began.
func firstKey(set *Set) time.Time {
	var first time.Time
	for _, k := range set.Keys {
		if first.IsZero() || k.CreatedAt.Before(first) {
			first = k.CreatedAt
		}
	}
	return first
}

// Apply returns a copy of set (nil for none) with plan done at now.
func Apply(set *Set, plan KeyPlan, now time.Time) (*Set, error) {
	out := &Set{}
	var keys []*Key
	if set != nil {
		out.EnforcedSince, keys = set.EnforcedSince, set.Keys
	}
	keys, err := keyring.Apply(keys, plan.ring(), func(k *Key) string { return k.ID }, func(state State) (*Key, error) {
		return Generate(state, now)
	}, now)
	if err != nil {
		return nil, err
	}
	out.Keys = keys
	if plan.Enforce && out.EnforcedSince == nil {
		at := now.UTC().Truncate(time.Second)
		out.EnforcedSince = &at
	}
	return out, nil
}
