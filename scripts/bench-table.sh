#!/usr/bin/env bash
# The table of docs/performance.md: `vsgd bench --json` for every algorithm at 4K, 1M, 16M and
# 64M f32 elements on 1 and 2 threads, and 1,000 mixed tensors totalling 16M, printed as
# Markdown (plus the raw JSON lines on stderr). Takes a few minutes; needs ~5 GB of memory.
# usage: scripts/bench-table.sh [extra vsgd bench options, e.g. --dtype f64]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bin vsgd -q
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
{
    for n in 4K 1M 16M 64M; do
        for t in 1 2; do
            ./target/release/vsgd bench --json --algorithm all --elements $n --threads $t "$@"
        done
    done
    for t in 1 2; do
        ./target/release/vsgd bench --json --algorithm all --elements 16M --threads $t --tensors 1000 "$@"
    done
} | tee /dev/stderr | python3 -c "$(cat <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
def size(n):
    return "%dM" % (n >> 20) if n >= 1 << 20 else "%dK" % (n >> 10)
print("| elements | tensors | threads | algorithm | GB/s | ceiling GB/s | ratio | ns/element | multi-pass GB/s | speedup | time vs 1 tensor |")
print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    for x in r["results"]:
        one = x.get("time_vs_one_tensor")
        print("| %s | %d | %d | %s | %.1f | %.1f | %.2f | %.3f | %.2f | %.1fx | %s |" % (
            size(r["elements"]), r["tensors"], r["threads"], x["algorithm"], x["gbps"],
            x["ceiling_gbps"], x["ratio_to_ceiling"], x["ns_per_element"],
            x["multipass_gbps"], x["speedup_vs_multipass"],
            "%.2f" % one if one else ""))
PY
)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
