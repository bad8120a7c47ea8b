package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Scope is an OAuth 2.0 scope-token (RFC 6749 §3.3): one or more printable ASCII characters other
// than space, double quote and backslash.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=128
// +kubebuilder:validation:Pattern=`^[!#-\[\]-~]+$`
type Scope string

// Audience is a value that may appear in the "aud" claim of this client's tokens, usually the URL
// of a resource server (RFC 8707).
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=512
// +kubebuilder:validation:Pattern=`^[!-~]+$`
type Audience string

// M2MClientSpec declares a machine-to-machine OAuth 2.0 client that authenticates with the
// client credentials grant (RFC 6749 §4.4).
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.clientID) || has(self.clientID)",message="clientID cannot be removed once set"
// +kubebuilder:validation:XValidation:rule="!has(self.authentication.source) || !has(self.rotation) || (!has(self.rotation.period) && !has(self.rotation.trigger) && !has(self.rotation.revokeTrigger) && !has(self.rotation.holder))",message="the secret store rotates a credential from authentication.source: change the value in the store; rotation.period, trigger, revokeTrigger and holder do not apply (gracePeriod does)"
type M2MClientSpec struct {
	// ClientName is the display name of the client. It defaults to metadata.name.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	ClientName string `json:"clientName,omitempty"`

	// Description says what the client is for, for the humans who audit it.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Description string `json:"description,omitempty"`

	// Scopes are the scopes this client may be granted. A token request that names no scope is
	// granted all of them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	Scopes []Scope `json:"scopes,omitempty"`

	// TrustedMetadata is a free-form JSON object that describes the client to resource servers,
	// for example the owning team. Only cluster users who may edit the M2MClient can change it.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	TrustedMetadata map[string]apiextensionsv1.JSON `json:"trustedMetadata,omitempty"`

	// Audiences are the audiences this client may request with the "audience" or "resource"
	// token request parameters. A request that names none gets all of them. A client with none
	// gets the token server's default audience (the issuer URL unless --default-audience sets
	// it), which every such client shares.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	Audiences []Audience `json:"audiences,omitempty"`

	// TokenTTL is the lifetime of the access tokens issued to this client, from 1m to 24h.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="tokenTTL must be between 1m and 24h"
	TokenTTL *metav1.Duration `json:"tokenTTL,omitempty"`

	// TokenClaims are static claims added to every access token of this client, as a JSON
	// object of at most 64 claims. A name that equals a claim the token server sets or reserves
	// (iss, sub, aud, exp, client_id, scope, cnf, act, ... in any case) is refused. A top-level
	// string value that holds "${" is a template of trustedMetadata: ${name} stands for the entry
	// name (a string, number or boolean), $$ for a literal $; in a template a lone $ or an unknown
	// name is refused. A string without "${" is issued as written.
	// +optional
	TokenClaims TokenClaims `json:"tokenClaims,omitempty"`

	// IssuanceLimit overrides, for this client, the token server's limit on the token requests
	// of each authenticated client (its flags --issuance-per-minute and --issuance-burst); a
	// client over it gets 429. The limit holds on each token-server replica apart. An administrator caps overrides per namespace
	// with the annotations m2m.dev/max-issuance-per-minute and m2m.dev/max-issuance-burst
	// (admission policy m2m-namespace-issuance-limit). Unset: the token server's limit. A token
	// server whose limit is off (--issuance-per-minute=0) limits no client, whatever this says.
	// +optional
	IssuanceLimit *IssuanceLimit `json:"issuanceLimit,omitempty"`

	// DPoP governs sender-constrained tokens (RFC 9449) for this client. A token request that
	// carries a valid DPoP proof gets a token bound to the proof's key (cnf.jkt, token_type DPoP)
	// whatever this says; with required: true, a request without a proof is refused. An
	// administrator requires it for every client of a namespace with the annotation
	// m2m.dev/require-dpop: "true" (admission policy m2m-namespace-require-dpop).
	// +optional
	DPoP *DPoPPolicy `json:"dpop,omitempty"`

	// Disabled stops the token server from issuing tokens to this client. Its credentials are
	// kept, so enabling it again restores access without a new secret. Introspection reports its
	// tokens inactive at once, and the token server's revocation list makes verifiers of
	// pkg/m2mauth refuse them within seconds; tokens issued before the disable stay refused
	// there after the client is enabled again (ClientIDBinding status.tokensRevokedBefore).
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// RevokeTokensIssuedBefore revokes the tokens issued to this client before this time: the
	// token server publishes it in its revocation list, and verifiers of pkg/m2mauth refuse
	// those tokens (whose iat is earlier, at one-second precision) within seconds. Tokens issued
	// at or after it are not affected. `kubectl m2m revoke NAME` sets it to now. It revokes
	// tokens, not credentials: `kubectl m2m rotate --revoke-previous` refuses earlier secrets.
	// Verifiers that do not read the revocation list (introspection aside) still accept the
	// tokens until they expire.
	// +optional
	RevokeTokensIssuedBefore *metav1.Time `json:"revokeTokensIssuedBefore,omitempty"`

	// ClientID imports an existing client ID, for example from another OAuth provider. When it is
	// unset the manager generates one. It cannot be changed or removed once set, and can only be
	// added to an existing client with the value the manager already generated.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._~-]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clientID is immutable"
	ClientID string `json:"clientID,omitempty"`

	// Secret describes the Secret that the manager writes the credentials into.
	// +optional
	// +kubebuilder:default={}
	Secret SecretTemplate `json:"secret,omitempty"`

	// Rotation is the rotation policy of the client secret.
	// +optional
	// +kubebuilder:default={}
	Rotation RotationPolicy `json:"rotation,omitempty"`

	// Authentication says how the client may prove who it is at the token endpoint: with the
	// client secret the manager keeps in its Secret, with a token of a ServiceAccount of its
	// namespace, or both.
	// +optional
	// +kubebuilder:default={}
	Authentication ClientAuthentication `json:"authentication,omitempty"`

	// Rollout restarts named workloads of the namespace after each new credential, for
	// consumers that read the Secret only at start.
	// +optional
	Rollout *RolloutPolicy `json:"rollout,omitempty"`
}

