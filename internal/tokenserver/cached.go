package tokenserver

import (
	"errors"
	"math"
	"sync/atomic"
	"time"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// CachedClient is an M2MClient as the token server keeps it: only what the server reads, in a
// fraction of an M2MClient's memory (docs/benchmarks.md, "Memory per cached client"). Its field
// names are the M2MClient's. A CachedClient is one version of an object and is never modified
// once made (NewCachedClient), but for the memo of its status MACs' verdicts.
type CachedClient struct {
	Namespace, Name string
	UID             types.UID
	// ResourceVersion tells client-go's informer an update from a resync.
	ResourceVersion string
	// created is metadata.creationTimestamp in Unix seconds.
	created int64
	// deleting says that metadata.deletionTimestamp is set.
	deleting bool
	// acceptsCurrentSecret and acceptsCurrentKey are credentials.AcceptsCurrent of the object
	// for the two forms, which read the spec's authentication kind and the generations.
	acceptsCurrentSecret, acceptsCurrentKey bool
	// claims says whether the tokenClaims rendered (claimsRendered) or why not.
	claims claimsState

	Spec   CachedSpec
	Status CachedStatus

	// verdicts memoizes the verdicts of the status MACs under the last status key set asked.
	verdicts atomic.Pointer[statusVerdicts]
}

// claimsState is how a client's tokenClaims fared when the cache took it.
type claimsState uint8

const (
	claimsRendered claimsState = iota
	// claimsOverBound: over m2mv1alpha1.MaxTokenClaimsBytes; the client gets no token.
	claimsOverBound
	// claimsUnrendered: a templated value did not render; the client gets no token.
	claimsUnrendered
)

// CachedSpec is what the token server reads of an M2MClient's spec.
type CachedSpec struct {
	Scopes    []m2mv1alpha1.Scope
	Audiences []m2mv1alpha1.Audience
	TokenTTL  *metav1.Duration
	// TokenClaims are the claims as issued: templates rendered against trustedMetadata.
	TokenClaims              m2mv1alpha1.TokenClaims
	IssuanceLimit            *m2mv1alpha1.IssuanceLimit
	DPoP                     *m2mv1alpha1.DPoPPolicy
	Disabled                 bool
	RevokeTokensIssuedBefore *metav1.Time
	// Authentication is never nil: clients that set none of its fields share one empty value.
	Authentication *CachedAuthentication
}

// CachedAuthentication is what the token server reads of spec.authentication besides the
// credential kind (CachedClient's acceptsCurrent fields).
type CachedAuthentication struct {
	ServiceAccounts []string
	Federated       []m2mv1alpha1.FederatedIdentity
	PublicKeys      []m2mv1alpha1.ClientPublicKey
	PodCertificates *m2mv1alpha1.PodCertificatePolicy
}

// noAuthentication is the Authentication of every client that sets none of its fields.
var noAuthentication = &CachedAuthentication{}

// CachedStatus is what the token server reads of an M2MClient's status.
type CachedStatus struct {
	ClientID, ClientIDMAC string
	AcceptedSecrets       []CachedEntry
}

// CachedEntry is an accepted entry of status: a secret's hash or a key pair's public key.
type CachedEntry struct {
	Hash, MAC string
	PublicKey *m2mv1alpha1.ClientPublicKey
	// expires is expiresAt in Unix seconds (status stores whole seconds), or noExpiry.
	expires int64
}

// noExpiry is the expires of an entry without expiresAt.
const noExpiry = math.MaxInt64

// form is credentials.FormOf the entry.
func (e *CachedEntry) form() credentials.Form {
	if e.PublicKey != nil {
		return credentials.FormKey
	}
	return credentials.FormSecret
}

// expiring reports whether the entry has an expiresAt: it is in its grace period.
func (e *CachedEntry) expiring() bool { return e.expires != noExpiry }

// acceptedAt reports whether the entry accepts a credential at now (credentials.Accepted).
func (e *CachedEntry) acceptedAt(now time.Time) bool { return now.Unix() < e.expires }

// acceptsCurrent is credentials.AcceptsCurrent of the client for form f.
func (c *CachedClient) acceptsCurrent(f credentials.Form) bool {
	if f == credentials.FormKey {
		return c.acceptsCurrentKey
	}
	return c.acceptsCurrentSecret
}

// NewCachedClient is obj as the cache keeps it. Templated claims are rendered here, once per
// object version, rather than per token. Namespaces, scopes and audiences are interned: weakly,
// so that no tenant grows the table beyond what the cache holds.
func NewCachedClient(obj *m2mv1alpha1.M2MClient) *CachedClient {
	c := &CachedClient{
		Namespace:            unique.Make(obj.Namespace).Value(),
		Name:                 obj.Name,
		UID:                  obj.UID,
		ResourceVersion:      obj.ResourceVersion,
		created:              obj.CreationTimestamp.Unix(),
		deleting:             obj.DeletionTimestamp != nil,
		acceptsCurrentSecret: credentials.AcceptsCurrent(obj, credentials.FormSecret),
		acceptsCurrentKey:    credentials.AcceptsCurrent(obj, credentials.FormKey),
		Spec: CachedSpec{
			Scopes:                   internAll(obj.Spec.Scopes),
			Audiences:                internAll(obj.Spec.Audiences),
			TokenTTL:                 obj.Spec.TokenTTL,
			IssuanceLimit:            obj.Spec.IssuanceLimit,
			DPoP:                     obj.Spec.DPoP,
			Disabled:                 obj.Spec.Disabled,
			RevokeTokensIssuedBefore: obj.Spec.RevokeTokensIssuedBefore,
			Authentication:           noAuthentication,
		},
		Status: CachedStatus{ClientID: obj.Status.ClientID, ClientIDMAC: obj.Status.ClientIDMAC},
	}
	if a := &obj.Spec.Authentication; a.ServiceAccounts != nil || a.Federated != nil || a.PublicKeys != nil || a.PodCertificates != nil {
		c.Spec.Authentication = &CachedAuthentication{ServiceAccounts: a.ServiceAccounts, Federated: a.Federated, PublicKeys: a.PublicKeys, PodCertificates: a.PodCertificates}
	}
	claims, err := obj.Spec.RenderTokenClaims()
	switch {
	case errors.Is(err, m2mv1alpha1.ErrTokenClaimsTooLarge):
		// Claims over the bound never reach the cache; the client gets no token.
		c.claims = claimsOverBound
	case err != nil:
		// A claim that does not render is not issued without its value or with its template:
		// resource servers would read either as something the client's owner did not say.
		c.claims = claimsUnrendered
	default:
		c.Spec.TokenClaims = claims
	}
	if n := len(obj.Status.AcceptedSecrets); n > 0 {
		c.Status.AcceptedSecrets = make([]CachedEntry, n)
		for i := range obj.Status.AcceptedSecrets {
			e := &obj.Status.AcceptedSecrets[i]
			c.Status.AcceptedSecrets[i] = CachedEntry{Hash: e.Hash, MAC: e.MAC, PublicKey: e.PublicKey, expires: noExpiry}
			if e.ExpiresAt != nil {
				c.Status.AcceptedSecrets[i].expires = e.ExpiresAt.Unix()
			}
		}
	}
	return c
}

// internAll is names with each interned, or nil for none.
func internAll[T ~string](names []T) []T {
	if len(names) == 0 {
		return nil
	}
	out := make([]T, len(names))
	for i, n := range names {
		out[i] = T(unique.Make(string(n)).Value())
	}
	return out
}

// cacheable is the informers' transform: an M2MClient becomes a CachedClient.
func cacheable(obj any) (any, error) {
	if c, ok := obj.(*m2mv1alpha1.M2MClient); ok {
		return NewCachedClient(c), nil
	}
	return obj, nil
}

// statusVerdicts are the verdicts of a client's status MACs under one status key set.
type statusVerdicts struct {
	// keys is the set they were verified under: a set is never modified once loaded, and a new
	// Secret version is a new set, so that a rotation or a new enforcement verifies again.
	keys     *statusmac.Set
	clientID bool
	// entries are the verdicts of Status.AcceptedSecrets, by index.
	entries []bool
}

// verdictsUnder are the verdicts of c's status MACs under keys: memoized, since a CachedClient
// is one object version and never changes. Verdicts under another key set are never used: they
// are computed again and replace the memo.
func (c *CachedClient) verdictsUnder(keys *statusmac.Set) *statusVerdicts {
	if v := c.verdicts.Load(); v != nil && v.keys == keys {
		return v
	}
	v := c.verify(keys)
	c.verdicts.Store(v)
	return v
}

// verify verifies every MAC of c's status under keys with the statusmac package, on an
// M2MClient of just the fields that the MACs cover.
func (c *CachedClient) verify(keys *statusmac.Set) *statusVerdicts {
	obj := &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Name, UID: c.UID},
		Status:     m2mv1alpha1.M2MClientStatus{ClientID: c.Status.ClientID, ClientIDMAC: c.Status.ClientIDMAC},
	}
	v := &statusVerdicts{keys: keys, clientID: keys.VerifyClientID(obj), entries: make([]bool, len(c.Status.AcceptedSecrets))}
	for i := range c.Status.AcceptedSecrets {
		e := &c.Status.AcceptedSecrets[i]
		entry := &m2mv1alpha1.AcceptedSecret{Hash: e.Hash, MAC: e.MAC, PublicKey: e.PublicKey}
		if e.expiring() {
			entry.ExpiresAt = &metav1.Time{Time: time.Unix(e.expires, 0)}
		}
		v.entries[i] = keys.VerifyEntry(obj, entry)
	}
	return v
}

