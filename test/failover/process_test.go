package failover

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
)

// The test binary re-executes itself as a token-server replica or a manager: TestMain runs
// helperMain instead of the tests when roleEnv is set, so nothing else needs building and the
// process that dies runs the code that ships.
const (
	roleEnv       = "M2M_FAILOVER_ROLE"
	kubeconfigEnv = "M2M_FAILOVER_KUBECONFIG"
	issuerEnv     = "M2M_FAILOVER_ISSUER"
	namespaceEnv  = "M2M_FAILOVER_NAMESPACE"

	roleTokenServer = "token-server"
	roleManager     = "manager"

	// electedLine is what a manager prints on stdout when it becomes the leader.
	electedLine = "elected"
)

// Leader election timed short so that a takeover takes seconds: a standby takes the lease
// about leaseDuration after the leader's last renewal, plus up to retryPeriod.
const (
	leaseDuration = 4 * time.Second
	renewDeadline = 3 * time.Second
	retryPeriod   = 500 * time.Millisecond
)

// leaseNamespace holds the manager's lease: the operator's namespace, where config/rbac lets
// the manager's ServiceAccount write leases.
var leaseNamespace = signingkeys.DefaultSecret.Namespace

// helperMain runs one role until SIGTERM or SIGKILL; it returns the exit code.
func helperMain(role string) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv(kubeconfigEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ns := []string{os.Getenv(namespaceEnv)}
	switch role {
	case roleTokenServer:
		// The listener is the parent's, passed as the first extra file (fd 3), so that the
		// parent knows the address before the replica starts.
		ln, err := net.FileListener(os.NewFile(3, "listener"))
		if err == nil {
			// Without an IssuanceLimit, off: the load asks for each client's tokens more often
			// than the default of 600 a minute, and what is measured is the failover.
			err = tokenserver.Run(ctx, cfg, tokenserver.Options{
				IssuerURL: os.Getenv(issuerEnv), Listener: ln, SigningKeySecret: signingkeys.DefaultSecret, WatchNamespaces: ns,
			})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case roleManager:
		// cmd/manager's default rate limits.
		cfg.QPS, cfg.Burst = 100, 200
		mgr, err := controllers.NewManager(cfg, controllers.Options{
			IssuerURL: os.Getenv(issuerEnv), WatchNamespaces: ns,
			LeaderElection: true, LeaderElectionNamespace: leaseNamespace,
			LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			select {
			case <-mgr.Elected():
				fmt.Println(electedLine)
			case <-ctx.Done():
			}
		}()
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown role", role)
		return 2
	}
	return 0
}

// child is a helper process.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	// exited is closed once the process has ended and been reaped.
	exited chan struct{}

	mu    sync.Mutex
	lines []line
}

// line is one line the child printed on stdout, and when the parent read it.
type line struct {
	text string
	at   time.Time
}

// startChild starts the test binary as role with env (name=value pairs) and extra files (fd 3
// on), and kills it when the test ends, whatever its outcome. Its stderr goes to a log file
// whose end the test prints when it fails.
func startChild(t *testing.T, name, role string, env []string, files ...*os.File) *child {
	t.Helper()
	c := &child{name: name, log: filepath.Join(t.TempDir(), name+".log"), exited: make(chan struct{})}
	logs, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	out, in, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// -test.run=^$: should the role be lost, the child runs no test.
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	c.cmd.Stdout, c.cmd.Stderr, c.cmd.ExtraFiles = in, logs, files
	c.cmd.SysProcAttr = dieWithParent()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.Close()
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, line{text: s.Text(), at: time.Now()})
			c.mu.Unlock()
		}
		out.Close()
	}()
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			c.printLogTail(t)
		}
	})
	return c
}

// kill sends SIGKILL, as kill -9 does, and waits until the process is gone: its sockets are
// closed by then. Killing a process that has ended does nothing.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// printed returns when the child printed text, if it did.
func (c *child) printed(text string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if l.text == text {
			return l.at, true
		}
	}
	return time.Time{}, false
}

// alive reports whether the process is still running.
func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

func (c *child) printLogTail(t *testing.T) {
	data, err := os.ReadFile(c.log)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	t.Logf("last lines of %s's log:\n%s", c.name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
}

// writeKubeconfig writes cfg, a client certificate's config, as a kubeconfig file in dir for
// a child process. The file holds a private key: it is the test's and goes with its directory.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData,
		ClientCertificate: cfg.CertFile, ClientKey: cfg.KeyFile, Token: cfg.BearerToken,
	}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "user"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
