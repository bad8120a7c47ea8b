package tokenserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/undecodable"
)

// watchServer answers a watch of M2MClients in namespace team-a with body and status code,
// and records the query it was asked.
func watchServer(t *testing.T, code int, body string) (*clientWatch, *url.Values) {
	t.Helper()
	var asked url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prefix/apis/m2m.dev/v1alpha1/namespaces/team-a/m2mclients" {
			http.NotFound(w, r)
			return
		}
		asked = r.URL.Query()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	base, err := url.Parse(srv.URL + "/prefix")
	if err != nil {
		t.Fatal(err)
	}
	return &clientWatch{client: srv.Client(), base: base}, &asked
}

// events reads every event of w until it closes.
func events(t *testing.T, w watch.Interface) []watch.Event {
	t.Helper()
	defer w.Stop()
	var out []watch.Event
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatal("the watch did not end")
		}
	}
}

func TestAWatchDecodesEachEventStraightIntoAnM2MClient(t *testing.T) {
	cw, asked := watchServer(t, http.StatusOK, `{"type":"ADDED","object":{"apiVersion":"m2m.dev/v1alpha1","kind":"M2MClient","metadata":{"name":"billing","namespace":"team-a","resourceVersion":"7"},"spec":{"scopes":["read:invoices"]},"status":{"clientID":"m2m-abc"}}}
{"type":"BOOKMARK","object":{"apiVersion":"m2m.dev/v1alpha1","kind":"M2MClient","metadata":{"resourceVersion":"8","annotations":{"k8s.io/initial-events-end":"true"}}}}
`)
	w, err := cw.open(context.Background(), "team-a", metav1.ListOptions{ResourceVersion: "5", AllowWatchBookmarks: true, SendInitialEvents: ptr.To(true), ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan, TimeoutSeconds: ptr.To[int64](300)})
	if err != nil {
		t.Fatal(err)
	}
	got := events(t, w)
	if len(got) != 2 {
		t.Fatalf("got %d events, want 2: %v", len(got), got)
	}
	c, ok := got[0].Object.(*m2mv1alpha1.M2MClient)
	if got[0].Type != watch.Added || !ok || c.Name != "billing" || c.Namespace != "team-a" || c.Status.ClientID != "m2m-abc" || len(c.Spec.Scopes) != 1 || c.ResourceVersion != "7" {
		t.Fatalf("first event %s %#v, want the client billing ADDED, decoded", got[0].Type, got[0].Object)
	}
	b, ok := got[1].Object.(*m2mv1alpha1.M2MClient)
	if got[1].Type != watch.Bookmark || !ok || b.ResourceVersion != "8" || b.Annotations[metav1.InitialEventsAnnotationKey] != "true" {
		t.Fatalf("second event %s %#v, want the bookmark that ends the initial events", got[1].Type, got[1].Object)
	}
	for k, want := range map[string]string{"watch": "true", "resourceVersion": "5", "allowWatchBookmarks": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "timeoutSeconds": "300"} {
		if asked.Get(k) != want {
			t.Errorf("the watch asked %s=%q, want %q (query %v)", k, asked.Get(k), want, *asked)
		}
	}
}

