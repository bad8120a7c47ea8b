package manager

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

const appEnv = "CLIENT_ID=${client_id}\nCLIENT_SECRET=${client_secret}\nTOKEN_URL=${token_url}\n"

// updateClient applies mutate to the stored client, retrying on conflicts with the manager's
// status writes.
func updateClient(t *testing.T, obj *m2mv1alpha1.M2MClient, mutate func(*m2mv1alpha1.M2MClient)) error {
	t.Helper()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &m2mv1alpha1.M2MClient{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			return err
		}
		mutate(cur)
		return env.Client.Update(ctx, cur)
	})
}

// secretVersions delivers every version of the Secret ns/name that the API server stores from
// now on, in order, so that a test sees the versions a poll would miss.
func secretVersions(t *testing.T, ns, name string) <-chan watch.Event {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &corev1.SecretList{}, client.InNamespace(ns), client.MatchingFields{"metadata.name": name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w.ResultChan()
}

// eachVersion checks every version of versions until done accepts one.
func eachVersion(t *testing.T, versions <-chan watch.Event, check func(*corev1.Secret), done func(*corev1.Secret) bool) *corev1.Secret {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case ev, ok := <-versions:
			if !ok {
				t.Fatal("the watch of the Secret ended")
			}
			s, ok := ev.Object.(*corev1.Secret)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			check(s)
			if done(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("no version of the Secret in %s reached the state the test waits for", wait)
		}
	}
}

// derivedConsistent fails the test if a version of the Secret carries copies or an app.env that
// are not the manager's entries of that same version: a derived entry never lags its source.
func derivedConsistent(t *testing.T) func(*corev1.Secret) {
	return func(s *corev1.Secret) {
		t.Helper()
		id, secret := string(s.Data[m2mv1alpha1.SecretKeyClientID]), string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
		tokenURL := string(s.Data[m2mv1alpha1.SecretKeyTokenURL])
		want := fmt.Sprintf("CLIENT_ID=%s\nCLIENT_SECRET=%s\nTOKEN_URL=%s\n", id, secret, tokenURL)
		if id == "" || secret == "" || string(s.Data["CLIENT_ID"]) != id || string(s.Data["CLIENT_SECRET"]) != secret ||
			string(s.Data["OAUTH_TOKEN_URL"]) != tokenURL || string(s.Data["app.env"]) != want {
			t.Fatalf("version %s of the Secret carries derived entries that are not its own (keys %v)", s.ResourceVersion, slices.Sorted(maps.Keys(s.Data)))
		}
	}
}

