// Command bench-peers builds Ory Hydra v2.3.0 from its Go module source, gives it N
// client_credentials clients, and loads it and this token server (through hack/bench-token with
// the same N) one after the other in one run with the same wrk load: C connections, form bodies
// cycling through all N clients' credentials, a warm-up and then the measured run. It prints
// tokens/s, p50, p99 and RSS side by side. `make bench-peers` runs it; results go in
// docs/benchmarks.md. Dex is not built: see docs/benchmarks.md for why.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/m2m-dev/m2m-operator/hack/internal/tokenserverprocess"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"

	"github.com/m2m-dev/m2m-operator/hack/internal/wrk"
)

func main() {
	n := flag.Int("clients", 1000, "Clients configured in each server.")
	conns := flag.Int("connections", 16, "wrk connections.")
	threads := flag.Int("threads", 1, "wrk threads. One leaves the servers more of a 2-core machine.")
	duration := flag.Duration("duration", 20*time.Second, "Length of each measured run.")
	warmup := flag.Duration("warmup", 3*time.Second, "Length of the wrk run before each measured one (hack/bench-token's is 3 s).")
	defaultCache := filepath.Join(os.Getenv("HOME"), ".cache")
	if xdg := os.Getenv("XDG_CACHE_HOME"); xdg != "" {
		defaultCache = xdg
	}
	cache := flag.String("cache", filepath.Join(defaultCache, "m2m-operator", "peers"), "Where the peers' source and binaries are kept between runs.")
	skipTokenServer := flag.Bool("skip-token-server", false, "Measure the peers only.")
	flag.BoolVar(&postgres, "postgres", true, "Also run Hydra on PostgreSQL (its production database), a fresh cluster per run from the installed postgresql package.")
	flag.Parse()
	load := wrkLoad{conns: *conns, threads: *threads, duration: *duration, warmup: *warmup}
	if err := run(*n, load, *cache, *skipTokenServer); err != nil {
		fmt.Fprintln(os.Stderr, "bench-peers:", err)
		os.Exit(1)
	}
}

var postgres bool

func secretFor(i int) string {
	return fmt.Sprintf("bench-secret-%06d-0123456789abcdefghijklmnop", i)
}

// row is one line of the table.
type row struct {
	server, config       string
	rps                  float64
	p50, p99             string
	non2xx, socketErrors string
	rssAfter, rssPeak    int64 // KiB
	note                 string
	// load is the 1-minute load average when the run ended: the machine may be shared.
	load string
}

func run(n int, load wrkLoad, cache string, skipTokenServer bool) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk is not installed (make bench-peers installs it with apt-get)")
	}
	load.wrk = wrk
	hydraBin, err := buildHydra(cache)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "bench-peers")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var rows []row
	for _, strategy := range []string{"opaque", "jwt"} {
		dir := filepath.Join(work, "hydra-sqlite-"+strategy)
		// _fk=true is the option Hydra's SQLite driver requires; the pool is PostgreSQL's (dsn()).
		dsn := "sqlite://" + filepath.Join(dir, "hydra.sqlite") + "?_fk=true&max_conns=32&max_idle_conns=32"
		r, err := measureHydra(hydraBin, dir, "SQLite", dsn, strategy, n, load)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	if postgres {
		pgBin := findPostgres()
		if pgBin == "" {
			return fmt.Errorf("PostgreSQL is not installed (make bench-peers installs it with apt-get; -postgres=false skips it)")
		}
		for _, strategy := range []string{"opaque", "jwt"} {
			r, err := measureHydraOnPostgres(hydraBin, pgBin, filepath.Join(work, "hydra-postgres-"+strategy), strategy, n, load)
			if err != nil {
				return err
			}
			rows = append(rows, r)
		}
	}
	if !skipTokenServer {
		ts, err := measureTokenServer(n, load)
		if err != nil {
			return err
		}
		rows = append(rows, ts...)
	}

	fmt.Printf("\nclients per server: %d; load: wrk -t%d -c%d, %s warm-up then %s, form bodies (client_secret_post) cycling through all clients\n", n, load.threads, load.conns, load.warmup, load.duration)
	fmt.Println("\n| server | configuration | tokens/s | p50 | p99 | non-2xx | socket errors | RSS after the run | peak RSS | load average at the end |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %.1f | %s | %s | %s | %s | %d MiB | %d MiB | %s |\n", r.server, r.config, r.rps, r.p50, r.p99, r.non2xx, r.socketErrors, r.rssAfter>>10, r.rssPeak>>10, r.load)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		if r.note != "" && !seen[r.note] {
			seen[r.note] = true
			fmt.Printf("\n%s, %s: %s\n", r.server, r.config, r.note)
		}
	}
	return nil
}

