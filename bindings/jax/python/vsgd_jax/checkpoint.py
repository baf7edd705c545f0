"""Checkpoints of a JAX optimizer state in the ``vsgd`` library's format (MessagePack with a
checksum, ``docs/checkpoint-format.md``), written and read by the native library's
checkpoint code: ``vsgd inspect FILE`` describes them and the C library's
``vsgd_optimizer_load`` resumes them.

Tensor names are the parameter paths (``jax.tree_util.keystr``, e.g. ``['dense']['w']``);
every tensor's step count is the state's ``count``. Mixed precision: a tensor of bfloat16 or
float16 parameters (``save(..., params=params)`` says which) is saved as such, with its float32
state; its state loads back as float32.
"""

from __future__ import annotations

import ctypes

import jax
import jax.numpy as jnp
import numpy as np

from . import _native
from ._transform import HYPER, STATE_DTYPES, STATE_TYPES, Transformation, make

#: The native bridge's element type codes of a tensor's parameters (its state is float32 for
#: bfloat16 and float16: ``STATE_DTYPES``).
_DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1,
               np.dtype(jnp.bfloat16): 2, np.dtype(jnp.float16): 3}
_CODE_DTYPE = {c: d for d, c in _DTYPE_CODE.items()}


def _algorithm_of(state, tx):
    if tx is not None:
        if not isinstance(tx, Transformation):
            raise TypeError("vsgd_jax.save: tx must be a vsgd_jax transformation")
        algorithm = tx.spec.algorithm
        if type(state) is not STATE_TYPES[algorithm]:
            raise TypeError(f"vsgd_jax.save: a {type(state).__name__} is not the state of "
                            f"{algorithm}")
        return algorithm
    for name, t in STATE_TYPES.items():
        if type(state) is t:
            return name  # AdamState saves as "adam" unless tx says "adamw"
    raise TypeError(f"vsgd_jax.save: {type(state).__name__} is not a vsgd_jax state")


def _hyper_of(algorithm, state, tx):
    if tx is None:
        return {}
    hyper = dict(tx.spec.hyper)
    if callable(tx.learning_rate):
        # The file holds a constant learning rate: the schedule's value at this count.
        hyper["lr"] = float(tx.learning_rate(state.count))
    return hyper


