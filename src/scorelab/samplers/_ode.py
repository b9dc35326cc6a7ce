r"""Probability-flow ODE samplers in :math:`\sigma`: Euler, Heun, stochastic EDM, DPM-Solver++(2M).

The probability-flow ODE of VE noise (Song et al., 2021; Karras et al., 2022, eq. 4 with
:math:`\sigma(t) = t`) is

.. math::
    \frac{dx}{d\sigma} = -\sigma\, \nabla \log q_\sigma(x) = \frac{x - D(x, \sigma)}{\sigma},
    \qquad D(x, \sigma) = x + \sigma^2 \nabla \log q_\sigma(x),

solved from :math:`\sigma_{N-1}` down the grid to :math:`\sigma_0` and then to 0. Each sampler
here is a small function over the explicit grid, as in k-diffusion.

References:
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    Lu, C., Zhou, Y., Bao, F., Chen, J., Li, C. & Zhu, J. (2022). DPM-Solver++: Fast Solver for
    Guided Sampling of Diffusion Probabilistic Models. https://arxiv.org/abs/2211.01095
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import jax.numpy as jnp
from jax import Array

from scorelab.samplers._core import (
    S_NOISE_USUAL,
    AbstractSampler,
    check_sigmas,
    checked_options,
    descending_steps,
    option,
    tweedie,
)


def _flow_step(score_fn, x: Array, sigma, sigma_next, second_order: bool) -> Array:
    r"""Euler's step of :math:`dx/d\sigma = -\sigma s(x, \sigma)` from ``sigma`` to
    ``sigma_next``, with Heun's trapezoidal correction when ``second_order``."""

    def slope(x, sigma):  # dx/dsigma = -sigma s(x, sigma)
        return -sigma * score_fn(x, sigma)

    d = slope(x, sigma)
    x_next = x + (sigma_next - sigma) * d
    if second_order:  # Heun's correction, trapezoidal in sigma
        x_next = x + (sigma_next - sigma) * 0.5 * (d + slope(x_next, sigma_next))
    return x_next


class AbstractFlow(AbstractSampler):
    """A solver of the probability-flow ODE down the grid, ``N`` steps, the last to 0."""

    sigmas: Array

    @property
    def n_steps(self) -> int:
        return self.sigmas.shape[0]

    @property
    def draws_per_step(self) -> int:
        return 0

    def schedule(self):
        return descending_steps(self.sigmas)


class Euler(AbstractFlow):
    """Euler's method on the probability-flow ODE (:func:`euler`)."""

    kind: ClassVar[str] = "euler"

    @property
    def nfe(self) -> int:
        return self.n_steps

    def step(self, score_fn, x, inputs):
        (sigma, sigma_next), _ = inputs
        return _flow_step(score_fn, x, sigma, sigma_next, False), None


class AbstractTwoStage(AbstractSampler):
    """Two evaluations a step between levels, one on the last (to 0): ``2 N - 1``."""

    has_final_step: ClassVar[bool] = True

    @property
    def nfe(self) -> int:
        return 2 * self.n_steps - 1

    @classmethod
    def levels(cls, nfe: int, options) -> int:
        return (nfe + 1) // 2  # the largest N with 2 N - 1 <= nfe


class AbstractSecondOrderFlow(AbstractTwoStage, AbstractFlow):
    """Heun steps (two evaluations) down the grid; the last step, to sigma = 0 where the slope
    is undefined, is Euler's (Karras et al. 2022, Alg. 1, line 8): ``2 N - 1`` evaluations."""


class Heun(AbstractSecondOrderFlow):
    """Heun's method on the probability-flow ODE (:func:`heun`)."""

    kind: ClassVar[str] = "heun"

    def step(self, score_fn, x, inputs):
        (sigma, sigma_next), _ = inputs
        return _flow_step(score_fn, x, sigma, sigma_next, True), None

    def final_step(self, score_fn, x, inputs):
        (sigma, sigma_next), _ = inputs
        return _flow_step(score_fn, x, sigma, sigma_next, False), None


