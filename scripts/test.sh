#!/usr/bin/env bash
# `make test`: the whole suite. With no arguments, two pytest processes at once: the fault
# suite (tests/faults: servers of its own, which it kills) and everything else (unit, web,
# integration: the configured servers or embedded ones); their wall times overlap, as most of
# each is waiting on workers, leases and timers. The fault suite's output is printed after the
# other's; the exit status is the first failure's. With arguments: one pytest with them.
set -uo pipefail
bin=${BIN:-.venv/bin}
if [ "$#" -gt 0 ]; then
  exec env FAULTS=1 "$bin/pytest" -q "$@"
fi
mkdir -p artifacts
log=artifacts/faults.log
FAULTS=1 "$bin/pytest" -q -p no:cacheprovider tests/faults >"$log" 2>&1 &
faults=$!
trap 'kill -- "$faults" 2>/dev/null' INT TERM
"$bin/pytest" -q tests/unit tests/web tests/integration
rest=$?
wait "$faults"
fault=$?
printf '\n=== the fault suite (tests/faults; its output is also in %s)\n' "$log"
cat "$log"
if [ "$rest" -ne 0 ]; then exit "$rest"; fi
exit "$fault"
