// Package tokenserverprocess builds cmd/token-server and runs the binary as a process of its own
// against an envtest API server, so that what is read of it (its RSS) is the token server's alone.
// The benchmarks and the soak use it.
package tokenserverprocess

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
)

// Build builds cmd/token-server into dir and returns the binary's path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "token-server")
	build := exec.Command("go", "build", "-o", bin, "./cmd/token-server")
	build.Dir, build.Stdout, build.Stderr = controlplane.Root(), os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building the token server: %w", err)
	}
	return bin, nil
}

// Process is a token server to run from a binary: its issuer (which is where it listens) and
// metrics are known before it starts, so that a manager can write the issuer into Secrets first.
type Process struct {
	// Env is added to the token server's environment at each Start.
	Env []string
	// Issuer is the token server's issuer URL, http on loopback.
	Issuer string
	// MetricsURL is its Prometheus endpoint.
	MetricsURL                         string
	bin, kubeconfig, addr, metricsAddr string
	cmd                                *exec.Cmd
}

// New writes a kubeconfig of a system:masters user of env into dir and picks the token server's
// addresses; Start runs it.
func New(env *envtest.Environment, bin, dir string) (*Process, error) {
	user, err := env.AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	p := &Process{bin: bin, kubeconfig: filepath.Join(dir, "kubeconfig")}
	if err := os.WriteFile(p.kubeconfig, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	if p.addr, err = FreeAddr(); err != nil {
		return nil, err
	}
	if p.metricsAddr, err = FreeAddr(); err != nil {
		return nil, err
	}
	p.Issuer, p.MetricsURL = "http://"+p.addr, "http://"+p.metricsAddr+"/metrics"
	return p, nil
}

// Start runs the token server with default flags, logging errors only, and extra flags after
// them. Its output goes to stderr.
func (p *Process) Start(extra ...string) error {
	args := []string{"--issuer-url", p.Issuer, "--listen-address", p.addr, "--metrics-bind-address", p.metricsAddr, "--kubeconfig", p.kubeconfig, "--zap-log-level", "error"}
	p.cmd = exec.Command(p.bin, append(args, extra...)...)
	p.cmd.Env = append(os.Environ(), p.Env...)
	p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	return p.cmd.Start()
}

// Stop kills the token server and waits for it; it may be called more than once.
func (p *Process) Stop() {
	if p.cmd == nil || p.cmd.Process == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// WaitCached waits until the token server's metrics say that n clients are in its cache.
func (p *Process) WaitCached(n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	want := fmt.Sprintf("m2m_clients_cached %d", n)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.MetricsURL)
		if err == nil {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if sc.Text() == want {
					resp.Body.Close()
					return nil
				}
			}
			resp.Body.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the token server did not cache %d clients", n)
}

// RSS is the token server's resident set size now, in KiB (0 when it cannot be read).
func (p *Process) RSS() int64 { return p.memory("VmRSS") }

// PeakRSS is the largest RSS the token server has had, in KiB.
func (p *Process) PeakRSS() int64 { return p.memory("VmHWM") }

// CPU is the CPU time (user and system) the token server has used so far, 0 when it cannot be
// read.
func (p *Process) CPU() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	return statCPU(string(data))
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux architecture Go
// supports, and not readable without cgo.
const clockTicks = 100

// statCPU reads utime and stime of /proc/PID/stat. They are the 14th and 15th fields, counted
// after the command name, which is in parentheses and may hold spaces.
func statCPU(stat string) time.Duration {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	// After ")": state is field 3, so utime (14) and stime (15) are the 12th and 13th.
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

func (p *Process) memory(field string) int64 { return Memory(p.cmd.Process.Pid, field) }

// Memory is a figure in KiB (VmRSS, VmHWM) of /proc/PID/status of any process, 0 if it cannot
// be read; the peers benchmark reads the other servers' memory with it.
func Memory(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return statusField(string(data), field)
}

// statusField reads a figure in kB of /proc/PID/status.
func statusField(status, field string) int64 {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			fields := strings.Fields(v)
			if len(fields) == 0 {
				return 0
			}
			kb, _ := strconv.ParseInt(fields[0], 10, 64)
			return kb
		}
	}
	return 0
}

// FreeAddr is a loopback address with a port free now, for a server started next.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
