package tokenserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// fakeAccess grants get on the clients of its map to the token given for them, and counts the
// reviews the API server would do.
type fakeAccess struct {
	mu      sync.Mutex
	grants  map[string]types.NamespacedName // token: the client it may get
	reviews int
}

func (f *fakeAccess) Review(_ context.Context, token string, key types.NamespacedName) (Access, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reviews++
	granted, ok := f.grants[token]
	switch {
	case !ok:
		return AccessUnauthenticated, nil
	case granted != key:
		return AccessForbidden, nil
	}
	return AccessAllowed, nil
}

func (f *fakeAccess) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reviews
}

// askWhy asks for the refusals of ns/name with bearer (none when empty).
func askWhy(t *testing.T, f *fixture, bearer, ns, name string) (int, map[string]any) {
	t.Helper()
	c := call{method: http.MethodGet, path: RefusalsPath + "?" + url.Values{"namespace": {ns}, "name": {name}}.Encode()}
	if bearer != "" {
		c.authorization = "Bearer " + bearer
	}
	resp, body := f.do(t, c)
	return resp.StatusCode, body
}

const ownerToken = "token-of-the-owner"

// whyFixture serves goodID (ns/m2m-good) and a client of another namespace, with ownerToken
// allowed to get goodID only, and one wrong-secret refusal of each client.
func whyFixture(t *testing.T) (*fixture, *fakeAccess) {
	t.Helper()
	other := testClient("m2m-other", bareSecret)
	other.Namespace = "team-b"
	seal(other)
	access := &fakeAccess{grants: map[string]types.NamespacedName{ownerToken: {Namespace: "ns", Name: goodID}}}
	_, f := serveWith(t, mapClients{goodID: testClient(goodID, goodSecret), "m2m-other": other}, Config{Access: access, Replica: "token-server-0"})
	tokenFor(t, f, goodID, "an-old-secret-0123456789abcdefghijklmnopqrstu")
	tokenFor(t, f, "m2m-other", "an-old-secret-0123456789abcdefghijklmnopqrstu")
	return f, access
}

// The owner of a client sees its refusals, with what to do and which replica answers.
func TestTheOwnerOfAClientSeesItsRefusalsWithWhatToDo(t *testing.T) {
	f, _ := whyFixture(t)
	code, body := askWhy(t, f, ownerToken, "ns", goodID)
	if code != http.StatusOK {
		t.Fatalf("the owner got %d %v", code, body)
	}
	var got RefusalsAnswer
	if raw, err := json.Marshal(body); err != nil || json.Unmarshal(raw, &got) != nil {
		t.Fatalf("the answer does not decode: %v", body)
	}
	if got.Replica != "token-server-0" || got.Total != 1 || len(got.Refusals) != 1 || got.Kept != RefusalsPerClient {
		t.Fatalf("the answer: %+v", got)
	}
	r := got.Refusals[0]
	if r.Reason != "wrong_secret" || r.Error != ErrInvalidClient || r.Method != "client_secret_post" || r.From != "127.0.0.1" || r.Help != reasonWrongSecret.help || !r.Time.Equal(t0) {
		t.Fatalf("the refusal: %+v", r)
	}
}

// Without a bearer token, or with one the API server does not accept, the answer is 401 and
// nothing of the client.
func TestTheRefusalsOfAClientNeedAKubernetesBearerToken(t *testing.T) {
	f, _ := whyFixture(t)
	for sentence, bearer := range map[string]string{"no token": "", "a token the API server refuses": "made-up"} {
		code, body := askWhy(t, f, bearer, "ns", goodID)
		if code != http.StatusUnauthorized || body["refusals"] != nil {
			t.Errorf("%s: %d %v", sentence, code, body)
		}
	}
}

// A caller who may not get a client gets 403 and nothing else, the same for a client that
// exists, with refusals, and for one that does not: the answer does not say which.
func TestACallerWhoMayNotGetAClientLearnsNothingOfIt(t *testing.T) {
	f, _ := whyFixture(t)
	codeOther, bodyOther := askWhy(t, f, ownerToken, "team-b", "m2m-other")
	codeNone, bodyNone := askWhy(t, f, ownerToken, "team-b", "m2m-nothing")
	if codeOther != http.StatusForbidden || len(bodyOther) != 2 || bodyOther["error"] != "forbidden" {
		t.Fatalf("another namespace's client: %d %v", codeOther, bodyOther)
	}
	bodyNone["message"] = strings.ReplaceAll(bodyNone["message"].(string), "m2m-nothing", "m2m-other")
	if codeNone != codeOther || !reflect.DeepEqual(bodyNone, bodyOther) {
		t.Fatalf("a client that does not exist gets %d %v, one that does %d %v", codeNone, bodyNone, codeOther, bodyOther)
	}
}

