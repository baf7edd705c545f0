#!/usr/bin/env bash
# Builds and runs the C and C++ tests against an installed vsgd (scripts/install.sh PREFIX):
#   1. the headers compile cleanly as strict C11 and C++17;
#   2. libvsgd.so exports exactly the functions vsgd.h declares, all prefixed vsgd_;
#   3. every declared function is exercised by bad_input.c;
#   4. the tests under AddressSanitizer + UBSan, after proving on canaries that both are live;
#   5. the tests under valgrind memcheck (zero errors, zero leaks), canaries first;
#   6. the conformance test linked statically (pkg-config vsgd-static);
#   7. robustness.c: saves racing steps and add_tensor on one handle (ASan), a fork after the
#      worker threads started (ASan and a plain build; not valgrind, which counts the parent
#      threads' allocations as lost in the child), and allocations the caller sizes under an
#      address-space limit (`ulimit -v`; a plain build, since ASan needs the address space).
# checkpoint.c leaves BUILD_DIR/from_c.vsgdckpt and from_c.expect for the caller to check with
# `vsgd inspect`, and re-saves each RUST_CHECKPOINT (written by `vsgd replay --save`) expecting
# identical bytes.
# usage: ffi-tests/run.sh PREFIX FIXTURE BUILD_DIR [RUST_CHECKPOINT...]
#   (FIXTURE: see bindings/c/examples/ffi_fixture.rs)
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 PREFIX FIXTURE BUILD_DIR [RUST_CHECKPOINT...]" >&2; exit 2; }
prefix="$(cd "$1" && pwd)"
fixture="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
mkdir -p "$3"
out="$(cd "$3" && pwd)"
shift 3
rust_checkpoints=()
for f in "$@"; do rust_checkpoints+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); done
cd "$(dirname "${BASH_SOURCE[0]}")"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

say() { printf -- '--- %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

STRICT_C=(-std=c11 -Wall -Wextra -Wpedantic -Werror)
STRICT_CXX=(-std=c++17 -Wall -Wextra -Wpedantic -Werror)
CFLAGS_PKG=($(pkg-config --cflags vsgd))
LIBS_SHARED=($(pkg-config --libs vsgd) "-Wl,-rpath,$prefix/lib")

say "headers: strict C11 and C++17, with extra warnings"
printf '#include "vsgd.h"\nint main(void) { return vsgd_abi_version() == VSGD_ABI_VERSION ? 0 : 1; }\n' >"$out/h.c"
printf '#include "vsgd.hpp"\nint main() { vsgd::check_abi(); return 0; }\n' >"$out/hpp.cpp"
cp "$out/h.c" "$out/h_as_cpp.cpp"
gcc "${STRICT_C[@]}" -Wconversion -Wsign-conversion -Wshadow -Wstrict-prototypes \
    -Wmissing-prototypes -Wcast-qual "${CFLAGS_PKG[@]}" "$out/h.c" -o "$out/h" "${LIBS_SHARED[@]}"
g++ "${STRICT_CXX[@]}" -Wconversion -Wsign-conversion -Wshadow -Wold-style-cast -Wcast-qual \
    -Wnon-virtual-dtor -Wzero-as-null-pointer-constant "${CFLAGS_PKG[@]}" "$out/h_as_cpp.cpp" \
    -o "$out/h_as_cpp" "${LIBS_SHARED[@]}"
g++ "${STRICT_CXX[@]}" -Wconversion -Wsign-conversion -Wshadow -Wold-style-cast -Wcast-qual \
    -Wnon-virtual-dtor "${CFLAGS_PKG[@]}" "$out/hpp.cpp" -o "$out/hpp" "${LIBS_SHARED[@]}"
"$out/h" && "$out/h_as_cpp" && "$out/hpp"

say "exported symbols: exactly the functions vsgd.h declares"
nm -D --defined-only "$prefix/lib/libvsgd.so" | awk '{print $3}' | sort >"$out/exported.txt"
sed -n 's/^[a-z][a-z0-9_ *]*[ *]\(vsgd_[a-z0-9_]*\)(.*/\1/p' "$prefix/include/vsgd.h" | sort >"$out/declared.txt"
[ "$(wc -l <"$out/declared.txt")" -gt 30 ] || fail "found only $(wc -l <"$out/declared.txt") declarations in vsgd.h"
if grep -v '^vsgd_' "$out/exported.txt"; then fail "libvsgd.so exports symbols without the vsgd_ prefix (above)"; fi
diff "$out/declared.txt" "$out/exported.txt" || fail "exports and header declarations differ (< header, > library)"
echo "$(wc -l <"$out/exported.txt") symbols, all vsgd_, all declared"

say "every declared function appears in bad_input.c"
missing=0
while read -r f; do grep -q "\b$f(" bad_input.c || { echo "not exercised: $f"; missing=1; }; done <"$out/declared.txt"
[ "$missing" -eq 0 ] || fail "bad_input.c misses functions"

# name, language, sources, extra libs
build() { # build OUTPUT_SUFFIX FLAGS... : builds every test program
    local suffix="$1"
    shift
    gcc "${STRICT_C[@]}" "$@" "${CFLAGS_PKG[@]}" conformance.c -o "$out/conformance$suffix" "${LIBS_SHARED[@]}"
    gcc "${STRICT_C[@]}" "$@" "${CFLAGS_PKG[@]}" bad_input.c -o "$out/bad_input$suffix" "${LIBS_SHARED[@]}" -lm
    gcc "${STRICT_C[@]}" "$@" "${CFLAGS_PKG[@]}" checkpoint.c -o "$out/checkpoint$suffix" "${LIBS_SHARED[@]}"
    gcc "${STRICT_C[@]}" "$@" -pthread "${CFLAGS_PKG[@]}" threads.c -o "$out/threads$suffix" "${LIBS_SHARED[@]}" -lm
    g++ "${STRICT_CXX[@]}" "$@" "${CFLAGS_PKG[@]}" cpp_wrapper.cpp -o "$out/cpp_wrapper$suffix" "${LIBS_SHARED[@]}"
    gcc "${STRICT_C[@]}" "$@" -pthread "${CFLAGS_PKG[@]}" robustness.c -o "$out/robustness$suffix" "${LIBS_SHARED[@]}"
    gcc "${STRICT_C[@]}" "$@" "${CFLAGS_PKG[@]}" mixed.c -o "$out/mixed$suffix" "${LIBS_SHARED[@]}" -lm
}
run_all() { # run_all SUFFIX WRAPPER... : runs every test program
    local suffix="$1"
    shift
    "$@" "$out/conformance$suffix" "$fixture"
    "$@" "$out/bad_input$suffix" "$out"
    "$@" "$out/checkpoint$suffix" "$out" ${rust_checkpoints[@]+"${rust_checkpoints[@]}"}
    "$@" "$out/threads$suffix"
    "$@" "$out/cpp_wrapper$suffix" "$fixture" "$out"
    "$@" "$out/mixed$suffix"
}
# expect_caught NAME PATTERN COMMAND... : the command must fail and print PATTERN.
expect_caught() {
    local name="$1" pattern="$2"
    shift 2
    if "$@" >"$out/$name.log" 2>&1; then fail "canary $name ran clean: the checker is not active"; fi
    grep -q "$pattern" "$out/$name.log" || { cat "$out/$name.log"; fail "canary $name: no '$pattern' report"; }
    echo "canary $name caught: $(grep -m1 "$pattern" "$out/$name.log" | cut -c1-100)"
}

SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1)
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

