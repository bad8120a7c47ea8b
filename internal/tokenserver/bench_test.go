package tokenserver

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
	"k8s.io/utils/clock"
)

// BenchmarkSignAccessToken is the signing-only ceiling: building and signing the same claims the
// token endpoint signs, with nothing else. `make bench-token` runs it on all cores.
func BenchmarkSignAccessToken(b *testing.B) {
	benchmarkSign(b, newFixtureServer(b, IssuanceLimit{}))
}

// BenchmarkSignAccessTokenByAlgorithm is BenchmarkSignAccessToken with each algorithm the
// manager can make keys of (--signing-algorithm): where the ceiling would move with another.
func BenchmarkSignAccessTokenByAlgorithm(b *testing.B) {
	for _, alg := range signingkeys.Algorithms {
		b.Run(string(alg), func(b *testing.B) {
			_, keys := staticKeys(b, alg)
			s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{}, Keys: keys, Clock: clock.RealClock{}})
			if err != nil {
				b.Fatal(err)
			}
			benchmarkSign(b, s)
		})
	}
}

// benchmarkSign signs the benchmark client's token with s on every core.
func benchmarkSign(b *testing.B, s *Server) {
	c := NewCachedClient(testClient(goodID, goodSecret))
	scopes := []string{"read:invoices", "write:payments"}
	aud := []string{"https://payments.example.com"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, bad := s.sign(c, scopes, aud, nil); bad != nil {
				b.Fatal(bad)
			}
		}
	})
}

// BenchmarkTokenEndpoint is the whole pipeline in process, without a network: parse,
// authenticate, check, sign, write.
func BenchmarkTokenEndpoint(b *testing.B) {
	benchmarkToken(b, IssuanceLimit{}, http.StatusOK, tokenForm...)
}

// BenchmarkTokenEndpointWithTheIssuanceLimit is BenchmarkTokenEndpoint with the issuance limit
// on, so high that it never refuses: what taking from the client's bucket costs.
func BenchmarkTokenEndpointWithTheIssuanceLimit(b *testing.B) {
	benchmarkToken(b, IssuanceLimit{PerMinute: 1 << 40, Burst: 1 << 40}, http.StatusOK, tokenForm...)
}

// tokenForm is the request of BenchmarkTokenEndpoint.
var tokenForm = []string{"grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret, "scope", "read:invoices write:payments", "audience", "https://payments.example.com"}

// BenchmarkRefusedRequest is a wrong secret for a known client, in process: the path a caller
// who floods refusals takes, with the count, the debug-log check and the refusal memory.
func BenchmarkRefusedRequest(b *testing.B) {
	benchmarkToken(b, IssuanceLimit{}, http.StatusUnauthorized, "grant_type", "client_credentials", "client_id", goodID, "client_secret", "a-wrong-secret-0123456789abcdefghijklmnopqrstuv")
}

// benchmarkToken sends the form of kv to a server with limit, in parallel, each answered with
// code.
func benchmarkToken(b *testing.B, limit IssuanceLimit, code int, kv ...string) {
	s := newFixtureServer(b, limit)
	h := s.Handler()
	body := formBody(kv...)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
			r.Header.Set("Content-Type", form)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != code {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	})
}

// BenchmarkTokenEndpointWithDPoP is BenchmarkTokenEndpoint with a fresh DPoP proof (new jti,
// P-256 key) on every request. The benchmark's goroutines make the proofs, so the figure includes
// making one, as a client would (BenchmarkMakeDPoPProof alone), besides verifying it, binding the
// token and recording the jti in the replay cache. The clock is real, so that the cache holds a
// minute of proofs and sweeps the older ones, as in service.
func BenchmarkTokenEndpointWithDPoP(b *testing.B) {
	_, keys := staticKeys(b, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Clients: cachedClients{goodID: NewCachedClient(testClient(goodID, goodSecret))}, Keys: keys, Clock: clock.RealClock{}})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	body := formBody(tokenForm...)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := proofKey(b)
		for pb.Next() {
			p, err := dpop.NewProof(key, http.MethodPost, testIssuer+"/oauth2/token", dpop.ProofOptions{})
			if err != nil {
				b.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
			r.Header.Set("Content-Type", form)
			r.Header.Set("DPoP", p)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	})
}