// measureHydraOnPostgres runs a fresh PostgreSQL cluster for one Hydra run.
func measureHydraOnPostgres(hydraBin, pgBin, dir, strategy string, n int, load wrkLoad) (row, error) {
	pgDir := dir + "-db"
	if err := os.MkdirAll(pgDir, 0o700); err != nil {
		return row{}, err
	}
	pg, err := startPostgres(pgBin, pgDir)
	if err != nil {
		return row{}, err
	}
	defer pg.stop()
	return measureHydra(hydraBin, dir, "PostgreSQL "+filepath.Base(filepath.Dir(pgBin)), pg.dsn(), strategy, n, load)
}

func measureHydra(bin, dir, database, dsn, strategy string, n int, load wrkLoad) (row, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return row{}, err
	}
	fmt.Printf("Hydra (%s, %s access tokens): migrating, serving, creating %d clients...\n", database, strategy, n)
	h, err := startHydra(bin, dir, dsn, strategy)
	if err != nil {
		return row{}, err
	}
	defer h.stop()
	ctx := context.Background()
	start := time.Now()
	ids, err := h.createClients(ctx, n)
	if err != nil {
		return row{}, err
	}
	created := time.Since(start)
	tokenURL := h.public + "/oauth2/token"
	if err := checkToken(tokenURL, ids[0], secretFor(0)); err != nil {
		return row{}, fmt.Errorf("hydra: %w", err)
	}
	bodies := make([]string, n)
	for i, id := range ids {
		bodies[i] = url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secretFor(i)}}.Encode()
	}
	script := filepath.Join(dir, "tokens.lua")
	if err := wrk.WriteScript(script, "/oauth2/token", bodies); err != nil {
		return row{}, err
	}
	fmt.Printf("Hydra (%s, %s): %d clients created in %s; wrk...\n", database, strategy, n, created.Round(time.Second))
	res, err := load.run(script, h.public)
	if err != nil {
		return row{}, err
	}
	return row{
		server: "Ory Hydra " + hydraVersion,
		config: fmt.Sprintf("`serve all --dev`, %s, %s access tokens, other settings default", database, strategy),
		rps:    res.RPS, p50: res.P50, p99: res.P99, non2xx: strconv.Itoa(res.Non2xx), socketErrors: res.SocketErrors,
		rssAfter: tokenserverprocess.Memory(h.pid(), "VmRSS"), rssPeak: tokenserverprocess.Memory(h.pid(), "VmHWM"),
		note: fmt.Sprintf("%d clients created through the admin API in %s; RSS is Hydra's process alone", n, created.Round(time.Second)),
		load: loadAverage(),
	}, nil
}