func TestRenamedKeysAndTemplatesChangeWithTheSecretAndLeaveNoStaleEntries(t *testing.T) {
	ns := namespace(t)
	versions := secretVersions(t, ns, "app-credentials")
	obj := newClient(ns, "app")
	obj.Spec.Secret.Keys = map[string]m2mv1alpha1.SecretDataKey{"client_id": "CLIENT_ID", "client_secret": "CLIENT_SECRET", "token_url": "OAUTH_TOKEN_URL"}
	obj.Spec.Secret.Templates = map[string]m2mv1alpha1.SecretDataTemplate{"app.env": appEnv, "price": "$$5", "pub": "${public_token_url}"}
	create(t, obj)
	obj = waitReady(t, ns, "app", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := eachVersion(t, versions, derivedConsistent(t), func(*corev1.Secret) bool { return true })
	first := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	if string(s.Data["price"]) != "$5" {
		t.Errorf("price %q, want $5", s.Data["price"])
	}
	if _, ok := s.Data["pub"]; ok {
		t.Error("a template naming public_token_url exists in an install without a public door")
	}
	if !acceptedNow(obj, first) {
		t.Fatal("the secret is not accepted")
	}

	// Someone else's entry, which the manager leaves alone.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s := secretOf(t, ns, "app-credentials")
		s.Data["theirs"] = []byte("kept")
		return env.Client.Update(ctx, s)
	}); err != nil {
		t.Fatal(err)
	}
	if err := updateClient(t, obj, func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.Trigger = "r1" }); err != nil {
		t.Fatal(err)
	}
	s = eachVersion(t, versions, derivedConsistent(t), func(s *corev1.Secret) bool {
		return string(s.Data[m2mv1alpha1.SecretKeyClientSecret]) != first
	})
	second := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	if got := waitReady(t, ns, "app", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady); !acceptedNow(got, second) {
		t.Fatal("the rotated secret the copies carry is not accepted")
	}

	if err := updateClient(t, obj, func(o *m2mv1alpha1.M2MClient) {
		o.Spec.Secret.Keys = map[string]m2mv1alpha1.SecretDataKey{"client_id": "APP_CLIENT_ID"}
		o.Spec.Secret.Templates = nil
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		s := secretOf(t, ns, "app-credentials")
		for _, stale := range []string{"CLIENT_ID", "CLIENT_SECRET", "OAUTH_TOKEN_URL", "app.env", "price"} {
			if _, ok := s.Data[stale]; ok {
				return fmt.Errorf("%s is still in the Secret", stale)
			}
		}
		if string(s.Data["APP_CLIENT_ID"]) != string(s.Data[m2mv1alpha1.SecretKeyClientID]) || string(s.Data["theirs"]) != "kept" ||
			string(s.Data[m2mv1alpha1.SecretKeyClientSecret]) != second {
			return fmt.Errorf("keys %v", slices.Sorted(maps.Keys(s.Data)))
		}
		return nil
	})
}

// private_key is the longest value in a Secret without ca.crt: 8 templates repeating it render
// to far more than MaxDerivedSecretBytes, which must not reach the API server or the cache.
func TestDerivedEntriesTooLargeToWriteLeaveTheClientNotReadyWithTheReason(t *testing.T) {
	ns := namespace(t)
	obj := newClient(ns, "big")
	obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{}
	obj.Spec.Secret.Templates = map[string]m2mv1alpha1.SecretDataTemplate{}
	for i := range 8 {
		obj.Spec.Secret.Templates[fmt.Sprintf("k%d", i)] = m2mv1alpha1.SecretDataTemplate(strings.Repeat("${private_key}", 2048/len("${private_key}")))
	}
	create(t, obj)
	got := waitReady(t, ns, "big", metav1.ConditionFalse, m2mv1alpha1.ReasonSecretWriteFailed)
	if msg := meta.FindStatusCondition(got.Status.Conditions, m2mv1alpha1.ConditionReady).Message; !strings.Contains(msg, "more than 65536") {
		t.Fatalf("Ready says %q", msg)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "big-credentials"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the Secret was written: %v", err)
	}
}

