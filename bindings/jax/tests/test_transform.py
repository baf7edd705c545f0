"""The optax transformations: defaults, agreement with optax, pytrees, dtypes, jit, grad,
vmap, lax.scan, schedules, the non-finite skip, effective momentum and bad inputs."""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vsgd_jax
from vsgd_jax import _native

FACTORIES = {"vsgd": vsgd_jax.vsgd, "constant_vsgd": vsgd_jax.constant_vsgd,
             "adam": vsgd_jax.adam, "adamw": vsgd_jax.adamw, "sgdm": vsgd_jax.sgdm}


def bits(tree):
    """Every leaf as raw bytes, to compare bit for bit (NaN payloads included)."""
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


def problem(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = {"dense": {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=(3,))},
              "scale": rng.normal(size=()), "conv": [rng.normal(size=(2, 2, 4))]}
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x, dtype)), params)
    grads = [jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape).astype(dtype)),
                                    params) for _ in range(6)]
    return params, grads


@pytest.mark.parametrize("algorithm", list(FACTORIES))
def test_python_defaults_are_the_cores(algorithm):
    sig = inspect.signature(FACTORIES[algorithm])
    for name, p in sig.parameters.items():
        key = "lr" if name == "learning_rate" else name
        assert float(p.default) == _native.default(algorithm, key), name


@pytest.mark.parametrize("algorithm", list(FACTORIES))
def test_step_is_bit_identical_under_jit_and_update_is_close(algorithm):
    params, grads = problem()
    tx = FACTORIES[algorithm](0.01)
    state = tx.init(params)
    assert type(state).__name__ in ("VsgdState", "ConstantVsgdState", "AdamState", "SgdmState")
    assert int(state.count) == 0
    p_step, s_step = params, state
    p_upd, s_upd = params, state
    for g in grads:
        eager = tx.step(g, s_step, p_step)
        p_step, s_step = jax.jit(tx.step)(g, s_step, p_step)
        assert bits(eager) == bits((p_step, s_step))
        updates, s_upd = jax.jit(tx.update)(g, s_upd, p_upd)
        p_upd = optax.apply_updates(p_upd, updates)
    assert int(s_step.count) == len(grads)
    for a, b in zip(jax.tree_util.tree_leaves(p_step), jax.tree_util.tree_leaves(p_upd)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    changed = [not np.array_equal(a, b) for a, b in
               zip(jax.tree_util.tree_leaves(p_step), jax.tree_util.tree_leaves(params))]
    assert all(changed)


# optax's own optimizers as references. Adam: optax.adam puts eps like torch (outside the
# square root of the bias-corrected v) — the same quantity computed in a different order, so
# the results agree to rounding: within 1e-5 relative in f32 and 1e-12 in f64 after 6 steps.
REFERENCES = [
    ("adam", dict(learning_rate=0.01), lambda: optax.adam(0.01)),
    ("adam", dict(learning_rate=0.01, beta1=0.8, beta2=0.99, eps=1e-6),
     lambda: optax.adam(0.01, b1=0.8, b2=0.99, eps=1e-6)),
    ("adamw", dict(learning_rate=0.01, weight_decay=0.1),
     lambda: optax.adamw(0.01, weight_decay=0.1)),
    ("sgdm", dict(learning_rate=0.01), lambda: optax.sgd(0.01, momentum=0.9)),
    ("sgdm", dict(learning_rate=0.01, nesterov=True),
     lambda: optax.sgd(0.01, momentum=0.9, nesterov=True)),
    ("sgdm", dict(learning_rate=0.01, l2=0.05),
     lambda: optax.chain(optax.add_decayed_weights(0.05), optax.sgd(0.01, momentum=0.9))),
]


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("algorithm, ours, theirs", REFERENCES)
def test_baselines_agree_with_optax(algorithm, ours, theirs, dtype, rtol):
    with jax.enable_x64(dtype == np.float64):
        params, grads = problem(1, dtype)
        tx, ref = FACTORIES[algorithm](**ours), theirs()
        s, rs = tx.init(params), ref.init(params)
        p, rp = params, params
        for g in grads:
            p, s = jax.jit(tx.step)(g, s, p)
            u, rs = ref.update(g, rs, rp)
            rp = optax.apply_updates(rp, u)
        for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(rp)):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def test_f64_needs_no_rounding_and_mixed_pytrees_work():
    with jax.enable_x64(True):
        params, grads = problem(2, np.float64)
        tx = vsgd_jax.vsgd(0.05)
        p, s = jax.jit(tx.step)(grads[0], tx.init(params), params)
        assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves((p, s.mug)))


