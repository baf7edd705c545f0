#!/usr/bin/env bash
# Builds the npm package `vsgd` into bindings/wasm/pkg/ (`npm --prefix bindings/wasm run build`):
#   cargo (wasm32-unknown-unknown, +simd128, release)
#   -> wasm-bindgen --target web (pkg/web) and --target nodejs (pkg/node)
#   -> wasm-opt -O3 from npm's `binaryen` (Debian's binaryen 108 silently breaks wasm-bindgen
#      output: the module then fails to load with "WebAssembly.Table.set(): Argument 1 is invalid")
#   -> the hand-written files of npm/ (package.json with `exports`, the Node.js ESM entry, the
#      tfjs adapter, type declarations) and README.md.
#
# Toolchain: rustup's wasm32-unknown-unknown target (added when missing); when rustup cannot
# add it (no download), Debian's rustc-web with -Zbuild-std (apt-get installs it). Force one with
# VSGD_WASM_TOOLCHAIN=rustup|debian.
# wasm-bindgen-cli: the exact version of the wasm-bindgen crate in Cargo.lock, installed once by
# `cargo install` (~4.5 min on 2 cores) into $VSGD_CACHE (default ~/.cache/vsgd)/wasm-bindgen-X.
#
# Options: --scalar  also build pkg-scalar/ (no simd128; Node.js only), for `npm run bench`
#          --out DIR  write the package to DIR instead of pkg/
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$HERE"
log() { printf '[wasm build] %s\n' "$*" >&2; }
die() { printf '[wasm build] ERROR: %s\n' "$*" >&2; exit 1; }

OUT="$HERE/pkg"
SCALAR=0
while (($#)); do
    case "$1" in
        --scalar) SCALAR=1 ;;
        --out) OUT="$(mkdir -p "$2" && cd "$2" && pwd)"; shift ;;
        *) die "unknown option $1" ;;
    esac
    shift
done
TARGET=wasm32-unknown-unknown
CACHE="${VSGD_CACHE:-$HOME/.cache/vsgd}"

# ------------------------------------------------------------------------------- node deps
if [[ ! -x node_modules/binaryen/bin/wasm-opt ]]; then
    log "npm ci (binaryen and the test/demo dependencies)"
    npm ci --no-audit --no-fund >&2
fi
WASM_OPT=(node "$HERE/node_modules/binaryen/bin/wasm-opt")

# ------------------------------------------------------------------------- wasm-bindgen-cli
WBG_VERSION="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print}' Cargo.lock)"
[[ -n $WBG_VERSION ]] || die "no wasm-bindgen in bindings/wasm/Cargo.lock"
WBG_DIR="$CACHE/wasm-bindgen-$WBG_VERSION"
WBG="$WBG_DIR/bin/wasm-bindgen"
if ! { [[ -x $WBG ]] && [[ "$("$WBG" --version)" == "wasm-bindgen $WBG_VERSION" ]]; }; then
    log "installing wasm-bindgen-cli $WBG_VERSION into $WBG_DIR (once; about 4.5 minutes on 2 cores)"
    # No --locked: one of the CLI's locked dependencies is no longer in the registry.
    (cd / && cargo install wasm-bindgen-cli --version "=$WBG_VERSION" --root "$WBG_DIR" \
        --target-dir "$CACHE/wasm-bindgen-build" -q) >&2
    rm -rf "$CACHE/wasm-bindgen-build"
fi

# ------------------------------------------------------------------------------ toolchain
TOOLCHAIN="${VSGD_WASM_TOOLCHAIN:-}"
if [[ -z $TOOLCHAIN ]]; then
    if command -v rustup >/dev/null &&
        { rustup target list --installed 2>/dev/null | grep -qx $TARGET ||
            rustup target add $TARGET >&2; }; then
        TOOLCHAIN=rustup
    else
        log "rustup cannot provide $TARGET: falling back to Debian's rustc-web with -Zbuild-std"
        TOOLCHAIN=debian
    fi
fi

