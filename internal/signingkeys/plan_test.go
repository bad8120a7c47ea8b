package signingkeys

import (
	"slices"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/keyring"
)

var policy = Policy{Algorithm: ES256, Period: 90 * 24 * time.Hour, Prepublish: 24 * time.Hour, Retention: 24*time.Hour + 5*time.Minute}

func key(t *testing.T, alg Algorithm, state State, created time.Time) *Key {
	t.Helper()
	k, err := Generate(alg, state, created)
	if err != nil {
		t.Fatal(err)
	}
	if state == StateRetired {
		at := created
		k.RetiredAt = &at
	}
	return k
}

func TestPlan(t *testing.T) {
	day := 24 * time.Hour
	for sentence, tc := range map[string]struct {
		keys      func() []*Key
		ask       keyring.Ask
		at        time.Time
		want      keyring.Plan
		wakeAt    time.Time
		dropping  int
		signsFrom time.Time
	}{
		"an empty set gets an active key at once": {
			keys: func() []*Key { return nil },
			at:   now, want: keyring.Plan{AddActive: true},
		},
		"a young active key needs nothing until a day before its period ends": {
			keys: func() []*Key { return []*Key{key(t, ES256, StateActive, now)} },
			at:   now.Add(10 * day), wakeAt: now.Add(89 * day),
		},
		"a day before the period ends a next key is published": {
			keys: func() []*Key { return []*Key{key(t, ES256, StateActive, now)} },
			at:   now.Add(89 * day), want: keyring.Plan{AddNext: true}, wakeAt: now.Add(90 * day),
		},
		"a next key published a day ago takes over when the period ends": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), key(t, ES256, StateNext, now.Add(89*day))}
			},
			at: now.Add(90 * day), want: keyring.Plan{Promote: true},
		},
		"a next key published late waits out its full prepublish time": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), key(t, ES256, StateNext, now.Add(100*day))}
			},
			at: now.Add(100*day + time.Hour), wakeAt: now.Add(101 * day),
		},
		"a changed algorithm publishes a key of the new one at once": {
			keys: func() []*Key { return []*Key{key(t, RS256, StateActive, now)} },
			at:   now.Add(time.Hour), want: keyring.Plan{AddNext: true}, wakeAt: now.Add(time.Hour + day),
		},
		"a changed algorithm still waits out the prepublish time": {
			keys: func() []*Key {
				return []*Key{key(t, RS256, StateActive, now), key(t, ES256, StateNext, now.Add(time.Hour))}
			},
			at: now.Add(2 * time.Hour), wakeAt: now.Add(time.Hour + day),
		},
		"a next key of an algorithm no longer wanted is dropped and replaced": {
			keys: func() []*Key {
				return []*Key{key(t, RS256, StateActive, now), key(t, EdDSA, StateNext, now)}
			},
			at: now.Add(time.Hour), want: keyring.Plan{AddNext: true}, dropping: 1, wakeAt: now.Add(time.Hour + day),
		},
		"a retired key stays while its tokens may be valid": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateRetired, now), key(t, ES256, StateActive, now)}
			},
			at: now.Add(day), wakeAt: now.Add(day + 5*time.Minute),
		},
		"a retired key goes once every token it signed has expired": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateRetired, now), key(t, ES256, StateActive, now)}
			},
			at: now.Add(day + 5*time.Minute), dropping: 1, wakeAt: now.Add(89 * day),
		},
		"with no active key a published next key starts at once": {
			keys: func() []*Key { return []*Key{key(t, ES256, StateNext, now)} },
			at:   now, want: keyring.Plan{Promote: true},
		},
		"a planned rotation publishes a successor at once, to sign after the prepublish time": {
			keys: func() []*Key { return []*Key{key(t, ES256, StateActive, now)} },
			ask:  keyring.AskPlanned, at: now.Add(10 * day),
			want: keyring.Plan{AddNext: true}, signsFrom: now.Add(11 * day), wakeAt: now.Add(11 * day),
		},
		"a successor published for a planned rotation signs after its prepublish time, before the period ends": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), forAsk(key(t, ES256, StateNext, now.Add(10*day)))}
			},
			at: now.Add(11 * day), want: keyring.Plan{Promote: true},
		},
		"a successor published for a planned rotation waits out its prepublish time": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), forAsk(key(t, ES256, StateNext, now.Add(10*day)))}
			},
			at: now.Add(11*day - time.Hour), wakeAt: now.Add(11 * day),
		},
		"a planned rotation keeps a next key already published, which signs once its prepublish time is over": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), key(t, ES256, StateNext, now.Add(89*day))}
			},
			ask: keyring.AskPlanned, at: now.Add(89*day + time.Hour), signsFrom: now.Add(90 * day), wakeAt: now.Add(90 * day),
		},
		"a planned rotation makes a next key published for the prepublish time sign at once": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), key(t, ES256, StateNext, now.Add(10*day))}
			},
			ask: keyring.AskPlanned, at: now.Add(12 * day), want: keyring.Plan{Promote: true},
		},
		"a planned rotation replaces a next key of an algorithm no longer wanted": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), key(t, EdDSA, StateNext, now)}
			},
			ask: keyring.AskPlanned, at: now.Add(time.Hour), want: keyring.Plan{AddNext: true}, dropping: 1, signsFrom: now.Add(time.Hour + day),
		},
		"an emergency drops the active, next and retired keys, and a new key signs at once": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateRetired, now), key(t, ES256, StateActive, now), key(t, ES256, StateNext, now.Add(89*day))}
			},
			ask: keyring.AskEmergency, at: now.Add(89*day + time.Hour), want: keyring.Plan{AddActive: true}, dropping: 3,
		},
		"an emergency on an empty set makes a key that signs": {
			keys: func() []*Key { return nil },
			ask:  keyring.AskEmergency, at: now, want: keyring.Plan{AddActive: true},
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := Plan(&Set{Keys: tc.keys()}, policy, tc.ask, tc.at)
			if got.AddActive != tc.want.AddActive || got.AddNext != tc.want.AddNext || got.Promote != tc.want.Promote || len(got.Drop) != tc.dropping {
				t.Fatalf("plan %+v", got)
			}
			if !got.SignsFrom.Equal(tc.signsFrom) {
				t.Fatalf("the next key signs from %s, want %s", got.SignsFrom, tc.signsFrom)
			}
			if !got.Empty() && len(got.Why) == 0 {
				t.Fatal("a plan that changes something must say why")
			}
			if !tc.wakeAt.IsZero() && !got.WakeAt.Equal(tc.wakeAt) {
				t.Fatalf("wake at %s, want %s", got.WakeAt, tc.wakeAt)
			}
		})
	}
}

