package m2mauth

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// interopScript drives two third-party DPoP implementations in Node: panva's dpop (proofs) and
// oauth4webapi's validateJwtAccessToken (a resource server's check of a DPoP-bound RFC 9068
// token). It reads one JSON request on stdin and writes its answer on stdout.
const interopScript = `
import { generateProof } from 'dpop'
import * as oauth from 'oauth4webapi'
let input = ''
for await (const chunk of process.stdin) input += chunk
const q = JSON.parse(input)
if (q.mode === 'proof') {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' }
  const { d, ...pub } = q.jwk
  const privateKey = await crypto.subtle.importKey('jwk', q.jwk, alg, false, ['sign'])
  const publicKey = await crypto.subtle.importKey('jwk', pub, alg, true, ['verify'])
  process.stdout.write(await generateProof({ privateKey, publicKey }, q.htu, q.htm, undefined, q.token || undefined))
} else {
  const request = new Request(q.url, { method: q.method, headers: q.headers })
  const as = { issuer: q.issuer, jwks_uri: q.issuer + '/jwks' }
  const claims = await oauth.validateJwtAccessToken(as, request, q.audience, { requireDPoP: true, [oauth.allowInsecureRequests]: true })
  process.stdout.write(JSON.stringify(claims))
}
`

// runInterop runs interopScript with q in dir, which holds node_modules with dpop and oauth4webapi.
func runInterop(t *testing.T, dir string, q map[string]any) string {
	t.Helper()
	script := filepath.Join(dir, "m2mauth-dpop-interop.mjs")
	if err := os.WriteFile(script, []byte(interopScript), 0o600); err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(q)
	cmd := exec.Command("node", script)
	cmd.Dir, cmd.Stdin = dir, strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node (%s): %v: %s", q["mode"], err, stderr)
	}
	return string(out)
}

// privateJWK is key as a private JWK, for WebCrypto's importKey.
func privateJWK(t *testing.T, key *ecdsa.PrivateKey) map[string]string {
	pub, err := jwk.FromPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)
	key.D.FillBytes(d)
	return map[string]string{"kty": "EC", "crv": "P-256", "x": pub.X, "y": pub.Y, "d": base64.RawURLEncoding.EncodeToString(d)}
}

// Interop with third-party DPoP implementations, which are Node packages (no Go DPoP library is
// among the modules this project can use): M2M_DPOP_INTEROP names a directory where
// "npm install dpop oauth4webapi" has run. Without it the test is skipped.
func TestThirdPartyDPoPProofsVerifyHereAndThisLibrarysRequestsVerifyThere(t *testing.T) {
	dir := os.Getenv("M2M_DPOP_INTEROP")
	if dir == "" {
		t.Skip("M2M_DPOP_INTEROP (a directory with node_modules/dpop and node_modules/oauth4webapi) is not set")
	}
	ec := genKey(t, signingkeys.ES256)
	jwks := newJWKSServer(t, ec)
	v := newTestVerifier(t, jwks, WithClock(time.Now))
	key := newDPoPKey(t).(*ecdsa.PrivateKey)
	now := time.Now()
	claims := with(with(with(boundClaims(t, jwks.URL, key), "iat", now.Unix()), "nbf", now.Unix()), "exp", now.Add(time.Hour).Unix())
	token := mint(t, ec, claims, nil)

	api := httptest.NewServer(Middleware(v, RequireDPoP())(reached))
	t.Cleanup(api.Close)

	t.Run("a proof that panva's dpop makes passes this library's middleware", func(t *testing.T) {
		private := privateJWK(t, key)
		send := func(proof string) int {
			req, _ := http.NewRequest(http.MethodGet, api.URL+"/users", nil)
			req.Header.Set("Authorization", "DPoP "+token)
			req.Header.Set("DPoP", proof)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			return resp.StatusCode
		}
		good := runInterop(t, dir, map[string]any{"mode": "proof", "jwk": private, "htu": api.URL + "/users", "htm": "GET", "token": token})
		if code := send(good); code != 200 {
			t.Fatalf("its proof for this request: %d", code)
		}
		other := runInterop(t, dir, map[string]any{"mode": "proof", "jwk": private, "htu": api.URL + "/admin", "htm": "GET", "token": token})
		if code := send(other); code != 401 {
			t.Fatalf("its proof for another URL: %d, want 401", code)
		}
		if code := send(runInterop(t, dir, map[string]any{"mode": "proof", "jwk": private, "htu": api.URL + "/users", "htm": "GET"})); code != 401 {
			t.Fatalf("its proof without the token's hash: %d, want 401", code)
		}
		thief := newDPoPKey(t).(*ecdsa.PrivateKey)
		if code := send(runInterop(t, dir, map[string]any{"mode": "proof", "jwk": privateJWK(t, thief), "htu": api.URL + "/users", "htm": "GET", "token": token})); code != 401 {
			t.Fatalf("its proof by a key the token is not bound to: %d, want 401", code)
		}
	})

	t.Run("a request this library's transport sends passes oauth4webapi's validateJwtAccessToken", func(t *testing.T) {
		var headers http.Header
		capture := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { headers = r.Header.Clone() }))
		t.Cleanup(capture.Close)
		src := &cachingTokenSource{src: tokenSourceFunc(func() (*oauth2.Token, error) {
			return &oauth2.Token{AccessToken: token, TokenType: "DPoP", Expiry: now.Add(time.Hour)}, nil
		}), now: time.Now, key: &dpopKey{key: key}}
		resp, err := NewClient(context.Background(), src).Get(capture.URL + "/users?page=2")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		q := map[string]any{"mode": "verify", "issuer": jwks.URL, "audience": "https://api.example.com", "url": capture.URL + "/users?page=2", "method": "GET",
			"headers": map[string]string{"authorization": headers.Get("Authorization"), "dpop": headers.Get("DPoP")}}
		var got map[string]any
		if err := json.Unmarshal([]byte(runInterop(t, dir, q)), &got); err != nil || got["client_id"] != "m2m-a" {
			t.Fatalf("oauth4webapi's claims: %v %v", got, err)
		}
	})
}
