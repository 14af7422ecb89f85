#!/usr/bin/env bash
# Build every fuzz target, then run each for N seconds (default 15): coverage-guided libFuzzer
# through cargo-fuzz, seeded from fuzz/seeds/<target> with fuzz/json.dict. Prints each target's
# exec count and the total; exits non-zero if any target crashed (a panic, a failed assertion,
# a timeout or running out of memory), naming the input it saved.
#
#   fuzz/run.sh        # 15 s per target
#   fuzz/run.sh 1800   # a long run: 30 min per target
#
# `-s none`: no sanitizer. cargo-fuzz's default, AddressSanitizer, needs `-Z` flags that only a
# nightly compiler takes; the parsers are safe Rust, so a panic (overflow checks are on: cargo
# fuzz builds with -Cdebug-assertions) is what we look for, and libFuzzer's coverage guidance
# works without a sanitizer on stable.
#
# The corpus grows in fuzz/corpus/<target> (git-ignored; the seeds are read, never written),
# crashes land in fuzz/artifacts/<target>/, libFuzzer's output in fuzz/artifacts/logs/.
# Replay a crash: cargo fuzz run -s none <target> <artifact>
set -euo pipefail

secs=${1:-15}
case $secs in
  '' | *[!0-9]*)
    echo "usage: $0 [seconds-per-target]" >&2
    exit 2
    ;;
esac
fuzz=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$fuzz/.." # cargo fuzz finds fuzz/ from the crate root
# Its own target dir whatever CARGO_TARGET_DIR says: instrumented builds stay apart.
opts=(-s none --target-dir "$fuzz/target")
mkdir -p "$fuzz/artifacts/logs"

cargo fuzz build "${opts[@]}"

mapfile -t targets < <(cargo fuzz list)
total=0
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$fuzz/corpus/$t"
  log=$fuzz/artifacts/logs/$t.log
  status=0
  cargo fuzz run "${opts[@]}" "$t" "$fuzz/corpus/$t" "$fuzz/seeds/$t" -- \
    -max_total_time="$secs" -dict="$fuzz/json.dict" -rss_limit_mb=2048 -timeout=10 \
    >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in.*/\1/p' "$log" | tail -n 1)
  if [ "$status" -ne 0 ] || [ -z "$runs" ]; then
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    printf '%-16s CRASHED (exit %s): %s\n' "$t" "$status" "${artifact:-no input saved}"
    { grep -m 1 -A 1 'panicked at' "$log" || grep -m 1 -E '^==[0-9]+== ERROR' "$log" || true; } |
      sed 's/^/    /'
    echo "    log: $log"
    failed+=("$t")
    continue
  fi
  printf '%-16s %12s execs\n' "$t" "$runs"
  total=$((total + runs))
done

printf '%-16s %12s execs in %s s per target\n' total "$total" "$secs"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
