"""The sampler record, the chain driver, priors and the checks every sampler shares."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab.noise import geometric_sigmas

DEFAULT_SIGMA_MIN = 0.02
"""Smallest noise level of the default grid (the tutorial's)."""

DEFAULT_SIGMA_MAX = 80.0
"""Largest noise level of the default grid: EDM's (Karras et al., 2022), not the tutorial's 10,
which is too small for data spread over [-10, 10]^2 (see :mod:`scorelab.samplers`)."""


class SamplerOutput(NamedTuple):
    """What a sampler returns.

    Attributes:
        x: the final sample, ``(d,)`` for one chain (``(n, d)`` from :func:`sample`).
        trajectory: the states after every step, ``(n_records, d)`` for one chain
            (``(n, n_records, d)`` from :func:`sample`), or ``None`` when not asked for.
        nfe: the score evaluations this chain took, a scalar int (``(n,)`` from
            :func:`sample`), for samplers whose cost depends on the chain (adaptive ODE
            solvers, whose :attr:`Sampler.nfe` is ``None``); ``None`` for the others.
    """

    x: Array
    trajectory: Array | None
    nfe: Array | None = None


class Sampler(NamedTuple):
    """A sampler closed over its grid and hyper-parameters.

    Attributes:
        name: a short name for reports, e.g. ``"ddim(e=1.0)"``.
        nfe: number of score evaluations per chain; ``None`` when it depends on the chain
            (adaptive solvers: read :attr:`SamplerOutput.nfe`).
        run: ``run(key, score_fn, x_init, trajectory=False, noise=None) -> SamplerOutput`` for
            ONE chain. A :class:`jax.tree_util.Partial` whose grid arrays are pytree leaves, so
            two samplers of the same kind and grid size share one compilation in
            :func:`sample`.
    """

    name: str
    nfe: int | None
    run: Callable[..., SamplerOutput]


# --- grids and priors --------------------------------------------------------------------------


def default_sigmas(n: int = 100, sigma_max: float = DEFAULT_SIGMA_MAX) -> Array:
    r"""scorelab's default VE grid: geometric from 0.02 to ``sigma_max`` (80), ascending.

    .. math::
        \sigma_i = \sigma_{\min} (\sigma_{\max} / \sigma_{\min})^{i / (n - 1)},

    Song & Ermon (2019)'s ladder with EDM's :math:`\sigma_{\max}`. Why not the tutorial's
    Karras :math:`\rho = 5` ladder stretched to 80: ancestral DDIM (``e = 1``) loses
    within-mode variance in the steps where :math:`\sigma` is comparable to the modes' own
    spread (0.3 on :func:`scorelab.targets.seed_mixture`), and stretching a :math:`\rho`-grid
    to 80 coarsens exactly that region. At 100 levels a mode of variance 0.1 keeps 0.87 of
    its variance on the stretched Karras grid and 0.92 on this one (linear-Gaussian recursion,
    confirmed by sampling). The tutorial's grid is ``karras_sigmas(n)`` in
    :mod:`scorelab.noise`.

    Args:
        n: number of levels, integer ``>= 2``.
        sigma_max: the top level, ``> 0.02``.

    Returns:
        ``(n,)`` float32, ascending, ``sigmas[0] = 0.02``, ``sigmas[-1] = sigma_max``.

    Raises:
        ValueError: if ``n`` is not an integer ``>= 2`` or ``sigma_max <= 0.02``
            (:func:`scorelab.noise.geometric_sigmas`).

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    return geometric_sigmas(n, DEFAULT_SIGMA_MIN, sigma_max)


@functools.partial(jax.jit, static_argnums=(1, 2))
def ve_prior(key: Array, n: int, dim: int, sigma) -> Array:
    r"""``n`` draws from the VE prior :math:`\mathcal{N}(0, \sigma^2 I)`, shape ``(n, dim)``.

    .. math::
        x_T^{(i)} = \sigma z_i, \qquad z_i \sim \mathcal{N}(0, I_{\mathrm{dim}}).

    Sample ``i`` is drawn from ``fold_in(key, i)``, so the first ``m`` rows do not depend on
    ``n``. Use ``sigma = sigmas[-1]`` of the sampler's grid. Jitted with ``n`` and ``dim``
    static.

    Args:
        key: PRNG key.
        n: number of samples (Python int).
        dim: dimension ``d`` (Python int).
        sigma: the prior's standard deviation, a scalar.

    Returns:
        ``(n, dim)`` array of JAX's default float (float32 unless x64 is enabled).

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return sigma * jax.vmap(lambda k: jax.random.normal(k, (dim,)))(keys)


def exact_prior(key: Array, target, n: int, sigma) -> Array:
    r"""``n`` draws from the exact VE marginal :math:`q_\sigma = q_0 * \mathcal{N}(0, \sigma^2 I)`.

    Removes the prior mismatch of :func:`ve_prior` when the target knows its marginal.

    Args:
        key: PRNG key; sample ``i`` is drawn from ``fold_in(key, i)``.
        target: a :class:`scorelab.targets.GaussianMixture`.
        n: number of samples.
        sigma: noise level, normally ``sigmas[-1]``.

    Returns:
        ``(n, d)`` array, ``d = target.dim``.
    """
    return target.ve_marginal(sigma).sample(key, n)


# --- shared pieces -----------------------------------------------------------------------------


def check_sigmas(sigmas) -> Array:
    """``sigmas`` as an array of JAX's default float (float32; float64 under x64), or
    ``ValueError`` unless a 1-D, ascending, positive grid."""
    values = np.asarray(sigmas)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"sigmas must be a 1-D grid of >= 2 levels, got shape {values.shape}")
    if not (np.all(np.isfinite(values)) and values[0] > 0 and np.all(np.diff(values) > 0)):
        raise ValueError("sigmas must be finite, positive and strictly ascending")
    return jnp.asarray(values, dtype=float)


