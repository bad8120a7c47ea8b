package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// claimClientID resolves the client ID (ResolveClientID) and holds its binding before status
// names it, so that a crash between the two leaves an ID that is this client's, and never one
// that another client can still take. A client whose ID is held by another stops here.
func (c *clientReconcile) claimClientID(ctx context.Context) (stepResult, error) {
	obj := c.obj
	var bound []string
	var err error
	if obj.Spec.ClientID == "" && obj.Status.ClientID == "" {
		// Only a client with no ID of its own looks for one that a binding gives it.
		if bound, err = c.r.boundIDs(ctx, obj); err != nil {
			return proceed, err
		}
	}
	id, source := ResolveClientID(obj, c.secret, bound)
	if source == IDNew {
		if id, err = credentials.NewClientID(); err != nil {
			return proceed, err
		}
	}
	holder, err := c.r.claim(ctx, obj, c.keys, id)
	if err != nil {
		return proceed, err
	}
	if holder != "" {
		// Withhold the ID, and the secrets that went with it, from status, so that the token
		// server never sees two clients with it.
		obj.Status.ClientID, obj.Status.AcceptedSecrets = "", nil
		setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonDuplicateClientID,
			fmt.Sprintf("client ID %q is bound to %s; an administrator can release it by deleting ClientIDBinding %s", id, holder, m2mv1alpha1.ClientIDBindingName(id)))
		return stopAndRequeue(0), nil
	}
	c.status.vouched = true
	c.id = id
	return proceed, nil
}

// boundIDs returns the client IDs that bindings give to obj's namespace and name, oldest first.
func (r *M2MClientReconciler) boundIDs(ctx context.Context, obj *m2mv1alpha1.M2MClient) ([]string, error) {
	var list m2mv1alpha1.ClientIDBindingList
	if err := r.List(ctx, &list, client.MatchingFields{boundClientIndex: obj.Namespace + "/" + obj.Name}); err != nil {
		return nil, err
	}
	items := list.Items
	slices.SortFunc(items, func(a, b m2mv1alpha1.ClientIDBinding) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var ids []string
	for _, b := range items {
		if b.Name == m2mv1alpha1.ClientIDBindingName(b.Spec.ClientID) {
			ids = append(ids, b.Spec.ClientID)
		}
	}
	return ids, nil
}

// claim makes sure that id is bound to obj, creating the binding when the ID is free. It returns
// "" when the ID is obj's, else who holds it, in words that name no object of another namespace.
// An ID is free when no binding holds it and no other client's status holds it: an authenticated
// status, or before enforcement, a status written by a version without bindings, whose holders
// get their bindings on this version's first pass.
func (r *M2MClientReconciler) claim(ctx context.Context, obj *m2mv1alpha1.M2MClient, keys *statusmac.Set, id string) (string, error) {
	name := m2mv1alpha1.ClientIDBindingName(id)
	b := &m2mv1alpha1.ClientIDBinding{}
	err := r.Get(ctx, types.NamespacedName{Name: name}, b)
	if err == nil {
		return heldBy(obj, b, id), nil
	}
	if !apierrors.IsNotFound(err) {
		return "", err
	}
	var list m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &list, client.MatchingFields{clientIDIndex: id}); err != nil {
		return "", err
	}
	for i := range list.Items {
		other := &list.Items[i]
		if other.UID == obj.UID || !other.DeletionTimestamp.IsZero() || other.Status.ClientID != id {
			continue
		}
		if !keys.Enforced() || keys.VerifyClientID(other) {
			if other.Namespace == obj.Namespace {
				return "M2MClient " + other.Name + " in this namespace", nil
			}
			return "another M2MClient", nil
		}
	}
	b = &m2mv1alpha1.ClientIDBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue}},
		Spec:       m2mv1alpha1.ClientIDBindingSpec{ClientID: id, Namespace: obj.Namespace, Name: obj.Name},
	}
	err = r.Create(ctx, b)
	if apierrors.IsAlreadyExists(err) {
		// Another client took it first, or the cache had not seen the binding yet.
		if err := r.APIReader.Get(ctx, types.NamespacedName{Name: name}, b); err != nil {
			return "", err
		}
		return heldBy(obj, b, id), nil
	}
	if err != nil {
		return "", err
	}
	return "", nil
}

// heldBy is "" when b gives id to obj, else who holds it, naming only objects of obj's namespace.
func heldBy(obj *m2mv1alpha1.M2MClient, b *m2mv1alpha1.ClientIDBinding, id string) string {
	switch {
	case b.Spec.ClientID != id:
		return "another client ID whose binding has the same name"
	case b.Binds(obj.Namespace, obj.Name):
		return ""
	case b.Spec.Namespace == obj.Namespace:
		return "M2MClient " + b.Spec.Name + " in this namespace (which may have been deleted)"
	}
	return "another M2MClient (which may have been deleted)"
}