// forAsk marks k as published for a planned rotation: it signs once published for a day.
func forAsk(k *Key) *Key {
	at := k.CreatedAt.Add(policy.Prepublish)
	k.SignsFrom = &at
	return k
}

func TestApplyPromotesTheNextKeyAndRetiresTheActiveOne(t *testing.T) {
	active, next := key(t, ES256, StateActive, now), key(t, ES256, StateNext, now)
	set := &Set{Keys: []*Key{active, next}}
	got, err := Apply(set, KeyPlan{Plan: keyring.Plan{Promote: true}}, policy, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got.Active().KID != next.KID || got.Find(active.KID).State != StateRetired || got.Find(active.KID).RetiredAt == nil {
		t.Fatalf("keys %+v", got.Keys)
	}
	if set.Keys[0].State != StateActive {
		t.Fatal("Apply changed its input")
	}
}

func TestPolicyValidateRefusesAPrepublishShorterThanTheJWKSCache(t *testing.T) {
	if err := policy.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Policy{
		{Algorithm: ES256, Period: time.Hour, Prepublish: time.Minute},
		{Algorithm: ES256, Period: time.Hour, Prepublish: 2 * time.Hour},
		{Algorithm: "HS256", Period: 90 * 24 * time.Hour, Prepublish: 24 * time.Hour},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}

// The time a planned rotation's successor signs is kept in the Secret with the key, so that the
// decisions after it (and a manager that restarts) still end the active key's term then.
func TestAPlannedRotationRecordsWhenItsSuccessorSignsAndItSignsThen(t *testing.T) {
	set := &Set{Keys: []*Key{key(t, ES256, StateActive, now)}}
	asked := now.Add(10 * 24 * time.Hour)
	got, err := Apply(set, Plan(set, policy, keyring.AskPlanned, asked), policy, asked)
	if err != nil {
		t.Fatal(err)
	}
	var next *Key
	for _, k := range got.Keys {
		if k.State == StateNext {
			next = k
		}
	}
	if next == nil || next.SignsFrom == nil || !next.SignsFrom.Equal(asked.Add(policy.Prepublish)) {
		t.Fatalf("keys %+v", got.Keys)
	}
	data, _ := got.Encode()
	parsed, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if p := Plan(parsed, policy, keyring.AskNone, next.SignsFrom.Add(-time.Second)); !p.Empty() || !p.WakeAt.Equal(*next.SignsFrom) {
		t.Fatalf("before its time: plan %+v", p)
	}
	if p := Plan(parsed, policy, keyring.AskNone, *next.SignsFrom); !p.Promote {
		t.Fatalf("at its time: plan %+v", p)
	}
}

// After an emergency the set holds one key, new, that signs; none of the keys it held before.
func TestAnEmergencyLeavesOnlyANewKeyThatSigns(t *testing.T) {
	old := []*Key{key(t, ES256, StateRetired, now), key(t, ES256, StateActive, now), key(t, ES256, StateNext, now)}
	set := &Set{Keys: old}
	got, err := Apply(set, Plan(set, policy, keyring.AskEmergency, now), policy, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Keys) != 1 || got.Active() == nil || slices.ContainsFunc(old, func(k *Key) bool { return k.KID == got.Active().KID }) {
		t.Fatalf("keys %+v", got.Keys)
	}
}
