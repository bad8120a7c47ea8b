#!/usr/bin/env bash
# Runs the token server benchmark. It needs wrk, which hack/wrk.sh installs from Debian's packages
# when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/wrk.sh
assets="$(hack/control-plane.sh)"
KUBEBUILDER_ASSETS="$assets" go run ./hack/bench-token "$@"
