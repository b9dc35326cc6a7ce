r"""Langevin samplers: ULA, annealed Langevin (Song & Ermon, 2019) and MALA.

References:
    Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin distributions
    and their discrete approximations. Bernoulli 2(4), 341-363.
    Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. https://arxiv.org/abs/1907.05600
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import erfinv, ndtr

from scorelab._validate import check_callable, check_instance, check_sigma
from scorelab.samplers._core import (
    AbstractSampler,
    check_positive_int,
    check_sigmas,
    checked_options,
    option,
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


def langevin_update(x: Array, score: Array, step_size, z: Array) -> Array:
    r"""The Langevin kernel :math:`x + \gamma\, s + \sqrt{2\gamma}\, z`: ULA's and annealed
    Langevin's step, and predictor-corrector's corrector (:mod:`scorelab.samplers._sde`)."""
    return x + step_size * score + jnp.sqrt(2.0 * step_size) * z


class AbstractLangevin(AbstractSampler):
    """ULA over a schedule of ``(sigma_k, gamma_k)``: one score evaluation and one draw a step."""

    def step(self, score_fn, x, inputs):
        (sigma, step_size), noise = inputs
        return langevin_update(x, score_fn(x, sigma), step_size, noise(0)), None

    @property
    def nfe(self) -> int:
        return self.n_steps


class ULA(AbstractLangevin):
    """The unadjusted Langevin algorithm at one noise level (:func:`ula`)."""

    kind: ClassVar[str] = "ula"
    uses_grid: ClassVar[bool] = False
    step_size: Array = option(1e-2, "Langevin step gamma > 0 (the tutorial's 1e-2)", in_label=True)
    n_steps: int = option(1000, "number of Langevin steps (the tutorial's 1000)", type=int)
    sigma: Array = option(0.0, "noise level passed to the score (0: the data's own score)")

    def schedule(self):
        return (jnp.full((self.n_steps,), self.sigma), jnp.full((self.n_steps,), self.step_size))


@checked_options
def ula(
    step_size: float = ULA.step_size, n_steps: int = ULA.n_steps, sigma: float = ULA.sigma
) -> ULA:
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
        A :class:`ULA` with ``nfe = n_steps``; its trajectory is ``(n_steps, *S)``, the state
        after each step; ``noise`` is ``(n_steps, *S)``, row ``k`` for step ``k``.

    Raises:
        ValueError: unless ``step_size > 0``, ``n_steps`` is a positive integer and
            ``sigma >= 0``.

    References:
        Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin
        distributions and their discrete approximations. Bernoulli 2(4), 341-363.
    """
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    check_score_sigma(sigma)
    return ULA(step_size, check_positive_int("n_steps", n_steps), sigma)


