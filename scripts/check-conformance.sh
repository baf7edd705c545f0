#!/usr/bin/env bash
# Replays every conformance case through the `vsgd` binary in f32 and f64 and checks each result
# with the shared checker (tests/data/conformance/check.py). Exit 1 on any failure.
# usage: scripts/check-conformance.sh [CASE_DIR]   (default tests/data/conformance)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${1:-tests/data/conformance}"
cargo build --release --bin vsgd -q
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
pass=0 fail=0
for case in "$dir"/*.json; do
    for dtype in f32 f64; do
        name="$(basename "$case" .json)"
        if ./target/release/vsgd replay "$case" --dtype "$dtype" >"$out/$name.$dtype.json" &&
            python3 tests/data/conformance/check.py "$case" "$out/$name.$dtype.json" "$dtype" >"$out/log" 2>&1; then
            pass=$((pass + 1))
        else
            fail=$((fail + 1))
            echo "FAIL: $name $dtype"
            cat "$out/log"
        fi
    done
done
echo "conformance: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
