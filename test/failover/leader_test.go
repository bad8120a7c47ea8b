package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// Two managers, each its own process, with leader election on; a token server; consumers that
// ask for tokens without pause with the credentials they have mounted from each client's Secret.
// Every client is asked to rotate (the rotate annotation) and the leader is killed with SIGKILL
// when about half have rotated. The standby takes over and finishes: every client rotated
// exactly once, no credential a consumer held was refused, no client has two current secrets.
func TestKillingTheManagerLeaderMidRotationRotatesEveryClientOnceAndRefusesNoCredential(t *testing.T) {
	n := clientCount(t)
	const (
		workers = 8
		// kubeletDelay is how long after a Secret changes its pods see it. A kubelet takes a
		// minute or more; a second is well above the token server's cache lag.
		kubeletDelay = time.Second
		rotate       = "failover"
	)
	managerConfig, tokenServerConfig := componentConfigs(t)
	ns := testenv.Namespace(t, env.Client)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	recorded, err := testenv.RecordCredentials(ctx, env.Config, ns)
	if err != nil {
		t.Fatal(err)
	}

	ln := listen(t)
	issuer := "http://" + ln.Addr().String()
	kubeconfig := writeKubeconfig(t, managerConfig)
	managers := make([]*child, 2)
	for i := range managers {
		managers[i] = startChild(t, fmt.Sprintf("manager-%d", i), roleManager,
			[]string{kubeconfigEnv + "=" + kubeconfig, issuerEnv + "=" + issuer, namespaceEnv + "=" + ns})
	}
	runTokenServer(t, tokenServerConfig, ln, issuer, ns, settleTimeout(n))
	leader, standby := electedOne(t, managers)
	secrets := createClients(t, ns, n)

	k, err := startKubelet(ctx, env.Config, secrets, kubeletDelay)
	if err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	load := startLoad(n, workers, func(i int) error {
		id, secret := k.credentials(i, time.Now())
		resp, err := testenv.ClientCredentials(ctx, httpc, issuer, id, secret)
		if err == nil && resp.Status != http.StatusOK {
			err = fmt.Errorf("answered %d %s", resp.Status, resp.Error)
		}
		return err
	})
	t.Cleanup(load.stop)
	load.waitEveryClientServedAfter(t, time.Time{})

	// The annotations are all written before the kill, so that every write after it is a
	// manager's.
	rotateStart := time.Now()
	if err := annotateAll(ctx, ns, n, rotate); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, settleTimeout(n), func() error {
		if c := k.changed(); c < n/2 {
			return fmt.Errorf("%d of %d clients rotated", c, n)
		}
		return nil
	})
	killedAt := time.Now()
	leader.kill()
	rotatedAtKill := k.changed()
	if rotatedAtKill == n {
		t.Fatalf("all %d clients had rotated when the leader died; the test interrupted nothing", n)
	}
	if at, ok := standby.printed(electedLine); ok && at.Before(killedAt) {
		t.Fatal("the standby was elected while the leader lived")
	}
	testenv.Eventually(t, settleTimeout(n), func() error {
		if _, ok := standby.printed(electedLine); !ok {
			return fmt.Errorf("the standby has not taken over")
		}
		return nil
	})
	electedAt, _ := standby.printed(electedLine)

	final := settle(t, ns, n, k, rotate)
	rotated := time.Since(rotateStart)
	testenv.Eventually(t, settleTimeout(n), func() error { return k.mounted(final) })
	load.waitEveryClientServedAfter(t, time.Now())
	load.stop()
	if failed := load.failed.Load(); failed != 0 {
		t.Fatalf("%d of %d token requests with mounted credentials were refused or failed; first: %v", failed, failed+load.ok.Load(), load.firstErr.Load())
	}

	time.Sleep(300 * time.Millisecond) // the last watch events
	secretVersions, clientVersions := recorded()
	firstWrite := checkHistory(t, ns, n, final, secretVersions, clientVersions, electedAt)

	t.Logf("%d clients: %d had rotated when the leader died; %s from the annotations until every client had settled",
		n, rotatedAtKill, rotated.Round(100*time.Millisecond))
	t.Logf("%d token requests with mounted credentials, %d refused or failed", load.ok.Load()+load.failed.Load(), load.failed.Load())
	t.Logf("from the kill: %s until the standby was elected, %s until its first write (lease %s, retry period %s)",
		electedAt.Sub(killedAt).Round(time.Millisecond), firstWrite.Sub(killedAt).Round(time.Millisecond), leaseDuration, retryPeriod)
}

