"""One step of one parameter array as an XLA custom call, partitioned and batched.

Three layers, innermost first:

1. :func:`_ffi` — ``jax.ffi.ffi_call`` of the native handler, one call for every parameter
   array of one element type. Parameter and state inputs are aliased to the outputs
   (``input_output_aliases``), so under ``jit`` with donated arguments the step updates the
   buffers in place. ``vmap_method="broadcast_all"``: under ``vmap`` every
   input gets the batch axis in front and the handler steps the rows one by one, each with
   its own learning rate, count and verdict.
2. :func:`_partitioned` — ``custom_partitioning`` around it: the step is elementwise, so the
   partitioner is told (Shardy rule: every dimension of an array's parameter, gradient and
   state is one shared factor) that each device steps its own shards of the arrays with the
   replicated scalars. A jitted step over parameters sharded with ``NamedSharding`` then runs shard by
   shard with no all-gather of parameters or state.
3. :func:`step` — ``custom_vmap`` around that (``custom_partitioning`` has no batching rule):
   under ``vmap`` it calls layer 1 directly with the batched arrays (unpartitioned); and a
   ``custom_jvp`` whose rule says that the step is not differentiable.

The gradient's verdict (all finite?) is computed by the caller over the whole gradient, so
XLA reduces it across shards and every shard skips together (:func:`all_finite`).

Platforms: the step's target ``vsgd_jax_step`` has a handler for "cpu" and, where jaxlib has a
CUDA backend, one for "CUDA" (``_native``), so these layers lower to either platform. The
verdict is platform-dependent (``jax.lax.platform_dependent``): on the CPU the native scan
(``vsgd_jax_all_finite``), elsewhere ``jnp.isfinite(g).all()``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from . import _native


def _ffi(spec, lr_scale, count, finite, *arrays):
    """``arrays``: the n parameters, the n gradients, then each state array's n arrays."""
    _native.library()
    k = len(spec.state_names)
    n = len(arrays) // (2 + k)
    # The outputs: the parameters, then the state arrays, each of its input's element type
    # (bfloat16/float16 parameters have float32 state).
    outputs = list(arrays[:n]) + list(arrays[2 * n:])
    out = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in outputs]
    aliases = {3 + j: j for j in range(n)}
    aliases.update({3 + (2 + a) * n + j: (1 + a) * n + j for a in range(k) for j in range(n)})
    call = jax.ffi.ffi_call(_native.TARGET, out, vmap_method="broadcast_all",
                            input_output_aliases=aliases)
    return tuple(call(lr_scale, count, finite, *arrays, **spec.attributes()))


def _layout(spec, count):
    k = len(spec.state_names)
    n = (count - 3) // (2 + k)
    return k, n


def _rule(spec, mesh, operand_types, result_types):
    """Shardy rule: array j's parameter, gradient, state and outputs share one factor per
    dimension (elementwise); the three scalars have none."""
    del mesh
    k, n = _layout(spec, len(operand_types))
    dims = [" ".join(f"a{j}d{i}" for i in range(len(operand_types[3 + j].shape)))
            for j in range(n)]
    operands = ["", "", ""] + dims * (2 + k)
    results = dims * (1 + k)
    return f"{', '.join(operands)} -> {', '.join(results)}"


def _replicated(sharding):
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    return jax.sharding.GSPMDSharding.get_replicated(sharding._device_assignment)


def _leaf_shardings(spec, arg_shapes):
    k, n = _layout(spec, len(arg_shapes))
    return k, n, [arg_shapes[3 + j].sharding for j in range(n)]


def _partition(spec, mesh, arg_shapes, result_shape):
    k, n, leaf = _leaf_shardings(spec, arg_shapes)
    rep = _replicated(leaf[0]) if n else None
    arg_shardings = (rep, rep, rep) + tuple(leaf) * (2 + k)
    result_shardings = tuple(leaf) * (1 + k)

    def lower(*args):
        return _ffi(spec, *args)

    return mesh, lower, result_shardings, arg_shardings


def _infer(spec, mesh, arg_shapes, result_shape):
    del mesh
    k, n, leaf = _leaf_shardings(spec, arg_shapes)
    return tuple(leaf) * (1 + k)


@functools.partial(custom_partitioning, static_argnums=(0,))
def _partitioned(spec, lr_scale, count, finite, *arrays):
    return _ffi(spec, lr_scale, count, finite, *arrays)


_partitioned.def_partition(partition=_partition, infer_sharding_from_operands=_infer,
                           sharding_rule=_rule)


