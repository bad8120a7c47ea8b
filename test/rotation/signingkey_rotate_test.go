package rotation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/plugin"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// loadClient is one client's credentials as its pod has them mounted.
type loadClient struct {
	key        types.NamespacedName
	id, secret string
}

func loadClients(t *testing.T, prefix string, n int) []loadClient {
	t.Helper()
	var out []loadClient
	for i := range n {
		key := create(t, rotatingClient(sharedNamespace, fmt.Sprintf("%s-%d", prefix, i), nil))
		obj, secret := settled(t, key, nil)
		tokenEventually(t, obj.Status.ClientID, secret, http.StatusOK)
		out = append(out, loadClient{key: key, id: obj.Status.ClientID, secret: secret})
	}
	return out
}

// issuedToken is a token the load got, and the kid that signed it.
type issuedToken struct{ token, kid string }

// tokenLoad is pods asking for tokens, each client after the other, by two workers, until
// stopped. check, when set, verifies each token as a resource server would when it arrives.
type tokenLoad struct {
	// clock is held for reading around each request and its check, and for writing while the
	// test moves the fake clock: a token is checked at the time it was issued.
	clock               sync.RWMutex
	refused, unverified atomic.Int64
	firstErr            atomic.Value
	mu                  sync.Mutex
	tokens              []issuedToken
	stopCh              chan struct{}
	wg                  sync.WaitGroup
}