def check_score_sigma(sigma: float) -> None:
    """``ValueError`` unless the noise level passed to the score is ``>= 0`` (a negative one
    was passed on, and a score at sigma -1 sampled something, exit 0) and, when positive, a
    level whose variance float32 holds (:func:`scorelab._validate.check_sigma`)."""
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0 (the score's noise level), got {sigma}")
    check_sigma("sigma", sigma)


class AnnealedLangevin(AbstractLangevin):
    """Annealed Langevin dynamics over a grid (:func:`annealed_langevin`)."""

    kind: ClassVar[str] = "annealed_langevin"
    sigmas: Array
    n_steps_per_level: int = option(5, "ULA steps per level", type=int, in_label=True)
    step_ratio: Array = option(
        DEFAULT_STEP_RATIO, "step at sigma_min, gamma = r (sigma / sigma_min)^2; < 2 sigma_min^2"
    )

    @property
    def n_steps(self) -> int:
        return self.sigmas.shape[0] * self.n_steps_per_level

    @classmethod
    def levels(cls, nfe: int, options) -> int:
        return nfe // options["n_steps_per_level"]

    def schedule(self):
        sigma_steps = jnp.repeat(self.sigmas[::-1], self.n_steps_per_level)
        return sigma_steps, self.step_ratio * (sigma_steps / self.sigmas[0]) ** 2


@checked_options
def annealed_langevin(
    sigmas,
    n_steps_per_level: int = AnnealedLangevin.n_steps_per_level,
    step_ratio: float = AnnealedLangevin.step_ratio,
) -> AnnealedLangevin:
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
        An :class:`AnnealedLangevin` with ``nfe = N * n_steps_per_level``. Trajectory and
        ``noise`` are ``(N * n_steps_per_level, *S)``: row ``l * n_steps_per_level + j`` is step
        ``j`` on level ``sigmas[N - 1 - l]`` (levels counted from the top).

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
    return AnnealedLangevin(sigmas, n_steps_per_level, step_ratio)


def _checked_array(what: str, value, shape: tuple[int, ...], x: Array) -> Array:
    """``value`` as an array, refused while traced unless real numbers of ``shape``: a vector
    log-density (the score passed by mistake) broadcast in the accept test and left every chain
    where it started, without a word."""
    if not isinstance(value, jax.Array | np.ndarray | np.generic | float | int) or not (
        jnp.issubdtype(jnp.result_type(value), jnp.floating)
        or jnp.issubdtype(jnp.result_type(value), jnp.integer)
    ):
        got = getattr(value, "dtype", type(value).__name__)
        raise TypeError(f"log_density_fn: returned a {what} of {got}; it must be real numbers")
    if jnp.shape(value) != shape:
        raise ValueError(
            f"log_density_fn: returned a {what} of shape {jnp.shape(value)} for a state of shape "
            f"{jnp.shape(x)}; "
            f"it must return {'one scalar' if shape == () else f'shape {shape}'} per state"
        )
    return value


def _checked_log_density(value, x: Array) -> Array:
    """``log_density_fn``'s value at one state ``x``, refused unless one real scalar."""
    return _checked_array("log-density", value, (), x)


class MALAState(NamedTuple):
    r"""A MALA chain: its position ``x`` ``S``, :math:`\log\pi(x)` and the score ``S`` there."""

    x: Array
    log_density: Array
    score: Array


class MALAInfo(NamedTuple):
    r"""One MALA step: ``acceptance_rate`` :math:`\min(1, \text{ratio})`, the probability
    that the proposal is accepted, and ``is_accepted``, whether it was. Averaged over a chain's
    steps by the driver (:attr:`SamplerOutput.info`)."""

    acceptance_rate: Array
    is_accepted: Array


class MALA(AbstractSampler):
    """The Metropolis-adjusted Langevin algorithm (:func:`mala`)."""

    kind: ClassVar[str] = "mala"
    uses_grid: ClassVar[bool] = False
    needs_log_density: ClassVar[bool] = True
    log_density_fn: Callable
    step_size: Array = option(1e-2, "Langevin step gamma > 0 (the tutorial's 1e-2)", in_label=True)
    n_steps: int = option(1000, "number of Langevin steps (the tutorial's 1000)", type=int)
    sigma: Array = option(0.0, "noise level passed to the score (0: the data's own score)")
    returns_score: bool = eqx.field(default=False, static=True)

    @property
    def nfe(self) -> int:
        return self.n_steps + 1

    def schedule(self):
        return jnp.full((self.n_steps,), self.step_size)

    def evaluate(self, score_fn, x: Array) -> tuple[Array, Array]:
        """``(log pi(x), score(x))``: from ``log_density_fn`` alone with ``returns_score``."""
        if self.returns_score:
            value = self.log_density_fn(x)
            if not (isinstance(value, tuple | list) and len(value) == 2):
                got = (
                    f"shape {jnp.shape(value)}" if hasattr(value, "shape") else type(value).__name__
                )
                raise TypeError(
                    f"log_density_fn: returned {got} with returns_score=True; "
                    "it must return a pair (log_density, score), or pass returns_score=False"
                )
            log_density, score = value
            score = _checked_array("score", score, jnp.shape(x), x)
            return _checked_log_density(log_density, x), score
        return _checked_log_density(self.log_density_fn(x), x), score_fn(x, self.sigma)

    def init(self, score_fn, x: Array) -> MALAState:
        return MALAState(x, *self.evaluate(score_fn, x))

    def position(self, state: MALAState) -> Array:
        return state.x

    def row_shape(self, shape):
        return (int(np.prod(shape)) + 1,)

    def draw_from_key(self, key: Array, x: Array):
        """The proposal's normal ``z`` (like ``x``) and the accept test's uniform ``u``.

        What ``jax.random.normal(key, (x.size + 1,))`` would give as ``(z, w)`` with ``u =
        Phi(w)``: normal maps uniforms ``v`` on ``(-1, 1)`` to ``sqrt(2) erfinv(v)``, and
        ``Phi(sqrt(2) erfinv(v)) = (1 + v) / 2``, so ``u`` is read off the last uniform instead
        of computing ``w`` (an ``erfinv``) and ``Phi(w)`` (an ``erfc``) for every chain and step.
        """
        low = jnp.nextafter(jnp.asarray(-1.0, x.dtype), jnp.asarray(0.0, x.dtype))
        v = jax.random.uniform(key, (x.size + 1,), x.dtype, low, 1.0)
        z = jnp.sqrt(2.0).astype(x.dtype) * erfinv(v[: x.size])
        return z.reshape(x.shape), 0.5 * (1.0 + v[x.size])

    def draw_from_row(self, row: Array, x: Array):
        """An injected row ``(z, w)`` of ``x.size + 1`` standard normals: ``(z, Phi(w))``."""
        return row[: x.size].reshape(x.shape), ndtr(row[x.size])

    def step(self, score_fn, state: MALAState, inputs):
        step_size, noise = inputs
        z, u = noise(0)

        def log_proposal(x_to, x_from, score_from):
            # log q(x_to | x_from) up to a constant: N(x_from + gamma s(x_from), 2 gamma I).
            return -jnp.sum((x_to - x_from - step_size * score_from) ** 2) / (4.0 * step_size)

        x, log_p, score = state
        y = x + step_size * score + jnp.sqrt(2.0 * step_size) * z
        log_p_y, score_y = self.evaluate(score_fn, y)
        log_ratio = log_p_y - log_p + log_proposal(x, y, score_y) - log_proposal(y, x, score)
        # u ~ U(0, 1); accept when u < ratio, compared as u < exp(log_ratio) rather than
        # log(u) < log_ratio: the same test without a log per chain and step.
        ratio = jnp.exp(log_ratio)
        accept = u < ratio
        proposal = MALAState(y, log_p_y, score_y)
        state = jax.tree.map(lambda a, b: jnp.where(accept, a, b), proposal, state)
        return state, MALAInfo(jnp.minimum(1.0, ratio), accept)


@checked_options
def mala(
    log_density_fn,
    step_size: float = MALA.step_size,
    n_steps: int = MALA.n_steps,
    sigma: float = MALA.sigma,
    *,
    returns_score: bool = False,
) -> MALA:
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
    :meth:`scorelab.targets.GaussianMixture.log_prob`; the kernel is blackjax's ``mala``, run
    by the driver like every other sampler. Each step's :class:`MALAInfo` holds its acceptance
    probability; :attr:`SamplerOutput.info` has the chain's mean.

    Every step evaluates :math:`\log \pi` and :math:`s` at the proposal. With
    ``returns_score=True``, ``log_density_fn`` returns both from one pass, e.g.
    :meth:`scorelab.targets.GaussianMixture.log_prob_and_score`, and ``score_fn`` is not
    called: on :func:`scorelab.targets.seed_mixture` that is faster than ``log_prob`` and
    the exact score as two functions, which repeat the per-component work
    (``benchmarks/peers.py``; results in ``docs/benchmarks.md``, "Peers").

    Args:
        log_density_fn: ``log_density_fn(x) -> scalar`` for one ``x`` ``S``, the log-density
            whose gradient ``score_fn(x, sigma)`` returns; with ``returns_score``,
            ``log_density_fn(x) -> (log_density, score)``, the score ``S`` its gradient.
        step_size: :math:`\gamma > 0`.
        n_steps: number of steps.
        sigma: the noise level passed to ``score_fn`` (0 for a clean score); must be 0 with
            ``returns_score`` (to sample a noised law, pass its own ``log_prob_and_score``,
            e.g. ``target.ve_marginal(sigma).log_prob_and_score``).
        returns_score: take the score from ``log_density_fn`` instead of ``score_fn``.

    Returns:
        A :class:`MALA` with ``nfe = n_steps + 1`` score evaluations (and as many of
        ``log_density_fn``; with ``returns_score``, ``n_steps + 1`` evaluations of
        ``log_density_fn`` that give the score too). Trajectory ``(n_steps, *S)``: the state
        after each step; ``noise`` ``(n_steps, size + 1)`` with ``size`` the number of entries
        of a state: row ``k`` is step ``k``'s proposal draw :math:`z_k` (flattened) followed
        by :math:`w_k`, whose normal CDF :math:`\Phi(w_k)` is the accept test's uniform.

    Raises:
        ValueError: unless ``step_size > 0``, ``n_steps`` is a positive integer and
            ``sigma >= 0``; if ``returns_score`` and ``sigma != 0``. When the sampler is
            traced (:func:`sample`): if ``log_density_fn`` returns another shape than a scalar
            per state, or a score of another shape than the state.
        TypeError: if ``log_density_fn`` is not callable or ``returns_score`` is not ``True``
            or ``False``. When traced: if ``log_density_fn`` returns something other than real
            numbers, or, with ``returns_score``, something other than a pair.

    References:
        Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin
        distributions and their discrete approximations. Bernoulli 2(4), 341-363.
        Cabezas, A. et al. (2024). BlackJAX: Composable Bayesian inference in JAX.
        https://arxiv.org/abs/2402.10797
    """
    check_callable("log_density_fn", log_density_fn, "log_density_fn(x)")
    check_instance("returns_score", returns_score, bool | np.bool_, "True or False")
    returns_score = bool(returns_score)
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    n_steps = check_positive_int("n_steps", n_steps)
    check_score_sigma(sigma)
    if returns_score and sigma != 0:
        raise ValueError(
            f"sigma is score_fn's noise level and score_fn is not called with returns_score, "
            f"got sigma={sigma}; pass the noised law's log_prob_and_score instead"
        )
    return MALA(log_density_fn, step_size, n_steps, sigma, returns_score)
