#!/usr/bin/env bash
# CI check of loadtest/: the k6 scripts parse as ES modules (k6 is not installed here), the
# bench script parses, and the load generator's tests pass in its own target folder.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for f in "$HERE"/k6/*.js; do
    node --check "$f"
    echo "node --check $(basename "$f"): ok"
done
bash -n "$HERE/bench.sh"
bash -n "$HERE/freshness-cold-start.sh"
bash -n "$HERE/poll-cost.sh"
python3 -m py_compile "$HERE/summarize.py" "$HERE/wire_bytes.py" "$HERE/write-floor.py" "$HERE/cpu-by-process.py"
cargo test --quiet --manifest-path "$HERE/Cargo.toml" --target-dir "$HERE/target"