// A name that no M2MClient could have is refused before the API server is asked.
func TestARefusalsRequestForNoPossibleClientCostsNoReview(t *testing.T) {
	f, access := whyFixture(t)
	for _, q := range [][2]string{{"", goodID}, {"ns", ""}, {"NS", goodID}, {"ns", strings.Repeat("a", 254)}, {"ns/x", goodID}} {
		if code, body := askWhy(t, f, ownerToken, q[0], q[1]); code != http.StatusBadRequest {
			t.Errorf("namespace %q name %q: %d %v", q[0], q[1], code, body)
		}
	}
	if n := access.count(); n != 0 {
		t.Fatalf("%d reviews for requests that name no possible client", n)
	}
}

// A caller's verdict serves it for accessTTL: a repeated `kubectl m2m why` costs one review,
// and a grant revoked meanwhile stops working after accessTTL.
func TestAVerdictIsReusedForItsCallerAndClientUntilItExpires(t *testing.T) {
	f, access := whyFixture(t)
	for range 5 {
		askWhy(t, f, ownerToken, "ns", goodID)
	}
	if n := access.count(); n != 1 {
		t.Fatalf("5 requests of one caller cost %d reviews, want 1", n)
	}
	askWhy(t, f, ownerToken, "team-b", "m2m-other")
	if n := access.count(); n != 2 {
		t.Fatalf("another client cost no review of its own (%d in all)", n)
	}
	access.mu.Lock()
	delete(access.grants, ownerToken)
	access.mu.Unlock()
	f.clock.Step(accessTTL + time.Second)
	if code, _ := askWhy(t, f, ownerToken, "ns", goodID); code != http.StatusUnauthorized {
		t.Fatalf("after the grant went and the verdict expired the caller got %d", code)
	}
}

// A flood of made-up bearer tokens costs the API server at most accessBurst reviews (with the
// clock stopped) and then 429s, while a caller whose verdict is cached is still answered.
func TestAFloodOfMadeUpTokensCostsBoundedReviewsAndDoesNotLockOutACachedOwner(t *testing.T) {
	f, access := whyFixture(t)
	askWhy(t, f, ownerToken, "ns", goodID)
	busy := 0
	for i := range 5 * accessBurst {
		code, _ := askWhy(t, f, fmt.Sprint("made-up-", i), "ns", goodID)
		if code == http.StatusTooManyRequests {
			busy++
		}
	}
	if n := access.count(); n > 1+accessBurst || busy == 0 {
		t.Fatalf("the flood cost %d reviews (at most %d allowed) with %d answers of 429", n, 1+accessBurst, busy)
	}
	if code, body := askWhy(t, f, ownerToken, "ns", goodID); code != http.StatusOK {
		t.Fatalf("the owner, whose verdict is cached, got %d %v during the flood", code, body)
	}
}

// With the limit of failed authentications on, a source whose made-up bearer tokens the API
// server refuses, or whose valid token asks for clients it may not get, is held to it at the
// refusals endpoint too: past its burst it costs no review and none of the reviews every caller
// shares.
func TestRefusedCallersOfTheRefusalsEndpointCountAgainstTheirSource(t *testing.T) {
	for name, ask := range map[string]func(i int) (token, client string){
		"made-up tokens":                   func(i int) (string, string) { return fmt.Sprint("made-up-", i), goodID },
		"a valid token, for other clients": func(i int) (string, string) { return ownerToken, fmt.Sprint("not-mine-", i) },
	} {
		t.Run(name, func(t *testing.T) { refusedCallersAreLimited(t, ask) })
	}
}

func refusedCallersAreLimited(t *testing.T, ask func(i int) (token, client string)) {
	access := &fakeAccess{grants: map[string]types.NamespacedName{ownerToken: {Namespace: "ns", Name: goodID}}}
	const burst = 3
	_, f := serveWith(t, mapClients{goodID: testClient(goodID, goodSecret)}, Config{Access: access, FailureLimit: FailureLimit{Rate: 0.001, Burst: burst, Sources: 16}})
	limited := 0
	for i := range 10 {
		token, name := ask(i)
		code, body := askWhy(t, f, token, "ns", name)
		if code == http.StatusTooManyRequests {
			if body["error"] != ErrTooManyRequests {
				t.Fatalf("a limited source got %v", body)
			}
			limited++
		}
	}
	if n := access.count(); n != burst || limited != 10-burst {
		t.Fatalf("10 refused requests from one source cost %d reviews and %d were limited; want %d and %d", n, limited, burst, 10-burst)
	}
}
