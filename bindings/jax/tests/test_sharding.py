"""Parameters sharded over a Mesh of 8 forced host devices (conftest sets
--xla_force_host_platform_device_count=8): a jitted step keeps every array sharded, the
compiled program gathers no parameter or state, and the results equal the unsharded step bit
for bit — also when one shard's gradient holds a NaN (every shard skips together)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import vsgd_jax

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 host devices "
                                "(XLA_FLAGS=--xla_force_host_platform_device_count=8 before "
                                "JAX starts; conftest.py sets it)")

ALGORITHMS = [vsgd_jax.vsgd(0.05), vsgd_jax.constant_vsgd(0.05), vsgd_jax.adamw(0.01),
              vsgd_jax.sgdm(0.01, nesterov=True)]


def bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


def setup(tx, seed=0):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    rng = np.random.default_rng(seed)
    shapes = {"w1": (64, 32), "b1": (32,), "w2": (32, 16), "emb": (8, 6, 4)}
    specs = {"w1": P("data", "model"), "b1": P("model"), "w2": P(None, "data"),
             "emb": P("data")}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
             for _ in range(3)]
    shard = {k: NamedSharding(mesh, specs[k]) for k in shapes}
    state_type = type(tx.init(params))
    state_shard = state_type(NamedSharding(mesh, P()),
                             *[shard for _ in state_type._fields[1:]])
    return mesh, params, grads, shard, state_shard


def step_fn(tx):
    return jax.jit(lambda p, s, g: tx.step(g, s, p), donate_argnums=(0, 1))


@pytest.mark.parametrize("tx", ALGORITHMS, ids=lambda t: t.spec.algorithm)
def test_sharded_step_equals_unsharded_bit_for_bit(tx):
    mesh, params, grads, shard, state_shard = setup(tx)
    p0, s0 = params, tx.init(params)
    p1 = jax.device_put(params, shard)
    s1 = jax.device_put(tx.init(params), state_shard)
    step = step_fn(tx)
    text = step.lower(p1, s1, jax.device_put(grads[0], shard)).compile().as_text()
    # No gathering or reshuffling of any array: the only collectives reduce the verdicts
    # (scalars) across the mesh.
    for op in ("all-gather", "all-to-all", "collective-permute", "reduce-scatter"):
        assert op not in text, op
    reduced = [re.findall(r"\w+\[[^\]]*\]", t) for t in re.findall(r"= (.*?) all-reduce\(", text)]
    assert reduced and all(re.fullmatch(r"(pred|s32)\[\]", t) for types in reduced
                           for t in types), reduced
    for g in grads:
        p0, s0 = jax.jit(tx.step)(g, s0, p0)
        p1, s1 = step(p1, s1, jax.device_put(g, shard))
    for k in params:
        assert p1[k].sharding.is_equivalent_to(shard[k], p1[k].ndim), k
        assert getattr(s1, type(s1)._fields[1])[k].sharding.is_equivalent_to(shard[k], p1[k].ndim)
    assert bits((p1, s1)) == bits((p0, s0))


def test_a_nan_in_one_shard_skips_every_shard():
    tx = vsgd_jax.vsgd(0.05)
    mesh, params, grads, shard, state_shard = setup(tx, seed=1)
    step = step_fn(tx)
    p = jax.device_put(params, shard)
    s = jax.device_put(tx.init(params), state_shard)
    p, s = step(p, s, jax.device_put(grads[0], shard))
    before = bits((p, s))
    bad = dict(grads[1])
    bad["w1"] = bad["w1"].copy()
    bad["w1"][63, 31] = np.nan  # the last device's shard of w1 only
    g = jax.device_put(bad, shard)
    owners = [d for d, idx in shard["w1"].devices_indices_map((64, 32)).items()
              if np.isnan(bad["w1"][idx]).any()]
    assert len(owners) == 1
    p2, s2 = step(jax.tree_util.tree_map(jnp.copy, p), jax.tree_util.tree_map(jnp.copy, s), g)
    assert bits((p2, s2)) == before
    assert int(s2.count) == 1
    # Unsharded, the same gradient is skipped the same way.
    q, r = jax.jit(tx.step)(grads[0], tx.init(params), params)
    q2, r2 = jax.jit(tx.step)(bad, r, q)
    assert bits((q2, r2)) == bits((q, r)) == before
