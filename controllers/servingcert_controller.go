package controllers

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
)

// ServingCertReconciler keeps the token server's serving certificate (a kubernetes.io/tls Secret
// that the token server mounts) signed by a CA that it keeps in a Secret of its own, and rotates
// both as servingcert.Plan decides. The CA bundle reaches clients through their credentials
// Secrets (M2MClientReconciler writes ca.crt).
type ServingCertReconciler struct {
	client.Client
	APIReader client.Reader
	Clock     clock.PassiveClock
	// CASecret holds the CA; CertSecret the serving certificate.
	CASecret, CertSecret types.NamespacedName
	// Hosts are the names the certificate covers: the issuer's host and the Service's names.
	Hosts  []string
	Policy servingcert.Policy

	// ignored logs rotation annotations too long to act on.
	ignored ignoredAsks
}

// SetupWithManager reconciles at start and whenever either Secret changes.
func (r *ServingCertReconciler) SetupWithManager(mgr ctrl.Manager) error {
	req := reconcile.Request{NamespacedName: r.CertSecret}
	atStart, toReq := singleton(req)
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		key := client.ObjectKeyFromObject(o)
		return key == r.CASecret || key == r.CertSecret
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("servingcert").
		WatchesRawSource(atStart).
		Watches(&corev1.Secret{}, toReq, builder.WithPredicates(ours)).
		Complete(r)
}

// Reconcile makes one CA step, or issues the serving certificate, and requeues for the next due
// moment. The bundle changes before the CA that signs does, by an overlap, so that every client
// trusts a CA before a certificate of it is served, and after it is no longer served; except in
// an emergency, where the CA Secret is written first (the new CA signs, alone in the bundle) and
// the certificate second, which a crash in between leaves to the next reconcile's rule for a
// certificate of another CA.
func (r *ServingCertReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	now := r.Clock.Now()
	caSecret, err := readOwnSecret(ctx, r.Client, r.APIReader, r.CASecret)
	if err != nil {
		return ctrl.Result{}, err
	}
	certSecret, err := readOwnSecret(ctx, r.Client, r.APIReader, r.CertSecret)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.ignored.report(logger, caSecret)
	r.ignored.report(logger, certSecret)
	st, err := r.state(caSecret, certSecret)
	if err != nil {
		// Never overwrite a CA that does not parse: clients may trust it, and it may be the only copy.
		logger.Error(err, "the CA Secret is damaged; it is left as it is", "secret", r.CASecret.String())
		return ctrl.Result{RequeueAfter: damagedKeysRecheck}, nil
	}
	// An emergency rewrites what a repair would, and a repaired bundle would rewrite every
	// credentials Secret once more.
	if fixed := r.repairCA(caSecret, st, now); fixed != nil && st.CAAsk != keyring.AskEmergency {
		if err := r.Update(ctx, fixed); apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		} else if err != nil {
			return ctrl.Result{}, err
		}
		logger.Info("repaired the CA Secret's bundle or rotation times")
		return ctrl.Result{RequeueAfter: time.Millisecond}, nil
	}
	d := servingcert.Plan(st, r.Hosts, now, r.Policy)
	if d.CA != servingcert.CANone {
		if err := r.stepCA(ctx, caSecret, d.CA, now); apierrors.IsConflict(err) {
			// The cache had not seen the last write yet; decide again on the newer version.
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		} else if err != nil {
			return ctrl.Result{}, err
		}
		logger.Info("CA: "+d.CAWhy, "step", d.CA)
		return ctrl.Result{RequeueAfter: time.Millisecond}, nil // decide again on what was written
	}
	bundle := caSecret.Data[servingcert.Bundle]
	if d.Issue {
		kp, err := servingcert.Issue(st.CA, r.Hosts, now, r.Policy.CertValidity)
		if err != nil {
			return ctrl.Result{}, err
		}
		if err := r.writeCert(ctx, certSecret, kp, bundle); apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		} else if err != nil {
			return ctrl.Result{}, err
		}
		logger.Info("issued the serving certificate: "+d.IssueWhy, "notAfter", kp.Cert.NotAfter.UTC().Format(time.RFC3339))
	} else if !bytes.Equal(certSecret.Data[servingcert.TLSCA], bundle) {
		if err := r.writeCert(ctx, certSecret, nil, bundle); apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		} else if err != nil {
			return ctrl.Result{}, err
		}
	}
	if d.Wake.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(d.Wake.Sub(now), time.Millisecond)}, nil
}

