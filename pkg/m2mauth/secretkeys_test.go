package m2mauth

import (
	"testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// The token source reads the files the manager writes: its copy of the key names is the API's.
func TestTheTokenSourceReadsTheSecretKeysTheAPIDefines(t *testing.T) {
	for mine, api := range map[string]string{
		secretKeyClientID:       m2mv1alpha1.SecretKeyClientID,
		secretKeyClientSecret:   m2mv1alpha1.SecretKeyClientSecret,
		secretKeyPrivateKey:     m2mv1alpha1.SecretKeyPrivateKey,
		secretKeyTokenURL:       m2mv1alpha1.SecretKeyTokenURL,
		secretKeyPublicTokenURL: m2mv1alpha1.SecretKeyPublicTokenURL,
		secretKeyIssuer:         m2mv1alpha1.SecretKeyIssuer,
		secretKeyCA:             m2mv1alpha1.SecretKeyCA,
	} {
		if mine != api {
			t.Errorf("m2mauth reads %q where the API defines %q", mine, api)
		}
	}
}
