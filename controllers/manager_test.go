package controllers

import (
	"strings"
	"testing"
	"time"

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

// Leader-election timings client-go would refuse after start are refused up front, naming the
// flag; setting only a shorter lease (below the 10 s default renew deadline) is the usual case.
func TestNewManagerRefusesLeaderElectionTimingsThatCannotWorkNamingTheFlag(t *testing.T) {
	for _, tc := range []struct {
		sentence string
		o        Options
		flag     string
	}{
		{"a lease shorter than the default renew deadline", Options{LeaseDuration: 4 * time.Second}, "--leader-elect-renew-deadline"},
		{"a renew deadline as long as the lease", Options{LeaseDuration: 20 * time.Second, RenewDeadline: 20 * time.Second}, "--leader-elect-lease-duration"},
		{"a retry period that does not fit in the renew deadline", Options{RetryPeriod: 9 * time.Second}, "--leader-elect-retry-period"},
	} {
		tc.o.IssuerURL = "https://m2m.example.com"
		_, err := NewManager(&rest.Config{Host: "https://127.0.0.1:1"}, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s: error %v, want one naming %s", tc.sentence, err, tc.flag)
		}
	}
	o := Options{LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond}
	if err := o.validateLeaderElection(); err != nil {
		t.Errorf("the failover test's timings were refused: %v", err)
	}
}
