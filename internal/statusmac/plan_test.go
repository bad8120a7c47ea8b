package statusmac

import (
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/keyring"
)

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

func TestPlan(t *testing.T) {
	active := func(created time.Duration) *Key {
		return &Key{ID: "act", Life: keyring.Life{State: StateActive, CreatedAt: t0.Add(created), ActiveAt: at(created)}}
	}
	all := Fleet{AllAuthenticated: true}
	for _, tc := range []struct {
		sentence string
		set      *Set
		fleet    Fleet
		now      time.Time
		check    func(p KeyPlan) bool
	}{
		{"a new install gets a key that signs at once", nil, Fleet{}, t0,
			func(p KeyPlan) bool { return p.AddActive && !p.Enforce }},
		{"an upgrade waits with enforcement while a status is unauthenticated", &Set{Keys: []*Key{active(0)}}, Fleet{}, t0,
			func(p KeyPlan) bool { return p.Empty() }},
		{"an upgrade is enforced at the deadline even while a status is unauthenticated", &Set{Keys: []*Key{active(0)}}, Fleet{}, t0.Add(EnforceDeadline),
			func(p KeyPlan) bool { return p.Enforce }},
		{"an upgrade wakes for the deadline", &Set{Keys: []*Key{active(0)}}, Fleet{}, t0.Add(time.Minute),
			func(p KeyPlan) bool { return !p.Enforce && p.WakeAt.Equal(t0.Add(EnforceDeadline)) }},
		{"enforcement starts once every status is authenticated", &Set{Keys: []*Key{active(0)}}, all, t0,
			func(p KeyPlan) bool { return p.Enforce && !p.AddNext }},
		{"an enforced set is not enforced again", &Set{Keys: []*Key{active(0)}, EnforcedSince: at(0)}, all, t0.Add(time.Hour),
			func(p KeyPlan) bool { return p.Empty() && p.WakeAt.Equal(t0.Add(DefaultPeriod)) }},
		{"a key that has signed for the period gets a successor", &Set{Keys: []*Key{active(0)}, EnforcedSince: at(0)}, all, t0.Add(DefaultPeriod),
			func(p KeyPlan) bool { return p.AddNext && !p.Promote }},
		{"a successor signs only after the prepublish time", &Set{Keys: []*Key{active(0), {ID: "nxt", Life: keyring.Life{State: StateNext, CreatedAt: t0.Add(time.Hour)}}}, EnforcedSince: at(0)}, all, t0.Add(time.Hour + Prepublish - time.Second),
			func(p KeyPlan) bool { return p.Empty() && p.WakeAt.Equal(t0.Add(time.Hour+Prepublish)) }},
		{"a successor known for the prepublish time signs", &Set{Keys: []*Key{active(0), {ID: "nxt", Life: keyring.Life{State: StateNext, CreatedAt: t0.Add(time.Hour)}}}, EnforcedSince: at(0)}, all, t0.Add(time.Hour + Prepublish),
			func(p KeyPlan) bool { return p.Promote }},
		{"a retired key that a status still uses stays", &Set{Keys: []*Key{active(0), {ID: "old", Life: keyring.Life{State: StateRetired, RetiredAt: at(0)}}}, EnforcedSince: at(0)}, Fleet{AllAuthenticated: true, InUse: map[string]bool{"old": true}}, t0.Add(time.Hour),
			func(p KeyPlan) bool { return len(p.Drop) == 0 }},
		{"a retired key stays for the minimum even when unused", &Set{Keys: []*Key{active(0), {ID: "old", Life: keyring.Life{State: StateRetired, RetiredAt: at(0)}}}, EnforcedSince: at(0)}, all, t0.Add(RetiredMinimum - time.Second),
			func(p KeyPlan) bool { return len(p.Drop) == 0 && p.WakeAt.Equal(t0.Add(RetiredMinimum)) }},
		{"a second successor goes, never having signed; the first one signs", &Set{Keys: []*Key{active(0), {ID: "nxt", Life: keyring.Life{State: StateNext, CreatedAt: t0}}, {ID: "nx2", Life: keyring.Life{State: StateNext, CreatedAt: t0}}}, EnforcedSince: at(0)}, all, t0.Add(Prepublish),
			func(p KeyPlan) bool { return p.Promote && len(p.Drop) == 1 && p.Drop[0] == "nx2" }},
		{"a retired key that no status uses is dropped", &Set{Keys: []*Key{active(0), {ID: "old", Life: keyring.Life{State: StateRetired, RetiredAt: at(0)}}}, EnforcedSince: at(0)}, all, t0.Add(RetiredMinimum),
			func(p KeyPlan) bool { return len(p.Drop) == 1 && p.Drop[0] == "old" }},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			p := Plan(tc.set, tc.fleet, DefaultPeriod, tc.now)
			if !tc.check(p) {
				t.Fatalf("plan %+v", p)
			}
		})
	}
}

func TestApplyKeepsOneActiveKeyThroughARotation(t *testing.T) {
	set, err := Apply(nil, KeyPlan{AddActive: true}, t0)
	if err != nil {
		t.Fatal(err)
	}
	first := set.Active().ID
	set, _ = Apply(set, KeyPlan{AddNext: true}, t0.Add(DefaultPeriod))
	if set.Active().ID != first {
		t.Fatal("a published successor signs before its prepublish time")
	}
	set, _ = Apply(set, KeyPlan{Promote: true, Enforce: true}, t0.Add(DefaultPeriod+Prepublish))
	if set.Active().ID == first || set.find(first).State != StateRetired || !set.Enforced() {
		t.Fatalf("after promotion: %+v", set)
	}
	data, _ := set.Encode()
	if _, err := Parse(data); err != nil {
		t.Fatal(err)
	}
}

func TestReplace(t *testing.T) {
	active := &Key{ID: "act", Life: keyring.Life{State: StateActive, CreatedAt: t0, ActiveAt: at(0)}}
	next := &Key{ID: "nxt", Life: keyring.Life{State: StateNext, CreatedAt: t0.Add(time.Minute)}}
	all := Fleet{AllAuthenticated: true}
	for _, tc := range []struct {
		sentence string
		set      *Set
		check    func(p KeyPlan) bool
	}{
		{"a copied active key gets a successor at once, whatever its age", &Set{Keys: []*Key{active}, EnforcedSince: at(0)},
			func(p KeyPlan) bool {
				return p.AddNext && !p.Promote && len(p.Drop) == 0 && p.WakeAt.Equal(t0.Add(2*time.Minute+Prepublish))
			}},
		{"a copied next key goes and a new successor is published", &Set{Keys: []*Key{active, next}, EnforcedSince: at(0)},
			func(p KeyPlan) bool { return p.AddNext && !p.Promote && len(p.Drop) == 1 && p.Drop[0] == "nxt" }},
		{"with no status keys yet a key that signs is made", nil,
			func(p KeyPlan) bool { return p.AddActive }},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			p := Replace(tc.set, all, DefaultPeriod, t0.Add(2*time.Minute))
			if !tc.check(p) || (!p.Empty() && len(p.Why) == 0) {
				t.Fatalf("plan %+v", p)
			}
		})
	}
}
