package devenv

import "testing"

// Behind a public door the token server listens at an https URL of its own, by default make dev
// TLS=1's; an in-cluster URL without a door, over plain HTTP, or on the door's host and port is
// refused before anything starts.
func TestTheDevSystemsInClusterURLIsTheTokenServersOwnBehindAPublicDoor(t *testing.T) {
	for _, c := range []struct {
		name              string
		door              bool
		issuer, inCluster string
		want              string
		wantErr           bool
	}{
		{"no door: the issuer is the only URL", false, DefaultIssuerURL, "", "", false},
		{"a door and no in-cluster URL: make dev TLS=1's", true, DefaultPublicIssuerURL, "", DefaultTLSIssuerURL, false},
		{"a door and an https in-cluster URL of its own", true, DefaultPublicIssuerURL, "https://127.0.0.1:18443", "https://127.0.0.1:18443", false},
		{"an in-cluster URL without a door", false, DefaultTLSIssuerURL, "https://127.0.0.1:18443", "", true},
		{"a plain-HTTP in-cluster URL", true, DefaultPublicIssuerURL, "http://127.0.0.1:8080", "", true},
		{"the door's host and port", true, DefaultPublicIssuerURL, "https://localhost:9443", "", true},
		{"the door's host and port, the default port written out", true, "https://localhost", "https://localhost:443", "", true},
	} {
		got, err := inClusterOf(Options{PublicDoor: c.door, InClusterURL: c.inCluster}, c.issuer)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("%s: got %q, %v; want %q (an error: %v)", c.name, got, err, c.want, c.wantErr)
		}
	}
	if got, err := issuerOf(Options{PublicDoor: true, TLS: true}); got != DefaultPublicIssuerURL || err != nil {
		t.Errorf("a door's issuer by default: %q, %v; want %s", got, err, DefaultPublicIssuerURL)
	}
}
