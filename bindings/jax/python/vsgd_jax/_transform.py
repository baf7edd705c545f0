"""The optax transformations: VSGD, Constant VSGD, Adam, AdamW and SGD with momentum, each
running the native kernel of the ``vsgd`` library inside ``jit`` as an XLA custom call."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _native, _ops

ScalarOrSchedule = Union[float, Callable[[jax.Array], jax.Array]]


class VsgdState(NamedTuple):
    """State of :func:`vsgd`: per parameter array, ``mug`` (μ, the posterior mean of the true
    gradient), ``bg`` and ``bhg`` (twice the Gamma rates of the systematic- and
    observation-noise precisions); ``count`` is the number of steps applied."""
    count: jax.Array
    mug: optax.Params
    bg: optax.Params
    bhg: optax.Params


class ConstantVsgdState(NamedTuple):
    """State of :func:`constant_vsgd`: ``mug`` (μ) and ``b`` (twice the Gamma rate of the
    one precision), per parameter array; ``count`` steps applied."""
    count: jax.Array
    mug: optax.Params
    b: optax.Params


class AdamState(NamedTuple):
    """State of :func:`adam` and :func:`adamw`: first and second moments ``m``, ``v``."""
    count: jax.Array
    m: optax.Params
    v: optax.Params


class SgdmState(NamedTuple):
    """State of :func:`sgdm`: the ``momentum`` buffer."""
    count: jax.Array
    momentum: optax.Params


STATE_TYPES = {
    "vsgd": VsgdState,
    "constant_vsgd": ConstantVsgdState,
    "adam": AdamState,
    "adamw": AdamState,
    "sgdm": SgdmState,
}

#: Hyperparameters by algorithm, in the core's order (``lr`` first).
HYPER = {
    "vsgd": ("lr", "ghattg", "ps", "tau1", "tau2", "eps", "weight_decay", "l2", "maximize"),
    "constant_vsgd": ("lr", "ghattg", "ps", "tau", "eps", "weight_decay", "l2", "maximize"),
    "adam": ("lr", "beta1", "beta2", "eps", "weight_decay", "l2", "maximize"),
    "adamw": ("lr", "beta1", "beta2", "eps", "weight_decay", "l2", "maximize"),
    "sgdm": ("lr", "momentum", "dampening", "nesterov", "weight_decay", "l2", "maximize"),
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """What the handler is compiled with: the algorithm and its hyperparameters (f64
    attributes; ``lr`` is the base learning rate, multiplied at run time by ``lr_scale``)."""
    algorithm: str
    hyper: tuple[tuple[str, float], ...]

    def attributes(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm,
                **{k: np.float64(v) for k, v in self.hyper}}

    @property
    def state_names(self) -> tuple[str, ...]:
        return STATE_TYPES[self.algorithm]._fields[1:]


def _path_names(tree) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


#: The parameter element types the native step takes, each with its state's element type:
#: float32 and float64 keep state of their own type; bfloat16 and float16 (mixed precision)
#: keep float32 state, the update computed in float32 (``vsgd::kernels::mixed::step``) and
#: the new parameter rounded once, to nearest even.
STATE_DTYPES = {np.dtype(jnp.float32): np.dtype(jnp.float32),
                np.dtype(jnp.float64): np.dtype(jnp.float64),
                np.dtype(jnp.bfloat16): np.dtype(jnp.float32),
                np.dtype(jnp.float16): np.dtype(jnp.float32)}


class ElementTypeError(TypeError, ValueError):
    """An array whose element type does not go with its parameter's (a gradient of another
    type, state not of the parameter's state type): a ``TypeError``, and a ``ValueError`` as
    such mismatches were before mixed precision."""


def _check_dtype(x, where: str) -> None:
    dt = jnp.result_type(x)
    if np.dtype(dt) not in STATE_DTYPES:
        raise TypeError(f"vsgd_jax: {where} has element type {dt}; the native step takes "
                        "float32 or float64 (float64 needs jax_enable_x64), or bfloat16 or "
                        "float16 with float32 state (mixed precision)")


def state_dtype(param_dtype) -> np.dtype:
    """The element type of the optimizer state of parameters of ``param_dtype``: float32 for
    bfloat16 and float16 (mixed precision), else the parameters' own."""
    return STATE_DTYPES[np.dtype(param_dtype)]


