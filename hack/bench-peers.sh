#!/usr/bin/env bash
# Runs the peers benchmark: Ory Hydra, built from its Go module source (cgo: it needs gcc), and this
# token server under the same wrk load, one after the other. It needs wrk, which hack/wrk.sh
# installs from Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/wrk.sh
command -v gcc >/dev/null 2>&1 || { echo "bench-peers: Hydra's SQLite driver needs cgo, and so gcc" >&2; exit 1; }
assets="$(hack/control-plane.sh)"
KUBEBUILDER_ASSETS="$assets" go run ./hack/bench-peers "$@"