deb_ok() {
    local p
    for p in rustc-web cargo-web rust-web-src; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

cargo_build() { # $1 = RUSTFLAGS, $2 = target dir; prints the path of the .wasm
    local flags="$1" dir="$2"
    case "$TOOLCHAIN" in
        rustup)
            RUSTFLAGS="$flags" cargo build --release --locked --target $TARGET \
                --target-dir "$dir" -q >&2
            ;;
        debian)
            if ! deb_ok; then
                log "apt-get install rustc-web cargo-web rust-web-src"
                local sudo=()
                [[ $(id -u) -ne 0 ]] && sudo=(sudo)
                "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
                "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                    rustc-web cargo-web rust-web-src >&2
            fi
            local lld=""
            if command -v rustc >/dev/null; then
                local sysroot host
                sysroot="$(cd / && env -u RUSTC rustc --print sysroot 2>/dev/null || true)"
                host="$(cd / && env -u RUSTC rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
                [[ -x $sysroot/lib/rustlib/$host/bin/rust-lld ]] && lld="$sysroot/lib/rustlib/$host/bin/rust-lld"
            fi
            [[ -z $lld && -x /usr/bin/rust-lld ]] && lld=/usr/bin/rust-lld
            [[ -z $lld ]] && lld="$(compgen -c wasm-ld- | sort -V | tail -1 || true)"
            [[ -n $lld ]] || die "no wasm linker (rust-lld or wasm-ld-NN) found"
            # Each RUSTFLAGS rebuilds std: one target directory per configuration.
            env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" PATH="/usr/bin:$PATH" \
                CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld" \
                /usr/bin/cargo build --release --locked --target $TARGET \
                -Zbuild-std=std,panic_abort --target-dir "$dir-debian" -q >&2
            dir="$dir-debian"
            ;;
        *) die "VSGD_WASM_TOOLCHAIN must be rustup or debian (got '$TOOLCHAIN')" ;;
    esac
    echo "$dir/$TARGET/release/vsgd_wasm.wasm"
}

bindgen_opt() { # $1 = .wasm from cargo, $2 = wasm-bindgen target, $3 = out dir
    local wasm="$1" target="$2" out="$3"
    rm -rf "$out"
    "$WBG" "$wasm" --target "$target" --out-dir "$out" --out-name vsgd
    node "$HERE/scripts/patch-glue.mjs" "$out/vsgd.js"
    local bg="$out/vsgd_bg.wasm"
    "${WASM_OPT[@]}" -O3 "$bg" -o "$bg.opt"
    mv "$bg.opt" "$bg"
}

t0=$SECONDS
log "cargo build ($TOOLCHAIN, +simd128)"
WASM="$(cargo_build "-C target-feature=+simd128" "$HERE/target/simd128")"
rm -rf "$OUT"
mkdir -p "$OUT"
bindgen_opt "$WASM" web "$OUT/web"
bindgen_opt "$WASM" nodejs "$OUT/node"
# The web build is ESM; the Node.js build CommonJS (wasm-bindgen's nodejs target).
printf '{\n  "type": "module"\n}\n' >"$OUT/web/package.json"
printf '{\n  "type": "commonjs"\n}\n' >"$OUT/node/package.json"
cp -R npm/. "$OUT/"
cp README.md "$OUT/README.md"
# The tests, tools and demo import the package by its name, as users do.
[[ $OUT == "$HERE/pkg" ]] && ln -sfn ../pkg node_modules/vsgd
log "pkg: $(du -sh "$OUT" | cut -f1), wasm $(stat -c %s "$OUT/web/vsgd_bg.wasm") bytes ($((SECONDS - t0)) s)"

if ((SCALAR)); then
    log "cargo build ($TOOLCHAIN, scalar: no simd128)"
    WASM="$(cargo_build "" "$HERE/target/scalar")"
    rm -rf "$HERE/pkg-scalar"
    bindgen_opt "$WASM" nodejs "$HERE/pkg-scalar"
    printf '{\n  "type": "commonjs"\n}\n' >"$HERE/pkg-scalar/package.json"
fi
echo "built $OUT"
