package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestBindingRecord(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 500_000_000, time.UTC)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Truncate(time.Second).Add(d)); return &t }
	revoking := func(c *m2mv1alpha1.M2MClient, before *metav1.Time) *m2mv1alpha1.M2MClient {
		c.Spec.RevokeTokensIssuedBefore = before
		return c
	}
	client := func(uid string, disabled bool, created time.Duration) *m2mv1alpha1.M2MClient {
		c := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), CreationTimestamp: *at(created)}}
		c.Spec.Disabled = disabled
		return c
	}
	status := func(before, disabledSince, deletedAt *metav1.Time, uid string) m2mv1alpha1.ClientIDBindingStatus {
		return m2mv1alpha1.ClientIDBindingStatus{TokensRevokedBefore: before, DisabledSince: disabledSince, DeletedAt: deletedAt, ClientUID: uid}
	}
	for sentence, tc := range map[string]struct {
		st     m2mv1alpha1.ClientIDBindingStatus
		client *m2mv1alpha1.M2MClient
		want   m2mv1alpha1.ClientIDBindingStatus
	}{
		"a live client seen first is recorded by UID and revokes nothing":                   {status(nil, nil, nil, ""), client("a", false, -time.Hour), status(nil, nil, nil, "a")},
		"a disabled client revokes the tokens issued up to the second after the look":       {status(nil, nil, nil, "a"), client("a", true, -time.Hour), status(at(time.Second), at(time.Second), nil, "a")},
		"a client still disabled keeps the first mark":                                      {status(at(-time.Minute), at(-time.Minute), nil, "a"), client("a", true, -time.Hour), status(at(-time.Minute), at(-time.Minute), nil, "a")},
		"a client enabled again keeps its revocation and clears disabledSince":              {status(at(-time.Minute), at(-time.Minute), nil, "a"), client("a", false, -time.Hour), status(at(-time.Minute), nil, nil, "a")},
		"a deleted client revokes the tokens issued up to the second after the look":        {status(nil, nil, nil, "a"), nil, status(at(time.Second), nil, at(time.Second), "a")},
		"a deleted client that was disabled records its deletion":                           {status(at(-time.Minute), at(-time.Minute), nil, "a"), nil, status(at(time.Second), nil, at(time.Second), "a")},
		"a client created again revokes the tokens issued before its creation":              {status(at(-time.Minute), nil, at(-time.Minute), "a"), client("b", false, -time.Second), status(at(-time.Second), nil, nil, "b")},
		"a client created again in the second of the deletion's mark keeps the mark":        {status(at(time.Second), nil, at(time.Second), "a"), client("b", false, 0), status(at(time.Second), nil, nil, "b")},
		"a client replaced between two looks revokes the tokens issued before its creation": {status(nil, nil, nil, "a"), client("b", false, -10*time.Second), status(at(-10*time.Second), nil, nil, "b")},
		"a replaced client never lowers a later revocation":                                 {status(at(time.Hour), nil, nil, "a"), client("b", false, -10*time.Second), status(at(time.Hour), nil, nil, "b")},
		"a disable of the replaced client says nothing about the new one":                   {status(at(-time.Minute), at(-time.Minute), nil, "a"), client("b", true, -10*time.Second), status(at(time.Second), at(time.Second), nil, "b")},
		"a revocation in the spec is recorded":                                              {status(nil, nil, nil, "a"), revoking(client("a", false, -time.Hour), at(-time.Minute)), status(at(-time.Minute), nil, nil, "a")},
		"a revocation in the spec moved back leaves the recorded one":                       {status(at(-time.Minute), nil, nil, "a"), revoking(client("a", false, -time.Hour), at(-2*time.Minute)), status(at(-time.Minute), nil, nil, "a")},
		"a revocation in the spec in the future is recorded only up to now":                 {status(nil, nil, nil, "a"), revoking(client("a", false, -time.Hour), at(24*time.Hour)), status(at(time.Second), nil, nil, "a")},
		"a binding recorded before UIDs were recorded takes the UID without revoking":       {status(at(-time.Minute), nil, nil, ""), client("b", false, -time.Hour), status(at(-time.Minute), nil, nil, "b")},
		"a client replaced before the manager's first look revokes the first one's tokens":  {status(nil, nil, nil, ""), client("b", false, -10*time.Second), status(at(-10*time.Second), nil, nil, "b")},
	} {
		t.Run(sentence, func(t *testing.T) {
			before := *tc.st.DeepCopy()
			// The binding was made with the first client of the ID, a minute ago.
			got := BindingRecord(tc.st, now.Add(-time.Minute), tc.client, now)
			if !statusEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if !statusEqual(tc.st, before) {
				t.Fatal("the status given was changed in place")
			}
		})
	}
}
