#!/usr/bin/env bash
# Builds a pinned kube-apiserver, kubectl and etcd from Go modules and caches them per user, so that
# envtest and `make dev` have a real control plane on a machine with nothing but Go.
#
# Prints the directory that holds the binaries (for KUBEBUILDER_ASSETS) on stdout; everything else
# goes to stderr. Running it again is a no-op. A failed build leaves nothing in the cache.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
# The staging modules are published as v0.<minor>.<patch> of the same release.
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/m2m-operator/k8s"
dest="$cache_root/${KUBE_VERSION}-etcd-${ETCD_VERSION}"

complete() {
  [ -x "$dest/kube-apiserver" ] && [ -x "$dest/etcd" ] && [ -x "$dest/kubectl" ]
}

# shellcheck source=hack/cache.sh
. "$(dirname "$0")/cache.sh"
cache_enter "$cache_root" complete "$dest"

echo "building kube-apiserver and kubectl $KUBE_VERSION and etcd $ETCD_VERSION into $dest (cold build: several minutes)" >&2

# kube-apiserver: k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging paths, which
# do not exist in the module cache, so a throwaway main module restates them as published versions.
kmod="$work/kube"
mkdir -p "$kmod" "$work/bin"
(
  cd "$kmod"
  go mod init m2m-operator.local/kube-build >/dev/null 2>&1
  gomod="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [ -n "$gomod" ] || { echo "could not download k8s.io/kubernetes@${KUBE_VERSION}" >&2; exit 1; }
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9./-]*\) => ./staging/src/.*#\1#p' "$gomod" | sort -u)"
  [ -n "$staging" ] || { echo "no staging replaces found in $gomod" >&2; exit 1; }
  args=(-require "k8s.io/kubernetes@${KUBE_VERSION}")
  for m in $staging; do
    args+=(-replace "${m}=${m}@${STAGING_VERSION}")
  done
  go mod edit "${args[@]}"
  # Pull the rest of the build list from k8s.io/kubernetes's own requirements.
  GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kube-apiserver@${KUBE_VERSION}" "k8s.io/kubernetes/cmd/kubectl@${KUBE_VERSION}" >&2
  commit="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"Hash": "\(.*\)",\{0,1\}$/\1/p' | head -n1)"
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    ld+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${date} -X ${pkg}.gitCommit=${commit:-unknown}"
  done
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$work/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
)

# etcd: the module root of go.etcd.io/etcd/server/v3 is its main package; its own go.mod uses
# relative replaces, so it too is built from a throwaway module.
emod="$work/etcd"
mkdir -p "$emod"
(
  cd "$emod"
  go mod init m2m-operator.local/etcd-build >/dev/null 2>&1
  GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/bin/etcd" go.etcd.io/etcd/server/v3
)

"$work/bin/kube-apiserver" --version >&2
"$work/bin/etcd" --version | head -n1 >&2

rm -rf "$dest"
mv "$work/bin" "$dest"
echo "$dest"
