#!/usr/bin/env bash
# The C ABI (bindings/c): install into a scratch prefix with scripts/install.sh, then
#   - ffi-tests/run.sh: strict headers, exported symbols, bad-input table, conformance through
#     both shapes (bit-identical to Rust), checkpoint resume (bit-identical to uninterrupted
#     training), threads, the C++ wrapper, under ASan+UBSan (with canaries proving the
#     sanitizers ran) and valgrind memcheck, plus a static link;
#   - checkpoints across the language boundary: files from `vsgd replay --save` loaded and
#     saved again by C byte-identically, and a file saved by C read by `vsgd inspect`;
#   - examples/c and examples/cpp built from the prefix with pkg-config (make) and with CMake
#     (find_package), and run (each exits 1 unless it trained).
# The header freshness test (bindings/c/tests/header.rs) runs in `cargo test --workspace`.
# Installs gcc, g++, make, valgrind, cmake, pkg-config with apt when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

missing=()
for tool in gcc:gcc g++:g++ make:make valgrind:valgrind cmake:cmake pkg-config:pkg-config nm:binutils; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Miri over the binding's unit tests: every pointer path of the exports (checks, slices,
# handle lease, panic guard) under Stacked Borrows and the leak checker.
source scripts/lib/miri.sh
if ensure_miri; then
    echo "--- miri: cargo +nightly miri test -p vsgd-ffi --lib"
    cargo +nightly miri test -q -p vsgd-ffi --lib
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

bash scripts/install.sh "$prefix"
# Dev profile: reuses what `cargo test --workspace` built (cbindgen is a dev-dependency).
cargo run -q -p vsgd-ffi --example ffi_fixture -- "$work/fixture.txt" tests/data/conformance/*.json
# Checkpoints written by Rust (the CLI) for the C side to load and save again byte-identically.
cargo build -q --bin vsgd
vsgd_cli="${CARGO_TARGET_DIR:-target}/debug/vsgd"
rust_ckpts=()
for spec in vsgd-default:f32 adam-default:f64 sgdm-default:f32 constant-vsgd-variant:f64; do
    f="$work/rust-${spec%%:*}-${spec#*:}.vsgdckpt"
    "$vsgd_cli" replay "tests/data/conformance/${spec%%:*}.json" --dtype "${spec#*:}" --save "$f" >/dev/null
    rust_ckpts+=("$f")
done
bash ffi-tests/run.sh "$prefix" "$work/fixture.txt" "$work/ffi-tests" "${rust_ckpts[@]}"

echo "--- a checkpoint saved from C, read by Rust (vsgd inspect)"
"$vsgd_cli" inspect "$work/ffi-tests/from_c.vsgdckpt" >"$work/inspect.txt"
# Every line the C side expects (algorithm, policy, schedule, tensors with names, shapes,
# types, groups and step counts, as vsgd_optimizer_* report them) is printed by Rust.
while IFS= read -r line; do
    grep -qxF -- "$line" "$work/inspect.txt" || {
        cat "$work/inspect.txt"
        echo "vsgd inspect does not print: '$line'" >&2
        exit 1
    }
done <"$work/ffi-tests/from_c.expect"
[ "$(wc -l <"$work/ffi-tests/from_c.expect")" -ge 6 ]
echo "vsgd inspect reads what C saved: $(wc -l <"$work/ffi-tests/from_c.expect") expected lines found"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
for lang in c cpp; do
    echo "--- examples/$lang with pkg-config (make)"
    mkdir -p "$work/ex-$lang-make"
    make -s -C "examples/$lang" OUT="$work/ex-$lang-make"
    if [ "$lang" = c ]; then # checkpoints halfway to a file, resumes from it
        "$work/ex-c-make/train" "$work/ex-c.vsgdckpt"
        "$vsgd_cli" inspect "$work/ex-c.vsgdckpt" >"$work/inspect.txt" # (no pipe: pipefail + SIGPIPE)
        grep -qx 'tensor 0 "w": shape \[8\], f32, group 0, step 320' "$work/inspect.txt"
    else
        "$work/ex-$lang-make/train"
    fi
    echo "--- examples/$lang with CMake (find_package)"
    cmake -S "examples/$lang" -B "$work/ex-$lang-cmake" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$work/ex-$lang-cmake" >/dev/null
    "$work/ex-$lang-cmake/train"
done
# The static CMake target links too.
mkdir -p "$work/static"
cat >"$work/static/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.16)
project(vsgd_static_consumer LANGUAGES C)
find_package(vsgd REQUIRED)
add_executable(train "$PWD/examples/c/train.c")
set_target_properties(train PROPERTIES C_STANDARD 11)
target_link_libraries(train PRIVATE vsgd::vsgd_static m)
CMAKE
cmake -S "$work/static" -B "$work/static/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/static/build" >/dev/null
ldd "$work/static/build/train" >"$work/ldd.txt"
if grep -q libvsgd "$work/ldd.txt"; then echo "vsgd::vsgd_static loads libvsgd.so" >&2; exit 1; fi
"$work/static/build/train" >/dev/null
echo "--- C ABI: all checks passed"
