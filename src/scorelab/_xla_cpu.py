"""How scorelab compiles programs that evaluate convolution networks on a CPU.

XLA:CPU (jaxlib 0.10) hands convolutions, and the element-wise work and reductions around
them, to YNNPACK, which on this project's 2-core machines ran a U-Net's forward pass at about
one core's speed, while XLA's own (Eigen) convolutions use every core: the forward pass and
every image sampler step took about half the time (docs/benchmarks.md, "Image sampling:
XLA:CPU's convolutions, not YNNPACK's"; ``python benchmarks/image_sampling.py`` times both).
Dots and their fused epilogues stay with YNNPACK, which an MLP's programs keep.

The choice is a per-program compile option (``jax.jit``'s ``compiler_options``), not a
process-wide ``XLA_FLAGS`` setting, so a user's own programs are left as they are. It is
probed once: a jaxlib that does not know this (experimental) option, or a default backend that
is not a CPU, compiles with XLA's defaults. Training is left alone: with the convolution
gradients on the matmul path (``scorelab.diffusers._unet._Conv``) it measured no faster.

Only a top-level program takes compile options: ``jax.jit`` refuses them on a jit traced into
another transformation (a caller's ``jit``, ``grad``, ``scan`` or ``checkpoint``), so a
:func:`convolution_jit` function called there is a plain nested ``jit`` and the outer program's
options apply (``scorelab.ld3`` compiles its search's program with them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

try:  # No public JAX function says whether a call is traced; this is JAX's own test of it.
    from jax._src.core import trace_state_clean
except ImportError:  # another JAX: every jit is compiled without options (correct, slower)
    trace_state_clean = None

_CONVOLUTION_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@functools.cache
def convolution_options() -> dict[str, str] | None:
    """The compile options for a program that evaluates convolutions on this process's
    default backend: YNNPACK for dots only on a CPU whose jaxlib knows the option, else
    ``None`` (XLA's defaults)."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(jnp.negative, compiler_options=_CONVOLUTION_OPTIONS).lower(0.0).compile()
    except (RuntimeError, ValueError, TypeError):  # a jaxlib without the option
        return None
    return dict(_CONVOLUTION_OPTIONS)


def takes_convolutions(batch) -> bool:
    """Whether a program on ``batch`` is one for :func:`convolution_jit`: a batch of images
    (rank above 2: ``(n, C, H, W)``, ``(n, H, W)``), which convolution networks take; a batch
    of vectors ``(n, d)`` is an MLP's, for a plain ``jit``."""
    return jnp.ndim(batch) > 2


def _at_top_level() -> bool:
    """Whether a call now runs outside every JAX transformation (``jit``, ``grad``, ``vmap``,
    ``scan``...): the only place where a jit may carry compile options."""
    return trace_state_clean is not None and trace_state_clean()


def convolution_jit(fun: Callable) -> Callable:
    """``equinox.filter_jit(fun)`` compiled with :func:`convolution_options` when called at the
    top level, a plain nested ``filter_jit`` when traced by an outer transformation (whose
    program decides the options: ``jax.jit`` refuses them on a nested jit), made at the first
    call (when JAX's backend is known); ``__wrapped__`` is ``fun`` and ``lower`` lowers it
    ahead of time, as the jitted function's own."""

    @functools.cache
    def jitted(top_level: bool) -> Callable:
        # None: no keyword, for a jax.jit that has none or a jit nested in another program.
        options = convolution_options() if top_level else None
        return (
            eqx.filter_jit(fun)
            if options is None
            else eqx.filter_jit(fun, compiler_options=options)
        )

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        return jitted(_at_top_level())(*args, **kwargs)

    call.lower = lambda *args, **kwargs: jitted(_at_top_level()).lower(*args, **kwargs)
    return call
