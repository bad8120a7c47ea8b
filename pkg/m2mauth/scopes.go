package m2mauth

import (
	"fmt"
	"strings"
)

// ScopeAuthorizer decides whether granted scopes satisfy the required ones. It returns an error
// that wraps ErrMissingScope when they do not.
type ScopeAuthorizer func(granted, required []string) error

// DefaultScopeAuthorizer follows Stytch: every required scope must be granted. A granted
// "action:*" satisfies "action:anything"; a "*" in the action position ("*:resource") is a literal
// character; anything else matches exactly.
func DefaultScopeAuthorizer(granted, required []string) error {
	for _, want := range required {
		if !scopeGranted(granted, want) {
			return fmt.Errorf("%w: %q", ErrMissingScope, want)
		}
	}
	return nil
}

func scopeGranted(granted []string, want string) bool {
	action, _, wantHasResource := strings.Cut(want, ":")
	for _, g := range granted {
		if g == want {
			return true
		}
		if gAction, gResource, ok := strings.Cut(g, ":"); ok && wantHasResource && gResource == "*" && gAction == action {
			return true
		}
	}
	return false
}
