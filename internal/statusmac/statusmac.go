// Package statusmac authenticates what the token server trusts in an M2MClient's status: each
// accepted secret's hash and the client ID binding carry an HMAC-SHA256 under a key that only the
// manager and the token server can read (it lives in the manager-owned signing-key Secret). Anyone
// who can write status can change those fields, but cannot make them verify.
package statusmac

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
)

// DataKey is the key of the signing-key Secret's data that holds the status keys.
const DataKey = "status-keys.json"

// keyBytes is the size of a MAC key: 256 bits, the HMAC-SHA256 block-size-safe choice.
const keyBytes = 32

// State is where a key is in its life, as for signing keys: a next key verifies but does not
// sign yet, so that every token server knows it before the first status it authenticates
// arrives; the active key signs; retired keys verify statuses not yet sealed again.
type State = keyring.State

const (
	StateNext    = keyring.StateNext
	StateActive  = keyring.StateActive
	StateRetired = keyring.StateRetired
)

// Key is one MAC key.
type Key struct {
	ID string `json:"id"`
	// Life is the key's state and its times (state, createdAt, activeAt, retiredAt).
	keyring.Life
	// Secret is the HMAC key. It is only ever in the Secret and in memory.
	Secret []byte `json:"secret"`
}

// Set is the content of DataKey.
type Set struct {
	Keys []*Key `json:"keys"`
	// EnforcedSince is when every status was found authenticated. Before it (an upgrade from a
	// version without MACs) the token server also accepts entries without a valid MAC; from it on,
	// never. The manager sets it once and never clears it.
	EnforcedSince *time.Time `json:"enforcedSince,omitempty"`
}

// Generate makes a key in state, created at now.
func Generate(state State, now time.Time) (*Key, error) {
	secret := make([]byte, keyBytes)
	id := make([]byte, 9)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	return &Key{ID: base64.RawURLEncoding.EncodeToString(id), Life: keyring.NewLife(state, now), Secret: secret}, nil
}

// Parse reads a set and checks it: ids are unique and well formed, keys have the right size, and
// at most one key is active.
func Parse(data []byte) (*Set, error) {
	var s Set
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("the signing-key Secret's %s is not valid JSON: %w", DataKey, err)
	}
	ids := map[string]bool{}
	active := 0
	for i, k := range s.Keys {
		switch {
		case k == nil || k.ID == "" || strings.Contains(k.ID, "."):
			return nil, fmt.Errorf("status key %d has no valid id", i)
		case ids[k.ID]:
			return nil, fmt.Errorf("status key %q appears twice", k.ID)
		case len(k.Secret) != keyBytes:
			return nil, fmt.Errorf("status key %q is not %d bytes", k.ID, keyBytes)
		}
		ids[k.ID] = true
		switch k.State {
		case StateActive:
			active++
		case StateNext, StateRetired:
		default:
			return nil, fmt.Errorf("status key %q has unknown state %q", k.ID, k.State)
		}
	}
	if active > 1 {
		return nil, fmt.Errorf("%s has %d active keys; exactly one may sign", DataKey, active)
	}
	return &s, nil
}

// Encode serialises the set for the Secret.
func (s *Set) Encode() ([]byte, error) { return json.Marshal(s) }

// Active returns the key that signs, or nil.
func (s *Set) Active() *Key {
	if s == nil {
		return nil
	}
	for _, k := range s.Keys {
		if k.State == StateActive {
			return k
		}
	}
	return nil
}

