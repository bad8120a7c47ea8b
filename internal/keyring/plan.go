package keyring

import (
	"fmt"
	"time"
)

// Key is what Decide reads of one key: its id and state, and the moment and reason that its
// ring's own rules give it. At and Reason mean, by state:
//
//   - next: At is when the key was published (verifiers could start to learn it); Reason, when
//     set, is why the key is not wanted and goes without ever signing.
//   - active: At is when its successor is due to be published, zero for never; Reason is why,
//     for the sentence that publishes one.
//   - retired: At is when the key goes, zero for not by time alone (something else, such as a
//     status that still uses it, holds it); Reason is why it may go.
type Key struct {
	ID     string
	State  State
	At     time.Time
	Reason string
}

// Rules are what a ring's lifecycle takes as given.
type Rules struct {
	// Noun names a key of the ring in sentences: "key", "status key", "CA".
	Noun string
	// Prepublish is how long a next key is published before it signs.
	Prepublish time.Duration
	// FullTerm: a successor published early still waits for the active key's term, which ends
	// Prepublish after the active key's At. Without it a successor signs once it has been
	// published for Prepublish.
	FullTerm bool
	// RetiredSlots is how many retired keys the ring can hold, 0 for any number: while they are
	// all taken, no successor is published (a promotion would need one more).
	RetiredSlots int
}

// Plan is what to do with a ring now, and when to look again.
type Plan struct {
	// AddActive: no key signs and none is next; make one that signs at once.
	AddActive bool
	// AddNext: the active key is due for replacement; publish its successor as next.
	AddNext bool
	// Promote: the next key signs, and the active key (if any) retires.
	Promote bool
	// Drop lists the ids of keys to remove: retired keys whose time is over, and next keys that
	// are not wanted (they never signed). A ring's own plan may drop any key (the signing keys'
	// emergency rotation drops them all); Decide never drops an active key.
	Drop []string
	// Why explains each step, for logs and events: one sentence for each of Drop, in order,
	// then one for AddActive, AddNext or Promote.
	Why []string
	// WakeAt is when the plan changes next; zero for never (or only when something other than
	// time changes).
	WakeAt time.Time
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool {
	return !p.AddActive && !p.AddNext && !p.Promote && len(p.Drop) == 0
}

// wake moves WakeAt to t when t is after now and before the WakeAt so far.
func (p *Plan) wake(t, now time.Time) {
	if t.After(now) && (p.WakeAt.IsZero() || t.Before(p.WakeAt)) {
		p.WakeAt = t
	}
}

func (p *Plan) drop(k *Key, why string) {
	p.Drop = append(p.Drop, k.ID)
	p.Why = append(p.Why, why)
}

// Decide decides the next step of a ring's life at now: the keys that go, then what happens to
// the active and the next key. A ring with no active key (none, or none its rules let sign)
// promotes its next key at once, or gets a new active key: a ring that cannot sign waits for
// nothing.
func Decide(keys []Key, r Rules, now time.Time) Plan {
	var p Plan
	var active, next *Key
	retired := 0
	for i := range keys {
		k := &keys[i]
		switch k.State {
		case StateActive:
			if active == nil {
				active = k
			}
		case StateNext:
			switch {
			case k.Reason != "":
				p.drop(k, fmt.Sprintf("next %s %s goes: %s", r.Noun, k.ID, k.Reason))
			case next != nil:
				p.drop(k, fmt.Sprintf("next %s %s goes: %s %s is next already, and %s never signed", r.Noun, k.ID, r.Noun, next.ID, k.ID))
			default:
				next = k
			}
		case StateRetired:
			switch {
			case k.At.IsZero():
				retired++
			case !now.Before(k.At):
				p.drop(k, fmt.Sprintf("retired %s %s goes: %s", r.Noun, k.ID, k.Reason))
			default:
				retired++
				p.wake(k.At, now)
			}
		}
	}
	switch {
	case active == nil && next != nil:
		p.Promote = true
		p.Why = append(p.Why, fmt.Sprintf("no %s signs; next %s %s signs at once", r.Noun, r.Noun, next.ID))
	case active == nil:
		p.AddActive = true
		p.Why = append(p.Why, fmt.Sprintf("no %s signs; a new one signs at once", r.Noun))
	case next == nil:
		p.replace(active, r, retired, now)
	default:
		p.promote(active, next, r, now)
	}
	return p
}

// replace publishes the active key's successor when it is due and a retired slot is free.
func (p *Plan) replace(active *Key, r Rules, retired int, now time.Time) {
	full := r.RetiredSlots > 0 && retired >= r.RetiredSlots
	if active.At.IsZero() || now.Before(active.At) || full {
		p.wake(active.At, now)
		return
	}
	start := now.Add(r.Prepublish)
	p.AddNext = true
	p.Why = append(p.Why, fmt.Sprintf("%s %s %s; a successor is published as next, to sign from %s", r.Noun, active.ID, active.Reason, stamp(start)))
	p.wake(start, now)
}

// promote makes the next key sign once it has been published for the prepublish time (and,
// under FullTerm, once the active key's term is over).
func (p *Plan) promote(active, next *Key, r Rules, now time.Time) {
	start := next.At.Add(r.Prepublish)
	if r.FullTerm && !active.At.IsZero() {
		start = later(start, active.At.Add(r.Prepublish))
	}
	if now.Before(start) {
		p.wake(start, now)
		return
	}
	p.Promote = true
	p.Why = append(p.Why, fmt.Sprintf("next %s %s, published at %s, signs; %s %s retires", r.Noun, next.ID, stamp(next.At), r.Noun, active.ID))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// stamp is how sentences give a time: RFC 3339 in UTC.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
