package v1alpha1

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzIsReservedClaim checks the claim-name fold: a name is reserved exactly when Go's
// case-insensitive JSON matching (strings.EqualFold, which encoding/json uses) or Java's
// equalsIgnoreCase would read it as a reserved claim.
func FuzzIsReservedClaim(f *testing.F) {
	for _, seed := range []string{"sub", "SUB", "ſub", "to\u212Aen_type", "clıent_ıd", "İss", "team", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if !utf8.ValidString(name) {
			return
		}
		folds := false
		for _, r := range ReservedClaims {
			if strings.EqualFold(name, r) {
				folds = true
			}
		}
		if folds && !IsReservedClaim(name) {
			t.Fatalf("%q folds into a reserved claim but is not reserved", name)
		}
	})
}
