#!/usr/bin/env bash
# Runs the peers benchmark: Ory Hydra, built from its Go module source (cgo: it needs gcc), on
# SQLite and on PostgreSQL, and this token server under the same wrk load, one after the other.
# hack/wrk.sh installs wrk, and this script PostgreSQL, from Debian's packages when they are
# missing (as root, or with sudo); -postgres=false leaves PostgreSQL out.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/wrk.sh
command -v gcc >/dev/null 2>&1 || { echo "bench-peers: Hydra's SQLite driver needs cgo, and so gcc" >&2; exit 1; }
if [[ " $* " != *" -postgres=false "* ]] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  echo "installing postgresql with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq postgresql
fi
assets="$(hack/control-plane.sh)"
KUBEBUILDER_ASSETS="$assets" go run ./hack/bench-peers "$@"