// DPoPPolicy says whether a client must prove possession of a key (RFC 9449) for its tokens.
type DPoPPolicy struct {
	// Required refuses the client's token requests that carry no DPoP proof (error
	// invalid_dpop_proof), so that every token it gets is bound to a key it holds: a copied
	// token is then of no use without the key, at the resource servers that check the binding.
	// +optional
	Required bool `json:"required,omitempty"`
}

// IssuanceLimit is a token bucket: the client may make Burst token requests at once, and
// PerMinute a minute in the long run, to each token-server replica. Whole numbers, since a CRD holds no
// fractions: a minute, not a second, is the unit so that rates under one a second can be said.
type IssuanceLimit struct {
	// PerMinute is how many token requests a minute the client may make in the long run to
	// each token-server replica, from 1 to 1,000,000.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	PerMinute int32 `json:"perMinute"`

	// Burst is how many token requests the client may make at once to each token-server
	// replica, from 1 to 100,000: after a pause, its bucket holds that many again.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	Burst int32 `json:"burst"`
}

// ClientAuthentication lists the ways a client may authenticate. At least one is enabled.
// +kubebuilder:validation:XValidation:rule="!has(self.clientSecret) || self.clientSecret || has(self.keyPair) || (has(self.serviceAccounts) && size(self.serviceAccounts) > 0) || (has(self.federated) && size(self.federated) > 0) || (has(self.publicKeys) && size(self.publicKeys) > 0) || (has(self.podCertificates) && size(self.podCertificates.serviceAccounts) > 0)",message="a client needs a way to authenticate: keep clientSecret, or set keyPair, or name serviceAccounts, federated identities, publicKeys or podCertificates"
// +kubebuilder:validation:XValidation:rule="!has(self.keyPair) || !has(self.clientSecret) || !self.clientSecret",message="the manager generates a client secret or a key pair, not both: remove clientSecret, or set it to false"
// +kubebuilder:validation:XValidation:rule="!has(self.source) || has(self.keyPair) || !has(self.clientSecret) || self.clientSecret",message="source supplies a client secret or a key pair's private key: keep clientSecret, or set keyPair"
type ClientAuthentication struct {
	// ClientSecret lets the client authenticate with the client secret that the manager generates,
	// keeps in the Secret and rotates. Default true, unless keyPair is set. When false, no secret
	// exists anywhere: the Secret carries no client_secret, and the secrets accepted before expire
	// after the grace period.
	// +optional
	ClientSecret *bool `json:"clientSecret,omitempty"`

	// KeyPair makes the manager generate a key pair instead of a client secret: the private key
	// goes into the Secret (private_key, PKCS #8 PEM), the public key into status, and the client
	// signs RFC 7523 client assertions (private_key_jwt) with it, naming the key by its RFC 7638
	// thumbprint as kid. spec.rotation rotates the key pair as it would a secret; the previous
	// public key is accepted for the grace period. No secret that could be replayed ever leaves
	// the pod.
	// +optional
	KeyPair *KeyPairPolicy `json:"keyPair,omitempty"`

	// ServiceAccounts names ServiceAccounts of the client's namespace whose tokens may act as the
	// client: a pod running as one sends a projected ServiceAccount token whose audience is the
	// token server's issuer URL as client_assertion (client_assertion_type
	// urn:ietf:params:oauth:client-assertion-type:jwt-bearer), with this client's client_id.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`

	// Federated names workloads outside the cluster (another cluster, a CI system, a cloud) that
	// may act as the client: a token of Issuer whose sub is Subject and whose aud is the token
	// server's issuer URL, sent as client_assertion with this client's client_id. Only issuers
	// the administrator configured on the token server (--federated-issuer) are trusted; others
	// never match.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Federated []FederatedIdentity `json:"federated,omitempty"`

	// PublicKeys are public keys (JWK, RFC 7517) of key pairs held outside the cluster (an HSM, a
	// cloud KMS) with which the client signs RFC 7523 client assertions (private_key_jwt): iss
	// and sub are the client ID, aud is the token server's issuer URL alone, exp at most 5
	// minutes after iat, and a jti not used before.
	// +optional
	// +listType=map
	// +listMapKey=kid
	// +kubebuilder:validation:MaxItems=8
	PublicKeys []ClientPublicKey `json:"publicKeys,omitempty"`

	// PodCertificates lets pods of the named ServiceAccounts authenticate with mutual TLS
	// (RFC 8705 tls_client_auth) using the certificate the kubelet obtains for them from the
	// manager's signer m2m.dev/pod-client (a podCertificate projected volume, KEP-4317). The
	// tokens they get are bound to that certificate (cnf x5t#S256): no secret exists, and a
	// copied token is useless without the pod's private key.
	// +optional
	PodCertificates *PodCertificatePolicy `json:"podCertificates,omitempty"`

	// Source names a Secret of the client's namespace that something other than the manager
	// writes (External Secrets Operator, Vault Secrets Operator, Sealed Secrets), whose entry is
	// the client's credential: the client secret, or for keyPair the PKCS #8 PEM private key. The
	// manager then never generates a credential for the client and never writes the source: it
	// waits (Ready False, SourceSecretMissing) while the source or its entry is missing, refuses
	// an unfit value (WeakSecret), accepts the value's hash once present, and only then copies the
	// value into the client's own Secret, which pods read. A new value in the source is a
	// rotation: the previous one stays accepted for spec.rotation.gracePeriod. The store is the
	// only origin of the credential, so the manager's rotations (spec.rotation.period, trigger,
	// revokeTrigger, holder and the rotation annotations) do not apply.
	// +optional
	Source *CredentialSource `json:"source,omitempty"`
}

