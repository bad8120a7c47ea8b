package undecodable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream answers every request with body, as JSON, and records the requests.
type upstream struct {
	body        io.ReadCloser
	contentType string
	got         []*http.Request
}

func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	u.got = append(u.got, req)
	ct := u.contentType
	if ct == "" {
		ct = "application/json"
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {ct}, "Content-Length": {"1"}}, Body: u.body, ContentLength: 1}, nil
}

// filter refuses objects whose spec has "poison": true, as a typed decoder refuses a bad time.
func filter(up *upstream, reports *[]Object) *Filter {
	return &Filter{
		Base:       up,
		PathPrefix: "/apis/m2m.dev/v1alpha1/",
		Resource:   "m2mclients",
		Decode: func(b []byte) error {
			var o struct {
				Spec struct {
					Poison bool `json:"poison"`
				} `json:"spec"`
			}
			if err := json.Unmarshal(b, &o); err != nil {
				return err
			}
			if o.Spec.Poison {
				return errors.New("poisoned")
			}
			return nil
		},
		Report: func(_ context.Context, o Object) { *reports = append(*reports, o) },
	}
}

func get(t *testing.T, f *Filter, url string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/vnd.kubernetes.protobuf, application/json")
	resp, err := f.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != -1 || resp.Header.Get("Content-Length") != "" {
		t.Fatalf("the rewritten answer keeps the upstream length %d %q", resp.ContentLength, resp.Header.Get("Content-Length"))
	}
	return string(b)
}

const obj = `{"apiVersion":"m2m.dev/v1alpha1","kind":"M2MClient","metadata":{"name":"%s","namespace":"team-a","uid":"u-%s","resourceVersion":"%s"},"spec":{"poison":%s,"n":1.50}}`

func item(name, rv string, poison bool) string {
	p := "false"
	if poison {
		p = "true"
	}
	return fmt.Sprintf(obj, name, name, rv, p)
}

func TestAListAnswerLeavesOutOnlyTheItemsThatDoNotDecodeAndKeepsTheRestAsWritten(t *testing.T) {
	body := `{"kind":"M2MClientList","apiVersion":"m2m.dev/v1alpha1","metadata":{"resourceVersion":"42","continue":"abc"},"items":[` +
		item("good-1", "10", false) + "," + item("bad", "11", true) + "," + item("good-2", "12", false) + `]}`
	up := &upstream{body: io.NopCloser(strings.NewReader(body))}
	var reports []Object
	got := get(t, filter(up, &reports), "https://api/apis/m2m.dev/v1alpha1/namespaces/team-a/m2mclients?limit=500")

	want := `{"kind":"M2MClientList","apiVersion":"m2m.dev/v1alpha1","metadata":{"resourceVersion":"42","continue":"abc"},"items":[` +
		item("good-1", "10", false) + "," + item("good-2", "12", false) + `]}`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if len(reports) != 1 || reports[0].Name != "bad" || reports[0].Namespace != "team-a" || reports[0].UID != "u-bad" || reports[0].ResourceVersion != "11" || reports[0].Err == nil {
		t.Fatalf("reports %+v, want the one bad object with its UID and resourceVersion", reports)
	}
	if a := up.got[0].Header.Get("Accept"); a != "application/json" {
		t.Fatalf("asked upstream for %q; only JSON can be read one object at a time", a)
	}
}

func TestAListWhoseItemsAllDoNotDecodeIsAnEmptyList(t *testing.T) {
	for _, items := range []string{`[` + item("bad", "1", true) + `]`, `[]`, `null`} {
		up := &upstream{body: io.NopCloser(strings.NewReader(`{"items":` + items + `,"kind":"M2MClientList"}`))}
		var reports []Object
		got := get(t, filter(up, &reports), "https://api/apis/m2m.dev/v1alpha1/m2mclients")
		want := `{"items":[],"kind":"M2MClientList"}`
		if items == "null" {
			want = `{"items":null,"kind":"M2MClientList"}`
		}
		if got != want {
			t.Fatalf("items %s: got %s, want %s", items, got, want)
		}
	}
}

