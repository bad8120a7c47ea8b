package v1alpha1

import (
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/m2m-dev/m2m-operator/internal/placeholder"
)

// The API server refuses the templates the manager cannot render, and only those: the CRD's
// pattern is placeholder's over CredentialsSecretKeys, and the CEL rules that name the manager's
// entries list exactly CredentialsSecretKeys.
func TestTheCRDDecidesSecretKeysAndTemplatesAsTheManagerDoes(t *testing.T) {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(repoFile(t, "config/crd/bases/m2m.dev_m2mclients.yaml"), &crd); err != nil {
		t.Fatal(err)
	}
	secret := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["secret"]
	templates, keys := secret.Properties["templates"], secret.Properties["keys"]
	if want := placeholder.Pattern(placeholder.Names(CredentialsSecretKeys...)); templates.AdditionalProperties.Schema.Pattern != want {
		t.Errorf("the CRD's template pattern is\n%s\nplaceholder's is\n%s", templates.AdditionalProperties.Schema.Pattern, want)
	}
	list := "['" + strings.Join(CredentialsSecretKeys, "', '") + "']"
	naming := 0
	for _, r := range append(templates.XValidations, keys.XValidations...) {
		if strings.Contains(r.Rule, " in [") {
			naming++
			if !strings.Contains(r.Rule, list) {
				t.Errorf("rule %q does not list the manager's entries %s", r.Rule, list)
			}
		}
	}
	if naming != 3 {
		t.Errorf("%d rules name the manager's entries, want 3 (keys' names and copies, templates' names)", naming)
	}
}
