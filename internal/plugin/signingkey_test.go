package plugin

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// The signing keys are the install's, not the kubeconfig namespace's: without -n the command
// finds the Secret where the manager keeps it by default.
func TestRotateSigningKeyFindsTheInstallsSecretUnlessToldOtherwise(t *testing.T) {
	for sentence, tc := range map[string]struct {
		args []string
		want types.NamespacedName
	}{
		"no flag names the default Secret":    {nil, signingkeys.DefaultSecret},
		"-n and --secret name another Secret": {[]string{"-n", "auth-system", "--secret", "keys"}, types.NamespacedName{Namespace: "auth-system", Name: "keys"}},
		"--namespace alone keeps the name":    {[]string{"--namespace", "auth-system"}, types.NamespacedName{Namespace: "auth-system", Name: signingkeys.DefaultSecret.Name}},
	} {
		t.Run(sentence, func(t *testing.T) {
			flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
			f := registerFlags("rotate-signing-key", flags)
			if err := flags.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if got := f.signingKeySecret(); got != tc.want {
				t.Fatalf("Secret %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRotateSigningKeyTakesNoArgument(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), []string{"rotate-signing-key", "m2m-signing-keys"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "takes no argument") {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
}

// Without a manager to act, the command says so when its time is up, and it has sent only the
// annotation: the keys are as they were.
func TestRotateSigningKeySaysWhenNoManagerActed(t *testing.T) {
	set, err := signingkeys.Apply(&signingkeys.Set{}, signingkeys.Plan(&signingkeys.Set{}, signingkeys.DefaultPolicy, keyring.AskNone, time.Now()), signingkeys.DefaultPolicy, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := set.Encode()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: signingkeys.DefaultSecret.Namespace, Name: signingkeys.DefaultSecret.Name}, Data: map[string][]byte{signingkeys.DataKey: data}}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(s).Build()
	err = rotateSigningKey(context.Background(), c, io.Discard, signingkeys.DefaultSecret, true, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "is it running") {
		t.Fatalf("error %v, want one that asks whether the manager runs", err)
	}
	got := &corev1.Secret{}
	if err := c.Get(context.Background(), signingkeys.DefaultSecret, got); err != nil {
		t.Fatal(err)
	}
	if keyring.AskOf(got.Annotations) != keyring.AskEmergency || !bytes.Equal(got.Data[signingkeys.DataKey], data) {
		t.Fatalf("annotations %v; keys changed: %t", got.Annotations, !bytes.Equal(got.Data[signingkeys.DataKey], data))
	}
}
