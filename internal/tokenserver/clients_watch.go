package tokenserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	sigsjson "sigs.k8s.io/json"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// clientWatch opens watches of M2MClients whose events are decoded straight into M2MClients.
// client-go's watch decodes each object into an unstructured map, after parsing it once more to
// find its kind, and the cache then converts the map by reflection: at a cold start, in
// client-go's watch-list mode, that was two thirds of the token server's CPU (docs/benchmarks.md).
// An object that does not decode as an M2MClient is handed on as unstructured, so that the
// cache treats it as before (InformerClients.typed).
type clientWatch struct {
	client *http.Client
	// base is the API server's URL, with the path it is served under.
	base *url.URL
}

// watchPath is the API path of M2MClients, in namespace ns when ns is not empty.
func watchPath(base *url.URL, ns string) string {
	p := path.Join("/", base.Path, "apis", m2mv1alpha1.GroupVersion.Group, m2mv1alpha1.GroupVersion.Version)
	if ns != "" {
		p = path.Join(p, "namespaces", ns)
	}
	return path.Join(p, "m2mclients")
}

// maxErrorBody bounds what is read of an API server's refusal of a watch.
const maxErrorBody = 1 << 20

// open starts a watch of the M2MClients of ns (all namespaces when empty) with opts.
func (cw *clientWatch) open(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	query, err := metav1.ParameterCodec.EncodeParameters(&opts, metav1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	u := *cw.base
	u.Path, u.RawQuery = watchPath(cw.base, ns), query.Encode()
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := cw.client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		// The reflector decides by the error's status (410 Gone, 429, watch-list refused...).
		st := &metav1.Status{}
		if json.Unmarshal(body, st) == nil && st.Kind == "Status" {
			return nil, &apierrors.StatusError{ErrStatus: *st}
		}
		return nil, apierrors.NewGenericServerResponse(resp.StatusCode, http.MethodGet, m2mv1alpha1.GroupVersion.WithResource("m2mclients").GroupResource(), "", string(body), 0, true)
	}
	w := &decodedWatch{out: make(chan watch.Event), done: make(chan struct{}), cancel: cancel}
	go w.run(resp.Body)
	return w, nil
}

// decodedWatch is a watch whose events clientWatch decodes.
type decodedWatch struct {
	out    chan watch.Event
	done   chan struct{}
	once   sync.Once
	cancel context.CancelFunc
}

// frame is one event of a watch stream, its object not yet decoded.
type frame struct {
	Type   watch.EventType `json:"type"`
	Object json.RawMessage `json:"object"`
}

func (w *decodedWatch) run(body io.ReadCloser) {
	defer close(w.out)
	defer body.Close()
	dec := json.NewDecoder(body)
	for {
		var f frame
		err := dec.Decode(&f)
		var ev watch.Event
		switch {
		case err == nil:
			ev = decodeEvent(f)
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || utilnet.IsProbableEOF(err) || utilnet.IsTimeout(err) || w.stopped():
			// The API server ended the watch (its timeout, a restart, a connection reset on the
			// way), or Stop did: as client-go's stream watcher, end quietly, and the reflector
			// watches again from where it was instead of listing everything.
			return
		default:
			// As client-go's stream watcher reports a stream it cannot read.
			ev = errorEvent(fmt.Errorf("unable to decode an event from the watch stream: %w", err))
		}
		select {
		case w.out <- ev:
		case <-w.done:
			return
		}
		if ev.Type == watch.Error && err != nil {
			return
		}
	}
}

// decodeEvent decodes f's object: a Status for an error, else an M2MClient, else (an object that
// does not decode as one) unstructured, which the cache reports as undecodable.
func decodeEvent(f frame) watch.Event {
	if f.Type == watch.Error {
		st := &metav1.Status{}
		if err := json.Unmarshal(f.Object, st); err != nil {
			return errorEvent(fmt.Errorf("unable to decode an error event from the watch stream: %w", err))
		}
		return watch.Event{Type: watch.Error, Object: st}
	}
	// Case-sensitive, as the API machinery decodes objects: a key that differs from a field's
	// name only in case is not that field.
	c := &m2mv1alpha1.M2MClient{}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(f.Object, c); err == nil {
		return watch.Event{Type: f.Type, Object: c}
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(f.Object); err != nil {
		return errorEvent(fmt.Errorf("unable to decode an event from the watch stream: %w", err))
	}
	return watch.Event{Type: f.Type, Object: u}
}

func errorEvent(err error) watch.Event {
	return watch.Event{Type: watch.Error, Object: &apierrors.NewInternalError(err).ErrStatus}
}

func (w *decodedWatch) stopped() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *decodedWatch) Stop() {
	w.once.Do(func() {
		close(w.done)
		w.cancel()
	})
}

func (w *decodedWatch) ResultChan() <-chan watch.Event { return w.out }
