package devenv

import (
	"context"
	"maps"
	"slices"

	"github.com/m2m-dev/m2m-operator/test/support/volume"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// mount keeps dir in step with a Secret, as the kubelet keeps a pod's Secret volume, so that a
// process of make dev reads the files a pod would and sees them change as a pod does.
type mount struct {
	dir    string
	secret types.NamespacedName
	// ready is closed once the Secret has every key of want, in dir.
	ready chan struct{}
	want  []string
	// done is closed when the mount stops writing, after its context ends.
	done chan struct{}
}

// startMount projects the Secret key into dir until ctx ends; a deleted Secret leaves the last
// files, as the kubelet leaves a running pod's. Its ready channel is closed once the keys want
// are there.
func startMount(ctx context.Context, cfg *rest.Config, key types.NamespacedName, dir string, want ...string) (*mount, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	m := &mount{dir: dir, secret: key, ready: make(chan struct{}), want: want, done: make(chan struct{})}
	lw := cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "secrets", key.Namespace, fields.OneTermEqualSelector("metadata.name", key.Name))
	informer := cache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, cache.Indexers{})
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    m.update,
		UpdateFunc: func(_, obj any) { m.update(obj) },
	}); err != nil {
		return nil, err
	}
	// Run returns after the handler's last call, so nothing writes into dir once done is closed.
	go func() { informer.Run(ctx.Done()); close(m.done) }()
	return m, nil
}

func (m *mount) update(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	logger := log.Log.WithName("dev-kubelet").WithValues("secret", m.secret.String(), "dir", m.dir)
	if err := volume.Project(m.dir, s.Data); err != nil {
		logger.Error(err, "cannot write the Secret's files; the token server keeps the ones it has")
		return
	}
	// The keys' names only: the values hold a private key.
	logger.Info("wrote the Secret's files", "keys", slices.Sorted(maps.Keys(s.Data)), "resourceVersion", s.ResourceVersion)
	for _, k := range m.want {
		if len(s.Data[k]) == 0 {
			return
		}
	}
	select {
	case <-m.ready:
	default:
		close(m.ready)
	}
}
