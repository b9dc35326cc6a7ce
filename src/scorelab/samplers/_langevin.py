r"""Langevin samplers: ULA, annealed Langevin (Song & Ermon, 2019) and MALA.

References:
    Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin distributions
    and their discrete approximations. Bernoulli 2(4), 341-363.
    Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. https://arxiv.org/abs/1907.05600
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import erfinv, ndtr
from jax.tree_util import Partial

from scorelab.samplers._core import (
    Sampler,
    SamplerOutput,
    check_positive_int,
    check_sigmas,
    noise_source,
)

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
    inputs, draw = noise_source(key, noise, n_steps, x_init)

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

    Raises:
        ValueError: unless ``step_size > 0`` and ``n_steps`` is a positive integer.

    References:
        Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin
        distributions and their discrete approximations. Bernoulli 2(4), 341-363.
    """
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    n_steps = check_positive_int("n_steps", n_steps)
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
            :math:`2 \sigma_{\min}^2`, and a warning at or above it. The default suits
            :math:`\sigma_{\min} = 0.02`; scale it with :math:`\sigma_{\min}^2` for another
            grid.

    Returns:
        A :class:`Sampler` with ``nfe = N * n_steps_per_level``. Trajectory and ``noise`` are
        ``(N * n_steps_per_level, d)``: row ``l * n_steps_per_level + j`` is step ``j`` on level
        ``sigmas[N - 1 - l]`` (levels counted from the top).

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels; unless ``n_steps_per_level`` is a positive integer; unless
            ``step_ratio > 0``.

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600
    """
    sigmas = check_sigmas(sigmas)
    n_steps_per_level = check_positive_int("n_steps_per_level", n_steps_per_level)
    if not step_ratio > 0:
        raise ValueError(f"step_ratio must be > 0, got {step_ratio}")
    sigma_min_sq = float(sigmas[0]) ** 2
    if step_ratio >= 2 * sigma_min_sq:
        warnings.warn(
            f"step_ratio {step_ratio:g} >= 2 sigma_min^2 = {2 * sigma_min_sq:g}: on every level "
            "where sigma^2 dominates the data's variance, one step multiplies a chain's distance "
            f"to the mean by 1 - step_ratio / sigma_min^2 = {1 - step_ratio / sigma_min_sq:g}, so "
            f"the chains diverge; pass a step_ratio below {2 * sigma_min_sq:g} (e.g. "
            f"{sigma_min_sq / 2:g}, which halves that distance per step)",
            stacklevel=2,
        )
    sigma_steps = jnp.repeat(sigmas[::-1], n_steps_per_level)
    run = Partial(
        _langevin_run,
        sigma_steps=sigma_steps,
        gamma_steps=step_ratio * (sigma_steps / sigmas[0]) ** 2,
    )
    name = f"annealed_langevin(n_steps_per_level={n_steps_per_level}, step_ratio={step_ratio})"
    return Sampler(name, int(sigma_steps.shape[0]), run)


def _mala_run(
    key: Array,
    score_fn,
    x_init: Array,
    trajectory: bool = False,
    noise=None,
    *,
    log_density_fn,
    step_sizes: Array,
    sigma: Array | None,
) -> SamplerOutput:
    """MALA with ``log_density_fn(x) -> log pi(x)`` and the score ``score_fn(x, sigma)``; with
    ``sigma=None``, ``log_density_fn(x) -> (log pi(x), score)`` and ``score_fn`` is not called."""
    if sigma is None:
        evaluate = log_density_fn
    else:

        def evaluate(x):
            return log_density_fn(x), score_fn(x, sigma)

    return _mala_scan(key, evaluate, x_init, trajectory, noise, step_sizes)


def _mala_noise(key: Array, noise, n_steps: int, like: Array, d: int):
    """Per-step scan inputs and the map from one input to ``(z, u)``: the proposal's ``(d,)``
    standard normal and the accept test's uniform.

    One draw per step of ``d + 1`` standard normals, ``z`` then ``w`` with ``u = Phi(w)``, so
    that ``noise`` is one standard normal row per step. From ``key``, step ``k`` draws what
    ``jax.random.normal(keys[k], (d + 1,))`` would: normal maps uniforms ``v`` on ``(-1, 1)``
    to ``sqrt(2) erfinv(v)``, and ``Phi(sqrt(2) erfinv(v)) = (1 + v) / 2``, so ``u`` is read
    off the last uniform instead of computing ``w`` (an ``erfinv``) and ``Phi(w)`` (an
    ``erfc``) for every chain at every step.
    """
    if noise is not None:
        inputs, _ = noise_source(key, noise, n_steps, jnp.zeros((d + 1,), like.dtype))
        return inputs, lambda z_and_w: (z_and_w[:d], ndtr(z_and_w[d]))
    low = jnp.nextafter(jnp.asarray(-1.0, like.dtype), jnp.asarray(0.0, like.dtype))

    def draw(step_key):
        v = jax.random.uniform(step_key, (d + 1,), like.dtype, low, 1.0)
        return jnp.sqrt(2.0).astype(like.dtype) * erfinv(v[:d]), 0.5 * (1.0 + v[d])

    return jax.random.split(key, n_steps), draw


def _mala_scan(
    key: Array, evaluate, x_init: Array, trajectory: bool, noise, step_sizes: Array
) -> SamplerOutput:
    """The MALA chain; ``evaluate(x) -> (log pi(x), score(x))``."""
    d, n_steps = x_init.shape[0], step_sizes.shape[0]
    inputs, draw = _mala_noise(key, noise, n_steps, x_init[0], d)

    def log_proposal(x_to, x_from, score_from, step_size):
        # log q(x_to | x_from) up to a constant: N(x_from + gamma s(x_from), 2 gamma I).
        return -jnp.sum((x_to - x_from - step_size * score_from) ** 2) / (4.0 * step_size)

    def step(state, per_step):
        x, log_p, score = state
        step_size, source = per_step
        z, u = draw(source)
        y = x + step_size * score + jnp.sqrt(2.0 * step_size) * z
        log_p_y, score_y = evaluate(y)
        log_ratio = (
            log_p_y
            - log_p
            + log_proposal(x, y, score_y, step_size)
            - log_proposal(y, x, score, step_size)
        )
        # u ~ U(0, 1); accept when u < ratio, compared as u < exp(log_ratio) rather than
        # log(u) < log_ratio: the same test without a log per chain and step.
        accept = u < jnp.exp(log_ratio)
        state = jax.tree.map(lambda a, b: jnp.where(accept, a, b), (y, log_p_y, score_y), state)
        return state, (state[0] if trajectory else None)

    init = (x_init, *evaluate(x_init))
    (x, _, _), x_all = jax.lax.scan(step, init, (step_sizes, inputs))
    return SamplerOutput(x, x_all)


def mala(
    log_density_fn,
    step_size: float,
    n_steps: int,
    sigma: float = 0.0,
    *,
    returns_score: bool = False,
) -> Sampler:
    r"""The Metropolis-adjusted Langevin algorithm: ULA's proposal, then an accept test.

    .. math::
        y = x_k + \gamma\, s(x_k) + \sqrt{2\gamma}\, z_k, \qquad
        x_{k+1} = \begin{cases} y & \text{with probability }
        \min\Big(1, \dfrac{\pi(y)\, q(x_k \mid y)}{\pi(x_k)\, q(y \mid x_k)}\Big) \\
        x_k & \text{otherwise,} \end{cases}

    with :math:`q(y \mid x) = \mathcal{N}(y; x + \gamma s(x), 2\gamma I)`. The accept test
    makes :math:`\pi` exactly invariant whatever :math:`\gamma`, where :func:`ula` at the same
    step is biased by :math:`O(\gamma)` (``tests/test_samplers_langevin.py`` shows both). It
    needs the log-density :math:`\log \pi` up to a constant, e.g.
    :meth:`scorelab.targets.GaussianMixture.log_prob`; the kernel is blackjax's ``mala``
    written as one pure scan so that it runs under :func:`sample` like every other sampler.

    Every step evaluates :math:`\log \pi` and :math:`s` at the proposal. With
    ``returns_score=True``, ``log_density_fn`` returns both from one pass, e.g.
    :meth:`scorelab.targets.GaussianMixture.log_prob_and_score`, and ``score_fn`` is not
    called: on :func:`scorelab.targets.seed_mixture` that is 1.8x faster on a CPU
    (:math:`2 \cdot 10^4` to :math:`10^5` chains) and 1.5x on a GPU (:math:`10^5` chains)
    than ``log_prob`` and the exact score as two functions, which repeat the per-component
    work.

    Args:
        log_density_fn: ``log_density_fn(x) -> scalar`` for one ``x`` ``(d,)``, the log-density
            whose gradient ``score_fn(x, sigma)`` returns; with ``returns_score``,
            ``log_density_fn(x) -> (log_density, score)``, the score ``(d,)`` its gradient.
        step_size: :math:`\gamma > 0`.
        n_steps: number of steps.
        sigma: the noise level passed to ``score_fn`` (0 for a clean score); must be 0 with
            ``returns_score`` (to sample a noised law, pass its own ``log_prob_and_score``,
            e.g. ``target.ve_marginal(sigma).log_prob_and_score``).
        returns_score: take the score from ``log_density_fn`` instead of ``score_fn``.

    Returns:
        A :class:`Sampler` with ``nfe = n_steps + 1`` score evaluations (and as many of
        ``log_density_fn``; with ``returns_score``, ``n_steps + 1`` evaluations of
        ``log_density_fn`` that give the score too). Trajectory ``(n_steps, d)``: the state
        after each step; ``noise`` ``(n_steps, d + 1)``: row ``k`` is step ``k``'s proposal
        draw :math:`z_k` followed by :math:`w_k`, whose normal CDF :math:`\Phi(w_k)` is the
        accept test's uniform.

    Raises:
        ValueError: unless ``step_size > 0`` and ``n_steps`` is a positive integer; if
            ``returns_score`` and ``sigma != 0``.

    References:
        Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin
        distributions and their discrete approximations. Bernoulli 2(4), 341-363.
        Cabezas, A. et al. (2024). BlackJAX: Composable Bayesian inference in JAX.
        https://arxiv.org/abs/2402.10797
    """
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    n_steps = check_positive_int("n_steps", n_steps)
    if returns_score and sigma != 0:
        raise ValueError(
            f"sigma is score_fn's noise level and score_fn is not called with returns_score, "
            f"got sigma={sigma}; pass the noised law's log_prob_and_score instead"
        )
    step_sizes = jnp.full((n_steps,), step_size, dtype=jnp.float32)
    run = Partial(
        _mala_run,
        log_density_fn=log_density_fn,
        step_sizes=step_sizes,
        sigma=None if returns_score else jnp.float32(sigma),
    )
    return Sampler(f"mala(step_size={step_size})", n_steps + 1, run)
