#!/usr/bin/env bash
# The CUDA path proven without a GPU (docs/cuda.md):
#  1. NVRTC (pip nvidia-cuda-nvrtc-cu12) recompiles the kernels; the result must equal the
#     committed src/cuda/kernels/build/ byte for byte (stale artifacts fail);
#  2. PTX lint: no FMA contraction, no .approx/.ftz, every float op rounded (.rn), no local
#     memory; ptxas (pip nvidia-cuda-nvcc-cu12) for sm_90: fail on spills or stack frames;
#  3. builds with and without `--features cuda` (nothing CUDA installed), clippy with it;
#  4. `cargo test --features cuda`: the host emulation (the kernels' own source built with g++,
#     run by the real DeviceOptimizer and stateless step) bit for bit against the CPU, the
#     artifacts' freshness and layout, and the no-GPU error paths;
#  5. error paths against stub driver libraries (none, cuInit = CUDA_ERROR_NO_DEVICE, a missing
#     function, a driver that fails every call), from Rust and from C (bindings/c, feature cuda);
#  6. cli/examples/gpu_check builds and, without a GPU, fails with a clear message.
# The pip wheels live in a venv cached at $VSGD_CUDA_VENV (default ~/.cache/vsgd/cuda-venv).
# Regenerate the artifacts after editing the kernels: VSGD_CUDA_BLESS=1 bash scripts/test.d/40-cuda.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
log() { printf '[40-cuda] %s\n' "$*"; }

