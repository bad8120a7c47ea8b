package m2mauth

import (
	"errors"
	"testing"
)

func TestDefaultScopeAuthorizerFollowsStytch(t *testing.T) {
	for sentence, tc := range map[string]struct {
		granted, required []string
		ok                bool
	}{
		"an exact scope matches":                        {[]string{"read:users"}, []string{"read:users"}, true},
		"every required scope must be granted":          {[]string{"read:users"}, []string{"read:users", "write:users"}, false},
		"a wildcard resource grants any resource":       {[]string{"read:*"}, []string{"read:users", "read:invoices"}, true},
		"a wildcard resource grants nothing else":       {[]string{"read:*"}, []string{"write:users"}, false},
		"a wildcard action is literal":                  {[]string{"*:users"}, []string{"read:users"}, false},
		"a literal wildcard action matches itself":      {[]string{"*:users"}, []string{"*:users"}, true},
		"a bare scope matches exactly":                  {[]string{"admin"}, []string{"admin"}, true},
		"a wildcard resource does not grant a bare one": {[]string{"admin:*"}, []string{"admin"}, false},
		"nothing required is always satisfied":          {nil, nil, true},
		"a scope is not a prefix match":                 {[]string{"read:user"}, []string{"read:users"}, false},
	} {
		t.Run(sentence, func(t *testing.T) {
			err := DefaultScopeAuthorizer(tc.granted, tc.required)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrMissingScope) {
				t.Fatalf("err %v is not ErrMissingScope", err)
			}
		})
	}
}
