package statusmac

import (
	"fmt"
	"slices"
	"time"
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

// KeyPlan is what to do with the set now, and when to look again.
type KeyPlan struct {
	// AddActive: there is no key that signs; make one that signs at once (a new install, or an
	// upgrade from a version without MACs, where nothing is enforced yet).
	AddActive bool
	// AddNext: the active key is due to be replaced; publish its successor.
	AddNext bool
	// Promote: the next key signs, and the active key retires.
	Promote bool
	// Drop lists retired keys that no status uses any more.
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

func wake(at *time.Time, t time.Time) {
	if at.IsZero() || t.Before(*at) {
		*at = t
	}
}

// Plan decides the next step for set (nil when the Secret has none yet) at now, with period the
// active key's lifetime (0 for never).
func Plan(set *Set, fleet Fleet, period time.Duration, now time.Time) KeyPlan {
	var p KeyPlan
	active := set.Active()
	var next *Key
	if set != nil {
		for _, k := range set.Keys {
			if k.State == StateNext {
				next = k
			}
		}
	}
	switch {
	case active == nil && next == nil:
		p.AddActive = true
		p.Why = append(p.Why, "no status key signs; a new one signs at once")
	case next != nil:
		ready := next.CreatedAt.Add(Prepublish)
		if !now.Before(ready) || active == nil {
			p.Promote = true
			p.Why = append(p.Why, fmt.Sprintf("status key %s has been known for %s and now signs", next.ID, Prepublish))
		} else {
			wake(&p.WakeAt, ready)
		}
	case period > 0:
		due := active.CreatedAt.Add(period)
		if active.ActiveAt != nil {
			due = active.ActiveAt.Add(period)
		}
		if !now.Before(due) {
			p.AddNext = true
			p.Why = append(p.Why, fmt.Sprintf("status key %s has signed for %s; its successor is published", active.ID, period))
		} else {
			wake(&p.WakeAt, due)
		}
	}
	if set != nil {
		for _, k := range set.Keys {
			if k.State != StateRetired || fleet.InUse[k.ID] {
				continue
			}
			until := now
			if k.RetiredAt != nil {
				until = k.RetiredAt.Add(RetiredMinimum)
			}
			if now.Before(until) {
				wake(&p.WakeAt, until)
				continue
			}
			p.Drop = append(p.Drop, k.ID)
			p.Why = append(p.Why, fmt.Sprintf("retired status key %s authenticates no status any more", k.ID))
		}
	}
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
	if set != nil {
		out.EnforcedSince = set.EnforcedSince
		for _, k := range set.Keys {
			c := *k
			out.Keys = append(out.Keys, &c)
		}
	}
	at := now.UTC().Truncate(time.Second)
	if plan.AddActive {
		k, err := Generate(StateActive, now)
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, k)
	}
	if plan.AddNext {
		k, err := Generate(StateNext, now)
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, k)
	}
	if plan.Promote {
		for _, k := range out.Keys {
			switch k.State {
			case StateActive:
				k.State, k.RetiredAt = StateRetired, &at
			case StateNext:
				k.State, k.ActiveAt = StateActive, &at
			}
		}
	}
	out.Keys = slices.DeleteFunc(out.Keys, func(k *Key) bool { return slices.Contains(plan.Drop, k.ID) })
	if plan.Enforce && out.EnforcedSince == nil {
		out.EnforcedSince = &at
	}
	return out, nil
}