func startTokenLoad(t *testing.T, clients []loadClient, check func(token string) error) *tokenLoad {
	t.Helper()
	const workers = 2
	l := &tokenLoad{stopCh: make(chan struct{})}
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; l.running(); i = (i + 1) % len(clients) {
				l.ask(httpc, clients[i], check)
				time.Sleep(5 * time.Millisecond) // pacing, so that two workers leave the machine some room
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func (l *tokenLoad) ask(httpc *http.Client, c loadClient, check func(string) error) {
	l.clock.RLock()
	defer l.clock.RUnlock()
	resp, err := testenv.ClientCredentials(context.Background(), httpc, issuer, c.id, c.secret)
	switch {
	case err != nil:
		l.fail(&l.refused, fmt.Errorf("client %s: %w", c.key.Name, err))
		return
	case resp.Status != http.StatusOK:
		l.fail(&l.refused, fmt.Errorf("client %s: status %d, error %q", c.key.Name, resp.Status, resp.Error))
		return
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(resp.AccessToken, jwt.MapClaims{})
	if err != nil {
		l.fail(&l.unverified, err)
		return
	}
	kid, _ := parsed.Header["kid"].(string)
	if check != nil {
		if err := check(resp.AccessToken); err != nil {
			l.fail(&l.unverified, fmt.Errorf("a token of key %s: %w", kid, err))
		}
	}
	l.mu.Lock()
	l.tokens = append(l.tokens, issuedToken{resp.AccessToken, kid})
	l.mu.Unlock()
}

func (l *tokenLoad) fail(counter *atomic.Int64, err error) {
	counter.Add(1)
	l.firstErr.CompareAndSwap(nil, err.Error())
}

func (l *tokenLoad) running() bool {
	select {
	case <-l.stopCh:
		return false
	default:
		return true
	}
}

// stop ends the load and waits for its workers; it may be called more than once.
func (l *tokenLoad) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

// step moves the fake clock while no request is under way.
func (l *tokenLoad) step(d time.Duration) {
	l.clock.Lock()
	defer l.clock.Unlock()
	clk.Step(d)
}

func (l *tokenLoad) issued() []issuedToken {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.tokens)
}

// more waits until the load has got n more tokens than it has now.
func (l *tokenLoad) more(t *testing.T, n int) {
	t.Helper()
	want := len(l.issued()) + n
	testenv.Eventually(t, wait, func() error {
		if got := len(l.issued()); got < want {
			return fmt.Errorf("%d tokens, waiting for %d (%d refused, first: %v)", got, want, l.refused.Load(), l.firstErr.Load())
		}
		return nil
	})
}

func (l *tokenLoad) String() string {
	return fmt.Sprintf("%d tokens, %d requests refused, %d tokens that did not verify (first: %v)", len(l.issued()), l.refused.Load(), l.unverified.Load(), l.firstErr.Load())
}

// verifier is a resource server's pkg/m2mauth verifier, on the fake clock. These tests are of
// signing keys, and the fake clock runs hours ahead of the token server's list (its exp), so the
// revocation list is off.
func verifier(t *testing.T, opts ...m2mauth.VerifierOption) *m2mauth.Verifier {
	t.Helper()
	v, err := m2mauth.NewVerifier(context.Background(), issuer, append([]m2mauth.VerifierOption{m2mauth.WithAudiences("https://api.example.com"), m2mauth.WithClock(clk.Now), m2mauth.WithoutRevocation()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// kubectlM2M runs the plugin as a cluster administrator and returns what it printed.
func kubectlM2M(t *testing.T, args ...string) string {
	t.Helper()
	kc := testenv.Kubeconfig(t, env, envtest.User{Name: "admin-" + strings.ToLower(t.Name()), Groups: []string{"system:masters"}})
	var out, errOut bytes.Buffer
	if code := plugin.Run(context.Background(), append(args, "--kubeconfig", kc, "--timeout", wait.String()), &out, &errOut); code != 0 {
		t.Fatalf("kubectl m2m %v: exit code %d: %s", args, code, errOut.String())
	}
	return out.String()
}

func signingKeys(t *testing.T) (*corev1.Secret, *signingkeys.Set) {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), signingkeys.DefaultSecret, s); err != nil {
		t.Fatal(err)
	}
	set, err := signingkeys.Parse(s.Data[signingkeys.DataKey])
	if err != nil {
		t.Fatal(err)
	}
	return s, set
}

// askRotation annotates the signing-key Secret and waits until the manager has acted on value.
func askRotation(t *testing.T, annotation, done, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, annotation, value)
	s := &corev1.Secret{}
	s.Namespace, s.Name = signingkeys.DefaultSecret.Namespace, signingkeys.DefaultSecret.Name
	if err := env.Client.Patch(context.Background(), s, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if s, _ := signingKeys(t); s.Annotations[done] != value {
			return fmt.Errorf("%s is %q, waiting for %q", done, s.Annotations[done], value)
		}
		return nil
	})
}

func signsWith(t *testing.T, c loadClient, kid string) {
	t.Helper()
	testenv.Eventually(t, wait, func() error {
		if _, got := issue(t, c.id, c.secret); got != kid {
			return fmt.Errorf("signed with %s, want %s", got, kid)
		}
		return nil
	})
}

// A planned rotation under load: the successor is in the JWKS from the moment the manager acts,
// signs only once it has been for the prepublish time, and no request and no token is refused.
func TestAPlannedSigningKeyRotationRefusesNoTokenUnderLoad(t *testing.T) {
	clients := loadClients(t, "sk-planned", 3)
	v := verifier(t, m2mauth.WithMinRefreshInterval(time.Second))
	load := startTokenLoad(t, clients, func(tok string) error {
		_, err := v.Authenticate(context.Background(), tok)
		return err
	})
	load.more(t, 20)
	_, before := signingKeys(t)
	old := before.Active().KID

	out := kubectlM2M(t, "rotate-signing-key")
	_, set := signingKeys(t)
	var next *signingkeys.Key
	for _, k := range set.Keys {
		if k.State == signingkeys.StateNext {
			next = k
		}
	}
	if next == nil || next.SignsFrom == nil || set.Active().KID != old {
		t.Fatalf("keys after a planned rotation: %+v", set.Keys)
	}
	if want := next.SignsFrom.UTC().Format(time.RFC3339); !strings.Contains(out, next.KID) || !strings.Contains(out, want) {
		t.Fatalf("the plugin's output does not say that %s signs from %s:\n%s", next.KID, want, out)
	}
	testenv.Eventually(t, wait, func() error {
		if !published(jwks(t), next.KID) {
			return fmt.Errorf("the successor %s is not in the JWKS", next.KID)
		}
		return nil
	})
	// A verifier that fetches the JWKS now and never again knows the successor before it signs.
	once := verifier(t, m2mauth.WithMinRefreshInterval(1000*time.Hour))

	load.more(t, 20)
	if slices.ContainsFunc(load.issued(), func(it issuedToken) bool { return it.kid == next.KID }) {
		t.Fatal("the successor signed before its prepublish time was over")
	}
	load.step(next.SignsFrom.Sub(clk.Now()))
	pokeKeys(t)
	signsWith(t, clients[0], next.KID)
	load.more(t, 20)
	load.stop()

	if load.refused.Load() != 0 || load.unverified.Load() != 0 {
		t.Fatalf("under a planned rotation: %s", load)
	}
	t.Logf("under a planned rotation: %s", load)
	issued := load.issued()
	i := slices.IndexFunc(issued, func(it issuedToken) bool { return it.kid == next.KID })
	if i < 0 {
		t.Fatalf("the load got no token of the successor: %s", load)
	}
	if _, err := once.Authenticate(context.Background(), issued[len(issued)-1].token); err != nil {
		t.Fatalf("a verifier that fetched the JWKS once, after the successor was published, refuses its tokens: %v", err)
	}
	_, after := signingKeys(t)
	if k := after.Find(old); k == nil || k.State != signingkeys.StateRetired || !published(jwks(t), old) {
		t.Fatalf("the old key is not retired and published: %+v", after.Keys)
	}
}

// clientState is what a client's credentials are: its Secret's secret and the hashes its status
// accepts.
func clientState(t *testing.T, c loadClient) (secret string, hashes []string) {
	t.Helper()
	obj := &m2mv1alpha1.M2MClient{}
	if err := env.Client.Get(context.Background(), c.key, obj); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: c.key.Namespace, Name: obj.Status.SecretName}, s); err != nil {
		t.Fatal(err)
	}
	for _, e := range obj.Status.AcceptedSecrets {
		hashes = append(hashes, e.Hash)
	}
	slices.Sort(hashes)
	return string(s.Data[m2mv1alpha1.SecretKeyClientSecret]), hashes
}