// runTokenServer runs the token server in this process until the test ends, and waits until it
// is ready (which it is only once a manager has written the signing keys).
func runTokenServer(t *testing.T, cfg *rest.Config, ln net.Listener, issuer, ns string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// Without an IssuanceLimit, off, as in process_test.go.
		done <- tokenserver.Run(ctx, cfg, tokenserver.Options{
			IssuerURL: issuer, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret, WatchNamespaces: []string{ns},
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("token server: %v", err)
		}
	})
	if err := testenv.WaitOK(issuer+"/readyz", timeout); err != nil {
		t.Fatal(err)
	}
}

// electedOne waits until one of the two managers is elected, and returns it and the other.
func electedOne(t *testing.T, managers []*child) (leader, standby *child) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func() error {
		_, first := managers[0].printed(electedLine)
		_, second := managers[1].printed(electedLine)
		switch {
		case first && second:
			return fmt.Errorf("both managers were elected")
		case first:
			leader, standby = managers[0], managers[1]
		case second:
			leader, standby = managers[1], managers[0]
		default:
			return fmt.Errorf("no manager is elected")
		}
		return nil
	})
	return leader, standby
}

// annotateAll sets the rotate annotation of the n clients of ns to value, 16 at a time: faster
// than the manager rotates them.
func annotateAll(ctx context.Context, ns string, n int, value string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{m2mv1alpha1.RotateAnnotation: value}}})
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: clientName(i)}}
			return env.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch))
		})
	}
	return g.Wait()
}