def save(state, tx: Transformation | None = None, *, params=None) -> bytes:
    """The checkpoint bytes of ``state`` (a state made by a ``vsgd_jax`` transformation).

    With ``tx`` (the transformation that made the state) its hyperparameters are saved, and
    ``adamw`` is told apart from ``adam``; an optax schedule is saved as its value at
    ``state.count``. Without it, the algorithm's defaults are saved.

    With ``params`` (the parameters the state belongs to) each tensor is saved with its
    parameters' element type: bfloat16 and float16 parameters (mixed precision, float32
    state) are saved as such, so that the native library resumes them as mixed-precision
    tensors. Without it, each tensor has its state's element type (float32 or float64).
    """
    algorithm = _algorithm_of(state, tx)
    hyper = _hyper_of(algorithm, state, tx)
    names_tree = getattr(state, STATE_TYPES[algorithm]._fields[1])
    paths = [jax.tree_util.keystr(p)
             for p, _ in jax.tree_util.tree_flatten_with_path(names_tree)[0]]
    fields = STATE_TYPES[algorithm]._fields[1:]
    arrays = [[np.array(x, order="C", copy=True) for x in
               jax.tree_util.tree_leaves(getattr(state, f))] for f in fields]
    count = int(np.asarray(state.count))
    if count < 0:
        raise ValueError(f"vsgd_jax.save: count {count} is negative")
    n = len(paths)
    param_dtypes = None
    if params is not None:
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        got = [jax.tree_util.keystr(p) for p, _ in flat]
        if got != paths:
            raise ValueError(f"vsgd_jax.save: params has the leaves {got}, the state {paths}")
        param_dtypes = [np.dtype(jnp.result_type(x)) for _, x in flat]
    ranks, dims, dtypes, ptrs = [], [], [], []
    for i in range(n):
        first = arrays[0][i]
        for j, f in enumerate(fields):
            a = arrays[j][i]
            if a.shape != first.shape or a.dtype != first.dtype:
                raise ValueError(f"vsgd_jax.save: state.{f}{paths[i]} does not match "
                                 f"state.{fields[0]}{paths[i]}")
        if first.dtype not in (np.float32, np.float64):
            raise TypeError(f"vsgd_jax.save: the state of {paths[i]} has element type "
                            f"{first.dtype}; it must be float32 or float64")
        pt = first.dtype if param_dtypes is None else param_dtypes[i]
        if STATE_DTYPES.get(pt) != first.dtype:
            raise TypeError(f"vsgd_jax.save: params{paths[i]} is {pt} but its state is "
                            f"{first.dtype}; the state of float32 and float64 parameters has "
                            "their type, of bfloat16 and float16 parameters float32")
        ranks.append(first.ndim)
        dims.extend(first.shape)
        dtypes.append(_DTYPE_CODE[pt])
        ptrs.extend(arrays[j][i].ctypes.data for j in range(len(fields)))
    c = ctypes
    hk = list(hyper)
    out = c.POINTER(c.c_uint8)()
    out_len = c.c_size_t()
    _native.call(
        "save", algorithm.encode(),
        (c.c_char_p * max(len(hk), 1))(*[k.encode() for k in hk]),
        (c.c_double * max(len(hk), 1))(*[float(hyper[k]) for k in hk]), len(hk),
        n, (c.c_char_p * max(n, 1))(*[p.encode() for p in paths]),
        (c.c_size_t * max(n, 1))(*ranks), (c.c_uint64 * max(len(dims), 1))(*dims),
        (c.c_uint32 * max(n, 1))(*dtypes), (c.c_uint64 * max(n, 1))(*([count] * n)),
        (c.c_void_p * max(len(ptrs), 1))(*ptrs), c.byref(out), c.byref(out_len))
    try:
        return c.string_at(out, out_len.value)
    finally:
        _native.library().vsgd_jax_bytes_free(out, out_len.value)


class _Loaded:
    """A decoded checkpoint (native handle), freed on exit."""

    def __init__(self, data: bytes):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("vsgd_jax.load: expected bytes")
        data = bytes(data)
        self.h = ctypes.c_void_p()
        _native.call("load", data, len(data), ctypes.byref(self.h))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _native.library().vsgd_jax_ckpt_free(self.h)

    def summary(self):
        a, g, t = ctypes.create_string_buffer(64), ctypes.c_size_t(), ctypes.c_size_t()
        _native.call("ckpt_summary", self.h, a, len(a), ctypes.byref(g), ctypes.byref(t))
        return a.value.decode(), g.value, t.value

    def hyper(self, group, name):
        v, const = ctypes.c_double(), ctypes.c_int32()
        _native.call("ckpt_hyper", self.h, group, name.encode(), ctypes.byref(v),
                     ctypes.byref(const))
        return v.value, bool(const.value)

    def tensor(self, i):
        name = ctypes.create_string_buffer(4096)
        name_len, rank, group = ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t()
        dims = (ctypes.c_uint64 * 64)()
        dtype, step = ctypes.c_uint32(), ctypes.c_uint64()
        _native.call("ckpt_tensor", self.h, i, name, len(name), ctypes.byref(name_len),
                     ctypes.byref(rank), dims, 64, ctypes.byref(dtype), ctypes.byref(step),
                     ctypes.byref(group))
        # The parameters' element type as recorded, and the state's (float32 for bfloat16
        # and float16 parameters).
        param_dtype = _CODE_DTYPE[dtype.value]
        return (name.value.decode(), tuple(int(d) for d in dims[:rank.value]),
                STATE_DTYPES[param_dtype], step.value, param_dtype)

    def state(self, i, j, shape, dtype):
        out = np.empty(shape, dtype)
        _native.call("ckpt_state", self.h, i, j, out.ctypes.data, out.size)
        return out


