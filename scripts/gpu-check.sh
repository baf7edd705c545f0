#!/usr/bin/env bash
# The prepared GPU check (docs/cuda.md). Nothing is built on the GPU machine (no network there,
# no compiler needed): everything is built here and carried there in target/gpu-check/.
#
#   bash scripts/gpu-check.sh --build
#       On a development machine (no GPU needed): builds cli/examples/gpu_check in release, strips
#       it, and leaves it at target/gpu-check/gpu_check (a few MiB; it links glibc dynamically
#       and loads libcuda.so.1 at run time, so it needs no CUDA toolkit anywhere). Also the
#       JAX part: target/gpu-check/jax/ holds bindings/jax/gpu_check.py and the vsgd_jax
#       package (its Python sources and the native library built with feature `cuda`,
#       stripped, a few MiB), for a machine whose Python has jax (>= 0.12, with CUDA) and optax.
#   bash scripts/gpu-check.sh [--elements N] [--cases DIR]
#       On the GPU machine, from the repository root (it reads tests/data/conformance): runs the
#       binary, which prints a table of checks and figures; then, if `python3 -c "import jax"`
#       works there, the JAX check (vsgd_jax's custom call on the GPU against the CPU, bit for
#       bit: bindings/jax/gpu_check.py), else it says "JAX: not installed on this machine,
#       skipped". Exit status: 0 every check passed, 1 a result differs from the CPU (either
#       part), 2 no usable GPU (the message says why), 3 no binary. The JAX part never turns a
#       pass into a failure by being absent: no jax, no optax, no CUDA backend in jax, or a jax
#       older than 0.12 is a printed skip. VSGD_PYTHON picks another Python than python3.
#
# With the device tool of this project: run(command="bash scripts/gpu-check.sh",
# carry=["target/gpu-check"], timeout_s=300). The bandwidth rows need about 45 GB of GPU memory
# at the default 2^30 elements; pass --elements for a smaller GPU (the JAX part times 2^24).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=target/gpu-check/gpu_check
jax_dir=target/gpu-check/jax
if [[ ${1:-} == --build ]]; then
    cargo build --release -p vsgd-cli --features cuda --example gpu_check
    mkdir -p target/gpu-check
    cp target/release/examples/gpu_check "$bin"
    strip "$bin" 2>/dev/null || true
    echo "built $bin ($(du -h "$bin" | cut -f1))"
    # The JAX part: the same files `pip install ./bindings/jax` installs, without pip.
    cargo build --release -p vsgd-jax --features cuda
    rm -rf "$jax_dir"
    mkdir -p "$jax_dir/vsgd_jax"
    cp bindings/jax/python/vsgd_jax/*.py "$jax_dir/vsgd_jax/"
    cp target/release/libvsgd_jax_native.so "$jax_dir/vsgd_jax/"
    strip "$jax_dir/vsgd_jax/libvsgd_jax_native.so" 2>/dev/null || true
    cp bindings/jax/gpu_check.py "$jax_dir/"
    echo "built $jax_dir ($(du -sh "$jax_dir" | cut -f1)); carry target/gpu-check" \
        "($(du -sh target/gpu-check | cut -f1)) to the GPU machine"
    exit 0
fi
if [[ ! -x $bin ]]; then
    echo "gpu-check: $bin is missing: build it first with 'bash scripts/gpu-check.sh --build'" >&2
    exit 3
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
rc=0
"$bin" "$@" || rc=$?

# The JAX part (after the binary, whose figures come first). Its own options are fixed; the
# conformance directory follows --cases when given.
cases=tests/data/conformance
for ((i = 1; i <= $#; i++)); do
    [[ ${!i} == --cases ]] && { j=$((i + 1)); cases=${!j}; }
done
python=${VSGD_PYTHON:-python3}
echo
if ! command -v "$python" >/dev/null || ! "$python" -c "import jax" 2>/dev/null; then
    echo "JAX: not installed on this machine, skipped"
elif [[ ! -f $jax_dir/gpu_check.py ]]; then
    echo "JAX: $jax_dir is missing (build it with 'bash scripts/gpu-check.sh --build'), skipped"
else
    jrc=0
    "$python" "$jax_dir/gpu_check.py" --cases "$cases" || jrc=$?
    if [[ $jrc -ne 0 && $rc -eq 0 ]]; then rc=1; fi
fi
exit "$rc"
