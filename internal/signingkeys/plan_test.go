package signingkeys

import (
	"testing"
	"time"
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
		keys     func() []*Key
		at       time.Time
		want     KeyPlan
		wakeAt   time.Time
		dropping int
	}{
		"an empty set gets an active key at once": {
			keys: func() []*Key { return nil },
			at:   now, want: KeyPlan{AddActive: true},
		},
		"a young active key needs nothing until a day before its period ends": {
			keys: func() []*Key { return []*Key{key(t, ES256, StateActive, now)} },
			at:   now.Add(10 * day), wakeAt: now.Add(89 * day),
		},
		"a day before the period ends a next key is published": {
			keys: func() []*Key { return []*Key{key(t, ES256, StateActive, now)} },
			at:   now.Add(89 * day), want: KeyPlan{AddNext: true}, wakeAt: now.Add(90 * day),
		},
		"a next key published a day ago takes over when the period ends": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), key(t, ES256, StateNext, now.Add(89*day))}
			},
			at: now.Add(90 * day), want: KeyPlan{Promote: true},
		},
		"a next key published late waits out its full prepublish time": {
			keys: func() []*Key {
				return []*Key{key(t, ES256, StateActive, now), key(t, ES256, StateNext, now.Add(100*day))}
			},
			at: now.Add(100*day + time.Hour), wakeAt: now.Add(101 * day),
		},
		"a changed algorithm publishes a key of the new one at once": {
			keys: func() []*Key { return []*Key{key(t, RS256, StateActive, now)} },
			at:   now.Add(time.Hour), want: KeyPlan{AddNext: true}, wakeAt: now.Add(time.Hour + day),
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
			at: now.Add(time.Hour), want: KeyPlan{AddNext: true}, dropping: 1, wakeAt: now.Add(time.Hour + day),
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
			at:   now, want: KeyPlan{Promote: true},
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := Plan(&Set{Keys: tc.keys()}, policy, tc.at)
			if got.AddActive != tc.want.AddActive || got.AddNext != tc.want.AddNext || got.Promote != tc.want.Promote || len(got.Drop) != tc.dropping {
				t.Fatalf("plan %+v", got)
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

func TestApplyPromotesTheNextKeyAndRetiresTheActiveOne(t *testing.T) {
	active, next := key(t, ES256, StateActive, now), key(t, ES256, StateNext, now)
	set := &Set{Keys: []*Key{active, next}}
	got, err := Apply(set, KeyPlan{Promote: true}, policy, now.Add(time.Hour))
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
