#!/usr/bin/env bash
# Checkpoints beyond `cargo test` (which already runs the format pins, bad-input tests, the
# mutation proptest, the 200-kill crash test and the CLI replay/inspect tests):
#   1. the no_std wasm32 build with the checkpoint (and serde) features: core + alloc only;
#   2. a short fuzz run of the decoder from the committed seeds (VSGD_FUZZ_SECONDS, default 60;
#      0 skips it). Installs nightly and cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

NOSTD_FEATURES="alloc,checkpoint,serde" bash scripts/check-nostd-wasm.sh

secs="${VSGD_FUZZ_SECONDS:-60}"
if [ "$secs" -gt 0 ]; then
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    corpus="$(mktemp -d)"
    trap 'rm -rf "$corpus"' EXIT
    # New inputs go to a scratch corpus; the committed seeds stay as they are.
    (cd fuzz && cargo +nightly fuzz run checkpoint_decode "$corpus" seeds/checkpoint_decode -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 25)
    echo "checkpoint fuzz: ${secs} s without a crash"
fi
