package v1alpha1

// PodClientSignerName is the signer of pod certificates that authenticate clients (spec.authentication.podCertificates).
const PodClientSignerName = "m2m.dev/pod-client"
