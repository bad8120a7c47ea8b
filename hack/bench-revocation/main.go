// Command bench-revocation measures how long a disable takes to reach a running verifier: from
// the patch of spec.disabled: true to the first refusal (m2mauth.ErrRevoked) of the client's
// earlier token by a pkg/m2mauth Verifier with default settings, against a real API server,
// manager and token server. It repeats that N times (enabling the client again in between) and
// prints the percentiles. `make bench-revocation` runs it; results go in docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/hack/internal/system"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

const (
	ns       = "bench"
	audience = "https://payments.example.com"
	// poll is how often the verifier is asked while waiting for the refusal: the resolution of
	// the measurement.
	poll    = 5 * time.Millisecond
	timeout = time.Minute
)

func main() {
	n := flag.Int("tries", 50, "Disables measured.")
	flag.Parse()
	logf.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "bench-revocation:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	ctx, cancel := context.WithCancel(context.Background())
	sys, err := system.Start(ctx, ns, controllers.Options{})
	if err != nil {
		cancel()
		return err
	}
	// The manager and the token server stop before the control plane.
	defer func() { cancel(); _ = sys.Env.Stop() }()
	c, issuer := sys.Env.Client, sys.Issuer

	obj := &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "disabled-often"},
		Spec:       m2mv1alpha1.M2MClientSpec{Audiences: []m2mv1alpha1.Audience{audience}},
	}
	if err := c.Create(ctx, obj); err != nil {
		return err
	}
	if err := until(ctx, func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(obj.Status.Conditions, m2mv1alpha1.ConditionReady), nil
	}); err != nil {
		return fmt.Errorf("the client never became ready: %w", err)
	}
	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: obj.Status.SecretName}, secret); err != nil {
		return err
	}
	creds := &clientcredentials.Config{
		ClientID:     string(secret.Data[m2mv1alpha1.SecretKeyClientID]),
		ClientSecret: string(secret.Data[m2mv1alpha1.SecretKeyClientSecret]),
		TokenURL:     string(secret.Data[m2mv1alpha1.SecretKeyTokenURL]),
	}
	v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences(audience))
	if err != nil {
		return err
	}
	defer v.Close()

	var took []time.Duration
	for i := range n {
		// A token the verifier accepts: issued once the client is enabled and past the second
		// that the last disable revoked up to.
		var tok string
		if err := until(ctx, func() (bool, error) {
			t, err := creds.Token(ctx)
			if err != nil {
				return false, nil
			}
			_, err = v.Authenticate(ctx, t.AccessToken)
			tok = t.AccessToken
			return err == nil, nil
		}); err != nil {
			return fmt.Errorf("try %d: no accepted token: %w", i, err)
		}
		start := time.Now()
		if err := setDisabled(ctx, c, obj, true); err != nil {
			return err
		}
		if err := until(ctx, func() (bool, error) {
			_, err := v.Authenticate(ctx, tok)
			return errors.Is(err, m2mauth.ErrRevoked), nil
		}); err != nil {
			return fmt.Errorf("try %d: the verifier never refused the token: %w", i, err)
		}
		took = append(took, time.Since(start))
		if err := setDisabled(ctx, c, obj, false); err != nil {
			return err
		}
	}
	slices.Sort(took)
	pct := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	fmt.Printf("disable to first refusal at a running verifier, %d tries (poll every %s): p50 %s, p90 %s, p99 %s, max %s\n",
		len(took), poll, pct(0.50).Round(time.Millisecond), pct(0.90).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	return nil
}

func setDisabled(ctx context.Context, c client.Client, obj *m2mv1alpha1.M2MClient, disabled bool) error {
	patch := client.RawPatch("application/merge-patch+json", fmt.Appendf(nil, `{"spec":{"disabled":%t}}`, disabled))
	return c.Patch(ctx, obj, patch)
}

// until polls cond every poll until it holds, fails, or timeout passes.
func until(ctx context.Context, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := cond()
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}
