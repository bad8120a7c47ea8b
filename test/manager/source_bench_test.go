package manager

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/sourcewatch"
)

// benchWatcher is a started source watcher against the suite's API server, wired as the
// manager wires it, and the channel of the clients it wakes.
func benchWatcher(b *testing.B, ctx context.Context, cs kubernetes.Interface, gets *atomic.Int64) (*sourcewatch.Watcher, chan types.NamespacedName) {
	mc, err := metadata.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	woken := make(chan types.NamespacedName, 1<<16)
	w := &sourcewatch.Watcher{
		ListWatch: sourcewatch.SecretMetadata(mc),
		Get: func(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
			gets.Add(1)
			return cs.CoreV1().Secrets(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		},
		Notify:          func(k types.NamespacedName) { woken <- k },
		MaxValueBytes:   credentials.MaxSourceValueBytes,
		OptInAnnotation: m2mv1alpha1.SourceForAnnotation,
	}
	go func() { _ = w.Start(ctx) }()
	time.Sleep(100 * time.Millisecond) // Start has set its context
	return w, woken
}

// readAll asks for each source until it is read, as the clients' reconciles do.
func readAll(b *testing.B, w *sourcewatch.Watcher, woken chan types.NamespacedName, ns string, n int, source func(i int) sourcewatch.Source) {
	for i := range n {
		client := types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("c%d", i)}
		for {
			r, err := w.Want(context.Background(), client, source(i))
			if err != nil {
				b.Fatal(err)
			}
			if r.Synced {
				break
			}
			<-woken
		}
	}
}

func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkSourceWatches measures what the sources of one namespace cost the manager: the heap
// per source read (b.N sources, each a Secret of the size a secret store writes), with the one
// metadata watch of the namespace. docs/benchmarks.md records the figures.
func BenchmarkSourceWatches(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	ns := fmt.Sprintf("bench-sources-%d", time.Now().UnixNano())
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i), Annotations: map[string]string{m2mv1alpha1.SourceForAnnotation: fmt.Sprintf("c%d", i)}},
			Data: map[string][]byte{m2mv1alpha1.SecretKeyClientSecret: []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFG")}}
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	before, goroutines := heapNow(), runtime.NumGoroutine()
	var gets atomic.Int64
	w, woken := benchWatcher(b, ctx, cs, &gets)
	b.ResetTimer()
	readAll(b, w, woken, ns, b.N, func(i int) sourcewatch.Source {
		return sourcewatch.Source{Namespace: ns, Name: fmt.Sprintf("s%d", i), Key: m2mv1alpha1.SecretKeyClientSecret}
	})
	b.StopTimer()
	b.ReportMetric(float64(heapNow()-before)/float64(b.N), "heap-B/source")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutines), "goroutines")
}

// BenchmarkAPaddedSourceNamedByManyClients is the attack of a tenant with one Secret padded to
// about 900 KiB, named by 256 clients each under another key, then written twice: what the
// manager holds after, and the GETs each write costs. With a watch per source it held about
// 1,100 MiB; docs/benchmarks.md records what it holds now.
func BenchmarkAPaddedSourceNamedByManyClients(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	const clients = 256
	for range b.N {
		ns := fmt.Sprintf("bench-padded-%d", time.Now().UnixNano())
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		padded := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "padded"}, Data: map[string][]byte{"pad": bytes.Repeat([]byte("x"), 900<<10)}}
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, padded, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		before := heapNow()
		var gets atomic.Int64
		w, woken := benchWatcher(b, ctx, cs, &gets)
		source := func(i int) sourcewatch.Source {
			return sourcewatch.Source{Namespace: ns, Name: "padded", Key: fmt.Sprintf("k%d", i)}
		}
		readAll(b, w, woken, ns, clients, source)
		setup := gets.Load()
		for j := range 2 {
			padded, _ = cs.CoreV1().Secrets(ns).Get(ctx, "padded", metav1.GetOptions{})
			padded.Data["pad"][0] = byte('a' + j)
			if _, err := cs.CoreV1().Secrets(ns).Update(ctx, padded, metav1.UpdateOptions{}); err != nil {
				b.Fatal(err)
			}
			<-woken
			readAll(b, w, woken, ns, clients, source)
		}
		b.ReportMetric(float64(heapNow()-before)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(gets.Load()-setup)/2, "GETs/write")
	}
}
