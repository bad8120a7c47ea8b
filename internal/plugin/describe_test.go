package plugin

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// describe shows the audiences and lifetime that the client's tokens get: its own, or the token
// server's defaults, saying which.
func TestDescribeShowsTheAudiencesAndTheLifetimeOfTheClientsTokens(t *testing.T) {
	own := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "own"}, Spec: m2mv1alpha1.M2MClientSpec{
		Audiences: []m2mv1alpha1.Audience{"https://billing.example.com", "https://payments.example.com"},
		TokenTTL:  &metav1.Duration{Duration: 15 * time.Minute},
	}}
	defaults := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "defaults"}}
	defaults.Status.SecretName = "defaults-credentials"
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "defaults-credentials"},
		Data: map[string][]byte{m2mv1alpha1.SecretKeyIssuer: []byte("https://m2m-token-server.m2m-system.svc")}}
	unreadable := defaults.DeepCopy()
	unreadable.Name, unreadable.Status.SecretName = "unreadable", "not-there"
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(own, defaults, secret, unreadable).Build()

	for sentence, tc := range map[string]struct {
		name string
		want []string
	}{
		"a client's own audiences and lifetime are shown": {"own", []string{
			`(?m)^Audiences: +https://billing.example.com https://payments.example.com$`, `(?m)^Token lifetime: +15m$`}},
		"a client without audiences gets the default audience, the issuer its Secret names": {"defaults", []string{
			`(?m)^Audiences: +\(default: the token server's default audience: https://m2m-token-server.m2m-system.svc, unless it runs with --default-audience\)$`,
			`(?m)^Token lifetime: +1h \(default\)$`}},
		"without its Secret the default audience is described, not named": {"unreadable", []string{
			`(?m)^Audiences: +\(default: the token server's default audience: its issuer URL, unless it runs with --default-audience\)$`}},
	} {
		t.Run(sentence, func(t *testing.T) {
			var out bytes.Buffer
			if err := describe(context.Background(), c, &out, types.NamespacedName{Namespace: "team-a", Name: tc.name}); err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.want {
				if !regexp.MustCompile(want).MatchString(out.String()) {
					t.Errorf("describe lacks %s:\n%s", want, out.String())
				}
			}
		})
	}
}
