"""A user's own Equinox networks, defined outside scorelab, for the save_model/load_model tests.

Imported as ``_user_model`` (pytest puts ``tests/`` on ``sys.path``), as a user's module on
``PYTHONPATH`` would be.
"""

import equinox as eqx
import jax
import jax.numpy as jnp


class Affine(eqx.Module):
    """``score_fn(x, sigma) = (W x + b) / (scale + sigma)``, built from a keyword-only key."""

    weight: jax.Array
    bias: jax.Array
    scale: float = eqx.field(static=True)

    def __init__(self, dim: int, scale: float = 1.0, *, key: jax.Array):
        key_weight, key_bias = jax.random.split(key)
        self.weight = jax.random.normal(key_weight, (dim, dim))
        self.bias = jax.random.normal(key_bias, (dim,))
        self.scale = scale

    def __call__(self, x, sigma):
        return (self.weight @ x + self.bias) / (self.scale + sigma)


class Library:
    """A namespace: its nested class has the qualified name ``Library.Shift``."""

    class Shift(eqx.Module):
        """``score_fn(x, sigma) = b``; its constructor takes no key."""

        b: jax.Array

        def __init__(self, dim: int):
            self.b = jnp.zeros(dim)

        def __call__(self, x, sigma):
            return self.b
