package plugin

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// --start, --complete, --cancel and --revoke-previous each ask for something else; two at once
// is a mistake in the command line (exit code 2), found before anything is changed.
func TestRotateRefusesTwoOfStartCompleteCancelAndRevokePrevious(t *testing.T) {
	for _, args := range [][]string{
		{"--start", "--complete"}, {"--complete", "--cancel"}, {"--start", "--cancel"}, {"--start", "--revoke-previous"}, {"--cancel", "--revoke-previous"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Run(context.Background(), append([]string{"rotate", "c", "--kubeconfig", "/nonexistent"}, args...), &stdout, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), "exclude each other") {
				t.Fatalf("exit code %d, stderr %q; want 2 and that the flags exclude each other", code, stderr.String())
			}
		})
	}
}

// describe marks the next credential of a started rotation, so that an administrator tells it
// from the current one.
func TestDescribeMarksTheNextCredentialOfAStartedRotation(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "c"}}
	created := metav1.NewTime(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	obj.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{
		{Hash: "sha256:" + strings.Repeat("a", 43), LastFour: "aaaa", CreatedAt: created},
		{Hash: "sha256:" + strings.Repeat("b", 43), LastFour: "bbbb", CreatedAt: created},
	}
	obj.Status.HolderRotation = &m2mv1alpha1.HolderRotationStatus{ID: "r1", State: m2mv1alpha1.HolderRotationStarted, NextHash: "sha256:" + strings.Repeat("b", 43)}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(obj).Build()
	var out bytes.Buffer
	if err := describe(context.Background(), c, &out, types.NamespacedName{Namespace: "team-a", Name: "c"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`(?m)secret \.\.\.aaaa\s.*never \(current\)$`, `(?m)secret \.\.\.bbbb\s.*never \(next: rotation r1 started`} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("describe lacks %s:\n%s", want, out.String())
		}
	}
}