func (s *Set) find(id string) *Key {
	if s == nil {
		return nil
	}
	for _, k := range s.Keys {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// Enforced reports whether statuses must be authenticated. A nil set (no manager with MACs has
// run yet) is not enforced.
func (s *Set) Enforced() bool { return s != nil && s.EnforcedSince != nil }

// version starts every MAC and every MACed message, so that a later format cannot be confused
// with this one.
const version = "v1"

// Purposes keep a binding's MAC from verifying as an entry's, and the reverse, and a key pair's
// entry from verifying as a secret's: without its public key, a key entry's hash would accept as
// a secret the thumbprint input, which anyone can compute from the public key.
const (
	purposeEntry    = "m2m.dev/accepted-secret"
	purposeKeyEntry = "m2m.dev/accepted-key"
	purposeBinding  = "m2m.dev/client-id"
)

// mac is "v1.<key id>.<base64url HMAC-SHA256>" over the purpose and fields, each length-prefixed
// so that no two field lists encode alike.
func mac(k *Key, purpose string, fields ...string) string {
	return version + "." + k.ID + "." + base64.RawURLEncoding.EncodeToString(sum(k, purpose, fields))
}

func sum(k *Key, purpose string, fields []string) []byte {
	// One write of one buffer: the token server computes this on every request. (An RSA key
	// entry outgrows it, and append allocates.)
	var buf [512]byte
	b := appendField(buf[:0], version)
	b = appendField(b, purpose)
	for _, f := range fields {
		b = appendField(b, f)
	}
	h := hmac.New(sha256.New, k.Secret)
	h.Write(b)
	return h.Sum(nil)
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// verify checks m against the fields with the key it names.
func (s *Set) verify(m, purpose string, fields ...string) bool {
	v, rest, ok := strings.Cut(m, ".")
	if !ok || v != version {
		return false
	}
	id, b64, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	k := s.find(id)
	if k == nil {
		return false
	}
	var got [sha256.Size]byte
	if base64.RawURLEncoding.DecodedLen(len(b64)) != len(got) {
		return false
	}
	if _, err := base64.RawURLEncoding.Decode(got[:], []byte(b64)); err != nil {
		return false
	}
	return hmac.Equal(got[:], sum(k, purpose, fields))
}

// expiry is ExpiresAt as status stores it: RFC 3339 in whole seconds, or "" for none.
func expiry(e *m2mv1alpha1.AcceptedSecret) string {
	if e.ExpiresAt == nil {
		return ""
	}
	return e.ExpiresAt.UTC().Truncate(time.Second).Format(time.RFC3339)
}

// entryFields are the purpose and the fields of e's MAC.
func entryFields(obj *m2mv1alpha1.M2MClient, e *m2mv1alpha1.AcceptedSecret) (string, []string) {
	fields := []string{obj.Namespace, obj.Name, string(obj.UID), obj.Status.ClientID, e.Hash, expiry(e)}
	if k := e.PublicKey; k != nil {
		return purposeKeyEntry, append(fields, k.KeyID, k.KeyType, k.Algorithm, k.Curve, k.X, k.Y, k.N, k.E)
	}
	return purposeEntry, fields
}

func bindingFields(obj *m2mv1alpha1.M2MClient) []string {
	return []string{obj.Namespace, obj.Name, string(obj.UID), obj.Status.ClientID}
}

// VerifyEntry reports whether e, an entry of obj's status, carries a valid MAC for obj's
// namespace, name, UID and status.clientID.
func (s *Set) VerifyEntry(obj *m2mv1alpha1.M2MClient, e *m2mv1alpha1.AcceptedSecret) bool {
	purpose, fields := entryFields(obj, e)
	return obj.Status.ClientID != "" && s.verify(e.MAC, purpose, fields...)
}

// VerifyClientID reports whether obj's status.clientID carries a valid MAC for obj.
func (s *Set) VerifyClientID(obj *m2mv1alpha1.M2MClient) bool {
	return obj.Status.ClientID != "" && s.verify(obj.Status.ClientIDMAC, purposeBinding, bindingFields(obj)...)
}

// ErrNoActiveKey says that a status cannot be sealed: the set has no active key.
var ErrNoActiveKey = errors.New("no active status key")

// Seal sets the MAC of obj's status.clientID and of every accepted entry with the active key.
// The caller vouches for every one of them: the manager seals only what it wrote or proved.
func (s *Set) Seal(obj *m2mv1alpha1.M2MClient) error {
	k := s.Active()
	if k == nil {
		return ErrNoActiveKey
	}
	st := &obj.Status
	if st.ClientID == "" {
		st.ClientIDMAC = ""
		for i := range st.AcceptedSecrets {
			st.AcceptedSecrets[i].MAC = ""
		}
		return nil
	}
	st.ClientIDMAC = mac(k, purposeBinding, bindingFields(obj)...)
	for i := range st.AcceptedSecrets {
		e := &st.AcceptedSecrets[i]
		purpose, fields := entryFields(obj, e)
		e.MAC = mac(k, purpose, fields...)
	}
	return nil
}

// Inspect verifies every MAC in obj's status once and reports whether everything the token
// server would trust verifies (Authenticated), and the ids of the keys that the verifying MACs
// use. Without a client ID the token server finds the client by nothing, so it trusts nothing in
// it: such a status counts as authenticated.
func (s *Set) Inspect(obj *m2mv1alpha1.M2MClient) (authenticated bool, keyIDs []string) {
	st := &obj.Status
	authenticated = true
	check := func(ok bool, mac string) {
		if !ok {
			authenticated = st.ClientID == ""
			return
		}
		if _, rest, found := strings.Cut(mac, "."); found {
			if id, _, found := strings.Cut(rest, "."); found {
				keyIDs = append(keyIDs, id)
			}
		}
	}
	check(s.VerifyClientID(obj), st.ClientIDMAC)
	for i := range st.AcceptedSecrets {
		check(s.VerifyEntry(obj, &st.AcceptedSecrets[i]), st.AcceptedSecrets[i].MAC)
	}
	return authenticated, keyIDs
}

// Authenticated is the first result of Inspect.
func (s *Set) Authenticated(obj *m2mv1alpha1.M2MClient) bool {
	ok, _ := s.Inspect(obj)
	return ok
}