def test_mixed_element_types_step_like_each_alone():
    with jax.enable_x64(True):
        p32, g32 = problem(12, np.float32)
        p64, g64 = problem(13, np.float64)
        tx = vsgd_jax.adam(0.01)
        both = {"single": p32, "double": p64}
        s = tx.init(both)
        a, sa = tx.init(p32), p32
        b, sb = tx.init(p64), p64
        for k in range(3):
            both, s = jax.jit(tx.step)({"single": g32[k], "double": g64[k]}, s, both)
            sa, a = jax.jit(tx.step)(g32[k], a, sa)
            sb, b = jax.jit(tx.step)(g64[k], b, sb)
        assert bits(both["single"]) == bits(sa) and bits(both["double"]) == bits(sb)
        assert bits(s.m["double"]) == bits(b.m)


def test_many_arrays_go_in_calls_of_bounded_size():
    from vsgd_jax import _transform
    params = {f"p{i:02d}": jnp.full((i % 5 + 1,), float(i)) for i in range(70)}
    grads = jax.tree_util.tree_map(lambda x: x * 0.5, params)
    tx = vsgd_jax.sgdm(0.1)
    step = jax.jit(tx.step)
    text = step.lower(grads, tx.init(params), params).compile().as_text()
    calls = text.count('custom_call_target="vsgd_jax_step"')
    assert calls == -(-70 // _transform.ARRAYS_PER_CALL)
    p, _ = step(grads, tx.init(params), params)
    for k in params:  # SGDM's first step: p - lr * g
        np.testing.assert_array_equal(p[k], params[k] - np.float32(0.1) * grads[k])


def test_chain_and_flax_style_composition():
    params, grads = problem(3)
    tx = optax.chain(optax.clip_by_global_norm(1.0), vsgd_jax.vsgd(0.05))
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(grads[0], state, params)
    params2 = optax.apply_updates(params, updates)
    assert int(state[1].count) == 1
    assert not np.array_equal(params2["dense"]["w"], params["dense"]["w"])


def test_donated_step_updates_in_place():
    params = {"w": jnp.arange(1024, dtype=jnp.float32) / 1024}
    tx = vsgd_jax.vsgd(0.05)
    state = tx.init(params)
    grads = {"w": jnp.ones(1024, jnp.float32)}
    # A training step takes and returns (params, state) in one order, so XLA pairs each
    # donated buffer with the output of the same role (jitting tx.step itself with
    # donate_argnums=(1, 2) pairs params with state.mug by position and copies).
    step = jax.jit(lambda p, s, g: tx.step(g, s, p), donate_argnums=(0, 1))
    before = [x.unsafe_buffer_pointer() for x in jax.tree_util.tree_leaves((params, state))]
    p, s = step(params, state, grads)
    assert [x.unsafe_buffer_pointer() for x in jax.tree_util.tree_leaves((p, s))] == before
    text = step.lower(p, s, grads).compile().as_text()
    assert not re.search(r"f32\[1024\]\{0\} copy\(", text)  # no array is copied


def test_training_step_with_grad_of_a_loss_under_jit():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(64, 3)).astype(np.float32))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.3
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    # VSGD's steps are close to η·sign(μ') once confident: halve η every 50 steps.
    tx = vsgd_jax.vsgd(optax.exponential_decay(0.05, 50, 0.5, staircase=True))

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    @jax.jit
    def train(params, state):
        value, g = jax.value_and_grad(loss)(params)
        params, state = tx.step(g, state, params)
        return params, state, value

    state = tx.init(params)
    first = None
    for _ in range(300):
        params, state, value = train(params, state)
        first = value if first is None else first
    assert float(value) < 0.01 * float(first)


def test_differentiating_through_the_step_is_a_clear_error():
    tx = vsgd_jax.vsgd(0.05)
    p = {"w": jnp.ones(3)}
    state = tx.init(p)

    def outer(p):
        new_p, _ = tx.step({"w": p["w"] * 2}, state, p)
        return jnp.sum(new_p["w"])

    with pytest.raises(TypeError, match="not differentiable"):
        jax.grad(outer)(p)


def test_scan_over_steps_equals_the_loop():
    params, grads = problem(5)
    tx = vsgd_jax.vsgd(0.05)
    state = tx.init(params)
    stacked = jax.tree_util.tree_map(lambda *g: jnp.stack(g), *grads)

    def body(carry, g):
        p, s = carry
        return tx.step(g, s, p), None

    (p_scan, s_scan), _ = jax.jit(lambda c, g: jax.lax.scan(body, c, g))((params, state), stacked)
    p, s = params, state
    for g in grads:
        p, s = jax.jit(tx.step)(g, s, p)
    assert bits((p_scan, s_scan)) == bits((p, s))