// PodCertificatePolicy names the ServiceAccounts whose pods may hold a certificate for the
// client.
type PodCertificatePolicy struct {
	// ServiceAccounts of the client's namespace. The signer issues a certificate only to a pod
	// running as one of them, and the token server accepts it for this client only while the
	// ServiceAccount is still listed here.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccounts []string `json:"serviceAccounts"`
}

// CredentialSource is a Secret entry that a secret store writes.
type CredentialSource struct {
	// Name of the Secret, in the namespace of the M2MClient. The Secret must opt in: its
	// annotation m2m.dev/source-for names this client (the writer of the Secret adds it, as the
	// secret store's template can), so that a client cannot take a Secret of its namespace that
	// was not meant for it. It cannot be the client's own credentials Secret, nor any Secret that
	// the manager writes.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key is the entry of the Secret's data that holds the credential. Defaults to client_secret,
	// or to private_key for a keyPair.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// SourceKey is the entry of obj's source Secret that holds its credential: spec's, else
// client_secret, or private_key for a key pair. It is "" for a client without a source.
func SourceKey(obj *M2MClient) string {
	src := obj.Spec.Authentication.Source
	switch {
	case src == nil:
		return ""
	case src.Key != "":
		return src.Key
	case obj.Spec.Authentication.KeyPair != nil:
		return SecretKeyPrivateKey
	}
	return SecretKeyClientSecret
}

// ClientPublicKey is a public JWK: EC P-256 (ES256), RSA of 2048 to 8192 bits with exponent
// 65537 (RS256), or Ed25519 (EdDSA).
// +kubebuilder:validation:XValidation:rule="self.kty == 'EC' ? (self.alg == 'ES256' && has(self.crv) && self.crv == 'P-256' && has(self.x) && has(self.y)) : self.kty == 'RSA' ? (self.alg == 'RS256' && has(self.n) && has(self.e)) : (self.alg == 'EdDSA' && has(self.crv) && self.crv == 'Ed25519' && has(self.x))",message="the key's kty, alg and parameters do not match: EC/ES256 with crv P-256, x and y; RSA/RS256 with n and e; OKP/EdDSA with crv Ed25519 and x"
type ClientPublicKey struct {
	// KeyID is the kid that the client's assertions name in their header.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	KeyID string `json:"kid"`
	// KeyType is EC, RSA or OKP.
	// +required
	// +kubebuilder:validation:Enum=EC;RSA;OKP
	KeyType string `json:"kty"`
	// Algorithm is ES256, RS256 or EdDSA.
	// +required
	// +kubebuilder:validation:Enum=ES256;RS256;EdDSA
	Algorithm string `json:"alg"`
	// Curve is P-256 for EC keys and Ed25519 for OKP keys.
	// +optional
	// +kubebuilder:validation:Enum=P-256;Ed25519
	Curve string `json:"crv,omitempty"`
	// X is the x coordinate (EC) or the public key (OKP), base64url.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	X string `json:"x,omitempty"`
	// Y is the y coordinate of an EC key, base64url.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Y string `json:"y,omitempty"`
	// N is the modulus of an RSA key, base64url.
	// +optional
	// +kubebuilder:validation:MaxLength=1400
	N string `json:"n,omitempty"`
	// E is the exponent of an RSA key, base64url (AQAB).
	// +optional
	// +kubebuilder:validation:MaxLength=8
	E string `json:"e,omitempty"`
}

// KeyAlgorithm is the signature algorithm of a generated key pair.
// +kubebuilder:validation:Enum=ES256;EdDSA;RS256
type KeyAlgorithm string

const (
	// KeyAlgorithmES256 is ECDSA with P-256 and SHA-256.
	KeyAlgorithmES256 KeyAlgorithm = "ES256"
	// KeyAlgorithmEdDSA is Ed25519.
	KeyAlgorithmEdDSA KeyAlgorithm = "EdDSA"
	// KeyAlgorithmRS256 is RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key.
	KeyAlgorithmRS256 KeyAlgorithm = "RS256"
)

// KeyPairPolicy describes the key pair the manager generates for a client.
type KeyPairPolicy struct {
	// Algorithm of the key pair: ES256 (default), EdDSA, or RS256 with a 2048-bit key.
	// Changing it rotates the key pair.
	// +optional
	// +kubebuilder:default=ES256
	Algorithm KeyAlgorithm `json:"algorithm,omitempty"`
}

// FederatedIdentity is a workload identity of a federated issuer.
type FederatedIdentity struct {
	// Issuer is the issuer URL, exactly as the token's iss claim has it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	Issuer string `json:"issuer"`

	// Subject is the token's sub claim, exactly.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Subject string `json:"subject"`
}

// SecretAuthentication reports whether obj may authenticate with a client secret: unless
// spec.authentication.clientSecret is false, or unset with a keyPair.
func SecretAuthentication(obj *M2MClient) bool {
	a := obj.Spec.Authentication
	if a.ClientSecret == nil {
		return a.KeyPair == nil
	}
	return *a.ClientSecret && a.KeyPair == nil
}

// KeyPairAuthentication returns the algorithm of the key pair the manager generates for obj, or
// "" when it generates none.
func KeyPairAuthentication(obj *M2MClient) KeyAlgorithm {
	kp := obj.Spec.Authentication.KeyPair
	switch {
	case kp == nil:
		return ""
	case kp.Algorithm == "":
		return KeyAlgorithmES256
	}
	return kp.Algorithm
}

// SecretTemplate describes the Secret that holds a client's credentials, under the keys
// client_id, client_secret, token_url and issuer.
// +kubebuilder:validation:XValidation:rule="!has(self.keys) || !has(self.templates) || self.keys.all(k, !(self.keys[k] in self.templates))",message="a name of spec.secret.keys is also a template's: each entry of the Secret has one source"
type SecretTemplate struct {
	// Name of the Secret, in the namespace of the M2MClient. Defaults to
	// "<metadata.name>-credentials". It cannot be changed.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`

	// Labels are copied onto the Secret, for example to select it for replication: at most 32,
	// each name at most 317 characters (a 253-character prefix, "/", 63 characters) and each
	// value at most 63, as Kubernetes allows on the Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && size(self[k]) <= 63)",message="a label name is at most 317 characters and its value at most 63"
	Labels map[string]string `json:"labels,omitempty"`

	// Annotations are copied onto the Secret, for example to trigger a reloader: at most 32,
	// each name at most 317 characters and each value at most 1,024. The bound keeps every
	// client small in the manager's memory, which holds them to write the Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && size(self[k]) <= 1024)",message="an annotation name is at most 317 characters and its value at most 1024"
	Annotations map[string]string `json:"annotations,omitempty"`

	// Keys copies entries of the Secret under the names an application expects, for example
	// {client_id: CLIENT_ID, token_url: OAUTH_TOKEN_URL}: each name of the manager's (client_id,
	// client_secret, private_key, next_client_secret, next_private_key, token_url, issuer,
	// public_token_url, ca.crt) to a name of its own. The entries under the manager's names stay,
	// because the manager, pkg/m2mauth and kubectl m2m read them. A copy exists while its
	// original does and changes with it in the same write. A name that leaves this map leaves the
	// Secret; an entry of that name that someone else wrote is overwritten while it is here.
	// +optional
	// +kubebuilder:validation:MaxProperties=9
	// +kubebuilder:validation:XValidation:rule="self.all(k, k in ['client_id', 'client_secret', 'private_key', 'next_client_secret', 'next_private_key', 'token_url', 'issuer', 'public_token_url', 'ca.crt'])",message="keys copies the manager's entries only: client_id, client_secret, private_key, next_client_secret, next_private_key, token_url, issuer, public_token_url, ca.crt"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(self[k] in ['client_id', 'client_secret', 'private_key', 'next_client_secret', 'next_private_key', 'token_url', 'issuer', 'public_token_url', 'ca.crt']) && self[k] != '.' && self[k] != '..' && !self[k].startsWith('..'))",message="a copy cannot be named after an entry of the manager's, nor '.', '..' or '..*'"
	// +kubebuilder:validation:XValidation:rule="self.all(k, self.all(j, j == k || self[j] != self[k]))",message="two entries cannot be copied under one name"
	Keys map[string]SecretDataKey `json:"keys,omitempty"`

	// Templates adds entries built from the Secret's, for an application that reads a whole file,
	// for example {"app.env": "CLIENT_ID=${client_id}\nCLIENT_SECRET=${client_secret}\n"}: at
	// most 8, each name a Secret data key and each text at most 2,048 characters, in which
	// ${name} stands for the manager's entry name and $$ for a $. An entry exists while every
	// entry it names does (no public_token_url without a public door, no client_secret for a
	// key pair), and changes with them in the same write, so that it never carries a secret the
	// token server does not accept yet. Together with keys, at most 64 KiB once rendered; beyond,
	// the Secret is not written and Ready says why. Names follow the rules of keys.
	// +optional
	// +kubebuilder:validation:MaxProperties=8
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 253 && k.matches('^[-._a-zA-Z0-9]+$') && k != '.' && k != '..' && !k.startsWith('..'))",message="a template's name must be a Secret data key: letters, digits, '-', '_' and '.', at most 253 characters, not '.', '..' or '..*'"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['client_id', 'client_secret', 'private_key', 'next_client_secret', 'next_private_key', 'token_url', 'issuer', 'public_token_url', 'ca.crt']))",message="a template cannot be named after an entry of the manager's"
	Templates map[string]SecretDataTemplate `json:"templates,omitempty"`

	// DeletionPolicy says what happens to the Secret when the M2MClient is deleted. Delete (the
	// default) lets the garbage collector delete it with the client, through its owner
	// reference. Orphan gives the Secret no owner reference, so that it outlives the client (a
	// GitOps replace, a namespace migration, an accidental delete): an M2MClient created again
	// with the same namespace and name takes it back with its client ID and secret, and pods
	// that mount it never see the replace. Changing the policy updates the Secret.
	// +optional
	// +kubebuilder:default=Delete
	DeletionPolicy SecretDeletionPolicy `json:"deletionPolicy,omitempty"`
}

