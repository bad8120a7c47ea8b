# Sourced by the scripts that build a tool once per user and cache it (control-plane.sh, helm.sh).
#
# cache_enter ROOT BUILT OUTPUT: when the command BUILT succeeds, prints OUTPUT and exits. Else it
# takes ROOT's lock (one build at a time per cache: a second caller waits, then finds the finished
# build), asks BUILT again, and sets $work to a scratch directory in ROOT that is removed on exit,
# so that an interrupted build leaves nothing in the cache.
cache_enter() {
  local root="$1" built="$2" output="$3"
  if $built; then
    echo "$output"
    exit 0
  fi
  mkdir -p "$root"
  exec 9>"$root/.lock"
  flock 9
  if $built; then
    echo "$output"
    exit 0
  fi
  work="$(mktemp -d "$root/.build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
}
