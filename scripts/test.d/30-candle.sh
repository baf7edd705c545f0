#!/usr/bin/env bash
# The candle integration (feature `candle`): lint, the adapter's unit tests, its doc test, and a
# one-epoch smoke run of examples/digits.rs that must print the results table with one row per
# optimizer and write the plot. Needs only cargo (candle is pure Rust on the CPU).
# Cost on 2 cores, fresh target directory: 4 minutes (load 3.5), nearly all of it compiling candle
# (once for clippy, once in release); the tests and the smoke run take seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TERM_COLOR=never

echo "[candle] cargo clippy --features candle (the main suite lints the default features)"
cargo clippy --workspace --all-targets --features candle -- -D warnings

# --release: the tests then share the release build of candle with the smoke run below, which
# saves compiling candle a third time (about 1.5 min on 2 cores).
echo "[candle] cargo test --release --features candle --lib --doc (adapter)"
cargo test --release --features candle --lib -- candle::
cargo test --release --features candle --doc -- candle

echo "[candle] smoke run: digits, MLP, 1 epoch, 1 seed"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run --release --features candle --example digits -- \
    --model mlp --epochs 1 --seeds 1 --out "$out" >"$out/stdout.txt"
cat "$out/stdout.txt"

# The table is what the example ends with: header, separator, then exactly these five rows.
tail -n 7 "$out/stdout.txt" >"$out/table.txt"
python3 - "$out/table.txt" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines[0] == "| optimizer | lr | test accuracy |", lines[0]
assert re.fullmatch(r"\|-+\|-+\|-+\|", lines[1]), lines[1]
names = []
for row in lines[2:]:
    m = re.fullmatch(r"\| (\w+) \| ([0-9.e-]+) \| (\d+\.\d\d) ± (\d+\.\d\d) \|", row)
    assert m, f"bad row: {row!r}"
    acc = float(m.group(3))
    # one epoch of any of these optimizers gets far above chance (10%) on this data
    assert 30.0 < acc <= 100.0, f"implausible accuracy: {row!r}"
    names.append(m.group(1))
assert names == ["vsgd", "constant_vsgd", "adam", "adamw", "sgdm"], names
print("[candle] table ok:", ", ".join(names))
PY
test -s "$out/digits-mlp.png" || { echo "[candle] no plot written" >&2; exit 1; }
head -c 8 "$out/digits-mlp.png" | od -An -tx1 | grep -q '89 50 4e 47' \
    || { echo "[candle] digits-mlp.png is not a PNG" >&2; exit 1; }
echo "[candle] ok"
