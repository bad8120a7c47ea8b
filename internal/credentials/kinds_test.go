package credentials

import (
	"testing"
	"time"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func client(clientSecret *bool, keyPair *m2mv1alpha1.KeyPairPolicy, generation, observed int64) *m2mv1alpha1.M2MClient {
	obj := &m2mv1alpha1.M2MClient{}
	obj.Generation = generation
	obj.Status.ObservedGeneration = observed
	obj.Spec.Authentication.ClientSecret = clientSecret
	obj.Spec.Authentication.KeyPair = keyPair
	return obj
}

func TestKindOfIsWorkedOutFromTheSpec(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name string
		obj  *m2mv1alpha1.M2MClient
		want Kind
	}{
		{"a client with no authentication settings takes a client secret", client(nil, nil, 1, 1), ClientSecret{}},
		{"a key pair with no algorithm is an ES256 key pair", client(nil, &m2mv1alpha1.KeyPairPolicy{}, 1, 1), KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}},
		{"a key pair keeps its algorithm", client(nil, &m2mv1alpha1.KeyPairPolicy{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}, 1, 1), KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}},
		{"a client that turned secrets off and asks for no key pair has no kind", client(&off, nil, 1, 1), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(tc.obj); got != tc.want {
				t.Fatalf("KindOf = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestAcceptsCurrentFollowsTheKindAndASwitchTheManagerHasNotHandled(t *testing.T) {
	off := false
	keyPair := &m2mv1alpha1.KeyPairPolicy{}
	for _, tc := range []struct {
		name         string
		obj          *m2mv1alpha1.M2MClient
		secret, keys bool
	}{
		{"a secret client accepts its current secret and no current key", client(nil, nil, 1, 1), true, false},
		{"a key-pair client accepts its current key and no current secret", client(nil, keyPair, 1, 1), false, true},
		{"a client switching to a key pair still accepts its current secret until the manager handles it", client(nil, keyPair, 2, 1), true, true},
		{"a client switching to a secret still accepts its current key until the manager handles it", client(nil, nil, 2, 1), true, true},
		{"a client that turned secrets off accepts no current credential, even mid-switch", client(&off, nil, 2, 1), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := AcceptsCurrent(tc.obj, FormSecret); got != tc.secret {
				t.Errorf("AcceptsCurrent(secret) = %v, want %v", got, tc.secret)
			}
			if got := AcceptsCurrent(tc.obj, FormKey); got != tc.keys {
				t.Errorf("AcceptsCurrent(key) = %v, want %v", got, tc.keys)
			}
		})
	}
}

func TestEveryKindRoundTripsItsOwnCredential(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, kind := range []Kind{ClientSecret{}, KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}, KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}, KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmRS256}} {
		value, err := kind.Issue()
		if err != nil {
			t.Fatal(err)
		}
		e, err := kind.Entry(value, now)
		switch {
		case err != nil:
			t.Fatalf("%#v: %v", kind, err)
		case e.Hash != kind.Fingerprint(value) || e.Hash == "":
			t.Errorf("%#v: the entry's hash %q is not the fingerprint %q", kind, e.Hash, kind.Fingerprint(value))
		case FormOf(&e) != kind.Form():
			t.Errorf("%#v: the entry's form is %v, not the kind's %v", kind, FormOf(&e), kind.Form())
		case kind.Problem(value) != "":
			t.Errorf("%#v refuses its own credential: %s", kind, kind.Problem(value))
		case kind.Outdated(&e) != "":
			t.Errorf("%#v finds its fresh credential outdated: %s", kind, kind.Outdated(&e))
		}
	}
}

func TestAKeyOfAnotherAlgorithmIsOutdatedAndRefused(t *testing.T) {
	value, _ := KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Issue()
	e, _ := KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Entry(value, time.Now())
	eddsa := KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}
	if eddsa.Outdated(&e) == "" {
		t.Error("an ES256 key is not outdated for an EdDSA key pair")
	}
	if eddsa.Problem(value) == "" {
		t.Error("an ES256 key written for an EdDSA key pair is accepted")
	}
	if (ClientSecret{}).Problem("short") == "" {
		t.Error("a weak secret is accepted")
	}
}