#: Arrays stepped by one custom call. XLA's compile time grows with the square of a call's
#: operand count (its in-place fusion analysis): 1,000 arrays in one call take minutes to
#: compile, in calls of 32 about as long as optax's own step; each call costs ~20 µs to run.
ARRAYS_PER_CALL = 32


def _groups(leaves) -> list[list[int]]:
    """Indices of ``leaves`` by element type, in groups of at most ARRAYS_PER_CALL. For
    parameters the element type decides the state's (:data:`STATE_DTYPES`), so each group
    has one (parameter, state) pair of element types: one custom call each."""
    by_dtype: dict[Any, list[int]] = {}
    for i, x in enumerate(leaves):
        by_dtype.setdefault(jnp.result_type(x), []).append(i)
    return [idx[c:c + ARRAYS_PER_CALL] for idx in by_dtype.values()
            for c in range(0, len(idx), ARRAYS_PER_CALL)]


def _all_finite(grads) -> jax.Array:
    """Whether every gradient element is finite: the verdict every array (and every shard) of
    the step follows. On the CPU each device scans its own shards with the core's vectorized
    scan (``vsgd_jax_all_finite``, a custom call per group of arrays) and the verdicts are
    reduced across the mesh by XLA (one all-reduce), so the whole, possibly sharded, gradient
    decides. ``jnp.isfinite(g).all()`` gives the same verdict, 2-3× slower on XLA:CPU; on the
    GPU it is what runs (``_ops.all_finite`` picks by platform)."""
    leaves = jax.tree_util.tree_leaves(grads)
    finite = jnp.array(True)
    for idx in _groups(leaves):
        finite = finite & _ops.all_finite([leaves[i] for i in idx])
    return finite


