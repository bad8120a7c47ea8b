// Command image writes the operator's image as a tarball (`docker load` or `crane push` reads
// it) from binaries built for linux: `make image`.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/m2m-dev/m2m-operator/hack/internal/image"
)

func main() {
	bin := flag.String("bin", "bin/linux", "directory of the linux binaries")
	arch := flag.String("arch", "amd64", "architecture of the binaries")
	tag := flag.String("tag", "ghcr.io/m2m-dev/m2m-operator:dev", "the image's reference in the tarball")
	out := flag.String("o", "bin/m2m-operator-image.tar", "the tarball to write")
	flag.Parse()
	if err := run(*bin, *arch, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(bin, arch, tag, out string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	img, err := image.Build(bin, arch, ref.TagStr())
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s (%s)\n", out, ref, digest)
	return nil
}
