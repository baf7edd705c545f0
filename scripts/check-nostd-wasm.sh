#!/usr/bin/env bash
# Prove the crate builds without std for wasm32-unknown-unknown.
#
# Usage: scripts/check-nostd-wasm.sh [CRATE_DIR]     (default: the repo root)
#
# rustup cannot download the wasm32 std here, so we use Debian's rustc-web
# (/usr/bin/rustc) with rust-src and `-Zbuild-std=core,alloc`: only core and
# alloc are built for wasm32, so any use of std fails to compile.
# First run: apt-get install (~20 s) + build; later runs are incremental.
#
# Env knobs: NOSTD_FEATURES (default "alloc"), NOSTD_PROFILE (release|dev,
# default release), NOSTD_FORCE_COPY=1 (always build from a lock-less copy).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CRATE_DIR="$(cd "${1:-$SCRIPT_DIR/..}" && pwd)"
FEATURES="${NOSTD_FEATURES:-alloc}"
PROFILE="${NOSTD_PROFILE:-release}"
TARGET=wasm32-unknown-unknown
TARGET_DIR="$CRATE_DIR/target/wasm-nostd"
DEB_RUSTC=/usr/bin/rustc
DEB_CARGO=/usr/bin/cargo

log() { printf '[check-nostd-wasm] %s\n' "$*" >&2; }
die() { printf '[check-nostd-wasm] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -f "$CRATE_DIR/Cargo.toml" ]] || die "no Cargo.toml in $CRATE_DIR"

# ---------------------------------------------------------------- toolchain
deb_ok() {
    local p
    for p in rustc-web cargo-web rust-web-src; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
    [[ -x $DEB_RUSTC && -x $DEB_CARGO ]] || return 1
    [[ -f "$("$DEB_RUSTC" --print sysroot)/lib/rustlib/src/rust/library/core/Cargo.toml" ]]
}

if ! deb_ok; then
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install rustc-web cargo-web rust-web-src"
        SUDO=(sudo)
    fi
    log "installing Debian rustc-web/cargo-web/rust-web-src via apt ..."
    t0=$SECONDS
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        rustc-web cargo-web rust-web-src >/dev/null
    log "apt install took $((SECONDS - t0)) s"
    deb_ok || die "Debian rust toolchain still incomplete after apt-get install"
fi

DEB_RUSTC_VER="$("$DEB_RUSTC" -V | awk '{print $2}')"
DEB_CARGO_VER="$("$DEB_CARGO" -V | awk '{print $2}')"
"$DEB_RUSTC" --print target-list | grep -qx "$TARGET" || die "$DEB_RUSTC does not know $TARGET"

# ------------------------------------------------------------------- linker
# rust-lld from the rustup toolchain (query it outside the crate dir so a
# rust-toolchain file cannot trigger a download; make sure RUSTC does not leak).
LLD=""
RUSTUP_RUSTC="${CARGO_HOME:-$HOME/.cargo}/bin/rustc"
if [[ -x $RUSTUP_RUSTC ]]; then
    sysroot="$(cd / && env -u RUSTC -u RUSTC_BOOTSTRAP "$RUSTUP_RUSTC" --print sysroot 2>/dev/null || true)"
    host="$(cd / && env -u RUSTC "$RUSTUP_RUSTC" -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
    cand="$sysroot/lib/rustlib/${host:-x86_64-unknown-linux-gnu}/bin/rust-lld"
    [[ -n $sysroot && -x $cand ]] && LLD="$cand"
fi
# Fallback: Debian's rust-web-llvm ships /usr/bin/rust-lld (-> lld-NN).
[[ -z $LLD && -x /usr/bin/rust-lld ]] && LLD=/usr/bin/rust-lld
[[ -n $LLD ]] || die "no rust-lld found (rustup toolchain or /usr/bin/rust-lld)"

# ------------------------------------------------------------ lockfile check
# Cargo.lock v4 needs cargo >= 1.78, v3 >= 1.53. If Debian's cargo is older
# than the lockfile (or there is no lockfile, and we must not create/alter
# the repo's), build from a lock-less copy under /tmp instead.
cargo_minor="$(echo "$DEB_CARGO_VER" | cut -d. -f2)"
max_lock=3; (( cargo_minor >= 78 )) && max_lock=4
lock_ver=""
[[ -f "$CRATE_DIR/Cargo.lock" ]] && lock_ver="$(sed -n 's/^version = \([0-9]*\)$/\1/p' "$CRATE_DIR/Cargo.lock" | head -1)"

USE_COPY="${NOSTD_FORCE_COPY:-0}"
if [[ -z $lock_ver ]]; then
    [[ -f "$CRATE_DIR/Cargo.lock" ]] || { log "no Cargo.lock: building from a copy (repo untouched)"; USE_COPY=1; }
elif (( lock_ver > max_lock )); then
    log "Cargo.lock v$lock_ver too new for Debian cargo $DEB_CARGO_VER: building from a lock-less copy"
    USE_COPY=1
fi

make_copy() {
    local key dst
    key="$(printf '%s' "$CRATE_DIR" | cksum | cut -d' ' -f1)"
    dst="${TMPDIR:-/tmp}/check-nostd-wasm-$key"
    # Keep the copy's own Cargo.lock between runs; refresh everything else.
    find "$dst" -mindepth 1 -maxdepth 1 ! -name Cargo.lock -exec rm -rf {} + 2>/dev/null || true
    mkdir -p "$dst"
    (cd "$CRATE_DIR" && tar --exclude=./target --exclude=./.git --exclude=./Cargo.lock -cf - .) \
        | (cd "$dst" && tar -xf -)
    # Stop cargo from walking up into some unrelated workspace.
    grep -q '^\[workspace\]' "$dst/Cargo.toml" || printf '\n[workspace]\n' >>"$dst/Cargo.toml"
    printf '%s' "$dst"
}

# -------------------------------------------------------------------- build
profile_args=(); profile_dir=debug
if [[ $PROFILE == release ]]; then profile_args=(--release); profile_dir=release; fi

run_build() {   # $1 = dir to build in; remaining = extra cargo args
    local dir="$1"; shift
    (
        cd "$dir"
        env RUSTC="$DEB_RUSTC" RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$LLD" \
            PATH="/usr/bin:$PATH" \
            "$DEB_CARGO" build -p vsgd --lib --no-default-features --features "$FEATURES" \
                --target "$TARGET" -Zbuild-std=core,alloc \
                --target-dir "$TARGET_DIR" "${profile_args[@]}" "$@"
    )
}

log "building with Debian rustc $DEB_RUSTC_VER / cargo $DEB_CARGO_VER (linker: $LLD)"
t0=$SECONDS
errlog="$(mktemp)"; trap 'rm -f "$errlog"' EXIT
FAIL_MSG="no_std wasm32 build: FAILED (rustc $DEB_RUSTC_VER, features: $FEATURES)"
if [[ $USE_COPY == 1 ]]; then
    run_build "$(make_copy)" || die "$FAIL_MSG"
else
    # --locked: never rewrite the repo's Cargo.lock from here.
    if ! run_build "$CRATE_DIR" --locked 2> >(tee "$errlog" >&2); then
        wait  # let tee finish
        if grep -qiE 'lock ?file|Cargo\.lock|--locked' "$errlog"; then
            log "in-place --locked build failed on the lockfile; retrying from a lock-less copy"
            run_build "$(make_copy)" || die "$FAIL_MSG"
        else
            die "$FAIL_MSG"
        fi
    fi
fi
log "build took $((SECONDS - t0)) s"

# ------------------------------------------------------------------- verify
out="$TARGET_DIR/$TARGET/$profile_dir"
shopt -s nullglob
rlibs=("$out"/lib*.rlib)
(( ${#rlibs[@]} > 0 )) || die "no .rlib produced in $out"
# Only core/alloc (+compiler_builtins) were built for wasm32 and Debian ships
# no wasm32 std, so a std-using crate cannot compile; double-check anyway.
std_rlibs=("$out"/deps/libstd-*.rlib)
(( ${#std_rlibs[@]} == 0 )) || die "std was built for $TARGET: ${std_rlibs[*]}"
[[ ! -d "$("$DEB_RUSTC" --print sysroot)/lib/rustlib/$TARGET" ]] \
    || log "warning: a prebuilt $TARGET sysroot exists; the no-std proof relies on build-std only"

echo "no_std wasm32 build: ok (rustc $DEB_RUSTC_VER, features: $FEATURES) -> ${rlibs[*]}"