@checked_options
def euler(sigmas) -> Euler:
    r"""Euler's method on the probability-flow ODE in :math:`\sigma`.

    .. math::
        x_{i-1} = x_i + (\sigma_{i-1} - \sigma_i)\big(-\sigma_i\, s(x_i, \sigma_i)\big),
        \qquad i = N-1, \dots, 0, \quad \sigma_{-1} = 0.

    It equals :func:`ddim` with ``e = 0`` step for step (Karras et al., 2022, Sec. 4; tested),
    and converges with order 1 in the step.

    Args:
        sigmas: ``(N,)`` ascending grid.

    Returns:
        An :class:`Euler` with ``nfe = N``. Trajectory ``(N, *S)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` and the final sample. Draws nothing: ``noise``
        must be ``None`` or ``(0, *S)``.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels.

    References:
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 1 without its line 6. https://arxiv.org/abs/2206.00364
    """
    return Euler(check_sigmas(sigmas))


@checked_options
def heun(sigmas) -> Heun:
    r"""Heun's second-order method on the probability-flow ODE (Karras et al., 2022, Alg. 1).

    .. math::
        \tilde x = x_i + (\sigma_{i-1} - \sigma_i)\, d_i, \qquad
        x_{i-1} = x_i + (\sigma_{i-1} - \sigma_i)\, \tfrac12 \big(d_i + d(\tilde x,
        \sigma_{i-1})\big), \qquad d(x, \sigma) = -\sigma s(x, \sigma),

    for every step between levels; the last step, to :math:`\sigma = 0`, is Euler's. Order 2.

    Args:
        sigmas: ``(N,)`` ascending grid.

    Returns:
        A :class:`Heun` with ``nfe = 2 N - 1``; trajectory and ``noise`` as :func:`euler`.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels.

    References:
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 1. https://arxiv.org/abs/2206.00364
    """
    return Heun(check_sigmas(sigmas))


def edm_gammas(sigmas, s_churn: float, s_tmin: float = 0.0, s_tmax: float = math.inf) -> Array:
    r"""The churn :math:`\gamma_i` of every step, from the top level down, ``(N,)``.

    .. math::
        \gamma_i = \begin{cases} \min(S_\mathrm{churn} / N, \sqrt2 - 1) &
        \sigma_i \in [S_\mathrm{tmin}, S_\mathrm{tmax}] \\ 0 & \text{otherwise} \end{cases}

    (Karras et al., 2022, Alg. 2, line 4), with :math:`N` the number of levels (= steps).

    Args:
        sigmas: ``(N,)`` ascending grid.
        s_churn: :math:`S_\mathrm{churn} \ge 0`, the total churn (0: no noise added).
        s_tmin, s_tmax: the levels that get churn, ``0 <= s_tmin <= s_tmax``.

    Returns:
        ``(N,)`` array, ``gammas[j]`` for the level :math:`\sigma_{N-1-j}` (from the
        top down).

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels; unless ``s_churn >= 0`` and ``0 <= s_tmin <= s_tmax``.

    References:
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 2. https://arxiv.org/abs/2206.00364
    """
    sigmas = check_sigmas(sigmas)
    if not (s_churn >= 0 and 0 <= s_tmin <= s_tmax):
        raise ValueError(
            f"need s_churn >= 0 and 0 <= s_tmin <= s_tmax, got {s_churn}, {s_tmin}, {s_tmax}"
        )
    return _gammas(sigmas, jnp.asarray(s_churn), jnp.asarray(s_tmin), jnp.asarray(s_tmax))


def _gammas(sigmas: Array, s_churn: Array, s_tmin: Array, s_tmax: Array) -> Array:
    sigma_from = sigmas[::-1]
    gamma = jnp.minimum(s_churn / sigmas.shape[0], math.sqrt(2.0) - 1.0)
    inside = (sigma_from >= s_tmin) & (sigma_from <= s_tmax)
    return jnp.where(inside, gamma, 0.0).astype(sigmas.dtype)


def churn(x: Array, sigma, gamma, s_noise, z: Array) -> tuple[Array, Array]:
    r"""Raise the noise of ``x`` from :math:`\sigma` to :math:`\hat\sigma = (1 + \gamma)\sigma`
    (Karras et al., 2022, Alg. 2, lines 5-6): ``(x_hat, sigma_hat)`` with

    .. math::
        \hat x = x + \sqrt{\hat\sigma^2 - \sigma^2}\; S_\mathrm{noise}\, z.
    """
    # sqrt(sigma_hat^2 - sigma^2), written so that gamma = 0 gives exactly 0 (the
    # difference of squares can round below 0 under a fused multiply-add: NaN).
    raise_by = sigma * jnp.sqrt(gamma * (2.0 + gamma))
    return x + raise_by * s_noise * z, sigma * (1.0 + gamma)