def test_vmap_steps_each_row_as_its_own_problem():
    rng = np.random.default_rng(6)
    B = 4
    params = {"w": jnp.asarray(rng.normal(size=(B, 7)).astype(np.float32)),
              "b": jnp.asarray(rng.normal(size=(B,)).astype(np.float32))}
    tx = vsgd_jax.vsgd(0.05)
    state = jax.vmap(tx.init)(params)
    for k in range(3):
        grads = {"w": jnp.asarray(rng.normal(size=(B, 7)).astype(np.float32)),
                 "b": jnp.asarray(rng.normal(size=(B,)).astype(np.float32))}
        if k == 1:  # a NaN in row 2 only: that row skips, the others step
            grads["w"] = grads["w"].at[2, 3].set(jnp.nan)
        new_p, new_s = jax.jit(jax.vmap(tx.step))(grads, state, params)
        for r in range(B):
            row = lambda t: jax.tree_util.tree_map(lambda x: x[r], t)  # noqa: E731
            want = jax.jit(tx.step)(row(grads), row(state), row(params))
            assert bits(row((new_p, new_s))) == bits(want)
        if k == 1:
            assert np.asarray(new_s.count).tolist() == [2, 2, 1, 2]
            assert np.array_equal(new_p["b"][2], params["b"][2])
        params, state = new_p, new_s


def test_vmap_of_update_with_unbatched_params():
    tx = vsgd_jax.adam(0.1)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    grads = jnp.stack([jnp.full(3, v) for v in (1.0, -1.0)])
    updates, _ = jax.vmap(lambda g: tx.update({"w": g}, state, params))(grads)
    np.testing.assert_allclose(updates["w"][0], -updates["w"][1], rtol=1e-6)


def test_schedule_gives_the_float_learning_rate_bits():
    params, grads = problem(7)
    schedule = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.7)
    tx = vsgd_jax.vsgd(schedule)
    p, s = params, tx.init(params)
    q, r = params, tx.init(params)
    for k, g in enumerate(grads):
        p, s = jax.jit(tx.step)(g, s, p)
        fixed = vsgd_jax.vsgd(float(np.float32(schedule(k))))
        q, r2 = jax.jit(fixed.step)(g, fixed.init(q)._replace(count=r.count, mug=r.mug,
                                                                bg=r.bg, bhg=r.bhg), q)
        r = r2
    assert bits((p, s)) == bits((q, r))


def test_nonfinite_gradient_skips_everything():
    params, grads = problem(8)
    tx = vsgd_jax.vsgd(0.05)
    p, s = jax.jit(tx.step)(grads[0], tx.init(params), params)
    bad = jax.tree_util.tree_map(lambda x: x, grads[1])
    bad["conv"][0] = bad["conv"][0].at[1, 0, 2].set(jnp.inf)
    p2, s2 = jax.jit(tx.step)(bad, s, p)
    assert bits((p2, s2)) == bits((p, s))
    u, s3 = jax.jit(tx.update)(bad, s, p)
    assert all(not np.any(x) for x in jax.tree_util.tree_leaves(u))
    assert int(s3.count) == 1


@pytest.mark.parametrize("bad", [np.nan, -np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 4095, 9999])
def test_the_verdict_sees_any_nonfinite_value(bad, where):
    tx = vsgd_jax.adam(0.1)
    params = {"big": jnp.ones(10000), "empty": jnp.ones((0, 3)), "s": jnp.ones(())}
    state = tx.init(params)
    g = {"big": jnp.ones(10000).at[where].set(bad), "empty": jnp.ones((0, 3)),
         "s": jnp.array(-3e38)}
    p, s = jax.jit(tx.step)(g, state, params)
    assert bits((p, s)) == bits((params, state))
    g["big"] = g["big"].at[where].set(3.4e38)  # huge but finite: steps
    p, s = jax.jit(tx.step)(g, state, params)
    assert int(s.count) == 1 and not np.array_equal(p["big"], params["big"])


