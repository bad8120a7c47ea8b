// Package keyring is the one lifecycle of the manager's key rings: the JWT signing keys
// (internal/signingkeys), the status MAC keys (internal/statusmac) and the token server's CA
// (internal/servingcert). In each ring a key is published as next before it is used, so that
// everyone who must know it does by the time it signs; the active key signs; a promotion makes
// the next key active and retires the active one; retired keys stay known until nothing signed
// with them needs them, then go. What differs between the rings (when a key is due for
// replacement, when a retired key may go, which next key is not wanted) is theirs to say:
// Decide takes it as input, and knows nothing of JWTs, MACs or certificates.
package keyring

import (
	"slices"
	"time"
)

// State is where a key is in its life.
type State string

const (
	// StateNext keys are published (in the JWKS, the Secret, the CA bundle) but do not sign yet,
	// so that whoever caches what is published knows them before the first use arrives.
	StateNext State = "next"
	// StateActive is the one key that signs.
	StateActive State = "active"
	// StateRetired keys no longer sign; they stay published while what they signed may be in use.
	StateRetired State = "retired"
)

// Life is where a stored key is in its life and since when: the part of a key that Apply moves.
// Ring key types embed it, so that their JSON carries these fields as it always has.
type Life struct {
	State     State      `json:"state"`
	CreatedAt time.Time  `json:"createdAt"`
	ActiveAt  *time.Time `json:"activeAt,omitempty"`
	RetiredAt *time.Time `json:"retiredAt,omitempty"`
}

// NewLife is the life of a key made at now in state: created to the second (as stored), and an
// active key active from then.
func NewLife(state State, now time.Time) Life {
	l := Life{State: state, CreatedAt: now.UTC().Truncate(time.Second)}
	if state == StateActive {
		at := l.CreatedAt
		l.ActiveAt = &at
	}
	return l
}

// Since is when the key started to sign: when it was made active, or, when that was not
// recorded, when it was made.
func (l *Life) Since() time.Time {
	if l.ActiveAt != nil {
		return *l.ActiveAt
	}
	return l.CreatedAt
}

func (l *Life) life() *Life { return l }

// Stored is a pointer to a ring's key type, which embeds Life.
type Stored[K any] interface {
	*K
	life() *Life
}

// Apply carries out plan at now on a copy of keys: the dropped keys go, a promotion makes the
// next key active and the active one retired (both stamped with now, to the second), and then
// add makes the new keys the plan asks for. id names a key as Plan.Drop does. keys is not changed.
func Apply[K any, P Stored[K]](keys []P, plan Plan, id func(P) string, add func(State) (P, error), now time.Time) ([]P, error) {
	var out []P
	for _, k := range keys {
		if !slices.Contains(plan.Drop, id(k)) {
			c := *k
			out = append(out, P(&c))
		}
	}
	if plan.Promote {
		for _, k := range out {
			at := now.UTC().Truncate(time.Second)
			switch l := k.life(); l.State {
			case StateActive:
				l.State, l.RetiredAt = StateRetired, &at
			case StateNext:
				l.State, l.ActiveAt = StateActive, &at
			}
		}
	}
	for _, a := range []struct {
		yes   bool
		state State
	}{{plan.AddActive, StateActive}, {plan.AddNext, StateNext}} {
		if a.yes {
			k, err := add(a.state)
			if err != nil {
				return nil, err
			}
			out = append(out, k)
		}
	}
	return out, nil
}
