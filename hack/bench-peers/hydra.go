package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/m2m-dev/m2m-operator/hack/internal/fanout"
	"github.com/m2m-dev/m2m-operator/hack/internal/tokenserverprocess"
)

const (
	hydraModule  = "github.com/ory/hydra/v2"
	hydraVersion = "v2.3.0"
	// Hydra's Makefile builds and tests with these tags; sqlite needs cgo.
	hydraTags = "sqlite,sqlite_omit_load_extension"
)

// buildHydra returns the Hydra binary in cache, building it first if it is not there.
//
// `go install` refuses Hydra's module because its go.mod has replace directives, which apply
// only inside the module itself: so its source is downloaded with the Go toolchain, copied to a
// writable directory and built there. One replace cannot apply as it stands:
// github.com/ory/hydra-client-go/v2 => ./internal/httpclient names a directory that is a module
// of its own and so is not in Hydra's module zip; it is dropped, and the CLI's client takes the
// published version Hydra's go.mod requires (v2.2.1). The server does not use that client.
func buildHydra(cache string) (string, error) {
	bin := filepath.Join(cache, "bin", "hydra-"+hydraVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	fmt.Printf("building Ory Hydra %s from its module source (once; cached in %s)...\n", hydraVersion, cache)
	// The download has a module cache of its own so that the source stays where the cache says.
	modcache := filepath.Join(cache, "gomod")
	dl := exec.Command("go", "mod", "download", "-json", hydraModule+"@"+hydraVersion)
	dl.Dir, dl.Stderr = os.TempDir(), os.Stderr
	dl.Env = append(os.Environ(), "GOMODCACHE="+modcache, "GOFLAGS=-mod=mod")
	out, err := dl.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("downloading %s@%s: %s", hydraModule, hydraVersion, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("downloading %s@%s: %w", hydraModule, hydraVersion, err)
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		return "", fmt.Errorf("go mod download printed no source directory: %s", out)
	}
	src := filepath.Join(cache, "src", "hydra-"+hydraVersion)
	if err := os.RemoveAll(src); err != nil {
		return "", err
	}
	// CopyFS writes files 0o666 (plus execute bits), so the copy is writable where the module
	// cache is not.
	if err := os.CopyFS(src, os.DirFS(info.Dir)); err != nil {
		return "", fmt.Errorf("copying the Hydra source: %w", err)
	}
	steps := [][]string{
		{"go", "mod", "edit", "-dropreplace", "github.com/ory/hydra-client-go/v2"},
		{"go", "build", "-tags", hydraTags, "-ldflags", "-X github.com/ory/hydra/v2/driver/config.Version=" + hydraVersion, "-o", bin + ".tmp", "."},
	}
	for _, step := range steps {
		cmd := exec.Command(step[0], step[1:]...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = src, os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOFLAGS=-mod=mod")
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("building Hydra (%v): %w", step, err)
		}
	}
	return bin, os.Rename(bin+".tmp", bin)
}

// hydraServer is a running `hydra serve all --dev` on SQLite.
type hydraServer struct {
	cmd           *exec.Cmd
	public, admin string
	log           *os.File
}

// startHydra migrates the empty database dsn and serves Hydra on loopback with its defaults
// except accessTokens (opaque or jwt), logging only errors.
func startHydra(bin, dir, dsn, accessTokens string) (*hydraServer, error) {
	publicAddr, err := tokenserverprocess.FreeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := tokenserverprocess.FreeAddr()
	if err != nil {
		return nil, err
	}
	system := make([]byte, 32)
	if _, err := rand.Read(system); err != nil {
		return nil, err
	}
	_, publicPort := splitAddr(publicAddr)
	_, adminPort := splitAddr(adminAddr)
	env := append(os.Environ(),
		"DSN="+dsn,
		"SECRETS_SYSTEM="+hex.EncodeToString(system),
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT="+publicPort,
		"SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT="+adminPort,
		"URLS_SELF_ISSUER=http://"+publicAddr+"/",
		"STRATEGIES_ACCESS_TOKEN="+accessTokens,
		"LOG_LEVEL=error",
	)
	log, err := os.Create(filepath.Join(dir, "hydra.log"))
	if err != nil {
		return nil, err
	}
	migrate := exec.Command(bin, "migrate", "sql", "up", "-e", "--yes")
	migrate.Env, migrate.Stdout, migrate.Stderr = env, log, log
	if err := migrate.Run(); err != nil {
		return nil, fmt.Errorf("hydra migrate sql up: %w (log: %s)", err, log.Name())
	}
	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	cmd.Env, cmd.Stdout, cmd.Stderr = env, log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &hydraServer{cmd: cmd, public: "http://" + publicAddr, admin: "http://" + adminAddr, log: log}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(h.admin + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return h, nil
			}
		}
		if time.Now().After(deadline) {
			h.stop()
			return nil, fmt.Errorf("hydra was not ready within 2 minutes (log: %s)", log.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *hydraServer) pid() int { return h.cmd.Process.Pid }

func (h *hydraServer) stop() {
	_ = h.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
	h.log.Close()
}

// createClients creates n client_credentials clients through Hydra's admin API, each with the
// secret secretFor(i) sent in the form body (client_secret_post), and returns their IDs in
// order. Hydra hashes each secret as it stores it, so a few requests run at once.
func (h *hydraServer) createClients(ctx context.Context, n int) ([]string, error) {
	ids := make([]string, n)
	err := fanout.Run(n, 4, func(i int) error {
		id, err := h.createClient(ctx, i)
		ids[i] = id
		return err
	})
	return ids, err
}

func (h *hydraServer) createClient(ctx context.Context, i int) (string, error) {
	body, err := json.Marshal(map[string]any{
		"client_name":                "bench-" + strconv.Itoa(i),
		"client_secret":              secretFor(i),
		"grant_types":                []string{"client_credentials"},
		"response_types":             []string{"token"},
		"token_endpoint_auth_method": "client_secret_post",
		"scope":                      "read:invoices write:payments",
		"audience":                   []string{"https://payments.example.com"},
	})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.admin+"/admin/clients", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		// The answer would repeat the secret: only its status is reported.
		return "", fmt.Errorf("creating Hydra client %d: HTTP %d", i, resp.StatusCode)
	}
	var created struct {
		ClientID string `json:"client_id"`
	}
	if err := json.Unmarshal(data, &created); err != nil || created.ClientID == "" {
		return "", fmt.Errorf("creating Hydra client %d: no client_id in the answer", i)
	}
	return created.ClientID, nil
}
