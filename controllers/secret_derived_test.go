package controllers

import (
	"errors"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestRenderDerived(t *testing.T) {
	own := func(extra map[string]string) map[string]string {
		d := map[string]string{"client_id": "m2m-a", "client_secret": "s3cret", "token_url": "https://t/oauth2/token", "issuer": "https://t"}
		maps.Copy(d, extra)
		return d
	}
	for name, tc := range map[string]struct {
		tpl        m2mv1alpha1.SecretTemplate
		data       map[string]string
		annotation string
		want       map[string]string
		wantNote   string
		err        string
	}{
		"nothing asked adds nothing and leaves others' entries": {
			data: own(map[string]string{"theirs": "x"}), want: own(map[string]string{"theirs": "x"}),
		},
		"a key is copied under the new name and stays under the manager's": {
			tpl:  m2mv1alpha1.SecretTemplate{Keys: map[string]m2mv1alpha1.SecretDataKey{"client_id": "CLIENT_ID", "token_url": "OAUTH_TOKEN_URL"}},
			data: own(nil), want: own(map[string]string{"CLIENT_ID": "m2m-a", "OAUTH_TOKEN_URL": "https://t/oauth2/token"}),
			wantNote: "CLIENT_ID,OAUTH_TOKEN_URL",
		},
		"a template is rendered from the manager's entries": {
			tpl:  m2mv1alpha1.SecretTemplate{Templates: map[string]m2mv1alpha1.SecretDataTemplate{"app.env": "ID=${client_id}\nSECRET=${client_secret}\n"}},
			data: own(nil), want: own(map[string]string{"app.env": "ID=m2m-a\nSECRET=s3cret\n"}), wantNote: "app.env",
		},
		"a copy named after an entry of the manager's, past the CRD, is an error and replaces nothing": {
			tpl:  m2mv1alpha1.SecretTemplate{Keys: map[string]m2mv1alpha1.SecretDataKey{"client_id": "client_secret"}},
			data: own(nil), want: own(nil), err: "client_secret is an entry of the manager's",
		},
		"a copy of an entry the Secret lacks is absent": {
			tpl:  m2mv1alpha1.SecretTemplate{Keys: map[string]m2mv1alpha1.SecretDataKey{"public_token_url": "PUBLIC"}},
			data: own(nil), want: own(nil),
		},
		"a template naming an entry the Secret lacks is absent, not half built": {
			tpl:  m2mv1alpha1.SecretTemplate{Templates: map[string]m2mv1alpha1.SecretDataTemplate{"key.env": "K=${private_key}"}},
			data: own(nil), want: own(nil),
		},
		"an entry derived before and no longer asked for is removed, others' are kept": {
			tpl:  m2mv1alpha1.SecretTemplate{Keys: map[string]m2mv1alpha1.SecretDataKey{"client_id": "APP_CLIENT_ID"}},
			data: own(map[string]string{"CLIENT_ID": "m2m-a", "old.env": "x", "theirs": "y"}), annotation: "CLIENT_ID,old.env",
			want: own(map[string]string{"APP_CLIENT_ID": "m2m-a", "theirs": "y"}), wantNote: "APP_CLIENT_ID",
		},
		"an edited copy is restored": {
			tpl:  m2mv1alpha1.SecretTemplate{Keys: map[string]m2mv1alpha1.SecretDataKey{"client_secret": "CLIENT_SECRET"}},
			data: own(map[string]string{"CLIENT_SECRET": "tampered"}), annotation: "CLIENT_SECRET",
			want: own(map[string]string{"CLIENT_SECRET": "s3cret"}), wantNote: "CLIENT_SECRET",
		},
		"an annotation edited to name the manager's entries removes none of them": {
			data: own(nil), annotation: "client_secret,client_id,token_url,issuer", want: own(nil),
		},
		"a template the CRD should have refused is an error": {
			tpl:  m2mv1alpha1.SecretTemplate{Templates: map[string]m2mv1alpha1.SecretDataTemplate{"app.env": "P=${password}"}},
			data: own(nil), err: "unknown placeholder ${password}",
		},
		"a template that renders too large is an error": {
			tpl:  m2mv1alpha1.SecretTemplate{Templates: map[string]m2mv1alpha1.SecretDataTemplate{"big": m2mv1alpha1.SecretDataTemplate(strings.Repeat("${ca.crt}", 200))}},
			data: own(map[string]string{"ca.crt": strings.Repeat("C", 1000)}), err: "more than 65536 bytes",
		},
		"entries that are each small but together too large are an error": {
			tpl: m2mv1alpha1.SecretTemplate{
				Keys:      map[string]m2mv1alpha1.SecretDataKey{"ca.crt": "CA"},
				Templates: map[string]m2mv1alpha1.SecretDataTemplate{"a": "${ca.crt}${ca.crt}", "b": "${ca.crt}${ca.crt}"}},
			data: own(map[string]string{"ca.crt": strings.Repeat("C", 15<<10)}), err: "together they render to",
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := &corev1.Secret{Data: map[string][]byte{}}
			for k, v := range tc.data {
				s.Data[k] = []byte(v)
			}
			if tc.annotation != "" {
				s.Annotations = map[string]string{derivedKeysAnnotation: tc.annotation}
			}
			err := renderDerived(tc.tpl, s)
			if tc.err != "" {
				if !errors.Is(err, errDerivedEntries) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for k, v := range s.Data {
				got[k] = string(v)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("data %v, want %v", got, tc.want)
			}
			if note := s.Annotations[derivedKeysAnnotation]; note != tc.wantNote {
				t.Errorf("%s %q, want %q", derivedKeysAnnotation, note, tc.wantNote)
			}
		})
	}
}