class AbstractChurnFlow(AbstractFlow):
    """A flow solver after EDM's churn at every level (Karras et al. 2022, Alg. 2), one draw
    a step; k-diffusion's defaults (no churn). The last step, when it differs, is Euler's."""

    s_churn: Array = option(0.0, "total churn S_churn >= 0 (0: no noise added)", in_label=True)
    s_tmin: Array = option(0.0, "lowest level that gets churn, >= 0")
    s_tmax: Array = option(
        math.inf, "highest level that gets churn, >= s_tmin (inf: no bound)", unbounded=True
    )
    s_noise: Array = option(1.0, "inflation S_noise >= 0 of the churn's noise", usual=S_NOISE_USUAL)

    @property
    def draws_per_step(self) -> int:
        return 1

    def schedule(self):
        gammas = _gammas(self.sigmas, self.s_churn, self.s_tmin, self.s_tmax)
        return (*descending_steps(self.sigmas), gammas)

    def _churned(self, x: Array, inputs) -> tuple[Array, Array, Array]:
        """``(x_hat, sigma_hat, sigma_next)``: ``x`` after the step's churn (:func:`churn`)."""
        (sigma, sigma_next, gamma), noise = inputs
        return (*churn(x, sigma, gamma, self.s_noise, noise(0)), sigma_next)

    def final_step(self, score_fn, x, inputs):
        return _flow_step(score_fn, *self._churned(x, inputs), False), None


def _check_churn(sigmas, s_churn, s_tmin, s_tmax, s_noise) -> Array:
    sigmas = check_sigmas(sigmas)
    if not s_noise >= 0:
        raise ValueError(f"s_noise must be >= 0, got {s_noise}")
    edm_gammas(sigmas, s_churn, s_tmin, s_tmax)  # checks the churn settings
    return sigmas


class EDM(AbstractChurnFlow, AbstractSecondOrderFlow):
    """The stochastic EDM sampler (:func:`edm`), with EDM's churn defaults."""

    kind: ClassVar[str] = "edm"
    s_churn: Array = option(40.0, "EDM's total churn S_churn >= 0 (0: Heun)", in_label=True)
    s_tmin: Array = option(0.05, "lowest level that gets churn, >= 0")
    s_tmax: Array = option(
        50.0, "highest level that gets churn, >= s_tmin (inf: no bound)", unbounded=True
    )
    s_noise: Array = option(
        1.003, "inflation S_noise >= 0 of the churn's noise", usual=S_NOISE_USUAL
    )

    def step(self, score_fn, x, inputs):
        return _flow_step(score_fn, *self._churned(x, inputs), True), None


@checked_options
def edm(
    sigmas,
    s_churn: float = EDM.s_churn,
    s_tmin: float = EDM.s_tmin,
    s_tmax: float = EDM.s_tmax,
    s_noise: float = EDM.s_noise,
) -> EDM:
    r"""The stochastic EDM sampler (Karras et al., 2022, Alg. 2): churn, then a Heun step.

    At each level :math:`\sigma_i` (from the top) noise is added to reach
    :math:`\hat\sigma_i = (1 + \gamma_i)\sigma_i` (:func:`edm_gammas`),

    .. math::
        \hat x_i = x_i + \sqrt{\hat\sigma_i^2 - \sigma_i^2}\; S_\mathrm{noise}\, z_i,

    then :func:`heun`'s step goes from :math:`(\hat x_i, \hat\sigma_i)` to :math:`\sigma_{i-1}`
    (Euler on the last step, to 0). The defaults are EDM's ImageNet-64 settings (their
    Table 5); ``s_churn = 0`` is :func:`heun`.

    Args:
        sigmas: ``(N,)`` ascending grid.
        s_churn, s_tmin, s_tmax: how much noise to add and on which levels.
        s_noise: inflation of the added noise (> 1 offsets the denoiser's loss of detail).

    Returns:
        An :class:`EDM` with ``nfe = 2 N - 1``; trajectory as :func:`euler`; ``noise``
        ``(N, *S)``, row ``j`` for the churn at :math:`\sigma_{N-1-j}`.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels; for bad churn settings (:func:`edm_gammas`) or
            ``s_noise < 0``.

    References:
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 2. https://arxiv.org/abs/2206.00364
    """
    sigmas = _check_churn(sigmas, s_churn, s_tmin, s_tmax, s_noise)
    return EDM(sigmas, s_churn, s_tmin, s_tmax, s_noise)


