#!/usr/bin/env bash
# Runs the token server benchmark. It needs wrk, which it installs from Debian's packages when it
# is missing (as root, or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq wrk
fi
assets="$(hack/control-plane.sh)"
KUBEBUILDER_ASSETS="$assets" go run ./hack/bench-token "$@"
