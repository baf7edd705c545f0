#!/usr/bin/env bash
# SIMD kernels beyond the default `cargo test`:
#  1. the tests that step through the dispatcher and the conformance cases once per x86 kernel
#     path this CPU has, forced with VSGD_KERNEL (a forced path that is missing fails the
#     tests: no silent fallback);
#  2. AArch64 NEON: the crate builds for aarch64-unknown-none (compile check only: no AArch64
#     std or emulator here);
#  3. wasm32 simd128: scripts/simd-check (no_std cdylib) is built with +simd128 and run under
#     Node.js, comparing the simd128 path with the portable path bit for bit.
# Needs Debian's rustc-web/cargo-web/rust-web-src (as scripts/check-nostd-wasm.sh) and nodejs;
# installs them when missing (root or sudo). Set VSGD_REQUIRE_PATHS=avx2,avx512 on machines
# known to have those paths to make their absence an error.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
log() { printf '[30-simd] %s\n' "$*"; }

# ------------------------------------------------------------ 1. every x86 path
if [[ $(uname -m) == x86_64 ]]; then
    paths=(portable sse2)
    grep -qw avx2 /proc/cpuinfo && paths+=(avx2)
    grep -qw avx512f /proc/cpuinfo && paths+=(avx512)
    log "x86 kernel paths on this CPU: ${paths[*]}"
    # tests/kernel_paths.rs already compares every path with the portable one in the plain
    # `cargo test`; here each forced path runs the tests that step through the dispatcher (the
    # optimizer, mixed precision, threads, checkpoints, conformance), in the test profile that
    # `cargo test --workspace` has already built (no second, release build of every test).
    forced=(-p vsgd --lib --test optimizer --test mixed --test mixed_optimizer --test threads
        --test robust_form --test checkpoint)
    for p in "${paths[@]}"; do
        log "VSGD_KERNEL=$p: the stepping tests and conformance"
        out="$(mktemp)"
        if ! { VSGD_KERNEL=$p cargo test -q "${forced[@]}" &&
            VSGD_KERNEL=$p cargo test -q -p vsgd-cli --test conformance; } >"$out" 2>&1; then
            cat "$out"; rm -f "$out"; log "FAILED with VSGD_KERNEL=$p"; exit 1
        fi
        passed=$(grep -oE '^test result: ok. [0-9]+' "$out" | awk '{s += $4} END {print s}')
        log "  $passed tests passed"
        rm -f "$out"
        VSGD_KERNEL=$p bash scripts/check-conformance.sh | tail -1
    done
    for p in neon simd128; do log "not run natively here: $p (see below)"; done
else
    log "not x86-64: the x86 paths are not tested here"
fi

# ------------------------------------------------------------ toolchain for 2 and 3
SUDO=()
[[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && SUDO=(sudo)
need=()
for p in rustc-web cargo-web rust-web-src; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
command -v node >/dev/null || need+=(nodejs)
if (( ${#need[@]} )); then
    log "installing ${need[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
LLD=""
sysroot="$(cd / && env -u RUSTC rustc --print sysroot 2>/dev/null || true)"
[[ -n $sysroot && -x $sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld ]] &&
    LLD="$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
[[ -z $LLD && -x /usr/bin/rust-lld ]] && LLD=/usr/bin/rust-lld
[[ -n $LLD ]] || { log "no rust-lld found"; exit 1; }
deb() {
    env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 PATH="/usr/bin:$PATH" \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$LLD" /usr/bin/cargo "$@"
}

# ------------------------------------------------------------ 2. NEON compile check
log "aarch64-unknown-none (NEON path; compile check only)"
/usr/bin/rustc --print cfg --target aarch64-unknown-none | grep -q 'target_feature="neon"' ||
    { log "aarch64-unknown-none lacks neon?"; exit 1; }
deb build -q -p vsgd --lib --no-default-features --features alloc --target aarch64-unknown-none \
    -Zbuild-std=core,alloc --target-dir target/cross-aarch64 --release --locked
log "aarch64 NEON build: ok"

# ------------------------------------------------------------ 3. wasm32 simd128, run
log "wasm32 simd128: build scripts/simd-check and run it under Node.js $(node --version)"
RUSTFLAGS="-C target-feature=+simd128" deb build -q --manifest-path scripts/simd-check/Cargo.toml \
    --target wasm32-unknown-unknown -Zbuild-std=core --release --target-dir target/simd-check
wasm=target/simd-check/wasm32-unknown-unknown/release/vsgd_simd_check.wasm
node -e '
const fs = require("fs");
const inst = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync(process.argv[1])), {});
const r = inst.exports.check() >>> 0;
if (r === 0xFFFFFFFF) { console.error("simd128 path not built in"); process.exit(1); }
if (r !== 0) { console.error(`simd128 differs from portable in ${r} places`); process.exit(1); }
console.log("[30-simd] wasm32 simd128 == portable (bit for bit): ok");
' "$wasm"

# ------------------------------------------------------------ 4. Miri: a threaded step
# The worker pool erases a lifetime, the work items carry raw pointers, and the dispatcher
# re-casts slices: tests/miri_threads.rs runs a two-thread step (with a skipped tensor) under
# Miri so those SAFETY arguments are checked, not only stated (the engine splits finer under
# Miri, src/kernels/batch.rs, so the test is small). About a minute on 2 cores.
source scripts/lib/miri.sh
if ensure_miri; then
    log "miri: cargo +nightly miri test --test miri_threads"
    cargo +nightly miri test -q --test miri_threads 2>&1 | tail -n 3
    log "miri: ok"
fi
