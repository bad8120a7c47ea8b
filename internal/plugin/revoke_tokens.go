package plugin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// revokeTokens sets the client's spec.revokeTokensIssuedBefore to the second after now: tokens
// carry iat in whole seconds, and one issued earlier in this second must be refused too. A
// token issued later in this second is refused as well; pods that send tokens with
// m2mauth.NewClient get another one when a resource server refuses it.
func revokeTokens(ctx context.Context, c client.Client, out io.Writer, key types.NamespacedName, now time.Time) error {
	obj, err := getClient(ctx, c, key)
	if err != nil {
		return err
	}
	before := metav1.NewTime(now.Truncate(time.Second).Add(time.Second))
	if t := obj.Spec.RevokeTokensIssuedBefore; t != nil && !t.Before(&before) {
		before = *t // never moves an administrator's later revocation back
	}
	patch := client.MergeFromWithOptions(obj.DeepCopy(), client.MergeFromWithOptimisticLock{})
	obj.Spec.RevokeTokensIssuedBefore = &before
	if err := c.Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("M2MClient %s: %w", key, err)
	}
	_, err = fmt.Fprintf(out, "m2mclient/%s: tokens issued before %s are revoked (spec.revokeTokensIssuedBefore). "+
		"Resource servers that verify with pkg/m2mauth refuse them within seconds; other verifiers accept them until they expire. "+
		"Its credentials still work: kubectl m2m rotate %s --revoke-previous refuses them.\n",
		key.Name, before.UTC().Format(time.RFC3339), key.Name)
	return err
}

// clusterNow is the later of local and the API server's clock (its Date header, in whole
// seconds): a laptop whose clock is behind must not leave the tokens of its last minutes out of a
// revocation. It is local when the API server cannot be asked.
func clusterNow(ctx context.Context, cfg *rest.Config, local time.Time) time.Time {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return local
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+"/version", nil)
	if err != nil {
		return local
	}
	resp, err := hc.Do(req)
	if err != nil {
		return local
	}
	_ = resp.Body.Close()
	server, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil || !server.After(local) {
		return local
	}
	return server
}
