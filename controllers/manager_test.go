package controllers

import (
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

// NewManager checks the issuer URL before it builds anything, so this needs no control plane.
func TestNewManagerRefusesAMissingOrInvalidIssuerURL(t *testing.T) {
	for _, raw := range []string{"", "not a url", "ftp://example.com", "https://example.com?a=b"} {
		_, err := NewManager(&rest.Config{Host: "https://127.0.0.1:1"}, Options{IssuerURL: raw})
		if err == nil || !strings.Contains(err.Error(), "issuer URL") {
			t.Errorf("issuer %q: error %v, want one about the issuer URL", raw, err)
		}
	}
}
