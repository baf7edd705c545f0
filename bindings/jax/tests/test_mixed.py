"""Mixed precision: bfloat16 and float16 parameters and gradients with float32 state, stepped
natively by ``vsgd::kernels::mixed::step``: the update is the float32 rule over the widened
values and the new parameter is rounded once, to nearest even. So the reference here is the
float32 step of the widened values, rounded to the 16-bit type by numpy (ml_dtypes' and
IEEE's round-to-nearest-even); the state must equal the float32 step's exactly. Also: jit,
donation, trees mixing element types, vmap, sharding, the non-finite skip, the errors, the CUDA
lowering, and checkpoints (round trip, ``vsgd inspect``, a native resume)."""

import pathlib
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import vsgd_jax
from vsgd_jax import _native, _ops

HALF = [jnp.bfloat16, jnp.float16]
HALF_IDS = ["bf16", "f16"]

ALGORITHMS = [vsgd_jax.vsgd(0.05, weight_decay=0.01),
              vsgd_jax.constant_vsgd(0.03, l2=0.01),
              vsgd_jax.adam(optax.linear_schedule(0.02, 0.005, 4)),
              vsgd_jax.adamw(0.01),
              vsgd_jax.sgdm(0.02, nesterov=True, weight_decay=0.01)]


def bits(tree):
    """Every leaf as raw bytes, with its element type (NaN payloads included)."""
    return [(np.asarray(x).dtype.name, np.asarray(x).tobytes())
            for x in jax.tree_util.tree_leaves(tree)]


def widened(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x).astype(jnp.float32), tree)


