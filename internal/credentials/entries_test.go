package credentials

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

var (
	now     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	current = "current-secret-0123456789abcdefghijklmnop"
	next    = "next-secret-0123456789abcdefghijklmnopqrstu"
	old     = "old-secret-0123456789abcdefghijklmnopqrstuv"
)

func entry(secret string, expiresIn *time.Duration) m2mv1alpha1.AcceptedSecret {
	e := m2mv1alpha1.AcceptedSecret{Hash: Hash(secret), CreatedAt: metav1.NewTime(now.Add(-time.Hour))}
	if expiresIn != nil {
		t := metav1.NewTime(now.Add(*expiresIn))
		e.ExpiresAt = &t
	}
	return e
}

func TestUnexpiringCountsTheSecretsWithoutExpiry(t *testing.T) {
	hour := time.Hour
	for want, entries := range map[int][]m2mv1alpha1.AcceptedSecret{
		0: nil,
		1: {entry(old, &hour), entry(current, nil)},
		2: {entry(old, &hour), entry(current, nil), entry(next, nil)},
	} {
		if got := Entries(entries).Unexpiring(); got != want {
			t.Errorf("Unexpiring = %d, want %d", got, want)
		}
	}
}

func TestAcceptAddsANewHashOrClearsTheExpiryOfAKnownOne(t *testing.T) {
	hour := time.Hour
	secretEntry := func(v string) m2mv1alpha1.AcceptedSecret {
		e, _ := ClientSecret{}.Entry(v, now)
		return e
	}
	got := Entries{entry(current, nil)}.Accept(secretEntry(next))
	if len(got) != 2 || got[1].Hash != Hash(next) || got[1].ExpiresAt != nil || !got[1].CreatedAt.Time.Equal(now) || got[1].LastFour != next[len(next)-4:] {
		t.Fatalf("adding a new secret: %+v", got)
	}
	got = Entries{entry(old, &hour), entry(current, nil)}.Accept(secretEntry(old))
	if len(got) != 2 || got[0].ExpiresAt != nil || !got[0].CreatedAt.Time.Equal(now.Add(-time.Hour)) {
		t.Fatalf("re-accepting a known secret: %+v", got)
	}
}

func TestExpireOthersStartsTheGracePeriodOfEverySecretButTheCurrentOne(t *testing.T) {
	soon := 10 * time.Minute
	in := []m2mv1alpha1.AcceptedSecret{entry(old, &soon), entry(current, nil), entry(next, nil)}
	got := Entries(in).ExpireOthers(Hash(next), now, 2*time.Hour)
	if !got[0].ExpiresAt.Time.Equal(now.Add(soon)) {
		t.Error("an entry that already expires got a new expiry")
	}
	if got[1].ExpiresAt == nil || !got[1].ExpiresAt.Time.Equal(now.Add(2*time.Hour)) {
		t.Error("the replaced secret does not expire after the grace period")
	}
	if got[2].ExpiresAt != nil {
		t.Error("the current secret got an expiry")
	}
	if in[1].ExpiresAt != nil {
		t.Error("the input was modified")
	}
}

func TestPruneRemovesExpiredEntriesAndSaysWhenTheNextExpires(t *testing.T) {
	past, soon, later := -time.Second, 5*time.Minute, time.Hour
	kept, removed, nextAt := Entries{entry(old, &past), entry("a", &later), entry("b", &soon), entry(current, nil)}.Prune(now)
	if removed != 1 || len(kept) != 3 {
		t.Fatalf("removed %d, kept %d", removed, len(kept))
	}
	if !nextAt.Equal(now.Add(soon)) {
		t.Fatalf("next expiry %s, want %s", nextAt, now.Add(soon))
	}
	_, removed, nextAt = Entries{entry(current, nil)}.Prune(now)
	if removed != 0 || !nextAt.IsZero() {
		t.Fatal("a lone current secret is pruned or has an expiry")
	}
	_, removed, _ = Entries{entry(old, ptr.To(time.Duration(0)))}.Prune(now)
	if removed != 1 {
		t.Fatal("an entry is still kept at the instant it expires")
	}
}

func TestMakeRoomDropsTheGraceEntriesThatExpireFirstAndKeepsUnexpiringOnes(t *testing.T) {
	in, soon, later := time.Hour, time.Minute, 2*time.Hour
	entries := []m2mv1alpha1.AcceptedSecret{entry("a", &in), entry(current, nil), entry("b", &soon), entry("c", &later)}
	out := Entries(entries).MakeRoom(3)
	if len(out) != 2 || out[0].Hash != Hash(current) || out[1].Hash != Hash("c") {
		t.Fatalf("kept %+v", out)
	}
	if len(entries) != 4 {
		t.Fatal("MakeRoom changed its argument")
	}
	if got := (Entries{entry(current, nil), entry(old, nil)}).MakeRoom(2); len(got) != 2 {
		t.Fatal("an unexpiring entry was dropped")
	}
}

func TestRevokeKeepsTheCurrentEntryAloneAndDropsEveryOtherOneWithOrWithoutExpiry(t *testing.T) {
	hour := time.Hour
	in := []m2mv1alpha1.AcceptedSecret{entry(old, &hour), entry(current, nil), entry(next, nil)}
	kept, dropped := Entries(in).Revoke(Hash(next))
	if dropped != 2 || len(kept) != 1 || kept[0].Hash != Hash(next) || kept[0].ExpiresAt != nil {
		t.Fatalf("dropped %d, kept %+v", dropped, kept)
	}
	if len(in) != 3 || in[0].Hash != Hash(old) {
		t.Fatal("Revoke changed its argument")
	}
	full := make(Entries, 0, 100)
	for i := range 99 {
		full = append(full, entry(strings.Repeat("x", i+1), &hour))
	}
	full = append(full, entry(current, nil))
	if kept, dropped := full.Revoke(Hash(current)); len(kept) != 1 || dropped != 99 {
		t.Fatalf("a full status keeps %d entries after a revocation", len(kept))
	}
}
