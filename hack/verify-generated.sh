#!/usr/bin/env bash
# Fails when the generated CRDs, RBAC or deepcopy code in the work tree differ from what
# controller-gen makes from the API types now. It generates into a scratch copy, so it never
# touches the work tree.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cd "$root"
tar --exclude=./.git --exclude=./bin --exclude=./.dev -cf - . | tar -C "$scratch" -xf -
(cd "$scratch" && make --no-print-directory -s manifests generate chart >/dev/null)

status=0
for path in config/crd/bases config/rbac/role.yaml api/v1alpha1/zz_generated.deepcopy.go charts/m2m-operator; do
  if ! diff -ru "$root/$path" "$scratch/$path"; then
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "generated files are stale: run 'make manifests generate chart' and commit the result" >&2
fi
exit "$status"