func TestAnObjectThatIsNotAnM2MClientArrivesUnstructuredForTheCacheToReportAsUndecodable(t *testing.T) {
	cw, _ := watchServer(t, http.StatusOK, `{"type":"MODIFIED","object":{"apiVersion":"m2m.dev/v1alpha1","kind":"M2MClient","metadata":{"name":"poisoned","namespace":"team-a"},"spec":{"scopes":5}}}`)
	w, err := cw.open(context.Background(), "team-a", metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := events(t, w)
	if len(got) != 1 {
		t.Fatalf("got %d events, want 1", len(got))
	}
	u, ok := got[0].Object.(*unstructured.Unstructured)
	if got[0].Type != watch.Modified || !ok || u.GetName() != "poisoned" {
		t.Fatalf("got %s %#v, want the object unstructured", got[0].Type, got[0].Object)
	}
	s := &InformerClients{}
	if ev := s.typed(context.Background(), got[0]); ev.Type != watch.Deleted || len(s.undecodable) != 1 {
		t.Fatalf("the cache made %s of it and counts %d undecodable, want it deleted and counted", ev.Type, len(s.undecodable))
	}
}

func TestAFieldNamedInAnotherCaseIsNotRead(t *testing.T) {
	cw, _ := watchServer(t, http.StatusOK, `{"type":"ADDED","object":{"apiVersion":"m2m.dev/v1alpha1","kind":"M2MClient","metadata":{"name":"billing","namespace":"team-a"},"Spec":{"Disabled":false,"scopes":["admin"]},"spec":{"disabled":true}}}`)
	w, err := cw.open(context.Background(), "team-a", metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := events(t, w)
	c, ok := got[0].Object.(*m2mv1alpha1.M2MClient)
	if !ok || !c.Spec.Disabled || len(c.Spec.Scopes) != 0 {
		t.Fatalf("decoded %#v, want spec as written in lower case only", got[0].Object)
	}
}

func TestAnErrorEventCarriesTheAPIServersStatus(t *testing.T) {
	cw, _ := watchServer(t, http.StatusOK, `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version","reason":"Expired","code":410}}`)
	w, err := cw.open(context.Background(), "team-a", metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := events(t, w)
	if len(got) != 1 || got[0].Type != watch.Error {
		t.Fatalf("got %v, want one error event", got)
	}
	if err := apierrors.FromObject(got[0].Object); !apierrors.IsResourceExpired(err) {
		t.Fatalf("the error event is %v, want the API server's 410 Expired", err)
	}
}

func TestAStreamThatDoesNotParseEndsTheWatchWithAnError(t *testing.T) {
	cw, _ := watchServer(t, http.StatusOK, `{"type":"ADDED","object":{"metadata":{"name":"a"}}}
{"type":"ADDED","object":{"metad`+"\x00")
	w, err := cw.open(context.Background(), "team-a", metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := events(t, w)
	if len(got) != 2 || got[1].Type != watch.Error {
		t.Fatalf("got %v, want the first object and then an error", got)
	}
}

func TestARefusedWatchIsTheAPIServersStatusError(t *testing.T) {
	cw, _ := watchServer(t, http.StatusGone, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 5 (9)","reason":"Expired","code":410}`)
	_, err := cw.open(context.Background(), "team-a", metav1.ListOptions{ResourceVersion: "5"})
	if !apierrors.IsResourceExpired(err) || err.Error() != "too old resource version: 5 (9)" {
		t.Fatalf("open: %v, want the API server's 410 Expired with its message, which the reflector answers with a new LIST", err)
	}
	cw, _ = watchServer(t, http.StatusServiceUnavailable, `upstream connect error`)
	_, err = cw.open(context.Background(), "team-a", metav1.ListOptions{})
	if !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("open: %v, want a 503 status error from a body that is not a Status", err)
	}
}

func TestStoppingAWatchEndsItWhileTheAPIServerKeepsItOpen(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, `{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"team-a"}}}`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	base, _ := url.Parse(srv.URL)
	w, err := (&clientWatch{client: srv.Client(), base: base}).open(context.Background(), "team-a", metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	<-w.ResultChan()
	w.Stop()
	select {
	case _, ok := <-w.ResultChan():
		if ok {
			t.Fatal("an event after Stop")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch's channel stayed open after Stop")
	}
}

func TestADeletedClientReachesTheCachesHandlersWithItsClientID(t *testing.T) {
	client := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing", ResourceVersion: "9"}, Status: m2mv1alpha1.M2MClientStatus{ClientID: "m2m-abc"}}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(client)
	if err != nil {
		t.Fatal(err)
	}
	for name, obj := range map[string]runtime.Object{
		"decoded from the stream": client.DeepCopy(),
		"unstructured":            &unstructured.Unstructured{Object: raw},
	} {
		t.Run(name, func(t *testing.T) {
			s := &InformerClients{}
			ev := s.typed(context.Background(), watch.Event{Type: watch.Deleted, Object: obj})
			c, ok := ev.Object.(*m2mv1alpha1.M2MClient)
			if ev.Type != watch.Deleted || !ok || c.Status.ClientID != "m2m-abc" || c.Name != "billing" {
				t.Fatalf("got %s %#v, want the deleted client whole, for the revocation list to record its client ID", ev.Type, ev.Object)
			}
		})
	}
}

func TestTheFiltersStubOfAStoredUndecodableClientStaysCounted(t *testing.T) {
	stub := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "poisoned", Annotations: map[string]string{undecodable.LeftOutAnnotation: undecodable.LeftOutValue}}}
	s := &InformerClients{}
	s.markUndecodable("team-a/poisoned", true)
	ev := s.typed(context.Background(), watch.Event{Type: watch.Deleted, Object: stub})
	c, ok := ev.Object.(*m2mv1alpha1.M2MClient)
	if ev.Type != watch.Deleted || !ok || len(c.Annotations) != 0 || len(s.undecodable) != 1 {
		t.Fatalf("got %s %#v with %d undecodable, want a bare stub and the object still counted", ev.Type, ev.Object, len(s.undecodable))
	}
}

// A reset connection (an API server restarting, a load balancer between) ends the watch quietly,
// as client-go's stream watcher does: the reflector then watches again from where it was, where
// an error would have made it list every client again.
func TestAResetConnectionEndsTheWatchWithoutAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, `{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"team-a"}}}`)
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		_ = conn.(*net.TCPConn).SetLinger(0) // close with a reset
		_ = conn.Close()
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	w, err := (&clientWatch{client: srv.Client(), base: base}).open(context.Background(), "team-a", metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := events(t, w)
	if len(got) != 1 || got[0].Type != watch.Added {
		t.Fatalf("got %v, want the event sent and then the end, without an error", got)
	}
}
