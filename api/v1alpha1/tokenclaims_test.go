package v1alpha1

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// policyList returns the names quoted in the expression of the variable of the admission policy
// in config/admission/file.
func policyList(t *testing.T, file, variable string) []string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "config", "admission", file))
	if err != nil {
		t.Fatal(err)
	}
	var policy admissionregistrationv1.ValidatingAdmissionPolicy
	if err := yaml.Unmarshal([]byte(strings.Split(string(data), "\n---\n")[0]), &policy); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, v := range policy.Spec.Variables {
		if v.Name == variable {
			for _, m := range regexp.MustCompile(`'([^']*)'`).FindAllStringSubmatch(v.Expression, -1) {
				listed = append(listed, m[1])
			}
		}
	}
	return listed
}

// The admission policy refuses exactly the names that the token server drops: its list is
// ReservedClaims.
func TestTheAdmissionPolicyReservesTheClaimsTheTokenServerDrops(t *testing.T) {
	if listed := policyList(t, "reserved_token_claims.yaml", "reserved"); !slices.Equal(listed, ReservedClaims) {
		t.Fatalf("the policy reserves %v, the token server %v", listed, ReservedClaims)
	}
}

// The guarded-claims policy guards exactly GuardedClaims, in the lower case it compares in.
func TestTheAdmissionPolicyGuardsTheGuardedClaims(t *testing.T) {
	if listed := policyList(t, "guarded_token_claims.yaml", "guarded"); !slices.Equal(listed, GuardedClaims) {
		t.Fatalf("the policy guards %v, the API lists %v", listed, GuardedClaims)
	}
	for _, name := range GuardedClaims {
		if name != strings.ToLower(name) || IsReservedClaim(name) {
			t.Errorf("%q is not lower case, or is also reserved", name)
		}
	}
}

func TestIsReservedClaimIgnoresCase(t *testing.T) {
	for name, want := range map[string]bool{
		"sub": true, "SUB": true, "Client_ID": true, "EXP": true, "Scope": true, "cNf": true,
		"ſub": true, "ſcope": true, "to\u212Aen_type": true, "clıent_ıd": true, "İss": true,
		"team": false, "subject": false, "client-id": false, "": false,
	} {
		if got := IsReservedClaim(name); got != want {
			t.Errorf("IsReservedClaim(%q) = %v, want %v", name, got, want)
		}
	}
}
