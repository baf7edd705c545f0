"""Checkpoints: a JAX state saved in the library's format opens in `vsgd inspect`, loads back
bit for bit, and resumes natively (the core's Optimizer, examples/resume.rs) to the same bits
as continuing in JAX. Corrupt input is a ValueError."""

import ctypes
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vsgd_jax
from vsgd_jax import _native


def bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


def trained(tx, dtype=np.float32, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    params = {"layer": {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))},
              "gain": rng.normal(size=())}
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x, dtype)), params)
    state = tx.init(params)
    for _ in range(steps):
        g = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape).astype(dtype)),
                                   params)
        params, state = jax.jit(tx.step)(g, state, params)
    return params, state, rng


ALL = [vsgd_jax.vsgd(0.03, ghattg=20.0), vsgd_jax.constant_vsgd(0.02),
       vsgd_jax.adam(0.01, l2=0.01), vsgd_jax.adamw(0.01), vsgd_jax.sgdm(0.01, dampening=0.1)]


@pytest.mark.parametrize("tx", ALL, ids=lambda t: t.spec.algorithm)
def test_round_trip(tx):
    params, state, _ = trained(tx)
    data = vsgd_jax.save(state, tx)
    assert data[:1] != b"" and isinstance(data, bytes)
    back = vsgd_jax.load(data, like=params)
    assert type(back) is type(state)
    assert bits(back) == bits(state)
    flat = vsgd_jax.load(data)
    assert sorted(getattr(flat, type(flat)._fields[1])) == ["['gain']", "['layer']['b']",
                                                            "['layer']['w']"]
    tx2 = vsgd_jax.load_transformation(data)
    assert tx2.spec == tx.spec


def test_inspect_opens_it(tmp_path, vsgd_bin):
    tx = vsgd_jax.adamw(0.01, weight_decay=0.05)
    params, state, _ = trained(tx)
    path = tmp_path / "state.vsgdckpt"
    path.write_bytes(vsgd_jax.save(state, tx))
    out = subprocess.run([str(vsgd_bin), "inspect", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert "adamw" in out
    for name in ("['layer']['w']", "['layer']['b']", "['gain']"):
        assert name in out
    assert "0.05" in out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tx", ALL, ids=lambda t: t.spec.algorithm)
def test_native_resume_continues_with_the_same_bits(tx, dtype, tmp_path, resume_bin):
    with jax.enable_x64(dtype == np.float64):
        params, state, rng = trained(tx, dtype)
        ckpt = tmp_path / "in.ckpt"
        ckpt.write_bytes(vsgd_jax.save(state, tx))
        leaves = jax.tree_util.tree_leaves(params)
        (tmp_path / "params.bin").write_bytes(b"".join(np.asarray(x).tobytes() for x in leaves))
        grads = []
        for _ in range(3):
            g = jax.tree_util.tree_map(
                lambda x: jnp.asarray(rng.normal(size=x.shape).astype(dtype)), params)
            grads.append(g)
        (tmp_path / "grads.bin").write_bytes(b"".join(
            np.asarray(x).tobytes() for g in grads for x in jax.tree_util.tree_leaves(g)))
        subprocess.run([str(resume_bin), str(ckpt), str(tmp_path / "params.bin"),
                        str(tmp_path / "grads.bin"), "3", str(tmp_path / "out.bin"),
                        str(tmp_path / "out.ckpt")], check=True)
        # continue in JAX
        for g in grads:
            params, state = jax.jit(tx.step)(g, state, params)
        native_params = np.frombuffer((tmp_path / "out.bin").read_bytes(), dtype)
        ours = np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(params)])
        assert native_params.tobytes() == ours.tobytes()
        native_state = vsgd_jax.load((tmp_path / "out.ckpt").read_bytes(), like=params)
        assert bits(native_state) == bits(state)


def test_corrupt_and_truncated_checkpoints_are_refused():
    tx = vsgd_jax.vsgd(0.05)
    _, state, _ = trained(tx)
    data = bytearray(vsgd_jax.save(state, tx))
    for bad in (bytes(data[: len(data) // 2]), b"", b"not a checkpoint"):
        with pytest.raises(ValueError):
            vsgd_jax.load(bad)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x40
    with pytest.raises(ValueError):
        vsgd_jax.load(bytes(flipped))
    with pytest.raises(TypeError):
        vsgd_jax.load("a string")


def native_checkpoint_with_steps(steps):
    """A checkpoint whose tensors have their own step counts, as the native Optimizer (which
    skips tensor by tensor) can write; built with the library's save function."""
    c = ctypes
    n = len(steps)
    zeros = [np.zeros(2, np.float32) for _ in range(n)]  # sgdm: one state array
    out, out_len = c.POINTER(c.c_uint8)(), c.c_size_t()
    _native.call("save", b"sgdm", (c.c_char_p * 1)(), (c.c_double * 1)(), 0, n,
                 (c.c_char_p * n)(*[f"t{i}".encode() for i in range(n)]),
                 (c.c_size_t * n)(*[1] * n), (c.c_uint64 * n)(*[2] * n),
                 (c.c_uint32 * n)(*[0] * n), (c.c_uint64 * n)(*steps),
                 (c.c_void_p * n)(*[z.ctypes.data for z in zeros]),
                 c.byref(out), c.byref(out_len))
    data = c.string_at(out, out_len.value)
    _native.library().vsgd_jax_bytes_free(out, out_len.value)
    return data


def test_wrong_like_and_mixed_step_counts_are_refused():
    tx = vsgd_jax.vsgd(0.05)
    params, state, _ = trained(tx)
    data = vsgd_jax.save(state, tx)
    with pytest.raises(ValueError, match="leaves"):
        vsgd_jax.load(data, like={"other": jnp.ones(3)})
    with pytest.raises(TypeError, match="not the state"):
        vsgd_jax.save(state, vsgd_jax.adam())
    assert int(vsgd_jax.load(native_checkpoint_with_steps([3, 3])).count) == 3
    with pytest.raises(ValueError, match="different step counts"):
        vsgd_jax.load(native_checkpoint_with_steps([3, 2]))


def test_effective_momentum_survives_the_round_trip():
    tx = vsgd_jax.vsgd(0.05)
    params, state, _ = trained(tx)
    back = vsgd_jax.load(vsgd_jax.save(state, tx), like=params)
    assert bits(vsgd_jax.effective_momentum(back)) == bits(vsgd_jax.effective_momentum(state))