// SecretDeletionPolicy says whether a credentials Secret is deleted with its M2MClient.
// +kubebuilder:validation:Enum=Delete;Orphan
type SecretDeletionPolicy string

const (
	// SecretDeletionPolicyDelete deletes the Secret with the M2MClient (its owner).
	SecretDeletionPolicyDelete SecretDeletionPolicy = "Delete"
	// SecretDeletionPolicyOrphan keeps the Secret when the M2MClient is deleted, for an
	// M2MClient of the same namespace and name to take back.
	SecretDeletionPolicyOrphan SecretDeletionPolicy = "Orphan"
)

// RotationPolicy says when the client secret is replaced by a new one, and how long the previous
// secret stays accepted so that pods reading the Secret late keep working.
type RotationPolicy struct {
	// Period rotates the secret when lastRotationTime + period is reached. At least 1h. Unset
	// means no scheduled rotation.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h')",message="rotation.period must be at least 1h"
	Period *metav1.Duration `json:"period,omitempty"`

	// GracePeriod is how long the previous secret stays accepted after a rotation, from 0 to
	// 720h (30 days). It should exceed the time pods take to see a new Secret value.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('720h')",message="rotation.gracePeriod must be between 0s and 720h"
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`

	// Trigger rotates the secret once each time its value changes, for GitOps: change it in Git
	// to rotate. The value last acted on is in status.lastRotationTrigger.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Trigger string `json:"trigger,omitempty"`

	// RevokeTrigger, each time it changes to a new non-empty value, rotates the credential (a
	// secret or a key pair) and then stops accepting every earlier one at once instead of after
	// the grace period: the answer to a leak, from Git. Pods that still hold an earlier
	// credential are refused until they read the Secret again; tokens already issued stay valid
	// until they expire. Emptying it asks for nothing. The value last acted on is in
	// status.lastRevokeTrigger.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RevokeTrigger string `json:"revokeTrigger,omitempty"`

	// Holder is a rotation that the credential's holder completes, for a holder outside the
	// cluster that must fetch, deploy and confirm a new credential: a new id with state Started
	// issues a next credential into the Secret under next_client_secret (next_private_key for a
	// key pair) and accepts it alongside the current one, both with no deadline; state Completed
	// with the same id makes it the only one (the Secret's client_secret becomes it and the
	// previous one is refused at once); Cancelled discards it. Each id is started once and ended
	// once, so a replayed Git state does nothing. The state acted on is in status.holderRotation.
	// +optional
	Holder *HolderRotation `json:"holder,omitempty"`
}

// RotateAnnotation rotates the client secret once for each distinct value it is given, for
// `kubectl annotate m2mclient NAME m2m.dev/rotate=$(date +%s) --overwrite`. A value over
// MaxTriggerLength characters is refused at admission, and ignored where the policy is not
// installed.
const RotateAnnotation = "m2m.dev/rotate"

// RevokePreviousAnnotation, for each distinct non-empty value it is given, rotates the
// credential and stops accepting every earlier one at once, as spec.rotation.revokeTrigger does:
// `kubectl m2m rotate NAME --revoke-previous` sets it. Its values are bounded as
// RotateAnnotation's are.
const RevokePreviousAnnotation = "m2m.dev/revoke-previous"

// ClientState is whether the token server issues tokens to a client.
// +kubebuilder:validation:Enum=Active;Disabled
type ClientState string

const (
	// ClientStateActive means the token server issues tokens to the client.
	ClientStateActive ClientState = "Active"
	// ClientStateDisabled means spec.disabled is set and the token server refuses the client.
	ClientStateDisabled ClientState = "Disabled"
)

// AcceptedSecret is a credential that the token server accepts: the hash of a client secret, or
// the public key of a key pair the manager generated.
//
// The token server accepts a presented secret exactly when "sha256:" followed by the unpadded
// base64url SHA-256 of the secret equals Hash, the entry has no PublicKey, and ExpiresAt is unset
// or in the future. It accepts a client assertion signed by PublicKey while ExpiresAt is unset or
// in the future.
type AcceptedSecret struct {
	// Hash is "sha256:" followed by the unpadded base64url (RFC 4648 §5) SHA-256 of the secret,
	// or for a key pair, of its public key's RFC 7638 thumbprint input, so that Hash without the
	// prefix is the kid.
	// +required
	// +kubebuilder:validation:Pattern=`^sha256:[A-Za-z0-9_-]{43}$`
	Hash string `json:"hash"`

	// LastFour are the last four characters of the secret, to tell secrets apart.
	// +optional
	// +kubebuilder:validation:MaxLength=4
	LastFour string `json:"lastFour,omitempty"`

	// PublicKey is the public key of a generated key pair, whose private key is in the Secret.
	// An entry with a PublicKey never accepts a client secret.
	// +optional
	PublicKey *ClientPublicKey `json:"publicKey,omitempty"`

	// CreatedAt is when the manager first accepted the secret. Times in status must be in the
	// canonical RFC 3339 form that Go reads (an upper-case T and Z): the API server's date-time
	// check also takes a lower-case one, which no client of M2MClients could decode.
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	CreatedAt metav1.Time `json:"createdAt"`

	// ExpiresAt is when the secret stops being accepted. Unset means it does not expire.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// MAC authenticates the entry: the manager's HMAC-SHA256 over the client's namespace, name
	// and UID, the client ID, Hash, ExpiresAt and PublicKey (with a different purpose for secrets
	// and for keys), under a key only the manager and the token
	// server can read. The token server ignores an entry whose MAC does not verify, so that
	// whoever can write status cannot add a secret they know.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	MAC string `json:"mac,omitempty"`
}

// M2MClientStatus is the observed state of an M2MClient.
type M2MClientStatus struct {
	// ClientID is the client ID, generated by the manager or imported from spec.clientID. The
	// token server looks clients up by this field.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._~-]+$`
	ClientID string `json:"clientID,omitempty"`

	// ClientIDMAC authenticates ClientID: the manager's HMAC-SHA256 over the client's namespace,
	// name and UID and the client ID. The token server finds no client by an ID whose MAC does not
	// verify.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ClientIDMAC string `json:"clientIDMAC,omitempty"`

	// SecretName is the name of the Secret that holds the credentials.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// State is Active, or Disabled when spec.disabled is set.
	// +optional
	State ClientState `json:"state,omitempty"`

	// AcceptedSecrets are the credentials the token server accepts: the hash of the current
	// client secret or the public key of the current key pair, and previous ones until they
	// expire.
	// +optional
	// +listType=map
	// +listMapKey=hash
	// +kubebuilder:validation:MaxItems=100
	AcceptedSecrets []AcceptedSecret `json:"acceptedSecrets,omitempty"`

	// LastRotationTime is when the current secret replaced the previous one, or was first created.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`

	// NextRotationTime is when the next scheduled rotation is due, when rotation.period is set.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	NextRotationTime *metav1.Time `json:"nextRotationTime,omitempty"`

	// LastRotationTrigger is the value of spec.rotation.trigger that was last acted on.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	LastRotationTrigger string `json:"lastRotationTrigger,omitempty"`

	// LastRotateAnnotation is the value of the m2m.dev/rotate annotation that was last acted on.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	LastRotateAnnotation string `json:"lastRotateAnnotation,omitempty"`

	// LastRevokeTrigger is the value of spec.rotation.revokeTrigger that was last acted on.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	LastRevokeTrigger string `json:"lastRevokeTrigger,omitempty"`

	// LastRevokeAnnotation is the value of the m2m.dev/revoke-previous annotation that was last
	// acted on.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	LastRevokeAnnotation string `json:"lastRevokeAnnotation,omitempty"`

	// RevocationPending is true from the moment a revocation accepts its new credential until the
	// Secret carries it and every earlier credential is dropped, so that a manager that dies in
	// between finishes the revocation rather than give the earlier credentials a grace period.
	// +optional
	RevocationPending bool `json:"revocationPending,omitempty"`

	// HolderRotation is the rotation of spec.rotation.holder that was last acted on, and while it
	// is started, the hash of its next credential.
	// +optional
	HolderRotation *HolderRotationStatus `json:"holderRotation,omitempty"`

	// LastRevocationTime is when the manager last dropped every credential earlier than the
	// current one (spec.rotation.revokeTrigger or the m2m.dev/revoke-previous annotation). Tokens
	// issued before it may have been issued to an earlier credential; they stay valid until they
	// expire.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	LastRevocationTime *metav1.Time `json:"lastRevocationTime,omitempty"`

	// ObservedGeneration is the metadata.generation that this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions describe the client's state: the Ready condition and its reasons, and the kstatus
	// conditions Reconciling and Stalled derived from it; the Condition and Reason constants of this package.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// M2MClient is a machine-to-machine OAuth 2.0 client. The manager keeps its credentials in a
// Secret in the same namespace, and the token server issues JWT access tokens to it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=m2m,categories=m2m
// +kubebuilder:printcolumn:name="Client ID",type=string,JSONPath=`.status.clientID`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Secret",type=string,priority=1,JSONPath=`.status.secretName`
// +kubebuilder:printcolumn:name="Last Rotation",type=date,JSONPath=`.status.lastRotationTime`
// +kubebuilder:printcolumn:name="Next Rotation",type=string,priority=1,JSONPath=`.status.nextRotationTime`,description="When the next scheduled rotation is due (a time to come, which a date column would show as <invalid>)"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// status.clientID is a selectable field, so that whoever holds a token or a client ID finds its
// client among those they may list: kubectl get m2m -A --field-selector status.clientID=ID.
// +kubebuilder:selectablefield:JSONPath=`.status.clientID`
// +kubebuilder:validation:XValidation:rule="(has(self.spec.secret) && has(self.spec.secret.name)) || size(self.metadata.name) <= 241",message="metadata.name is too long for the default Secret name; set spec.secret.name"
// +kubebuilder:validation:XValidation:rule="(has(self.spec.secret) && has(self.spec.secret.name) ? self.spec.secret.name : self.metadata.name + '-credentials') == (has(oldSelf.spec.secret) && has(oldSelf.spec.secret.name) ? oldSelf.spec.secret.name : oldSelf.metadata.name + '-credentials')",message="spec.secret.name is immutable"
// +kubebuilder:validation:XValidation:rule="has(oldSelf.spec.clientID) || !has(self.spec.clientID) || (has(oldSelf.status) && has(oldSelf.status.clientID) && self.spec.clientID == oldSelf.status.clientID)",message="spec.clientID can only be added to an existing client with the value of status.clientID"
type M2MClient struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the client.
	// +required
	Spec M2MClientSpec `json:"spec"`

	// status is the state the manager observed.
	// +optional
	Status M2MClientStatus `json:"status,omitempty"`
}

// M2MClientList is a list of M2MClients.
// +kubebuilder:object:root=true
type M2MClientList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the M2MClients.
	Items []M2MClient `json:"items"`
}

func init() {
	SchemeBuilder.Register(&M2MClient{}, &M2MClientList{})
}
