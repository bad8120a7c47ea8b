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

// The admission policy refuses exactly the names that the token server drops: its list is
// ReservedClaims.
func TestTheAdmissionPolicyReservesTheClaimsTheTokenServerDrops(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "config", "admission", "reserved_token_claims.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var policy admissionregistrationv1.ValidatingAdmissionPolicy
	if err := yaml.Unmarshal([]byte(strings.Split(string(data), "\n---\n")[0]), &policy); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, v := range policy.Spec.Variables {
		if v.Name == "reserved" {
			for _, m := range regexp.MustCompile(`'([^']*)'`).FindAllStringSubmatch(v.Expression, -1) {
				listed = append(listed, m[1])
			}
		}
	}
	if !slices.Equal(listed, ReservedClaims) {
		t.Fatalf("the policy reserves %v, the token server %v", listed, ReservedClaims)
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