// BenchmarkTokenEndpointWithDPoPProofsMadeAhead is the server's share of
// BenchmarkTokenEndpointWithDPoP: the proofs, one per request, are made before the timer starts,
// by a P-256 key (ES256) and by an Ed25519 key (EdDSA).
func BenchmarkTokenEndpointWithDPoPProofsMadeAhead(b *testing.B) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for alg, key := range map[string]crypto.Signer{"ES256": proofKey(b), "EdDSA": edKey} {
		b.Run(alg, func(b *testing.B) {
			_, keys := staticKeys(b, signingkeys.ES256)
			s, err := New(Config{IssuerURL: testIssuer, Clients: cachedClients{goodID: NewCachedClient(testClient(goodID, goodSecret))}, Keys: keys, Clock: clock.RealClock{}})
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			body := formBody(tokenForm...)
			proofs := make([]string, b.N)
			for i := range proofs {
				if proofs[i], err = dpop.NewProof(key, http.MethodPost, testIssuer+"/oauth2/token", dpop.ProofOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
					r.Header.Set("Content-Type", form)
					r.Header.Set("DPoP", proofs[next.Add(1)-1])
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code != http.StatusOK {
						b.Fatal(w.Code, w.Body.String())
					}
				}
			})
		})
	}
}

// BenchmarkMakeDPoPProof is what making a proof costs, the client's share of
// BenchmarkTokenEndpointWithDPoP.
func BenchmarkMakeDPoPProof(b *testing.B) {
	key := proofKey(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dpop.NewProof(key, http.MethodPost, testIssuer+"/oauth2/token", dpop.ProofOptions{Now: t0}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenEndpointOverTLS is the token endpoint behind a TLS listener that verifies client
// certificates given against the pod-client CA, as --client-ca-file sets it up, on loopback: a
// client secret and tls_client_auth with a pod certificate, each on kept-alive connections (one
// per goroutine, so the handshake is amortised) and on a new connection per request, as
// pkg/m2mauth's PodCertificate source makes its token requests (keep-alives off, no TLS session
// cache, so a full handshake each time). The clients run in the same process on the same cores:
// the figures are both ends' work, their handshakes included.
func BenchmarkTokenEndpointOverTLS(b *testing.B) {
	f := newMTLSServer(b, clock.RealClock{})
	benchmarkOverTLS(b, tlsTarget{url: f.srv.URL, roots: f.ca.Pool(), leaf: f.ca.Issue(b, podNS, podSA).TLS})
}

// BenchmarkTokenServerProcessOverTLS is BenchmarkTokenEndpointOverTLS with the token server in a
// process of its own (this test binary, serving as BenchmarkServeTLSForAnotherProcess), so that
// the server's CPU time and the clients' are counted apart (server-cpu-ns/op, client-cpu-ns/op).
// Both processes still share the machine's cores. B/op and allocs/op are the clients' alone.
func BenchmarkTokenServerProcessOverTLS(b *testing.B) {
	dir := b.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkServeTLSForAnotherProcess$", "-test.benchtime=1x")
	cmd.Env = append(os.Environ(), serveTLSDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = in.Close(); _ = cmd.Wait() })
	lines := bufio.NewScanner(out)
	answer := func(b *testing.B, prefix string) string {
		for lines.Scan() {
			if v, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return v
			}
		}
		b.Fatalf("the server process ended without a %q line: %v", prefix, lines.Err())
		return ""
	}
	url := answer(b, "serving ")
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	bundle, err := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := tls.X509KeyPair(bundle, bundle)
	if err != nil {
		b.Fatal(err)
	}
	benchmarkOverTLS(b, tlsTarget{url: url, roots: roots, leaf: leaf, serverCPU: func(b *testing.B) time.Duration {
		if _, err := io.WriteString(in, "cpu\n"); err != nil {
			b.Fatal(err)
		}
		ns, err := strconv.ParseInt(answer(b, "cpu "), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return time.Duration(ns)
	}})
}

// serveTLSDirEnv names the directory where BenchmarkServeTLSForAnotherProcess writes the CA and a
// pod certificate's bundle; without it, it does nothing.
const serveTLSDirEnv = "M2M_BENCH_SERVE_TLS_DIR"

// BenchmarkServeTLSForAnotherProcess is the server process of BenchmarkTokenServerProcessOverTLS,
// not a benchmark: it serves the mTLS fixture, says "serving <url>", and answers each "cpu" line on
// its input with its CPU time until the input ends.
func BenchmarkServeTLSForAnotherProcess(b *testing.B) {
	dir := os.Getenv(serveTLSDirEnv)
	if dir == "" {
		b.Skip("the server of BenchmarkTokenServerProcessOverTLS")
	}
	f := newMTLSServer(b, clock.RealClock{})
	leaf := f.ca.Issue(b, podNS, podSA)
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), f.ca.PEM, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), leaf.Bundle(b), 0o600); err != nil {
		b.Fatal(err)
	}
	fmt.Println("serving " + f.srv.URL)
	for in := bufio.NewScanner(os.Stdin); in.Scan(); {
		fmt.Printf("cpu %d\n", cpuTime(b))
	}
}