def load(data: bytes, like=None):
    """The optimizer state in checkpoint ``data`` (from :func:`save`, or any checkpoint of
    the library whose tensors share one step count).

    With ``like`` (the parameters, or a state, whose structure the state should take) the
    arrays are placed in that pytree, checked leaf by leaf against the saved names, shapes
    and element types; without it each state field is a dict from tensor name to array. The
    state of a tensor of bfloat16 or float16 parameters (mixed precision) is float32; a
    checkpoint saved with such parameters (``save(..., params=)``) loads only into parameters
    of the same type (one saved without ``params`` records float32 and loads into any
    parameters whose state is float32).
    A corrupt, truncated or future-version checkpoint raises ``ValueError`` (the decoder's
    message); nothing is read from it then.
    """
    try:
        with _Loaded(data) as ck:
            algorithm, _, n = ck.summary()
            tensors = [ck.tensor(i) for i in range(n)]
            steps = {t[3] for t in tensors}
            if len(steps) > 1:
                detail = ", ".join(f"{t[0] or i}: {t[3]}" for i, t in enumerate(tensors))
                raise ValueError("vsgd_jax.load: the tensors have different step counts "
                                 f"({detail}); a JAX state has one count")
            count = steps.pop() if steps else 0
            if count > np.iinfo(np.int32).max:
                raise ValueError(f"vsgd_jax.load: step count {count} does not fit int32")
            fields = STATE_TYPES[algorithm]._fields[1:]
            arrays = [[ck.state(i, j, t[1], t[2]) for i, t in enumerate(tensors)]
                      for j in range(len(fields))]
    except _native.NativeError as e:
        raise ValueError(f"vsgd_jax.load: {e}") from None
    names = [t[0] for t in tensors]
    if any(t[2] == np.float64 for t in tensors) and not jax.config.jax_enable_x64:
        raise TypeError("vsgd_jax.load: the checkpoint holds float64 tensors; enable "
                        "jax_enable_x64 first")
    if like is not None:
        like_state = type(like) in STATE_TYPES.values()
        if like_state:
            like = getattr(like, type(like)._fields[1])
        flat, treedef = jax.tree_util.tree_flatten_with_path(like)
        want = [jax.tree_util.keystr(p) for p, _ in flat]
        if want != names:
            raise ValueError(f"vsgd_jax.load: the checkpoint's tensors {names} are not the "
                             f"leaves {want} of `like`")
        for (p, leaf), t in zip(flat, tensors):
            if tuple(jnp.shape(leaf)) != t[1]:
                raise ValueError(f"vsgd_jax.load: {t[0]} has shape {list(t[1])} in the "
                                 f"checkpoint, {list(jnp.shape(leaf))} in `like`")
            dt = getattr(leaf, "dtype", None)
            if dt is None:
                continue
            dt = np.dtype(dt)
            if like_state:
                ok, saved, what = dt == t[2], t[2], "state"
            else:
                recorded_16 = t[4] in (np.dtype(jnp.bfloat16), np.dtype(jnp.float16))
                ok = (dt == t[4]) if recorded_16 else (STATE_DTYPES.get(dt) == t[2])
                saved, what = t[4], "parameters"
            if not ok:
                raise ValueError(f"vsgd_jax.load: {t[0]} was saved with {what} of type "
                                 f"{saved.name}; `like` has {dt.name}")
        trees = [jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in arrs])
                 for arrs in arrays]
    else:
        trees = [{name: jnp.asarray(a) for name, a in zip(names, arrs)} for arrs in arrays]
    return STATE_TYPES[algorithm](jnp.asarray(count, jnp.int32), *trees)


def load_transformation(data: bytes, learning_rate=None) -> Transformation:
    """The transformation whose hyperparameters (group 0) checkpoint ``data`` holds. A group
    schedule other than the constant one cannot be carried over: pass ``learning_rate``
    (a float or an optax schedule) then."""
    try:
        with _Loaded(data) as ck:
            algorithm, _, _ = ck.summary()
            hyper, constant = {}, True
            for name in HYPER[algorithm]:
                hyper[name], constant = ck.hyper(0, name)
    except _native.NativeError as e:
        raise ValueError(f"vsgd_jax.load_transformation: {e}") from None
    lr = hyper.pop("lr")
    if learning_rate is None:
        if not constant:
            raise ValueError("vsgd_jax.load_transformation: the checkpoint's learning rate "
                             "follows a schedule of the native library; pass learning_rate")
        learning_rate = lr
    return make(algorithm, learning_rate, **hyper)
