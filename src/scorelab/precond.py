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
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._validate import check_real

__all__ = ["EDMCoefficients", "edm_coefficients", "EDMPreconditioned"]


def check_concrete_positive(field: str, value) -> None:
    """Raise unless ``value`` (a number or an array of any shape) is finite and ``> 0``
    everywhere, naming ``field``; a traced value (under ``jit``, ``vmap`` or ``grad``) is not
    checked, so the check costs nothing in a compiled training step."""
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_real(field, value, "a number > 0", lambda v: v > 0)
        return
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
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
            negative :math:`c_{out}`); a traced value under ``jit`` is not checked.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    check_concrete_positive("sigma_data", sigma_data)
    check_concrete_positive("sigma", sigma)
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

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """

    network: Callable[[Array, Array], Array]
    sigma_data: float = eqx.field(static=True)

    def __init__(self, network: Callable[[Array, Array], Array], sigma_data: float):
        check_real("sigma_data", sigma_data, "a number > 0", lambda v: v > 0)
        self.network = network
        self.sigma_data = float(sigma_data)

    def _raw(self, x: Array, sigma) -> tuple[EDMCoefficients, Array]:
        # An integer x is scored as floats: sigma cast to its dtype was 0.5 -> 0, then NaN.
        sigma = jnp.asarray(sigma, dtype=jnp.result_type(x, 1.0)).reshape(())
        coefficients = edm_coefficients(sigma, self.sigma_data)
        return coefficients, self.network(coefficients.c_in * x, coefficients.c_noise)

    def denoise(self, x: Array, sigma) -> Array:
        r"""The denoiser :math:`D(x, \sigma) = c_{skip} x + c_{out} F(c_{in} x, c_{noise})`.

        Args:
            x: one noisy example, any shape.
            sigma: its noise level, a scalar ``> 0``.

        Returns:
            The estimate of the clean example, ``x``'s shape.
        """
        coefficients, raw = self._raw(x, sigma)
        return coefficients.c_skip * x + coefficients.c_out * raw

    def __call__(self, x: Array, sigma) -> Array:
        r"""The score :math:`(D(x, \sigma) - x)/\sigma^2` of one example ``x`` (any shape) at
        scalar ``sigma > 0``; returns ``x``'s shape."""
        coefficients, raw = self._raw(x, sigma)
        sigma = jnp.asarray(sigma, dtype=jnp.result_type(x, 1.0)).reshape(())
        return coefficients.c_out / sigma**2 * raw - x / (sigma**2 + self.sigma_data**2)
