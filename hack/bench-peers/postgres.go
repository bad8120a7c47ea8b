package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/m2m-dev/m2m-operator/hack/internal/tokenserverprocess"
)

// postgresServer is a throwaway PostgreSQL cluster with trust authentication on loopback, for
// Hydra's production database. PostgreSQL refuses to run as root, so as root the cluster runs as
// the postgres user that Debian's postgresql package creates.
type postgresServer struct {
	cmd  *exec.Cmd
	addr string
	log  *os.File
}

// findPostgres returns the directory of initdb and postgres, or "" if none is installed.
func findPostgres() string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return ""
	}
	return filepath.Dir(matches[len(matches)-1])
}

func startPostgres(binDir, dir string) (*postgresServer, error) {
	data := filepath.Join(dir, "pgdata")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running PostgreSQL as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		// The run's directory is root's: postgres needs to pass through it to reach its own.
		if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
			return nil, err
		}
		for _, d := range []string{dir, data} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, err
			}
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(binDir, name), args...)
		cmd.Dir = dir
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return cmd
	}
	log, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return nil, err
	}
	initdb := command("initdb", "-D", data, "--auth=trust", "--username=postgres", "--no-sync")
	initdb.Stdout, initdb.Stderr = log, log
	if err := initdb.Run(); err != nil {
		return nil, fmt.Errorf("initdb: %w (log: %s)", err, log.Name())
	}
	addr, err := tokenserverprocess.FreeAddr()
	if err != nil {
		return nil, err
	}
	_, port := splitAddr(addr)
	// Settings are PostgreSQL's defaults (fsync and synchronous_commit on) but for where it
	// listens: loopback only, and its socket in the run's directory.
	cmd := command("postgres", "-D", data, "-h", "127.0.0.1", "-p", port, "-k", dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &postgresServer{cmd: cmd, addr: addr, log: log}
	deadline := time.Now().Add(time.Minute)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			// The port opens before the cluster accepts logins; Hydra's migration retries.
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("PostgreSQL did not listen within a minute (log: %s)", log.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dsn gives Hydra more pooled connections than wrk opens: at Hydra's default pool (twice the
// cores, so 4 here) the jwt strategy stalls under 16 connections, each request holding a
// connection while it waits for another (3 tokens in 5 s in a trial run).
func (p *postgresServer) dsn() string {
	return "postgres://postgres@" + p.addr + "/postgres?sslmode=disable&max_conns=32&max_idle_conns=32"
}

func (p *postgresServer) stop() {
	// SIGINT is PostgreSQL's fast shutdown.
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.log.Close()
}
