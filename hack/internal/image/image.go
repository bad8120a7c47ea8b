// Package image builds the operator's OCI image without a container engine: one layer over an
// empty base with the static binaries, a non-root user, and nothing else. The binaries carry their
// own CA roots (golang.org/x/crypto/x509roots/fallback), used when the image has none.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// User is the non-root user and group the image runs as (distroless's "nonroot").
const User = "65532:65532"

// Binaries are the files of the image's root, built from cmd/.
var Binaries = []string{"manager", "token-server", "kubectl-m2m"}

// epoch dates every file and the image, so that the same binaries give the same image.
var epoch = time.Unix(0, 0).UTC()

// Build makes the image from the binaries in dir, for linux/arch, with /manager as entrypoint
// (the token server's Deployment sets its command to /token-server).
func Build(dir, arch, version string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []struct {
		name string
		mode int64
	}{{"etc/", 0o755}, {"home/", 0o755}, {"home/nonroot/", 0o700}, {"tmp/", 0o1777}}
	for _, d := range dirs {
		h := &tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: epoch}
		if d.name == "home/nonroot/" {
			h.Uid, h.Gid = 65532, 65532
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	files := map[string][]byte{
		"etc/passwd": []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"),
		"etc/group":  []byte("root:x:0:\nnonroot:x:65532:\n"),
	}
	for _, name := range []string{"etc/group", "etc/passwd"} {
		if err := writeFile(tw, name, files[name], 0o644); err != nil {
			return nil, err
		}
	}
	for _, b := range Binaries {
		data, err := os.ReadFile(filepath.Join(dir, b))
		if err != nil {
			return nil, err
		}
		if err := writeFile(tw, b, data, 0o755); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", arch, v1.Time{Time: epoch}
	cfg.Config.User = User
	cfg.Config.Entrypoint = []string{"/manager"}
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/"}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.source":  "https://github.com/m2m-dev/m2m-operator",
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.title":   "m2m-operator",
	}
	return mutate.ConfigFile(img, cfg)
}

func writeFile(tw *tar.Writer, name string, data []byte, mode int64) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	_, err := tw.Write(data)
	return err
}
