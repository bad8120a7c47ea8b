package m2mauth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Keys of the credentials Secret the manager writes (api/v1alpha1's SecretKey constants; a test
// keeps the two equal, so that this package need not import the API and its Kubernetes modules).
const (
	secretKeyClientID     = "client_id"
	secretKeyClientSecret = "client_secret"
	secretKeyTokenURL     = "token_url"
	secretKeyIssuer       = "issuer"
)

// TokenSourceOption configures NewTokenSource.
type TokenSourceOption func(*tokenSourceConfig)

type tokenSourceConfig struct {
	scopes []string
	params url.Values
	early  time.Duration
}

// Scopes asks for these scopes; by default the token gets all of the client's.
func Scopes(scopes ...string) TokenSourceOption {
	return func(c *tokenSourceConfig) { c.scopes = append(c.scopes, scopes...) }
}

// Audiences asks for a token for these audiences (the audience parameter).
func Audiences(audiences ...string) TokenSourceOption {
	return func(c *tokenSourceConfig) {
		for _, a := range audiences {
			c.params.Add("audience", a)
		}
	}
}

// RefreshBefore gets a new token this long before the current one expires (default 30s).
func RefreshBefore(d time.Duration) TokenSourceOption {
	return func(c *tokenSourceConfig) { c.early = d }
}

// NewTokenSource returns a token source for the client whose Secret is mounted at dir (the files
// client_id, client_secret and token_url). It reuses a token until shortly before it expires. It
// reads the files again when they change (the kubelet swaps the directory's ..data symlink when
// the Secret changes), and when the token server answers invalid_client it reads them again and
// retries once: a pod keeps working across a rotation without a restart. ctx bounds the file
// watch, and its oauth2.HTTPClient value, if any, is used for token requests.
func NewTokenSource(ctx context.Context, dir string, opts ...TokenSourceOption) (oauth2.TokenSource, error) {
	cfg := tokenSourceConfig{params: url.Values{}, early: 30 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	s := &fileTokenSource{ctx: ctx, dir: dir, cfg: cfg}
	if err := s.reload(); err != nil {
		return nil, err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := w.Add(dir); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	go func() {
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				// Any change in the directory, the ..data swap included: read the files again.
				_ = s.reload()
			case <-w.Errors:
			}
		}
	}()
	return oauth2.ReuseTokenSourceWithExpiry(nil, s, cfg.early), nil
}

// fileTokenSource gets a new token on every call, with the credentials last read from dir.
type fileTokenSource struct {
	ctx context.Context
	dir string
	cfg tokenSourceConfig

	mu    sync.Mutex
	creds clientcredentials.Config
}

func (s *fileTokenSource) reload() error {
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	id, err1 := read(secretKeyClientID)
	secret, err2 := read(secretKeyClientSecret)
	tokenURL, err3 := read(secretKeyTokenURL)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("reading the client credentials in %s: %w", s.dir, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds = clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: tokenURL, Scopes: s.cfg.scopes, EndpointParams: s.cfg.params}
	return nil
}

func (s *fileTokenSource) current() clientcredentials.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creds
}

// Token gets a token; after invalid_client it reads the files again and, if they changed,
// retries once: the watch may not have seen the new Secret yet.
func (s *fileTokenSource) Token() (*oauth2.Token, error) {
	creds := s.current()
	tok, err := creds.Token(s.ctx)
	var re *oauth2.RetrieveError
	if err == nil || !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		return tok, err
	}
	if rerr := s.reload(); rerr != nil {
		return nil, errors.Join(err, rerr)
	}
	if fresh := s.current(); fresh.ClientSecret != creds.ClientSecret || fresh.ClientID != creds.ClientID || fresh.TokenURL != creds.TokenURL {
		return fresh.Token(s.ctx)
	}
	return nil, err
}
