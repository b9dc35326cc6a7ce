"""The JAX settings that decide a command's numbers, pinned by the command line.

JAX reads several settings from the environment (``JAX_ENABLE_X64``,
``JAX_DEFAULT_PRNG_IMPL``, ``JAX_THREEFRY_PARTITIONABLE``, ``JAX_NUMPY_RANK_PROMOTION``,
``JAX_NUMPY_DTYPE_PROMOTION``) or from a Python caller. Each one changed what a command
computed: other random draws for one seed (the ``rbg`` key implementation, or non-partitionable
threefry, moved samples by up to 20), a float64 loss beside a float32 one, or an error from
inside scorelab's own broadcasting. The command line computes with the values of
:data:`PINNED` in every environment, so one command and seed give the same numbers everywhere;
the Python API honours the caller's settings.

The settings are thread-local contexts: :func:`applied` enters them in the calling thread, and
a worker thread (``workflows._interruptibly``) enters the caller's :func:`current` values.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax

PINNED: dict[str, Any] = {
    "jax_enable_x64": False,
    "jax_default_prng_impl": "threefry2x32",
    "jax_threefry_partitionable": True,
    "jax_numpy_rank_promotion": "allow",
    "jax_numpy_dtype_promotion": "standard",
}
"""The command line's value of each setting, by its ``jax.config`` name (the environment
variable is the name in capitals)."""

_CONTEXTS = {
    "jax_enable_x64": jax.enable_x64,
    "jax_default_prng_impl": jax.default_prng_impl,
    "jax_threefry_partitionable": jax.threefry_partitionable,
    "jax_numpy_rank_promotion": jax.numpy_rank_promotion,
    "jax_numpy_dtype_promotion": jax.numpy_dtype_promotion,
}


def current() -> dict[str, Any]:
    """This thread's value of every setting of :data:`PINNED`."""
    return {name: getattr(jax.config, name) for name in PINNED}


def overridden() -> list[str]:
    """The settings of :data:`PINNED` whose value here differs from the pinned one, as
    environment variable names (``JAX_DEFAULT_PRNG_IMPL``)."""
    return [name.upper() for name, value in current().items() if value != PINNED[name]]


@contextlib.contextmanager
def applied(values: dict[str, Any]):
    """Within, this thread computes with ``values`` (names of :data:`PINNED`); the previous
    values return afterwards."""
    with contextlib.ExitStack() as stack:
        for name, value in values.items():
            stack.enter_context(_CONTEXTS[name](value))
        yield
