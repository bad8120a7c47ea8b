// Package volume writes files as the kubelet writes a mounted Secret, for make dev and the tests
// that play a pod: what a reader of the files sees during a change is what a pod sees.
package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Project writes data into dir as the kubelet writes a Secret volume: the files of a version in a
// directory of their own, the ..data link repointed to it in one rename, and each key a link
// through ..data. A reader never sees the tls.crt of one version with the tls.key of another,
// and a file watcher on a key sees its file replaced. Keys that left the Secret leave dir.
// Secret keys cannot start with "..", so no key names the links of the mechanism.
func Project(dir string, data map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	version, err := os.MkdirTemp(dir, "..version-")
	if err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(version, k), v, 0o600); err != nil {
			_ = os.RemoveAll(version)
			return err
		}
	}
	dataLink := filepath.Join(dir, "..data")
	previous, _ := os.Readlink(dataLink)
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		_ = os.RemoveAll(version)
		return err
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		_ = os.RemoveAll(version)
		return fmt.Errorf("switching %s to the new files: %w", dataLink, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, kept := data[e.Name()]; !kept && !strings.HasPrefix(e.Name(), "..") {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	for k := range data {
		if _, err := os.Lstat(filepath.Join(dir, k)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
				return err
			}
		}
	}
	if previous != "" {
		// The watcher of a file sees it go only now, when the link already names the new one.
		return os.RemoveAll(filepath.Join(dir, previous))
	}
	return nil
}

// Follow keeps dir in step with the Secret key, as the kubelet keeps a mounted Secret: it reads
// the Secret every period and projects each new version, until ctx ends. A Secret that cannot be
// read leaves the files as they are, as the kubelet leaves a running pod's.
func Follow(ctx context.Context, c client.Reader, key types.NamespacedName, dir string, period time.Duration) {
	var last string
	for ctx.Err() == nil {
		s := &corev1.Secret{}
		if err := c.Get(ctx, key, s); err == nil && s.ResourceVersion != last && Project(dir, s.Data) == nil {
			last = s.ResourceVersion
		}
		select {
		case <-ctx.Done():
		case <-time.After(period):
		}
	}
}
