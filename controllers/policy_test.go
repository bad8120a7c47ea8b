package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

var (
	now     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	current = "current-secret-0123456789abcdefghijklmnop"
	next    = "next-secret-0123456789abcdefghijklmnopqrstu"
	old     = "old-secret-0123456789abcdefghijklmnopqrstuv"
)

func clientWith(entries ...m2mv1alpha1.AcceptedSecret) *m2mv1alpha1.M2MClient {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", UID: "uid-1"}}
	obj.Status.AcceptedSecrets = entries
	if len(entries) > 0 {
		obj.Status.ClientID = "m2m-id"
	}
	return obj
}

func entry(secret string, expiresIn *time.Duration) m2mv1alpha1.AcceptedSecret {
	e := m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(secret), CreatedAt: metav1.NewTime(now.Add(-time.Hour))}
	if expiresIn != nil {
		t := metav1.NewTime(now.Add(*expiresIn))
		e.ExpiresAt = &t
	}
	return e
}

func ownedSecret(value string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "c-credentials", Namespace: "ns", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: "m2m.dev/v1alpha1", Kind: "M2MClient", Name: "c", UID: "uid-1", Controller: ptr.To(true),
	}}}}
	if value != "" {
		s.Data = map[string][]byte{m2mv1alpha1.SecretKeyClientSecret: []byte(value), m2mv1alpha1.SecretKeyClientID: []byte("m2m-id")}
	}
	return s
}

func TestDecideSecret(t *testing.T) {
	hour := time.Hour
	ago := -time.Minute
	foreign := ownedSecret(current)
	foreign.OwnerReferences = nil
	otherOwner := ownedSecret(current)
	otherOwner.OwnerReferences[0].Name = "someone-else"
	restored := ownedSecret(current)
	restored.OwnerReferences[0].UID = "uid-before-backup"

	for sentence, tc := range map[string]struct {
		obj    *m2mv1alpha1.M2MClient
		secret *corev1.Secret
		want   SecretAction
	}{
		"a new client with no Secret gets a generated secret": {
			obj: clientWith(), secret: nil, want: ActionGenerate,
		},
		"a deleted Secret is written again with a new secret": {
			obj: clientWith(entry(current, nil)), secret: nil, want: ActionGenerate,
		},
		"a Secret whose client_secret was removed gets a new secret": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(""), want: ActionGenerate,
		},
		"a Secret with no owner is never touched": {
			obj: clientWith(), secret: foreign, want: ActionConflict,
		},
		"a Secret owned by another client is never touched": {
			obj: clientWith(entry(current, nil)), secret: otherOwner, want: ActionConflict,
		},
		"a Secret that carries the one current secret needs nothing": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(current), want: ActionNone,
		},
		"a Secret owned by this client restored with a new UID is still its own": {
			obj: clientWith(entry(current, nil)), secret: restored, want: ActionNone,
		},
		"previous secrets in their grace period need nothing": {
			obj: clientWith(entry(old, &hour), entry(current, nil)), secret: ownedSecret(current), want: ActionNone,
		},
		"a crash after writing the new secret but before expiring the old one completes the rotation": {
			obj: clientWith(entry(current, nil), entry(next, nil)), secret: ownedSecret(next), want: ActionCompleteRotation,
		},
		"a crash after persisting a new hash but before writing it resumes the rotation": {
			obj: clientWith(entry(current, nil), entry(next, nil)), secret: ownedSecret(current), want: ActionResumeRotation,
		},
		"a crash in a rotation that follows an expiring older secret resumes it too": {
			obj: clientWith(entry(old, &hour), entry(current, nil), entry(next, nil)), secret: ownedSecret(current), want: ActionResumeRotation,
		},
		"a strong secret written by a person is adopted": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(next), want: ActionAdopt,
		},
		"a Secret set back to a previous secret within its grace period re-accepts it": {
			obj: clientWith(entry(old, &hour), entry(current, nil)), secret: ownedSecret(old), want: ActionAdopt,
		},
		"a Secret set back to a secret whose grace period is over, not yet pruned, re-accepts it": {
			obj: clientWith(entry(old, &ago), entry(current, nil)), secret: ownedSecret(old), want: ActionAdopt,
		},
		"a short secret written by a person is refused": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret("hunter2"), want: ActionRefuseWeak,
		},
		"a short secret is refused even when status was lost": {
			obj: clientWith(), secret: ownedSecret("hunter2"), want: ActionRefuseWeak,
		},
		"a lost status is rebuilt from the Secret": {
			obj: clientWith(), secret: ownedSecret(current), want: ActionRecoverStatus,
		},
		"a new trigger value in the steady state rotates": {
			obj: withTrigger(clientWith(entry(current, nil)), "v2"), secret: ownedSecret(current), want: ActionRotate,
		},
		"a new trigger value waits while a rotation is completed": {
			obj: withTrigger(clientWith(entry(current, nil), entry(next, nil)), "v2"), secret: ownedSecret(next), want: ActionCompleteRotation,
		},
		"a new trigger value waits while an interrupted rotation is resumed": {
			obj: withTrigger(clientWith(entry(current, nil), entry(next, nil)), "v2"), secret: ownedSecret(current), want: ActionResumeRotation,
		},
		"a new trigger value waits while a deleted Secret is written again": {
			obj: withTrigger(clientWith(entry(current, nil)), "v2"), secret: nil, want: ActionGenerate,
		},
		"a new trigger value never rotates a Secret that is not the client's": {
			obj: withTrigger(clientWith(entry(current, nil)), "v2"), secret: foreign, want: ActionConflict,
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.want {
				t.Fatalf("action %s (%s), want %s", got.Action, got.Why, tc.want)
			}
			if got.Why == "" {
				t.Fatal("a decision must say why")
			}
			for _, s := range []string{current, next, old, "hunter2"} {
				if strings.Contains(got.Why, s) {
					t.Fatalf("the explanation %q contains a secret", got.Why)
				}
			}
		})
	}
}

