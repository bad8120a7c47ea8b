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
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
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
	// PathPrefix is the group version's path, such as "/apis/m2m.dev/v1alpha1/" (PathPrefix
	// builds it).
	PathPrefix string
	// Resource is the collection's plural name, such as "m2mclients".
	Resource string
	// Decode returns an error for an object the caller's client cannot decode; nil leaves
	// out only the objects nested too deeply to decode within their answer.
	Decode func(object []byte) error
	// Report is told of each object left out, with the context of the request whose answer
	// left it out. It must not block.
	Report func(context.Context, Object)
}

// PathPrefix is the path of gv's resources on an API server whose URL has the path serverPath
// (usually empty; a proxy that serves many clusters may add one).
func PathPrefix(serverPath string, gv schema.GroupVersion) string {
	return strings.TrimSuffix(serverPath, "/") + "/apis/" + gv.Group + "/" + gv.Version + "/"
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
	ctx := req.Context()
	rewrite := f.list
	if w := req.URL.Query().Get("watch"); w == "true" || w == "1" {
		rewrite = f.watch
	}
	pr, pw := io.Pipe()
	body := resp.Body
	go func() {
		bw := bufio.NewWriter(pw)
		err := rewrite(ctx, body, bw)
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
func (f *Filter) list(ctx context.Context, r io.Reader, w *bufio.Writer) error {
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
		if err := f.items(ctx, dec, w); err != nil {
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
func (f *Filter) items(ctx context.Context, dec *json.Decoder, w *bufio.Writer) error {
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
		if f.leftOut(ctx, item, listNesting) {
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
// into the DELETED event of a stub of it. It reads each event's envelope token by token, so that
// an object as deep as a decoder allows does not fail the envelope around it.
func (f *Filter) watch(ctx context.Context, r io.Reader, w *bufio.Writer) error {
	dec := json.NewDecoder(r)
	for {
		if _, err := dec.Token(); err != nil { // the event's '{'
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var e event
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			// Keys compare case-sensitively, as client-go reads them.
			switch tok {
			case "type":
				err = dec.Decode(&e.Type)
			case "object":
				err = dec.Decode(&e.Object)
			default:
				var skipped json.RawMessage
				err = dec.Decode(&skipped)
			}
			if err != nil {
				return err
			}
		}
		if err := expectDelim(dec, '}'); err != nil {
			return err
		}
		switch e.Type {
		case "ADDED", "MODIFIED", "DELETED":
			if f.leftOut(ctx, e.Object, watchNesting) {
				// Only an object that is still stored is marked so; a DELETED one is gone.
				e.Object = stub(e.Object, e.Type != "DELETED")
				e.Type = "DELETED"
			}
		}
		if err := writeEvent(w, e); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// writeEvent writes e as one line of JSON. Its object is written as the decoder read it, valid
// JSON already, rather than compacted again by json.Marshal.
func writeEvent(w *bufio.Writer, e event) error {
	typ, err := json.Marshal(e.Type)
	if err != nil {
		return err
	}
	w.WriteString(`{"type":`)
	w.Write(typ)
	w.WriteString(`,"object":`)
	if len(e.Object) == 0 {
		w.WriteString("null")
	} else {
		w.Write(e.Object)
	}
	w.WriteString("}\n")
	return nil
}

// LeftOutAnnotation marks, with the value LeftOutValue, the stub of a DELETED event the Filter
// made of an ADDED or MODIFIED event whose object does not decode: the object is still stored,
// which a reader that counts such objects needs to know. The value is random per process, so
// that an annotation an object's writer set never passes for it.
const LeftOutAnnotation = "m2m.dev/left-out-undecodable"

// LeftOutValue is LeftOutAnnotation's value in this process.
var LeftOutValue = func() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}()

// objectMeta is what the Filter reads of an object that does not decode.
type objectMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace,omitempty"`
		UID             types.UID         `json:"uid,omitempty"`
		ResourceVersion string            `json:"resourceVersion,omitempty"`
		Annotations     map[string]string `json:"annotations,omitempty"`
	} `json:"metadata"`
}

// maxNesting is how deeply encoding/json, and client-go's decoder (sigs.k8s.io/json, a copy of
// it), let JSON nest. It counts from the top of what is decoded: an object that decodes on its
// own at this depth fails inside a LIST (listNesting levels deeper) or a watch event
// (watchNesting), and would fail the whole answer.
const (
	maxNesting   = 10000
	listNesting  = 2 // {"items":[ object ]}
	watchNesting = 1 // {"object": object}
)

// leftOut reports whether object does not decode where it stands, nesting levels deep in the
// answer, and reports it when it does not. Decode is not asked about an object too deep for its
// answer.
func (f *Filter) leftOut(ctx context.Context, object []byte, nesting int) bool {
	err := tooDeep(object, nesting)
	if err == nil && f.Decode != nil {
		err = f.Decode(object)
	}
	if err == nil {
		return false
	}
	var m objectMeta
	_ = json.Unmarshal(object, &m)
	f.Report(ctx, Object{Namespace: m.Metadata.Namespace, Name: m.Metadata.Name, UID: m.Metadata.UID, ResourceVersion: m.Metadata.ResourceVersion, Err: err})
	return true
}

// tooDeep returns an error when object, nesting levels deep in an answer, nests past maxNesting.
func tooDeep(object []byte, nesting int) error {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range object {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	if deepest+nesting > maxNesting {
		return fmt.Errorf("the object nests %d levels deep, past the %d a JSON decoder reads within an answer", deepest, maxNesting-nesting)
	}
	return nil
}

// stub is object with nothing but its kind, name, namespace, UID and resourceVersion, and
// LeftOutAnnotation when it is still stored: an object that decodes, which an informer deletes
// by its name.
func stub(object []byte, stored bool) json.RawMessage {
	var m objectMeta
	_ = json.Unmarshal(object, &m)
	m.Metadata.Annotations = nil
	if stored {
		m.Metadata.Annotations = map[string]string{LeftOutAnnotation: LeftOutValue}
	}
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