class _Update:
    """``update`` of a transformation (callable as optax expects) that also knows the fused
    step; see :meth:`Transformation.step`."""

    def __init__(self, spec: Spec, learning_rate: ScalarOrSchedule):
        self.spec = spec
        self.learning_rate = learning_rate

    def _lr_scale(self, count):
        if callable(self.learning_rate):
            lr = jnp.asarray(self.learning_rate(count))
            if lr.shape != ():
                raise ValueError(f"vsgd_jax: the schedule returned shape {lr.shape}, "
                                 "expected a scalar")
            if lr.dtype not in (jnp.float32, jnp.float64):
                lr = lr.astype(jnp.float32)
            return lr
        return jnp.ones((), jnp.float32)

    def _check(self, grads, state, params):
        state_type = STATE_TYPES[self.spec.algorithm]
        if type(state) is not state_type:
            raise TypeError(
                f"vsgd_jax: {self.spec.algorithm} got a state of type {type(state).__name__}; "
                f"it takes the {state_type.__name__} made by its own init")
        if params is None:
            raise ValueError(f"vsgd_jax: {self.spec.algorithm}'s update needs params "
                             "(the native step updates them in one pass)")
        tree = jax.tree_util.tree_structure(params)
        for what, t in [("grads", grads)] + [(f"state.{n}", getattr(state, n))
                                              for n in self.spec.state_names]:
            if jax.tree_util.tree_structure(t) != tree:
                raise ValueError(f"vsgd_jax: {what} does not have the structure of params "
                                 f"({jax.tree_util.tree_structure(t)} vs {tree})")
        names = _path_names(params)
        leaves = [jax.tree_util.tree_leaves(t) for t in
                  [params, grads] + [getattr(state, n) for n in self.spec.state_names]]
        whats = ["params", "grads"] + [f"state.{n}" for n in self.spec.state_names]
        for i, name in enumerate(names):
            p = leaves[0][i]
            _check_dtype(p, f"params{name}")
            pt = np.dtype(jnp.result_type(p))
            for what, ls in zip(whats[1:], leaves[1:]):
                x = ls[i]
                xt = np.dtype(jnp.result_type(x))
                if jnp.shape(x) != jnp.shape(p):
                    raise ValueError(
                        f"vsgd_jax: {what}{name} is {xt}{list(jnp.shape(x))} "
                        f"but params{name} is {pt}{list(jnp.shape(p))}")
                want = pt if what == "grads" else STATE_DTYPES[pt]
                if xt != want:
                    why = ("a gradient has its parameter's element type" if what == "grads"
                           else f"the state of {pt} parameters is {want}"
                           + (" (mixed precision: bfloat16 or float16 state is not supported)"
                              if want != pt else ""))
                    raise ElementTypeError(
                        f"vsgd_jax: {what}{name} is {xt}{list(jnp.shape(x))} but params{name} "
                        f"is {pt}{list(jnp.shape(p))}: {why}")
        if jnp.shape(state.count) != () or not jnp.issubdtype(jnp.result_type(state.count),
                                                                jnp.integer):
            raise ValueError("vsgd_jax: state.count must be an integer scalar")

    def fused(self, grads, state, params):
        self._check(grads, state, params)
        count = state.count
        finite = _all_finite(grads)
        lr_scale = self._lr_scale(count)
        treedef = jax.tree_util.tree_structure(params)
        p_leaves = jax.tree_util.tree_leaves(params)
        g_leaves = jax.tree_util.tree_leaves(grads)
        s_leaves = [jax.tree_util.tree_leaves(getattr(state, n)) for n in self.spec.state_names]
        new_p = list(p_leaves)
        new_s = [list(s) for s in s_leaves]
        # One custom call per element type and group of at most ARRAYS_PER_CALL arrays.
        for idx in _groups(p_leaves):
            ps, ss = _ops.step(self.spec, lr_scale, count, finite, [p_leaves[i] for i in idx],
                               [g_leaves[i] for i in idx],
                               [[s[i] for i in idx] for s in s_leaves])
            for slot, i in enumerate(idx):
                new_p[i] = ps[slot]
                for a in range(len(ss)):
                    new_s[a][i] = ss[a][slot]
        top = jnp.iinfo(jnp.result_type(count)).max
        new_count = jnp.where(finite & (count < top), count + 1, count).astype(count.dtype)
        state_type = STATE_TYPES[self.spec.algorithm]
        new_state = state_type(new_count, *[jax.tree_util.tree_unflatten(treedef, s)
                                            for s in new_s])
        return jax.tree_util.tree_unflatten(treedef, new_p), new_state

    def __call__(self, updates, state, params=None):
        new_params, new_state = self.fused(updates, state, params)
        deltas = jax.tree_util.tree_map(lambda n, p: n - p, new_params, params)
        return deltas, new_state


class Transformation(optax.GradientTransformation):
    """An ``optax.GradientTransformation`` (``init``, ``update``) with a fused ``step``.

    ``update(grads, state, params)`` returns ``new_params − params`` as optax expects;
    ``optax.apply_updates`` adds it back, which rounds. ``step(grads, state, params)`` returns
    the new parameters themselves, bit-identical to the native library's step.
    """
    __slots__ = ()

    def step(self, grads, state, params):
        """One fused step: ``(new_params, new_state)``. Under ``jit`` with ``params`` and
        ``state`` donated, the arrays are updated in place."""
        return self.update.fused(grads, state, params)

    @property
    def spec(self) -> Spec:
        """The algorithm and hyperparameters this transformation runs."""
        return self.update.spec

    @property
    def learning_rate(self) -> ScalarOrSchedule:
        """The learning rate (float) or schedule given."""
        return self.update.learning_rate