// state parses the two Secrets. Only a CA Secret that exists and does not parse is an error.
func (r *ServingCertReconciler) state(caSecret, certSecret *corev1.Secret) (servingcert.State, error) {
	var st servingcert.State
	if caSecret != nil {
		ca, err := servingcert.Parse(caSecret.Data[servingcert.CACert], caSecret.Data[servingcert.CAKey])
		if err != nil {
			return st, fmt.Errorf("ca.crt and ca.key: %w", err)
		}
		st.CA = ca
		if len(caSecret.Data[servingcert.NextCert]) > 0 {
			if st.Next, err = servingcert.Parse(caSecret.Data[servingcert.NextCert], caSecret.Data[servingcert.NextKey]); err != nil {
				return st, fmt.Errorf("next.crt and next.key: %w", err)
			}
			st.NextSince, _ = time.Parse(time.RFC3339, caSecret.Annotations[servingcert.NextSinceAnnotation])
		}
		if len(caSecret.Data[servingcert.PreviousCert]) > 0 {
			if st.Previous, err = servingcert.ParseCert(caSecret.Data[servingcert.PreviousCert]); err != nil {
				return st, fmt.Errorf("previous.crt: %w", err)
			}
			st.PreviousUntil, _ = time.Parse(time.RFC3339, caSecret.Annotations[servingcert.PreviousUntilAnnotation])
		}
		st.CAAsk = keyring.AskOf(caSecret.Annotations)
	}
	if certSecret != nil {
		// A certificate that does not parse, or whose key is not its own, is replaced: it is
		// the CA's to issue again.
		if kp, err := servingcert.Parse(certSecret.Data[servingcert.TLSCert], certSecret.Data[servingcert.TLSKey]); err == nil {
			st.Cert = kp.Cert
		}
		// Only a planned rotation: a new certificate alone does not help against a leaked key,
		// which stays trusted until it expires; that emergency is the CA Secret's.
		st.CertRotationAsked = keyring.Asked(certSecret.Annotations, keyring.RotateAnnotation, keyring.RotatedAnnotation)
	}
	return st, nil
}

// repairCA returns the CA Secret with what a hand edit or a partial restore broke put right, or
// nil when nothing is: the bundle is the CAs it holds, and a rotation in progress has its times
// (missing ones count from now, so that the overlap is waited out in full).
func (r *ServingCertReconciler) repairCA(s *corev1.Secret, st servingcert.State, now time.Time) *corev1.Secret {
	if s == nil || st.CA == nil {
		return nil
	}
	fixed := s.DeepCopy()
	if fixed.Annotations == nil {
		fixed.Annotations = map[string]string{}
	}
	d := fixed.Data
	if want := servingcert.BundleOf(d[servingcert.CACert], d[servingcert.NextCert], d[servingcert.PreviousCert]); !bytes.Equal(want, d[servingcert.Bundle]) {
		d[servingcert.Bundle] = want
	}
	if st.Next != nil && st.NextSince.IsZero() {
		fixed.Annotations[servingcert.NextSinceAnnotation] = now.UTC().Format(time.RFC3339)
	}
	if st.Previous != nil && st.PreviousUntil.IsZero() {
		fixed.Annotations[servingcert.PreviousUntilAnnotation] = now.Add(r.Policy.Overlap).UTC().Format(time.RFC3339)
	}
	if bytes.Equal(d[servingcert.Bundle], s.Data[servingcert.Bundle]) && maps.Equal(fixed.Annotations, s.Annotations) {
		return nil
	}
	return fixed
}

