package keyring

import (
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func next(id string, published time.Time) Key { return Key{ID: id, State: StateNext, At: published} }
func active(id string, due time.Time) Key {
	return Key{ID: id, State: StateActive, At: due, Reason: "is due"}
}
func retired(id string, leaves time.Time) Key {
	return Key{ID: id, State: StateRetired, At: leaves, Reason: "nothing needs it"}
}

func TestDecide(t *testing.T) {
	h := time.Hour
	ring := Rules{Noun: "key", Prepublish: h}
	fullTerm := Rules{Noun: "key", Prepublish: h, FullTerm: true}
	oneSlot := Rules{Noun: "key", Prepublish: h, RetiredSlots: 1}
	for sentence, tc := range map[string]struct {
		keys   []Key
		rules  Rules
		want   Plan // its AddActive, AddNext, Promote and Drop
		wakeAt time.Time
	}{
		"an empty ring gets a key that signs at once": {
			nil, ring, Plan{AddActive: true}, time.Time{},
		},
		"a ring without an active key promotes its next key at once, however new": {
			[]Key{next("n", t0)}, ring, Plan{Promote: true}, time.Time{},
		},
		"an active key not due yet needs nothing until it is due": {
			[]Key{active("a", t0.Add(10*h))}, ring, Plan{}, t0.Add(10 * h),
		},
		"an active key never due needs nothing, ever": {
			[]Key{active("a", time.Time{})}, ring, Plan{}, time.Time{},
		},
		"a due active key gets a successor, which signs after the prepublish time": {
			[]Key{active("a", t0)}, ring, Plan{AddNext: true}, t0.Add(h),
		},
		"a successor waits until it has been published for the prepublish time": {
			[]Key{active("a", t0), next("n", t0)}, ring, Plan{}, t0.Add(h),
		},
		"a successor published for the prepublish time signs": {
			[]Key{active("a", t0.Add(-2*h)), next("n", t0.Add(-h))}, ring, Plan{Promote: true}, time.Time{},
		},
		"a successor published early signs after its prepublish time without a full term": {
			[]Key{active("a", t0.Add(100*h)), next("n", t0.Add(-h))}, ring, Plan{Promote: true}, time.Time{},
		},
		"a successor published early waits for the active key's full term": {
			[]Key{active("a", t0.Add(100*h)), next("n", t0.Add(-h))}, fullTerm, Plan{}, t0.Add(101 * h),
		},
		"a next key that is not wanted goes, and a new successor is published": {
			[]Key{active("a", t0), {ID: "n", State: StateNext, At: t0, Reason: "it is of another kind"}}, ring, Plan{AddNext: true, Drop: []string{"n"}}, t0.Add(h),
		},
		"a second next key goes; the first one stays next": {
			[]Key{active("a", t0.Add(10*h)), next("n1", t0), next("n2", t0)}, ring, Plan{Drop: []string{"n2"}}, t0.Add(h),
		},
		"a retired key stays until its time": {
			[]Key{active("a", t0.Add(10*h)), retired("r", t0.Add(2*h))}, ring, Plan{}, t0.Add(2 * h),
		},
		"a retired key goes at its time": {
			[]Key{active("a", t0.Add(10*h)), retired("r", t0)}, ring, Plan{Drop: []string{"r"}}, t0.Add(10 * h),
		},
		"a retired key held by something other than time stays, and wakes nothing": {
			[]Key{active("a", time.Time{}), retired("r", time.Time{})}, ring, Plan{}, time.Time{},
		},
		"a ring whose retired slots are taken publishes no successor until one is free": {
			[]Key{active("a", t0), retired("r", t0.Add(2*h))}, oneSlot, Plan{}, t0.Add(2 * h),
		},
		"a retired key that goes now frees its slot for a successor": {
			[]Key{active("a", t0), retired("r", t0)}, oneSlot, Plan{AddNext: true, Drop: []string{"r"}}, t0.Add(h),
		},
		"a ring without an active key promotes its next key even while retired keys stay": {
			[]Key{retired("r", t0.Add(2*h)), next("n", t0)}, oneSlot, Plan{Promote: true}, t0.Add(2 * h),
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := Decide(tc.keys, tc.rules, t0)
			if got.AddActive != tc.want.AddActive || got.AddNext != tc.want.AddNext || got.Promote != tc.want.Promote || !slices.Equal(got.Drop, tc.want.Drop) {
				t.Fatalf("plan %+v", got)
			}
			if !got.WakeAt.Equal(tc.wakeAt) {
				t.Fatalf("wake at %s, want %s", got.WakeAt, tc.wakeAt)
			}
			steps := len(got.Drop)
			if got.AddActive || got.AddNext || got.Promote {
				steps++
			}
			if len(got.Why) != steps {
				t.Fatalf("%d sentences for %d steps: %q", len(got.Why), steps, got.Why)
			}
			for _, why := range got.Why {
				if !strings.Contains(why, "key") {
					t.Fatalf("%q does not name the ring's keys", why)
				}
			}
		})
	}
}