def rounded(tree, dtype):
    """float32 leaves rounded to ``dtype`` by numpy (round-to-nearest-even), not by XLA."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32).astype(dtype), tree)


def problem(dtype, seed=0, steps=4):
    rng = np.random.default_rng(seed)
    # "big" crosses the kernel's vector loops, chunks and tail, and XLA's thread split.
    shapes = {"big": (70001,), "w": (5, 3), "s": (), "conv": (2, 2, 4)}
    params = {k: jnp.asarray(rng.normal(size=s).astype(dtype)) for k, s in shapes.items()}
    grads = [{k: jnp.asarray((rng.normal(size=s) * 0.3).astype(dtype))
              for k, s in shapes.items()} for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("tx", ALGORITHMS, ids=lambda t: t.spec.algorithm)
def test_the_step_is_the_f32_step_rounded_once(dtype, tx):
    params, grads = problem(dtype)
    state = tx.init(params)
    for field in type(state)._fields[1:]:
        for x, p in zip(jax.tree_util.tree_leaves(getattr(state, field)),
                        jax.tree_util.tree_leaves(params)):
            assert x.dtype == jnp.float32 and x.shape == p.shape
    step = jax.jit(tx.step)
    for g in grads:
        want_p, want_s = step(widened(g), state, widened(params))
        params, state = step(g, state, params)
        assert all(x.dtype == dtype for x in jax.tree_util.tree_leaves(params))
        assert bits(params) == bits(rounded(want_p, dtype))
        assert bits(state) == bits(want_s)
    # optax's shape: new_params − params, in the parameters' type.
    updates, _ = jax.jit(tx.update)(grads[0], state, params)
    assert all(x.dtype == dtype for x in jax.tree_util.tree_leaves(updates))


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_a_jitted_training_step_with_donation(dtype):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(32, 8)).astype(dtype))
    y = jnp.asarray(rng.normal(size=(32,)).astype(dtype))
    params = {"w": jnp.zeros((8,), dtype), "b": jnp.zeros((), dtype)}
    tx = vsgd_jax.vsgd(0.05)

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"] - y).astype(jnp.float32) ** 2)

    def train_step(p, s):
        g = jax.grad(loss)(p)
        return tx.step(g, s, p)

    step = jax.jit(train_step, donate_argnums=(0, 1))
    p, s = params, tx.init(params)
    first = float(loss(p))
    before = [a.unsafe_buffer_pointer() for a in jax.tree_util.tree_leaves((p, s))]
    p, s = step(p, s)
    assert [a.unsafe_buffer_pointer() for a in jax.tree_util.tree_leaves((p, s))] == before
    for _ in range(30):
        p, s = step(p, s)
    assert p["w"].dtype == dtype and s.mug["w"].dtype == jnp.float32
    assert int(s.count) == 31 and float(loss(p)) < first


def test_a_tree_mixing_f32_and_bf16_leaves_steps_like_each_alone():
    p16, g16 = problem(jnp.bfloat16, seed=2, steps=3)
    p32, g32 = problem(np.float32, seed=3, steps=3)
    tx = vsgd_jax.adam(0.01)
    both = {"half": p16, "single": p32}
    s = tx.init(both)
    a, pa = tx.init(p16), p16
    b, pb = tx.init(p32), p32
    step = jax.jit(tx.step)
    text = step.lower({"half": g16[0], "single": g32[0]}, s, both).compile().as_text()
    assert text.count('custom_call_target="vsgd_jax_step"') == 2  # one per element type
    for k in range(3):
        both, s = step({"half": g16[k], "single": g32[k]}, s, both)
        pa, a = step(g16[k], a, pa)
        pb, b = step(g32[k], b, pb)
    assert bits(both["half"]) == bits(pa) and bits(both["single"]) == bits(pb)
    assert bits(s.m["half"]) == bits(a.m) and bits(s.v["single"]) == bits(b.v)


def test_many_mixed_arrays_go_in_calls_per_element_type():
    from vsgd_jax import _transform
    params = {f"h{i:02d}": jnp.full((i % 5 + 1,), float(i), jnp.bfloat16) for i in range(40)}
    params.update({f"s{i:02d}": jnp.full((3,), float(i), jnp.float32) for i in range(5)})
    grads = jax.tree_util.tree_map(lambda x: x * 2, params)
    tx = vsgd_jax.sgdm(0.25)
    step = jax.jit(tx.step)
    text = step.lower(grads, tx.init(params), params).compile().as_text()
    per = _transform.ARRAYS_PER_CALL
    assert text.count('custom_call_target="vsgd_jax_step"') == -(-40 // per) + 1
    p, s = step(grads, tx.init(params), params)
    for k in params:  # SGDM's first step: p − lr·g, computed in f32, rounded once
        want = np.asarray(params[k], np.float32) - np.float32(0.25) * np.asarray(grads[k],
                                                                                 np.float32)
        assert bits(p[k]) == bits(want.astype(params[k].dtype))
        assert s.momentum[k].dtype == jnp.float32


def test_f64_and_bf16_leaves_in_one_tree_under_x64():
    with jax.enable_x64(True):
        p16, g16 = problem(jnp.bfloat16, seed=4, steps=2)
        p64, g64 = problem(np.float64, seed=5, steps=2)
        tx = vsgd_jax.vsgd(0.05)
        both = {"h": p16, "d": p64}
        s = tx.init(both)
        assert s.mug["h"]["w"].dtype == jnp.float32 and s.mug["d"]["w"].dtype == jnp.float64
        a, pa = tx.init(p16), p16
        for k in range(2):
            both, s = jax.jit(tx.step)({"h": g16[k], "d": g64[k]}, s, both)
            pa, a = jax.jit(tx.step)(g16[k], a, pa)
        assert bits(both["h"]) == bits(pa) and bits(s.bhg["h"]) == bits(a.bhg)


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_vmap_steps_each_row_as_its_own_problem(dtype):
    rng = np.random.default_rng(6)
    B = 3
    params = {"w": jnp.asarray(rng.normal(size=(B, 7)).astype(dtype)),
              "b": jnp.asarray(rng.normal(size=(B,)).astype(dtype))}
    tx = vsgd_jax.vsgd(0.05)
    state = jax.vmap(tx.init)(params)
    for k in range(3):
        grads = {"w": jnp.asarray(rng.normal(size=(B, 7)).astype(dtype)),
                 "b": jnp.asarray(rng.normal(size=(B,)).astype(dtype))}
        if k == 1:  # a NaN in row 2 only: that row skips, the others step
            grads["w"] = grads["w"].at[2, 3].set(jnp.nan)
        new_p, new_s = jax.jit(jax.vmap(tx.step))(grads, state, params)
        for r in range(B):
            row = lambda t: jax.tree_util.tree_map(lambda x: x[r], t)  # noqa: E731
            want = jax.jit(tx.step)(row(grads), row(state), row(params))
            assert bits(row((new_p, new_s))) == bits(want)
        if k == 1:
            assert np.asarray(new_s.count).tolist() == [2, 2, 1]
        params, state = new_p, new_s


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 host devices (conftest.py)")
def test_sharded_bf16_step_equals_unsharded_bit_for_bit():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    rng = np.random.default_rng(7)
    shapes = {"w1": (64, 32), "b1": (32,), "f": (16, 8)}
    specs = {"w1": P("data", "model"), "b1": P("model"), "f": P("data")}
    types = {"w1": jnp.bfloat16, "b1": jnp.bfloat16, "f": np.float32}
    params = {k: rng.normal(size=s).astype(types[k]) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s).astype(types[k]) for k, s in shapes.items()}
             for _ in range(3)]
    grads[1]["w1"][63, 31] = np.nan  # one device's shard: every shard skips this step
    tx = vsgd_jax.adamw(0.01)
    shard = {k: NamedSharding(mesh, specs[k]) for k in shapes}
    state_shard = vsgd_jax.AdamState(NamedSharding(mesh, P()), shard, shard)
    step = jax.jit(lambda p, s, g: tx.step(g, s, p), donate_argnums=(0, 1))
    p0, s0 = params, tx.init(params)
    p1 = jax.device_put(params, shard)
    s1 = jax.device_put(tx.init(params), state_shard)
    text = step.lower(p1, s1, jax.device_put(grads[0], shard)).compile().as_text()
    assert "all-gather" not in text and "all-to-all" not in text
    for g in grads:
        p0, s0 = jax.jit(tx.step)(g, s0, p0)
        p1, s1 = step(p1, s1, jax.device_put(g, shard))
    assert int(s1.count) == 2
    for k in shapes:
        assert p1[k].sharding.is_equivalent_to(shard[k], p1[k].ndim), k
    assert bits((p1, s1)) == bits((p0, s0))


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nonfinite_gradient_skips_as_in_f32(dtype, bad):
    params, grads = problem(dtype, seed=8, steps=2)
    extra = {"single": jnp.ones((4,), jnp.float32)}
    tx = vsgd_jax.vsgd(0.05)
    step = jax.jit(tx.step)
    tree = {**params, **extra}
    p, s = step({**grads[0], "single": jnp.ones((4,), jnp.float32)}, tx.init(tree), tree)
    for where in (0, 4095, 70000):
        g = dict(grads[1], single=jnp.full((4,), 0.5, jnp.float32))
        g["big"] = g["big"].at[where].set(bad)
        p2, s2 = step(g, s, p)  # skipped: everything unchanged, the f32 leaf too
        assert bits((p2, s2)) == bits((p, s)) and int(s2.count) == 1
        u, s3 = jax.jit(tx.update)(g, s, p)
        assert all(not np.any(x) for x in jax.tree_util.tree_leaves(u)) and int(s3.count) == 1
        # The f32 path skips the same gradient, widened, the same way.
        q, r = step(widened(g), s, widened(p))
        assert bits(r) == bits(s)
    # A non-finite f32 leaf skips the 16-bit leaves too.
    g = dict(grads[1], single=jnp.full((4,), bad, jnp.float32))
    assert bits(step(g, s, p)) == bits((p, s))
    # Huge but finite (the largest finite value of the type) steps.
    g = dict(grads[1], single=jnp.ones((4,), jnp.float32))
    g["big"] = g["big"].at[7].set(jnp.finfo(dtype).max)
    p2, s2 = step(g, s, p)
    assert int(s2.count) == 2 and not np.array_equal(p2["big"], p["big"])


def test_element_type_mismatches_are_clear_errors_at_trace_time():
    tx = vsgd_jax.vsgd(0.05)
    p32 = {"dense": {"w": jnp.ones((3, 2), jnp.float32)}, "h": jnp.ones(4, jnp.bfloat16)}
    state = tx.init(p32)
    good = {"dense": {"w": jnp.ones((3, 2), jnp.float32)}, "h": jnp.ones(4, jnp.bfloat16)}
    # A bf16 gradient of an f32 parameter, and the other way round: a TypeError naming the
    # leaf (also a ValueError, as dtype mismatches were before).
    g = {"dense": {"w": jnp.ones((3, 2), jnp.bfloat16)}, "h": good["h"]}
    with pytest.raises(TypeError, match=r"grads\['dense'\]\['w'\] is bfloat16.*float32"):
        jax.jit(tx.step)(g, state, p32)
    with pytest.raises(ValueError, match=r"grads\['dense'\]\['w'\]"):
        jax.jit(tx.step)(g, state, p32)
    g = {"dense": good["dense"], "h": jnp.ones(4, jnp.float32)}
    with pytest.raises(vsgd_jax.ElementTypeError, match=r"grads\['h'\] is float32"):
        jax.jit(tx.step)(g, state, p32)
    g = {"dense": good["dense"], "h": jnp.ones(4, jnp.float16)}
    with pytest.raises(TypeError, match=r"grads\['h'\] is float16.*bfloat16"):
        jax.jit(tx.step)(g, state, p32)
    # bf16 or f16 state (stochastically rounded state is not supported by the binding).
    for half in (jnp.bfloat16, jnp.float16):
        bad = state._replace(bg={**state.bg, "h": state.bg["h"].astype(half)})
        with pytest.raises(TypeError, match=r"state\.bg\['h'\] is " + np.dtype(half).name
                           + r"\[4\].*the state of bfloat16 parameters is float32 \(mixed "
                           r"precision: bfloat16 or float16 state is not supported\)"):
            jax.jit(tx.step)(good, bad, p32)
    # The 16-bit types the native step does not take.
    with pytest.raises(TypeError, match="float8_e4m3fn"):
        tx.init({"q": jnp.ones(3, jnp.float8_e4m3fn)})


def test_f64_with_bf16_is_a_clear_error():
    with jax.enable_x64(True):
        tx = vsgd_jax.adam(0.01)
        p = {"h": jnp.ones(4, jnp.bfloat16)}
        state = tx.init(p)
        assert state.m["h"].dtype == jnp.float32
        with pytest.raises(TypeError, match=r"grads\['h'\] is float64.*bfloat16"):
            jax.jit(tx.step)({"h": jnp.ones(4, jnp.float64)}, state, p)
        bad = state._replace(v={"h": state.v["h"].astype(jnp.float64)})
        with pytest.raises(TypeError, match=r"state\.v\['h'\] is float64.*float32"):
            jax.jit(tx.step)({"h": jnp.ones(4, jnp.bfloat16)}, bad, p)


def _raw_step(tx, params, grads, states):
    """The custom call itself, past the Python checks: what the native handler refuses."""
    f = jax.jit(lambda p, g, s: _ops.step(tx.spec, jnp.ones((), jnp.float32),
                                          jnp.zeros((), jnp.int32), jnp.array(True), p, g, s))
    return jax.block_until_ready(f(params, grads, states))


def test_the_native_handler_refuses_wrong_mixed_operands():
    tx = vsgd_jax.sgdm(0.1)
    h = jnp.ones(4, jnp.bfloat16)
    # bf16 state for bf16 parameters.
    with pytest.raises(Exception, match="state momentum is bf16; the state of bf16 "
                       "parameters must be f32"):
        _raw_step(tx, [h], [h], [[jnp.zeros(4, jnp.bfloat16)]])
    # An f32 parameter with a bf16 gradient.
    with pytest.raises(Exception, match="param differs from the gradient in element type"):
        _raw_step(tx, [jnp.ones(4, jnp.float32)], [h], [[jnp.zeros(4, jnp.float32)]])
    # Two element types in one call.
    with pytest.raises(Exception, match="one type per call; gradient 1 is f16, gradient 0 "
                       "bf16"):
        _raw_step(tx, [h, h.astype(jnp.float16)], [h, h.astype(jnp.float16)],
                  [[jnp.zeros(4, jnp.float32)] * 2])
    # The backend still works, and a right call steps.
    (p,), ((m,),) = _raw_step(tx, [h], [h], [[jnp.zeros(4, jnp.float32)]])
    assert p.dtype == jnp.bfloat16 and m.dtype == jnp.float32
    assert np.asarray(p, np.float32).tolist() == [0.8984375] * 4  # bf16(1 − 0.1·1)


def test_the_step_lowers_for_cuda_with_16_bit_operands():
    """On the GPU the handler refuses bf16 and f16 with an error naming them (no CUDA kernel:
    tests/cuda_handler.rs), so the lowering is the CPU's: one call with the 16-bit operands,
    f32 state, aliased."""
    tx = vsgd_jax.adam(0.01)
    params = {"h": jnp.ones((4, 3), jnp.bfloat16), "s": jnp.ones((2,), jnp.float32)}
    grads = jax.tree_util.tree_map(lambda x: x * 0.5, params)
    checks = [jax.export.DisabledSafetyCheck.custom_call(t)
              for t in (_native.TARGET, _native.FINITE_TARGET)]
    text = jax.export.export(jax.jit(tx.step), platforms=["cuda"], disabled_checks=checks)(
        grads, tx.init(params), params).mlir_module()
    calls = [line for line in text.splitlines() if "stablehlo.custom_call @vsgd_jax_step" in line]
    assert len(calls) == 2
    half = [c for c in calls if "bf16" in c]
    assert len(half) == 1
    assert re.search(r"-> \(tensor<4x3xbf16>, tensor<4x3xf32>, tensor<4x3xf32>\)", half[0])


# ------------------------------------------------------------------------------ checkpoints


def trained(tx, dtype, steps=3, seed=9):
    rng = np.random.default_rng(seed)
    shapes = {"layer": {"w": (4, 3), "b": (3,)}, "gain": ()}
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s).astype(dtype)),
                                    shapes, is_leaf=lambda x: isinstance(x, tuple))
    state = tx.init(params)
    for _ in range(steps):
        g = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape)
                                                         .astype(dtype)), params)
        params, state = jax.jit(tx.step)(g, state, params)
    return params, state, rng


CKPT = [vsgd_jax.vsgd(0.03, ghattg=20.0), vsgd_jax.constant_vsgd(0.02),
        vsgd_jax.adam(0.01, l2=0.01), vsgd_jax.adamw(0.01), vsgd_jax.sgdm(0.01, dampening=0.1)]


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_checkpoint_round_trip_and_inspect(dtype, tmp_path, vsgd_bin):
    tx = vsgd_jax.adamw(0.01, weight_decay=0.05)
    params, state, _ = trained(tx, dtype)
    data = vsgd_jax.save(state, tx, params=params)
    back = vsgd_jax.load(data, like=params)
    assert bits(back) == bits(state)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves((back.m, back.v)))
    # Without params the tensors are saved as f32 ones (the state's type); same state back.
    assert bits(vsgd_jax.load(vsgd_jax.save(state, tx), like=params)) == bits(state)
    path = tmp_path / "mixed.vsgdckpt"
    path.write_bytes(data)
    out = subprocess.run([str(vsgd_bin), "inspect", str(path)], capture_output=True,
                         text=True, check=True).stdout
    name = {jnp.bfloat16: "bf16", jnp.float16: "f16"}[dtype]
    # "param bf16," would contain "f16," without the word before it.
    assert f"param {name}," in out and "['layer']['w']" in out, out


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_a_checkpoint_loads_only_into_parameters_of_its_recorded_type(dtype):
    tx = vsgd_jax.adam(0.01)
    params, state, _ = trained(tx, dtype)
    data = vsgd_jax.save(state, tx, params=params)
    other = jnp.float16 if dtype == jnp.bfloat16 else jnp.bfloat16
    for wrong in (other, jnp.float32):
        like = jax.tree_util.tree_map(lambda x: x.astype(wrong), params)
        with pytest.raises(ValueError, match=r"saved with parameters of type "
                           rf"{np.dtype(dtype).name}; `like` has {np.dtype(wrong).name}"):
            vsgd_jax.load(data, like=like)
    # A state as `like` is checked against the state's type (float32 here): it loads.
    assert bits(vsgd_jax.load(data, like=state)) == bits(state)
    with pytest.raises(ValueError, match="saved with state of type float32; `like` has "
                       "bfloat16"):
        vsgd_jax.load(data, like=state._replace(
            m=jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), state.m)))


def test_checkpoint_params_that_do_not_fit_the_state_are_refused():
    tx = vsgd_jax.vsgd(0.05)
    params, state, _ = trained(tx, jnp.bfloat16)
    with pytest.raises(ValueError, match="leaves"):
        vsgd_jax.save(state, tx, params={"other": jnp.ones(3)})
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), params)
        with pytest.raises(TypeError, match=r"params\['gain'\] is float64 but its state is "
                           "float32"):
            vsgd_jax.save(state, tx, params=p64)


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("tx", CKPT, ids=lambda t: t.spec.algorithm)
def test_native_resume_of_mixed_tensors_continues_with_the_same_bits(tx, dtype, tmp_path,
                                                                     resume_bin):
    params, state, rng = trained(tx, dtype)
    ckpt = tmp_path / "in.ckpt"
    ckpt.write_bytes(vsgd_jax.save(state, tx, params=params))
    leaves = jax.tree_util.tree_leaves(params)
    (tmp_path / "params.bin").write_bytes(b"".join(np.asarray(x).tobytes() for x in leaves))
    grads = [jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.normal(size=x.shape).astype(dtype)), params)
        for _ in range(3)]
    (tmp_path / "grads.bin").write_bytes(b"".join(
        np.asarray(x).tobytes() for g in grads for x in jax.tree_util.tree_leaves(g)))
    subprocess.run([str(resume_bin), str(ckpt), str(tmp_path / "params.bin"),
                    str(tmp_path / "grads.bin"), "3", str(tmp_path / "out.bin"),
                    str(tmp_path / "out.ckpt")], check=True)
    for g in grads:  # continue in JAX
        params, state = jax.jit(tx.step)(g, state, params)
    native_params = np.frombuffer((tmp_path / "out.bin").read_bytes(), dtype)
    ours = np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(params)])
    assert native_params.tobytes() == ours.tobytes()
    native_state = vsgd_jax.load((tmp_path / "out.ckpt").read_bytes(), like=params)
    assert bits(native_state) == bits(state)


def test_a_checkpoint_with_bf16_state_is_refused_clearly():
    """tests/data/bf16-state-checkpoint.bin (not *.vsgdckpt, which .gitignore leaves out): a
    native Adam optimizer's checkpoint (format v2) with a bf16 tensor with f32 state and one
    with bf16 (stochastically rounded) state, which the JAX transformations do not keep."""
    data = (pathlib.Path(__file__).parent / "data" / "bf16-state-checkpoint.bin").read_bytes()
    with pytest.raises(ValueError, match=r"vsgd_jax.load: .*tensor 1: bf16 parameters with "
                       r"bf16 state are not supported by the JAX checkpoint bridge"):
        vsgd_jax.load(data)
