#!/usr/bin/env python3
"""Compiles src/cuda/kernels/multi_tensor.cu ahead of time with NVRTC (through ctypes; NVRTC
from the pip wheel nvidia-cuda-nvrtc-cu12, on LD_LIBRARY_PATH or given with --nvrtc).

Writes into src/cuda/kernels/build/ (committed, embedded by src/cuda/module.rs):
  multi_tensor.sm_90.cubin     SASS for sm_90 (H100/H200): what the library loads first
  multi_tensor.compute_75.ptx  PTX fallback the driver JIT-compiles on other GPUs (sm_75+)
  manifest.txt                 NVRTC version, options, and FNV-1a 64 hashes of the sources
                               and of both artifacts; `cargo test --features cuda` fails when
                               the sources no longer match it (stale artifacts)
With --out DIR it writes there instead (the test script compares a fresh build with the
committed files); --ptx90 also writes multi_tensor.compute_90.ptx (the PTX of the cubin, for
the lint and the ptxas register gate).
"""
import argparse
import ctypes
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KDIR = os.path.join(ROOT, "src", "cuda", "kernels")
# The files whose bytes the manifest hashes, in this order (src/cuda/module.rs hashes the same).
SOURCES = ["rules.cuh", "multi_tensor.cu"]
# IEEE arithmetic: no contraction into FMA, correctly rounded division and square root, no
# flush to zero. The device then performs the portable path's operations exactly.
OPTIONS = ["--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false", "--std=c++17"]


def fnv1a64(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def sources_hash(options) -> int:
    """FNV-1a 64 over each source's name, NUL, bytes, NUL, then the options joined by spaces."""
    h = 0xCBF29CE484222325
    for name in SOURCES:
        with open(os.path.join(KDIR, name), "rb") as f:
            h = fnv1a64(name.encode() + b"\0" + f.read() + b"\0", h)
    return fnv1a64(" ".join(options).encode(), h)


class Nvrtc:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path or "libnvrtc.so.12")
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(self, code, what):
        if code != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(code).decode()}")

    def version(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return f"{major.value}.{minor.value}"

    def compile(self, arch, options, want):
        src = open(os.path.join(KDIR, "multi_tensor.cu"), "rb").read()
        header = open(os.path.join(KDIR, "rules.cuh"), "rb").read()
        prog = ctypes.c_void_p()
        headers = (ctypes.c_char_p * 1)(header)
        names = (ctypes.c_char_p * 1)(b"rules.cuh")
        self.check(
            self.lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"multi_tensor.cu", 1, headers, names),
            "nvrtcCreateProgram",
        )
        try:
            opts = [f"--gpu-architecture={arch}"] + options
            copts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
            code = self.lib.nvrtcCompileProgram(prog, len(opts), copts)
            size = ctypes.c_size_t()
            self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            self.lib.nvrtcGetProgramLog(prog, log)
            text = log.value.decode(errors="replace").strip()
            if code != 0:
                raise RuntimeError(f"NVRTC failed for {arch}:\n{text}")
            if text:
                # Warnings are errors: the kernels must compile cleanly.
                raise RuntimeError(f"NVRTC warnings for {arch}:\n{text}")
            get_size, get = {
                "ptx": (self.lib.nvrtcGetPTXSize, self.lib.nvrtcGetPTX),
                "cubin": (self.lib.nvrtcGetCUBINSize, self.lib.nvrtcGetCUBIN),
            }[want]
            self.check(get_size(prog, ctypes.byref(size)), f"{want} size")
            buf = ctypes.create_string_buffer(size.value)
            self.check(get(prog, buf), want)
            data = buf.raw
            # PTX comes NUL-terminated; keep the text without it (module.rs appends one).
            return data.rstrip(b"\0") if want == "ptx" else data
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nvrtc", help="path of libnvrtc.so.12")
    ap.add_argument("--out", default=os.path.join(KDIR, "build"))
    ap.add_argument("--ptx90", action="store_true", help="also write the sm_90 PTX")
    args = ap.parse_args()
    nv = Nvrtc(args.nvrtc)
    os.makedirs(args.out, exist_ok=True)
    cubin = nv.compile("sm_90", OPTIONS, "cubin")
    ptx = nv.compile("compute_75", OPTIONS, "ptx")
    files = {"multi_tensor.sm_90.cubin": cubin, "multi_tensor.compute_75.ptx": ptx}
    if args.ptx90:
        files["multi_tensor.compute_90.ptx"] = nv.compile("compute_90", OPTIONS, "ptx")
    for name, data in files.items():
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)
    manifest = (
        "# Written by scripts/cuda/compile_kernels.py; checked by src/cuda/module.rs tests.\n"
        f"nvrtc {nv.version()}\n"
        f"options {' '.join(OPTIONS)}\n"
        f"sources {sources_hash(OPTIONS):016x}\n"
        f"cubin {fnv1a64(cubin):016x}\n"
        f"ptx {fnv1a64(ptx):016x}\n"
    )
    with open(os.path.join(args.out, "manifest.txt"), "w") as f:
        f.write(manifest)
    print(f"wrote {', '.join(files)} and manifest.txt to {os.path.relpath(args.out, ROOT)}"
          f" (NVRTC {nv.version()}; cubin {len(cubin)} bytes, PTX {len(ptx)} bytes)")


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        sys.exit(f"compile_kernels.py: {e}")
