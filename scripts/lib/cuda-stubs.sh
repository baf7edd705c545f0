# Sourced by scripts that test the CUDA path's error handling without a GPU (run from the
# repository root). `cuda_stub DIR CUINIT_RESULT [OMITTED_SYMBOL] [EXTRA_SYMBOL...]` builds
# DIR/libcuda.so.1 (and DIR/libcuda.so): every driver function the core checks for before its
# first call (REQUIRED_SYMBOLS in src/cuda/driver.rs), each returning CUDA_ERROR_UNKNOWN (999),
# except `cuInit`, which returns CUDA_ERROR_RESULT (0 for success, 100 for
# CUDA_ERROR_NO_DEVICE). OMITTED_SYMBOL (may be empty) is left out; EXTRA_SYMBOLs are added,
# failing the same way. Needs gcc.
cuda_stub() {
    local dir=$1 init=$2 omit=${3:-} s syms
    syms=$(cuda_stub_symbols)
    if [ -z "$syms" ]; then
        echo "cuda_stub: no REQUIRED_SYMBOLS in src/cuda/driver.rs" >&2
        return 1
    fi
    mkdir -p "$dir"
    for s in $syms "${@:4}"; do
        [ "$s" = "$omit" ] && continue
        if [ "$s" = cuInit ]; then
            echo "int cuInit(unsigned int flags) { (void)flags; return $init; }"
        else
            echo "int $s(void) { return 999; }"
        fi
    done >"$dir/stub.c"
    gcc -shared -fPIC -o "$dir/libcuda.so.1" "$dir/stub.c"
    ln -sf libcuda.so.1 "$dir/libcuda.so"
}

# The symbols cuda_stub provides (without extras), one per line.
cuda_stub_symbols() {
    sed -n '/^pub(crate) const REQUIRED_SYMBOLS/,/^];/p' src/cuda/driver.rs \
        | grep -o '"cu[A-Za-z0-9_]*"' | tr -d '"'
}