def descending_steps(sigmas: Array) -> tuple[Array, Array]:
    r"""The steps :math:`\sigma_{N-1} \to \sigma_{N-2}, \dots, \sigma_0 \to 0` of an ascending
    grid: ``(sigma_from, sigma_to)``, each ``(N,)``; the last step lands on 0."""
    sigma_from = sigmas[::-1]
    sigma_to = jnp.concatenate([sigmas[:-1][::-1], jnp.zeros((1,), sigmas.dtype)])
    return sigma_from, sigma_to


def noise_source(key: Array, noise, n_draws: int, x: Array):
    """Per-step scan inputs and the map from one input to a standard normal draw like ``x``.

    Without ``noise``: one independent key per draw. With ``noise``: its rows, checked.
    """
    if noise is None:
        return jax.random.split(key, n_draws), lambda k: jax.random.normal(k, x.shape, x.dtype)
    noise = jnp.asarray(noise, dtype=x.dtype)
    if noise.shape != (n_draws, *x.shape):
        raise ValueError(f"noise must have shape {(n_draws, *x.shape)}, got {noise.shape}")
    return noise, lambda z: z


def tweedie(score_fn, x_t: Array, sigma) -> Array:
    r"""Tweedie's denoiser :math:`D(x, \sigma) = \mathbb{E}[x_0 \mid x_\sigma = x] = x +
    \sigma^2 \nabla \log q_\sigma(x)` (Efron, 2011), one score evaluation."""
    return x_t + sigma**2 * score_fn(x_t, sigma)


def check_positive_int(name: str, value) -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` unless a positive integer."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


# --- the driver --------------------------------------------------------------------------------


def sample(
    key: Array, sampler: Sampler, score_fn, x_init: Array, trajectory: bool = False
) -> SamplerOutput:
    """Run ``sampler`` on ``n`` chains: the one place where chains are ``vmap``-ped.

    Chain ``i`` uses ``fold_in(key, i)``, so the first ``m`` chains of a run with ``n`` chains
    are the chains of a run with ``m``. Compiled with ``equinox.filter_jit``: array leaves of
    ``sampler.run`` and ``score_fn`` (the grid, the noise scales, an Equinox module's weights)
    are traced and the rest is static, so a second call with the same shapes does not
    recompile, even with another grid, ``e`` or set of weights.

    Args:
        key: PRNG key.
        sampler: a :class:`Sampler`.
        score_fn: ``score_fn(x, sigma)`` on one example ``x`` ``(d,)``, scalar ``sigma``.
        x_init: ``(n, d)`` starting points; sharded over devices along the chains (a
            ``NamedSharding`` with ``PartitionSpec("chains")``), each device runs its chains
            and the result keeps that sharding (docs: how-to "Run on several devices").
        trajectory: whether to keep every chain's states.

    Returns:
        :class:`SamplerOutput` with ``x`` ``(n, d)``, ``trajectory`` ``(n, n_records, d)`` or
        ``None``, and ``nfe`` ``(n,)`` or ``None``.
    """
    # Only `run` enters the compiled function: the name (a string) would be a static argument
    # and recompile for every change of e or step size.
    return _sample_chains(key, sampler.run, score_fn, x_init, trajectory)


@eqx.filter_jit
def _sample_chains(key: Array, run, score_fn, x_init: Array, trajectory: bool) -> SamplerOutput:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x_init.shape[0]))
    return jax.vmap(lambda k, x: run(k, score_fn, x, trajectory))(keys, x_init)
