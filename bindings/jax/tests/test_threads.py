"""A large step is cut into parts that XLA's thread pool shares (bindings/jax/src/parallel.rs):
the bits are those of the same step on one thread (VSGD_JAX_THREADS=1, in a subprocess), for
one large array and for many arrays whose parts straddle array boundaries, under vmap too;
in float32 and in bfloat16 (mixed precision: float32 state)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    import vsgd_jax
    rng = np.random.default_rng(0)
    layout = sys.argv[1]
    dtype = {"f32": np.float32, "bf16": jnp.bfloat16}[sys.argv[2]]
    if layout == "one":
        shapes = {"big": (3_000_001,)}
    else:
        shapes = {f"a{i:02d}": (100_003 + 17 * i,) for i in range(40)}
    params = {k: jnp.asarray(rng.normal(size=s).astype(dtype)) for k, s in shapes.items()}
    tx = vsgd_jax.vsgd(0.01)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: tx.step(g, s, p))
    for _ in range(3):
        g = {k: jnp.asarray(rng.normal(size=s).astype(dtype)) for k, s in shapes.items()}
        params, state = step(params, state, g)
    # a vmapped step of two rows, each row one large problem
    two = jax.tree_util.tree_map(lambda x: jnp.stack([x, -x]), params)
    two_state = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), state)
    g2 = jax.tree_util.tree_map(lambda x: jnp.stack([x, 2 * x]), g)
    two, two_state = jax.jit(jax.vmap(tx.step))(g2, two_state, two)
    leaves = jax.tree_util.tree_leaves((params, state, two, two_state))
    sys.stdout.buffer.write(b"".join(np.asarray(x).tobytes() for x in leaves))
""")


def run(layout, dtype, threads):
    env = {**os.environ, "VSGD_JAX_THREADS": str(threads), "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-c", SCRIPT, layout, dtype], capture_output=True,
                          check=True, env=env).stdout


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("layout", ["one", "many"])
def test_threaded_parts_give_the_single_thread_bits(layout, dtype):
    one = run(layout, dtype, 1)
    assert len(one) > 10_000_000
    assert run(layout, dtype, 4) == one
