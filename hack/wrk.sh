#!/usr/bin/env bash
# Installs wrk from Debian's packages when it is missing (as root, or with sudo); the token server
# and peers benchmarks load their servers with it.
set -euo pipefail
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq wrk
fi
