#!/usr/bin/env bash
# Builds a pinned Helm from its Go module and caches it per user, so that tests can render and
# lint the chart with Helm itself on a machine with nothing but Go.
#
# Prints the path of the helm binary on stdout; everything else goes to stderr. Running it again
# is a no-op. A failed build leaves nothing in the cache.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/m2m-operator/helm"
dest="$cache_root/$HELM_VERSION"

if [ -x "$dest/helm" ]; then
  echo "$dest/helm"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [ -x "$dest/helm" ]; then
  echo "$dest/helm"
  exit 0
fi

work="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "building helm $HELM_VERSION into $dest (cold build: about two minutes)" >&2
# `go install pkg@version` builds in module-aware mode outside this repository's go.mod.
version_pkg="helm.sh/helm/v3/internal/version"
(cd "$work" && GOFLAGS= GOBIN="$work/bin" CGO_ENABLED=0 go install -trimpath \
  -ldflags "-s -w -X ${version_pkg}.version=${HELM_VERSION}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
"$work/bin/helm" version --short >&2
rm -rf "$dest"
mv "$work/bin" "$dest"
echo "$dest/helm"
