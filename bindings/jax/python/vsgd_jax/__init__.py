"""vsgd-jax: VSGD (Variational Stochastic Gradient Descent), Constant VSGD, Adam, AdamW and
SGD with momentum from the ``vsgd`` library as optax transformations.

Each step runs the library's native kernel inside ``jax.jit`` as an XLA FFI custom call
(parameters and state updated in place when donated), exact to the library bit for bit,
partitioned shard by shard over a ``Mesh`` with no all-gather, batched under ``vmap``.

>>> import jax, jax.numpy as jnp, vsgd_jax
>>> params = {"w": jnp.ones(3)}
>>> tx = vsgd_jax.vsgd(learning_rate=0.05)
>>> state = tx.init(params)
>>> grads = {"w": jnp.array([0.5, -0.25, 1.0])}
>>> params, state = jax.jit(tx.step)(grads, state, params)   # or tx.update + optax.apply_updates
>>> int(state.count)
1
"""

from ._transform import (
    AdamState,
    ConstantVsgdState,
    ElementTypeError,
    SgdmState,
    Transformation,
    VsgdState,
    adam,
    adamw,
    constant_vsgd,
    effective_momentum,
    make,
    sgdm,
    state_dtype,
    vsgd,
)
from .checkpoint import load, load_transformation, save

__version__ = "0.1.0"

__all__ = [
    "AdamState",
    "ConstantVsgdState",
    "ElementTypeError",
    "SgdmState",
    "Transformation",
    "VsgdState",
    "adam",
    "adamw",
    "constant_vsgd",
    "effective_momentum",
    "load",
    "load_transformation",
    "make",
    "save",
    "sgdm",
    "state_dtype",
    "vsgd",
]
