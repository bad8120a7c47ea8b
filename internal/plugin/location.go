package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// installLocation is where the install's token server is, as the manager publishes it in the
// ConfigMap m2mv1alpha1.TokenServerConfigMap of its namespace. why and verify read it there and
// never from a client's credentials Secret: whoever may edit Secrets in the client's namespace
// can point that Secret at a server of theirs, which would receive the caller's Kubernetes token
// (why) or vouch for tokens they signed (verify). Only administrators and the manager may write
// the ConfigMap.
type installLocation struct {
	issuer, tokenURL string
	// publicTokenURL is the public door's token URL, when the install has one.
	publicTokenURL string
	// ca is the CA bundle that signs the token server's certificate; its pem is nil when the
	// install publishes none (an http issuer, or a certificate the system's roots verify).
	ca caBundle
}

// readInstallLocation reads the ConfigMap of the install whose manager runs in namespace ns.
func readInstallLocation(ctx context.Context, c client.Reader, ns string) (installLocation, error) {
	key := types.NamespacedName{Namespace: ns, Name: m2mv1alpha1.TokenServerConfigMap}
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, key, cm); err != nil {
		return installLocation{}, fmt.Errorf("reading ConfigMap %s, where the manager publishes where its token server is: %w", key, err)
	}
	loc := installLocation{issuer: cm.Data[m2mv1alpha1.SecretKeyIssuer], tokenURL: cm.Data[m2mv1alpha1.SecretKeyTokenURL],
		publicTokenURL: cm.Data[m2mv1alpha1.SecretKeyPublicTokenURL]}
	if loc.issuer == "" || loc.tokenURL == "" {
		return installLocation{}, fmt.Errorf("ConfigMap %s has no %s or %s: it is not the manager's (the manager writes both)", key, m2mv1alpha1.SecretKeyIssuer, m2mv1alpha1.SecretKeyTokenURL)
	}
	if pem := cm.Data[m2mv1alpha1.SecretKeyCA]; pem != "" {
		loc.ca = caBundle{"the " + m2mv1alpha1.SecretKeyCA + " of ConfigMap " + key.String(), []byte(pem)}
	}
	return loc, nil
}

// registerSystemNamespaceFlag registers --system-namespace for cmd, which reads the install's
// ConfigMap there.
func registerSystemNamespaceFlag(f *commandFlags, flags *pflag.FlagSet, cmd string) {
	flags.StringVar(&f.systemNamespace, "system-namespace", signingkeys.DefaultSecret.Namespace,
		"the manager's namespace, whose ConfigMap "+m2mv1alpha1.TokenServerConfigMap+" says where the token server is ("+cmd+" never takes it from a client's Secret, which tenants can write)")
}

// url is the install's token URL: the in-cluster one, or with public the public door's.
func (l installLocation) url(public bool) (string, error) {
	data := map[string][]byte{m2mv1alpha1.SecretKeyTokenURL: []byte(l.tokenURL)}
	if l.publicTokenURL != "" {
		data[m2mv1alpha1.SecretKeyPublicTokenURL] = []byte(l.publicTokenURL)
	}
	return urlOf(data, public, "ConfigMap "+m2mv1alpha1.TokenServerConfigMap)
}

var errPublicAndTokenURL = errors.New("--public and --token-url both choose the token endpoint: pass one")

// urlOf is the token URL under data's token_url, or with public its public_token_url, which
// only an install with a public door writes.
func urlOf(data map[string][]byte, public bool, from string) (string, error) {
	if !public {
		return string(data[m2mv1alpha1.SecretKeyTokenURL]), nil
	}
	u := string(data[m2mv1alpha1.SecretKeyPublicTokenURL])
	if u == "" {
		return "", fmt.Errorf("%s has no %s: the install has no public door (the manager runs without --in-cluster-url, and %s is the only door)", from, m2mv1alpha1.SecretKeyPublicTokenURL, m2mv1alpha1.SecretKeyTokenURL)
	}
	return u, nil
}

func registerPublicFlag(f *commandFlags, flags *pflag.FlagSet, whose string) {
	flags.BoolVar(&f.public, "public", false, "go through the public door, as a machine outside the cluster does: "+whose+" "+m2mv1alpha1.SecretKeyPublicTokenURL+" instead of its "+m2mv1alpha1.SecretKeyTokenURL+" (the in-cluster Service)")
}
