package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// TokenResponse is the token endpoint's answer.
type TokenResponse struct {
	// Status is the HTTP status.
	Status int
	// AccessToken and Error are the fields of a success and of an RFC 6749 §5.2 error.
	AccessToken string `json:"access_token"`
	Error       string `json:"error"`
	// Body is the whole JSON body.
	Body map[string]any `json:"-"`
	// Raw is the body as it came.
	Raw []byte `json:"-"`
}

// PostToken posts body with contentType to the token endpoint of iss (its URL derived as the
// manager derives token_url).
func PostToken(ctx context.Context, c *http.Client, iss, contentType, body string) (TokenResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, issuer.TokenURL(iss), strings.NewReader(body))
	if err != nil {
		return TokenResponse{}, err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.Do(req)
	if err != nil {
		return TokenResponse{}, err
	}
	defer resp.Body.Close()
	out := TokenResponse{Status: resp.StatusCode}
	if out.Raw, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
		return out, err
	}
	_ = json.Unmarshal(out.Raw, &out)
	_ = json.Unmarshal(out.Raw, &out.Body)
	return out, nil
}

// ClientCredentials asks for a token with a form body carrying the client's ID and secret.
func ClientCredentials(ctx context.Context, c *http.Client, iss, clientID, secret string) (TokenResponse, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}}
	return PostToken(ctx, c, iss, "application/x-www-form-urlencoded", form.Encode())
}

// CountEvents counts the occurrences of events with reason (any reason when it is empty) about
// the named object of kind: an event that the recorder folded into a series counts once per
// occurrence.
func CountEvents(ctx context.Context, c client.Reader, ns, kind, name, reason string) (int, error) {
	var list eventsv1.EventList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Kind != kind || e.Regarding.Name != name || reason != "" && e.Reason != reason {
			continue
		}
		switch {
		case e.Series != nil:
			// events.k8s.io/v1: the series count is every occurrence, the first included.
			n += int(e.Series.Count)
		default:
			n += max(1, int(e.DeprecatedCount))
		}
	}
	return n, nil
}

var namespaces atomic.Int64

// Namespace creates a namespace of its own for one test, named after it, and returns its name.
func Namespace(t testing.TB, c client.Client) string {
	t.Helper()
	label := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(t.Name()))
	name := fmt.Sprintf("t%d-%s", namespaces.Add(1), label)
	if len(name) > 63 {
		name = name[:63]
	}
	name = strings.TrimRight(name, "-")
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// CreateReady creates obj and waits until it is Ready; obj is then as the API server has it.
func CreateReady(t testing.TB, c client.Client, obj *m2mv1alpha1.M2MClient, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	if err := c.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	Eventually(t, timeout, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(obj.Status.Conditions, m2mv1alpha1.ConditionReady) {
			return errors.New("not Ready")
		}
		return nil
	})
}

var pokes atomic.Int64

// Poke changes an annotation that means nothing to the manager, so that it reconciles obj (named
// by its namespace and name) now, for example at a fake clock's new time.
func Poke(t testing.TB, c client.Client, obj client.Object) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		"test.m2m.dev/poke": strconv.FormatInt(pokes.Add(1), 10),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Patch(context.Background(), obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

// Accepts reports whether the token server, with the status keys now in the signing-key Secret,
// accepts secret for obj at now: a matching entry that is not expired, and whose MAC and client
// ID MAC verify. It is what the tests ask instead of the hash alone, so that they also hold the
// manager to sealing what it accepts.
func Accepts(ctx context.Context, c client.Reader, obj *m2mv1alpha1.M2MClient, secret string, now time.Time) bool {
	keys, err := StatusKeys(ctx, c)
	if err != nil || !keys.VerifyClientID(obj) {
		return false
	}
	return credentials.VerifyWith(obj.Status.AcceptedSecrets, secret, now, func(e *m2mv1alpha1.AcceptedSecret) bool {
		return keys.VerifyEntry(obj, e)
	})
}

// StatusKeys reads the keys that authenticate status from the signing-key Secret, as only the
// manager and the token server may.
func StatusKeys(ctx context.Context, c client.Reader) (*statusmac.Set, error) {
	s := &corev1.Secret{}
	if err := c.Get(ctx, signingkeys.DefaultSecret, s); err != nil {
		return nil, err
	}
	return statusmac.Parse(s.Data[statusmac.DataKey])
}

// Metric reads the value of a metric without labels from the Prometheus text at url.
func Metric(url, name string) (float64, error) {
	lines, err := metricLines(url)
	if err != nil {
		return 0, err
	}
	for _, line := range lines {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found at %s", name, url)
}

// MetricSum adds up every series of a metric, whatever its labels, in the Prometheus text at
// url; a metric with no series yet (a counter vector nothing has counted) is 0.
func MetricSum(url, name string) (float64, error) {
	lines, err := metricLines(url)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, line := range lines {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (!strings.HasPrefix(rest, "{") && !strings.HasPrefix(rest, " ")) {
			continue // another metric whose name starts with this one's
		}
		fields := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(fields) == 0 {
			return 0, fmt.Errorf("a series of %s at %s has no value: %q", name, url, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("a series of %s at %s: %w", name, url, err)
		}
		sum += v
	}
	return sum, nil
}

// metricLines are the lines of the Prometheus text at url.
func metricLines(url string) ([]string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return strings.Split(string(raw), "\n"), nil
}

// BundleClient is an HTTP client that trusts the PEM bundle in path only, as a pod that trusts
// its Secret's ca.crt.
func BundleClient(path string) (*http.Client, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificate in %s", path)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

// ServiceAccountToken creates the ServiceAccount ns/name if needed and returns a token for it,
// for audiences and valid for lifetime, from the TokenRequest API, as the kubelet projects one
// into a pod.
func ServiceAccountToken(t testing.TB, c client.Client, ns, name string, lifetime time.Duration, audiences ...string) string {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := c.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To(int64(lifetime / time.Second))}}
	if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// WaitReady waits until the client's Ready condition has the status and reason given, for its
// current generation, and returns the client. It bounds a wait; it asserts nothing about speed.
func WaitReady(t testing.TB, c client.Client, ns, name string, want metav1.ConditionStatus, reason string, timeout time.Duration) *m2mv1alpha1.M2MClient {
	t.Helper()
	obj := &m2mv1alpha1.M2MClient{}
	Eventually(t, timeout, func() error {
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
			return err
		}
		r := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady)
		if r == nil {
			return fmt.Errorf("no Ready condition yet")
		}
		if r.Status != want || r.Reason != reason || obj.Status.ObservedGeneration != obj.Generation {
			return fmt.Errorf("Ready=%s/%s (%s) at generation %d of %d, want %s/%s", r.Status, r.Reason, r.Message, obj.Status.ObservedGeneration, obj.Generation, want, reason)
		}
		return nil
	})
	return obj
}

// NewSecret is a client secret as the manager generates one (credentials.NewSecret), for tests
// that play a person or a secret store writing one.
func NewSecret(t testing.TB) string {
	t.Helper()
	s, err := credentials.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
