package servingcert

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/keyring"
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
	// CAAsk is the rotation the CA Secret's annotations ask for (keyring.AskOf).
	CAAsk keyring.Ask
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
	// CAReplace: an emergency; a new CA signs at once, and the CA, the next and the previous CA
	// leave the bundle at once.
	CAReplace CAStep = "Replace"
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
	if st.CA != nil {
		renewCA = st.CA.Cert.NotAfter.Add(-p.CARenewBefore)
	}
	ring := caStep(st, now, p)
	if d.CA, d.CAWhy = ring.step, ring.why; d.CA != CANone {
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
	// The ring wakes for the next CA's promotion and the previous CA's end; the CA's renewal
	// counts even while a rotation is in progress.
	for _, t := range []time.Time{renewCA, renewCert, ring.wakeAt} {
		if t.After(now) && (d.Wake.IsZero() || t.Before(d.Wake)) {
			d.Wake = t
		}
	}
	return d
}

// caPlan is the CA ring's decision, as one step.
type caPlan struct {
	step   CAStep
	why    string
	wakeAt time.Time
}

// caStep decides the CA ring's next step, one at a time, in this order: a CA when there is
// none; a new CA for an emergency; a successor, at once, for a CA that expired; the previous
// CA's removal; the next CA's promotion; the next CA's publication.
func caStep(st State, now time.Time, p Policy) caPlan {
	if st.CA != nil && st.CAAsk == keyring.AskEmergency {
		// Whoever copied the Secret has the next CA's key too, and the previous CA's key was in it
		// until the last promotion; TLS has no revocation here, so a leaked serving key stays
		// usable until no client trusts the CA that signed it.
		return caPlan{step: CAReplace, why: fmt.Sprintf("an emergency rotation was asked for (%s): a new CA signs now, and every CA the Secret held leaves the bundle now", keyring.EmergencyAnnotation)}
	}
	keys, expired := caRing(st, now, p)
	plan := keyring.Decide(keys, keyring.Rules{Noun: "CA", Prepublish: p.Overlap, RetiredSlots: 1}, now)
	out := caPlan{wakeAt: plan.WakeAt}
	if !plan.Empty() {
		// Why has one sentence for each dropped key, then one for the active and next keys.
		out.why = plan.Why[len(plan.Why)-1]
	}
	switch {
	case st.CA == nil:
		out.step = CACreate
	case expired && plan.Promote:
		out.step, out.why = CAPromote, fmt.Sprintf("the CA expired at %s; %s", st.CA.Cert.NotAfter.UTC().Format(time.RFC3339), out.why)
	case expired:
		// Its successor is made next and signs on the next decision; the CA Secret has no
		// other way to replace the CA it holds.
		out.step, out.why = CAAddNext, fmt.Sprintf("the CA expired at %s; %s", st.CA.Cert.NotAfter.UTC().Format(time.RFC3339), out.why)
	case len(plan.Drop) > 0:
		out.step, out.why = CADropPrevious, plan.Why[0]
	case plan.Promote:
		out.step = CAPromote
	case plan.AddNext:
		out.step = CAAddNext
	}
	return out
}

// caRing is the CA Secret as a key ring: the CA (active, due for a successor CARenewBefore
// before it expires, or now when a rotation was asked for), the next CA (published since
// NextSince) and the previous one (retired, until PreviousUntil). A CA that expired (while the
// manager was away) protects no one by waiting, so the ring does not count it as signing, and
// its successor takes over at once; unless the successor expired too, when the rotation runs its
// course. A CA not valid yet is a clock fault, not a reason to rotate.
func caRing(st State, now time.Time, p Policy) (keys []keyring.Key, expired bool) {
	if st.CA == nil {
		return nil, false
	}
	expired = !now.Before(st.CA.Cert.NotAfter) && (st.Next == nil || now.Before(st.Next.Cert.NotAfter))
	if !expired {
		ca := keyring.Key{ID: serial(st.CA.Cert), State: keyring.StateActive, At: st.CA.Cert.NotAfter.Add(-p.CARenewBefore)}
		ca.Reason = fmt.Sprintf("expires at %s, within %s", st.CA.Cert.NotAfter.UTC().Format(time.RFC3339), p.CARenewBefore)
		if st.CAAsk == keyring.AskPlanned && now.Before(ca.At) {
			ca.At, ca.Reason = now, "was asked to rotate (m2m.dev/rotate)"
		}
		keys = append(keys, ca)
	}
	if st.Next != nil {
		keys = append(keys, keyring.Key{ID: serial(st.Next.Cert), State: keyring.StateNext, At: st.NextSince})
	}
	if st.Previous != nil {
		// A previous CA without its end (which the reconciler repairs first) goes at once.
		until := st.PreviousUntil
		if until.IsZero() {
			until = now
		}
		keys = append(keys, keyring.Key{ID: serial(st.Previous), State: keyring.StateRetired, At: until,
			Reason: fmt.Sprintf("its overlap ended at %s", st.PreviousUntil.UTC().Format(time.RFC3339))})
	}
	return keys, expired
}

// serial names a CA in sentences, as openssl x509 -serial does.
func serial(c *x509.Certificate) string { return fmt.Sprintf("%X", c.SerialNumber) }

// validAt reports whether cert is within its validity at now, allowing a minute of clock skew.
func validAt(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(cert.NotBefore.Add(-time.Minute)) && now.Before(cert.NotAfter)
}
