package credentials

import "errors"

// MaxSourceValueBytes bounds the entry of a source Secret that the manager keeps in memory and
// parses: above a 512-character secret and a 4096-bit RSA key in PKCS #8 PEM (about 3,300
// bytes), the largest credentials it accepts, and far below the 1 MiB a Secret may hold. A larger
// RSA key would cost seconds of the manager's CPU to parse, at every reconcile.
const MaxSourceValueBytes = 4 << 10

// Supply is what a source Secret holds for a client whose credential someone else writes
// (spec.authentication.source), as the manager last read it.
type Supply struct {
	// Secret names the source Secret and its entry, "namespace/name" and key, for messages.
	Secret, Key string
	// Value is the entry's value; "" while Missing or Refused says why there is none.
	Value string
	// Missing says why the source holds no value yet (the Secret or its entry does not exist):
	// a state the secret store's next sync ends.
	Missing string
	// Refused says why the manager does not read the source at all (it is a Secret the manager
	// writes, its entry is too large, the namespace has too many sources): a state that only a
	// change of the spec or of the Secret ends.
	Refused string
}

// errNoSupply is Sourced.Issue's error while the source holds no usable value: DecideSecret
// never asks it to issue then.
var errNoSupply = errors.New("the source Secret holds no credential")

// Sourced is the credential of another kind (a client secret or a key pair) that a secret store
// writes into a source Secret: the manager never makes one, and "issuing" one is taking the
// source's value, which DecideSecret asks for only once the source holds a fit value that the
// Secret pods read does not carry yet.
type Sourced struct {
	// Kind is the kind of credential the source holds.
	Kind
	Supply Supply
}

// Issue implements Kind: the source's value.
func (s Sourced) Issue() (string, error) {
	if s.Supply.Value == "" {
		return "", errNoSupply
	}
	return s.Supply.Value, nil
}

// Source implements Kind.
func (s Sourced) Source() *Supply { return &s.Supply }

// Source implements Kind: the manager issues client secrets itself.
func (ClientSecret) Source() *Supply { return nil }

// Source implements Kind: the manager issues key pairs itself.
func (KeyPair) Source() *Supply { return nil }