func withTrigger(obj *m2mv1alpha1.M2MClient, trigger string) *m2mv1alpha1.M2MClient {
	obj.Spec.Rotation.Trigger, obj.Status.LastRotationTrigger = trigger, "v1"
	return obj
}

// A rotation is a decision like the others: its reason travels with it, and a due rotation that
// cannot happen yet says so without acting.
func TestDecideSecretCarriesTheRotationReason(t *testing.T) {
	rotated := metav1.NewTime(now.Add(-2 * time.Hour))
	scheduled := clientWith(entry(current, nil))
	scheduled.Spec.Rotation.Period = &metav1.Duration{Duration: time.Hour}
	scheduled.Status.LastRotationTime = &rotated
	full := scheduled.DeepCopy()
	for i := 1; i < MaxAcceptedSecrets; i++ {
		hour := time.Hour
		full.Status.AcceptedSecrets = append([]m2mv1alpha1.AcceptedSecret{entry(strings.Repeat("x", i), &hour)}, full.Status.AcceptedSecrets...)
	}
	for sentence, tc := range map[string]struct {
		obj      *m2mv1alpha1.M2MClient
		secret   *corev1.Secret
		action   SecretAction
		rotation RotationReason
	}{
		"a passed period rotates on schedule":           {scheduled, ownedSecret(current), ActionRotate, RotationScheduled},
		"a new trigger rotates for the trigger":         {withTrigger(clientWith(entry(current, nil)), "v2"), ownedSecret(current), ActionRotate, RotationTrigger},
		"a due rotation with a full status waits":       {full, ownedSecret(current), ActionNone, RotationDeferred},
		"an interrupted rotation resumes":               {clientWith(entry(current, nil), entry(next, nil)), ownedSecret(current), ActionResumeRotation, RotationResumed},
		"the steady state with nothing due rotates not": {clientWith(entry(current, nil)), ownedSecret(current), ActionNone, RotationNotDue},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.action || got.Rotation != tc.rotation {
				t.Fatalf("got %s/%q (%s), want %s/%q", got.Action, got.Rotation, got.Why, tc.action, tc.rotation)
			}
		})
	}
}

