package plugin

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

var whoisNow = time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)

// unsignedToken is a JWT with header and claims and a signature that nothing could verify:
// whois must read it all the same.
func unsignedToken(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(claims) + ".not-a-signature"
}

func TestWhoisTellsATokenFromAClientIDAndRefusesWhatIsNeither(t *testing.T) {
	token := unsignedToken(t, map[string]any{"alg": "ES256", "kid": "k1"},
		map[string]any{"iss": "https://m2m.example.com", "client_id": "m2m_abc", "exp": whoisNow.Unix()})
	for sentence, tc := range map[string]struct {
		arg          string
		wantID       string
		wantToken    *unverifiedToken
		wantErrMatch string
	}{
		"a token is decoded, and its client_id, iss, kid and exp read": {arg: token, wantID: "m2m_abc",
			wantToken: &unverifiedToken{issuer: "https://m2m.example.com", keyID: "k1", expires: &whoisNow}},
		"a client ID is taken as one":                                                  {arg: "m2m_abc", wantID: "m2m_abc"},
		"a client ID with two dots is a client ID, not a token":                        {arg: "team.billing.worker", wantID: "team.billing.worker"},
		"a client ID whose parts happen to decode to JSON is a client ID, not a token": {arg: "e30.e30.e30", wantID: "e30.e30.e30"},
		"a selector in place of an ID is refused, never sent to the API server": {arg: "x,metadata.namespace=kube-system",
			wantErrMatch: "neither a JWT nor a client ID"},
		"an empty argument is refused": {arg: "", wantErrMatch: "neither a JWT nor a client ID"},
		"an argument longer than any token is refused before it is decoded": {arg: strings.Repeat("a", maxWhoisArgument+1),
			wantErrMatch: "bytes: neither a client ID nor a token"},
		"a token without client_id is not this token server's": {arg: unsignedToken(t, map[string]any{"alg": "ES256"}, map[string]any{"sub": "x"}),
			wantErrMatch: "no client_id claim"},
		"a token whose client_id is not a client ID is refused": {arg: unsignedToken(t, map[string]any{"alg": "ES256"}, map[string]any{"client_id": "a b"}),
			wantErrMatch: "no client_id claim"},
		"a token whose payload is not JSON is refused": {arg: base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256"}`)) + ".!!!.x",
			wantErrMatch: "payload is not base64url-encoded JSON"},
		"an exp beyond any time is refused": {arg: unsignedToken(t, map[string]any{"alg": "ES256"}, map[string]any{"client_id": "a", "exp": 1e300}),
			wantErrMatch: "is not a time in seconds"},
	} {
		t.Run(sentence, func(t *testing.T) {
			got, err := parseWhoisArgument(tc.arg)
			if tc.wantErrMatch != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrMatch) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErrMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.clientID != tc.wantID || (got.token == nil) != (tc.wantToken == nil) {
				t.Fatalf("got %+v, want client ID %q and token %+v", got, tc.wantID, tc.wantToken)
			}
			if tc.wantToken != nil && (got.token.issuer != tc.wantToken.issuer || got.token.keyID != tc.wantToken.keyID || !got.token.expires.Equal(*tc.wantToken.expires)) {
				t.Fatalf("token %+v, want %+v", *got.token, *tc.wantToken)
			}
		})
	}
}

// jwksServer is a token server that publishes the keys kids, and counts the requests it gets.
func jwksServer(t *testing.T, kids ...string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks"})
		case "/jwks":
			keys := []map[string]string{}
			for _, k := range kids {
				keys = append(keys, map[string]string{"kid": k, "kty": "EC"})
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// whoisClient is team-a's client reports, with ID m2m_reports, Ready and with two scopes.
func whoisClient() *m2mv1alpha1.M2MClient {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "reports"},
		Spec: m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:invoices", "write:reports"}}}
	obj.Status.ClientID, obj.Status.State = "m2m_reports", m2mv1alpha1.ClientStateActive
	obj.Status.Conditions = []metav1.Condition{{Type: m2mv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "CredentialsReady"}}
	return obj
}

// whoisCluster is a fake cluster holding objs, whose M2MClients are selectable by
// status.clientID as the CRD makes them; forbid refuses the caller what the API server would.
func whoisCluster(forbid interceptor.Funcs, objs ...client.Object) client.Client {
	return interceptor.NewClient(fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(objs...).
		WithIndex(&m2mv1alpha1.M2MClient{}, clientIDField, func(o client.Object) []string {
			return []string{o.(*m2mv1alpha1.M2MClient).Status.ClientID}
		}).Build(), forbid)
}

var forbidden = apierrors.NewForbidden(schema.GroupResource{Group: "m2m.dev", Resource: "m2mclients"}, "", errors.New("RBAC"))

// tenantOfTeamA may list M2MClients only in team-a, and may not read ClientIDBindings.
var tenantOfTeamA = interceptor.Funcs{
	List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		o := (&client.ListOptions{}).ApplyOptions(opts)
		if o.Namespace != "team-a" {
			return forbidden
		}
		return c.List(ctx, list, opts...)
	},
	Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if _, ok := obj.(*m2mv1alpha1.ClientIDBinding); ok {
			return forbidden
		}
		return c.Get(ctx, key, obj, opts...)
	},
}

