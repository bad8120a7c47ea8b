package volume

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The token server's files change as the kubelet changes a mounted Secret's: every key through
// the ..data link, which one rename repoints, so that tls.crt and tls.key never come from two
// versions; the previous version's files and a key the Secret lost are gone.
func TestProjectingASecretSwitchesEveryFileAtOnceAndDropsWhatItLost(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if err := Project(dir, map[string][]byte{"tls.crt": []byte("cert 1"), "tls.key": []byte("key 1"), "extra": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := Project(dir, map[string][]byte{"tls.crt": []byte("cert 2"), "tls.key": []byte("key 2")}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"tls.crt": "cert 2", "tls.key": "key 2"} {
		if link, err := os.Readlink(filepath.Join(dir, name)); err != nil || link != filepath.Join("..data", name) {
			t.Fatalf("%s is not a link through ..data: %q, %v", name, link, err)
		}
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Fatalf("%s holds %q (%v), want %q", name, got, err, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 || !strings.HasPrefix(names[0], "..data") || !strings.HasPrefix(names[1], "..version-") {
		t.Fatalf("the directory holds %v; want ..data, one version and the two keys", names)
	}
}
