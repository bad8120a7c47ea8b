package plugin

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// describedAudiences is what describe says of the audiences of obj's tokens: spec.audiences, or
// the token server's default audience. That is its --default-audience, which the plugin cannot
// read, or else its issuer, which the client's Secret names.
func describedAudiences(ctx context.Context, c client.Client, obj *m2mv1alpha1.M2MClient) string {
	if len(obj.Spec.Audiences) > 0 {
		auds := make([]string, 0, len(obj.Spec.Audiences))
		for _, a := range obj.Spec.Audiences {
			auds = append(auds, string(a))
		}
		return strings.Join(auds, " ")
	}
	iss := "its issuer URL"
	s := &corev1.Secret{}
	// Whoever may not read the Secret still gets the rule, without the URL.
	if obj.Status.SecretName != "" && c.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: obj.Status.SecretName}, s) == nil {
		if v := string(s.Data[m2mv1alpha1.SecretKeyIssuer]); v != "" {
			iss = v
		}
	}
	return fmt.Sprintf("(default: the token server's default audience: %s, unless it runs with --default-audience)", iss)
}

// describedTokenTTL is the lifetime of obj's tokens.
func describedTokenTTL(obj *m2mv1alpha1.M2MClient) string {
	if obj.Spec.TokenTTL == nil {
		return shortDuration(m2mv1alpha1.DefaultTokenTTL) + " (default)"
	}
	return shortDuration(obj.Spec.TokenTTL.Duration)
}

// shortDuration writes 15m and 1h rather than Go's 15m0s and 1h0m0s.
func shortDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}