def make(algorithm: str, learning_rate: ScalarOrSchedule, **hyper) -> Transformation:
    """A transformation of ``algorithm`` (one of :data:`HYPER`'s keys) with the given
    hyperparameters over the core's defaults. Checked now: an invalid value raises
    ``ValueError`` naming the field and its allowed range."""
    if algorithm not in HYPER:
        raise ValueError(f"vsgd_jax: unknown algorithm {algorithm!r}")
    unknown = set(hyper) - set(HYPER[algorithm])
    if unknown:
        raise TypeError(f"vsgd_jax: {algorithm} has no hyperparameter(s) {sorted(unknown)}")
    values = {}
    for k, v in hyper.items():
        if isinstance(v, (bool, np.bool_)):
            v = float(v)
        try:
            values[k] = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"vsgd_jax: {k} must be a number, got {v!r}") from None
    if callable(learning_rate):
        # The schedule's value multiplies a base of 1 at run time; the other fields are
        # checked now (with a tiny stand-in learning rate), the scheduled one at each step.
        check = dict(values, lr=1e-30)
        values["lr"] = 1.0
    else:
        try:
            values["lr"] = float(learning_rate)
        except (TypeError, ValueError):
            raise TypeError("vsgd_jax: learning_rate must be a number or a schedule, "
                            f"got {learning_rate!r}") from None
        check = values
    try:
        _native.check_config(algorithm, check)
    except _native.NativeError as e:
        raise ValueError(f"vsgd_jax: {e}") from None
    spec = Spec(algorithm, tuple(sorted(values.items())))
    state_type = STATE_TYPES[algorithm]

    def init(params):
        for name, p in zip(_path_names(params), jax.tree_util.tree_leaves(params)):
            _check_dtype(p, f"params{name}")
        def zeros(p):
            return jnp.zeros_like(p, state_dtype(jnp.result_type(p)))

        arrays = [jax.tree_util.tree_map(zeros, params) for _ in state_type._fields[1:]]
        return state_type(jnp.zeros([], jnp.int32), *arrays)

    return Transformation(init, _Update(spec, learning_rate))


def vsgd(learning_rate: ScalarOrSchedule = 0.1, *, ghattg: float = 30.0, ps: float = 1e-8,
         tau1: float = 0.81, tau2: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0,
         l2: float = 0.0, maximize: bool = False) -> Transformation:
    r"""Variational SGD (Chen, Kuzina, Esmaeili & Tomczak): the gradient is a latent variable,
    the minibatch gradient a noisy observation of it; the update is Adam-like with a learned
    per-element momentum ``bhg / (bg + bhg)`` (:func:`effective_momentum`).

    Per element, with ``pa2 = 2γ + 1 + 1e-4``, ``pbg2 = 2γ``, ``pbhg2 = 2Kγ`` and step ``t``::

        θ   ← θ·(1 − η·λ)
        sg, shg ← (pbg2, pbhg2)/(pa2 − 1) if t = 1 else (bg, bhg)/pa2
        μ'  ← (sg·ĝ + shg·μ)/(sg + shg);   σ² ← sg·shg/(sg + shg)
        bg  ← (1 − t^−κ1)·bg  + t^−κ1·(pbg2  + σ² + (μ' − μ)²)
        bhg ← (1 − t^−κ2)·bhg + t^−κ2·(pbhg2 + σ² + (μ' − ĝ)²)
        θ   ← θ − η·μ'/(sqrt(σ² + μ'²) + eps)

    Args:
      learning_rate: η, a float or an optax schedule of the step count.
      ghattg: K, prior ratio of observation to systematic noise variance.
      ps: γ, prior strength.
      tau1, tau2: κ1, κ2, SVI forgetting exponents of ``bg`` and ``bhg``.
      eps: added to the denominator.
      weight_decay: λ, decoupled (θ·(1 − η·λ) first).
      l2: coupled L2 (ĝ + l2·θ).
      maximize: ascend instead.

    Returns:
      A :class:`Transformation` (an ``optax.GradientTransformation``) with state
      :class:`VsgdState`. Gradients with a NaN or ±∞ anywhere skip the whole step
      (parameters, state and count unchanged), across every shard.

    Example::

      tx = vsgd_jax.vsgd(0.05)
      state = tx.init(params)
      params, state = jax.jit(tx.step)(grads, state, params)
    """
    return make("vsgd", learning_rate, ghattg=ghattg, ps=ps, tau1=tau1, tau2=tau2, eps=eps,
                weight_decay=weight_decay, l2=l2, maximize=maximize)


