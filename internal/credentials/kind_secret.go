package credentials

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// ClientSecret is a 256-bit secret that the client presents, kept in the Secret as client_secret
// and in status as its hash and last four characters.
type ClientSecret struct{}

// Form implements Kind.
func (ClientSecret) Form() Form { return FormSecret }

// DataKey implements Kind.
func (ClientSecret) DataKey() string { return m2mv1alpha1.SecretKeyClientSecret }

// Issue implements Kind.
func (ClientSecret) Issue() (string, error) { return NewSecret() }

// Fingerprint implements Kind.
func (ClientSecret) Fingerprint(value string) string { return Hash(value) }

// Entry implements Kind.
func (ClientSecret) Entry(value string, now time.Time) (m2mv1alpha1.AcceptedSecret, error) {
	return m2mv1alpha1.AcceptedSecret{CreatedAt: metav1.NewTime(now), Hash: Hash(value), LastFour: LastFour(value)}, nil
}

// Problem implements Kind: a secret must pass StrengthProblem.
func (ClientSecret) Problem(value string) string { return StrengthProblem(value) }

// Outdated implements Kind: any accepted secret fits.
func (ClientSecret) Outdated(*m2mv1alpha1.AcceptedSecret) string { return "" }
