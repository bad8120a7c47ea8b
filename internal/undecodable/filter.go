// Package undecodable keeps objects that a typed client cannot decode out of the LIST and WATCH
// answers it reads, one object at a time, so that one bad object never fails a whole LIST or ends
// every WATCH of its kind.
//
// A typed client decodes a LIST answer whole: one item that does not decode fails the LIST, and one
// watch event that does not decode ends the watch, after which the reflector lists again and
// fails again. An informer built on such a client serves a cache that no longer changes, for
// every object of the kind, for as long as the bad object is stored. The Filter sits under the
// client as its http.RoundTripper and rewrites those answers as they stream: an item that does
// not decode is left out of a LIST, and a watch event that carries one becomes a DELETED event
// of an object with only its name, namespace, UID and resourceVersion, so that an informer drops
// it from its cache rather than keep its last good version.
package undecodable

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	sigsjson "sigs.k8s.io/json"
)

// Object is one object the Filter left out, and why.
type Object struct {
	Namespace, Name string
	UID             types.UID
	ResourceVersion string
	Err             error
}

// Filter is an http.RoundTripper that leaves the objects Decode refuses out of the LIST and
// WATCH answers of one collection (every GET of a path that ends in /Resource under
// PathPrefix, cluster-wide or in one namespace). Every other request passes through unchanged.
type Filter struct {
	// Base makes the requests.
	Base http.RoundTripper
	// PathPrefix is the group version's path, such as "/apis/m2m.dev/v1alpha1/".
	PathPrefix string
	// Resource is the collection's plural name, such as "m2mclients".
	Resource string
	// Decode returns an error for an object the caller's client cannot decode.
	Decode func(object []byte) error
	// Report is told of each object left out. It must not block.
	Report func(Object)
}

// RoundTrip asks for JSON (the one encoding the Filter reads) and rewrites the answer.
func (f *Filter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || !f.isCollection(req.URL.Path) {
		return f.Base.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Accept", "application/json")
	resp, err := f.Base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	if mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mediaType != "application/json" {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("GET %s: the answer is %q, and only JSON can be read one object at a time", req.URL.Path, mediaType)
	}
	rewrite := f.list
	if w := req.URL.Query().Get("watch"); w == "true" || w == "1" {
		rewrite = f.watch
	}
	pr, pw := io.Pipe()
	body := resp.Body
	go func() {
		bw := bufio.NewWriter(pw)
		err := rewrite(body, bw)
		if err == nil {
			err = bw.Flush()
		}
		_ = body.Close()
		pw.CloseWithError(err)
	}()
	resp.Body = &pipedBody{PipeReader: pr, upstream: body}
	resp.ContentLength = -1
	resp.Header = resp.Header.Clone()
	resp.Header.Del("Content-Length")
	return resp, nil
}

// pipedBody closes the upstream body too, so that closing an idle watch ends the rewriting
// goroutine, which may be waiting for the next event.
type pipedBody struct {
	*io.PipeReader
	upstream io.Closer
}

func (b *pipedBody) Close() error {
	_ = b.upstream.Close()
	return b.PipeReader.Close()
}

// isCollection reports whether path is the collection, cluster-wide
// (PathPrefix + Resource) or in a namespace (PathPrefix + "namespaces/NS/" + Resource).
func (f *Filter) isCollection(path string) bool {
	rest, ok := strings.CutPrefix(path, f.PathPrefix)
	if !ok {
		return false
	}
	if rest == f.Resource {
		return true
	}
	parts := strings.Split(rest, "/")
	return len(parts) == 3 && parts[0] == "namespaces" && parts[1] != "" && parts[2] == f.Resource
}

// list copies a LIST answer, leaving out the items that do not decode. It reads one item at a
// time, so that a large LIST is never held twice.
func (f *Filter) list(r io.Reader, w *bufio.Writer) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	w.WriteByte('{')
	for first := true; dec.More(); first = false {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("a LIST answer has the key %v", tok)
		}
		if !first {
			w.WriteByte(',')
		}
		name, _ := json.Marshal(key)
		w.Write(name)
		w.WriteByte(':')
		if key != "items" {
			var value json.RawMessage
			if err := dec.Decode(&value); err != nil {
				return err
			}
			w.Write(value)
			continue
		}
		if err := f.items(dec, w); err != nil {
			return err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	w.WriteByte('}')
	return nil
}

// items copies the items array, leaving out those that do not decode.
func (f *Filter) items(dec *json.Decoder, w *bufio.Writer) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil { // "items": null
		w.WriteString("null")
		return nil
	}
	if tok != json.Delim('[') {
		return fmt.Errorf("a LIST answer's items are %v, not an array", tok)
	}
	w.WriteByte('[')
	written := 0
	for dec.More() {
		var item json.RawMessage
		if err := dec.Decode(&item); err != nil {
			return err
		}
		if f.leftOut(item) {
			continue
		}
		if written > 0 {
			w.WriteByte(',')
		}
		w.Write(item)
		written++
	}
	if err := expectDelim(dec, ']'); err != nil {
		return err
	}
	w.WriteByte(']')
	return nil
}

// event is one watch event as the API server streams it.
type event struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// watch copies a WATCH stream event by event, turning each event whose object does not decode
// into the DELETED event of a stub of it.
func (f *Filter) watch(r io.Reader, w *bufio.Writer) error {
	dec := json.NewDecoder(r)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		// Case-sensitively, as client-go reads the event.
		var e event
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &e); err != nil {
			return fmt.Errorf("a watch event does not decode: %w", err)
		}
		switch e.Type {
		case "ADDED", "MODIFIED", "DELETED":
			if f.leftOut(e.Object) {
				e.Type, e.Object = "DELETED", stub(e.Object)
			}
		}
		out, err := json.Marshal(e)
		if err != nil {
			return err
		}
		w.Write(out)
		w.WriteByte('\n')
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// objectMeta is what the Filter reads of an object that does not decode.
type objectMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name            string    `json:"name"`
		Namespace       string    `json:"namespace,omitempty"`
		UID             types.UID `json:"uid,omitempty"`
		ResourceVersion string    `json:"resourceVersion,omitempty"`
	} `json:"metadata"`
}

// leftOut reports whether object does not decode, and reports it when it does not.
func (f *Filter) leftOut(object []byte) bool {
	err := f.Decode(object)
	if err == nil {
		return false
	}
	var m objectMeta
	_ = json.Unmarshal(object, &m)
	f.Report(Object{Namespace: m.Metadata.Namespace, Name: m.Metadata.Name, UID: m.Metadata.UID, ResourceVersion: m.Metadata.ResourceVersion, Err: err})
	return true
}

// stub is object with nothing but its kind, name, namespace, UID and resourceVersion, which
// decodes and which an informer deletes by its name.
func stub(object []byte) json.RawMessage {
	var m objectMeta
	_ = json.Unmarshal(object, &m)
	out, _ := json.Marshal(m)
	return out
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("want %v, got %v", want, tok)
	}
	return nil
}