def constant_vsgd(learning_rate: ScalarOrSchedule = 0.1, *, ghattg: float = 30.0,
                  ps: float = 1e-8, tau: float = 0.9, eps: float = 1e-8,
                  weight_decay: float = 0.0, l2: float = 0.0,
                  maximize: bool = False) -> Transformation:
    r"""Constant VSGD (the paper's Algorithm 2): one noise precision, the systematic noise
    tied to it by the ratio K, so ``μ' = (K·μ + ĝ)/(K + 1)`` — Adam's first moment with
    β1 = K/(K + 1) — and one learned variance ``b``. Two state arrays (``mug``, ``b``).
    Arguments as :func:`vsgd` (``tau`` is κ). See ``docs/algorithms.md``."""
    return make("constant_vsgd", learning_rate, ghattg=ghattg, ps=ps, tau=tau, eps=eps,
                weight_decay=weight_decay, l2=l2, maximize=maximize)


def adam(learning_rate: ScalarOrSchedule = 1e-3, *, beta1: float = 0.9, beta2: float = 0.999,
         eps: float = 1e-8, weight_decay: float = 0.0, l2: float = 0.0,
         maximize: bool = False) -> Transformation:
    r"""Adam as torch.optim.Adam computes it (bias corrections, ``eps`` outside the square
    root): ``θ ← θ − η/(1 − β1^t)·m/(sqrt(v)/sqrt(1 − β2^t) + eps)``. ``l2`` is torch's
    ``weight_decay`` (coupled); ``weight_decay`` here is decoupled. State :class:`AdamState`.
    Matches ``optax.adam`` to rounding (optax places ``eps`` the same way)."""
    return make("adam", learning_rate, beta1=beta1, beta2=beta2, eps=eps,
                weight_decay=weight_decay, l2=l2, maximize=maximize)


def adamw(learning_rate: ScalarOrSchedule = 1e-3, *, beta1: float = 0.9, beta2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.01, l2: float = 0.0,
          maximize: bool = False) -> Transformation:
    r"""AdamW: :func:`adam` with decoupled weight decay ``θ·(1 − η·λ)`` first (torch's
    default λ = 0.01; optax.adamw's is 1e-4 and multiplies the decay by the same η)."""
    return make("adamw", learning_rate, beta1=beta1, beta2=beta2, eps=eps,
                weight_decay=weight_decay, l2=l2, maximize=maximize)


def sgdm(learning_rate: ScalarOrSchedule = 0.01, *, momentum: float = 0.9,
         dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
         l2: float = 0.0, maximize: bool = False) -> Transformation:
    r"""SGD with momentum as torch.optim.SGD: the buffer starts as the first gradient, then
    ``buf ← μ·buf + (1 − dampening)·ĝ``; Nesterov steps along ``ĝ + μ·buf``. State
    :class:`SgdmState`."""
    return make("sgdm", learning_rate, momentum=momentum, dampening=dampening,
                nesterov=nesterov, weight_decay=weight_decay, l2=l2, maximize=maximize)


def effective_momentum(state: VsgdState):
    """VSGD's learned effective momentum per element, ``bhg / (bg + bhg)`` (the authors'
    ``get_current_beta1_estimate``; the core's ``kernels::effective_momentum``): the weight the
    previous mean gets when the next gradient arrives. A pytree like the parameters."""
    if not isinstance(state, VsgdState):
        raise TypeError("vsgd_jax: effective_momentum needs a VsgdState, got "
                        f"{type(state).__name__}")
    return jax.tree_util.tree_map(lambda bg, bhg: bhg / (bg + bhg), state.bg, state.bhg)
