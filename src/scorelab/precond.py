r"""EDM preconditioning: any raw network :math:`F(x_{in}, c_{noise})` as a denoiser and a score.

Karras et al. (2022, Table 1 and eq. 7) write the denoiser as

.. math::
    D(x, \sigma) = c_{skip}(\sigma)\, x + c_{out}(\sigma)\, F\big(c_{in}(\sigma)\, x,
        c_{noise}(\sigma)\big),

    c_{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
    c_{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
    c_{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
    c_{noise} = \tfrac14 \log\sigma,

chosen so that the network's input and its training target both have unit variance at every
noise level when the data have standard deviation :math:`\sigma_d`. By Tweedie's formula the
score of the VE-noised law is :math:`\nabla \log q_\sigma(x) = (D(x, \sigma) - x)/\sigma^2`.

References:
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._validate import (
    check_callable,
    check_real,
    check_sigma,
    is_real_dtype,
    is_traced,
    real_number,
)

__all__ = ["EDMCoefficients", "edm_coefficients", "EDMPreconditioned"]


def _example(x, name: str = "x") -> Array:
    """One example ``x`` as a real array (a list converted; a tracer as it is).

    Raises:
        TypeError: naming ``name``, for complex or non-numeric values (a complex example gave
            complex scores).
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name}: expected real numbers, got dtype {dtype}")
    return jnp.asarray(x)


def _noise_level(x: Array, sigma, zero: bool = False, name: str = "sigma") -> Array:
    """``sigma`` as a 0-d array of ``x``'s float type, ``jnp.result_type(x, 1.0)``: the one
    cast of a noise level in every model (cast to an integer ``x``'s dtype, 0.5 became 0, and
    the score the clean one, or NaN).

    Shape and dtype are checked at trace time; the value only where it is concrete (not under
    ``jit``, ``vmap`` or ``grad``): finite, ``> 0`` (``>= 0`` when ``zero``), and within
    :func:`scorelab._validate.check_sigma`'s float32 range.

    Raises:
        TypeError: naming ``name``, for a non-numeric or complex ``sigma``.
        ValueError: naming ``name``, for more than one value, or a concrete value out of range.
    """
    dtype = getattr(sigma, "dtype", None)
    if dtype is None:
        dtype = np.asarray(sigma).dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name}: expected a real noise level, got dtype {dtype}")
    if np.size(sigma) != 1:
        raise ValueError(
            f"{name}: expected a scalar noise level, got shape {np.shape(sigma)} (one example's "
            "level; vmap over a batch)"
        )
    if not is_traced(sigma):
        value = float(np.asarray(sigma).reshape(()))
        accepted = "a number >= 0" if zero else "a number > 0"
        check_real(name, value, accepted, (lambda v: v >= 0) if zero else (lambda v: v > 0))
        check_sigma(name, value)
    return jnp.asarray(sigma, dtype=jnp.result_type(x, 1.0)).reshape(())


def check_concrete_positive(field: str, value) -> None:
    """Raise unless ``value`` (a number or an array of any shape) is finite and ``> 0``
    everywhere, naming ``field``; a traced value (under ``jit``, ``vmap`` or ``grad``) is not
    checked, so the check costs nothing in a compiled training step."""
    if is_traced(value):
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_real(field, value, "a number > 0", lambda v: v > 0)
        return
    array = np.asarray(value)
    if not is_real_dtype(array.dtype):
        raise TypeError(f"{field}: expected real numbers > 0, got dtype {array.dtype}")
    if not np.all(np.isfinite(array) & (array > 0)):
        raise ValueError(f"{field}: expected finite numbers > 0, got {value!r}")


class EDMCoefficients(NamedTuple):
    """EDM's preconditioning coefficients at one noise level (Karras et al. 2022, Table 1).

    Attributes:
        c_skip: weight of the skip connection :math:`x`.
        c_out: scale of the network's output.
        c_in: scale of the network's input.
        c_noise: the noise level as the network sees it.
    """

    c_skip: Array
    c_out: Array
    c_in: Array
    c_noise: Array


