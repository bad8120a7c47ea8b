package tokenserver

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// RefusalsPath is where the owner of a client reads the refusals this replica remembers of it
// (`kubectl m2m why`), below the issuer: GET ?namespace=NS&name=NAME with the caller's
// Kubernetes bearer token, which the API server reviews. The answer is a RefusalsAnswer.
const RefusalsPath = "/refusals"

// RefusalsAnswer is what RefusalsPath answers a caller who may get the client.
type RefusalsAnswer struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Replica is the token server process that answers: each remembers the refusals it made.
	Replica string `json:"replica"`
	// Since is when the replica started remembering.
	Since time.Time `json:"since"`
	// Kept is how many refusals per client a replica keeps, the latest.
	Kept int `json:"kept"`
	// Total is how many requests of the client this replica refused since Since.
	Total uint64 `json:"total"`
	// Refusals are the latest, oldest first.
	Refusals []Refusal `json:"refusals"`
}

// Refusal is one refused request of a client.
type Refusal struct {
	Time time.Time `json:"time"`
	// Endpoint is token or introspect.
	Endpoint string `json:"endpoint"`
	// Reason is the label of m2m_token_failures_total; Error is the OAuth error the caller got.
	Reason string `json:"reason"`
	Error  string `json:"error"`
	// Method is how the request authenticated: client_secret_basic, client_secret_post,
	// private_key_jwt, workload_token (a ServiceAccount or federated token) or none.
	Method string `json:"method"`
	// From is the address of the connection.
	From string `json:"from"`
	// Help says what the reason means and what to do.
	Help string `json:"help"`
}

// Access is the API server's verdict on a caller of RefusalsPath.
type Access int

const (
	// AccessAllowed: the token authenticates, and its user may get the client.
	AccessAllowed Access = iota
	// AccessUnauthenticated: the API server does not accept the token.
	AccessUnauthenticated
	// AccessForbidden: the token's user may not get the client.
	AccessForbidden
)

// AccessReviewer asks the API server about a caller of RefusalsPath.
type AccessReviewer interface {
	// Review says whether token authenticates and whether its user may get the M2MClient key.
	Review(ctx context.Context, token string, key types.NamespacedName) (Access, error)
}

// KubernetesAccess reviews a caller with a TokenReview and a SubjectAccessReview for `get` on
// the M2MClient: the RBAC a reader of the client has, and nothing the API server stores.
type KubernetesAccess struct {
	Client kubernetes.Interface
}

// Review implements AccessReviewer.
func (k KubernetesAccess) Review(ctx context.Context, token string, key types.NamespacedName) (Access, error) {
	tr, err := k.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		return 0, fmt.Errorf("a TokenReview of the caller failed: %w", err)
	}
	if !tr.Status.Authenticated {
		return AccessUnauthenticated, nil
	}
	u := tr.Status.User
	extra := make(map[string]authorizationv1.ExtraValue, len(u.Extra))
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: key.Namespace, Name: key.Name, Verb: "get",
				Group: m2mv1alpha1.GroupVersion.Group, Resource: "m2mclients",
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return 0, fmt.Errorf("a SubjectAccessReview of the caller failed: %w", err)
	}
	if !sar.Status.Allowed {
		return AccessForbidden, nil
	}
	return AccessAllowed, nil
}

// The reviews behind RefusalsPath: a verdict serves its caller for accessTTL, so that a
// runbook's repeated `kubectl m2m why` costs the API server little and a revoked grant stops
// working soon; and reviews are at most accessRate a second for every caller together, so that
// a flood of made-up tokens cannot turn into load on the API server (its callers get 429).
const (
	accessCacheSize     = 4096
	accessTTL           = 10 * time.Second
	accessRate          = 20
	accessBurst         = 40
	accessReviewTimeout = 5 * time.Second
)

var errAccessBusy = errors.New("too many callers to review at once")

// refusalAccess caches and limits the reviews of an AccessReviewer.
type refusalAccess struct {
	reviewer AccessReviewer
	clock    clock.PassiveClock
	verdicts *cache.LRUExpireCache
	limit    *rate.Limiter
}

func newRefusalAccess(reviewer AccessReviewer, clk clock.PassiveClock) *refusalAccess {
	return &refusalAccess{
		reviewer: reviewer,
		clock:    clk,
		verdicts: cache.NewLRUExpireCacheWithClock(accessCacheSize, clk),
		limit:    rate.NewLimiter(accessRate, accessBurst),
	}
}

