"""The JAX part of scripts/gpu-check.sh: vsgd_jax on a GPU (the custom call on platform "CUDA",
``vsgd_jax_xla_step_cuda`` over the core's fused kernels on XLA's stream) against the same
jitted steps on the CPU, bit for bit.

    python3 target/gpu-check/jax/gpu_check.py [--cases tests/data/conformance]

Checks, each a row of the table printed at the end:

- every conformance case through ``vsgd_jax.replay`` in f32 and f64: the JSON replayed on the
  GPU equals the CPU's byte for byte (the CPU's equals ``vsgd replay``: the pytest suite);
- every algorithm on a pytree of 40 arrays of mixed shapes (two custom calls per element type),
  f32 and f64, a schedule, 6 steps of which one has a NaN gradient (skipped everywhere, count
  unchanged), parameters and state compared after every step;
- ``vmap`` over 3 problems (rows with their own learning rate and count), one row non-finite;
- one figure: a jitted ``vsgd_jax.vsgd`` step over 2^24 float32 parameters, one array and
  1,000 arrays, donated, and ``optax.adam`` beside it (same run, same device).

Exit status: 0 every check passed or JAX has no GPU here (printed: skipped), 1 a mismatch or a
failure of the custom call. ``--device-platform cpu`` runs the same checks with a second CPU
device in the GPU's place (scripts/test.d/40-jax.sh does, so this script is exercised where
there is no GPU; the comparison is then trivially equal).

Carried to a GPU machine without network by ``scripts/gpu-check.sh --build``: this file and
the vsgd_jax package (Python sources and the prebuilt native library, feature ``cuda``) in
target/gpu-check/jax/; Python runs the script with that directory first on ``sys.path``. The
machine's own jax (>= 0.12, with its CUDA plugin) and optax are used.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time


def skipped(why: str) -> int:
    why = " ".join(why.split())  # one line, whatever the exception said
    print(f"JAX: {why}, skipped")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="tests/data/conformance",
                    help="directory of conformance cases (default: %(default)s)")
    ap.add_argument("--device-platform", default="cuda",
                    help="platform of the device under test (cpu: a second CPU device)")
    ap.add_argument("--elements", type=int, default=1 << 24,
                    help="parameters in the timed step (default: 2^24)")
    ap.add_argument("--max-cases", type=int, default=None,
                    help="replay only the first N conformance cases")
    args = ap.parse_args(argv)

    if args.device_platform == "cpu":
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_force_host_platform_device_count=2").strip()
    try:
        import jax
    except ImportError:
        return skipped("not installed on this machine")
    version = tuple(int(x) for x in jax.__version__.split(".")[:2] if x.isdigit())
    if version < (0, 12):
        return skipped(f"jax {jax.__version__} is older than vsgd_jax needs (0.12)")
    try:
        import optax  # noqa: F401
    except ImportError:
        return skipped(f"jax {jax.__version__} is here but optax is not")
    jax.config.update("jax_enable_x64", True)
    try:
        dev = jax.devices(args.device_platform)[-1]
    except RuntimeError as e:
        return skipped(f"jax {jax.__version__} has no {args.device_platform} backend ({e})")
    cpu = jax.devices("cpu")[0]
    if dev == cpu:
        return skipped("only one CPU device (XLA_FLAGS was set before this script)")

    import vsgd_jax
    from vsgd_jax import _native

    if args.device_platform == "cuda" and not _native.cuda_registered():
        print("JAX: FAIL: a CUDA backend exists but vsgd_jax registered no GPU handler "
              f"(library {_native._find()})")
        return 1
    print(f"JAX {jax.__version__} on {dev.device_kind} ({dev.platform}), vsgd_jax from "
          f"{pathlib.Path(vsgd_jax.__file__).parent}")

    rows: list[tuple[str, str, bool]] = []
    failed = False
    for name, fn in [("conformance replay", lambda: check_replay(jax, cpu, dev, args.cases,
                                                                  args.max_cases)),
                     ("pytrees, every algorithm", lambda: check_trees(jax, cpu, dev)),
                     ("vmap rows", lambda: check_vmap(jax, cpu, dev))]:
        try:
            detail, ok = fn()
        except Exception as e:  # a failing custom call is a failed check, with its message
            detail, ok = f"{type(e).__name__}: {e}"[:300], False
        rows.append((name, detail, ok))
        failed |= not ok
    try:
        for row in timing(jax, dev, args.elements):
            rows.append(row)
    except Exception as e:
        rows.append(("timing", f"{type(e).__name__}: {e}"[:300], False))
        failed = True

    print("\n| JAX check | result | |\n|---|---|---|")
    for name, detail, ok in rows:
        print(f"| {name} | {detail} | {'ok' if ok else 'MISMATCH'} |")
    print("JAX: " + ("FAILED" if failed else "all checks passed"))
    return 1 if failed else 0


def check_replay(jax, cpu, dev, cases_dir, max_cases=None):
    from vsgd_jax.replay import replay

    cases = sorted(pathlib.Path(cases_dir).glob("*.json"))[:max_cases]
    if not cases:
        return f"no cases in {cases_dir}", False
    bad = []
    for case in cases:
        text = case.read_text(encoding="utf-8")
        for dtype in ("f32", "f64"):
            with jax.default_device(cpu):
                want = replay(text, dtype)
            with jax.default_device(dev):
                got = replay(text, dtype)
            if got != want:
                bad.append(f"{case.stem}/{dtype}")
    if bad:
        return f"{len(bad)} of {2 * len(cases)} differ: {', '.join(bad[:6])}", False
    return f"{len(cases)} cases × f32, f64: byte-identical JSON", True


def _tree(np, rng, dtype, n=40):
    shapes = [(3,), (5, 7), (2, 3, 4), (1,), (64,), (0,), (17, 3)]
    return {f"a{i:02d}": rng.standard_normal(shapes[i % len(shapes)]).astype(dtype)
            for i in range(n)}


def _same(np, a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_trees(jax, cpu, dev):
    import numpy as np
    import optax
    import vsgd_jax

    makers = {
        "vsgd": lambda lr: vsgd_jax.vsgd(lr, weight_decay=0.01),
        "constant_vsgd": lambda lr: vsgd_jax.constant_vsgd(lr),
        "adam": lambda lr: vsgd_jax.adam(lr, l2=0.001),
        "adamw": lambda lr: vsgd_jax.adamw(lr),
        "sgdm": lambda lr: vsgd_jax.sgdm(lr, nesterov=True),
    }
    compared = 0
    for algo, make in makers.items():
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(7)
            tx = make(optax.exponential_decay(0.05, 3, 0.7))
            p0 = _tree(np, rng, dtype)
            grads = [_tree(np, rng, dtype) for _ in range(6)]
            grads[3]["a06"][11, 2] = np.nan  # step 4 is skipped by every array
            results = []
            for d in (cpu, dev):
                with jax.default_device(d):
                    step = jax.jit(tx.step)
                    p = jax.device_put(p0, d)
                    s = tx.init(p)
                    trace = []
                    for g in grads:
                        p, s = step(jax.device_put(g, d), s, p)
                        trace.append(jax.device_get((p, s)))
                results.append(trace)
            for k, (a, b) in enumerate(zip(*results)):
                la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
                if len(la) != len(lb) or not all(_same(np, x, y) for x, y in zip(la, lb)):
                    return f"{algo} {np.dtype(dtype).name} differs after step {k + 1}", False
                compared += len(la)
            if int(results[1][3][1].count) != 3:
                return f"{algo}: the NaN step was not skipped (count {results[1][3][1].count})", False
    return f"5 algorithms × f32, f64, 40 arrays, 6 steps (one NaN): {compared} arrays equal", True


def check_vmap(jax, cpu, dev):
    import jax.numpy as jnp
    import numpy as np
    import vsgd_jax

    rng = np.random.default_rng(3)
    tx = vsgd_jax.vsgd(lambda count: 0.1 / (1.0 + count))
    p0 = {"w": rng.standard_normal((3, 4, 5)).astype(np.float32),
          "b": rng.standard_normal((3, 5)).astype(np.float32)}
    g = {"w": rng.standard_normal((3, 4, 5)).astype(np.float32),
         "b": rng.standard_normal((3, 5)).astype(np.float32)}
    g["b"][1, 0] = np.inf  # row 1 skips
    out = []
    for d in (cpu, dev):
        with jax.default_device(d):
            p = jax.device_put(p0, d)
            s = jax.vmap(tx.init)(p)
            s = s._replace(count=jax.device_put(jnp.array([0, 5, 2], s.count.dtype), d))
            step = jax.jit(jax.vmap(tx.step))
            for _ in range(3):
                p, s = step(jax.device_put(g, d), s, p)
            out.append(jax.device_get((p, s)))
    la, lb = (jax.tree_util.tree_leaves(x) for x in out)
    if not all(_same(np, x, y) for x, y in zip(la, lb)):
        return "rows differ", False
    if list(np.asarray(out[1][1].count)) != [3, 5, 5]:
        return f"counts {list(np.asarray(out[1][1].count))}, expected [3, 5, 5]", False
    return "3 rows, own lr and count, one ±∞ row skipped: equal", True


def timing(jax, dev, n):
    import jax.numpy as jnp
    import numpy as np
    import optax
    import vsgd_jax

    rows = []
    with jax.default_device(dev):
        for arrays in (1, 1000):
            rows += _time_layout(jax, jnp, optax, vsgd_jax, dev, n, arrays)
    return rows


def _time_layout(jax, jnp, optax, vsgd_jax, dev, n, arrays):
    rows = []
    if True:
        sizes = [n // arrays] * arrays
        sizes[-1] += n - sum(sizes)
        params = [jax.device_put(jnp.full((k,), 0.5, jnp.float32), dev) for k in sizes]
        grads = [jax.device_put(jnp.full((k,), 0.25, jnp.float32), dev) for k in sizes]
        for name, tx in [("vsgd_jax.vsgd", vsgd_jax.vsgd(0.01)), ("optax.adam", None)]:
            if tx is None:
                otx = optax.adam(0.01)

                def train(p, s, g, otx=otx):
                    u, s = otx.update(g, s, p)
                    return optax.apply_updates(p, u), s

                state = otx.init(params)
            else:
                def train(p, s, g, tx=tx):
                    return tx.step(g, s, p)

                state = tx.init(params)
            step = jax.jit(train, donate_argnums=(0, 1))
            p, s = params, state
            for _ in range(2):
                p, s = step(p, s, grads)
            jax.block_until_ready((p, s))
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                p, s = step(p, s, grads)
                jax.block_until_ready((p, s))
                times.append(time.perf_counter() - t0)
            params = p if tx is not None else params
            best = min(times)
            # Bytes VSGD and Adam must move at least: parameters and state read and written,
            # the gradient read (VSGD: 3 state arrays, Adam: 2).
            k = 3 if tx is not None else 2
            gbs = (2 * (1 + k) + 1) * 4 * n / best / 1e9
            rows.append((f"{name}, {arrays} array(s), {n:,} f32",
                         f"{best * 1e3:.3f} ms ({gbs:.0f} GB/s of minimum traffic)", True))
    return rows


if __name__ == "__main__":
    sys.exit(main())
