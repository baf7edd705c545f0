"""The native library: found next to this file, loaded with ctypes, its XLA FFI handlers
registered with JAX once per process: for platform "cpu" always, and for platform "CUDA" when
jaxlib has a CUDA backend (the GPU handler under the same target name, so one
``jax.ffi.ffi_call`` runs on whichever platform the program is compiled for).

The library is the Rust crate in ``bindings/jax`` (a cdylib with no Python in it), built by
``pip install`` through setuptools-rust. ``VSGD_JAX_LIBRARY`` overrides where it is loaded
from (for development against ``target/release``).
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading

import jax

#: Name of the FFI target the step is registered under (platforms "cpu" and, with a GPU,
#: "CUDA": ``vsgd_jax_xla_step`` and ``vsgd_jax_xla_step_cuda``).
TARGET = "vsgd_jax_step"
#: Name of the FFI target of the gradient verdict.
FINITE_TARGET = "vsgd_jax_all_finite"

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_registered = False
_cuda = False


def _find() -> str:
    override = os.environ.get("VSGD_JAX_LIBRARY")
    if override:
        return override
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "libvsgd_jax_native*")))
    if not found:
        raise ImportError(
            f"vsgd_jax: the native library (libvsgd_jax_native*) is missing from {here}; "
            "install the package with `pip install ./bindings/jax` (it builds it with cargo)")
    return found[0]


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    err = [c.c_char_p, c.c_size_t]
    lib.vsgd_jax_check_config.argtypes = [c.c_char_p, c.POINTER(c.c_char_p),
                                          c.POINTER(c.c_double), c.c_size_t] + err
    lib.vsgd_jax_default.argtypes = [c.c_char_p, c.c_char_p, c.POINTER(c.c_double)] + err
    lib.vsgd_jax_save.argtypes = [
        c.c_char_p, c.POINTER(c.c_char_p), c.POINTER(c.c_double), c.c_size_t,
        c.c_size_t, c.POINTER(c.c_char_p), c.POINTER(c.c_size_t), c.POINTER(c.c_uint64),
        c.POINTER(c.c_uint32), c.POINTER(c.c_uint64), c.POINTER(c.c_void_p),
        c.POINTER(c.POINTER(c.c_uint8)), c.POINTER(c.c_size_t)] + err
    lib.vsgd_jax_bytes_free.argtypes = [c.POINTER(c.c_uint8), c.c_size_t]
    lib.vsgd_jax_bytes_free.restype = None
    lib.vsgd_jax_load.argtypes = [c.c_char_p, c.c_size_t, c.POINTER(c.c_void_p)] + err
    lib.vsgd_jax_ckpt_free.argtypes = [c.c_void_p]
    lib.vsgd_jax_ckpt_free.restype = None
    lib.vsgd_jax_ckpt_summary.argtypes = [c.c_void_p, c.c_char_p, c.c_size_t,
                                          c.POINTER(c.c_size_t), c.POINTER(c.c_size_t)] + err
    lib.vsgd_jax_ckpt_hyper.argtypes = [c.c_void_p, c.c_size_t, c.c_char_p,
                                        c.POINTER(c.c_double), c.POINTER(c.c_int32)] + err
    lib.vsgd_jax_ckpt_tensor.argtypes = [
        c.c_void_p, c.c_size_t, c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t),
        c.POINTER(c.c_size_t), c.POINTER(c.c_uint64), c.c_size_t, c.POINTER(c.c_uint32),
        c.POINTER(c.c_uint64), c.POINTER(c.c_size_t)] + err
    lib.vsgd_jax_ckpt_state.argtypes = [c.c_void_p, c.c_size_t, c.c_size_t, c.c_void_p,
                                        c.c_size_t] + err
    for name in ("check_config", "default", "save", "load", "ckpt_summary", "ckpt_hyper",
                 "ckpt_tensor", "ckpt_state"):
        getattr(lib, f"vsgd_jax_{name}").restype = c.c_int32


def _cuda_backend() -> bool:
    """Whether jaxlib has a working CUDA backend (a GPU jaxlib plugin and a GPU). Starts it."""
    try:
        return len(jax.devices("cuda")) > 0
    except RuntimeError:
        return False


def cuda_registered() -> bool:
    """Whether the step's GPU handler is registered (platform "CUDA")."""
    library()
    return _cuda


def library() -> ctypes.CDLL:
    """The loaded native library, with its FFI handlers registered with JAX."""
    global _lib, _registered, _cuda
    with _lock:
        if _lib is None:
            lib = ctypes.CDLL(_find())
            _declare(lib)
            _lib = lib
        if not _registered:
            # Start the CPU backend first: a target registered before it starts is only
            # checked when it starts, and a refusal then fails the backend's first start
            # (whatever op triggered it) instead of raising here.
            jax.devices("cpu")
            jax.ffi.register_ffi_target(
                TARGET, jax.ffi.pycapsule(_lib.vsgd_jax_xla_step), platform="cpu")
            jax.ffi.register_ffi_target(
                FINITE_TARGET, jax.ffi.pycapsule(_lib.vsgd_jax_xla_all_finite), platform="cpu")
            # The GPU handler, where there is a GPU backend (started first, as the CPU's);
            # without one nothing is registered and nothing is said. The verdict has no GPU
            # target: on the GPU it is computed in jax.numpy (_ops.all_finite).
            if hasattr(_lib, "vsgd_jax_xla_step_cuda") and _cuda_backend():
                jax.ffi.register_ffi_target(
                    TARGET, jax.ffi.pycapsule(_lib.vsgd_jax_xla_step_cuda), platform="CUDA")
                _cuda = True
            _registered = True
        return _lib


class NativeError(ValueError):
    """A refusal by the native library (bad configuration, corrupt checkpoint, ...)."""


def call(fn_name: str, *args) -> None:
    """Calls ``vsgd_jax_<fn_name>(*args, err, cap)``; raises :class:`NativeError` on failure."""
    lib = library()
    buf = ctypes.create_string_buffer(1024)
    rc = getattr(lib, f"vsgd_jax_{fn_name}")(*args, buf, len(buf))
    if rc != 0:
        raise NativeError(buf.value.decode("utf-8", "replace"))


def check_config(algorithm: str, hyper: dict[str, float]) -> None:
    """Raises :class:`NativeError` naming the first invalid hyperparameter."""
    names = (ctypes.c_char_p * max(len(hyper), 1))(*[k.encode() for k in hyper])
    values = (ctypes.c_double * max(len(hyper), 1))(*[float(v) for v in hyper.values()])
    call("check_config", algorithm.encode(), names, values, len(hyper))


def default(algorithm: str, name: str) -> float:
    """The core's default for hyperparameter ``name`` of ``algorithm``."""
    out = ctypes.c_double()
    call("default", algorithm.encode(), name.encode(), ctypes.byref(out))
    return out.value
