package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/m2m-dev/m2m-operator/hack/internal/tokenload"
	"github.com/m2m-dev/m2m-operator/hack/internal/tokenserverprocess"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

// dpopRuns starts the token server with default flags and loads it from conns connections of the
// Go load generator for duration, plain and then with a DPoP proof on every request, -dpop-rounds
// times, each run after a 3 s warm-up of its own kind; then prints tokens/s, p50 and p99 of each
// and the ratio of each round.
func dpopRuns(ts *tokenserverprocess.Process, n, conns int, duration time.Duration) error {
	if dpopMemoryLimit != "" {
		// The replay cache's budget is a tenth of the memory limit: at the default (no limit,
		// 262,144 entries shared by two caches) a replica takes about 1,870 DPoP proofs a second
		// in one namespace before it answers dpop_replay_full, which would measure the budget
		// rather than the cost.
		ts.Env = append(ts.Env, "GOMEMLIMIT="+dpopMemoryLimit)
	}
	var extra []string
	if profile != "" {
		extra = append(extra, "--debug-address", "127.0.0.1:6060")
	}
	if err := ts.Start(extra...); err != nil {
		return err
	}
	if err := ts.WaitCached(n); err != nil {
		return err
	}
	if err := checkBinding(ts.Issuer); err != nil {
		return err
	}
	// The CPU time each side spent in a run, per request, tells the server's share from the
	// generator's, which signs the proofs on the same cores.
	type run struct {
		name                 string
		res                  tokenload.Result
		serverCPU, loaderCPU time.Duration
	}
	var runs []run
	kinds := []struct {
		name      string
		withProof bool
		ahead     int
	}{{"plain", false, 0}, {"DPoP", true, 0}, {"DPoP ahead", true, dpopAhead}}
	for round := range dpopRounds {
		for _, kind := range kinds {
			withProof := kind.withProof
			load := tokenload.Load{Issuer: ts.Issuer, Clients: n, Workers: conns, DPoP: withProof, Credentials: func(i int) (string, string) { return clientID(i), secretFor(i) }}
			name := fmt.Sprintf("%s, round %d", kind.name, round+1)
			fmt.Printf("%s: %s after a 3 s warm-up...\n", name, duration)
			warm := load.Closed(context.Background())
			time.Sleep(3 * time.Second)
			warm.Stop()
			// Proofs made ahead are made before the measured run starts, by Closed.
			load.ProofsAhead = kind.ahead
			r := load.Closed(context.Background())
			server0, loader0 := ts.CPU(), selfCPU()
			if profile != "" && round == dpopRounds-1 {
				// The last round's runs, each to the -cpu-profile file with its kind added.
				go writeProfileTo(profile + "." + strings.ReplaceAll(kind.name, " ", "-"))
			}
			time.Sleep(duration)
			res := r.Stop()
			runs = append(runs, run{name, res, ts.CPU() - server0, selfCPU() - loader0})
		}
	}
	fmt.Printf("\nclients cached: %d; Go load generator (hack/internal/tokenload), closed loop, %d connections, %s a run, credentials only, on the same %d cores as the token server; \"DPoP ahead\": %d fresh proofs made before the run, each used once\n", n, conns, duration, runtime.NumCPU(), dpopAhead)
	fmt.Printf("%-16s %10s %10s %10s %8s %18s %21s\n", "run", "tokens/s", "p50", "p99", "failed", "server CPU/request", "generator CPU/request")
	for i, r := range runs {
		reqs := time.Duration(max(1, r.res.Requests()))
		fmt.Printf("%-16s %10.0f %10s %10s %8d %18s %21s", r.name, float64(r.res.OK)/r.res.Elapsed.Seconds(), r.res.Percentile(0.5).Round(10*time.Microsecond), r.res.Percentile(0.99).Round(10*time.Microsecond), r.res.Failed(), (r.serverCPU / reqs).Round(time.Microsecond), (r.loaderCPU / reqs).Round(time.Microsecond))
		if i%len(kinds) > 0 {
			plain := runs[i-i%len(kinds)].res
			fmt.Printf("   DPoP / plain: %.2f", (float64(r.res.OK)/r.res.Elapsed.Seconds())/(float64(plain.OK)/plain.Elapsed.Seconds()))
		}
		if r.res.Failed() > 0 {
			fmt.Printf("   non-2xx: %v, transport errors: %d", r.res.Non2xx, r.res.TransportErrors)
		}
		fmt.Println()
	}
	return nil
}

// checkBinding asks once with a proof and fails unless the answer is a DPoP-bound token, so that
// the DPoP runs measure binding rather than a server that ignores the header.
func checkBinding(iss string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tokenURL := issuer.TokenURL(iss)
	proof, err := dpop.NewProof(key, http.MethodPost, tokenURL, dpop.ProofOptions{})
	if err != nil {
		return err
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID(0)}, "client_secret": {secretFor(0)}}
	req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", proof)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		TokenType string `json:"token_type"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.TokenType != "DPoP" {
		return fmt.Errorf("a token request with a DPoP proof got HTTP %d, token_type %q: not a bound token", resp.StatusCode, body.TokenType)
	}
	return nil
}

// selfCPU is the CPU time (user and system) this process has used so far: the load generator's,
// since the token server and the control plane are processes of their own.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
