#!/usr/bin/env bash
# The WebAssembly binding and npm package `vsgd` (bindings/wasm), on a fresh machine:
#   1. installs what is missing: Node.js/npm and Chromium (apt), the npm dependencies
#      (`npm ci` from the committed package-lock.json), rustup's wasm32 target and the pinned
#      wasm-bindgen-cli (both by bindings/wasm/scripts/build.sh; the CLI is cached in
#      ~/.cache/vsgd/wasm-bindgen-X: ~4.5 minutes once);
#   2. rustfmt and clippy (-D warnings, for wasm32) over the binding crate;
#   3. `npm run build` (SIMD128 package in pkg/; also the scalar build for the benchmark);
#   4. node:test (test/node): every conformance case through `node replay.mjs` byte-identical
#      to `vsgd replay` in f32 and f64, random number texts, checkpoints byte-identical to
#      native and loaded across the border both ways, the API's contract, bad input (Errors,
#      never a wasm trap), the tfjs adapter, and the `npm pack` tarball used from elsewhere;
#   5. the Debian fallback toolchain (rustc-web with -Zbuild-std) builds the package too, and
#      every conformance case through that build is byte-identical to `vsgd replay`;
#   6. the browser demo in headless Chromium (test/browser, playwright-core);
#   7. the benchmark script, on a small size (it must run; the numbers of record are in
#      docs/performance.md).
# Under CI=true a missing tool is a failure (the tests that need one fail instead of skipping).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO="$PWD"
W=bindings/wasm
log() { printf '[40-wasm] %s\n' "$*"; }
t_start=$SECONDS

# ------------------------------------------------------------------------ 1. tools
SUDO=()
[[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && SUDO=(sudo)
need=()
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
log "node $(node --version), npm $(npm --version), $(/usr/bin/chromium --version 2>/dev/null | head -1)"

# npm ci only when the lock file changed since the last install (it deletes node_modules).
if ! cmp -s "$W/package-lock.json" "$W/node_modules/.vsgd-lock"; then
    log "npm ci"
    (cd "$W" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$W/package-lock.json" "$W/node_modules/.vsgd-lock"
fi

# The native CLI the tests compare with (scripts/check-conformance.sh built it already).
cargo build --release --bin vsgd -q
export VSGD_BIN="$REPO/target/release/vsgd"

# ------------------------------------------------------------------------ 3. build
# (before the lints: it adds the wasm32 target when missing)
log "npm run build -- --scalar"
t=$SECONDS
npm --prefix "$W" run -s build -- --scalar
log "build: $((SECONDS - t)) s"

# ------------------------------------------------------------------------ 2. lints
log "cargo fmt --check and clippy -D warnings (bindings/wasm, wasm32 + simd128)"
(cd "$W" && cargo fmt -- --check)
if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    (cd "$W" && RUSTFLAGS="-C target-feature=+simd128" cargo clippy -q --release --locked \
        --target wasm32-unknown-unknown --target-dir target/simd128 -- -D warnings)
else
    # The build fell back to Debian's rustc-web, which has no clippy: lint for the host.
    log "no rustup wasm32 target: clippy for the host instead"
    (cd "$W" && cargo clippy -q --release --locked --target-dir target/host -- -D warnings)
fi

# ------------------------------------------------------------------------ 4. node tests
log "node --test test/node"
(cd "$W" && node --test test/node/)

# ------------------------------------------------------------------------ 5. Debian fallback
log "the fallback toolchain: Debian rustc-web with -Zbuild-std (first time: builds std)"
t=$SECONDS
deb_pkg="$(mktemp -d)"
trap 'rm -rf "$deb_pkg"' EXIT
VSGD_WASM_TOOLCHAIN=debian bash "$W/scripts/build.sh" --out "$deb_pkg"
n=0
for f in tests/data/conformance/*.json; do
    for d in f32 f64; do
        "$VSGD_BIN" replay "$f" --dtype "$d" >"$deb_pkg/native.json"
        VSGD_WASM_PKG="$deb_pkg" node "$W/replay.mjs" "$f" --dtype "$d" >"$deb_pkg/wasm.json"
        cmp -s "$deb_pkg/native.json" "$deb_pkg/wasm.json" ||
            { log "Debian-built package: $f $d differs from vsgd replay"; exit 1; }
        n=$((n + 1))
    done
done
log "Debian-built package: $n conformance replays byte-identical to vsgd replay ($((SECONDS - t)) s)"

# ------------------------------------------------------------------------ 6. browser
log "node --test test/browser (Chromium headless)"
(cd "$W" && node --test test/browser/)

# ------------------------------------------------------------------------ 7. benchmark
log "npm run bench (small size: the script runs; numbers of record in docs/performance.md)"
npm --prefix "$W" run -s bench -- --elements 65536 --samples 2

log "all wasm checks passed ($((SECONDS - t_start)) s)"
