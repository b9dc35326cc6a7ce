r"""The DPM-Solver++ family beyond (2M): (3M), the 2M and 3M SDE solvers, DPM++ SDE, 2S ancestral.

Every solver here works with the denoiser :math:`D(x, \sigma) = x + \sigma^2 s(x, \sigma)` in
:math:`\lambda = -\log\sigma`, steps :math:`h = \lambda_{i-1} - \lambda_i`, on VE noise, and
lands on :math:`\sigma = 0` with the denoiser itself, as k-diffusion's functions of the same
names (``k_diffusion/sampling.py``, which the diffusers-marked tests run live). The stochastic
ones add noise :math:`\eta`-scaled as in Lu et al. (2022, App. B) or by ancestral steps, drawn
fresh or from one Brownian tree per chain (:mod:`scorelab.samplers._brownian`).

References:
    Lu, C., Zhou, Y., Bao, F., Chen, J., Li, C. & Zhu, J. (2022). DPM-Solver++: Fast Solver for
    Guided Sampling of Diffusion Probabilistic Models. https://arxiv.org/abs/2211.01095
    Crowson, K. (2022). k-diffusion, ``k_diffusion/sampling.py``.
    https://github.com/crowsonkb/k-diffusion
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import jax.numpy as jnp
from jax import Array

from scorelab.samplers._brownian import AbstractNoiseSampler, check_noise_sampler
from scorelab.samplers._core import (
    S_NOISE_USUAL,
    AbstractSampler,
    check_sigmas,
    checked_options,
    descending_steps,
    option,
    tweedie,
)
from scorelab.samplers._ode import AbstractFlow, AbstractTwoStage, DPMpp2MState

SOLVER_TYPES = ("midpoint", "heun")
"""The second-order corrections of :func:`dpmpp_2m_sde`."""


def ancestral_step(sigma, sigma_next, eta):
    r"""The ancestral split of a step (k-diffusion's ``get_ancestral_step``):
    ``(sigma_down, sigma_up)`` with

    .. math::
        \sigma_\uparrow = \min\Big(\sigma', \eta\,\sqrt{\sigma'^2 (\sigma^2 - \sigma'^2)
        / \sigma^2}\Big), \qquad \sigma_\downarrow = \sqrt{\sigma'^2 - \sigma_\uparrow^2}:

    a deterministic step to :math:`\sigma_\downarrow`, then noise :math:`\sigma_\uparrow z`
    back up to :math:`\sigma'`. Scalars in, scalars out; ``eta = 0`` gives
    ``(sigma_next, 0)`` exactly, and a clipped :math:`\sigma_\uparrow = \sigma'` gives
    :math:`\sigma_\downarrow = 0` exactly."""
    sigma_up = jnp.minimum(
        sigma_next, eta * jnp.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    )
    # Where sigma_up is clipped to sigma_next, sigma_down is 0 exactly, as k-diffusion's: the
    # difference of the squares, compiled (a fused multiply-add), is the rounding error of one
    # square, below 0 (NaN, every chain of dpmpp_sde at eta > 1 and of the ancestral DPM
    # solvers on a step wider than ~4000x, pass 29 #1) or above (a spurious level of ~1e-6).
    clipped = sigma_up >= sigma_next
    squares = jnp.where(clipped, 1.0, sigma_next**2 - sigma_up**2)  # no root of 0 to differentiate
    return jnp.where(clipped, 0.0, jnp.sqrt(jnp.maximum(squares, 0.0))), sigma_up


class AbstractDPMpp(AbstractNoiseSampler):
    """A stochastic DPM-Solver++ on the grid: ``eta`` and ``s_noise``, the last step to 0."""

    eta: Array = option(1.0, "stochasticity eta >= 0 (0: the deterministic solver)",
                        in_label=True)  # fmt: skip
    s_noise: Array = option(1.0, "inflation S_noise >= 0 of the added noise", usual=S_NOISE_USUAL)
    has_final_step: ClassVar[bool] = True

    @property
    def n_steps(self) -> int:
        return self.sigmas.shape[0]

    def schedule(self):
        return (*descending_steps(self.sigmas), jnp.arange(self.n_steps))


class DPMpp3MState(NamedTuple):
    r"""A DPM-Solver++(3M) chain: position ``x``, the two previous denoised values and their
    :math:`\lambda`-steps."""

    x: Array
    denoised_1: Array
    denoised_2: Array
    h_1: Array
    h_2: Array


def _init_3m(x: Array) -> DPMpp3MState:
    zeros, ones = jnp.zeros_like(x), jnp.ones((), x.dtype)
    return DPMpp3MState(x, zeros, zeros, ones, ones)


def _step_3m(score_fn, state: DPMpp3MState, sigma, sigma_next, index, eta):
    r"""The deterministic part of a DPM-Solver++(3M) SDE step (k-diffusion's
    ``sample_dpmpp_3m_sde``): ``(state, h)``, with 0, 1, 2 backward differences of D at steps
    0, 1, >= 2."""
    x, denoised_1, denoised_2, h_1, h_2 = state
    denoised = tweedie(score_fn, x, sigma)
    h = jnp.log(sigma) - jnp.log(sigma_next)
    h_eta = h * (eta + 1.0)
    x_next = jnp.exp(-h_eta) * x - jnp.expm1(-h_eta) * denoised
    phi_2 = jnp.expm1(-h_eta) / h_eta + 1.0
    phi_3 = phi_2 / h_eta - 0.5
    # Second order: one backward difference of D in lambda.
    r = h_1 / h
    second = phi_2 * (denoised - denoised_1) / r
    # Two backward differences (Lu et al.'s reference code; see dpmpp_3m on its order).
    r0, r1 = h_1 / h, h_2 / h
    d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    third = phi_2 * d1 - phi_3 * d2
    x_next = x_next + jnp.where(index >= 2, third, jnp.where(index == 1, second, 0.0))
    return DPMpp3MState(x_next, denoised, denoised_1, h, h_1), h


class AbstractMultistep(AbstractSampler):
    """A multistep solver on the grid: one evaluation a level, a state holding past denoised
    values, and the denoiser itself as the last step, to 0."""

    has_final_step: ClassVar[bool] = True

    @property
    def nfe(self) -> int:
        return self.n_steps

    def position(self, state) -> Array:
        return state.x

    def final_step(self, score_fn, state, inputs):
        (sigma, *_), _ = inputs
        return state._replace(x=tweedie(score_fn, state.x, sigma)), None


class DPMpp3M(AbstractMultistep, AbstractFlow):
    """DPM-Solver++(3M), deterministic (:func:`dpmpp_3m`)."""

    kind: ClassVar[str] = "dpmpp_3m"

    def schedule(self):
        return (*descending_steps(self.sigmas), jnp.arange(self.n_steps))

    def init(self, score_fn, x: Array) -> DPMpp3MState:
        return _init_3m(x)

    def step(self, score_fn, state, inputs):
        (sigma, sigma_next, index), _ = inputs
        return _step_3m(score_fn, state, sigma, sigma_next, index, 0.0)[0], None


class DPMpp3MSDE(AbstractMultistep, AbstractDPMpp):
    """DPM-Solver++(3M) SDE (:func:`dpmpp_3m_sde`)."""

    kind: ClassVar[str] = "dpmpp_3m_sde"

    def init(self, score_fn, x: Array) -> DPMpp3MState:
        return _init_3m(x)

    def step(self, score_fn, state, inputs):
        (sigma, sigma_next, index), noise = inputs
        state, h = _step_3m(score_fn, state, sigma, sigma_next, index, self.eta)
        scale = sigma_next * jnp.sqrt(-jnp.expm1(-2.0 * h * self.eta)) * self.s_noise
        return state._replace(x=state.x + scale * noise(0, (sigma, sigma_next))), None


class DPMpp2MSDE(AbstractMultistep, AbstractDPMpp):
    """DPM-Solver++(2M) SDE (:func:`dpmpp_2m_sde`)."""

    kind: ClassVar[str] = "dpmpp_2m_sde"
    solver_type: str = option("midpoint", "second-order correction: midpoint or heun",
                              type=str, choices=SOLVER_TYPES)  # fmt: skip

    def init(self, score_fn, x: Array) -> DPMpp2MState:
        return DPMpp2MState(x, jnp.zeros_like(x), jnp.ones((), x.dtype))

    def step(self, score_fn, state, inputs):
        (sigma, sigma_next, index), noise = inputs
        x, denoised_prev, h_prev = state
        denoised = tweedie(score_fn, x, sigma)
        h = jnp.log(sigma) - jnp.log(sigma_next)
        eta_h = self.eta * h
        one_minus = -jnp.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
        x = (sigma_next / sigma) * jnp.exp(-eta_h) * x + one_minus * denoised
        if self.solver_type == "heun":
            weight = one_minus / (-h - eta_h) + 1.0
        else:
            weight = 0.5 * one_minus
        correction = weight * (h / h_prev) * (denoised - denoised_prev)
        x = x + jnp.where(index >= 1, correction, 0.0)
        scale = sigma_next * jnp.sqrt(-jnp.expm1(-2.0 * eta_h)) * self.s_noise
        x = x + scale * noise(0, (sigma, sigma_next))
        return DPMpp2MState(x, denoised, h), None


class AbstractSinglestepDPMpp(AbstractTwoStage, AbstractDPMpp):
    """A two-stage DPM-Solver++ step between levels; the last, to 0, is the denoiser itself."""

    def final_step(self, score_fn, x, inputs):
        (sigma, _, _), _ = inputs
        return tweedie(score_fn, x, sigma), None


class DPMppSDE(AbstractSinglestepDPMpp):
    """DPM-Solver++ SDE, two stages a step (:func:`dpmpp_sde`)."""

    kind: ClassVar[str] = "dpmpp_sde"
    r: Array = option(0.5, "relative position r in (0, 1] of the intermediate stage in lambda")

    @property
    def draws_per_step(self) -> int:
        return 2

    def step(self, score_fn, x, inputs):
        (sigma, sigma_next, _), noise = inputs
        denoised = tweedie(score_fn, x, sigma)
        h = jnp.log(sigma) - jnp.log(sigma_next)
        sigma_s = sigma * jnp.exp(-self.r * h)  # the stage's level, lambda + r h
        # Stage 1: an ancestral first-order step to sigma_s.
        sigma_down, sigma_up = ancestral_step(sigma, sigma_s, self.eta)
        x_2 = (sigma_down / sigma) * x - jnp.expm1(jnp.log(sigma_down) - jnp.log(sigma)) * denoised
        x_2 = x_2 + noise(0, (sigma, sigma_s)) * self.s_noise * sigma_up
        denoised_2 = tweedie(score_fn, x_2, sigma_s)
        # Stage 2: the ancestral step to sigma_next with the combined denoised value.
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        fac = 0.5 / self.r
        denoised_d = (1.0 - fac) * denoised + fac * denoised_2
        x = (sigma_down / sigma) * x - jnp.expm1(jnp.log(sigma_down) - jnp.log(sigma)) * denoised_d
        return x + noise(1, (sigma, sigma_next)) * self.s_noise * sigma_up, None


class DPMpp2SAncestral(AbstractSinglestepDPMpp):
    """DPM-Solver++(2S) with ancestral noise (:func:`dpmpp_2s_ancestral`)."""

    kind: ClassVar[str] = "dpmpp_2s_ancestral"

    @property
    def draws_per_step(self) -> int:
        return 1

    def step(self, score_fn, x, inputs):
        (sigma, sigma_next, _), noise = inputs
        denoised = tweedie(score_fn, x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        h = jnp.log(sigma) - jnp.log(sigma_down)
        sigma_s = sigma * jnp.exp(-0.5 * h)  # the midpoint in lambda
        x_2 = (sigma_s / sigma) * x - jnp.expm1(-0.5 * h) * denoised
        denoised_2 = tweedie(score_fn, x_2, sigma_s)
        x = (sigma_down / sigma) * x - jnp.expm1(-h) * denoised_2
        return x + noise(0, (sigma, sigma_next)) * self.s_noise * sigma_up, None


def _check(sigmas, eta, s_noise, noise_sampler, max_eta=None) -> Array:
    sigmas = check_sigmas(sigmas)
    if not eta >= 0 or (max_eta is not None and eta > max_eta):
        limit = "" if max_eta is None else f" and <= {max_eta}"
        raise ValueError(f"eta must be >= 0{limit}, got {eta}")
    if not s_noise >= 0:
        raise ValueError(f"s_noise must be >= 0, got {s_noise}")
    check_noise_sampler(noise_sampler)
    return sigmas


@checked_options
def dpmpp_3m(sigmas) -> DPMpp3M:
    r"""DPM-Solver++(3M): the three-step multistep solver of the data-prediction ODE.

    With :math:`h = \lambda_{i-1} - \lambda_i`, :math:`\varphi_2(h) = (e^{-h} - 1)/h + 1`,
    :math:`\varphi_3 = \varphi_2 / h - \tfrac12` and backward differences
    :math:`d_1, d_2` of :math:`D` over the last three levels (rescaled by the step ratios),

    .. math::
        x_{i-1} = e^{-h} x_i + (1 - e^{-h})\, D(x_i, \sigma_i) + \varphi_2\, d_1
        - \varphi_3\, d_2,

    first and second order on the first two steps (no history), and :math:`x = D(x_0,
    \sigma_0)` on the last, to :math:`\sigma = 0`. It is :func:`dpmpp_3m_sde` with
    ``eta = 0`` (k-diffusion's ``sample_dpmpp_3m_sde(eta=0)``, matched to 1e-9).

    **Its order is 2, not 3.** The exact update's second-derivative term is
    :math:`-h^2 \varphi_3 D''`, but :math:`d_2` estimates :math:`h^2 D'' / 2` (the second
    divided difference), so the update carries half of it: one step from exact history has
    local error :math:`O(h^3)`, the solve :math:`O(h^2)` (both tested). The formula is the
    reference code's (Lu et al.'s ``multistep_dpm_solver_third_update``, k-diffusion,
    diffusers), kept for parity.

    Args:
        sigmas: ``(N,)`` ascending grid.

    Returns:
        A :class:`DPMpp3M` with ``nfe = N``; trajectory ``(N, *S)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` and the final sample. Draws nothing.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels.

    References:
        Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models, Sec. 4 and App. B. https://arxiv.org/abs/2211.01095
    """
    return DPMpp3M(check_sigmas(sigmas))


@checked_options
def dpmpp_3m_sde(
    sigmas,
    eta: float = DPMpp3MSDE.eta,
    s_noise: float = DPMpp3MSDE.s_noise,
    noise_sampler: str = DPMpp3MSDE.noise_sampler,
) -> DPMpp3MSDE:
    r"""DPM-Solver++(3M) SDE: :func:`dpmpp_3m`'s multistep update on the SDE with
    stochasticity :math:`\eta`.

    With :math:`h_\eta = (1 + \eta) h`, the update of :func:`dpmpp_3m` with :math:`h_\eta` in
    place of :math:`h`, plus the noise

    .. math::
        x_{i-1} \mathrel{+}= \sigma_{i-1} \sqrt{1 - e^{-2 \eta h}}\; S_\mathrm{noise}\, z_i;

    ``eta = 1`` solves the reverse SDE, ``eta = 0`` is :func:`dpmpp_3m`. The last step is
    :math:`x = D(x_0, \sigma_0)`. k-diffusion's ``sample_dpmpp_3m_sde``.

    Args:
        sigmas: ``(N,)`` ascending grid.
        eta: :math:`\eta \ge 0`.
        s_noise: inflation of the added noise, ``>= 0``.
        noise_sampler: ``"gaussian"`` (fresh draws) or ``"brownian"`` (one Brownian tree per
            chain, :mod:`scorelab.samplers._brownian`).

    Returns:
        A :class:`DPMpp3MSDE` with ``nfe = N``; trajectory as :func:`dpmpp_3m`; ``noise``
        ``(N, *S)``, row ``j`` for the step leaving :math:`\sigma_{N-1-j}` (the last unused).

    Raises:
        ValueError: for a bad grid, ``eta < 0``, ``s_noise < 0`` or an unknown
            ``noise_sampler``.

    References:
        Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models, App. B. https://arxiv.org/abs/2211.01095
        Crowson, K. (2023). k-diffusion, ``sample_dpmpp_3m_sde``.
        https://github.com/crowsonkb/k-diffusion
    """
    sigmas = _check(sigmas, eta, s_noise, noise_sampler)
    return DPMpp3MSDE(sigmas, noise_sampler, eta, s_noise)


@checked_options
def dpmpp_2m_sde(
    sigmas,
    eta: float = DPMpp2MSDE.eta,
    s_noise: float = DPMpp2MSDE.s_noise,
    noise_sampler: str = DPMpp2MSDE.noise_sampler,
    solver_type: str = DPMpp2MSDE.solver_type,
) -> DPMpp2MSDE:
    r"""DPM-Solver++(2M) SDE: the second-order multistep solver of the SDE in :math:`\lambda`.

    .. math::
        x_{i-1} = \frac{\sigma_{i-1}}{\sigma_i} e^{-\eta h} x_i + (1 - e^{-(1+\eta) h}) D_i
        + c\, \frac{h}{h_\mathrm{prev}} (D_i - D_{i+1})
        + \sigma_{i-1} \sqrt{1 - e^{-2 \eta h}}\; S_\mathrm{noise}\, z_i,

    with :math:`c = \tfrac12 (1 - e^{-(1+\eta) h})` (``"midpoint"``) or
    :math:`c = (1 - e^{-(1+\eta)h}) / (-(1+\eta) h) + 1` (``"heun"``), no correction on the
    first step and :math:`x = D(x_0, \sigma_0)` on the last. ``eta = 0`` with ``"midpoint"``
    is :func:`dpmpp_2m` (tested). k-diffusion's ``sample_dpmpp_2m_sde``.

    Args:
        sigmas: ``(N,)`` ascending grid.
        eta: :math:`\eta \ge 0`.
        s_noise: inflation of the added noise, ``>= 0``.
        noise_sampler: ``"gaussian"`` or ``"brownian"``.
        solver_type: ``"midpoint"`` or ``"heun"``.

    Returns:
        A :class:`DPMpp2MSDE` with ``nfe = N``; trajectory and ``noise`` as
        :func:`dpmpp_3m_sde`.

    Raises:
        ValueError: for a bad grid, ``eta < 0``, ``s_noise < 0``, an unknown
            ``noise_sampler`` or ``solver_type``.

    References:
        Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models, App. B. https://arxiv.org/abs/2211.01095
        Crowson, K. (2023). k-diffusion, ``sample_dpmpp_2m_sde``.
        https://github.com/crowsonkb/k-diffusion
    """
    sigmas = _check(sigmas, eta, s_noise, noise_sampler)
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"unknown solver_type {solver_type!r}; accepted: midpoint, heun")
    return DPMpp2MSDE(sigmas, noise_sampler, eta, s_noise, solver_type)


@checked_options
def dpmpp_sde(
    sigmas,
    eta: float = DPMppSDE.eta,
    s_noise: float = DPMppSDE.s_noise,
    noise_sampler: str = DPMppSDE.noise_sampler,
    r: float = DPMppSDE.r,
) -> DPMppSDE:
    r"""DPM-Solver++ SDE: a two-stage stochastic step per level (k-diffusion's
    ``sample_dpmpp_sde``).

    With :math:`\lambda_s = \lambda_i + r h`, stage 1 is the ancestral first-order step

    .. math::
        u = \frac{\sigma_\downarrow}{\sigma_i} x_i - (e^{\lambda_i - \lambda_\downarrow} - 1)
        D(x_i, \sigma_i) + S_\mathrm{noise}\, \sigma_\uparrow z_{i,1}

    to :math:`\sigma_s` (:func:`ancestral_step`), and stage 2 the ancestral step to
    :math:`\sigma_{i-1}` with :math:`(1 - \tfrac1{2r}) D(x_i, \sigma_i) + \tfrac1{2r} D(u,
    \sigma_s)` and noise :math:`z_{i,2}`. With ``noise_sampler="brownian"`` the two draws are
    increments of one path over :math:`[\sigma_s, \sigma_i]` and
    :math:`[\sigma_{i-1}, \sigma_i]`, correlated as Brownian motion is. The last step is
    :math:`x = D(x_0, \sigma_0)`. ``eta = 0``: DPM-Solver-2 in data prediction, order 2.

    Args:
        sigmas: ``(N,)`` ascending grid.
        eta: :math:`\eta \ge 0`.
        s_noise: inflation of the added noise, ``>= 0``.
        noise_sampler: ``"gaussian"`` or ``"brownian"``.
        r: the stage's position :math:`r \in (0, 1]`.

    Returns:
        A :class:`DPMppSDE` with ``nfe = 2 N - 1``; trajectory as :func:`dpmpp_3m`;
        ``noise`` ``(2 N, *S)``, rows ``2 j`` and ``2 j + 1`` for the two stages of the step
        leaving :math:`\sigma_{N-1-j}` (the last two unused).

    Raises:
        ValueError: for a bad grid, ``eta < 0``, ``s_noise < 0``, an unknown
            ``noise_sampler`` or ``r`` outside :math:`(0, 1]`.

    References:
        Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models, Alg. 1. https://arxiv.org/abs/2211.01095
        Crowson, K. (2022). k-diffusion, ``sample_dpmpp_sde``.
        https://github.com/crowsonkb/k-diffusion
    """
    sigmas = _check(sigmas, eta, s_noise, noise_sampler)
    if not 0 < r <= 1:
        raise ValueError(f"r must be in (0, 1], got {r}")
    return DPMppSDE(sigmas, noise_sampler, eta, s_noise, r)


@checked_options
def dpmpp_2s_ancestral(
    sigmas,
    eta: float = DPMpp2SAncestral.eta,
    s_noise: float = DPMpp2SAncestral.s_noise,
    noise_sampler: str = DPMpp2SAncestral.noise_sampler,
) -> DPMpp2SAncestral:
    r"""DPM-Solver++(2S) ancestral: a second-order singlestep data-prediction step to
    :math:`\sigma_\downarrow`, then noise up to :math:`\sigma_{i-1}` (k-diffusion's
    ``sample_dpmpp_2s_ancestral``).

    With :math:`(\sigma_\downarrow, \sigma_\uparrow)` = :func:`ancestral_step`,
    :math:`h = \log(\sigma_i / \sigma_\downarrow)` and the midpoint :math:`\sigma_s =
    \sigma_i e^{-h/2}`,

    .. math::
        u = \frac{\sigma_s}{\sigma_i} x_i - (e^{-h/2} - 1) D(x_i, \sigma_i), \qquad
        x_{i-1} = \frac{\sigma_\downarrow}{\sigma_i} x_i - (e^{-h} - 1) D(u, \sigma_s)
        + S_\mathrm{noise}\, \sigma_\uparrow z_i,

    and :math:`x = D(x_0, \sigma_0)` on the last step. ``eta = 0``: DPM-Solver++(2S),
    order 2.

    Args:
        sigmas: ``(N,)`` ascending grid.
        eta: :math:`0 \le \eta \le 1` (above 1 the step down could reach 0 before the last).
        s_noise: inflation of the added noise, ``>= 0``.
        noise_sampler: ``"gaussian"`` or ``"brownian"``.

    Returns:
        A :class:`DPMpp2SAncestral` with ``nfe = 2 N - 1``; trajectory and ``noise`` as
        :func:`dpmpp_3m_sde`.

    Raises:
        ValueError: for a bad grid, ``eta`` outside ``[0, 1]``, ``s_noise < 0`` or an
            unknown ``noise_sampler``.

    References:
        Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models, Alg. 1. https://arxiv.org/abs/2211.01095
        Crowson, K. (2022). k-diffusion, ``sample_dpmpp_2s_ancestral``.
        https://github.com/crowsonkb/k-diffusion
    """
    sigmas = _check(sigmas, eta, s_noise, noise_sampler, max_eta=1.0)
    return DPMpp2SAncestral(sigmas, noise_sampler, eta, s_noise)
