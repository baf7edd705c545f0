"""Benchmark: one jitted optimizer step over 16M float32 parameters on the CPU, held as one
array and as 1,000 arrays, parameters and state donated (updated in place):

- ``vsgd_jax.vsgd``: the native kernel as an XLA FFI custom call (with the non-finite
  verdict, an extra read of the gradient, computed by XLA);
- VSGD written in ``jax.numpy`` under ``jit`` (the same rules, :func:`vsgd_jnp` below, no
  verdict): what XLA's own fusion makes of the formulas;
- ``optax.adam`` (update + ``optax.apply_updates``), and ``vsgd_jax.adam`` beside it;
- the floor: a jitted function taking and returning the same arrays, updating nothing.

    python bindings/jax/bench.py                 # the table for docs/performance.md
    python bindings/jax/bench.py --elements 1000000 --repeats 5

The contenders are stepped in turn, ``--repeats`` rounds after two warm-up rounds, all in
the same run; the table gives each one's fastest step (and the median), and the ratio of
the fastest to ``vsgd_jax.vsgd``'s on the same layout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import vsgd_jax


def vsgd_jnp(lr, ghattg=30.0, ps=1e-8, tau1=0.81, tau2=0.9, eps=1e-8):
    """VSGD in jax.numpy (docs/algorithms.md), the baseline XLA compiles and fuses itself:
    ``step(params, (count, mug, bg, bhg), grads) -> (params, state)``."""
    pa2 = 2 * ps + 1 + 1e-4
    pbg2, pbhg2 = 2 * ps, 2 * ghattg * ps

    def one(p, g, mug, bg, bhg, t):
        first = t == 1
        sg = jnp.where(first, pbg2 / (pa2 - 1), bg * (1 / pa2))
        shg = jnp.where(first, pbhg2 / (pa2 - 1), bhg * (1 / pa2))
        inv = 1 / (sg + shg)
        wg, wm = sg * inv, shg * inv
        mu = wg * g + wm * mug
        sig2 = sg * wm
        rho1 = t.astype(jnp.float32) ** -tau1
        rho2 = t.astype(jnp.float32) ** -tau2
        bg = (1 - rho1) * bg + rho1 * (pbg2 + sig2 + (mu - mug) ** 2)
        bhg = (1 - rho2) * bhg + rho2 * (pbhg2 + sig2 + (mu - g) ** 2)
        p = p - lr * mu / (jnp.sqrt(sig2 + mu * mu) + eps)
        return p, mu, bg, bhg

    def init(params):
        z = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
        return (jnp.zeros([], jnp.int32), z(), z(), z())

    def step(params, state, grads):
        count, mug, bg, bhg = state
        t = count + 1
        out = jax.tree_util.tree_map(lambda p, g, m, b, h: one(p, g, m, b, h, t),
                                     params, grads, mug, bg, bhg)
        pick = lambda i: jax.tree_util.tree_map(lambda o: o[i], out,  # noqa: E731
                                                is_leaf=lambda x: isinstance(x, tuple))
        return pick(0), (t, pick(1), pick(2), pick(3))

    return init, step


def tree(total, arrays, seed):
    rng = np.random.default_rng(seed)
    sizes = [total // arrays + (1 if i < total % arrays else 0) for i in range(arrays)]
    return {f"a{i:04d}": jnp.asarray(rng.standard_normal(n, dtype=np.float32))
            for i, n in enumerate(sizes)}


def timed(runs, repeats):
    """Steps every contender in turn, ``repeats`` rounds after two warm-up rounds (so that a
    busy machine slows them alike); returns each one's fastest and median step in seconds."""
    state = [(p, s) for _, p, s, _ in runs]
    times = [[] for _ in runs]
    for r in range(repeats + 2):
        for i, (step, _, _, grads) in enumerate(runs):
            p, s = state[i]
            t0 = time.perf_counter()
            p, s = step(p, s, grads)
            jax.block_until_ready((p, s))
            if r >= 2:
                times[i].append(time.perf_counter() - t0)
            state[i] = (p, s)
    return [(min(t), statistics.median(t)) for t in times]


def contenders():
    """(name, init, step(params, state, grads) -> (params, state)) of each optimizer."""
    out = []
    for name, tx in [("vsgd_jax.vsgd", vsgd_jax.vsgd(1e-3)), ("vsgd_jax.adam", vsgd_jax.adam())]:
        out.append((name, tx.init, lambda p, s, g, tx=tx: tx.step(g, s, p)))
    init, step = vsgd_jnp(1e-3)
    out.append(("VSGD in jax.numpy", init, step))
    adam = optax.adam(1e-3)

    def optax_step(p, s, g):
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    out.append(("optax.adam", adam.init, optax_step))
    # The floor: a jitted step that changes nothing but still takes and returns every array
    # (as VSGD: parameters and three state arrays), what JAX's dispatch costs per step.
    out.append(("dispatch only (no update)", lambda p: (jnp.zeros([], jnp.int32),) + tuple(
        jax.tree_util.tree_map(jnp.zeros_like, p) for _ in range(3)),
        lambda p, s, g: (p, s)))
    return out


def check_baseline():
    """The jax.numpy baseline computes what vsgd_jax.vsgd computes (to rounding): a few steps
    on a small problem, before anything is timed."""
    params, grads = tree(10_000, 3, 0), [tree(10_000, 3, s) for s in (1, 2, 3)]
    tx = vsgd_jax.vsgd(1e-2)
    init, step = vsgd_jnp(1e-2)
    p, s, q, r = params, tx.init(params), params, init(params)
    for g in grads:
        p, s = tx.step(g, s, p)
        q, r = jax.jit(step)(q, r, g)
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", type=int, default=16 * 1024 * 1024)
    ap.add_argument("--arrays", type=int, nargs="+", default=[1, 1000])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args()
    if a.elements < 1 or a.repeats < 1 or any(n < 1 or n > a.elements for n in a.arrays):
        ap.error("--elements, --repeats and --arrays must be positive, arrays <= elements")
    check_baseline()
    results = []
    for arrays in a.arrays:
        grads = tree(a.elements, arrays, 1)
        runs, names = [], []
        for name, init, step in contenders():
            params = tree(a.elements, arrays, 0)
            runs.append((jax.jit(step, donate_argnums=(0, 1)), params, init(params), grads))
            names.append(name)
        for name, (fastest, median) in zip(names, timed(runs, a.repeats)):
            results.append({"arrays": arrays, "optimizer": name, "ms": fastest * 1e3,
                            "median_ms": median * 1e3})
        del runs
    for r in results:
        base = next(x["ms"] for x in results
                    if x["arrays"] == r["arrays"] and x["optimizer"] == "vsgd_jax.vsgd")
        r["vs_vsgd_jax"] = r["ms"] / base
    if a.json:
        print(json.dumps({"elements": a.elements, "results": results}, indent=1))
        return
    print(f"{a.elements:,} float32 parameters, jax {jax.__version__}, "
          f"{os.cpu_count()} CPUs ({platform.machine()}), fastest (median) of {a.repeats} "
          "steps\n")
    print("| layout | optimizer | ms per step | time / vsgd_jax.vsgd |")
    print("|---|---|---:|---:|")
    for r in results:
        layout = "1 array" if r["arrays"] == 1 else f"{r['arrays']:,} arrays"
        print(f"| {layout} | {r['optimizer']} | {r['ms']:.1f} ({r['median_ms']:.1f}) | "
              f"{r['vs_vsgd_jax']:.2f}× |")


if __name__ == "__main__":
    main()
