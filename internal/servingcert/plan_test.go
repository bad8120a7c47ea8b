package servingcert

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/keyring"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

var testPolicy = Policy{CAValidity: 1000 * time.Hour, CARenewBefore: 100 * time.Hour, Overlap: 10 * time.Hour, CertValidity: 90 * time.Hour}

func mustCA(t *testing.T, at time.Time) *KeyPair {
	t.Helper()
	ca, err := NewCA(at, testPolicy.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustCert(t *testing.T, ca *KeyPair, hosts []string, at time.Time) *x509.Certificate {
	t.Helper()
	kp, err := Issue(ca, hosts, at, testPolicy.CertValidity)
	if err != nil {
		t.Fatal(err)
	}
	return kp.Cert
}

func TestPlan(t *testing.T) {
	hosts := []string{"m2m-token-server.m2m-system.svc", "127.0.0.1"}
	ca := mustCA(t, t0)
	next := mustCA(t, t0)
	oldCA := mustCA(t, t0.Add(-950*time.Hour))
	cert := mustCert(t, ca, hosts, t0)
	expired := mustCA(t, t0.Add(-1001*time.Hour))
	future := mustCert(t, ca, hosts, t0.Add(30*24*time.Hour))
	endsWithCA := mustCert(t, oldCA, hosts, t0) // cut to the old CA's end, 50h from t0
	for sentence, tc := range map[string]struct {
		st     State
		now    time.Time
		ca     CAStep
		issue  bool
		wakeIn time.Duration
	}{
		"a new install creates a CA":                                       {State{}, t0, CACreate, false, 0},
		"a CA without a serving certificate issues one":                    {State{CA: ca}, t0, CANone, true, 900 * time.Hour},
		"a fresh certificate of the CA needs nothing until 60h":            {State{CA: ca, Cert: cert}, t0, CANone, false, 60 * time.Hour},
		"a certificate two thirds through its life is renewed":             {State{CA: ca, Cert: cert}, t0.Add(61 * time.Hour), CANone, true, 839 * time.Hour},
		"a certificate of another CA is replaced":                          {State{CA: next, Cert: cert}, t0, CANone, true, 900 * time.Hour},
		"a certificate missing a host is replaced":                         {State{CA: ca, Cert: mustCert(t, ca, hosts[:1], t0)}, t0, CANone, true, 900 * time.Hour},
		"a rotation asked for on the certificate issues one":               {State{CA: ca, Cert: cert, CertRotationAsked: true}, t0, CANone, true, 900 * time.Hour},
		"a CA near its end gets a successor in the bundle":                 {State{CA: oldCA, Cert: mustCert(t, oldCA, hosts, t0)}, t0, CAAddNext, false, 0},
		"a CA rotation asked for adds the successor":                       {State{CA: ca, Cert: cert, CAAsk: keyring.AskPlanned}, t0, CAAddNext, false, 0},
		"the successor waits out the overlap before it signs":              {State{CA: ca, Cert: cert, Next: next, NextSince: t0}, t0.Add(time.Hour), CANone, false, 9 * time.Hour},
		"the successor signs after the overlap":                            {State{CA: ca, Cert: cert, Next: next, NextSince: t0}, t0.Add(10 * time.Hour), CAPromote, false, 0},
		"the previous CA stays for the overlap after":                      {State{CA: next, Cert: mustCert(t, next, hosts, t0), Previous: ca.Cert, PreviousUntil: t0.Add(10 * time.Hour)}, t0.Add(time.Hour), CANone, false, 9 * time.Hour},
		"the previous CA leaves after its overlap":                         {State{CA: next, Cert: cert, Previous: ca.Cert, PreviousUntil: t0}, t0, CADropPrevious, false, 0},
		"an expired CA with a successor hands over at once":                {State{CA: expired, Cert: cert, Next: next, NextSince: t0}, t0, CAPromote, false, 0},
		"an expired CA without a successor gets one":                       {State{CA: expired, Cert: cert}, t0, CAAddNext, false, 0},
		"a certificate not valid yet (a skewed clock) is replaced":         {State{CA: ca, Cert: future}, t0, CANone, true, 0},
		"an expired certificate is replaced":                               {State{CA: ca, Cert: cert}, t0.Add(91 * time.Hour), CANone, true, 0},
		"a certificate that ends with its CA is not renewed over and over": {State{CA: oldCA, Cert: endsWithCA, Next: next, NextSince: t0.Add(35 * time.Hour)}, t0.Add(40 * time.Hour), CANone, false, 5 * time.Hour},
		"a CA not valid yet (a clock behind) is no reason to rotate":       {State{CA: mustCA(t, t0.Add(time.Hour)), Cert: mustCert(t, ca, hosts, t0)}, t0, CANone, true, 0},
		"a rotation asked for waits while one is in progress":              {State{CA: ca, Cert: cert, Next: next, NextSince: t0, CAAsk: keyring.AskPlanned}, t0.Add(time.Hour), CANone, false, 9 * time.Hour},
		"an emergency replaces a CA that had years to run at once":         {State{CA: ca, Cert: cert, CAAsk: keyring.AskEmergency}, t0, CAReplace, false, 0},
		"an emergency replaces the CA before its successor signs":          {State{CA: ca, Cert: cert, Next: next, NextSince: t0, CAAsk: keyring.AskEmergency}, t0.Add(time.Hour), CAReplace, false, 0},
		"an emergency replaces the CA while the previous one overlaps":     {State{CA: next, Cert: mustCert(t, next, hosts, t0), Previous: ca.Cert, PreviousUntil: t0.Add(10 * time.Hour), CAAsk: keyring.AskEmergency}, t0.Add(time.Hour), CAReplace, false, 0},
		"an emergency replaces an expired CA rather than hand over":        {State{CA: expired, Cert: cert, Next: next, NextSince: t0, CAAsk: keyring.AskEmergency}, t0, CAReplace, false, 0},
		"an emergency on a missing CA creates one":                         {State{CAAsk: keyring.AskEmergency}, t0, CACreate, false, 0},
	} {
		t.Run(sentence, func(t *testing.T) {
			d := Plan(tc.st, hosts, tc.now, testPolicy)
			if d.CA != tc.ca || d.Issue != tc.issue {
				t.Fatalf("CA step %q (%s), issue %v (%s); want %q, %v", d.CA, d.CAWhy, d.Issue, d.IssueWhy, tc.ca, tc.issue)
			}
			if tc.wakeIn != 0 && d.Wake.Sub(tc.now).Round(time.Minute) != tc.wakeIn.Round(time.Minute) {
				t.Fatalf("wakes in %s, want %s", d.Wake.Sub(tc.now), tc.wakeIn)
			}
		})
	}
}

// A serving certificate verifies against the bundle for every host, as a client would check it,
// and against the previous CA's bundle too while a rotation overlaps.
func TestAServingCertificateVerifiesAgainstTheBundleForEveryHost(t *testing.T) {
	hosts := []string{"m2m-token-server.m2m-system.svc", "127.0.0.1"}
	old, next := mustCA(t, t0), mustCA(t, t0)
	kp, err := Issue(next, hosts, t0, testPolicy.CertValidity)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(BundleOf(old.CertPEM, next.CertPEM)) {
		t.Fatal("the bundle does not parse")
	}
	for _, h := range hosts {
		if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: h, CurrentTime: t0}); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if _, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM); err != nil {
		t.Fatalf("not a usable TLS key pair: %v", err)
	}
	if _, err := Parse(kp.CertPEM, old.KeyPEM); err == nil {
		t.Fatal("a key that is not the certificate's was accepted")
	}
	onlyOld := x509.NewCertPool()
	onlyOld.AppendCertsFromPEM(old.CertPEM)
	if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: onlyOld, DNSName: hosts[0], CurrentTime: t0}); err == nil {
		t.Fatal("a certificate of the next CA verified against the old CA alone")
	}
}

func TestAPolicyWhoseDurationsDoNotFitIsRefused(t *testing.T) {
	for name, p := range map[string]Policy{
		"overlaps longer than the renewal": {CAValidity: 100 * time.Hour, CARenewBefore: 10 * time.Hour, Overlap: 6 * time.Hour, CertValidity: time.Hour},
		"a certificate outliving the CA":   {CAValidity: 100 * time.Hour, CARenewBefore: 50 * time.Hour, Overlap: time.Hour, CertValidity: 200 * time.Hour},
		"a zero overlap":                   {CAValidity: 100 * time.Hour, CARenewBefore: 50 * time.Hour, CertValidity: time.Hour},
	} {
		if p.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := DefaultPolicy.Validate(); err != nil {
		t.Fatal(err)
	}
}