// tlsTarget is a token server over TLS with the clients of newMTLSServer, the CA roots that
// verify it and a pod certificate, leaf, that the client podID allows; serverCPU, when not nil,
// asks the server's process for its CPU time so far.
type tlsTarget struct {
	url       string
	roots     *x509.CertPool
	leaf      tls.Certificate
	serverCPU func(*testing.B) time.Duration
}

func benchmarkOverTLS(b *testing.B, t tlsTarget) {
	narrowing := []string{"scope", "read:invoices write:payments", "audience", "https://payments.example.com"}
	secret := formBody(tokenForm...)
	cert := formBody(append([]string{"grant_type", "client_credentials", "client_id", podID}, narrowing...)...)
	sum := sha256.Sum256(t.leaf.Certificate[0])
	thumb := base64.RawURLEncoding.EncodeToString(sum[:])
	for _, c := range []struct {
		name      string
		body      string
		cert      *tls.Certificate
		keepAlive bool
	}{
		{"ClientSecret/KeepAlive", secret, nil, true},
		{"TLSClientAuth/KeepAlive", cert, &t.leaf, true},
		{"TLSClientAuth/ConnectionPerRequest", cert, &t.leaf, false},
		{"ClientSecret/ConnectionPerRequest", secret, nil, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			client := func() *http.Client {
				cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: t.roots}
				if c.cert != nil {
					cfg.Certificates = []tls.Certificate{*c.cert}
				}
				return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: !c.keepAlive}}
			}
			// A token over tls_client_auth that were not bound to the certificate would not be
			// what this measures.
			if x5t := boundTo(b, client(), t.url, c.body); (c.cert != nil) != (x5t == thumb) {
				b.Fatalf("cnf x5t#S256 %q with certificate %t", x5t, c.cert != nil)
			}
			b.ReportAllocs()
			var serverStart time.Duration
			if t.serverCPU != nil {
				serverStart = t.serverCPU(b)
			}
			start := cpuTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				hc := client()
				defer hc.CloseIdleConnections()
				for pb.Next() {
					postToken(b, hc, t.url, c.body)
				}
			})
			b.StopTimer()
			// On shared cores the wall time per request grows with the other work; CPU time per
			// request does not.
			perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) }
			if t.serverCPU == nil {
				b.ReportMetric(perOp(cpuTime(b)-start), "cpu-ns/op")
				return
			}
			b.ReportMetric(perOp(cpuTime(b)-start), "client-cpu-ns/op")
			b.ReportMetric(perOp(t.serverCPU(b)-serverStart), "server-cpu-ns/op")
		})
	}
}

// postToken posts body to the token endpoint at url with hc and returns the answer, failing b
// unless it is a token.
func postToken(b *testing.B, hc *http.Client, url, body string) []byte {
	resp, err := hc.Post(url+"/oauth2/token", form, strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatal(resp.StatusCode, err, string(raw))
	}
	return raw
}

// boundTo gets a token for body with hc and returns its cnf x5t#S256, "" when it has none. The
// signature is not checked: the server's own tests do.
func boundTo(b *testing.B, hc *http.Client, url, body string) string {
	defer hc.CloseIdleConnections()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(postToken(b, hc, url, body), &out); err != nil {
		b.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(out.AccessToken, claims); err != nil {
		b.Fatal(err)
	}
	cnf, _ := claims["cnf"].(map[string]any)
	x5t, _ := cnf["x5t#S256"].(string)
	return x5t
}

// cpuTime is the CPU time, user and system, that the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSecretAuthentication is the authentication of a known client's secret alone, in
// process: the look-up by client ID, the client ID's MAC, the hash and the entries' MACs, and
// what the decoy of an unknown client costs (Unknown).
func BenchmarkSecretAuthentication(b *testing.B) {
	s := newFixtureServer(b, IssuanceLimit{})
	for name, id := range map[string]string{"Known": goodID, "Unknown": "m2m-nobody"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := &tokenRequest{clientID: id, clientSecret: goodSecret, secretGiven: true}
				if _, _, bad := s.authenticate(context.Background(), req); (bad == nil) != (id == goodID) {
					b.Fatal(bad)
				}
			}
		})
	}
}
