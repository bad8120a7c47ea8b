package keyring

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// testKey is a ring's key type as the rings make theirs: an id, Life, and key material.
type testKey struct {
	ID string `json:"id"`
	Life
	Secret string `json:"secret"`
}

func keyID(k *testKey) string { return k.ID }

func adder(now time.Time) func(State) (*testKey, error) {
	return func(s State) (*testKey, error) {
		return &testKey{ID: "new-" + string(s), Life: NewLife(s, now), Secret: "s"}, nil
	}
}

func TestApply(t *testing.T) {
	at := t0.Add(90 * time.Minute)
	for sentence, tc := range map[string]struct {
		plan  Plan
		check func(out []*testKey) bool
	}{
		"an empty plan copies the keys": {Plan{}, func(out []*testKey) bool {
			return len(out) == 3 && out[0].State == StateRetired && out[1].State == StateActive && out[2].State == StateNext
		}},
		"a promotion makes the next key active and retires the active one, both at now": {Plan{Promote: true}, func(out []*testKey) bool {
			return out[1].State == StateRetired && out[1].RetiredAt.Equal(at.Truncate(time.Second)) &&
				out[2].State == StateActive && out[2].ActiveAt.Equal(at.Truncate(time.Second)) && out[0].State == StateRetired
		}},
		"a dropped next key is gone before the promotion, which then has nothing to promote": {Plan{Drop: []string{"n"}, Promote: true}, func(out []*testKey) bool {
			return len(out) == 2 && out[0].ID == "r" && out[1].State == StateRetired
		}},
		"a dropped retired key is gone and the others keep their order": {Plan{Drop: []string{"r"}}, func(out []*testKey) bool {
			return len(out) == 2 && out[0].ID == "a" && out[1].ID == "n"
		}},
		"a new active key signs from now; a new next key is published from now": {Plan{AddActive: true, AddNext: true}, func(out []*testKey) bool {
			return len(out) == 5 && out[3].State == StateActive && out[3].ActiveAt.Equal(at.Truncate(time.Second)) &&
				out[4].State == StateNext && out[4].ActiveAt == nil && out[4].CreatedAt.Equal(at.Truncate(time.Second))
		}},
	} {
		t.Run(sentence, func(t *testing.T) {
			retiredAt := t0.Add(-time.Hour)
			in := []*testKey{
				{ID: "r", Life: Life{State: StateRetired, CreatedAt: t0.Add(-2 * time.Hour), RetiredAt: &retiredAt}},
				{ID: "a", Life: NewLife(StateActive, t0.Add(-time.Hour))},
				{ID: "n", Life: NewLife(StateNext, t0)},
			}
			out, err := Apply(in, tc.plan, keyID, adder(at), at)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(out) {
				t.Fatalf("keys %+v", out)
			}
			if in[1].State != StateActive || in[2].State != StateNext || len(in) != 3 {
				t.Fatal("Apply changed its input")
			}
		})
	}
}

func TestApplyFailsWhenAKeyCannotBeMade(t *testing.T) {
	broken := func(State) (*testKey, error) { return nil, errors.New("no entropy") }
	if _, err := Apply(nil, Plan{AddActive: true}, keyID, broken, t0); err == nil {
		t.Fatal("a key that could not be made was not an error")
	}
}

// A ring's key type that embeds Life stores its state and times as the rings always have, and a
// new key is created to the second, and active from its creation when it is made active.
func TestLifeIsStoredAsTheRingsAlwaysStoredIt(t *testing.T) {
	k := testKey{ID: "x", Life: NewLife(StateActive, t0.Add(500*time.Millisecond)), Secret: "s"}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"x","state":"active","createdAt":"2026-11-29T12:00:00Z","activeAt":"2026-11-29T12:00:00Z","secret":"s"}`; string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	if next := NewLife(StateNext, t0); next.ActiveAt != nil || !next.Since().Equal(t0) {
		t.Fatalf("a next key's life %+v", next)
	}
}
