package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestResolveClientID(t *testing.T) {
	withSpec := clientWith()
	withSpec.Spec.ClientID = "imported"
	withStatus := clientWith(entry(current, nil))
	lost := clientWith()
	younger := ownedSecret(current)
	younger.Data[m2mv1alpha1.SecretKeyClientID] = []byte("m2m-someone-elses")
	for sentence, tc := range map[string]struct {
		obj    *m2mv1alpha1.M2MClient
		secret *corev1.Secret
		bound  []string
		want   string
		source IDSource
	}{
		"an imported client ID in the spec wins":                                    {withSpec, ownedSecret(current), nil, "imported", IDFromSpec},
		"the client ID in status is kept":                                           {withStatus, nil, nil, "m2m-id", IDFromStatus},
		"a lost status takes the ID its Secret names when a binding gives it to it": {lost, ownedSecret(current), []string{"m2m-old", "m2m-id"}, "m2m-id", IDFromBinding},
		"a lost status never takes an ID only its own Secret names":                 {lost, younger, nil, "", IDNew},
		"a lost status takes the newest bound ID when its Secret names another":     {lost, younger, []string{"m2m-old", "m2m-newer"}, "m2m-newer", IDFromBinding},
		"a re-created client gets the ID bound to its namespace and name":           {clientWith(), nil, []string{"m2m-id"}, "m2m-id", IDFromBinding},
		"a new client gets a generated ID":                                          {clientWith(), nil, nil, "", IDNew},
		"a re-created client takes the bound ID that its orphaned Secret names":     {clientWith(), orphanSecret(nil), []string{"m2m-id", "m2m-newer"}, "m2m-id", IDFromBinding},
		"a forged orphan naming an unbound ID leaves the newest bound ID":           {clientWith(), orphanSecret(nil), []string{"m2m-old", "m2m-newer"}, "m2m-newer", IDFromBinding},
		"a forged orphan never gives a client with no binding the ID it names":      {clientWith(), orphanSecret(nil), nil, "", IDNew},
	} {
		t.Run(sentence, func(t *testing.T) {
			if got, source := ResolveClientID(tc.obj, tc.secret, tc.bound); got != tc.want || source != tc.source {
				t.Fatalf("got %q from %s, want %q from %s", got, source, tc.want, tc.source)
			}
		})
	}
}