func TestAWatchEventWhoseObjectDoesNotDecodeBecomesTheDeletionOfAStubThatDoes(t *testing.T) {
	events := `{"type":"ADDED","object":` + item("good", "1", false) + "}\n" +
		`{"type":"MODIFIED","object":` + item("bad", "2", true) + "}\n" +
		`{"type":"BOOKMARK","object":{"kind":"M2MClient","apiVersion":"m2m.dev/v1alpha1","metadata":{"resourceVersion":"3"}}}` + "\n" +
		`{"type":"DELETED","object":` + item("bad", "4", true) + "}\n" +
		`{"type":"ERROR","object":{"kind":"Status","code":410}}` + "\n"
	up := &upstream{body: io.NopCloser(strings.NewReader(events))}
	var reports []Object
	got := get(t, filter(up, &reports), "https://api/apis/m2m.dev/v1alpha1/m2mclients?watch=true&resourceVersion=1")

	stub := func(rv string) string {
		annotations := `,"annotations":{"` + LeftOutAnnotation + `":"` + LeftOutValue + `"}`
		if rv == "4" { // a DELETED event: the object is gone, not left out
			annotations = ""
		}
		return `{"apiVersion":"m2m.dev/v1alpha1","kind":"M2MClient","metadata":{"name":"bad","namespace":"team-a","uid":"u-bad","resourceVersion":"` + rv + `"` + annotations + `}}`
	}
	want := `{"type":"ADDED","object":` + item("good", "1", false) + "}\n" +
		`{"type":"DELETED","object":` + stub("2") + "}\n" +
		`{"type":"BOOKMARK","object":{"kind":"M2MClient","apiVersion":"m2m.dev/v1alpha1","metadata":{"resourceVersion":"3"}}}` + "\n" +
		`{"type":"DELETED","object":` + stub("4") + "}\n" +
		`{"type":"ERROR","object":{"kind":"Status","code":410}}` + "\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if len(reports) != 2 || reports[0].ResourceVersion != "2" || reports[1].ResourceVersion != "4" {
		t.Fatalf("reports %+v, want the two bad versions", reports)
	}
}

func TestRequestsOtherThanListingOrWatchingTheCollectionPassThroughUntouched(t *testing.T) {
	for _, tc := range []struct{ method, url string }{
		{http.MethodGet, "https://api/apis/m2m.dev/v1alpha1/namespaces/team-a/m2mclients/bad"},
		{http.MethodGet, "https://api/apis/m2m.dev/v1alpha1/namespaces/team-a/m2mclients/bad/status"},
		{http.MethodGet, "https://api/api/v1/namespaces/team-a/secrets"},
		{http.MethodGet, "https://api/apis/m2m.dev/v1alpha1/clientidbindings"},
		{http.MethodPatch, "https://api/apis/m2m.dev/v1alpha1/namespaces/team-a/m2mclients"},
	} {
		body := `{"items":[` + item("bad", "1", true) + `]}`
		up := &upstream{body: io.NopCloser(strings.NewReader(body)), contentType: "application/vnd.kubernetes.protobuf"}
		var reports []Object
		req, _ := http.NewRequest(tc.method, tc.url, nil)
		req.Header.Set("Accept", "application/vnd.kubernetes.protobuf")
		resp, err := filter(up, &reports).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		if string(got) != body || len(reports) != 0 || up.got[0] != req {
			t.Fatalf("%s %s was changed: %s, reports %v", tc.method, tc.url, got, reports)
		}
	}
}

func TestAnAnswerInAnotherEncodingIsAnErrorNotAnUnfilteredList(t *testing.T) {
	up := &upstream{body: io.NopCloser(strings.NewReader("\x00\x01")), contentType: "application/cbor"}
	var reports []Object
	req, _ := http.NewRequest(http.MethodGet, "https://api/apis/m2m.dev/v1alpha1/m2mclients", nil)
	if resp, err := filter(up, &reports).RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("a CBOR answer passed unfiltered")
	}
}

// blockingBody is a watch that stays open until it is closed, as an idle watch does.
type blockingBody struct {
	once   sync.Once
	closed chan struct{}
}

func (b *blockingBody) Read([]byte) (int, error) { <-b.closed; return 0, io.ErrClosedPipe }
func (b *blockingBody) Close() error             { b.once.Do(func() { close(b.closed) }); return nil }

func TestClosingAnIdleWatchClosesTheUpstreamWatch(t *testing.T) {
	body := &blockingBody{closed: make(chan struct{})}
	up := &upstream{body: body}
	var reports []Object
	req, _ := http.NewRequest(http.MethodGet, "https://api/apis/m2m.dev/v1alpha1/m2mclients?watch=1", nil)
	resp, err := filter(up, &reports).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-body.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream watch stayed open after its reader closed it")
	}
}