// verdictKey is what a verdict is cached under: a hash, so that no token is kept.
func verdictKey(token string, key types.NamespacedName) [sha256.Size]byte {
	return sha256.Sum256([]byte(token + "\x00" + key.Namespace + "\x00" + key.Name))
}

func (a *refusalAccess) check(ctx context.Context, token string, key types.NamespacedName) (Access, error) {
	k := verdictKey(token, key)
	if v, ok := a.verdicts.Get(k); ok {
		return v.(Access), nil
	}
	if !a.limit.AllowN(a.clock.Now(), 1) {
		return 0, errAccessBusy
	}
	ctx, cancel := context.WithTimeout(ctx, accessReviewTimeout)
	defer cancel()
	v, err := a.reviewer.Review(ctx, token, key)
	if err != nil {
		return 0, err
	}
	a.verdicts.Add(k, v, accessTTL)
	return v, nil
}

// refusalsOfClient serves RefusalsPath. A caller who may not get the client learns nothing of
// it, not even whether it exists: the answer depends on the caller's RBAC alone.
func (s *Server) refusalsOfClient(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	refuse := func(status int, code, message string) {
		writeJSON(w, status, map[string]string{"error": code, "message": message})
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		refuse(http.StatusMethodNotAllowed, "method", "use GET")
		return
	}
	if s.access.reviewer == nil {
		refuse(http.StatusNotFound, "not_served", "this token server serves no refusals")
		return
	}
	q := r.URL.Query()
	key := types.NamespacedName{Namespace: q.Get("namespace"), Name: q.Get("name")}
	if len(validation.IsDNS1123Label(key.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(key.Name)) > 0 {
		refuse(http.StatusBadRequest, "bad_request", "namespace and name must be an M2MClient's namespace and name")
		return
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="m2m"`)
		refuse(http.StatusUnauthorized, "unauthenticated", "send a Kubernetes bearer token of someone who may get the M2MClient")
		return
	}
	// Every made-up token, and every client a caller may not get, costs a review and a share
	// of the reviews all callers have (accessRate): a source whose requests the API server keeps
	// refusing is held to the limit of failed authentications, as at the token endpoint, before
	// it costs either.
	from := s.cfg.ClientAddresses.of(r)
	if wait, over := s.sources.refused(from); over {
		w.Header().Set("Retry-After", strconv.FormatInt(retryAfter(wait), 10))
		refuse(http.StatusTooManyRequests, ErrTooManyRequests, "too many failed authentications from this address; retry after the time in Retry-After")
		return
	}
	verdict, err := s.access.check(r.Context(), token, key)
	switch {
	case errors.Is(err, errAccessBusy):
		w.Header().Set("Retry-After", "1")
		refuse(http.StatusTooManyRequests, "busy", "too many callers at once; retry in a second")
		return
	case err != nil:
		s.cfg.Log.Error(err, "could not review a caller of the refusals endpoint")
		refuse(http.StatusServiceUnavailable, "unavailable", "the token server could not ask the API server who the caller is; retry, and if it lasts, see the token server's log")
		return
	case verdict == AccessUnauthenticated:
		s.sources.failed(from)
		w.Header().Set("WWW-Authenticate", `Bearer realm="m2m"`)
		refuse(http.StatusUnauthorized, "unauthenticated", "the API server does not accept the bearer token")
		return
	case verdict != AccessAllowed:
		s.sources.failed(from)
		refuse(http.StatusForbidden, "forbidden", fmt.Sprintf("the caller may not get m2mclients %s in namespace %s", key.Name, key.Namespace))
		return
	}
	writeJSON(w, http.StatusOK, s.refusalsAnswer(key))
}

func (s *Server) refusalsAnswer(key types.NamespacedName) RefusalsAnswer {
	recs, total := s.refusals.recall(key)
	out := RefusalsAnswer{
		Namespace: key.Namespace, Name: key.Name, Replica: s.cfg.Replica,
		Since: s.refusals.since.UTC(), Kept: RefusalsPerClient, Total: total, Refusals: make([]Refusal, 0, len(recs)),
	}
	for _, rec := range recs {
		out.Refusals = append(out.Refusals, Refusal{
			Time: time.Unix(0, rec.at).UTC(), Endpoint: endpointName(rec.introspect), Reason: rec.reason.name,
			Error: rec.reason.code, Method: rec.method.String(), From: rec.from.String(), Help: rec.reason.help,
		})
	}
	return out
}