func TestOnlyGenerateRotateAndResumeIssueANewSecret(t *testing.T) {
	for _, a := range []SecretAction{ActionNone, ActionGenerate, ActionRotate, ActionAdopt, ActionRecoverStatus, ActionCompleteRotation, ActionResumeRotation, ActionRefuseWeak, ActionConflict} {
		want := a == ActionGenerate || a == ActionRotate || a == ActionResumeRotation
		if a.Issues() != want {
			t.Errorf("%s.Issues() = %v", a, a.Issues())
		}
	}
}

func TestUnexpiringCountsTheSecretsWithoutExpiry(t *testing.T) {
	hour := time.Hour
	for want, entries := range map[int][]m2mv1alpha1.AcceptedSecret{
		0: nil,
		1: {entry(old, &hour), entry(current, nil)},
		2: {entry(old, &hour), entry(current, nil), entry(next, nil)},
	} {
		if got := Unexpiring(entries); got != want {
			t.Errorf("Unexpiring = %d, want %d", got, want)
		}
	}
}

func TestAcceptAddsANewHashOrClearsTheExpiryOfAKnownOne(t *testing.T) {
	hour := time.Hour
	secretEntry := func(v string) m2mv1alpha1.AcceptedSecret {
		e, _ := credentials.ClientSecret{}.Entry(v, now)
		return e
	}
	got := Accept([]m2mv1alpha1.AcceptedSecret{entry(current, nil)}, secretEntry(next))
	if len(got) != 2 || got[1].Hash != credentials.Hash(next) || got[1].ExpiresAt != nil || !got[1].CreatedAt.Time.Equal(now) || got[1].LastFour != next[len(next)-4:] {
		t.Fatalf("adding a new secret: %+v", got)
	}
	got = Accept([]m2mv1alpha1.AcceptedSecret{entry(old, &hour), entry(current, nil)}, secretEntry(old))
	if len(got) != 2 || got[0].ExpiresAt != nil || !got[0].CreatedAt.Time.Equal(now.Add(-time.Hour)) {
		t.Fatalf("re-accepting a known secret: %+v", got)
	}
}

func TestExpireOthersStartsTheGracePeriodOfEverySecretButTheCurrentOne(t *testing.T) {
	soon := 10 * time.Minute
	in := []m2mv1alpha1.AcceptedSecret{entry(old, &soon), entry(current, nil), entry(next, nil)}
	got := ExpireOthers(in, credentials.Hash(next), now, 2*time.Hour)
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
	kept, removed, nextAt := Prune([]m2mv1alpha1.AcceptedSecret{entry(old, &past), entry("a", &later), entry("b", &soon), entry(current, nil)}, now)
	if removed != 1 || len(kept) != 3 {
		t.Fatalf("removed %d, kept %d", removed, len(kept))
	}
	if !nextAt.Equal(now.Add(soon)) {
		t.Fatalf("next expiry %s, want %s", nextAt, now.Add(soon))
	}
	_, removed, nextAt = Prune([]m2mv1alpha1.AcceptedSecret{entry(current, nil)}, now)
	if removed != 0 || !nextAt.IsZero() {
		t.Fatal("a lone current secret is pruned or has an expiry")
	}
	_, removed, _ = Prune([]m2mv1alpha1.AcceptedSecret{entry(old, ptr.To(time.Duration(0)))}, now)
	if removed != 1 {
		t.Fatal("an entry is still kept at the instant it expires")
	}
}

