#!/usr/bin/env bash
# Runs the fuzz targets for a given time each.
#
#   scripts/fuzz.sh TIME [TARGET...]
#
# TIME is a Go duration (10m, 60s) or a count of executions (5000x).
# With no TARGET, every fuzz target in the repository runs (every
# `func FuzzX` in a *_test.go file). Each package's test binary is built
# once, with the fuzzing instrumentation, and each target runs from its
# package directory with one worker (-test.parallel=1), so a crasher lands
# in that package's testdata/fuzz/<Target>/ as `go test -fuzz` would put it,
# and the corpus it grows is the one `go test -fuzz` uses (under GOCACHE).
#
# Environment:
#   FUZZ_JOBS    targets run at the same time (default 1)
#   FUZZ_LOGDIR  where each target's output goes (default a new temporary
#                directory); TARGET.log holds the fuzzer's lines
#   FUZZ_NICE    niceness of the runs (default 10)
#   FUZZ_LIST=1  print each target and its package directory, run nothing
#
# At the end it prints, per target: its package, the run's length, total
# executions, executions per second (the median of the fuzzer's 3-second
# rates, and the mean: total / elapsed), new interesting inputs and the
# outcome. It exits non-zero if a target failed.
#
# The seed corpora (f.Add and testdata/fuzz) run as ordinary tests in every
# `go test` (scripts/test.sh); this script is the long run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ $# -lt 1 ]; then
  echo "usage: $0 TIME [TARGET...]" >&2
  exit 2
fi
fuzztime=$1
shift

jobs=${FUZZ_JOBS:-1}
nicelevel=${FUZZ_NICE:-10}
logdir=${FUZZ_LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/fuzz.XXXXXX")}
mkdir -p "$logdir/bin"
module=$(go list -m)
gocache=$(go env GOCACHE)

# target -> package directory, from the sources.
declare -A pkgof
while IFS=: read -r file _ line; do
  name=${line#func }
  name=${name%%(*}
  if [ -n "${pkgof[$name]:-}" ] && [ "${pkgof[$name]}" != "$(dirname "$file")" ]; then
    echo "two fuzz targets named $name: ./${pkgof[$name]} and ./$(dirname "$file")" >&2
    exit 2
  fi
  pkgof[$name]=$(dirname "$file")
done < <(grep -rn --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*(' . | sed 's|^\./||')

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(printf '%s\n' "${!pkgof[@]}" | sort)
fi
for t in "${targets[@]}"; do
  if [ -z "${pkgof[$t]:-}" ]; then
    echo "no fuzz target $t (func $t in a *_test.go file)" >&2
    exit 2
  fi
done
if [ -n "${FUZZ_LIST:-}" ]; then
  for t in "${targets[@]}"; do echo "$t ${pkgof[$t]}"; done
  exit 0
fi

# One instrumented test binary per package.
declare -A built
for t in "${targets[@]}"; do
  dir=${pkgof[$t]}
  [ -n "${built[$dir]:-}" ] && continue
  bin=$logdir/bin/$(echo "$dir" | tr / _).test
  echo "== build ./$dir" >&2
  # -fuzz at build time is what turns on the coverage instrumentation.
  go test -c -fuzz=. -o "$bin" "./$dir"
  built[$dir]=$bin
done

run() {
  local t=$1 dir=${pkgof[$1]}
  local bin=${built[$dir]} log=$logdir/$1.log
  local cache=$gocache/fuzz/$module/$dir
  [ "$dir" = . ] && cache=$gocache/fuzz/$module
  echo "== $t (./$dir) for $fuzztime: $log" >&2
  local rc=0
  (cd "$root/$dir" && nice -n "$nicelevel" "$bin" \
    -test.run='^$' -test.fuzz="^$t\$" -test.fuzztime="$fuzztime" \
    -test.parallel=1 -test.fuzzcachedir="$cache" -test.timeout=0) >"$log" 2>&1 || rc=$?
  echo "$rc" >"$logdir/$t.rc"
  echo "== $t done: exit $rc" >&2
}

running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run "$t" &
  running=$((running + 1))
done
wait || true

# The summary, from the fuzzer's own lines:
#   fuzz: elapsed: 3s, execs: 1234 (411/sec), new interesting: 2 (total: 9)
fail=0
printf '%-22s %-20s %8s %12s %10s %9s %7s  %s\n' target package elapsed execs 'median/s' 'mean/s' new outcome
for t in "${targets[@]}"; do
  log=$logdir/$t.log
  rc=$(cat "$logdir/$t.rc" 2>/dev/null || echo '?')
  outcome=ok
  if [ "$rc" != 0 ]; then
    outcome="FAILED (exit $rc, see $log)"
    fail=1
  fi
  awk -v t="$t" -v p="${pkgof[$t]}" -v o="$outcome" '
    function secs(s,   n, v, u) {
      # a Go duration: 1h2m3.5s, 59s, 10m0s
      n = 0
      while (match(s, /^[0-9.]+(h|m|s)/)) {
        v = substr(s, 1, RLENGTH - 1); u = substr(s, RLENGTH, 1)
        n += v * (u == "h" ? 3600 : u == "m" ? 60 : 1)
        s = substr(s, RLENGTH + 1)
      }
      return n
    }
    /^fuzz: elapsed: / {
      e = $3; sub(/,$/, "", e); el = secs(e)
      x = $5; sub(/,$/, "", x); ex = x + 0
      r = $6; gsub(/[(\/sec),]/, "", r)
      # the 3-second rates, from the first line with executions to the
      # last one where the count grew (the lines printed while the
      # fuzzer stops say 0/sec)
      if ($0 !~ /gathering baseline/ && (ex > 0 || m > 0)) {
        all[m++] = r + 0
        if (ex > prev) n = m
        prev = ex
      }
      if (match($0, /new interesting: [0-9]+/)) ni = substr($0, RSTART + 17, RLENGTH - 17)
    }
    END {
      for (i = 0; i < n; i++) rates[i] = all[i]
      # sort the rates for the median
      for (i = 1; i < n; i++) { v = rates[i]; j = i - 1
        while (j >= 0 && rates[j] > v) { rates[j + 1] = rates[j]; j-- }
        rates[j + 1] = v }
      med = n ? rates[int((n - 1) / 2)] : 0
      mean = el ? ex / el : 0
      printf "%-22s %-20s %7ds %12d %10d %9d %7s  %s\n", t, p, el, ex, med, mean, ni, o
    }' "$log"
done
echo "logs: $logdir" >&2
exit $fail
