package controllers

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestTheManagerReportsWhetherTheStatusPolicyDenies(t *testing.T) {
	policy := func(name string) *admissionregistrationv1.ValidatingAdmissionPolicy {
		return &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	binding := func(name string, actions ...admissionregistrationv1.ValidationAction) *admissionregistrationv1.ValidatingAdmissionPolicyBinding {
		return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name, ValidationActions: actions},
		}
	}
	const def, release = DefaultStatusPolicyName, "m2m-staging-manager-writes-status"
	forbidden := interceptor.Funcs{Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
		return apierrors.NewForbidden(schema.GroupResource{Group: "admissionregistration.k8s.io", Resource: "validatingadmissionpolicies"}, def, nil)
	}}
	for _, tc := range []struct {
		name    string
		policy  string
		objects []client.Object
		funcs   interceptor.Funcs
		want    float64
	}{
		{"a policy with a Deny binding is installed", def, []client.Object{policy(def), binding(def, admissionregistrationv1.Deny)}, interceptor.Funcs{}, 1},
		{"no policy at all is missing", def, nil, interceptor.Funcs{}, 0},
		{"a policy without its binding is missing", def, []client.Object{policy(def)}, interceptor.Funcs{}, 0},
		{"a binding that only warns does not protect status", def, []client.Object{policy(def), binding(def, admissionregistrationv1.Warn, admissionregistrationv1.Audit)}, interceptor.Funcs{}, 0},
		{"a manager that may not read policies says it does not know", def, nil, forbidden, -1},
		{"a policy named for a release is found under its name", release, []client.Object{policy(release), binding(release, admissionregistrationv1.Deny)}, interceptor.Funcs{}, 1},
		{"another release's policy does not count for this one", release, []client.Object{policy(def), binding(def, admissionregistrationv1.Deny)}, interceptor.Funcs{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(tc.objects...).WithInterceptorFuncs(tc.funcs).Build()
			StatusPolicyInstalled.Set(42)
			(&statusPolicyCheck{reader: c, name: tc.policy}).check(context.Background())
			if got := testutil.ToFloat64(StatusPolicyInstalled); got != tc.want {
				t.Fatalf("m2m_manager_status_policy_installed = %v, want %v", got, tc.want)
			}
		})
	}
}
