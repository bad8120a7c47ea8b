package dpop

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"
)

// DefaultNonceWindow is NonceSource's window when its Window is zero.
const DefaultNonceWindow = time.Minute

// minNonceKey is the shortest key a NonceSource accepts nonces with.
const minNonceKey = 16

// NonceSource makes and checks server nonces (RFC 9449 §8) without state: a nonce is the HMAC of
// the number of the time window it was made in, so every verifier that holds Key accepts the
// nonces of the others, and a nonce is accepted in its window and the next, between one and two
// windows. Key must be secret, at least 16 bytes (32 recommended), and the same at every verifier.
type NonceSource struct {
	Key []byte
	// Window is how long a nonce is current; zero means DefaultNonceWindow.
	Window time.Duration
}

// Current returns the nonce of now's window, for a DPoP-Nonce header.
func (s NonceSource) Current(now time.Time) string {
	return s.nonce(s.window(now))
}

// Check returns nil when nonce is the nonce of now's window or of the one before, and an error
// wrapping ErrUseNonce otherwise (as for a missing nonce, or a key shorter than 16 bytes).
func (s NonceSource) Check(nonce string, now time.Time) error {
	if len(s.Key) < minNonceKey {
		return errors.Join(ErrUseNonce, errors.New("the nonce key is too short"))
	}
	if nonce == "" {
		return errors.Join(ErrUseNonce, errors.New("the proof has no nonce"))
	}
	w := s.window(now)
	for _, at := range []int64{w, w - 1} {
		if hmac.Equal([]byte(nonce), []byte(s.nonce(at))) {
			return nil
		}
	}
	return errors.Join(ErrUseNonce, errors.New("the nonce is not current"))
}

func (s NonceSource) window(now time.Time) int64 {
	w := s.Window
	if w <= 0 {
		w = DefaultNonceWindow
	}
	return now.UnixNano() / int64(w)
}

func (s NonceSource) nonce(window int64) string {
	mac := hmac.New(sha256.New, s.Key)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(window))
	mac.Write([]byte("dpop-nonce\x00"))
	mac.Write(b[:])
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:16])
}
