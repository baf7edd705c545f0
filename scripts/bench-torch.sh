#!/usr/bin/env bash
# PyTorch's fused CPU Adam / AdamW / SGD-with-momentum against vsgd's Adam / AdamW / SGDM called
# in-process through the C ABI (ctypes on target/release/libvsgd.so, `vsgd_step_f32`), one
# 16M-element f32 tensor, ONE CPU core. A benchmark, not a test: prints a Markdown table.
#
# usage: scripts/bench-torch.sh [--elements N] [--samples S] [other scripts/bench_torch.py options]
#
# Makes (once) a venv in ${VSGD_TORCH_VENV:-$HOME/.cache/vsgd/torch-venv} with torch (the CPU
# wheel from download.pytorch.org/whl/cpu when reachable, else PyPI's default build, which
# carries CUDA but runs on the CPU) and numpy (only to silence torch's warning), builds the C
# library, and runs scripts/bench_torch.py pinned to core ${VSGD_BENCH_CPU:-0} (taskset, when
# installed) with OMP_NUM_THREADS=MKL_NUM_THREADS=1. Needs ~1 GB of memory and, the first time,
# network access and a few GB of disk for torch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=${VSGD_TORCH_VENV:-$HOME/.cache/vsgd/torch-venv}
cpu_index=https://download.pytorch.org/whl/cpu
marker=$venv/.vsgd-torch-wheel
py=$venv/bin/python

if [[ ! -x $py ]]; then
    echo "bench-torch: creating the venv $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "${PYTHON:-python3}" -m venv "$venv"
fi

if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    # Probe the CPU index with a short timeout first: pip alone retries for minutes when the
    # host is unreachable.
    if "$py" - "$cpu_index/torch/" <<'PY' >/dev/null 2>&1; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=10).read(1)
PY
        echo "bench-torch: installing torch from the CPU wheel index $cpu_index" >&2
        if "$py" -m pip install --timeout 30 --index-url "$cpu_index" torch >&2; then
            echo "CPU wheel from download.pytorch.org/whl/cpu" >"$marker"
        else
            echo "bench-torch: the CPU index failed; falling back to PyPI" >&2
        fi
    else
        echo "bench-torch: $cpu_index is unreachable; falling back to PyPI" >&2
    fi
    if ! "$py" -c 'import torch' >/dev/null 2>&1; then
        echo "bench-torch: installing torch from PyPI (its default build: CUDA, run on the CPU)" >&2
        "$py" -m pip install torch >&2
        echo "PyPI default build: CUDA-enabled, running on the CPU" >"$marker"
    fi
fi
if ! "$py" -c 'import numpy' >/dev/null 2>&1; then
    echo "bench-torch: installing numpy (silences torch's 'Failed to initialize NumPy')" >&2
    "$py" -m pip install numpy >&2
fi

if [[ -s $marker ]]; then
    wheel=$(<"$marker")
else
    wheel="already in the venv, not installed by this script"
fi
export VSGD_TORCH_WHEEL=$wheel
echo "bench-torch: torch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null): $wheel" >&2

cargo build --release -p vsgd-ffi

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
pin=()
if command -v taskset >/dev/null 2>&1; then
    pin=(taskset -c "${VSGD_BENCH_CPU:-0}")
else
    echo "bench-torch: taskset not found; the process is not pinned to one core" >&2
fi
exec ${pin[@]+"${pin[@]}"} "$py" scripts/bench_torch.py "$@"