// settle waits until every client has handled the annotation value and has nothing left to do,
// then checks that none keeps two current secrets; it returns each client's final secret.
func settle(t *testing.T, ns string, n int, k *kubelet, value string) []string {
	t.Helper()
	ctx := context.Background()
	var clients m2mv1alpha1.M2MClientList
	var secrets []*corev1.Secret
	testenv.Eventually(t, settleTimeout(n), func() error {
		// Cheap first: every Secret has changed.
		if c := k.changed(); c != n {
			return fmt.Errorf("%d of %d clients rotated", c, n)
		}
		if err := env.Client.List(ctx, &clients, client.InNamespace(ns)); err != nil {
			return err
		}
		secrets = clientSecrets(t, ns, n)
		for _, o := range clients.Items {
			var i int
			_, _ = fmt.Sscanf(o.Name, "client-%04d", &i)
			switch {
			case !meta.IsStatusConditionTrue(o.Status.Conditions, m2mv1alpha1.ConditionReady) || o.Status.ObservedGeneration != o.Generation:
				return fmt.Errorf("%s is not Ready at its generation", o.Name)
			case o.Status.LastRotateAnnotation != value:
				return fmt.Errorf("%s has not handled the annotation", o.Name)
			case controllers.DecideSecret(&o, secrets[i], time.Now()).Action != controllers.ActionNone:
				return fmt.Errorf("%s has a rotation in progress", o.Name)
			}
		}
		return nil
	})
	final := make([]string, n)
	for _, o := range clients.Items {
		var i int
		_, _ = fmt.Sscanf(o.Name, "client-%04d", &i)
		final[i] = string(secrets[i].Data[m2mv1alpha1.SecretKeyClientSecret])
		if u := credentials.Entries(o.Status.AcceptedSecrets).Unexpiring(); u != 1 || !credentials.Verify(o.Status.AcceptedSecrets, final[i], time.Now()) {
			t.Errorf("%s ends with %d current secrets, its Secret's accepted: %v", o.Name, u, credentials.Verify(o.Status.AcceptedSecrets, final[i], time.Now()))
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return final
}

// checkHistory checks every version of the Secrets and clients stored during the test: each
// Secret held exactly two secrets (one rotation), and each carried a secret that an earlier
// version of its client's status accepted. It returns when the first version after electedAt
// arrived: the new leader's first write.
func checkHistory(t *testing.T, ns string, n int, final []string, secretVersions, clientVersions []testenv.Version, electedAt time.Time) time.Time {
	t.Helper()
	bySecret, byClient := map[string][]testenv.Version{}, map[string][]testenv.Version{}
	var firstWrite time.Time
	for _, v := range append(append([]testenv.Version(nil), secretVersions...), clientVersions...) {
		if v.At.After(electedAt) && (firstWrite.IsZero() || v.At.Before(firstWrite)) {
			firstWrite = v.At
		}
	}
	for _, v := range secretVersions {
		bySecret[v.Object.GetName()] = append(bySecret[v.Object.GetName()], v)
	}
	for _, v := range clientVersions {
		byClient[v.Object.GetName()] = append(byClient[v.Object.GetName()], v)
	}
	complete(t, ns, byClient, &m2mv1alpha1.M2MClientList{})
	complete(t, ns, bySecret, &corev1.SecretList{})
	for i := range n {
		name := clientName(i)
		versions := byClient[name]
		if len(versions) == 0 {
			t.Fatalf("no version of %s was recorded", name)
		}
		secretName := versions[len(versions)-1].Object.(*m2mv1alpha1.M2MClient).Status.SecretName
		values := map[string]bool{}
		for _, v := range bySecret[secretName] {
			values[string(v.Object.(*corev1.Secret).Data[m2mv1alpha1.SecretKeyClientSecret])] = true
		}
		if len(values) != 2 || !values[final[i]] {
			t.Errorf("%s's Secret held %d different secrets (the final one among them: %v); one rotation makes 2", name, len(values), values[final[i]])
		}
		if _, err := testenv.AcceptedBefore(bySecret[secretName], versions, func(o client.Object, secret string) bool {
			return credentials.Verify(o.(*m2mv1alpha1.M2MClient).Status.AcceptedSecrets, secret, time.Now())
		}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if firstWrite.IsZero() {
		t.Error("no write was recorded after the standby was elected")
	}
	return firstWrite
}

// complete fails the test unless the last recorded version of each object of list's kind in ns
// is the one stored now: the history the test checks misses no version at its end.
func complete(t *testing.T, ns string, recorded map[string][]testenv.Version, list client.ObjectList) {
	t.Helper()
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if err := meta.EachListItem(list, func(o runtime.Object) error {
		obj := o.(client.Object)
		versions := recorded[obj.GetName()]
		if len(versions) == 0 || versions[len(versions)-1].Object.GetResourceVersion() != obj.GetResourceVersion() {
			return fmt.Errorf("the recording missed versions of %T %s", o, obj.GetName())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// kubelet hands each change of a client's Secret to the client's pods a delay after it sees it,
// as a kubelet refreshes a mounted Secret.
type kubelet struct {
	ids   []string
	index map[string]int // Secret name: client

	mu sync.Mutex
	// values are each client's secrets, oldest first, and when its pods see them.
	values [][]mountedValue
}

type mountedValue struct {
	secret    string
	visibleAt time.Time
}

func startKubelet(ctx context.Context, cfg *rest.Config, secrets []*corev1.Secret, delay time.Duration) (*kubelet, error) {
	k := &kubelet{ids: make([]string, len(secrets)), index: map[string]int{}, values: make([][]mountedValue, len(secrets))}
	var from int64
	for i, s := range secrets {
		k.ids[i] = string(s.Data[m2mv1alpha1.SecretKeyClientID])
		k.index[s.Name] = i
		k.values[i] = []mountedValue{{secret: string(s.Data[m2mv1alpha1.SecretKeyClientSecret])}}
		rv, _ := strconv.ParseInt(s.ResourceVersion, 10, 64)
		from = max(from, rv)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	api := cs.CoreV1().Secrets(secrets[0].Namespace)
	// A watch that the API server ends (it ends those that fall behind) goes on where it was.
	w, err := watchtools.NewRetryWatcherWithContext(ctx, strconv.FormatInt(from, 10), &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return api.Watch(ctx, o) },
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for ev := range w.ResultChan() {
			s, ok := ev.Object.(*corev1.Secret)
			if !ok {
				continue
			}
			i, known := k.index[s.Name]
			if !known {
				continue
			}
			value := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
			k.mu.Lock()
			if vs := k.values[i]; vs[len(vs)-1].secret != value {
				k.values[i] = append(vs, mountedValue{secret: value, visibleAt: time.Now().Add(delay)})
			}
			k.mu.Unlock()
		}
	}()
	return k, nil
}

// credentials returns the client ID and secret that client i's pods have mounted at now.
func (k *kubelet) credentials(i int, now time.Time) (string, string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	secret := ""
	for _, v := range k.values[i] {
		if !v.visibleAt.After(now) {
			secret = v.secret
		}
	}
	return k.ids[i], secret
}

// changed counts the clients whose Secret has changed.
func (k *kubelet) changed() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := 0
	for _, vs := range k.values {
		if len(vs) > 1 {
			c++
		}
	}
	return c
}

// mounted returns an error until every client's pods have their final secret mounted.
func (k *kubelet) mounted(final []string) error {
	for i := range final {
		if _, s := k.credentials(i, time.Now()); s != final[i] {
			return fmt.Errorf("%s's pods do not have the final secret yet", clientName(i))
		}
	}
	return nil
}