func TestWhoisPrintsTheClientOfATokenAndWhetherItsKeyIsStillPublished(t *testing.T) {
	srv, hits := jwksServer(t, "current")
	hostile, hostileHits := jwksServer(t, "anything")
	disabled := whoisClient()
	disabled.Name, disabled.Status.ClientID, disabled.Spec.Disabled, disabled.Status.State = "old", "m2m_old", true, m2mv1alpha1.ClientStateDisabled
	binding := &m2mv1alpha1.ClientIDBinding{ObjectMeta: metav1.ObjectMeta{Name: m2mv1alpha1.ClientIDBindingName("m2m_deleted")},
		Spec: m2mv1alpha1.ClientIDBindingSpec{ClientID: "m2m_deleted", Namespace: "team-b", Name: "gone"}}
	objs := []client.Object{installConfigMap(srv.URL+"/oauth2/token", ""), whoisClient(), disabled, binding}
	tokenOf := func(iss, kid string, exp time.Time) string {
		return unsignedToken(t, map[string]any{"alg": "ES256", "kid": kid}, map[string]any{"iss": iss, "client_id": "m2m_reports", "exp": exp.Unix()})
	}

	for sentence, tc := range map[string]struct {
		arg    string
		forbid interceptor.Funcs
		// ns is -n, or the kubeconfig's namespace: team-a unless given.
		ns      string
		want    []string
		wantErr string
	}{
		"a live token names its client, says it was not verified and that its key is published": {
			arg: tokenOf(srv.URL, "current", whoisNow.Add(5*time.Minute)),
			want: []string{"decoded WITHOUT verifying its signature", "Issuer: +" + srv.URL, "Expires: +2026-12-07T16:05:00Z \\(in 5m0s\\)",
				"Key ID: +current: published in the install's JWKS", "Client ID: +m2m_reports", "Found by: +--field-selector status.clientID=m2m_reports in all namespaces",
				"Namespace: +team-a", "Name: +reports", "Ready: +True \\(CredentialsReady\\)", "State: +Active", "Scopes: +read:invoices write:reports"}},
		"an expired token signed with a key that left the JWKS says both": {
			arg:  tokenOf(srv.URL, "retired", whoisNow.Add(-90*time.Second)),
			want: []string{"\\(EXPIRED 1m30s ago\\)", "Key ID: +retired: NOT published in the install's JWKS"}},
		"a token of another issuer is not checked against that issuer's keys": {
			arg:  tokenOf(hostile.URL, "anything", whoisNow.Add(time.Minute)),
			want: []string{"not checked: the token's issuer is not this install's \\(" + srv.URL + "\\)", "Name: +reports"}},
		"claims that would write lines of their own or escape codes are shown quoted": {
			arg:  tokenOf("https://x\nNamespace:\tkube-system", "k\x1b[31m", whoisNow.Add(time.Minute)),
			want: []string{`Issuer: +"https://x\\nNamespace:\\tkube-system"`, `Key ID: +"k\\x1b\[31m"`, "Namespace: +team-a"}},
		"a client ID names its client, and a disabled client says so": {
			arg:  "m2m_old",
			want: []string{"Name: +old", "State: +Disabled \\(spec.disabled: the token server issues it no tokens\\)"}},
		"a tenant who may list only its namespace is searched there, and told so": {
			arg: "m2m_reports", forbid: tenantOfTeamA,
			want: []string{"Found by: +--field-selector status.clientID=m2m_reports in namespace team-a only \\(you may not list M2MClients in all namespaces"}},
		"a deleted client is found by its ClientIDBinding, which says so": {
			arg:  "m2m_deleted",
			want: []string{"Found by: +ClientIDBinding sha256-[0-9a-f]+ \\(no M2MClient in all namespaces has the ID: the client was deleted", "Namespace: +team-b", "Name: +gone"}},
		"an API server whose CRD cannot select by client ID is named as the cause": {
			arg: "m2m_reports", forbid: interceptor.Funcs{List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
				return apierrors.NewBadRequest("field label not supported: status.clientID")
			}},
			wantErr: "their CRD is older than this kubectl m2m (upgrade m2m-operator's CRDs), or Kubernetes is older than 1.32"},
		"an ID that nothing holds says so": {
			arg: "m2m_nobody", wantErr: "no M2MClient has client ID m2m_nobody in all namespaces, and it has no ClientIDBinding"},
		"a tenant that may not read bindings is told where else to look": {
			arg: "m2m_deleted", forbid: tenantOfTeamA,
			wantErr: "no M2MClient has client ID m2m_deleted in namespace team-a only (you may not list M2MClients in all namespaces; -n chooses another), and you may not read ClientIDBindings"},
		"a client in another namespace stays hidden from a tenant of team-a": {
			arg: "m2m_old", ns: "team-b", forbid: interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				if (&client.ListOptions{}).ApplyOptions(opts).Namespace != "team-b" {
					return forbidden
				}
				return c.List(ctx, list, opts...)
			}, Get: tenantOfTeamA.Get},
			wantErr: "no M2MClient has client ID m2m_old in namespace team-b only"},
	} {
		t.Run(sentence, func(t *testing.T) {
			var out bytes.Buffer
			ns := cmp.Or(tc.ns, "team-a")
			err := whois(context.Background(), whoisCluster(tc.forbid, objs...), &out, tc.arg, ns, "m2m-system", "", whoisNow)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q; output:\n%s", err, tc.wantErr, out.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.want {
				if !regexp.MustCompile(want).MatchString(out.String()) {
					t.Errorf("whois lacks %s:\n%s", want, out.String())
				}
			}
		})
	}
	if n := hostileHits.Load(); n != 0 {
		t.Errorf("whois sent %d requests to the issuer a token named, which no one vouches for", n)
	}
	if hits.Load() == 0 {
		t.Error("whois never asked the install's token server for its keys")
	}
}
