package servingcert

import (
	"crypto/x509"
	"fmt"
	"time"
)

// State is what the CA Secret and the serving-certificate Secret hold, parsed.
type State struct {
	// CA signs; nil when there is none (or it does not parse).
	CA *KeyPair
	// Next is the CA that takes over after the overlap; NextSince is when it joined the bundle.
	Next      *KeyPair
	NextSince time.Time
	// Previous signed before the last rotation; it stays in the bundle until PreviousUntil.
	Previous      *x509.Certificate
	PreviousUntil time.Time
	// CARotationAsked: the CA Secret's m2m.dev/rotate annotation has a value not acted on.
	CARotationAsked bool
	// Cert is the serving certificate, nil when there is none or it does not parse.
	Cert *x509.Certificate
	// CertRotationAsked: the serving-certificate Secret's m2m.dev/rotate has a new value.
	CertRotationAsked bool
}

// CAStep is the one change a reconcile makes to the CA Secret.
type CAStep string

const (
	// CANone: the CAs are as they should be.
	CANone CAStep = ""
	// CACreate: there is no CA; make one.
	CACreate CAStep = "Create"
	// CAAddNext: the CA nears its end (or a rotation was asked for); make the next one and add
	// it to the bundle, where clients learn it before it signs.
	CAAddNext CAStep = "AddNext"
	// CAPromote: the next CA has been in the bundle for the overlap; it signs from now on, and
	// the old one stays in the bundle for another overlap.
	CAPromote CAStep = "Promote"
	// CADropPrevious: the previous CA's overlap is over; it leaves the bundle.
	CADropPrevious CAStep = "DropPrevious"
)

// Decision is what to do now, why, and when to look again.
type Decision struct {
	CA    CAStep
	CAWhy string
	// Issue says to issue a new serving certificate (after the CA step), and IssueWhy why.
	Issue    bool
	IssueWhy string
	// Wake is when something is due next; zero when nothing is.
	Wake time.Time
}

// Plan decides the next CA step and whether to issue a serving certificate for hosts at now.
// One CA step per decision: the reconciler writes it and decides again.
func Plan(st State, hosts []string, now time.Time, p Policy) Decision {
	var d Decision
	renewCA := time.Time{}
	// A CA that expired (while the manager was away) protects no one by waiting: its successor
	// takes over at once. A CA not valid yet is a clock fault, not a reason to rotate.
	caValid := st.CA != nil && now.Before(st.CA.Cert.NotAfter)
	if st.CA != nil {
		renewCA = st.CA.Cert.NotAfter.Add(-p.CARenewBefore)
	}
	switch {
	case st.CA == nil:
		d.CA, d.CAWhy = CACreate, "there is no CA"
	case !caValid && st.Next != nil && now.Before(st.Next.Cert.NotAfter):
		d.CA, d.CAWhy = CAPromote, fmt.Sprintf("the CA expired at %s; its successor signs at once", st.CA.Cert.NotAfter.UTC().Format(time.RFC3339))
	case !caValid && st.Next == nil:
		d.CA, d.CAWhy = CAAddNext, "the CA expired; a successor is made"
	case st.Previous != nil && !now.Before(st.PreviousUntil):
		d.CA, d.CAWhy = CADropPrevious, fmt.Sprintf("the previous CA's overlap ended at %s", st.PreviousUntil.UTC().Format(time.RFC3339))
	case st.Next != nil && !now.Before(st.NextSince.Add(p.Overlap)):
		d.CA, d.CAWhy = CAPromote, fmt.Sprintf("the next CA has been trusted since %s, for the overlap of %s", st.NextSince.UTC().Format(time.RFC3339), p.Overlap)
	case st.Next == nil && st.Previous == nil && !now.Before(renewCA):
		d.CA, d.CAWhy = CAAddNext, fmt.Sprintf("the CA expires at %s, within %s", st.CA.Cert.NotAfter.UTC().Format(time.RFC3339), p.CARenewBefore)
	case st.Next == nil && st.Previous == nil && st.CARotationAsked:
		d.CA, d.CAWhy = CAAddNext, "a CA rotation was asked for (m2m.dev/rotate)"
	}
	if d.CA != CANone {
		// The certificate is decided after the CA step is written.
		return d
	}
	renewCert := time.Time{}
	switch c := st.Cert; {
	case c == nil:
		d.Issue, d.IssueWhy = true, "there is no serving certificate"
	case c.CheckSignatureFrom(st.CA.Cert) != nil:
		d.Issue, d.IssueWhy = true, "the serving certificate is not signed by the CA that signs now"
	case !Covers(c, hosts):
		d.Issue, d.IssueWhy = true, fmt.Sprintf("the serving certificate does not cover %v", hosts)
	case st.CertRotationAsked:
		d.Issue, d.IssueWhy = true, "a new serving certificate was asked for (m2m.dev/rotate)"
	case !validAt(c, now):
		d.Issue, d.IssueWhy = true, fmt.Sprintf("the serving certificate is not valid now (%s to %s)", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	case !st.CA.Cert.NotAfter.After(c.NotAfter):
		// A new certificate would end with the CA, no later than this one: renewing it now
		// would only repeat. The CA's rotation brings the next one.
	default:
		renewCert = c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
		if !now.Before(renewCert) {
			d.Issue, d.IssueWhy = true, fmt.Sprintf("two thirds of the serving certificate's lifetime passed at %s", renewCert.UTC().Format(time.RFC3339))
		}
	}
	due := []time.Time{renewCA, renewCert}
	if st.Next != nil {
		due = append(due, st.NextSince.Add(p.Overlap))
	}
	if st.Previous != nil {
		due = append(due, st.PreviousUntil)
	}
	for _, t := range due {
		if t.After(now) && (d.Wake.IsZero() || t.Before(d.Wake)) {
			d.Wake = t
		}
	}
	return d
}

// validAt reports whether cert is within its validity at now, allowing a minute of clock skew.
func validAt(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(cert.NotBefore.Add(-time.Minute)) && now.Before(cert.NotAfter)
}
