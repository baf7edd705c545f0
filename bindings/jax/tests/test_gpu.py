"""The GPU path (platform "CUDA"), checked where there is no GPU: what a jitted step lowers to
for CUDA (``jax.export`` lowers for any platform), the verdict JAX computes there, the shipped
library's GPU handler through ctypes, registration that follows the backend. On a machine
whose jaxlib has a CUDA backend, ``gpu_check.py`` compares the GPU against the CPU bit for bit.

The handler's own error paths (operands, stream, driver) are tested in Rust with hand-built
call frames: tests/cuda_handler.rs, run by scripts/test.d/40-jax.sh under stub drivers."""

import ctypes
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import vsgd_jax
from vsgd_jax import _native, _ops

ALGORITHMS = {"vsgd": 3, "constant_vsgd": 2, "adam": 2, "adamw": 2, "sgdm": 1}


def lowered_for(platform, tx, params, grads):
    """The StableHLO text of the jitted fused step, lowered for ``platform``."""
    checks = [jax.export.DisabledSafetyCheck.custom_call(t)
              for t in (_native.TARGET, _native.FINITE_TARGET)]
    exported = jax.export.export(jax.jit(tx.step), platforms=[platform],
                                 disabled_checks=checks)(grads, tx.init(params), params)
    return exported.mlir_module()


def step_calls(text):
    """(operand count, {operand: result} aliases) of every ``vsgd_jax_step`` custom call."""
    calls = []
    for line in text.splitlines():
        m = re.search(r"stablehlo\.custom_call @vsgd_jax_step\(([^)]*)\)", line)
        if m:
            aliases = {int(o): int(r) for r, o in re.findall(
                r"output_operand_alias<output_tuple_indices = \[(\d+)\], operand_index = (\d+)",
                line)}
            calls.append((len(m.group(1).split(",")), aliases))
    return calls


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("arrays", [3, 40])
def test_the_step_lowers_for_cuda_to_the_same_custom_call(algorithm, arrays):
    k = ALGORITHMS[algorithm]
    tx = vsgd_jax.make(algorithm, optax.linear_schedule(0.1, 0.01, 10))
    shapes = [(4, 3), (5,), (2, 2, 2)]
    params = {f"p{i:02d}": jnp.ones(shapes[i % 3], jnp.float32) for i in range(arrays)}
    grads = jax.tree_util.tree_map(lambda x: x * 0.5, params)
    cuda, cpu = (lowered_for(p, tx, params, grads) for p in ("cuda", "cpu"))
    # One call per group of at most 32 arrays, the CPU's operand layout, every parameter and
    # state array aliased to its output: the GPU handler gets the frame the CPU's gets.
    groups = [min(32, arrays - c) for c in range(0, arrays, 32)]
    for text in (cuda, cpu):
        calls = step_calls(text)
        assert [n for n, _ in calls] == [3 + (2 + k) * n for n in groups]
        for (_, aliases), n in zip(calls, groups):
            want = {3 + j: j for j in range(n)}
            want.update({3 + (2 + a) * n + j: (1 + a) * n + j
                         for a in range(k) for j in range(n)})
            assert aliases == want
    # The verdict: the native scan on the CPU, jax.numpy on the GPU (no target there).
    assert "@vsgd_jax_all_finite" in cpu
    assert "@vsgd_jax_all_finite" not in cuda and "stablehlo.is_finite" in cuda


def test_under_vmap_the_cuda_lowering_batches_the_call():
    tx = vsgd_jax.adam(0.01)
    params = {"w": jnp.ones((3, 4, 2))}
    state = jax.vmap(tx.init)(params)
    checks = [jax.export.DisabledSafetyCheck.custom_call(_native.TARGET)]
    text = jax.export.export(jax.jit(jax.vmap(tx.step)), platforms=["cuda"],
                             disabled_checks=checks)(params, state, params).mlir_module()
    (n, _), = step_calls(text)
    assert n == 3 + 4
    # The three scalars come with one element per row.
    m = re.search(r"custom_call @vsgd_jax_step\(.*\) .*: \((tensor<[^>]*>), (tensor<[^>]*>), "
                  r"(tensor<[^>]*>),", text)
    assert m and all(t.startswith("tensor<3x") for t in m.groups()), m and m.groups()


