"""PRNG keys as every public function takes them: JAX's typed keys (``jax.random.key``) and
the legacy ``uint32`` keys of ``jax.random.PRNGKey`` alike.

A sampler's per-step keys are split and reshaped as typed keys; a legacy key, an array of two
words, was split into an array one axis longer ("cannot reshape array of shape (6, 2) into
shape (6, 1)") in every stochastic sampler, while training and the losses took it.
"""

from __future__ import annotations

import jax
import numpy as np
from jax import Array

__all__ = ["typed_key"]


def typed_key(key, name: str = "key") -> Array:
    """``key`` as one typed PRNG key: a typed key as it is, a legacy ``uint32`` key of shape
    ``(2,)`` wrapped (:func:`jax.random.wrap_key_data`), the same draws either way.

    Raises:
        TypeError: naming ``name``, for anything else (a seed, a batch of keys, floats).
    """
    shape, dtype = np.shape(key), getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise TypeError(f"{name}: expected one PRNG key, got an array of keys {shape}")
        return key
    if dtype == np.uint32 and shape == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{name}: expected a PRNG key (jax.random.key(seed)), got {type(key).__name__} of "
        f"shape {shape} and dtype {dtype}"
    )