say "AddressSanitizer + UBSan: canaries"
gcc -g -fsanitize=address,undefined -fno-sanitize-recover=all canary/asan.c -o "$out/canary_asan"
gcc -g -fsanitize=address,undefined -fno-sanitize-recover=all canary/ubsan.c -o "$out/canary_ubsan"
gcc -g -fsanitize=address,undefined -fno-sanitize-recover=all canary/leak.c -o "$out/canary_lsan"
expect_caught asan "AddressSanitizer: heap-buffer-overflow" "$out/canary_asan"
expect_caught ubsan "runtime error: signed integer overflow" "$out/canary_ubsan"
expect_caught lsan "LeakSanitizer: detected memory leaks" "$out/canary_lsan"

say "AddressSanitizer + UBSan: tests"
build _san "${SAN[@]}"
for t in conformance bad_input checkpoint threads cpp_wrapper robustness mixed; do
    ldd "$out/${t}_san" >"$out/ldd.txt" # (no pipe into grep -q: pipefail + SIGPIPE)
    grep -q libasan "$out/ldd.txt" || fail "$t is not linked with libasan"
    grep -q libubsan "$out/ldd.txt" || fail "$t is not linked with libubsan"
done
run_all _san
"$out/robustness_san" race
"$out/robustness_san" fork

say "valgrind memcheck: canaries"
VALGRIND=(valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible
    --errors-for-leak-kinds=definite,indirect,possible --track-origins=yes)
gcc -g -O0 canary/leak.c -o "$out/canary_leak"
gcc -g -O0 canary/use_after_free.c -o "$out/canary_uaf"
expect_caught valgrind_leak "definitely lost" "${VALGRIND[@]}" "$out/canary_leak"
expect_caught valgrind_uaf "Invalid read" "${VALGRIND[@]}" "$out/canary_uaf"

say "valgrind memcheck: tests"
build _vg -g -O1
run_all _vg "${VALGRIND[@]}"

say "allocation failures under an address-space limit (robustness oom, plain build)"
gcc "${STRICT_C[@]}" -O1 -g -pthread "${CFLAGS_PKG[@]}" robustness.c -o "$out/robustness" "${LIBS_SHARED[@]}"
"$out/robustness" oom "$out"
"$out/robustness" fork

say "static library (pkg-config vsgd-static)"
gcc "${STRICT_C[@]}" -O1 $(pkg-config --cflags vsgd-static) conformance.c -o "$out/conformance_static" \
    $(pkg-config --libs vsgd-static)
ldd "$out/conformance_static" >"$out/ldd.txt"
if grep -q libvsgd "$out/ldd.txt"; then fail "the static build loads libvsgd.so"; fi
"$out/conformance_static" "$fixture"

say "ffi-tests passed"
