package v1alpha1

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/m2m-dev/m2m-operator/internal/placeholder"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
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

func TestRenderTokenClaims(t *testing.T) {
	j := func(s string) apiextensionsv1.JSON { return apiextensionsv1.JSON{Raw: []byte(s)} }
	meta := map[string]apiextensionsv1.JSON{
		"api_version": j(`"v2"`), "tier": j(`3`), "beta": j(`true`), "nothing": j(`null`),
		"team": j(`{"name":"billing"}`), "long": j(`"` + strings.Repeat("x", 1500) + `"`),
	}
	for name, tc := range map[string]struct {
		claims  map[string]string
		want    map[string]string
		wantErr error // nil: any error is a failure; errAny: some error is expected
	}{
		"a string claim names a metadata string": {
			claims: map[string]string{"version": `"${api_version}"`}, want: map[string]string{"version": `"v2"`}},
		"literal text surrounds a placeholder and $$ stands for $": {
			claims: map[string]string{"v": `"api-${api_version} costs $$5"`}, want: map[string]string{"v": `"api-v2 costs $5"`}},
		"a number or boolean of metadata stands for its JSON text, and the claim stays a string": {
			claims: map[string]string{"t": `"${tier}/${beta}"`}, want: map[string]string{"t": `"3/true"`}},
		"values that are not top-level strings are kept as written": {
			claims: map[string]string{"n": `5`, "l": `["${api_version}"]`, "o": `{"v":"${api_version}"}`},
			want:   map[string]string{"n": `5`, "l": `["${api_version}"]`, "o": `{"v":"${api_version}"}`}},
		"a placeholder that names no metadata entry fails": {
			claims: map[string]string{"v": `"${missing}"`}, wantErr: placeholder.ErrNoValue},
		"a placeholder that names a null entry fails": {
			claims: map[string]string{"v": `"${nothing}"`}, wantErr: placeholder.ErrNoValue},
		"a placeholder that names an object entry fails": {
			claims: map[string]string{"v": `"${team}"`}, wantErr: placeholder.ErrNoValue},
		"a string without a placeholder is issued as written, $ and all, as before templates": {
			claims: map[string]string{"v": `"costs $5"`}, want: map[string]string{"v": `"costs $5"`}},
		"a lone $ in a template fails": {
			claims: map[string]string{"v": `"costs $5 in ${api_version}"`}, wantErr: errAny},
		"a template that repeats a long value past the bound fails as too large": {
			claims: map[string]string{"v": `"${long}${long}${long}"`}, wantErr: ErrTokenClaimsTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			spec := M2MClientSpec{TrustedMetadata: meta, TokenClaims: TokenClaims{}}
			for k, v := range tc.claims {
				spec.TokenClaims[k] = j(v)
			}
			got, err := spec.RenderTokenClaims()
			switch {
			case tc.wantErr == errAny && err != nil:
				return
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			for k, want := range tc.want {
				if string(got[k].Raw) != want {
					t.Errorf("%s = %s, want %s", k, got[k].Raw, want)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %d claims, want %d", len(got), len(tc.want))
			}
		})
	}
}

// errAny stands for "some error" in TestRenderTokenClaims.
var errAny = errors.New("any error")

// Rendering a client's claims leaves its spec as it was: the token server renders the object its
// informer delivers, which other readers of the cache may share.
func TestRenderTokenClaimsLeavesTheSpecAlone(t *testing.T) {
	spec := M2MClientSpec{
		TrustedMetadata: map[string]apiextensionsv1.JSON{"a": {Raw: []byte(`"v"`)}},
		TokenClaims:     TokenClaims{"x": {Raw: []byte(`"${a}"`)}},
	}
	if _, err := spec.RenderTokenClaims(); err != nil {
		t.Fatal(err)
	}
	if string(spec.TokenClaims["x"].Raw) != `"${a}"` {
		t.Fatalf("the spec now holds %s", spec.TokenClaims["x"].Raw)
	}
}
