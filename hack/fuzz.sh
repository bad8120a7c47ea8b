#!/usr/bin/env bash
# Runs every fuzz target of the project (every `func FuzzX` in a _test.go file) for FUZZTIME each
# (30s unless set), one after the other, and prints each one's executions and outcome. `make test`
# runs only their seed corpora; this is the long run. A crash leaves its input under the package's
# testdata/fuzz/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-30s}"
status=0
while IFS=: read -r file name; do
  pkg="./$(dirname "$file")"
  log="$(mktemp)"
  if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
    outcome=ok
  else
    outcome=FAILED
    status=1
  fi
  execs="$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
  printf '%-28s %-26s %-6s %s executions\n' "$name" "$pkg" "$outcome" "${execs:-?}"
  [ "$outcome" = ok ] || sed -n '1,40p' "$log"
  rm -f "$log"
done < <(grep -rho --include='*_test.go' -e '^func Fuzz[A-Za-z0-9_]*' . --with-filename | sed 's/:func /:/' | sed 's#^\./##' | sort)
exit "$status"
