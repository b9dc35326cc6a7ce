r"""Samplers driven by a score model: ULA, annealed Langevin, VE-DDIM, the DDIM inference process.

Every sampler runs **one chain** as a pure function built on ``lax.scan`` over an explicit
grid; :func:`sample` is the one place where chains are ``vmap``-ped. A sampler is a
:class:`Sampler` record ``(name, nfe, run)`` built by a constructor closed over its
hyper-parameters (:func:`ula`, :func:`annealed_langevin`, :func:`ddim`)::

    sampler = ddim(default_sigmas(100), e=1.0)
    x_T = ve_prior(key_prior, 4000, 2, DEFAULT_SIGMA_MAX)
    out = sample(key_sampler, sampler, score_fn, x_T)  # out.x: (4000, 2)

``run(key, score_fn, x_init, trajectory=False, noise=None) -> SamplerOutput`` with
``score_fn(x, sigma)`` on one example ``x`` of shape ``(d,)``. ``noise`` replaces the
standard normal draws the chain would take from ``key`` by given ones, one row per draw in
the order they are used (each constructor documents its layout); tests use it to compare
step for step with an independent implementation.

Sigma grids are **ascending** (``sigmas[0] = sigma_min``, see :mod:`scorelab.noise`);
samplers walk them from the top down.

**The prior matters.** The founding tutorial starts from :math:`x_T \sim \mathcal{N}(0,
\sigma_{\max}^2 I)` with :math:`\sigma_{\max} = 10`, but its target has modes at
:math:`\pm 10`, so :math:`q_{10}` is far from :math:`\mathcal{N}(0, 100 I)`, and even the exact
score puts the wrong mass on the modes however many steps are taken (mode-weight total
variation 0.13 for ``e = 0`` and 0.06 for ``e = 1`` at 100 levels and 4000 samples, against
0.016 for 4000 exact samples). scorelab's default grid (:func:`default_sigmas`) goes up to EDM's
:data:`DEFAULT_SIGMA_MAX` = 80, where the mismatch is negligible; the tutorial's grid stays
``karras_sigmas(n)`` (:mod:`scorelab.noise`) with ``ve_prior(key, n, d, 10.0)``, and
:func:`exact_prior` starts from the exact :math:`q_{\sigma_{\max}}` where the target knows it.

References:
    Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin distributions
    and their discrete approximations. Bernoulli 2(4), 341-363.
    Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. https://arxiv.org/abs/1907.05600
    Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
    https://arxiv.org/abs/2010.02502
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.tree_util import Partial

from scorelab.noise import geometric_sigmas

__all__ = [
    "DEFAULT_SIGMA_MIN",
    "DEFAULT_SIGMA_MAX",
    "DEFAULT_STEP_RATIO",
    "SamplerOutput",
    "Sampler",
    "default_sigmas",
    "ula",
    "annealed_langevin",
    "ve_ddim_etas",
    "ddim",
    "inference_process",
    "sample",
    "ve_prior",
    "exact_prior",
]

DEFAULT_SIGMA_MIN = 0.02
"""Smallest noise level of the default grid (the tutorial's)."""

DEFAULT_SIGMA_MAX = 80.0
"""Largest noise level of the default grid: EDM's (Karras et al., 2022), not the tutorial's 10,
which is too small for data spread over [-10, 10]^2 (see the module docstring)."""

DEFAULT_STEP_RATIO = 2e-4
r"""Default annealed-Langevin ratio :math:`r` in :math:`\gamma = r (\sigma/\sigma_{\min})^2`.

On a level where :math:`q_\sigma` is locally Gaussian with variance :math:`\sigma^2 + c`, one ULA
step contracts by :math:`1 - \gamma / (\sigma^2 + c) \approx 1 - r / \sigma_{\min}^2`; with
:math:`\sigma_{\min} = 0.02` this is 0.5, so five steps per level relax a chain (stability needs
:math:`r < 2 \sigma_{\min}^2`). Smaller ratios freeze the chain earlier on the way down and keep
more of the variance of the larger levels: on :func:`scorelab.targets.seed_mixture` with
``default_sigmas(100)`` the tutorial's :math:`10^{-4}` leaves 1.08x the true within-mode
variance and this default 1.05x (linear-Gaussian recursion and sampling agree), while
:math:`4 \cdot 10^{-4}` already biases the mode weights (ULA's :math:`O(\gamma)` bias at the
levels where the modes separate: mode-weight total variation 0.035 at 20000 samples, against
0.007 for exact samples)."""


class SamplerOutput(NamedTuple):
    """What a sampler returns.

    Attributes:
        x: the final sample, ``(d,)`` for one chain (``(n, d)`` from :func:`sample`).
        trajectory: the states after every step, ``(n_records, d)`` for one chain
            (``(n, n_records, d)`` from :func:`sample`), or ``None`` when not asked for.
    """

    x: Array
    trajectory: Array | None


class Sampler(NamedTuple):
    """A sampler closed over its grid and hyper-parameters.

    Attributes:
        name: a short name for reports, e.g. ``"ddim(e=1.0)"``.
        nfe: number of score evaluations per chain.
        run: ``run(key, score_fn, x_init, trajectory=False, noise=None) -> SamplerOutput`` for
            ONE chain. A :class:`jax.tree_util.Partial` whose grid arrays are pytree leaves, so
            two samplers of the same kind and grid size share one compilation in
            :func:`sample`.
    """

    name: str
    nfe: int
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

    Returns:
        ``(n,)`` float32, ascending.
    """
    return geometric_sigmas(n, DEFAULT_SIGMA_MIN, sigma_max)


@functools.partial(jax.jit, static_argnums=(1, 2))
def ve_prior(key: Array, n: int, dim: int, sigma) -> Array:
    r"""``n`` draws from the VE prior :math:`\mathcal{N}(0, \sigma^2 I)`, shape ``(n, dim)``.

    Sample ``i`` is drawn from ``fold_in(key, i)``, so the result does not depend on ``n``.
    Use ``sigma = sigmas[-1]`` of the sampler's grid.
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
        ``(n, d)``.
    """
    return target.ve_marginal(sigma).sample(key, n)


# --- shared pieces -----------------------------------------------------------------------------


def _check_sigmas(sigmas) -> Array:
    values = np.asarray(sigmas)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"sigmas must be a 1-D grid of >= 2 levels, got shape {values.shape}")
    if not (np.all(np.isfinite(values)) and values[0] > 0 and np.all(np.diff(values) > 0)):
        raise ValueError("sigmas must be finite, positive and strictly ascending")
    return jnp.asarray(values, dtype=jnp.float32)


def _noise_source(key: Array, noise, n_draws: int, x: Array):
    """Per-step scan inputs and the map from one input to a standard normal draw like ``x``.

    Without ``noise``: one independent key per draw. With ``noise``: its rows, checked.
    """
    if noise is None:
        return jax.random.split(key, n_draws), lambda k: jax.random.normal(k, x.shape, x.dtype)
    noise = jnp.asarray(noise, dtype=x.dtype)
    if noise.shape != (n_draws, *x.shape):
        raise ValueError(f"noise must have shape {(n_draws, *x.shape)}, got {noise.shape}")
    return noise, lambda z: z


# --- Langevin ----------------------------------------------------------------------------------


def _langevin_run(
    key: Array,
    score_fn,
    x_init: Array,
    trajectory: bool = False,
    noise=None,
    *,
    sigma_steps: Array,
    gamma_steps: Array,
) -> SamplerOutput:
    """ULA steps ``x + gamma_k s(x, sigma_k) + sqrt(2 gamma_k) z_k`` over the given schedule."""
    n_steps = sigma_steps.shape[0]
    inputs, draw = _noise_source(key, noise, n_steps, x_init)

    def step(x, per_step):
        sigma, gamma, source = per_step
        x = x + gamma * score_fn(x, sigma) + jnp.sqrt(2.0 * gamma) * draw(source)
        return x, (x if trajectory else None)

    x, x_all = jax.lax.scan(step, x_init, (sigma_steps, gamma_steps, inputs))
    return SamplerOutput(x, x_all)


def ula(step_size: float, n_steps: int, sigma: float = 0.0) -> Sampler:
    r"""The unadjusted Langevin algorithm at one noise level.

    .. math::
        x_{k+1} = x_k + \gamma\, s(x_k, \sigma) + \sqrt{2\gamma}\, z_k,
        \qquad z_k \sim \mathcal{N}(0, I).

    ULA is biased by :math:`O(\gamma)`: for a Gaussian :math:`\mathcal{N}(m, S)` its stationary
    law is :math:`\mathcal{N}(m, S (I - \tfrac{\gamma}{2} S^{-1})^{-1})`, exactly.

    Args:
        step_size: :math:`\gamma > 0`.
        n_steps: number of steps.
        sigma: the noise level passed to ``score_fn`` (0 for a clean score).

    Returns:
        A :class:`Sampler` with ``nfe = n_steps``; its trajectory is ``(n_steps, d)``, the state
        after each step; ``noise`` is ``(n_steps, d)``, row ``k`` for step ``k``.

    References:
        Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin
        distributions and their discrete approximations. Bernoulli 2(4), 341-363.
    """
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}")
    run = Partial(
        _langevin_run,
        sigma_steps=jnp.full((n_steps,), sigma, dtype=jnp.float32),
        gamma_steps=jnp.full((n_steps,), step_size, dtype=jnp.float32),
    )
    return Sampler(f"ula(step_size={step_size})", int(n_steps), run)


def annealed_langevin(
    sigmas, n_steps_per_level: int = 5, step_ratio: float = DEFAULT_STEP_RATIO
) -> Sampler:
    r"""Annealed Langevin dynamics: ULA on each :math:`q_\sigma`, from the top level down.

    For :math:`\sigma = \sigma_{N-1}, \dots, \sigma_0`, ``n_steps_per_level`` steps of

    .. math::
        x \leftarrow x + \gamma_\sigma\, s(x, \sigma) + \sqrt{2\gamma_\sigma}\, z,
        \qquad \gamma_\sigma = r\, (\sigma / \sigma_{\min})^2,

    Song & Ermon (2019), Algorithm 1; the tutorial's ``sequential_ula``. The step grows with
    :math:`\sigma^2` so that every level is relaxed at the same rate (see
    :data:`DEFAULT_STEP_RATIO`).

    Args:
        sigmas: ``(N,)`` ascending grid; ``sigma_min = sigmas[0]``.
        n_steps_per_level: ULA steps per level.
        step_ratio: :math:`r`, the step at :math:`\sigma_{\min}`; stable below
            :math:`2 \sigma_{\min}^2`.

    Returns:
        A :class:`Sampler` with ``nfe = N * n_steps_per_level``. Trajectory and ``noise`` are
        ``(N * n_steps_per_level, d)``: row ``l * n_steps_per_level + j`` is step ``j`` on level
        ``sigmas[N - 1 - l]`` (levels counted from the top).

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600
    """
    sigmas = _check_sigmas(sigmas)
    if int(n_steps_per_level) != n_steps_per_level or n_steps_per_level < 1:
        raise ValueError(f"n_steps_per_level must be a positive integer, got {n_steps_per_level}")
    if not step_ratio > 0:
        raise ValueError(f"step_ratio must be > 0, got {step_ratio}")
    sigma_steps = jnp.repeat(sigmas[::-1], n_steps_per_level)
    run = Partial(
        _langevin_run,
        sigma_steps=sigma_steps,
        gamma_steps=step_ratio * (sigma_steps / sigmas[0]) ** 2,
    )
    name = f"annealed_langevin(n_steps_per_level={n_steps_per_level}, step_ratio={step_ratio})"
    return Sampler(name, int(sigma_steps.shape[0]), run)


# --- DDIM --------------------------------------------------------------------------------------


def ve_ddim_etas(sigmas, e: float = 1.0, eta_0: float = 0.0) -> Array:
    r"""The tutorial's DDIM noise scales for VE noise, ``(N,)``.

    .. math::
        \eta_{k} = \operatorname{clip}\Big(e \sqrt{\sigma_{k}^2 - \sigma_{k-1}^2}
        \,\frac{\sigma_{k-1}}{\sigma_{k}},\; 0,\; \sigma_{k-1} - 10^{-8}\Big),
        \quad k = 1, \dots, N-1, \qquad \eta_0 = \text{eta\_0}.

    ``etas[k]`` is the standard deviation of the noise added on leaving level ``k``: the step
    :math:`\sigma_k \to \sigma_{k-1}` for ``k >= 1`` (the tutorial's :math:`\eta_{t-1}`), and the
    final step :math:`\sigma_0 \to 0` for ``k = 0``. ``e = 1`` gives the Bayes (ancestral)
    posterior :math:`q(x_{k-1} \mid x_k, x_0)` of the forward chain; ``e = 0`` deterministic
    DDIM. The clip keeps :math:`\sigma_{k-1}^2 - \eta_k^2 > 0` for ``e > 1``.

    Args:
        sigmas: ``(N,)`` ascending grid.
        e: scale of the noise, ``>= 0``.
        eta_0: noise of the final step, ``>= 0``.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models, eq. 16.
        https://arxiv.org/abs/2010.02502
    """
    sigmas = _check_sigmas(sigmas)
    if not (e >= 0 and eta_0 >= 0):
        raise ValueError(f"e and eta_0 must be >= 0, got e={e}, eta_0={eta_0}")
    sigma_t, sigma_prev = sigmas[1:], sigmas[:-1]
    etas = e * jnp.sqrt(sigma_t**2 - sigma_prev**2) * sigma_prev / sigma_t
    etas = jnp.clip(etas, 0.0, sigma_prev - 1e-8)
    return jnp.concatenate([jnp.full((1,), eta_0, dtype=jnp.float32), etas])


def _posterior_step(x_0: Array, x_t: Array, sigma_t, sigma_prev, eta, z: Array) -> Array:
    r"""A draw of :math:`q^\eta(x_{t-1} \mid x_t, x_0) = \mathcal{N}(x_0 +
    \sqrt{\sigma_{t-1}^2 - \eta^2}\,(x_t - x_0)/\sigma_t,\ \eta^2 I)`, the tutorial's
    ``inference_process`` plus its noise."""
    return x_0 + jnp.sqrt(sigma_prev**2 - eta**2) / sigma_t * (x_t - x_0) + eta * z


def _ddim_run(
    key: Array,
    score_fn,
    x_init: Array,
    trajectory: bool = False,
    noise=None,
    *,
    sigmas: Array,
    etas: Array,
) -> SamplerOutput:
    n_levels = sigmas.shape[0]
    inputs, draw = _noise_source(key, noise, n_levels, x_init)

    def tweedie(x_t, sigma_t):
        return x_t + sigma_t**2 * score_fn(x_t, sigma_t)

    def step(x_t, per_step):
        sigma_t, sigma_prev, eta, source = per_step
        x_prev = _posterior_step(tweedie(x_t, sigma_t), x_t, sigma_t, sigma_prev, eta, draw(source))
        return x_prev, (x_prev if trajectory else None)

    # Walk k = N-1, ..., 1: sigma_k -> sigma_{k-1} with etas[k].
    per_step = (sigmas[1:][::-1], sigmas[:-1][::-1], etas[1:][::-1], inputs[:-1])
    x_1, x_all = jax.lax.scan(step, x_init, per_step)
    # Final step sigma_0 -> 0 with its own, independent draw (the tutorial reuses the parent
    # key here, correlating this draw with the chain's first one).
    x = tweedie(x_1, sigmas[0]) + etas[0] * draw(inputs[-1])
    x_all = jnp.concatenate([x_all, x[None]]) if trajectory else None
    return SamplerOutput(x, x_all)


def ddim(sigmas, e: float = 1.0, eta_0: float = 0.0) -> Sampler:
    r"""DDIM for VE noise with the tutorial's parameterisation.

    With Tweedie's denoiser :math:`\hat x_0(x, \sigma) = x + \sigma^2 s(x, \sigma)`, each step
    :math:`\sigma_k \to \sigma_{k-1}` (``k = N-1, ..., 1``) replaces the unknown :math:`x_0` of
    the inference process (:func:`inference_process`) by :math:`\hat x_0`:

    .. math::
        x_{k-1} = \hat x_0 + \frac{\sqrt{\sigma_{k-1}^2 - \eta_k^2}}{\sigma_k}
        (x_k - \hat x_0) + \eta_k z_k,

    and the final step is :math:`x = \hat x_0(x_0', \sigma_0) + \eta_0 z` with
    ``etas = ve_ddim_etas(sigmas, e, eta_0)``. ``e = 1`` is ancestral sampling from the Bayes
    posterior, ``e = 0`` deterministic DDIM.

    With ``e = 0`` (and ``eta_0 = 0``) every step is exactly an Euler step of the
    probability-flow ODE :math:`dx/d\sigma = -\sigma s(x, \sigma)` in :math:`\sigma`:
    :math:`x_{k-1} = x_k + (\sigma_{k-1} - \sigma_k)(-\sigma_k s(x_k, \sigma_k))`, the final
    one with :math:`\sigma_{-1} = 0` (Karras et al., 2022, Sec. 4).

    Unlike the tutorial, every draw, the final one included, comes from its own key.

    Args:
        sigmas: ``(N,)`` ascending grid; start the chain at ``x_init`` drawn near
            :math:`q_{\sigma_{N-1}}` (:func:`ve_prior` or :func:`exact_prior`).
        e: noise scale, ``>= 0``.
        eta_0: noise of the final step, ``>= 0``.

    Returns:
        A :class:`Sampler` with ``nfe = N``. Trajectory ``(N, d)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` and the final sample (as the tutorial's).
        ``noise`` is ``(N, d)``: row ``j < N - 1`` for the step leaving :math:`\sigma_{N-1-j}`,
        row ``N - 1`` for the final step.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
        https://arxiv.org/abs/2010.02502
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    sigmas = _check_sigmas(sigmas)
    run = Partial(_ddim_run, sigmas=sigmas, etas=ve_ddim_etas(sigmas, e, eta_0))
    return Sampler(f"ddim(e={e}, eta_0={eta_0})", int(sigmas.shape[0]), run)


def inference_process(
    key: Array,
    x_0: Array,
    x_T: Array,
    sigmas,
    etas,
    noise=None,
    trajectory: bool = True,
) -> SamplerOutput:
    r"""Sample the DDIM inference process :math:`q^\eta(x_{1:T} \mid x_0)` backwards from ``x_T``.

    For ``k = N-1, ..., 1``:

    .. math::
        x_{k-1} = x_0 + \frac{\sqrt{\sigma_{k-1}^2 - \eta_k^2}}{\sigma_k} (x_k - x_0)
        + \eta_k z_k,

    which keeps every marginal :math:`q(x_k \mid x_0) = \mathcal{N}(x_0, \sigma_k^2 I)` when
    :math:`x_T \sim \mathcal{N}(x_0, \sigma_{N-1}^2 I)`, whatever the :math:`\eta`
    (Song et al., 2021, Lemma 1). The tutorial's ``inference_process_sampling``; :func:`ddim` is
    this chain with :math:`x_0` replaced by Tweedie's estimate.

    Args:
        key: PRNG key for the draws.
        x_0: ``(d,)`` the clean point.
        x_T: ``(d,)`` the start at ``sigmas[-1]``.
        sigmas: ``(N,)`` ascending grid.
        etas: ``(N,)`` in the layout of :func:`ve_ddim_etas`; ``etas[0]`` is not used (the
            process stops at :math:`\sigma_0`).
        noise: optional ``(N - 1, d)`` standard normal draws, row ``j`` for the step leaving
            :math:`\sigma_{N-1-j}`.
        trajectory: whether to return the states.

    Returns:
        :class:`SamplerOutput` with ``x`` the state at :math:`\sigma_0` and ``trajectory``
        ``(N - 1, d)``, the states at :math:`\sigma_{N-2}, \dots, \sigma_0`.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models, eq. 7.
        https://arxiv.org/abs/2010.02502
    """
    sigmas = jnp.asarray(sigmas, dtype=x_T.dtype)
    etas = jnp.asarray(etas, dtype=x_T.dtype)
    if etas.shape != sigmas.shape:
        raise ValueError(f"etas must have the shape of sigmas {sigmas.shape}, got {etas.shape}")
    inputs, draw = _noise_source(key, noise, sigmas.shape[0] - 1, x_T)

    def step(x_t, per_step):
        sigma_t, sigma_prev, eta, source = per_step
        x_prev = _posterior_step(x_0, x_t, sigma_t, sigma_prev, eta, draw(source))
        return x_prev, (x_prev if trajectory else None)

    per_step = (sigmas[1:][::-1], sigmas[:-1][::-1], etas[1:][::-1], inputs)
    x, x_all = jax.lax.scan(step, x_T, per_step)
    return SamplerOutput(x, x_all)


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
        x_init: ``(n, d)`` starting points.
        trajectory: whether to keep every chain's states.

    Returns:
        :class:`SamplerOutput` with ``x`` ``(n, d)`` and ``trajectory``
        ``(n, n_records, d)`` or ``None``.
    """
    # Only `run` enters the compiled function: the name (a string) would be a static argument
    # and recompile for every change of e or step size.
    return _sample_chains(key, sampler.run, score_fn, x_init, trajectory)


@eqx.filter_jit
def _sample_chains(key: Array, run, score_fn, x_init: Array, trajectory: bool) -> SamplerOutput:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x_init.shape[0]))
    return jax.vmap(lambda k, x: run(k, score_fn, x, trajectory))(keys, x_init)
