package credentials

import (
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// Entries is a client's status.acceptedSecrets, in the order they were accepted: the algebra of
// rotation. Every method returns a new list and leaves its receiver as it was, so that a caller
// can compare before and after, and restore the old list when a write fails.
//
// Invariant, outside a rotation in progress: exactly one entry has no expiry, and it is the
// fingerprint of the credential the Secret carries.
type Entries []m2mv1alpha1.AcceptedSecret

// Unexpiring counts the entries that have no expiry: one in the steady state, more while a
// rotation is in progress.
func (es Entries) Unexpiring() int {
	n := 0
	for _, e := range es {
		if e.ExpiresAt == nil {
			n++
		}
	}
	return n
}

// Accept returns the entries with accepted (a Kind's Entry) last and without expiry. An existing
// entry for its hash keeps its creation time.
func (es Entries) Accept(accepted m2mv1alpha1.AcceptedSecret) Entries {
	out := make(Entries, 0, len(es)+1)
	accepted.ExpiresAt, accepted.MAC = nil, ""
	for _, e := range es {
		if e.Hash == accepted.Hash {
			accepted.CreatedAt = e.CreatedAt
			continue
		}
		out = append(out, e)
	}
	return append(out, accepted)
}

// MakeRoom returns the entries with at most limit-1 of them, so that one more can be accepted:
// the entries in their grace period that expire first go. Entries without expiry always stay.
func (es Entries) MakeRoom(limit int) Entries {
	out := slices.Clone(es)
	for len(out) >= limit {
		first := -1
		for i, e := range out {
			if e.ExpiresAt != nil && (first < 0 || e.ExpiresAt.Before(out[first].ExpiresAt)) {
				first = i
			}
		}
		if first < 0 {
			break
		}
		out = slices.Delete(out, first, first+1)
	}
	return out
}

// ExpireOthers returns the entries where every entry other than the one of hash current that has
// no expiry expires at now + grace. Entries that already expire keep their time.
func (es Entries) ExpireOthers(current string, now time.Time, grace time.Duration) Entries {
	out := make(Entries, 0, len(es))
	at := metav1.NewTime(now.Add(grace))
	for _, e := range es {
		if e.Hash != current && e.ExpiresAt == nil {
			e.ExpiresAt = at.DeepCopy()
		}
		out = append(out, e)
	}
	return out
}

// Revoke returns the entry of hash current alone, and how many others it dropped: a
// revocation's end, where every earlier credential stops being accepted at once, those in their
// grace period included. Dropped rather than expired, so that status shows exactly one accepted
// credential and cannot grow however often a client is revoked.
func (es Entries) Revoke(current string) (kept Entries, dropped int) {
	for _, e := range es {
		if e.Hash == current {
			kept = append(kept, e)
		} else {
			dropped++
		}
	}
	return kept, dropped
}

// Prune returns the entries still accepted at now, the number removed, and the earliest time at
// which a kept entry expires (zero when none does).
func (es Entries) Prune(now time.Time) (kept Entries, removed int, next time.Time) {
	for _, e := range es {
		if !Accepted(e, now) {
			removed++
			continue
		}
		kept = append(kept, e)
		if e.ExpiresAt != nil && (next.IsZero() || e.ExpiresAt.Time.Before(next)) {
			next = e.ExpiresAt.Time
		}
	}
	return kept, removed, next
}