// An emergency rotation under load: every key the Secret held leaves the JWKS at once; once
// pkg/m2mauth has fetched it again it refuses their tokens and accepts the new key's; the token
// server refuses no client meanwhile; the status keys rotate without any status being discarded,
// and no client's credentials change.
func TestAnEmergencySigningKeyRotationRefusesTheOldKeysTokensAndKeepsEveryClientsCredentials(t *testing.T) {
	clients := loadClients(t, "sk-emergency", 3)
	type state struct {
		secret string
		hashes []string
	}
	before := map[string]state{}
	for _, c := range clients {
		s, h := clientState(t, c)
		before[c.key.Name] = state{s, h}
	}
	// A successor published first: whoever copied the Secret has its key too.
	askRotation(t, keyring.RotateAnnotation, keyring.RotatedAnnotation, "before-the-emergency-"+t.Name())
	_, set := signingKeys(t)
	var oldKids []string
	for _, k := range set.Keys {
		oldKids = append(oldKids, k.KID)
	}
	if len(oldKids) < 2 {
		t.Fatalf("no successor was published: %+v", set.Keys)
	}
	oldStatusKey := statusKeys(t).Active().ID

	v := verifier(t) // pkg/m2mauth's defaults: it fetches for an unknown kid at most every 30s
	load := startTokenLoad(t, clients, nil)
	load.more(t, 20)
	if _, err := v.Authenticate(context.Background(), load.issued()[0].token); err != nil {
		t.Fatalf("a token of the old key does not verify before the emergency: %v", err)
	}
	// Two pods of one client call a service behind pkg/m2mauth's Middleware with that verifier:
	// one through m2mauth.NewClient, one through oauth2.NewClient.
	svc := newGuardedService(t, v)
	recovering := newWorkload(t, clients[2], "m2mauth.NewClient", m2mauth.NewClient)
	plain := newWorkload(t, clients[2], "oauth2.NewClient", oauth2.NewClient)
	callsSucceed := func(when string) {
		t.Helper()
		for _, w := range []*workload{recovering, plain} {
			if status, _ := w.call(t, svc); status != http.StatusOK {
				t.Fatalf("%s, the workload with %s got %d", when, w.name, status)
			}
		}
	}
	callsSucceed("before the emergency")
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	logsFrom := len(logs)

	out := kubectlM2M(t, "rotate-signing-key", "--emergency")
	_, set = signingKeys(t)
	fresh := set.Active().KID
	if len(set.Keys) != 1 || slices.Contains(oldKids, fresh) || !strings.Contains(out, fresh) {
		t.Fatalf("keys after an emergency: %+v; the plugin said:\n%s", set.Keys, out)
	}
	for _, kid := range oldKids {
		if !strings.Contains(out, kid) {
			t.Fatalf("the plugin's output does not name the removed key %s:\n%s", kid, out)
		}
	}
	testenv.Eventually(t, wait, func() error {
		if set := jwks(t); len(set.Keys) != 1 || set.Keys[0].KeyID != fresh {
			return fmt.Errorf("the JWKS holds %d keys, want only %s", len(set.Keys), fresh)
		}
		return nil
	})
	signsWith(t, clients[0], fresh)
	callsSucceed("before the service's verifier fetched the JWKS again")

	// Once the verifier may fetch the JWKS again, the new key's first token makes it do so.
	load.step(30 * time.Second)
	testenv.Eventually(t, wait, func() error {
		tok, _ := issue(t, clients[1].id, clients[1].secret)
		_, err := v.Authenticate(context.Background(), tok)
		return err
	})
	refusedOld := 0
	for _, it := range load.issued() {
		if it.kid == fresh {
			continue
		}
		if _, err := v.Authenticate(context.Background(), it.token); !errors.Is(err, m2mauth.ErrUnknownKey) {
			t.Fatalf("a token of the replaced key %s: %v, want ErrUnknownKey", it.kid, err)
		}
		refusedOld++
	}
	if refusedOld == 0 {
		t.Fatal("the load got no token of the old key")
	}
	// The service refuses the old keys' tokens now. The workload with m2mauth.NewClient gets one
	// refusal, unseen by its caller: the transport replaces the token and sends the request again.
	// The one with oauth2.NewClient keeps its refused token, until it expires.
	for range 3 {
		if status, _ := recovering.call(t, svc); status != http.StatusOK {
			t.Fatalf("through the emergency, the workload with %s got %d", recovering.name, status)
		}
	}
	// Before the emergency and before the verifier's fetch, an old key's token passes; after it,
	// the first call's old token is refused, and its retry and the later calls carry the new key's.
	want := []struct {
		oldKey bool
		status int
	}{{true, http.StatusOK}, {true, http.StatusOK}, {true, http.StatusUnauthorized}, {false, http.StatusOK}, {false, http.StatusOK}, {false, http.StatusOK}}
	got := svc.requestsOf(recovering.name)
	for i := range max(len(got), len(want)) {
		if i >= len(got) || i >= len(want) || slices.Contains(oldKids, got[i].kid) != want[i].oldKey || got[i].kid != fresh && !want[i].oldKey || got[i].status != want[i].status {
			t.Fatalf("the service got from the workload with %s: %+v; want %+v (old key or %s)", recovering.name, got, want, fresh)
		}
	}
	for range 2 {
		if status, challenge := plain.call(t, svc); status != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
			t.Fatalf("the workload with %s got %d %q, want the service's refusal of the old key's token", plain.name, status, challenge)
		}
	}

	// The status keys' successor signs after the prepublish time, every status is sealed again,
	// and the copied key goes once no status uses it.
	load.step(statusmac.Prepublish)
	pokeKeys(t)
	testenv.Eventually(t, wait, func() error {
		active := statusKeys(t).Active().ID
		if active == oldStatusKey {
			return fmt.Errorf("status key %s still signs", active)
		}
		for _, c := range clients {
			obj := &m2mv1alpha1.M2MClient{}
			if err := env.Client.Get(context.Background(), c.key, obj); err != nil {
				return err
			}
			if !strings.Contains(obj.Status.ClientIDMAC, "."+active+".") {
				return fmt.Errorf("client %s is not sealed with status key %s yet", c.key.Name, active)
			}
		}
		return nil
	})
	load.step(statusmac.RetiredMinimum)
	pokeKeys(t)
	testenv.Eventually(t, wait, func() error {
		if slices.ContainsFunc(statusKeys(t).Keys, func(k *statusmac.Key) bool { return k.ID == oldStatusKey }) {
			return fmt.Errorf("the copied status key %s is still there", oldStatusKey)
		}
		return nil
	})
	load.more(t, 20)
	load.stop()

	if load.refused.Load() != 0 {
		t.Fatalf("the token server refused clients: %s", load)
	}
	t.Logf("under an emergency rotation: %s; %d tokens of the replaced keys refused by pkg/m2mauth", load, refusedOld)
	issued := load.issued()
	for _, it := range issued[len(issued)-20:] {
		if _, err := v.Authenticate(context.Background(), it.token); err != nil {
			t.Fatalf("a token of %s after the rotation: %v", it.kid, err)
		}
	}
	for _, c := range clients {
		s, h := clientState(t, c)
		if b := before[c.key.Name]; s != b.secret || !slices.Equal(h, b.hashes) {
			t.Fatalf("client %s's credentials changed: hashes %v, before %v", c.key.Name, h, b.hashes)
		}
		for _, reason := range []string{m2mv1alpha1.EventStatusDiscarded, m2mv1alpha1.EventStatusRecovered} {
			if n, err := testenv.CountEvents(context.Background(), env.Client, c.key.Namespace, "M2MClient", c.key.Name, reason); err != nil || n != 0 {
				t.Fatalf("client %s: %d %s events (%v)", c.key.Name, n, reason, err)
			}
		}
	}
	logs, err = os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]bool{}
	for _, c := range clients {
		ours[c.key.Namespace] = true
	}
	for _, line := range strings.Split(string(logs[logsFrom:]), "\n") {
		// The suite runs without the status policy on purpose; the manager repeats that error.
		if !strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"logger":"status-policy"`) {
			continue
		}
		// Other tests of the suite run at the same time, with managers of their own that log to
		// the same file: their clients' errors are theirs.
		var entry struct{ Namespace string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Namespace != "" && !ours[entry.Namespace] {
			continue
		}
		t.Fatalf("an error was logged during the emergency rotation: %s", line)
	}
}

// Each value rotates once: writing it again, however often, changes no key.
func TestARepeatedRotationValueRotatesTheSigningKeysOnce(t *testing.T) {
	recorded, err := testenv.RecordThrough(context.Background(), env.Config, &corev1.SecretList{}, signingkeys.DefaultSecret.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	value := "once-" + t.Name()
	askRotation(t, keyring.EmergencyAnnotation, keyring.EmergencyRotatedAnnotation, value)
	for range 5 {
		askRotation(t, keyring.EmergencyAnnotation, keyring.EmergencyRotatedAnnotation, value)
		pokeKeys(t)
	}
	// The manager acts on what it sees in order: once it has acted on a new planned value, it
	// has seen every write above.
	askRotation(t, keyring.RotateAnnotation, keyring.RotatedAnnotation, "after-"+value)
	now, _ := signingKeys(t)
	changes, last := 0, ""
	for _, v := range recorded(now.ResourceVersion) {
		s, ok := v.Object.(*corev1.Secret)
		if !ok || s.Name != signingkeys.DefaultSecret.Name {
			continue
		}
		if keys := string(s.Data[signingkeys.DataKey]); last != "" && keys != last {
			changes++
		}
		last = string(s.Data[signingkeys.DataKey])
	}
	if changes != 2 {
		t.Fatalf("the signing keys changed %d times for one emergency value and one planned value, want 2", changes)
	}
}

// The signing keys are the cluster's: a tenant who may write Secrets in its own namespace cannot
// ask for their rotation, planned or emergency.
func TestATenantCannotRotateTheSigningKeys(t *testing.T) {
	tenant := testenv.Tenant(t, env, sharedNamespace, testenv.GrantSecrets)
	before, _ := signingKeys(t)
	for _, annotation := range []string{keyring.RotateAnnotation, keyring.EmergencyAnnotation} {
		s := &corev1.Secret{}
		s.Namespace, s.Name = signingkeys.DefaultSecret.Namespace, signingkeys.DefaultSecret.Name
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"tenant"}}}`, annotation)
		if err := tenant.Patch(context.Background(), s, client.RawPatch(types.MergePatchType, []byte(patch))); !apierrors.IsForbidden(err) {
			t.Fatalf("a tenant annotated the signing-key Secret with %s: %v", annotation, err)
		}
	}
	if after, _ := signingKeys(t); after.ResourceVersion != before.ResourceVersion {
		t.Fatal("the signing-key Secret changed")
	}
}