class DPMpp2MState(NamedTuple):
    r"""A DPM-Solver++(2M) chain: position ``x``, the previous step's denoised value and
    :math:`\lambda`-step ``h``."""

    x: Array
    denoised_prev: Array
    h_prev: Array


class DPMpp2M(AbstractFlow):
    """DPM-Solver++(2M) (:func:`dpmpp_2m`)."""

    kind: ClassVar[str] = "dpmpp_2m"
    # Lower-order final step to sigma = 0: the data prediction itself (k-diffusion's
    # sample_dpmpp_2m: sigma_next = 0 takes the first-order update, which is D).
    has_final_step: ClassVar[bool] = True

    @property
    def nfe(self) -> int:
        return self.n_steps

    def schedule(self):
        sigma_from, sigma_to = descending_steps(self.sigmas)
        return sigma_from, sigma_to, jnp.arange(self.n_steps) == 0

    def init(self, score_fn, x: Array) -> DPMpp2MState:
        return DPMpp2MState(x, jnp.zeros_like(x), jnp.ones((), x.dtype))

    def position(self, state: DPMpp2MState) -> Array:
        return state.x

    def step(self, score_fn, state: DPMpp2MState, inputs):
        (sigma, sigma_next, is_first), _ = inputs
        x, denoised_prev, h_prev = state
        denoised = tweedie(score_fn, x, sigma)
        h = jnp.log(sigma) - jnp.log(sigma_next)  # step in lambda = -log sigma
        r = h_prev / h
        # Second-order multistep correction (Lu et al., 2022, Alg. 2); the first step is
        # first order (DDIM), having no previous denoised value.
        corrected = (1.0 + 0.5 / r) * denoised - (0.5 / r) * denoised_prev
        denoised_used = jnp.where(is_first, denoised, corrected)
        x = (sigma_next / sigma) * x - jnp.expm1(-h) * denoised_used
        return DPMpp2MState(x, denoised, h), None

    def final_step(self, score_fn, state: DPMpp2MState, inputs):
        (sigma, _, _), _ = inputs
        return state._replace(x=tweedie(score_fn, state.x, sigma)), None


@checked_options
def dpmpp_2m(sigmas) -> DPMpp2M:
    r"""DPM-Solver++(2M): second-order multistep solver for the data-prediction ODE in
    :math:`\lambda = -\log\sigma`.

    With :math:`h_i = \lambda_{i-1} - \lambda_i` and :math:`r_i = h_{i+1} / h_i`,

    .. math::
        x_{i-1} = \frac{\sigma_{i-1}}{\sigma_i} x_i - (e^{-h_i} - 1)
        \Big[\big(1 + \tfrac{1}{2 r_i}\big) D(x_i, \sigma_i)
        - \tfrac{1}{2 r_i} D(x_{i+1}, \sigma_{i+1})\Big],

    (Lu et al., 2022, Alg. 2 with :math:`\alpha = 1`); the first step uses
    :math:`D(x_{N-1}, \sigma_{N-1})` alone (DDIM), and the last, to :math:`\sigma = 0`, is
    the lower-order :math:`x = D(x_0, \sigma_0)`. Same updates as k-diffusion's
    ``sample_dpmpp_2m``. Order 2 between levels.

    Args:
        sigmas: ``(N,)`` ascending grid.

    Returns:
        A :class:`DPMpp2M` with ``nfe = N``; trajectory and ``noise`` as :func:`euler`.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels.

    References:
        Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models, Alg. 2. https://arxiv.org/abs/2211.01095
    """
    return DPMpp2M(check_sigmas(sigmas))