def edm_coefficients(sigma, sigma_data: float) -> EDMCoefficients:
    r"""EDM's :math:`c_{skip}, c_{out}, c_{in}, c_{noise}` at ``sigma`` (Karras et al. 2022,
    Table 1).

    .. math::
        c_{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
        c_{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{noise} = \tfrac14 \log\sigma .

    Args:
        sigma: noise level(s) ``> 0``, any shape.
        sigma_data: :math:`\sigma_d`, the data's standard deviation, ``> 0``.

    Returns:
        The four coefficients, each of ``sigma``'s shape.

    Raises:
        ValueError: ``sigma_data`` or a concrete ``sigma`` is not finite and ``> 0``
            (``sigma = 0`` gave :math:`c_{noise} = -\infty`, a negative ``sigma_data`` a
            negative :math:`c_{out}`) or beyond float32's range of noise levels
            (:func:`scorelab._validate.check_sigma`: ``sigma = 1e30`` gave
            :math:`c_{out} = 0`); a traced value under ``jit`` is not checked.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    for field, value in (("sigma_data", sigma_data), ("sigma", sigma)):
        check_concrete_positive(field, value)
        if not is_traced(value) and np.size(value):  # float32's range of noise levels
            for extreme in (np.min(value), np.max(value)):
                check_sigma(field, float(extreme))
    sigma = jnp.asarray(sigma)
    total = sigma**2 + sigma_data**2
    return EDMCoefficients(
        c_skip=sigma_data**2 / total,
        c_out=sigma * sigma_data / jnp.sqrt(total),
        c_in=1.0 / jnp.sqrt(total),
        c_noise=0.25 * jnp.log(sigma),
    )


class EDMPreconditioned(eqx.Module):
    r"""A raw network :math:`F(x_{in}, c_{noise})` preconditioned as EDM's denoiser, called as
    a score.

    .. math::
        D(x, \sigma) = c_{skip}\, x + c_{out}\, F(c_{in} x, c_{noise}), \qquad
        s(x, \sigma) = \frac{D(x, \sigma) - x}{\sigma^2}
            = c_{out}\sigma^{-2}\, F(c_{in} x, c_{noise}) - \frac{x}{\sigma^2 + \sigma_d^2},

    with the coefficients of :func:`edm_coefficients`. The score is computed in the right-hand
    form, algebraically equal: :math:`D - x` cancels in float32 at small :math:`\sigma` (at
    :math:`\sigma = 0.002`, :math:`|D - x| \approx 10^{-5} |x|`), while
    :math:`1 - c_{skip} = \sigma^2/(\sigma^2 + \sigma_d^2)` is exact. This is what it adds to
    :func:`scorelab.adapters.from_denoiser`, which can only subtract a black-box :math:`D`.

    ``network`` is any callable pytree of one example, ``network(x_in, c_noise) -> x_in``'s
    shape, e.g. :class:`scorelab.models.ConditionalMLP` for vectors or a U-Net for images
    ``(C, H, W)``; so the wrapper serves every sampler and loss as a ``score_fn(x, sigma)``.
    :func:`scorelab.checkpoints.save_model` saves it with the network's own record as the
    ``network`` argument (``{"class": ..., "kwargs": ...}``).

    Attributes:
        network: the raw network :math:`F`.
        sigma_data: :math:`\sigma_d`, the data's standard deviation.

    Raises:
        TypeError: at construction, ``network`` is not callable; at a call, ``x`` or ``sigma``
            is complex or not numeric, or ``network`` returns no real array.
        ValueError: at construction, ``sigma_data`` is not a finite number ``> 0``; at a call,
            ``sigma`` is not a scalar, a concrete ``sigma`` is not finite and ``> 0`` (or is
            outside float32's range of noise levels), or ``network`` returns another shape
            than its input's (checked at trace time).

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """

    network: Callable[[Array, Array], Array]
    sigma_data: float = eqx.field(static=True)

    def __init__(self, network: Callable[[Array, Array], Array], sigma_data: float):
        check_callable("network", network, "network(x_in, c_noise)")
        number = None if is_traced(sigma_data) else real_number(sigma_data)  # a 0-d array too
        sigma_data = sigma_data if number is None else number
        check_real("sigma_data", sigma_data, "a number > 0", lambda v: v > 0)
        check_sigma("sigma_data", sigma_data)  # 1e20 scored NaN
        self.network = network
        self.sigma_data = float(sigma_data)

    def _raw(self, x: Array, sigma) -> tuple[EDMCoefficients, Array, Array, Array]:
        """``(coefficients, F(c_in x, c_noise), x, sigma)``, ``x`` and ``sigma`` as arrays."""
        x = _example(x)
        # An integer x is scored as floats: sigma cast to its dtype was 0.5 -> 0, then NaN.
        sigma = _noise_level(x, sigma)
        coefficients = edm_coefficients(sigma, self.sigma_data)
        raw = self.network(coefficients.c_in * x, coefficients.c_noise)
        shape, dtype = getattr(raw, "shape", None), getattr(raw, "dtype", None)
        if shape is None or not jnp.issubdtype(dtype, jnp.floating):
            what = type(raw).__name__ if shape is None else f"dtype {dtype}"
            raise TypeError(
                f"network: returned {what}; it must return a real array of its input's shape"
            )
        if shape != x.shape:  # a scalar output was broadcast over x: wrong scores, no error
            raise ValueError(
                f"network: returned shape {shape} for an input of shape {x.shape}; it must "
                "return its input's shape"
            )
        return coefficients, raw, x, sigma

    def denoise(self, x: Array, sigma) -> Array:
        r"""The denoiser :math:`D(x, \sigma) = c_{skip} x + c_{out} F(c_{in} x, c_{noise})`.

        Args:
            x: one noisy example, any shape.
            sigma: its noise level, a scalar ``> 0``.

        Returns:
            The estimate of the clean example, ``x``'s shape.
        """
        coefficients, raw, x, _ = self._raw(x, sigma)
        return coefficients.c_skip * x + coefficients.c_out * raw

    def __call__(self, x: Array, sigma) -> Array:
        r"""The score :math:`(D(x, \sigma) - x)/\sigma^2` of one example ``x`` (any shape) at
        scalar ``sigma > 0``; returns ``x``'s shape."""
        coefficients, raw, x, sigma = self._raw(x, sigma)
        return coefficients.c_out / sigma**2 * raw - x / (sigma**2 + self.sigma_data**2)