def _verdicts(grads):
    native = bool(_ops._finite_batched(*grads))
    jnp_ = bool(_ops._jnp_all_finite(*grads))
    return native, jnp_


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gpu_verdict_agrees_with_the_native_scan(dtype):
    rng = np.random.default_rng(5)
    with jax.enable_x64(dtype == np.float64):
        for bad in [None, np.nan, np.inf, -np.inf, 1e38]:
            finite = bad is None or bool(np.isfinite(bad))
            arrays = [rng.standard_normal(s).astype(dtype) for s in [(7,), (0,), (3, 33), (1,)]]
            rows = [jnp.asarray(np.stack([a, a, a])) for a in arrays]
            if bad is not None:
                arrays[2][2, 31] = bad
                rows[2] = rows[2].at[1, 0, 5].set(bad)  # row 1 only
            native, jnp_ = _verdicts([jnp.asarray(a) for a in arrays])
            assert native == jnp_ == finite, bad
            # Under vmap: one verdict per row.
            got_native = jax.vmap(lambda *g: _ops._finite_batched(*g))(*rows)
            got_jnp = jax.vmap(lambda *g: _ops._jnp_all_finite(*g))(*rows)
            want = [True, finite, True]
            assert list(np.asarray(got_native)) == list(np.asarray(got_jnp)) == want, bad


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 host devices (conftest.py)")
def test_the_gpu_verdict_on_a_mesh_gathers_nothing():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    g = np.ones((64, 32), np.float32)
    shard = NamedSharding(mesh, P("data", "model"))
    verdict = jax.jit(lambda g: _ops._jnp_all_finite(g))
    text = verdict.lower(jax.device_put(g, shard)).compile().as_text()
    assert "all-gather" not in text and "all-reduce" in text
    assert bool(verdict(jax.device_put(g, shard)))
    g[63, 31] = np.nan  # in the last device's shard only
    assert not bool(verdict(jax.device_put(g, shard)))


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 host devices (conftest.py)")
def test_the_gpus_program_on_a_mesh_of_cpus(monkeypatch):
    """The step as the GPU runs it (verdict in jax.numpy around the partitioned custom call),
    here on 8 CPU devices: no array gathered, the bits of the unsharded step, a NaN in one
    shard skipping every shard."""
    from test_sharding import bits, setup

    monkeypatch.setattr(_ops, "all_finite", lambda grads: _ops._jnp_all_finite(*grads))
    tx = vsgd_jax.adamw(0.01)
    mesh, params, grads, shard, state_shard = setup(tx, seed=4)
    grads[2]["w1"][63, 31] = np.nan  # the last device's shard only: step 3 is skipped
    step = jax.jit(lambda p, s, g: tx.step(g, s, p), donate_argnums=(0, 1))
    p1 = jax.device_put(params, shard)
    s1 = jax.device_put(tx.init(params), state_shard)
    text = step.lower(p1, s1, jax.device_put(grads[0], shard)).compile().as_text()
    assert "vsgd_jax_all_finite" not in text and "vsgd_jax_step" in text
    for op in ("all-gather", "all-to-all", "collective-permute", "reduce-scatter"):
        assert op not in text, op
    p0, s0 = params, tx.init(params)
    for g in grads:
        p0, s0 = jax.jit(tx.step)(g, s0, p0)
        p1, s1 = step(p1, s1, jax.device_put(g, shard))
    assert int(s1.count) == int(s0.count) == 2
    assert bits((p1, s1)) == bits((p0, s0))


# ------------------------------------------------------------------ the shipped library


class _ExtensionBase(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int),
                ("next", ctypes.c_void_p)]


class _ApiVersion(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("major_version", ctypes.c_int), ("minor_version", ctypes.c_int)]


class _Metadata(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("api_version", _ApiVersion),
                ("traits", ctypes.c_uint32)]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", _ExtensionBase), ("metadata", ctypes.POINTER(_Metadata))]


class _Args(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("size", ctypes.c_int64), ("types", ctypes.c_void_p), ("args", ctypes.c_void_p)]


class _Attrs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("size", ctypes.c_int64), ("types", ctypes.c_void_p),
                ("names", ctypes.c_void_p), ("attrs", ctypes.c_void_p)]


class _CreateArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("message", ctypes.c_char_p), ("errc", ctypes.c_int)]


_CREATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_CreateArgs))


class _Api(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("api_version", _ApiVersion), ("internal_api", ctypes.c_void_p),
                ("error_create", _CREATE)] + [(f"f{i}", ctypes.c_void_p) for i in range(11)]


class _CallFrame(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("api", ctypes.POINTER(_Api)), ("ctx", ctypes.c_void_p),
                ("stage", ctypes.c_int), ("args", _Args), ("rets", _Args), ("attrs", _Attrs)]


def test_the_installed_library_has_the_gpu_handler():
    lib = ctypes.CDLL(_native._find())
    handler = lib.vsgd_jax_xla_step_cuda  # built with feature cuda (pyproject.toml)
    handler.restype = ctypes.c_void_p
    handler.argtypes = [ctypes.c_void_p]
    assert ctypes.sizeof(_CallFrame) == 168
    # The metadata query, as XLA makes it at registration.
    meta = _Metadata(struct_size=36)
    ext = _MetadataExtension(_ExtensionBase(32, 1, None), ctypes.pointer(meta))
    frame = _CallFrame(struct_size=168, extension_start=ctypes.addressof(ext))
    assert handler(ctypes.addressof(frame)) is None
    assert (meta.api_version.major_version, meta.api_version.minor_version) == (0, 1)
    assert meta.traits == 0
    # An execution with nothing in it: refused through XLA_FFI_Error_Create, not a crash.
    errors = []

    @_CREATE
    def create(args):
        errors.append((args.contents.errc, args.contents.message.decode()))
        return 0xE770

    api = _Api(struct_size=ctypes.sizeof(_Api), error_create=create)
    frame = _CallFrame(struct_size=168, api=ctypes.pointer(api), stage=3,
                       args=_Args(struct_size=40), rets=_Args(struct_size=40),
                       attrs=_Attrs(struct_size=48))
    assert handler(ctypes.addressof(frame)) == 0xE770
    assert errors == [(3, "vsgd_jax: missing attribute 'algorithm'")]


def _cuda_backend():
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


def test_the_gpu_handler_is_registered_exactly_where_jaxlib_has_cuda():
    assert _native.cuda_registered() == _cuda_backend()


GPU_CHECK = pathlib.Path(__file__).resolve().parents[1] / "gpu_check.py"


def test_on_a_gpu_the_steps_equal_the_cpus():
    if not _native.cuda_registered():
        pytest.skip("no CUDA backend in this jaxlib: the GPU is checked by "
                    "scripts/gpu-check.sh (bindings/jax/gpu_check.py) on a GPU machine")
    from conftest import CONFORMANCE
    r = subprocess.run([sys.executable, str(GPU_CHECK), "--cases", str(CONFORMANCE),
                        "--elements", "1000000"], capture_output=True, text=True,
                       env={**os.environ, "XLA_FLAGS": ""})
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "JAX: all checks passed" in r.stdout
