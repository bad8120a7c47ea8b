package dpop

import (
	"errors"
	"testing"
	"time"
)

func TestNoncesAreAcceptedInTheirWindowAndTheNextOnlyWithTheSameKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	s := NonceSource{Key: key, Window: time.Minute}
	start := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	nonce := s.Current(start)
	for sentence, tc := range map[string]struct {
		source NonceSource
		nonce  string
		at     time.Time
		ok     bool
	}{
		"the current nonce is accepted":                              {s, nonce, start, true},
		"another replica with the same key accepts it":               {NonceSource{Key: key, Window: time.Minute}, nonce, start.Add(30 * time.Second), true},
		"the previous window's nonce is accepted":                    {s, nonce, start.Add(time.Minute + 59*time.Second), true},
		"a nonce two windows old is refused":                         {s, nonce, start.Add(2 * time.Minute), false},
		"a nonce of a later window is refused":                       {s, nonce, start.Add(-time.Second), false},
		"a verifier with another key refuses it":                     {NonceSource{Key: []byte("another key of thirty-two bytes!")}, nonce, start, false},
		"no nonce is refused":                                        {s, "", start, false},
		"a verifier with a key shorter than 16 bytes refuses all":    {NonceSource{Key: key[:15]}, NonceSource{Key: key[:15]}.Current(start), start, false},
		"a zero window is the default window, and accepts its nonce": {NonceSource{Key: key}, NonceSource{Key: key}.Current(start), start.Add(DefaultNonceWindow), true},
	} {
		t.Run(sentence, func(t *testing.T) {
			err := tc.source.Check(tc.nonce, tc.at)
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrUseNonce) {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func TestNoncesOfSuccessiveWindowsDiffer(t *testing.T) {
	s := NonceSource{Key: []byte("0123456789abcdef0123456789abcdef"), Window: time.Minute}
	at := time.Unix(1_800_000_000, 0)
	if s.Current(at) == s.Current(at.Add(time.Minute)) {
		t.Fatal("a nonce stays current past its window")
	}
}