func TestResolveClientID(t *testing.T) {
	withSpec := clientWith()
	withSpec.Spec.ClientID = "imported"
	withStatus := clientWith(entry(current, nil))
	lost := clientWith()
	younger := ownedSecret(current)
	younger.Data[m2mv1alpha1.SecretKeyClientID] = []byte("m2m-someone-elses")
	for sentence, tc := range map[string]struct {
		obj    *m2mv1alpha1.M2MClient
		secret *corev1.Secret
		bound  []string
		want   string
		source IDSource
	}{
		"an imported client ID in the spec wins":                                    {withSpec, ownedSecret(current), nil, "imported", IDFromSpec},
		"the client ID in status is kept":                                           {withStatus, nil, nil, "m2m-id", IDFromStatus},
		"a lost status takes the ID its Secret names when a binding gives it to it": {lost, ownedSecret(current), []string{"m2m-old", "m2m-id"}, "m2m-id", IDFromBinding},
		"a lost status never takes an ID only its own Secret names":                 {lost, younger, nil, "", IDNew},
		"a lost status takes the newest bound ID when its Secret names another":     {lost, younger, []string{"m2m-old", "m2m-newer"}, "m2m-newer", IDFromBinding},
		"a re-created client gets the ID bound to its namespace and name":           {clientWith(), nil, []string{"m2m-id"}, "m2m-id", IDFromBinding},
		"a new client gets a generated ID":                                          {clientWith(), nil, nil, "", IDNew},
	} {
		t.Run(sentence, func(t *testing.T) {
			if got, source := ResolveClientID(tc.obj, tc.secret, tc.bound); got != tc.want || source != tc.source {
				t.Fatalf("got %q from %s, want %q from %s", got, source, tc.want, tc.source)
			}
		})
	}
}

