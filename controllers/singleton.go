package controllers

import (
	"context"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// singleton is what a controller of one object (the signing keys, the serving certificate, the
// token server's ConfigMap) watches with: a source that asks for req once at start, whether or
// not any event comes, and a handler that asks for req on every event it is given.
func singleton(req reconcile.Request) (source.Source, handler.EventHandler) {
	atStart := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(req)
		return nil
	})
	toReq := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{req}
	})
	return atStart, toReq
}
