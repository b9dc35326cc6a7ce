r"""Noise processes and their sigma grids.

The perturbation kernel is :math:`q(x_t \mid x_0) = \mathcal{N}(\alpha_t x_0, \sigma_t^2 I)`.
Variance-exploding (VE) noise has :math:`\alpha_t = 1`; variance-preserving (VP) noise has
:math:`\alpha_t = \sqrt{\bar\alpha_t}`, :math:`\sigma_t = \sqrt{1 - \bar\alpha_t}`.

Grids are plain arrays, **ascending**: ``sigmas[0] = sigma_min`` and ``sigmas[-1] = sigma_max``,
so ``sigmas[i]`` is the tutorial's :math:`\upsilon_i`. Samplers walk them from the top down.

References:
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. https://arxiv.org/abs/1907.05600
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "ve_perturb",
    "vp_perturb",
    "sample_ve_noise",
    "karras_sigmas",
    "geometric_sigmas",
    "GRIDS",
    "sigma_grid",
    "check_sigma_range",
]


def ve_perturb(x_0: Array, sigma, eps: Array) -> Array:
    r"""VE perturbation :math:`x_\sigma = x_0 + \sigma \varepsilon` (Song & Ermon, 2019).

    Args:
        x_0: clean data, shape ``(d,)`` (or any shape matching ``eps``).
        sigma: noise level, scalar or broadcastable to ``x_0``.
        eps: standard normal noise, same shape as ``x_0``.
    """
    return x_0 + sigma * eps


def vp_perturb(x_0: Array, alpha_bar, eps: Array) -> Array:
    r"""VP perturbation :math:`x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1-\bar\alpha_t} \varepsilon`
    (Ho et al., 2020, eq. 4; https://arxiv.org/abs/2006.11239)."""
    return jnp.sqrt(alpha_bar) * x_0 + jnp.sqrt(1.0 - alpha_bar) * eps


def check_sigma_range(sigma_min: float, sigma_max: float) -> None:
    """Raise ``ValueError`` unless ``0 < sigma_min < sigma_max`` (both finite)."""
    if not (jnp.isfinite(sigma_min) and jnp.isfinite(sigma_max)):
        raise ValueError(f"sigma_min and sigma_max must be finite, got {sigma_min}, {sigma_max}")
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min} >= {sigma_max}")


def _check_n(n: int) -> None:
    if int(n) != n or n < 2:
        raise ValueError(f"a sigma grid needs n >= 2 levels, got {n}")


def karras_sigmas(
    n: int, sigma_min: float = 0.02, sigma_max: float = 10.0, rho: float = 5.0
) -> Array:
    r"""The tutorial's sigma ladder, Karras et al. (2022) eq. 5, ascending.

    .. math::
        \sigma_i = \Big(\sigma_{\min}^{1/\rho} + \tfrac{i}{n-1}
        \big(\sigma_{\max}^{1/\rho} - \sigma_{\min}^{1/\rho}\big)\Big)^{\rho},
        \quad i = 0, \dots, n-1.

    The defaults are the tutorial's (sigma_min 0.02, sigma_max 10, rho 5); EDM uses rho = 7.
    Note that sigma_max = 10 is too small for data with modes at +-10: see
    :func:`scorelab.samplers.ve_prior` and the README.

    Args:
        n: number of levels, ``>= 2``.
        sigma_min, sigma_max: end points, ``0 < sigma_min < sigma_max``.
        rho: curvature; ``rho = 1`` is uniform, larger concentrates levels near sigma_min.

    Returns:
        ``(n,)`` float32 array, ``sigmas[0] = sigma_min``, ``sigmas[-1] = sigma_max``.
    """
    _check_n(n)
    check_sigma_range(sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    ramp = jnp.linspace(0.0, 1.0, n)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (lo + ramp * (hi - lo)) ** rho
    # Pin the end points: float rounding of x**(1/rho)**rho is a few ulps off.
    return sigmas.at[0].set(sigma_min).at[-1].set(sigma_max).astype(jnp.float32)


def geometric_sigmas(n: int, sigma_min: float = 0.02, sigma_max: float = 10.0) -> Array:
    r"""Geometric ladder :math:`\sigma_i = \sigma_{\min} (\sigma_{\max}/\sigma_{\min})^{i/(n-1)}`,
    ascending (Song & Ermon, 2019, Sec. 4.2); the :math:`\rho \to \infty` limit of
    :func:`karras_sigmas`.

    Returns:
        ``(n,)`` float32 array.
    """
    _check_n(n)
    check_sigma_range(sigma_min, sigma_max)
    sigmas = jnp.exp(jnp.linspace(jnp.log(sigma_min), jnp.log(sigma_max), n))
    return sigmas.at[0].set(sigma_min).at[-1].set(sigma_max).astype(jnp.float32)


GRIDS = ("geometric", "karras")
"""Names accepted by :func:`sigma_grid`."""


def sigma_grid(
    name: str, n: int, sigma_min: float = 0.02, sigma_max: float = 10.0, rho: float = 5.0
) -> Array:
    """The ascending grid ``name`` (``geometric`` or ``karras``; ``rho`` is Karras' only)."""
    if name == "geometric":
        return geometric_sigmas(n, sigma_min, sigma_max)
    if name == "karras":
        return karras_sigmas(n, sigma_min, sigma_max, rho)
    raise ValueError(f"unknown grid {name!r}; accepted: {', '.join(GRIDS)}")


def sample_ve_noise(key: Array, x_0: Array, sigma) -> tuple[Array, Array]:
    """Draw ``eps ~ N(0, I)`` and return ``(x_sigma, eps)`` with ``x_sigma = x_0 + sigma eps``."""
    eps = jax.random.normal(key, x_0.shape, x_0.dtype)
    return ve_perturb(x_0, sigma, eps), eps