// CachedClient implements metav1.Object and runtime.Object for client-go's informer, which keys
// its store by namespace and name and tells updates from resyncs by resourceVersion. What the
// cache does not keep reads as empty, and setters do nothing: a CachedClient is never modified.
var (
	_ metav1.Object  = (*CachedClient)(nil)
	_ runtime.Object = (*CachedClient)(nil)
)

func (c *CachedClient) GetNamespace() string                { return c.Namespace }
func (c *CachedClient) GetName() string                     { return c.Name }
func (c *CachedClient) GetUID() types.UID                   { return c.UID }
func (c *CachedClient) GetResourceVersion() string          { return c.ResourceVersion }
func (c *CachedClient) GetCreationTimestamp() metav1.Time   { return metav1.Unix(c.created, 0) }
func (*CachedClient) SetNamespace(string)                   {}
func (*CachedClient) SetName(string)                        {}
func (*CachedClient) GetGenerateName() string               { return "" }
func (*CachedClient) SetGenerateName(string)                {}
func (*CachedClient) SetUID(types.UID)                      {}
func (*CachedClient) SetResourceVersion(string)             {}
func (*CachedClient) GetGeneration() int64                  { return 0 }
func (*CachedClient) SetGeneration(int64)                   {}
func (*CachedClient) GetSelfLink() string                   { return "" }
func (*CachedClient) SetSelfLink(string)                    {}
func (*CachedClient) SetCreationTimestamp(metav1.Time)      {}
func (*CachedClient) GetDeletionTimestamp() *metav1.Time    { return nil }
func (*CachedClient) SetDeletionTimestamp(*metav1.Time)     {}
func (*CachedClient) GetDeletionGracePeriodSeconds() *int64 { return nil }
func (*CachedClient) SetDeletionGracePeriodSeconds(*int64)  {}
func (*CachedClient) GetLabels() map[string]string          { return nil }
func (*CachedClient) SetLabels(map[string]string)           {}
func (*CachedClient) GetAnnotations() map[string]string     { return nil }
func (*CachedClient) SetAnnotations(map[string]string)      {}
func (*CachedClient) GetFinalizers() []string               { return nil }
func (*CachedClient) SetFinalizers([]string)                {}
func (*CachedClient) GetOwnerReferences() []metav1.OwnerReference {
	return nil
}
func (*CachedClient) SetOwnerReferences([]metav1.OwnerReference) {}
func (*CachedClient) GetManagedFields() []metav1.ManagedFieldsEntry {
	return nil
}
func (*CachedClient) SetManagedFields([]metav1.ManagedFieldsEntry) {}

// GetObjectKind is empty: the cache keeps no type meta.
func (*CachedClient) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject is a copy without the memo: the fields are never modified and are shared.
func (c *CachedClient) DeepCopyObject() runtime.Object {
	cp := &CachedClient{
		Namespace: c.Namespace, Name: c.Name, UID: c.UID, ResourceVersion: c.ResourceVersion, created: c.created, deleting: c.deleting,
		acceptsCurrentSecret: c.acceptsCurrentSecret, acceptsCurrentKey: c.acceptsCurrentKey, claims: c.claims, Spec: c.Spec, Status: c.Status,
	}
	return cp
}