// checkToken asks once for a token so that a misconfigured peer fails the run instead of being
// measured answering errors.
func checkToken(tokenURL, id, secret string) error {
	resp, err := http.PostForm(tokenURL, url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("a token request answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// measureTokenServer runs hack/bench-token with n clients, credentials only (no narrowing, as
// the peers' requests), the same wrk load and no flood runs, and reads its two runs: the
// issuance limit off and on (the default).
func measureTokenServer(n int, load wrkLoad) ([]row, error) {
	fmt.Printf("token server: hack/bench-token -clients %d...\n", n)
	cmd := exec.Command("go", "run", "./hack/bench-token",
		"-clients", strconv.Itoa(n), "-connections", strconv.Itoa(load.conns), "-threads", strconv.Itoa(load.threads),
		"-duration", load.duration.String(), "-narrow=false", "-flood-duration=0")
	cmd.Dir, cmd.Stderr = controlplane.Root(), os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/bench-token: %w\n%s", err, out)
	}
	return parseBenchToken(string(out))
}

var (
	tokensRe = regexp.MustCompile(`tokens/s:\s+(\d+)`)
	latRe    = regexp.MustCompile(`latency p50 / p99:\s+(\S+) / (\S+)`)
	non2xxRe = regexp.MustCompile(`non-2xx responses:\s+(\d+) \(socket errors: ([^)]*)\)`)
	rssRe    = regexp.MustCompile(`(\d+) MiB after the load, (\d+) MiB peak`)
	ceilRe   = regexp.MustCompile(`signing-only ceiling:\s+(\d+ signatures/s.*)`)
)

// parseBenchToken reads the two result blocks of hack/bench-token's output.
func parseBenchToken(out string) ([]row, error) {
	ceiling := ""
	if m := ceilRe.FindStringSubmatch(out); m != nil {
		ceiling = "signing-only ceiling of the same run: " + strings.TrimSpace(m[1])
	}
	var rows []row
	for _, block := range []struct{ marker, config string }{
		{"\nissuance limit off", "ES256 JWTs, issuance limit off (`--issuance-per-minute=0`)"},
		{"\nissuance limit on", "ES256 JWTs, default flags (issuance limit on)"},
	} {
		i := strings.Index(out, block.marker)
		if i < 0 {
			return nil, fmt.Errorf("no %q block in hack/bench-token's output:\n%s", strings.TrimSpace(block.marker), out)
		}
		text := out[i+1:]
		if j := strings.Index(text, "\nissuance limit"); j >= 0 {
			text = text[:j]
		}
		r := row{server: "this token server", config: block.config, note: ceiling, load: loadAverage()}
		m := tokensRe.FindStringSubmatch(text)
		l := latRe.FindStringSubmatch(text)
		e := non2xxRe.FindStringSubmatch(text)
		s := rssRe.FindStringSubmatch(text)
		if m == nil || l == nil || e == nil || s == nil {
			return nil, fmt.Errorf("unexpected hack/bench-token output:\n%s", text)
		}
		r.rps, _ = strconv.ParseFloat(m[1], 64)
		r.p50, r.p99, r.non2xx, r.socketErrors = l[1], l[2], e[1], e[2]
		after, _ := strconv.ParseInt(s[1], 10, 64)
		peak, _ := strconv.ParseInt(s[2], 10, 64)
		r.rssAfter, r.rssPeak = after<<10, peak<<10
		rows = append(rows, r)
	}
	return rows, nil
}

// wrkLoad is the wrk command of every server's runs.
type wrkLoad struct {
	wrk              string
	threads, conns   int
	duration, warmup time.Duration
}

// run warms target up with wrk and then measures it.
func (l wrkLoad) run(script, target string) (wrk.Result, error) {
	args := func(d time.Duration) []string {
		// wrk's default timeout (2 s) would drop Hydra's slowest answers from the percentiles.
		return []string{"-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.conns), "-d", d.String(), "--timeout", "10s", "--latency", "-s", script, target}
	}
	if _, err := exec.Command(l.wrk, args(l.warmup)...).Output(); err != nil {
		return wrk.Result{}, fmt.Errorf("wrk warm-up: %w", err)
	}
	out, err := exec.Command(l.wrk, args(l.duration)...).Output()
	if err != nil {
		return wrk.Result{}, fmt.Errorf("wrk: %w", err)
	}
	return wrk.Parse(string(out)), nil
}

// loadAverage is the 1-minute load average, "?" where /proc/loadavg cannot be read.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if fields := strings.Fields(string(data)); err == nil && len(fields) > 0 {
		return fields[0]
	}
	return "?"
}

func splitAddr(addr string) (string, string) {
	host, port, _ := net.SplitHostPort(addr)
	return host, port
}
