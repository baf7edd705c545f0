"""Handwritten digits (UCI, 8×8, 10 classes) with an MLP in pure JAX + optax: VSGD from
``vsgd_jax`` (the library's native kernel as an XLA custom call) against ``optax.adam`` and
``optax.adamw``, the protocol of the candle example (``examples/digits.rs``) scaled down.

    pip install ./bindings/jax
    python examples/jax/digits.py                    # 20 epochs, 3 seeds, ≈ a minute on 2 cores
    python examples/jax/digits.py --epochs 30 --seeds 5

For each optimizer, a small learning-rate grid; each (optimizer, lr) is trained from several
seeds; the lr with the most correct *validation* answers (summed over seeds; ties go to the
smaller lr) is chosen, and its *test* accuracy after the last epoch (mean ± sample std over
seeds) is reported. The learning rate is halved every third of the training (the paper's
step-halving schedule). Ends with a markdown table in the candle example's layout.

Data: ``data/digits.csv.gz`` and its fixed split (``data/README.md``): within each class, in
file order, image j goes to validation if j mod 5 = 3, to test if j mod 5 = 4, to training
otherwise. A seed sets the initial weights and the minibatch order.

Every (lr, seed) run of an optimizer trains at once, under ``jax.vmap``: the native step
takes a batch of independent problems, each row with its own learning rate.
"""

from __future__ import annotations

import argparse
import gzip
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import vsgd_jax

ROOT = pathlib.Path(__file__).resolve().parents[2]
LR_GRID = (0.001, 0.005, 0.02)


def load(path: pathlib.Path):
    """(x, y) of the training, validation and test images (pixels / 16)."""
    try:
        rows = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64, ndmin=2)
    except OSError as e:
        sys.exit(f"digits: cannot read {path}: {e} (see data/README.md)")
    if rows.shape[1] != 65:
        sys.exit(f"digits: {path}: expected 64 pixels and a label per line")
    x, y = rows[:, :64].astype(np.float32) / 16, rows[:, 64].astype(np.int32)
    seen = np.zeros(10, np.int64)
    part = np.empty(len(y), np.int64)
    for i, label in enumerate(y):
        j = seen[label]
        seen[label] += 1
        part[i] = {3: 1, 4: 2}.get(j % 5, 0)
    return [(jnp.asarray(x[part == k]), jnp.asarray(y[part == k])) for k in range(3)]


def init(key):
    """MLP 64-128-10 with PyTorch's default initialization, U(−1/√fan_in, 1/√fan_in)."""
    k = jax.random.split(key, 4)

    def u(key, shape, fan_in):
        bound = 1 / np.sqrt(fan_in)
        return jax.random.uniform(key, shape, jnp.float32, -bound, bound)

    return {"hidden": {"w": u(k[0], (64, 128), 64), "b": u(k[1], (128,), 64)},
            "out": {"w": u(k[2], (128, 10), 128), "b": u(k[3], (10,), 128)}}


def logits(params, x):
    h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["out"]["w"] + params["out"]["b"]


def loss(params, x, y, mask):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y)
    return jnp.sum(ce * mask) / jnp.sum(mask)


def correct(params, x, y):
    return jnp.sum(jnp.argmax(logits(params, x), axis=-1) == y)


def optimizers():
    """name -> (make(learning_rate) -> transformation, fused step or None)."""
    return {
        "vsgd_jax.vsgd": lambda lr: vsgd_jax.vsgd(lr),
        "optax.adam": lambda lr: optax.adam(lr),
        # torch's (and the candle example's) AdamW weight decay, 0.01
        "optax.adamw": lambda lr: optax.adamw(lr, weight_decay=0.01),
    }


def trainer(make, data, epochs, batch):
    """A jitted function of (lrs, seeds) training every pair at once; returns correct
    validation answers and test accuracy (%) after the last epoch, shaped [lrs, seeds]."""
    (xt, yt), (xv, yv), (xs, ys) = data
    n = len(yt)
    steps = -(-n // batch)
    every = steps * max(epochs // 3, 1)

    def run(lr, seed):
        schedule = optax.exponential_decay(1.0, every, 0.5, staircase=True)
        tx = make(lambda count: lr * schedule(count))
        fused = isinstance(tx, vsgd_jax.Transformation)
        kinit, kdata = jax.random.split(jax.random.PRNGKey(seed))
        params = init(kinit)
        state = tx.init(params)

        def minibatch(carry, idx):
            params, state = carry
            mask = (idx >= 0).astype(jnp.float32)
            i = jnp.maximum(idx, 0)
            g = jax.grad(loss)(params, xt[i], yt[i], mask)
            if fused:
                params, state = tx.step(g, state, params)
            else:
                updates, state = tx.update(g, state, params)
                params = optax.apply_updates(params, updates)
            return (params, state), None

        def epoch(carry, key):
            order = jax.random.permutation(key, n)
            order = jnp.concatenate([order, -jnp.ones(steps * batch - n, order.dtype)])
            carry, _ = jax.lax.scan(minibatch, carry, order.reshape(steps, batch))
            return carry, None

        (params, _), _ = jax.lax.scan(epoch, (params, state), jax.random.split(kdata, epochs))
        return correct(params, xv, yv), 100 * correct(params, xs, ys) / len(ys)

    return jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--data", type=pathlib.Path, default=ROOT / "data" / "digits.csv.gz")
    a = ap.parse_args()
    if min(a.epochs, a.seeds, a.batch) < 1:
        ap.error("--epochs, --seeds and --batch must be positive")
    data = load(a.data)
    print(f"digits: {len(data[0][1])} train / {len(data[1][1])} validation / "
          f"{len(data[2][1])} test images; {a.epochs} epoch(s), {a.seeds} seed(s), "
          f"batch {a.batch}", file=sys.stderr)
    lrs = jnp.asarray(LR_GRID, jnp.float32)
    seeds = jnp.arange(a.seeds)
    chosen, details = [], []
    for name, make in optimizers().items():
        t0 = time.perf_counter()
        val, test = jax.device_get(trainer(make, data, a.epochs, a.batch)(lrs, seeds))
        print(f"{name}: {len(LR_GRID) * a.seeds} runs in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        totals = val.sum(axis=1)
        best = int(np.argmax(totals))  # first maximum: ties go to the smaller lr
        accs = [float(x) for x in test[best]]
        mean = statistics.fmean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        chosen.append((name, LR_GRID[best], mean, std))
        cells = ", ".join(
            f"{'**' if i == best else ''}{lr}: {100 * totals[i] / (a.seeds * len(data[1][1])):.2f}"
            f"{'**' if i == best else ''}" for i, lr in enumerate(LR_GRID))
        details.append(f"| {name} | {cells} |")
    print(f"\n#### mlp: validation accuracy (%) per learning rate, mean of {a.seeds} seeds, "
          f"after epoch {a.epochs}\n")
    print("| optimizer | lr: mean validation accuracy |\n|---|---|")
    print("\n".join(details))
    print(f"\n### mlp (MLP 64-128-10, ReLU; JAX + optax): test accuracy after {a.epochs} "
          f"epoch(s), lr chosen on validation, mean ± std over {a.seeds} seed(s)\n")
    print("| optimizer | lr | test accuracy |\n|---|---|---|")
    for name, lr, mean, std in chosen:
        print(f"| {name} | {lr} | {mean:.2f} ± {std:.2f} |")


if __name__ == "__main__":
    main()
