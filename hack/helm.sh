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

complete() {
  [ -x "$dest/helm" ]
}

# shellcheck source=hack/cache.sh
. "$(dirname "$0")/cache.sh"
cache_enter "$cache_root" complete "$dest/helm"
echo "building helm $HELM_VERSION into $dest (cold build: about two minutes)" >&2
# `go install pkg@version` builds in module-aware mode outside this repository's go.mod.
version_pkg="helm.sh/helm/v3/internal/version"
(cd "$work" && GOFLAGS= GOBIN="$work/bin" CGO_ENABLED=0 go install -trimpath \
  -ldflags "-s -w -X ${version_pkg}.version=${HELM_VERSION}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
"$work/bin/helm" version --short >&2
rm -rf "$dest"
mv "$work/bin" "$dest"
echo "$dest/helm"
