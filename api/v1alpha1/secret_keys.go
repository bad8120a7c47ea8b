package v1alpha1

// CredentialsSecretKeys are the keys the manager writes into a credentials Secret (the
// SecretKey constants and the next_ keys of a holder rotation): the names spec.secret.keys can
// copy and spec.secret.templates can refer to as ${name}, and the names neither may write.
var CredentialsSecretKeys = []string{
	SecretKeyClientID, SecretKeyClientSecret, SecretKeyPrivateKey,
	NextSecretKeyPrefix + SecretKeyClientSecret, NextSecretKeyPrefix + SecretKeyPrivateKey,
	SecretKeyTokenURL, SecretKeyIssuer, SecretKeyPublicTokenURL, SecretKeyCA,
}

// MaxDerivedSecretBytes bounds what spec.secret.keys and spec.secret.templates add to a
// credentials Secret together: a short template can repeat a long value (ca.crt), and the
// manager holds every credentials Secret in its cache.
const MaxDerivedSecretBytes = 64 << 10

// SecretDataKey is the name of an entry of a Secret's data, as Kubernetes allows it.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
type SecretDataKey string

// SecretDataTemplate is the text of an entry that spec.secret.templates adds to the Secret:
// ${name} stands for the entry name of the Secret (client_id, client_secret, private_key,
// next_client_secret, next_private_key, token_url, issuer, public_token_url, ca.crt), $$ for a
// literal $, and every other character for itself.
// +kubebuilder:validation:MaxLength=2048
// +kubebuilder:validation:Pattern=`^(?:[^$]|\$\$|\$\{(?:client_id|client_secret|private_key|next_client_secret|next_private_key|token_url|issuer|public_token_url|ca\.crt)\})*$`
type SecretDataTemplate string