def test_effective_momentum():
    params, grads = problem(9)
    tx = vsgd_jax.vsgd(0.05)
    p, s = params, tx.init(params)
    for g in grads:
        p, s = jax.jit(tx.step)(g, s, p)
    m = vsgd_jax.effective_momentum(s)
    for x, bg, bhg in zip(*(jax.tree_util.tree_leaves(t) for t in (m, s.bg, s.bhg))):
        assert np.array_equal(x, np.asarray(bhg) / (np.asarray(bg) + np.asarray(bhg)))
        assert np.all((x > 0) & (x < 1))
    with pytest.raises(TypeError, match="VsgdState"):
        vsgd_jax.effective_momentum(vsgd_jax.adam().init(params))


def test_constant_vsgd_mean_is_adams_first_moment():
    # The paper's claim, through the kernels: μ' = (K·μ + ĝ)/(K + 1) is Adam's m with
    # β1 = K/(K + 1) — equal up to rounding of the two forms.
    with jax.enable_x64(True):
        params, grads = problem(10, np.float64)
        K = 9.0
        cv, ad = vsgd_jax.constant_vsgd(0.01, ghattg=K), vsgd_jax.adam(0.01, beta1=K / (K + 1))
        s, t = cv.init(params), ad.init(params)
        for g in grads:
            _, s = cv.step(g, s, params)
            _, t = ad.step(g, t, params)
        for a, b in zip(jax.tree_util.tree_leaves(s.mug), jax.tree_util.tree_leaves(t.m)):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------- bad inputs


def test_invalid_hyperparameters_raise_at_construction():
    with pytest.raises(ValueError, match="ghattg"):
        vsgd_jax.vsgd(0.1, ghattg=-1.0)
    with pytest.raises(ValueError, match="lr"):
        vsgd_jax.vsgd(-0.1)
    with pytest.raises(ValueError, match="beta2"):
        vsgd_jax.adam(beta2=1.0)
    with pytest.raises(ValueError, match="nesterov"):
        vsgd_jax.sgdm(nesterov=True, dampening=0.5)
    with pytest.raises(TypeError, match="tau"):
        vsgd_jax.make("vsgd", 0.1, tau=0.5)
    with pytest.raises(TypeError, match="learning_rate"):
        vsgd_jax.vsgd("fast")


def test_a_state_of_another_algorithm_is_refused():
    params, grads = problem()
    with pytest.raises(TypeError, match="AdamState"):
        jax.jit(vsgd_jax.vsgd().step)(grads[0], vsgd_jax.adam().init(params), params)


def test_wrong_shapes_dtypes_and_structures_are_refused_at_trace_time():
    params, grads = problem()
    tx = vsgd_jax.vsgd()
    state = tx.init(params)
    g = jax.tree_util.tree_map(lambda x: x, grads[0])
    g["dense"]["w"] = jnp.zeros((3, 5), jnp.float32)
    with pytest.raises(ValueError, match=r"grads\['dense'\]\['w'\]"):
        jax.jit(tx.step)(g, state, params)
    bad_state = state._replace(bg=jax.tree_util.tree_map(lambda x: x.astype(jnp.float16),
                                                         state.bg))
    with pytest.raises(ValueError, match="state.bg"):
        jax.jit(tx.step)(grads[0], bad_state, params)
    with pytest.raises(ValueError, match="structure"):
        jax.jit(tx.step)({"w": jnp.ones(3)}, state, params)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(grads[0], state)
    with pytest.raises(TypeError, match="int32"):
        tx.init({"n": jnp.ones(3, jnp.int32)})
    with pytest.raises(TypeError, match="float8_e5m2"):  # bfloat16: see test_mixed.py
        tx.init({"h": jnp.ones(3, jnp.float8_e5m2)})


def test_a_non_contiguous_numpy_input_is_made_contiguous_by_jax():
    base = np.random.default_rng(11).normal(size=(4, 6)).astype(np.float32)
    view = base.T  # Fortran-ordered view
    assert not view.flags.c_contiguous
    tx = vsgd_jax.vsgd(0.05)
    a = jax.jit(tx.step)({"w": view}, tx.init({"w": view}), {"w": view})
    b = jax.jit(tx.step)({"w": np.ascontiguousarray(view)}, tx.init({"w": view}),
                         {"w": np.ascontiguousarray(view)})
    assert bits(a) == bits(b)


def test_a_bad_learning_rate_at_run_time_is_an_exception_not_a_crash():
    tx = vsgd_jax.vsgd(lambda count: -1.0 + 0.0 * count)
    p = {"w": jnp.ones(3)}
    with pytest.raises(Exception, match="lr = -1"):
        jax.block_until_ready(jax.jit(tx.step)({"w": jnp.ones(3)}, tx.init(p), p))
    # the backend still works
    assert float(jnp.sum(jnp.ones(3))) == 3.0