SUDO=()
[[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && SUDO=(sudo)
apt_install() {
    log "installing $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v g++ >/dev/null || apt_install g++
command -v gcc >/dev/null || apt_install gcc
python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv

# ------------------------------------------------------------ toolchain: NVRTC and ptxas
VENV=${VSGD_CUDA_VENV:-$HOME/.cache/vsgd/cuda-venv}
WHEELS=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86)
site() { "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/pip" show -q nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12 >/dev/null 2>&1; then
    log "installing ${WHEELS[*]} into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${WHEELS[@]}"
fi
NV="$(site)/nvidia"
NVRTC_LIB="$NV/cuda_nvrtc/lib"
PTXAS="$NV/cuda_nvcc/bin/ptxas"
[[ -e $NVRTC_LIB/libnvrtc.so.12 && -x $PTXAS ]] || { log "NVRTC or ptxas missing in $VENV"; exit 1; }

# ------------------------------------------------------------ 1. artifacts fresh
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ ${VSGD_CUDA_BLESS:-} == 1 ]]; then
    LD_LIBRARY_PATH="$NVRTC_LIB" python3 scripts/cuda/compile_kernels.py
fi
LD_LIBRARY_PATH="$NVRTC_LIB" python3 scripts/cuda/compile_kernels.py --out "$tmp/build" --ptx90
for f in multi_tensor.sm_90.cubin multi_tensor.compute_75.ptx manifest.txt; do
    if ! cmp -s "$tmp/build/$f" "src/cuda/kernels/build/$f"; then
        log "src/cuda/kernels/build/$f is stale: regenerate with VSGD_CUDA_BLESS=1 bash $0"
        exit 1
    fi
done
log "committed cubin, PTX and manifest equal a fresh NVRTC build"

# ------------------------------------------------------------ 2. PTX lint and ptxas gate
python3 scripts/cuda/ptx_lint.py src/cuda/kernels/build/multi_tensor.compute_75.ptx
python3 scripts/cuda/ptx_lint.py --ptxas "$PTXAS" "$tmp/build/multi_tensor.compute_90.ptx"
log "PTX lint and sm_90 register gate passed"

# ------------------------------------------------------------ 3. builds
cargo build -q --lib
cargo build -q --features cuda --lib --examples
cargo clippy -q --workspace --all-targets --features cuda -- -D warnings
log "builds with and without --features cuda; clippy clean with it"

# ------------------------------------------------------------ 4. tests (host emulation etc.)
out="$tmp/test.log"
if ! cargo test -q --features cuda --lib cuda:: >"$out" 2>&1; then
    cat "$out"; log "cargo test --features cuda --lib cuda:: failed"; exit 1
fi
grep -q 'SKIPPED' "$out" && { cat "$out"; log "a CUDA test was skipped"; exit 1; }
cargo test -q --features cuda --test cuda_nodevice >>"$out" 2>&1 || { cat "$out"; exit 1; }
passed=$(grep -oE '^test result: ok. [0-9]+' "$out" | awk '{s += $4} END {print s}')
log "$passed CUDA tests passed (host emulation bit-identical to the CPU)"

# ------------------------------------------------------------ 5. stub drivers
syms=$(sed -n '/^pub(crate) const REQUIRED_SYMBOLS/,/^];/p' src/cuda/driver.rs | grep -o '"cu[A-Za-z0-9_]*"' | tr -d '"')
stub() { # stub DIR CUINIT_RESULT [OMITTED_SYMBOL]
    mkdir -p "$1"
    for s in $syms; do
        [[ $s == "${3:-}" ]] && continue
        if [[ $s == cuInit ]]; then
            echo "int cuInit(unsigned int flags) { (void)flags; return $2; }"
        else
            echo "int $s(void) { return 999; }" # CUDA_ERROR_UNKNOWN
        fi
    done >"$1/stub.c"
    gcc -shared -fPIC -o "$1/libcuda.so.1" "$1/stub.c"
    ln -sf libcuda.so.1 "$1/libcuda.so"
}
stub "$tmp/cuinit" 100
stub "$tmp/missing" 100 cuLaunchKernel
stub "$tmp/broken" 0
cargo test -q --features cuda --test cuda_nodevice --no-run 2>/dev/null
modes=(cuinit missing broken)
# "No library at all" can only be had where the system has none.
ldconfig -p 2>/dev/null | grep -q 'libcuda\.so' || modes=(none "${modes[@]}")
for mode in "${modes[@]}"; do
    lib="$tmp/$mode"
    [[ $mode == none ]] && lib="$tmp/empty"
    if ! VSGD_CUDA_STUB=$mode LD_LIBRARY_PATH="$lib" cargo test -q --features cuda --test cuda_nodevice >"$out" 2>&1; then
        cat "$out"; log "stub driver '$mode': failed"; exit 1
    fi
done
log "no driver, cuInit failing, a missing function, every call failing: clean errors from Rust"
if true; then # the C ABI always has the CUDA entry points
    for mode in "${modes[@]}"; do
        [[ $mode == missing ]] && continue
        lib="$tmp/$mode"
        [[ $mode == none ]] && lib="$tmp/empty"
        if ! VSGD_CUDA_STUB=$mode LD_LIBRARY_PATH="$lib" cargo test -q -p vsgd-ffi cuda >"$out" 2>&1; then
            cat "$out"; log "C ABI with stub driver '$mode': failed"; exit 1
        fi
    done
    cargo build -q -p vsgd-ffi
    mkdir -p "$tmp/lib"
    ln -sf "$PWD/target/debug/libvsgd.so" "$tmp/lib/libvsgd.so.2"
    gcc -std=c11 -Wall -Wextra -Wpedantic -Werror -Iinclude scripts/cuda/c_nodevice.c \
        -Ltarget/debug -lvsgd -o "$tmp/c_nodevice"
    for mode in "${modes[@]}"; do
        [[ $mode == missing ]] && continue
        lib="$tmp/$mode"
        [[ $mode == none ]] && lib="$tmp/empty"
        if ! LD_LIBRARY_PATH="$tmp/lib:$lib" "$tmp/c_nodevice" "$mode" >"$out" 2>&1; then
            cat "$out"; log "C program with stub driver '$mode': failed"; exit 1
        fi
    done
    log "the same from the C ABI (vsgd_cuda_available, vsgd_cuda_step), from Rust and from C"
fi

# ------------------------------------------------------------ 6. the GPU check, here
cargo build -q --release -p vsgd-cli --features cuda --example gpu_check
set +e
LD_LIBRARY_PATH="$tmp/cuinit" target/release/examples/gpu_check >"$out" 2>&1
rc=$?
set -e
if [[ $rc -ne 2 ]] || ! grep -q 'no CUDA device: cuInit failed: CUDA_ERROR_NO_DEVICE' "$out"; then
    cat "$out"; log "gpu_check without a GPU should exit 2 with a clear message (got $rc)"; exit 1
fi
log "gpu_check builds, and without a GPU says so: $(cat "$out")"
log "ok"
