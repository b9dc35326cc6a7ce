r"""The noise of the stochastic k-diffusion samplers: independent draws or one Brownian tree.

A stochastic step from :math:`\sigma` to :math:`\sigma'` adds a standard normal draw
:math:`z`. With ``noise_sampler="gaussian"`` every draw is fresh (one key per draw). With
``noise_sampler="brownian"`` every chain owns one Brownian path :math:`W` on
:math:`[\sigma_0, \sigma_{N-1}]`, and the draw of a step is its standardised increment

.. math::
    z = \frac{W(\sigma') - W(\sigma)}{\sqrt{|\sigma' - \sigma|}},

so two grids that share a segment see the same increment on it, and a finer grid refines
the same path instead of drawing new noise: results converge as the grid is refined
(k-diffusion's ``BrownianTreeNoiseSampler``, time ``t = \sigma``). The path is
``diffrax.VirtualBrownianTree``, which matches the law of Brownian motion exactly at every
query time (Jelinčič, Foster & Kidger, 2024).

References:
    Li, X., Wong, T.-K. L., Chen, R. T. Q. & Duvenaud, D. (2020). Scalable Gradients for
    Stochastic Differential Equations. https://arxiv.org/abs/2001.01328
    Jelinčič, A., Foster, J. & Kidger, P. (2024). Single-seed generation of Brownian paths
    and integrals for adaptive and high order SDE solvers. https://arxiv.org/abs/2405.06464
    Crowson, K. (2022). k-diffusion, ``k_diffusion/sampling.py``
    (``BrownianTreeNoiseSampler``). https://github.com/crowsonkb/k-diffusion
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
from jax import Array

from scorelab._keys import typed_key
from scorelab.samplers._core import AbstractSampler, option

NOISE_SAMPLERS = ("gaussian", "brownian")
"""The noise of the stochastic k-diffusion samplers: fresh draws, or one Brownian tree."""

TREE_TOLERANCE = 1e-3
"""The Brownian tree's resolution, relative to the grid's lowest level :math:`\\sigma_0`: far
below any step, so the tree's bisection never coarsens a grid's increments."""


def brownian_increment(key: Array, sigma_min, sigma_max, sigma, sigma_next, shape, dtype):
    r"""The standardised increment of the Brownian path of ``key`` between two noise levels.

    .. math::
        z = \frac{W(\sigma') - W(\sigma)}{\sqrt{|\sigma' - \sigma|}} \sim \mathcal{N}(0, I),

    with :math:`W` the ``diffrax.VirtualBrownianTree`` of ``key`` on
    :math:`[\sigma_{\min}, \sigma_{\max}]`: the same ``key`` gives the same path whatever the
    levels queried.

    Args:
        key: the path's PRNG key.
        sigma_min, sigma_max: the path's interval, scalars, ``0 < sigma_min < sigma_max``.
        sigma, sigma_next: the step's levels in the interval, scalars, distinct.
        shape: the draw's shape ``S``.
        dtype: the draw's float dtype.

    Returns:
        ``S`` array of ``dtype``.

    Raises:
        TypeError: for a ``key`` that is not one PRNG key (:func:`scorelab._keys.typed_key`).

    References:
        Jelinčič, A., Foster, J. & Kidger, P. (2024). Single-seed generation of Brownian paths
        and integrals for adaptive and high order SDE solvers. https://arxiv.org/abs/2405.06464
    """
    key = typed_key(key)
    tree = diffrax.VirtualBrownianTree(
        sigma_min, sigma_max, TREE_TOLERANCE * sigma_min, jax.ShapeDtypeStruct(shape, dtype), key
    )
    low, high = jnp.minimum(sigma, sigma_next), jnp.maximum(sigma, sigma_next)
    sign = jnp.where(sigma_next > sigma, 1.0, -1.0).astype(dtype)
    return sign * tree.evaluate(low, high) / jnp.sqrt(high - low)


class AbstractNoiseSampler(AbstractSampler):
    """A stochastic sampler on a grid whose kernel draws with ``noise(j, (sigma,
    sigma_next))``: fresh normals, or the increments of one Brownian tree per chain."""

    sigmas: Array
    noise_sampler: str = option(
        "gaussian", "noise: gaussian (fresh draws) or brownian (one Brownian tree per chain)",
        type=str, choices=NOISE_SAMPLERS,
    )  # fmt: skip

    def step_keys(self, key: Array) -> Array:
        if self.noise_sampler == "brownian":  # every draw reads the chain's one path
            return jnp.broadcast_to(key, (self.n_steps, self.draws_per_step))
        return super().step_keys(key)

    def draw_from_key(self, key: Array, interval, x: Array):
        if self.noise_sampler == "brownian":
            sigma, sigma_next = interval
            sigma_min, sigma_max = self.sigmas[0], self.sigmas[-1]
            return brownian_increment(key, sigma_min, sigma_max, sigma, sigma_next, x.shape,
                                      x.dtype)  # fmt: skip
        return jax.random.normal(key, x.shape, x.dtype)

    def draw_from_row(self, row: Array, interval, x: Array):
        return row


def check_noise_sampler(noise_sampler: str) -> None:
    """``ValueError`` unless ``noise_sampler`` is in :data:`NOISE_SAMPLERS`."""
    if noise_sampler not in NOISE_SAMPLERS:
        raise ValueError(
            f"unknown noise_sampler {noise_sampler!r}; accepted: {', '.join(NOISE_SAMPLERS)}"
        )
