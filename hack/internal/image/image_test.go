package image

import (
	"archive/tar"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The image built as `make image` builds it: the three binaries, static, executable, at the
// root; a non-root user that /etc/passwd names; /manager as entrypoint; and it survives the
// tarball that docker load reads.
func TestTheImageRunsStaticBinariesAsANonRootUser(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the binaries are built for linux")
	}
	bin := t.TempDir()
	// make image adds -trimpath and -ldflags "-s -w"; without them this build shares the
	// compiled packages of make test, which also runs with CGO_ENABLED=0.
	build := exec.Command("go", "build", "-o", bin+"/", "../../../cmd/manager", "../../../cmd/token-server", "../../../cmd/kubectl-m2m")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the binaries: %v\n%s", err, out)
	}
	img, err := Build(bin, runtime.GOARCH, "test")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.tar")
	ref, _ := name.NewTag("ghcr.io/m2m-dev/m2m-operator:test")
	if err := tarball.WriteToFile(path, ref, img); err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(path, &ref)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loaded.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != User || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/manager" || cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Fatalf("config: user %q, entrypoint %v, platform %s/%s", cfg.Config.User, cfg.Config.Entrypoint, cfg.OS, cfg.Architecture)
	}
	files := map[string]*tar.Header{}
	contents := map[string][]byte{}
	rc := mutate.Extract(loaded)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			contents[h.Name], _ = io.ReadAll(tr)
		}
	}
	for _, b := range Binaries {
		h := files[b]
		if h == nil || h.Mode&0o111 == 0 {
			t.Fatalf("/%s is missing or not executable", b)
		}
		path := filepath.Join(t.TempDir(), b)
		if err := os.WriteFile(path, contents[b], 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("/%s is not an ELF binary: %v", b, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("/%s is dynamically linked; a scratch image has no loader", b)
			}
		}
		f.Close()
	}
	if string(contents["etc/passwd"]) == "" || files["tmp"] == nil || files["tmp"].Mode&0o1777 != 0o1777 || files["home/nonroot"].Uid != 65532 {
		t.Fatalf("the image lacks /etc/passwd for its user or a writable /tmp: %v", files)
	}
	if len(files) != len(Binaries)+6 {
		t.Errorf("the image holds %d entries; want the binaries, /etc/passwd, /etc/group and four directories only", len(files))
	}
}
