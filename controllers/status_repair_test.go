package controllers

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// listAnswer is a LIST answer of n M2MClients with statuses as the manager writes them.
func listAnswer(b *testing.B, n int) []byte {
	list := &m2mv1alpha1.M2MClientList{TypeMeta: metav1.TypeMeta{APIVersion: m2mv1alpha1.GroupVersion.String(), Kind: "M2MClientList"}}
	for i := range n {
		obj := m2mv1alpha1.M2MClient{TypeMeta: metav1.TypeMeta{APIVersion: m2mv1alpha1.GroupVersion.String(), Kind: "M2MClient"}}
		obj.Namespace, obj.Name, obj.UID = "team-a", fmt.Sprintf("client-%d", i), "0b5e2a8e-7c1d-4f7e-9a52-0c6f1f2f3a4b"
		obj.Spec.Scopes = []m2mv1alpha1.Scope{"read:things", "write:things"}
		obj.Spec.Audiences = []m2mv1alpha1.Audience{"https://api.example.com"}
		obj.Status.ClientID = fmt.Sprintf("m2m-client-%020d", i)
		obj.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(fmt.Sprint(i)), CreatedAt: metav1.Now(), MAC: strings.Repeat("m", 43)}}
		obj.Status.Conditions = []metav1.Condition{{Type: m2mv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: m2mv1alpha1.ReasonCredentialsReady, LastTransitionTime: metav1.Now(), Message: "credentials are in the Secret"}}
		list.Items = append(list.Items, obj)
	}
	raw, err := json.Marshal(list)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

type staticAnswer struct{ body []byte }

func (s staticAnswer) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(string(s.body)))}, nil
}

// BenchmarkCacheListDecode is what the manager's cache pays per LIST of 1,000 clients: the typed
// decode alone ("typed"), and through the filter that first decodes each object on its own
// ("filtered").
func BenchmarkCacheListDecode(b *testing.B) {
	body := listAnswer(b, 1000)
	decoder := serializer.NewCodecFactory(m2mv1alpha1.NewScheme()).UniversalDeserializer()
	typed := func(r io.Reader) {
		raw, _ := io.ReadAll(r)
		if _, _, err := decoder.Decode(raw, nil, &m2mv1alpha1.M2MClientList{}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("typed", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			typed(strings.NewReader(string(body)))
		}
	})
	b.Run("filtered", func(b *testing.B) {
		hc := newStatusRepair().filterTransport(staticAnswer{body}, "")
		req, _ := http.NewRequest(http.MethodGet, "https://api/apis/m2m.dev/v1alpha1/m2mclients", nil)
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			resp, err := hc.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			typed(resp.Body)
			resp.Body.Close()
		}
	})
}
