package v1alpha1

import (
	"encoding/json"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TokenClaims is a JSON object of static claims. In Go, use Claims; on the wire it is the plain
// object, for example {"team": "billing", "tier": 1}.
//
// The schema declares the registered claim names as properties so that the validation rule can
// see them and refuse them: a free-form object's keys are invisible to CEL.
// +kubebuilder:pruning:PreserveUnknownFields
// +kubebuilder:validation:XValidation:rule="!has(self.iss) && !has(self.sub) && !has(self.aud) && !has(self.exp) && !has(self.nbf) && !has(self.iat) && !has(self.jti) && !has(self.client_id) && !has(self.scope)",message="tokenClaims cannot set the registered claims iss, sub, aud, exp, nbf, iat, jti, client_id or scope"
type TokenClaims struct {
	// Claims are the custom claims by name.
	Claims map[string]apiextensionsv1.JSON `json:"-"`

	// The fields below exist only in the schema, for the rule above. They are never set.
	Iss      *intstr.IntOrString `json:"iss,omitempty"`
	Sub      *intstr.IntOrString `json:"sub,omitempty"`
	Aud      *intstr.IntOrString `json:"aud,omitempty"`
	Exp      *intstr.IntOrString `json:"exp,omitempty"`
	Nbf      *intstr.IntOrString `json:"nbf,omitempty"`
	Iat      *intstr.IntOrString `json:"iat,omitempty"`
	Jti      *intstr.IntOrString `json:"jti,omitempty"`
	ClientID *intstr.IntOrString `json:"client_id,omitempty"`
	Scope    *intstr.IntOrString `json:"scope,omitempty"`
}

// MarshalJSON writes Claims as a plain JSON object.
func (c TokenClaims) MarshalJSON() ([]byte, error) {
	if c.Claims == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(c.Claims)
}

// UnmarshalJSON reads a plain JSON object into Claims.
func (c *TokenClaims) UnmarshalJSON(data []byte) error {
	claims := map[string]apiextensionsv1.JSON{}
	if err := json.Unmarshal(data, &claims); err != nil {
		return err
	}
	*c = TokenClaims{Claims: claims}
	return nil
}
