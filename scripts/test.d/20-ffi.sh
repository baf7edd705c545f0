#!/usr/bin/env bash
# The C ABI (bindings/c): install into a scratch prefix with scripts/install.sh, then
#   - ffi-tests/run.sh: strict headers, exported symbols, bad-input table, conformance through
#     both shapes (bit-identical to Rust), threads, the C++ wrapper, under ASan+UBSan (with
#     canaries proving the sanitizers ran) and valgrind memcheck, plus a static link;
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
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "--- miri: cargo +nightly miri test -p vsgd-ffi --lib"
    rustup component list --installed --toolchain nightly 2>/dev/null | grep -q '^miri' ||
        rustup component add miri rust-src --toolchain nightly
    cargo +nightly miri test -q -p vsgd-ffi --lib
else
    echo "--- miri: SKIPPED (no nightly toolchain on this machine; the C checks below still run)"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

bash scripts/install.sh "$prefix"
# Dev profile: reuses what `cargo test --workspace` built (cbindgen is a dev-dependency).
cargo run -q -p vsgd-ffi --example ffi_fixture -- "$work/fixture.txt" tests/data/conformance/*.json
bash ffi-tests/run.sh "$prefix" "$work/fixture.txt" "$work/ffi-tests"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
for lang in c cpp; do
    echo "--- examples/$lang with pkg-config (make)"
    mkdir -p "$work/ex-$lang-make"
    make -s -C "examples/$lang" OUT="$work/ex-$lang-make"
    "$work/ex-$lang-make/train"
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