func TestTrustStatus(t *testing.T) {
	key, err := statusmac.Generate(statusmac.StateActive, now)
	if err != nil {
		t.Fatal(err)
	}
	enforced := &statusmac.Set{Keys: []*statusmac.Key{key}, EnforcedSince: &now}
	upgrading := &statusmac.Set{Keys: []*statusmac.Key{key}}
	hour, forever := time.Hour, 9999*24*time.Hour
	sealed := func(entries ...m2mv1alpha1.AcceptedSecret) *m2mv1alpha1.M2MClient {
		obj := clientWith(entries...)
		if err := enforced.Seal(obj); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	addedHash := sealed(entry(current, nil))
	addedHash.Status.AcceptedSecrets = append(addedHash.Status.AcceptedSecrets, entry(old, &forever))
	stolenID := sealed(entry(current, nil))
	stolenID.Status.ClientID = "m2m-victim"
	newUID := sealed(entry(current, nil))
	newUID.UID = "uid-restored"
	legacy := clientWith(entry(current, nil), entry(old, &forever))
	oddID := clientWith(entry(current, nil))
	oddID.Status.ClientID = "abc@clients"
	pemKey, _ := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Issue()
	keyEntry, _ := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Entry(pemKey, now)
	keyEntry.ExpiresAt = ptr.To(metav1.NewTime(now.Add(forever)))
	addedKeyBeforeEnforcement := clientWith(entry(current, nil), keyEntry)

	for sentence, tc := range map[string]struct {
		obj       *m2mv1alpha1.M2MClient
		keys      *statusmac.Set
		clientID  string
		kept      int
		discarded int
		check     func(StatusTrust) bool
	}{
		"a status the manager sealed is kept whole":                                                    {sealed(entry(current, nil), entry(old, &hour)), enforced, "m2m-id", 2, 0, nil},
		"a hash someone else added is discarded and the rest kept":                                     {addedHash, enforced, "m2m-id", 1, 1, nil},
		"a client ID someone else wrote is discarded with every entry":                                 {stolenID, enforced, "", 0, 2, nil},
		"a restored object (new UID) has lost its status":                                              {newUID, enforced, "", 0, 2, nil},
		"entries without a client ID are discarded":                                                    {clientWith(), enforced, "", 0, 0, nil},
		"an upgrade keeps what the previous version wrote":                                             {legacy, upgrading, "m2m-id", 2, 0, func(tr StatusTrust) bool { return tr.Migrated == 2 }},
		"an upgrade keeps a grace entry at most one grace period from now":                             {legacy, upgrading, "m2m-id", 2, 0, func(tr StatusTrust) bool { return tr.Entries[1].ExpiresAt.Time.Equal(now.Add(time.Hour)) }},
		"an upgrade with no status keys at all still keeps what the version wrote":                     {legacy, nil, "m2m-id", 2, 0, nil},
		"an upgrade does not take over a client ID no version could have issued":                       {oddID, upgrading, "", 0, 2, nil},
		"an upgrade never takes over a key's entry without a MAC, which no version without MACs wrote": {addedKeyBeforeEnforcement, upgrading, "m2m-id", 1, 1, nil},
	} {
		t.Run(sentence, func(t *testing.T) {
			tr := TrustStatus(tc.obj, tc.keys, now)
			if tr.ClientID != tc.clientID || len(tr.Entries) != tc.kept || tr.Discarded != tc.discarded {
				t.Fatalf("got ID %q, %d kept, %d discarded", tr.ClientID, len(tr.Entries), tr.Discarded)
			}
			if tc.check != nil && !tc.check(tr) {
				t.Fatalf("got %+v", tr)
			}
		})
	}
}

func TestRotationDue(t *testing.T) {
	rotated := metav1.NewTime(now.Add(-2 * time.Hour))
	withPolicy := func(period time.Duration, trigger, lastTrigger, annotation, lastAnnotation string, entries int) *m2mv1alpha1.M2MClient {
		obj := clientWith(entry(current, nil))
		for i := 1; i < entries; i++ {
			hour := time.Hour
			obj.Status.AcceptedSecrets = append(obj.Status.AcceptedSecrets, entry(strings.Repeat("x", i), &hour))
		}
		obj.Status.LastRotationTime = &rotated
		if period > 0 {
			obj.Spec.Rotation.Period = &metav1.Duration{Duration: period}
		}
		obj.Spec.Rotation.Trigger, obj.Status.LastRotationTrigger = trigger, lastTrigger
		if annotation != "" {
			obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: annotation}
		}
		obj.Status.LastRotateAnnotation = lastAnnotation
		return obj
	}
	for sentence, tc := range map[string]struct {
		obj  *m2mv1alpha1.M2MClient
		want RotationReason
	}{
		"no period, trigger or annotation asks for nothing":                {withPolicy(0, "", "", "", "", 1), RotationNotDue},
		"a period not yet over asks for nothing":                           {withPolicy(3*time.Hour, "", "", "", "", 1), RotationNotDue},
		"a period that has passed rotates on schedule":                     {withPolicy(time.Hour, "", "", "", "", 1), RotationScheduled},
		"a period that ends exactly now rotates":                           {withPolicy(2*time.Hour, "", "", "", "", 1), RotationScheduled},
		"a new trigger value rotates":                                      {withPolicy(0, "v2", "v1", "", "", 1), RotationTrigger},
		"a trigger value already acted on asks for nothing":                {withPolicy(0, "v2", "v2", "", "", 1), RotationNotDue},
		"a trigger removed from Git asks for nothing":                      {withPolicy(0, "", "v2", "", "", 1), RotationNotDue},
		"a new annotation value rotates":                                   {withPolicy(0, "", "", "2026-03-01", "", 1), RotationAnnotation},
		"an annotation value already acted on asks for nothing":            {withPolicy(0, "", "", "x", "x", 1), RotationNotDue},
		"a trigger and an annotation at once rotate once, for the trigger": {withPolicy(0, "v3", "v2", "y", "x", 1), RotationTrigger},
		"a due rotation waits while status is full":                        {withPolicy(time.Hour, "", "", "", "", MaxAcceptedSecrets), RotationDeferred},
	} {
		t.Run(sentence, func(t *testing.T) {
			got, why := RotationDue(tc.obj, now)
			if got != tc.want {
				t.Fatalf("got %q (%s), want %q", got, why, tc.want)
			}
			if got != RotationNotDue && why == "" {
				t.Fatal("a due rotation must say why")
			}
		})
	}
}

func TestNextRotationIsLastRotationPlusPeriod(t *testing.T) {
	obj := clientWith(entry(current, nil))
	if !NextRotation(obj).IsZero() {
		t.Fatal("a client without a period has a next rotation")
	}
	last := metav1.NewTime(now)
	obj.Status.LastRotationTime = &last
	obj.Spec.Rotation.Period = &metav1.Duration{Duration: 720 * time.Hour}
	if got := NextRotation(obj); !got.Equal(now.Add(720 * time.Hour)) {
		t.Fatalf("next rotation %s", got)
	}
}

