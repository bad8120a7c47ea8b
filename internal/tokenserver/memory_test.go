package tokenserver

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// BenchmarkCachedClientMemory measures the heap one cached M2MClient takes: objects as a LIST
// delivers them (JSON, decoded one at a time from unstructured, as listWatch does), converted by
// the informer's transform, in an informer's store and the client-ID map; 10,000 clients in 100
// namespaces, each with two accepted secrets, scopes, audiences and a condition.
func BenchmarkCachedClientMemory(b *testing.B) {
	const n = 10000
	raw := make([][]byte, n)
	for i := range n {
		c := &m2mv1alpha1.M2MClient{
			TypeMeta: metav1.TypeMeta{APIVersion: m2mv1alpha1.GroupVersion.String(), Kind: "M2MClient"},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("client-%05d", i), Namespace: fmt.Sprintf("team-%03d", i%100), UID: types.UID(fmt.Sprintf("0b5d6c8e-1f2a-4c3b-9d8e-%012d", i)),
				ResourceVersion: fmt.Sprint(100000 + i), Generation: 3, CreationTimestamp: metav1.NewTime(t0),
				Labels: map[string]string{"app.kubernetes.io/part-of": "billing"}},
			Spec: m2mv1alpha1.M2MClientSpec{
				Scopes:    []m2mv1alpha1.Scope{"read:invoices", "write:payments"},
				Audiences: []m2mv1alpha1.Audience{"https://payments.example.com"},
				TokenTTL:  &metav1.Duration{Duration: 15 * time.Minute},
			},
		}
		id, _ := credentials.NewClientID()
		expires := metav1.NewTime(t0.Add(time.Hour))
		c.Status = m2mv1alpha1.M2MClientStatus{
			ClientID: id, ClientIDMAC: "mHc1r0Xq8cOe2k3l4m5n6o7p8q9r0s1t2u3v4w5x6y7",
			AcceptedSecrets: []m2mv1alpha1.AcceptedSecret{
				{Hash: credentials.Hash(fmt.Sprint("s1-", i)), MAC: "aHc1r0Xq8cOe2k3l4m5n6o7p8q9r0s1t2u3v4w5x6y7", ExpiresAt: &expires},
				{Hash: credentials.Hash(fmt.Sprint("s2-", i)), MAC: "bHc1r0Xq8cOe2k3l4m5n6o7p8q9r0s1t2u3v4w5x6y7"},
			},
			ObservedGeneration: 3,
			Conditions:         []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Issued", Message: "the client's secret is in its Secret", LastTransitionTime: metav1.NewTime(t0)}},
		}
		var err error
		if raw[i], err = json.Marshal(c); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := &InformerClients{}
		store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{})
		for i := range n {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(raw[i]); err != nil {
				b.Fatal(err)
			}
			obj, ok := s.decode(b.Context(), u)
			if !ok {
				b.Fatal("does not decode")
			}
			c, err := cacheable(obj)
			if err != nil {
				b.Fatal(err)
			}
			if err := store.Add(c); err != nil {
				b.Fatal(err)
			}
			s.index(c, false)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/client")
		if path := os.Getenv("M2M_HEAP_PROFILE"); path != "" {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
		runtime.KeepAlive(store)
		runtime.KeepAlive(s)
	}
}
