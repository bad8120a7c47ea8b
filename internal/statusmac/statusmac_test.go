package statusmac

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func sealed(t *testing.T) (*Set, *m2mv1alpha1.M2MClient) {
	t.Helper()
	k, err := Generate(StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	set := &Set{Keys: []*Key{k}}
	exp := metav1.NewTime(t0.Add(time.Hour))
	obj := &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "billing", UID: "uid-1"},
		Status: m2mv1alpha1.M2MClientStatus{ClientID: "m2m-victim", AcceptedSecrets: []m2mv1alpha1.AcceptedSecret{
			{Hash: "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ExpiresAt: &exp},
			{Hash: "sha256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"},
			{Hash: "sha256:CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", PublicKey: &m2mv1alpha1.ClientPublicKey{
				KeyID: "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", KeyType: "OKP", Algorithm: "EdDSA", Curve: "Ed25519", X: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},
		}},
	}
	if err := set.Seal(obj); err != nil {
		t.Fatal(err)
	}
	return set, obj
}

func TestASealedStatusVerifies(t *testing.T) {
	set, obj := sealed(t)
	if !set.Authenticated(obj) {
		t.Fatal("a status the manager sealed does not verify")
	}
	// The API server stores times in whole seconds; a MAC over a finer time would not survive.
	obj.Status.AcceptedSecrets[0].ExpiresAt = &metav1.Time{Time: obj.Status.AcceptedSecrets[0].ExpiresAt.Add(0)}
	if !set.VerifyEntry(obj, &obj.Status.AcceptedSecrets[0]) {
		t.Fatal("an entry stopped verifying")
	}
}

func TestChangingAnyAuthenticatedFieldBreaksTheMAC(t *testing.T) {
	later := metav1.NewTime(t0.Add(9999 * time.Hour))
	for name, change := range map[string]func(o *m2mv1alpha1.M2MClient){
		"another namespace":            func(o *m2mv1alpha1.M2MClient) { o.Namespace = "team-a" },
		"another name":                 func(o *m2mv1alpha1.M2MClient) { o.Name = "other" },
		"another UID (a new object)":   func(o *m2mv1alpha1.M2MClient) { o.UID = "uid-2" },
		"another client ID":            func(o *m2mv1alpha1.M2MClient) { o.Status.ClientID = "m2m-other" },
		"another hash":                 func(o *m2mv1alpha1.M2MClient) { o.Status.AcceptedSecrets[0].Hash = o.Status.AcceptedSecrets[1].Hash },
		"a later expiry":               func(o *m2mv1alpha1.M2MClient) { o.Status.AcceptedSecrets[0].ExpiresAt = &later },
		"no expiry":                    func(o *m2mv1alpha1.M2MClient) { o.Status.AcceptedSecrets[0].ExpiresAt = nil },
		"the binding MAC on the entry": func(o *m2mv1alpha1.M2MClient) { o.Status.AcceptedSecrets[0].MAC = o.Status.ClientIDMAC },
		"the other entry's MAC":        func(o *m2mv1alpha1.M2MClient) { o.Status.AcceptedSecrets[0].MAC = o.Status.AcceptedSecrets[1].MAC },
		"no MAC":                       func(o *m2mv1alpha1.M2MClient) { o.Status.AcceptedSecrets[0].MAC = "" },
	} {
		t.Run(name, func(t *testing.T) {
			set, obj := sealed(t)
			change(obj)
			if set.VerifyEntry(obj, &obj.Status.AcceptedSecrets[0]) {
				t.Fatal("the changed entry still verifies")
			}
			if set.Authenticated(obj) {
				t.Fatal("the changed status still counts as authenticated")
			}
		})
	}
}

func TestChangingAnyPartOfAKeyEntryBreaksItsMAC(t *testing.T) {
	for name, change := range map[string]func(e *m2mv1alpha1.AcceptedSecret){
		"another public key":  func(e *m2mv1alpha1.AcceptedSecret) { e.PublicKey.X = "22qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
		"another kid":         func(e *m2mv1alpha1.AcceptedSecret) { e.PublicKey.KeyID = "other" },
		"another algorithm":   func(e *m2mv1alpha1.AcceptedSecret) { e.PublicKey.Algorithm = "ES256" },
		"an added coordinate": func(e *m2mv1alpha1.AcceptedSecret) { e.PublicKey.Y = "AAAA" },
		// Without its public key, the entry would accept as a client secret the thumbprint
		// input, which anyone can compute from the public key.
		"the public key removed, making it a secret's entry": func(e *m2mv1alpha1.AcceptedSecret) { e.PublicKey = nil },
	} {
		t.Run(name, func(t *testing.T) {
			set, obj := sealed(t)
			change(&obj.Status.AcceptedSecrets[2])
			if set.VerifyEntry(obj, &obj.Status.AcceptedSecrets[2]) {
				t.Fatal("the changed key entry still verifies")
			}
		})
	}
	t.Run("a public key added to a secret's entry", func(t *testing.T) {
		set, obj := sealed(t)
		obj.Status.AcceptedSecrets[1].PublicKey = obj.Status.AcceptedSecrets[2].PublicKey
		if set.VerifyEntry(obj, &obj.Status.AcceptedSecrets[1]) {
			t.Fatal("a secret's entry with a key added still verifies")
		}
	})
}

func TestAMACUnderAnUnknownKeyDoesNotVerify(t *testing.T) {
	set, obj := sealed(t)
	other, _ := Generate(StateActive, t0)
	if err := (&Set{Keys: []*Key{other}}).Seal(obj); err != nil {
		t.Fatal(err)
	}
	if set.VerifyClientID(obj) || set.VerifyEntry(obj, &obj.Status.AcceptedSecrets[1]) {
		t.Fatal("a MAC under a key outside the set verifies")
	}
	// A MAC that names a key of the set but was made with another is refused too.
	obj.Status.ClientIDMAC = "v1." + set.Keys[0].ID + obj.Status.ClientIDMAC[len("v1.")+len(other.ID):]
	if set.VerifyClientID(obj) {
		t.Fatal("a MAC relabelled with a known key id verifies")
	}
}

func TestAStatusWithoutClientIDTrustsNothing(t *testing.T) {
	set, obj := sealed(t)
	obj.Status.ClientID = ""
	if set.VerifyEntry(obj, &obj.Status.AcceptedSecrets[1]) {
		t.Fatal("an entry verifies without a client ID")
	}
	if !set.Authenticated(obj) {
		t.Fatal("a status without client ID, which the token server cannot find, blocks enforcement")
	}
}

func TestParseRefusesDamagedSets(t *testing.T) {
	for name, doc := range map[string]string{
		"not JSON":         `{`,
		"a short key":      `{"keys":[{"id":"a","state":"active","secret":"AAAA"}]}`,
		"two active keys":  `{"keys":[{"id":"a","state":"active","secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},{"id":"b","state":"active","secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}`,
		"a dotted id":      `{"keys":[{"id":"a.b","state":"active","secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}`,
		"an unknown state": `{"keys":[{"id":"a","state":"odd","secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}`,
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	set, _ := sealed(t)
	data, _ := set.Encode()
	if _, err := Parse(data); err != nil {
		t.Fatalf("an encoded set does not parse: %v", err)
	}
}

// BenchmarkVerifyEntry is the token server's added work per accepted entry (and once more for
// the client ID) on every token request.
func BenchmarkVerifyEntry(b *testing.B) {
	k, _ := Generate(StateActive, t0)
	set := &Set{Keys: []*Key{k}}
	obj := &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "billing", UID: "0b7f4c1e-9a39-4c55-8a5e-3f0d2c7e9b11"},
		Status:     m2mv1alpha1.M2MClientStatus{ClientID: "m2m-dpj5mabxun7b4tlqppditi2jh4", AcceptedSecrets: []m2mv1alpha1.AcceptedSecret{{Hash: "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}},
	}
	if err := set.Seal(obj); err != nil {
		b.Fatal(err)
	}
	e := &obj.Status.AcceptedSecrets[0]
	b.ReportAllocs()
	for b.Loop() {
		if !set.VerifyEntry(obj, e) {
			b.Fatal("does not verify")
		}
	}
}