@functools.lru_cache(maxsize=None)
def _batched(spec):
    @jax.custom_batching.custom_vmap
    def run(lr_scale, count, finite, *arrays):
        return _partitioned(spec, lr_scale, count, finite, *arrays)

    @run.def_vmap
    def rule(axis_size, in_batched, lr_scale, count, finite, *arrays):
        args = [lr_scale, count, finite, *arrays]
        args = [x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
                for x, b in zip(args, in_batched)]
        out = _ffi(spec, *args)
        return out, (True,) * len(out)

    # The step has no derivative of its own (it would be the update rule written again):
    # say so, instead of JAX's message about custom_partitioning.
    @jax.custom_jvp
    def public(*args):
        return run(*args)

    @public.defjvp
    def _no_jvp(primals, tangents):
        raise TypeError("vsgd_jax: the optimizer step is not differentiable (differentiate "
                        "the loss, then step; see jax.lax.stop_gradient)")

    return public


def step(spec, lr_scale, count, finite, params, grads, states):
    """One step of the arrays ``params`` (a list, one element type) with ``grads`` and
    ``states`` (one list per state array): new ``(params, states)``, unchanged when
    ``finite`` is false. ``spec`` carries the algorithm and hyperparameters (compile-time
    attributes of the call)."""
    n = len(params)
    if n == 0:
        return [], [[] for _ in states]
    flat = list(params) + list(grads) + [x for s in states for x in s]
    out = _batched(spec)(lr_scale, count, finite, *flat)
    return list(out[:n]), [list(out[(1 + a) * n:(2 + a) * n]) for a in range(len(states))]


# ------------------------------------------------------------------------- the verdict


def _finite_call(rows, *grads):
    """The verdict over ``grads``; with ``rows=(B,)`` (under ``vmap``) one per leading row."""
    _native.library()
    call = jax.ffi.ffi_call(_native.FINITE_TARGET, jax.ShapeDtypeStruct(rows, jnp.bool_),
                            vmap_method="broadcast_all")
    return call(*grads)


def _finite_rule(mesh, operand_types, result_types):
    """Shardy rule: every dimension of every gradient is a reduction factor (the verdict is
    reduced over all of them)."""
    del mesh, result_types
    factors, operands = [], []
    for j, t in enumerate(operand_types):
        dims = [f"a{j}d{i}" for i in range(len(t.shape))]
        factors += dims
        operands.append(" ".join(dims))
    return f"{', '.join(operands)} -> ", {"reduction_factors": tuple(factors)}


def _finite_partition(mesh, arg_shapes, result_shape):
    arg_shardings = tuple(a.sharding for a in arg_shapes)
    axes = tuple(mesh.axis_names)

    def lower(*grads):
        # Each device scans its shards; the verdicts meet in one all-reduce.
        local = _finite_ffi(*grads).astype(jnp.int32)
        return jax.lax.pmin(local, axes) > 0 if axes else local > 0

    return mesh, lower, _replicated(arg_shardings[0]), arg_shardings


def _finite_infer(mesh, arg_shapes, result_shape):
    del mesh, result_shape
    return _replicated(arg_shapes[0].sharding)


def _finite_ffi(*grads):
    return _finite_call((), *grads)


_finite_partitioned = custom_partitioning(_finite_ffi)
_finite_partitioned.def_partition(partition=_finite_partition,
                                  infer_sharding_from_operands=_finite_infer,
                                  sharding_rule=_finite_rule)


@jax.custom_batching.custom_vmap
def _finite_batched(*grads):
    return _finite_partitioned(*grads)


@_finite_batched.def_vmap
def _finite_rule_vmap(axis_size, in_batched, *grads):
    grads = [x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
             for x, b in zip(grads, in_batched)]
    return _finite_call((axis_size,), *grads), True


def _jnp_all_finite(*grads):
    """The verdict in jax.numpy, for the GPU (and any platform without the native scan): XLA
    fuses each array's test and reduction into one pass over it and, on a mesh, reduces the
    per-device verdicts itself (no all-gather); ``vmap`` batches it as any jax.numpy code."""
    finite = jnp.array(True)
    for g in grads:
        finite = finite & jnp.isfinite(g).all()
    return finite


def all_finite(grads):
    """Whether every element of the arrays ``grads`` (a non-empty list, one element type) is
    finite: a 0-d bool, the same on every device of a mesh. Not differentiated (a verdict
    has no derivative), so it can sit inside a function JAX differentiates. On the CPU the
    native scan (custom call ``vsgd_jax_all_finite``), on other platforms jax.numpy: picked
    when the program is lowered, so one traced step serves both."""
    grads = [jax.lax.stop_gradient(g) for g in grads]
    return jax.lax.platform_dependent(*grads, cpu=_finite_batched, default=_jnp_all_finite)
