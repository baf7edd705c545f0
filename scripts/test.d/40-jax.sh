#!/usr/bin/env bash
# The JAX binding (bindings/jax, Python package vsgd-jax): builds and installs it from source
# with `pip install ./bindings/jax` into its own virtual environment, then runs its pytest
# suite against the installed package (replay bytes vs `vsgd replay` for every conformance case
# in f32 and f64, optax agreement, jit/grad/vmap/scan, 8 forced host devices for the sharding
# tests, checkpoints through `vsgd inspect` and a native resume, the FFI handshake, the CUDA
# lowering and verdict), a smoke run of examples/jax/digits.py and of the benchmark script.
# The GPU handler (platform "CUDA", feature `cuda`): its error paths through hand-built XLA
# call frames (bindings/jax/tests/cuda_handler.rs) under no driver and stub drivers, and
# bindings/jax/gpu_check.py (the GPU part of scripts/gpu-check.sh) run with a second CPU
# device in the GPU's place, and its skip where JAX has no GPU.
#
# Python: pyenv's 3.12 when present (newest jax needs >= 3.11), else python3.12, else python3.
# The environment lives in $HOME/.cache/vsgd/ (one per Python and set of pins) and is reused.
# Cost on 2 cores: about 1.5 minutes to create the environment the first time (downloads
# ~150 MB of wheels), then ~1 minute of builds and ~2 minutes of tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TERM_COLOR=never

# Pinned: what the suite was written and run with.
PINS=(jax==0.12.0.1 jaxlib==0.12.0.1 optax==0.2.8 numpy==2.5.5 pytest==9.2.0)

fail_or_skip() {
    if [ "${CI:-}" = "true" ]; then
        echo "[jax] FAIL: $*" >&2
        exit 1
    fi
    echo "[jax] SKIP: $*" >&2
    exit 0
}

python=""
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}/versions/3.12."*/bin/python3.12 \
    "$(command -v python3.12 || true)" "$(command -v python3 || true)"; do
    if [ -x "$candidate" ] && "$candidate" -c \
        'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
        python="$candidate"
        break
    fi