// FuzzFilter feeds LIST and WATCH answers (an object's spec poison field is what a tenant
// controls): never a panic, and whatever the filter passes on is JSON whose items and event
// objects all decode.
func FuzzFilter(f *testing.F) {
	f.Add(`{"kind":"M2MClientList","items":[`+item("a", "1", false)+`,`+item("b", "2", true)+`]}`, false)
	f.Add(`{"type":"MODIFIED","object":`+item("b", "2", true)+"}\n"+`{"type":"ADDED","object":`+item("a", "3", false)+"}", true)
	f.Add(`{"items":null}`, false)
	f.Add(`{"items":[1,"x",{"spec":{"poison":true}}]}`, false)
	f.Fuzz(func(t *testing.T, body string, watch bool) {
		var reports []Object
		up := &upstream{body: io.NopCloser(strings.NewReader(body))}
		fl := filter(up, &reports)
		url := "https://api/apis/m2m.dev/v1alpha1/m2mclients"
		if watch {
			url += "?watch=true"
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		resp, err := fl.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		out, readErr := io.ReadAll(resp.Body)
		resp.Body.Close()
		dec := json.NewDecoder(strings.NewReader(string(out)))
		for {
			// Keys as client-go reads them: case-sensitively.
			var v map[string]json.RawMessage
			if err := dec.Decode(&v); err != nil {
				if err != io.EOF && readErr == nil {
					t.Fatalf("the filter passed on what is not JSON: %v\n%s", err, out)
				}
				return // an answer cut short by an error: the client sees the error
			}
			var objects []json.RawMessage
			if watch {
				var typ string
				_ = json.Unmarshal(v["type"], &typ)
				if typ == "ADDED" || typ == "MODIFIED" || typ == "DELETED" {
					objects = append(objects, v["object"])
				}
			} else if err := json.Unmarshal(v["items"], &objects); v["items"] != nil && err != nil {
				t.Fatalf("the filter passed on items that are not a list: %s", v["items"])
			}
			for _, o := range objects {
				if o != nil && fl.Decode(o) != nil {
					t.Fatalf("the filter passed on an object that does not decode: %s", o)
				}
			}
		}
	})
}

// deepItem is an object that decodes on its own but nests depth levels deep.
func deepItem(name string, depth int) string {
	return `{"metadata":{"name":"` + name + `","namespace":"team-a"},"spec":{"x":` +
		strings.Repeat("[", depth-2) + strings.Repeat("]", depth-2) + `}}`
}

// An object nested as deeply as a decoder allows decodes on its own, but not within a LIST
// (two levels deeper) or a watch event (one level deeper), where it would fail the whole answer:
// it is left out, and the answer decodes.
func TestAnObjectThatDecodesAloneButNotWithinItsAnswerIsLeftOut(t *testing.T) {
	for _, tc := range []struct {
		sentence string
		url      string
		body     string
	}{
		{"in a LIST", "https://api/apis/m2m.dev/v1alpha1/m2mclients",
			`{"items":[` + item("good", "1", false) + `,` + deepItem("deep", maxNesting-1) + `]}`},
		{"in a watch event", "https://api/apis/m2m.dev/v1alpha1/m2mclients?watch=true",
			`{"type":"ADDED","object":` + deepItem("deep", maxNesting) + `}` + "\n" + `{"type":"ADDED","object":` + item("good", "1", false) + `}`},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			var standalone any
			if err := json.Unmarshal([]byte(deepItem("deep", maxNesting)), &standalone); err != nil {
				t.Fatalf("the deep object does not decode on its own, so the test cannot fail: %v", err)
			}
			var whole any
			if err := json.NewDecoder(strings.NewReader(tc.body)).Decode(&whole); err == nil {
				t.Fatal("the unfiltered answer decodes, so the test cannot fail")
			}
			up := &upstream{body: io.NopCloser(strings.NewReader(tc.body))}
			var reports []Object
			got := get(t, filter(up, &reports), tc.url)
			dec := json.NewDecoder(strings.NewReader(got))
			for {
				var v any
				if err := dec.Decode(&v); err == io.EOF {
					break
				} else if err != nil {
					t.Fatalf("the filtered answer does not decode: %v", err)
				}
			}
			if !strings.Contains(got, `"good"`) || len(reports) != 1 || reports[0].Name != "deep" {
				t.Fatalf("reports %+v; the good object kept: %v", reports, strings.Contains(got, `"good"`))
			}
		})
	}
}