func TestTheAPIServerRejectsBadSecretKeysAndTemplates(t *testing.T) {
	ns := namespace(t)
	templates := map[string]m2mv1alpha1.SecretDataTemplate{}
	for i := range 9 {
		templates[fmt.Sprintf("t%d", i)] = "x"
	}
	for name, tc := range map[string]struct {
		keys      map[string]m2mv1alpha1.SecretDataKey
		templates map[string]m2mv1alpha1.SecretDataTemplate
		want      string
	}{
		"a copy of an entry the manager does not write": {keys: map[string]m2mv1alpha1.SecretDataKey{"password": "PASSWORD"}, want: "copies the manager's entries only"},
		"a copy named after the manager's entry":        {keys: map[string]m2mv1alpha1.SecretDataKey{"client_id": "client_secret"}, want: "cannot be named after an entry of the manager's"},
		"a copy named ..":                               {keys: map[string]m2mv1alpha1.SecretDataKey{"client_id": ".."}, want: "cannot be named after"},
		"a copy named with a slash":                     {keys: map[string]m2mv1alpha1.SecretDataKey{"client_id": "../etc"}, want: "spec.secret.keys.client_id"},
		"two entries copied under one name":             {keys: map[string]m2mv1alpha1.SecretDataKey{"client_id": "X", "issuer": "X"}, want: "two entries cannot be copied under one name"},
		"a template with an unknown placeholder":        {templates: map[string]m2mv1alpha1.SecretDataTemplate{"a": "${password}"}, want: "spec.secret.templates.a"},
		"a template with a lone dollar":                 {templates: map[string]m2mv1alpha1.SecretDataTemplate{"a": "HOME=$HOME"}, want: "spec.secret.templates.a"},
		"a Go template":                                 {templates: map[string]m2mv1alpha1.SecretDataTemplate{"a": "{{ .Secret }}${"}, want: "spec.secret.templates.a"},
		"a template over 2048 characters":               {templates: map[string]m2mv1alpha1.SecretDataTemplate{"a": m2mv1alpha1.SecretDataTemplate(strings.Repeat("x", 2049))}, want: "spec.secret.templates.a"},
		"nine templates":                                {templates: templates, want: "must have at most 8 items"},
		"a template named with a space":                 {templates: map[string]m2mv1alpha1.SecretDataTemplate{"app env": "x"}, want: "must be a Secret data key"},
		"a template named after the manager's entry":    {templates: map[string]m2mv1alpha1.SecretDataTemplate{"client_secret": "x"}, want: "cannot be named after an entry of the manager's"},
		"a template and a copy of one name": {keys: map[string]m2mv1alpha1.SecretDataKey{"client_id": "app.env"},
			templates: map[string]m2mv1alpha1.SecretDataTemplate{"app.env": "x"}, want: "each entry of the Secret has one source"},
	} {
		t.Run(name, func(t *testing.T) {
			obj := newClient(ns, "invalid")
			obj.Spec.Secret.Keys, obj.Spec.Secret.Templates = tc.keys, tc.templates
			err := env.Client.Create(ctx, obj)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create error %v, want Invalid mentioning %q", err, tc.want)
			}
		})
	}
}

// A holder rotation's next credential is copied in the write that issues it, and its copy
// leaves with it when the rotation completes.
func TestACopyOfTheNextCredentialFollowsAHolderRotation(t *testing.T) {
	ns := namespace(t)
	versions := secretVersions(t, ns, "holder-credentials")
	obj := newClient(ns, "holder")
	obj.Spec.Secret.Keys = map[string]m2mv1alpha1.SecretDataKey{"next_client_secret": "NEXT_CLIENT_SECRET", "client_secret": "CLIENT_SECRET"}
	create(t, obj)
	obj = waitReady(t, ns, "holder", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	copies := func(s *corev1.Secret) {
		t.Helper()
		if string(s.Data["NEXT_CLIENT_SECRET"]) != string(s.Data["next_client_secret"]) || string(s.Data["CLIENT_SECRET"]) != string(s.Data["client_secret"]) {
			t.Fatalf("version %s of the Secret carries copies that are not its own (keys %v)", s.ResourceVersion, slices.Sorted(maps.Keys(s.Data)))
		}
	}
	if err := updateClient(t, obj, func(o *m2mv1alpha1.M2MClient) {
		o.Spec.Rotation.Holder = &m2mv1alpha1.HolderRotation{ID: "h1", State: m2mv1alpha1.HolderRotationStarted}
	}); err != nil {
		t.Fatal(err)
	}
	s := eachVersion(t, versions, copies, func(s *corev1.Secret) bool { return len(s.Data["next_client_secret"]) > 0 })
	next := string(s.Data["next_client_secret"])
	if err := updateClient(t, obj, func(o *m2mv1alpha1.M2MClient) {
		o.Spec.Rotation.Holder = &m2mv1alpha1.HolderRotation{ID: "h1", State: m2mv1alpha1.HolderRotationCompleted}
	}); err != nil {
		t.Fatal(err)
	}
	s = eachVersion(t, versions, copies, func(s *corev1.Secret) bool { return string(s.Data["client_secret"]) == next })
	if _, ok := s.Data["NEXT_CLIENT_SECRET"]; ok {
		t.Fatal("the copy of the next credential outlived it")
	}
}