done
if [ -z "$python" ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
    python="$(command -v python3)"
fi
[ -n "$python" ] || fail_or_skip "no Python >= 3.11 (jax ${PINS[0]#jax==} needs it)"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || fail_or_skip "$python is older than 3.11"
pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
echo "[jax] Python $pyver: $python"

key="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-12)"
venv="$HOME/.cache/vsgd/jax-py$pyver-$key"
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv.tmp" 2>/dev/null; then
        rm -rf "$venv.tmp"
        if command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$pyver-venv" \
                || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        fi
        "$python" -m venv "$venv.tmp" || fail_or_skip "cannot create a virtual environment"
    fi
    "$venv.tmp/bin/python" -m pip install -q --upgrade pip
    "$venv.tmp/bin/python" -m pip install -q "${PINS[@]}"
    mv "$venv.tmp" "$venv"
fi
py="$venv/bin/python"

echo "[jax] cargo build: the vsgd CLI and the native-resume example"
cargo build --release --bin vsgd
cargo build --release -p vsgd-jax --example resume

echo "[jax] pip install ./bindings/jax (builds the native library with cargo)"
rm -rf bindings/jax/build
"$py" -m pip install -q --force-reinstall --no-deps ./bindings/jax
rm -rf bindings/jax/build
# What gets tested is the installed package, not the source tree.
"$py" -c 'import vsgd_jax, pathlib; p = pathlib.Path(vsgd_jax.__file__); \
assert "site-packages" in p.parts, p; print("[jax] testing", p.parent)'

echo "[jax] pytest"
VSGD_BIN="$PWD/target/release/vsgd" VSGD_JAX_RESUME="$PWD/target/release/examples/resume" \
    VSGD_REPO="$PWD" "$py" -m pytest -q -rs -p no:cacheprovider bindings/jax/tests

echo "[jax] the GPU handler without a GPU: hand-built call frames under stub drivers"
command -v gcc >/dev/null || { apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null; }
stubs="$(mktemp -d)"
source scripts/lib/cuda-stubs.sh
cuda_stub "$stubs/cuinit" 100                        # cuInit: CUDA_ERROR_NO_DEVICE
cuda_stub "$stubs/broken" 0                          # every call after cuInit fails;
                                                     # no cuStreamGetCtx
cuda_stub "$stubs/broken-ctx" 0 "" cuStreamGetCtx    # the same with a (failing) one
# The fake driver: host memory, one stream, logs what is enqueued (tests/fake_cuda.c).
mkdir -p "$stubs/fake"
gcc -shared -fPIC -Wall -Wextra -Werror -o "$stubs/fake/libcuda.so.1" bindings/jax/tests/fake_cuda.c
ln -sf libcuda.so.1 "$stubs/fake/libcuda.so"
for s in $(cuda_stub_symbols) cuStreamGetCtx; do
    nm -D --defined-only "$stubs/fake/libcuda.so.1" | grep -qw "$s" \
        || { echo "[jax] FAIL: tests/fake_cuda.c lacks $s" >&2; exit 1; }
done
cargo build -q --release -p vsgd-jax --features cuda --tests
modes=(cuinit broken broken-ctx fake)
# "No library at all" only where the system has none.
ldconfig -p 2>/dev/null | grep -q 'libcuda\.so' || modes=(none "${modes[@]}")
for mode in "${modes[@]}"; do
    lib="$stubs/$mode"
    [ "$mode" = none ] && lib="$stubs/empty"
    if ! VSGD_CUDA_STUB=$mode LD_LIBRARY_PATH="$lib" cargo test -q --release -p vsgd-jax \
        --features cuda --test cuda_handler >"$stubs/log" 2>&1; then
        cat "$stubs/log"; echo "[jax] FAIL: GPU handler with driver '$mode'" >&2; exit 1
    fi
    echo "[jax]   driver '$mode': $(grep -o 'test result: ok. [0-9]* passed' "$stubs/log")"
done
rm -rf "$stubs"

echo "[jax] bindings/jax/gpu_check.py: a second CPU device as the GPU, then its skip"
"$py" bindings/jax/gpu_check.py --device-platform cpu --max-cases 3 --elements 100000 \
    | tee /tmp/vsgd-jax-gpu-$$.txt
grep -q '^JAX: all checks passed$' /tmp/vsgd-jax-gpu-$$.txt
if ! "$py" -c 'import jax, sys; jax.devices("cuda")' 2>/dev/null; then
    "$py" bindings/jax/gpu_check.py >/tmp/vsgd-jax-gpu-$$.txt
    grep -q '^JAX: .*no cuda backend.*, skipped$' /tmp/vsgd-jax-gpu-$$.txt \
        || { cat /tmp/vsgd-jax-gpu-$$.txt; echo "[jax] FAIL: gpu_check.py should skip" >&2; exit 1; }
    echo "[jax]   $(cat /tmp/vsgd-jax-gpu-$$.txt)"
fi
rm -f /tmp/vsgd-jax-gpu-$$.txt

echo "[jax] python -m vsgd_jax.replay: one case from the command line"
"$py" -m vsgd_jax.replay tests/data/conformance/vsgd-default.json --dtype f32 >/tmp/vsgd-jax-$$.json
./target/release/vsgd replay tests/data/conformance/vsgd-default.json --dtype f32 \
    | cmp - /tmp/vsgd-jax-$$.json
rm -f /tmp/vsgd-jax-$$.json

echo "[jax] smoke run: examples/jax/digits.py, 2 epochs, 2 seeds"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$py" examples/jax/digits.py --epochs 2 --seeds 2 >"$out/stdout.txt"
cat "$out/stdout.txt"
tail -n 5 "$out/stdout.txt" >"$out/table.txt"
"$py" - "$out/table.txt" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines[0] == "| optimizer | lr | test accuracy |", lines[0]
assert re.fullmatch(r"\|-+\|-+\|-+\|", lines[1]), lines[1]
names = []
for row in lines[2:]:
    m = re.fullmatch(r"\| ([\w.]+) \| ([0-9.e-]+) \| (\d+\.\d\d) ± (\d+\.\d\d) \|", row)
    assert m, f"bad row: {row!r}"
    assert 30.0 < float(m.group(3)) <= 100.0, f"implausible accuracy: {row!r}"
    names.append(m.group(1))
assert names == ["vsgd_jax.vsgd", "optax.adam", "optax.adamw"], names
print("[jax] table ok:", ", ".join(names))
PY

echo "[jax] smoke run: bindings/jax/bench.py on 100,000 elements"
"$py" bindings/jax/bench.py --elements 100000 --arrays 1 10 --repeats 2
echo "[jax] ok"