func TestMakeRoomDropsTheGraceEntriesThatExpireFirstAndKeepsUnexpiringOnes(t *testing.T) {
	in, soon, later := time.Hour, time.Minute, 2*time.Hour
	entries := []m2mv1alpha1.AcceptedSecret{entry("a", &in), entry(current, nil), entry("b", &soon), entry("c", &later)}
	out := MakeRoom(entries, 3)
	if len(out) != 2 || out[0].Hash != credentials.Hash(current) || out[1].Hash != credentials.Hash("c") {
		t.Fatalf("kept %+v", out)
	}
	if len(entries) != 4 {
		t.Fatal("MakeRoom changed its argument")
	}
	if got := MakeRoom([]m2mv1alpha1.AcceptedSecret{entry(current, nil), entry(old, nil)}, 2); len(got) != 2 {
		t.Fatal("an unexpiring entry was dropped")
	}
}

func TestDecideSecretForAKeyPair(t *testing.T) {
	issue := func(alg m2mv1alpha1.KeyAlgorithm) (string, m2mv1alpha1.AcceptedSecret) {
		pemKey, err := credentials.KeyPair{Algorithm: alg}.Issue()
		if err != nil {
			t.Fatal(err)
		}
		e, err := credentials.KeyPair{Algorithm: alg}.Entry(pemKey, now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return pemKey, e
	}
	keyClient := func(alg m2mv1alpha1.KeyAlgorithm, entries ...m2mv1alpha1.AcceptedSecret) *m2mv1alpha1.M2MClient {
		obj := clientWith(entries...)
		obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{Algorithm: alg}
		return obj
	}
	withKey := func(pemKey string) *corev1.Secret {
		s := ownedSecret("")
		s.Data = map[string][]byte{m2mv1alpha1.SecretKeyPrivateKey: []byte(pemKey), m2mv1alpha1.SecretKeyClientID: []byte("m2m-id")}
		return s
	}
	curKey, curEntry := issue(m2mv1alpha1.KeyAlgorithmES256)
	nextKey, nextEntry := issue(m2mv1alpha1.KeyAlgorithmES256)
	edKey, _ := issue(m2mv1alpha1.KeyAlgorithmEdDSA)
	hour := time.Hour
	expiring := curEntry
	expiring.ExpiresAt = ptr.To(metav1.NewTime(now.Add(hour)))

	for sentence, tc := range map[string]struct {
		obj    *m2mv1alpha1.M2MClient
		secret *corev1.Secret
		want   SecretAction
		reason RotationReason
	}{
		"a new key-pair client gets a generated key pair": {
			obj: keyClient(""), secret: nil, want: ActionGenerate,
		},
		"a client that switches from a secret to a key pair gets a key pair": {
			obj: keyClient("", entry(current, nil)), secret: ownedSecret(current), want: ActionGenerate,
		},
		"a client that switches from a key pair to a secret gets a secret": {
			obj: clientWith(curEntry), secret: withKey(curKey), want: ActionGenerate,
		},
		"a Secret that carries the current private key needs nothing": {
			obj: keyClient("", curEntry), secret: withKey(curKey), want: ActionNone,
		},
		"a crash after writing the new key but before expiring the old one completes the rotation": {
			obj: keyClient("", curEntry, nextEntry), secret: withKey(nextKey), want: ActionCompleteRotation,
		},
		"a crash after persisting a new public key but before writing the private key resumes the rotation": {
			obj: keyClient("", curEntry, nextEntry), secret: withKey(curKey), want: ActionResumeRotation, reason: RotationResumed,
		},
		"a new trigger value rotates the key pair": {
			obj: withTrigger(keyClient("", curEntry), "v2"), secret: withKey(curKey), want: ActionRotate, reason: RotationTrigger,
		},
		"a new m2m.dev/rotate annotation rotates the key pair": {
			obj: withAnnotation(keyClient("", curEntry), "now"), secret: withKey(curKey), want: ActionRotate, reason: RotationAnnotation,
		},
		"a key pair past its rotation period rotates": {
			obj: withPeriod(keyClient("", curEntry), time.Hour), secret: withKey(curKey), want: ActionRotate, reason: RotationScheduled,
		},
		"a changed algorithm rotates the key pair": {
			obj: keyClient(m2mv1alpha1.KeyAlgorithmEdDSA, curEntry), secret: withKey(curKey), want: ActionRotate, reason: RotationAlgorithm,
		},
		"a private key of the algorithm, written by a person, is adopted": {
			obj: keyClient("", curEntry), secret: withKey(nextKey), want: ActionAdopt,
		},
		"a Secret set back to the previous private key re-accepts it": {
			obj: keyClient("", expiring, nextEntry), secret: withKey(curKey), want: ActionAdopt,
		},
		"a lost status is rebuilt from the private key": {
			obj: keyClient(""), secret: withKey(curKey), want: ActionRecoverStatus,
		},
		"a private key of another algorithm, written by a person, is refused": {
			obj: keyClient("", curEntry), secret: withKey(edKey), want: ActionRefuseWeak,
		},
		"a private_key that is not PEM is refused": {
			obj: keyClient("", curEntry), secret: withKey("not a key"), want: ActionRefuseWeak,
		},
		"a client secret written as the private_key is refused": {
			obj: keyClient("", curEntry), secret: withKey(next), want: ActionRefuseWeak,
		},
		"switching to secrets with the current key's public thumbprint input as the secret is refused": {
			obj: clientWith(curEntry), secret: ownedSecret(thumbprintInput(curEntry)), want: ActionRefuseWeak,
		},
		"switching to a key pair whose fingerprint collides with the current secret's hash adopts the key": {
			obj: keyClient("", entry(thumbprintInput(curEntry), nil)), secret: withKey(curKey), want: ActionAdopt,
		},
		"a key pair with the previous kind's secret still unexpiring completes the switch": {
			obj: keyClient("", entry(current, nil), curEntry), secret: withKey(curKey), want: ActionCompleteRotation,
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.want || got.Rotation != tc.reason {
				t.Fatalf("action %s/%q (%s), want %s/%q", got.Action, got.Rotation, got.Why, tc.want, tc.reason)
			}
			if strings.Contains(got.Why, "PRIVATE KEY") {
				t.Fatal("the decision quotes the key")
			}
		})
	}
}