// stepCA writes one CA step into the CA Secret, guarded by its resourceVersion; CACreate
// writes the first CA into the empty Secret that stands for a missing one. A rotation asked for
// is recorded as done in the write that does it, so that a crash does both or neither.
func (r *ServingCertReconciler) stepCA(ctx context.Context, s *corev1.Secret, step servingcert.CAStep, now time.Time) error {
	if step == servingcert.CACreate && s != nil {
		return fmt.Errorf("the CA Secret %s exists without a CA", r.CASecret)
	}
	s = editOwnSecret(s, r.CASecret, corev1.SecretTypeOpaque)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	d := s.Data
	switch step {
	case servingcert.CACreate:
		ca, err := servingcert.NewCA(now, r.Policy.CAValidity)
		if err != nil {
			return err
		}
		d[servingcert.CACert], d[servingcert.CAKey] = ca.CertPEM, ca.KeyPEM
	case servingcert.CAAddNext:
		next, err := servingcert.NewCA(now, r.Policy.CAValidity)
		if err != nil {
			return err
		}
		d[servingcert.NextCert], d[servingcert.NextKey] = next.CertPEM, next.KeyPEM
		s.Annotations[servingcert.NextSinceAnnotation] = now.UTC().Format(time.RFC3339)
		s.Annotations = keyring.Acted(s.Annotations)
	case servingcert.CAReplace:
		ca, err := servingcert.NewCA(now, r.Policy.CAValidity)
		if err != nil {
			return err
		}
		d[servingcert.CACert], d[servingcert.CAKey] = ca.CertPEM, ca.KeyPEM
		for _, k := range []string{servingcert.NextCert, servingcert.NextKey, servingcert.PreviousCert} {
			delete(d, k)
		}
		delete(s.Annotations, servingcert.NextSinceAnnotation)
		delete(s.Annotations, servingcert.PreviousUntilAnnotation)
		s.Annotations = keyring.Acted(s.Annotations)
	case servingcert.CAPromote:
		d[servingcert.PreviousCert] = d[servingcert.CACert]
		d[servingcert.CACert], d[servingcert.CAKey] = d[servingcert.NextCert], d[servingcert.NextKey]
		delete(d, servingcert.NextCert)
		delete(d, servingcert.NextKey)
		delete(s.Annotations, servingcert.NextSinceAnnotation)
		s.Annotations[servingcert.PreviousUntilAnnotation] = now.Add(r.Policy.Overlap).UTC().Format(time.RFC3339)
	case servingcert.CADropPrevious:
		delete(d, servingcert.PreviousCert)
		delete(s.Annotations, servingcert.PreviousUntilAnnotation)
	}
	d[servingcert.Bundle] = servingcert.BundleOf(d[servingcert.CACert], d[servingcert.NextCert], d[servingcert.PreviousCert])
	s.Labels = componentLabels(s.Labels, m2mv1alpha1.CAComponent)
	_, err := writeOwnSecret(ctx, r.Client, s)
	return err
}

// writeCert writes the serving certificate (kp, unless nil) and the bundle into its Secret,
// which it creates when there is none.
func (r *ServingCertReconciler) writeCert(ctx context.Context, s *corev1.Secret, kp *servingcert.KeyPair, bundle []byte) error {
	s = editOwnSecret(s, r.CertSecret, corev1.SecretTypeTLS)
	if kp != nil {
		s.Data[servingcert.TLSCert], s.Data[servingcert.TLSKey] = kp.CertPEM, kp.KeyPEM
		if keyring.Asked(s.Annotations, keyring.RotateAnnotation, keyring.RotatedAnnotation) {
			s.Annotations[keyring.RotatedAnnotation] = s.Annotations[keyring.RotateAnnotation]
		}
	}
	s.Data[servingcert.TLSCA] = bundle
	s.Labels = componentLabels(s.Labels, m2mv1alpha1.ServingCertComponent)
	_, err := writeOwnSecret(ctx, r.Client, s)
	return err
}

// componentLabels returns labels with the manager's label, which its cache selects on, and the
// component.
func componentLabels(labels map[string]string, component string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out[m2mv1alpha1.ManagedByLabel] = m2mv1alpha1.ManagedByValue
	out[m2mv1alpha1.ComponentLabel] = component
	return out
}
