package main

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
)

// Ctrl-C in a terminal sends SIGINT to its foreground process group: make, and the dev system its
// recipe runs. The system stops and exits 0, so make reports no error; make then ends by the
// signal it got, as every command that Ctrl-C ends does (exit status 130 in a shell).
func TestCtrlCEndsMakeDevWithoutAnErrorFromMake(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make:", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	cmd := exec.Command("make", "--no-print-directory", "-C", controlplane.Root(), "dev",
		"DEV_FLAGS=-issuer-url=http://"+addr+" -state-dir="+t.TempDir())
	// A fresh terminal's make: not a sub-make of a make that runs the tests.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "MAKEFLAGS=") || strings.HasPrefix(e, "MFLAGS=") || strings.HasPrefix(e, "MAKELEVEL=")
	})
	// Its own process group, which the test signals as a terminal signals its foreground group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd.Stdout, cmd.Stderr = w, w
	// make starts with SIGINT at its default, as under a terminal, even where this test inherited
	// it ignored (a background job of a script): a handled signal is reset on exec, an ignored one
	// is not.
	signal.Notify(make(chan os.Signal, 1), os.Interrupt)
	err = cmd.Start()
	signal.Reset(os.Interrupt)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	group := -cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(group, syscall.SIGKILL) })

	var mu sync.Mutex
	var out bytes.Buffer
	ready := make(chan struct{})
	go func() {
		var once sync.Once
		s := bufio.NewScanner(r)
		for s.Scan() {
			mu.Lock()
			out.WriteString(s.Text() + "\n")
			mu.Unlock()
			if strings.Contains(s.Text(), "Press Ctrl-C") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	output := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("make dev ended before it was ready: %v\n%s", err, output())
	case <-time.After(5 * time.Minute):
		t.Fatalf("make dev was not ready after 5 minutes:\n%s", output())
	}
	if err := syscall.Kill(group, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("make dev did not stop within 2 minutes of Ctrl-C:\n%s", output())
	}

	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !(ws.Exited() && ws.ExitStatus() == 0) && !(ws.Signaled() && ws.Signal() == syscall.SIGINT) {
		t.Errorf("make dev ended with %v, want exit status 0 or the end by SIGINT of an interrupted command", cmd.ProcessState)
	}
	if m := regexp.MustCompile(`(?m)^(make(\[\d+\])?: \*\*\*.*|dev: .*)$`).FindString(output()); m != "" {
		t.Errorf("Ctrl-C ended make dev with an error, %q:\n%s", m, output())
	}
	if !strings.Contains(output(), "stopping") {
		t.Errorf("the dev system did not stop:\n%s", output())
	}
}