// thumbprintInput is the RFC 7638 input of an EC key's entry: public, and hashed into its hash.
func thumbprintInput(e m2mv1alpha1.AcceptedSecret) string {
	return `{"crv":"P-256","kty":"EC","x":"` + e.PublicKey.X + `","y":"` + e.PublicKey.Y + `"}`
}

func TestAKeyPairEntryCarriesThePublicKeyNamedByItsThumbprint(t *testing.T) {
	pemKey, err := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}.Issue()
	if err != nil {
		t.Fatal(err)
	}
	e, err := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}.Entry(pemKey, now)
	if err != nil {
		t.Fatal(err)
	}
	if e.PublicKey == nil || e.Hash != credentials.HashPrefix+e.PublicKey.KeyID || e.PublicKey.Algorithm != "EdDSA" || e.LastFour != "" {
		t.Fatalf("entry %+v", e)
	}
	if (credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}).Fingerprint(pemKey) != e.Hash {
		t.Fatal("the fingerprint of the private key is not the entry's hash")
	}
	if strings.Contains(e.PublicKey.X+e.PublicKey.Y+e.PublicKey.N, strings.Split(pemKey, "\n")[1]) {
		t.Fatal("the entry carries private key material")
	}
}

func withAnnotation(obj *m2mv1alpha1.M2MClient, value string) *m2mv1alpha1.M2MClient {
	obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: value}
	return obj
}

// withPeriod sets a rotation period that has passed: the last rotation was twice as long ago.
func withPeriod(obj *m2mv1alpha1.M2MClient, period time.Duration) *m2mv1alpha1.M2MClient {
	obj.Spec.Rotation.Period = &metav1.Duration{Duration: period}
	last := metav1.NewTime(now.Add(-2 * period))
	obj.Status.LastRotationTime = &last
	return obj
}
