r"""k-diffusion's flow samplers in :math:`\sigma`: Euler with churn, KDPM2 (and ancestral), LMS,
and DPM-Solver-1/2/3 with fixed steps.

All solve the probability-flow ODE :math:`dx/d\sigma = (x - D(x, \sigma))/\sigma` down the
grid (as :mod:`scorelab.samplers._ode`), the stochastic ones adding churn (Karras et al.,
2022, Alg. 2) or ancestral noise. Each matches the k-diffusion function it names
(``k_diffusion/sampling.py``; the diffusers-marked tests run it live).

References:
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    Lu, C., Zhou, Y., Bao, F., Chen, J., Li, C. & Zhu, J. (2022). DPM-Solver: A Fast ODE Solver
    for Diffusion Probabilistic Model Sampling in Around 10 Steps.
    https://arxiv.org/abs/2206.00927
    Crowson, K. (2022). k-diffusion, ``k_diffusion/sampling.py``.
    https://github.com/crowsonkb/k-diffusion
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab.samplers._core import check_sigmas, checked_options, descending_steps, option, tweedie
from scorelab.samplers._dpmpp import AbstractSinglestepDPMpp, _check, ancestral_step
from scorelab.samplers._ode import (
    AbstractChurnFlow,
    AbstractFlow,
    AbstractSecondOrderFlow,
    _check_churn,
    _flow_step,
)


def _slope(score_fn, x: Array, sigma) -> Array:
    r""":math:`dx/d\sigma = (x - D(x, \sigma)) / \sigma`, k-diffusion's ``to_d``."""
    return (x - tweedie(score_fn, x, sigma)) / sigma


def _dpm_2_step(score_fn, x: Array, sigma, sigma_next) -> Array:
    r"""DPM-Solver-2 in :math:`\sigma` (k-diffusion's form): Euler to the geometric midpoint
    :math:`\sqrt{\sigma \sigma'}`, then the full step with the midpoint's slope; Euler's
    step where :math:`\sigma' = 0` (k-diffusion's branch, as the midpoint is 0 there: the
    ancestral level of a wide step, whose slope at 0 made every chain NaN, pass 29 #2). The
    midpoint is then :math:`\sigma` itself, so its slope is Euler's, at the same 2
    evaluations."""
    to = jnp.where(sigma_next > 0, sigma_next, sigma)
    sigma_mid = jnp.exp(0.5 * (jnp.log(sigma) + jnp.log(to)))
    x_mid = x + (sigma_mid - sigma) * _slope(score_fn, x, sigma)
    return x + (sigma_next - sigma) * _slope(score_fn, x_mid, sigma_mid)


class EulerChurn(AbstractChurnFlow):
    """Euler steps after churn (:func:`euler_churn`)."""

    kind: ClassVar[str] = "euler_churn"

    @property
    def nfe(self) -> int:
        return self.n_steps

    def step(self, score_fn, x, inputs):
        return _flow_step(score_fn, *self._churned(x, inputs), False), None


class KDPM2(AbstractChurnFlow, AbstractSecondOrderFlow):
    """DPM-Solver-2 steps after churn, Euler's to 0 (:func:`dpm_2`); ``2 N - 1`` evaluations."""

    kind: ClassVar[str] = "dpm_2"

    def step(self, score_fn, x, inputs):
        return _dpm_2_step(score_fn, *self._churned(x, inputs)), None


class KDPM2Ancestral(AbstractSinglestepDPMpp):
    """DPM-Solver-2 steps to the ancestral level, then noise (:func:`dpm_2_ancestral`)."""

    kind: ClassVar[str] = "dpm_2_ancestral"

    @property
    def draws_per_step(self) -> int:
        return 1

    def step(self, score_fn, x, inputs):
        (sigma, sigma_next, _), noise = inputs
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        x = _dpm_2_step(score_fn, x, sigma, sigma_down)
        return x + noise(0, (sigma, sigma_next)) * self.s_noise * sigma_up, None


@checked_options
def euler_churn(
    sigmas,
    s_churn: float = AbstractChurnFlow.s_churn,
    s_tmin: float = AbstractChurnFlow.s_tmin,
    s_tmax: float = AbstractChurnFlow.s_tmax,
    s_noise: float = AbstractChurnFlow.s_noise,
) -> EulerChurn:
    r"""Euler with churn: EDM's stochastic sampler (Karras et al., 2022, Alg. 2) with Euler
    steps, k-diffusion's ``sample_euler``.

    At each level, :func:`scorelab.samplers.edm`'s churn raises the noise to
    :math:`\hat\sigma_i = (1 + \gamma_i)\sigma_i` (:func:`edm_gammas`), then

    .. math::
        x_{i-1} = \hat x_i + (\sigma_{i-1} - \hat\sigma_i)\,
        \frac{\hat x_i - D(\hat x_i, \hat\sigma_i)}{\hat\sigma_i}.

    ``s_churn = 0`` (the default, k-diffusion's) is :func:`scorelab.samplers.euler`.

    Args:
        sigmas: ``(N,)`` ascending grid.
        s_churn, s_tmin, s_tmax: how much noise to add and on which levels.
        s_noise: inflation of the churn's noise, ``>= 0``.

    Returns:
        An :class:`EulerChurn` with ``nfe = N``; trajectory ``(N, *S)`` (the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` and the final sample); ``noise`` ``(N, *S)``,
        row ``j`` for the churn at :math:`\sigma_{N-1-j}` (drawn even where
        :math:`\gamma = 0`, as k-diffusion does).

    Raises:
        ValueError: for a bad grid or churn settings, or ``s_noise < 0``.

    References:
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 2. https://arxiv.org/abs/2206.00364
    """
    sigmas = _check_churn(sigmas, s_churn, s_tmin, s_tmax, s_noise)
    return EulerChurn(sigmas, s_churn, s_tmin, s_tmax, s_noise)


@checked_options
def dpm_2(
    sigmas,
    s_churn: float = AbstractChurnFlow.s_churn,
    s_tmin: float = AbstractChurnFlow.s_tmin,
    s_tmax: float = AbstractChurnFlow.s_tmax,
    s_noise: float = AbstractChurnFlow.s_noise,
) -> KDPM2:
    r"""KDPM2: DPM-Solver-2 steps in :math:`\sigma` after EDM's churn, k-diffusion's
    ``sample_dpm_2``.

    After the churn to :math:`(\hat x_i, \hat\sigma_i)`, with :math:`d(x, \sigma) = (x -
    D(x, \sigma))/\sigma` and the geometric midpoint :math:`\sigma_m = \sqrt{\hat\sigma_i
    \sigma_{i-1}}`,

    .. math::
        u = \hat x_i + (\sigma_m - \hat\sigma_i)\, d(\hat x_i, \hat\sigma_i), \qquad
        x_{i-1} = \hat x_i + (\sigma_{i-1} - \hat\sigma_i)\, d(u, \sigma_m),

    and Euler's step on the last, to :math:`\sigma = 0`. Order 2 between levels.

    Args:
        sigmas: ``(N,)`` ascending grid.
        s_churn, s_tmin, s_tmax: how much noise to add and on which levels.
        s_noise: inflation of the churn's noise, ``>= 0``.

    Returns:
        A :class:`KDPM2` with ``nfe = 2 N - 1``; trajectory and ``noise`` as
        :func:`euler_churn`.

    Raises:
        ValueError: for a bad grid or churn settings, or ``s_noise < 0``.

    References:
        Lu, C. et al. (2022). DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model
        Sampling in Around 10 Steps, Alg. 1 (DPM-Solver-2). https://arxiv.org/abs/2206.00927
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 2. https://arxiv.org/abs/2206.00364
    """
    sigmas = _check_churn(sigmas, s_churn, s_tmin, s_tmax, s_noise)
    return KDPM2(sigmas, s_churn, s_tmin, s_tmax, s_noise)


@checked_options
def dpm_2_ancestral(
    sigmas,
    eta: float = KDPM2Ancestral.eta,
    s_noise: float = KDPM2Ancestral.s_noise,
    noise_sampler: str = KDPM2Ancestral.noise_sampler,
) -> KDPM2Ancestral:
    r"""KDPM2 ancestral: a DPM-Solver-2 step to :math:`\sigma_\downarrow`, then noise up to
    :math:`\sigma_{i-1}`, k-diffusion's ``sample_dpm_2_ancestral``.

    .. math::
        x_{i-1} = \mathrm{DPM2}(x_i;\, \sigma_i \to \sigma_\downarrow)
        + S_\mathrm{noise}\, \sigma_\uparrow z_i,

    with :math:`(\sigma_\downarrow, \sigma_\uparrow)` from
    :func:`scorelab.samplers.ancestral_step` and the DPM-Solver-2 step of :func:`dpm_2`;
    the last step, to 0, is Euler's (:math:`x = D(x_0, \sigma_0)`). ``eta = 0`` is
    :func:`dpm_2` without churn.

    Args:
        sigmas: ``(N,)`` ascending grid.
        eta: :math:`0 \le \eta \le 1`.
        s_noise: inflation of the added noise, ``>= 0``.
        noise_sampler: ``"gaussian"`` or ``"brownian"`` (:mod:`scorelab.samplers._brownian`).

    Returns:
        A :class:`KDPM2Ancestral` with ``nfe = 2 N - 1``; trajectory as :func:`euler_churn`;
        ``noise`` ``(N, *S)``, row ``j`` for the step leaving :math:`\sigma_{N-1-j}` (the last
        unused).

    Raises:
        ValueError: for a bad grid, ``eta`` outside ``[0, 1]``, ``s_noise < 0`` or an
            unknown ``noise_sampler``.

    References:
        Lu, C. et al. (2022). DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model
        Sampling in Around 10 Steps. https://arxiv.org/abs/2206.00927
        Crowson, K. (2022). k-diffusion, ``sample_dpm_2_ancestral``.
        https://github.com/crowsonkb/k-diffusion
    """
    sigmas = _check(sigmas, eta, s_noise, noise_sampler, max_eta=1.0)
    return KDPM2Ancestral(sigmas, noise_sampler, eta, s_noise)


# --- linear multistep ---------------------------------------------------------------------------


class LMSState(NamedTuple):
    r"""An LMS chain: position ``x`` and the last ``order`` slopes, newest first,
    ``(order, *S)``."""

    x: Array
    slopes: Array


def lms_coefficients(sigmas, order: int) -> Array:
    r"""The linear multistep weights of every step, ``(N, order)``, newest slope first.

    Step :math:`i` (from :math:`t_i` to :math:`t_{i+1}`, :math:`t` the descending grid then
    0) with :math:`p = \min(i + 1, \text{order})` past slopes integrates their Lagrange
    interpolant:

    .. math::
        c_{ij} = \int_{t_i}^{t_{i+1}} \prod_{k < p,\, k \ne j}
        \frac{\tau - t_{i-k}}{t_{i-j} - t_{i-k}}\, d\tau, \qquad j < p,

    by Gauss-Legendre with ``order`` nodes, exact for these polynomials of degree
    ``p - 1 < 2 order`` (k-diffusion's ``linear_multistep_coeff`` calls ``scipy.integrate.quad``
    per step; a closed rule is exact and traceable). Weights :math:`j \ge p` are 0.

    Args:
        sigmas: ``(N,)`` ascending grid.
        order: the number of slopes, ``1 <= order <= 4`` (Python int).

    Returns:
        ``(N, order)`` array.
    """
    sigma_from, sigma_to = descending_steps(sigmas)
    n = sigma_from.shape[0]
    nodes, weights = np.polynomial.legendre.leggauss(order)
    half = 0.5 * (sigma_to - sigma_from)  # (N,)
    taus = (sigma_from + sigma_to)[:, None] / 2 + half[:, None] * nodes  # (N, order)
    steps = jnp.arange(n)
    past = sigma_from[jnp.clip(steps[:, None] - jnp.arange(order), 0, None)]  # t_{i-k}, (N, order)
    coefficients = jnp.zeros((n, order), sigmas.dtype)
    for p in range(1, order + 1):
        columns = []
        for j in range(p):
            basis = jnp.ones_like(taus)
            for k in range(p):
                if k != j:
                    t_k, t_j = past[:, k, None], past[:, j, None]
                    basis = basis * (taus - t_k) / (t_j - t_k)
            columns.append(half * (basis @ weights))
        columns += [jnp.zeros(n, sigmas.dtype)] * (order - p)
        uses = jnp.minimum(steps + 1, order) == p
        coefficients = jnp.where(uses[:, None], jnp.stack(columns, axis=1), coefficients)
    return coefficients


class LMS(AbstractFlow):
    """Linear multistep on the probability-flow ODE (:func:`lms`)."""

    kind: ClassVar[str] = "lms"
    order: int = option(4, "number of past slopes, 1 to 4", type=int, in_label=True)

    @property
    def nfe(self) -> int:
        return self.n_steps

    def schedule(self):
        return (*descending_steps(self.sigmas), lms_coefficients(self.sigmas, self.order))

    def init(self, score_fn, x: Array) -> LMSState:
        return LMSState(x, jnp.zeros((self.order, *x.shape), x.dtype))

    def position(self, state: LMSState) -> Array:
        return state.x

    def step(self, score_fn, state: LMSState, inputs):
        (sigma, _, coefficients), _ = inputs
        slopes = jnp.concatenate([_slope(score_fn, state.x, sigma)[None], state.slopes[:-1]])
        x = state.x + jnp.tensordot(coefficients, slopes, axes=1)
        return LMSState(x, slopes), None


@checked_options
def lms(sigmas, order: int = LMS.order) -> LMS:
    r"""Linear multistep (Adams-Bashforth on a variable grid) on the probability-flow ODE in
    :math:`\sigma`, k-diffusion's ``sample_lms``.

    .. math::
        x_{i+1} = x_i + \sum_{j < p} c_{ij}\, d(x_{i-j}, t_{i-j}), \qquad
        d(x, \sigma) = \frac{x - D(x, \sigma)}{\sigma},

    with :math:`t` the descending grid then 0, :math:`p = \min(i + 1, \text{order})` and the
    weights of :func:`lms_coefficients`; the last step extrapolates the slopes to
    :math:`\sigma = 0` like every other. Order ``order`` between levels.

    Args:
        sigmas: ``(N,)`` ascending grid.
        order: the number of past slopes, ``1 <= order <= 4``.

    Returns:
        An :class:`LMS` with ``nfe = N``; trajectory ``(N, *S)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` and the final sample. Draws nothing.

    Raises:
        ValueError: for a bad grid or ``order`` outside 1..4.

    References:
        Crowson, K. (2022). k-diffusion, ``sample_lms``.
        https://github.com/crowsonkb/k-diffusion
        Hairer, E., Nørsett, S. P. & Wanner, G. (1993). Solving Ordinary Differential
        Equations I, Sec. III.5 (variable step size multistep methods). Springer.
    """
    sigmas = check_sigmas(sigmas)
    if isinstance(order, bool) or order not in (1, 2, 3, 4):
        raise ValueError(f"order must be 1, 2, 3 or 4, got {order}")
    return LMS(sigmas, int(order))


# --- DPM-Solver-1/2/3 ---------------------------------------------------------------------------


def dpm_solver_step(score_fn, x: Array, sigma, sigma_next, order: int) -> tuple[Array, Array]:
    r"""One DPM-Solver-``order`` step from ``sigma`` to ``sigma_next`` and its embedded
    lower-order solution: ``(x_next, x_low)``, ``order`` score evaluations.

    In :math:`\lambda = -\log\sigma` with the noise prediction :math:`\epsilon = (x - D)/\sigma`
    (Lu et al. 2022, Alg. 4-6 with :math:`\alpha = 1`): stages at :math:`r_1 = 1/2` for order
    2 and :math:`r_1 = 1/3, r_2 = 2/3` for order 3; ``x_low`` is DPM-Solver-1 for orders 1
    and 2, and DPM-Solver-2 at :math:`r_1 = 1/3` for order 3 (k-diffusion's adaptive pairs).

    Args:
        score_fn: ``score_fn(x, sigma)``.
        x: the state ``S`` at ``sigma``.
        sigma, sigma_next: scalars, ``sigma > sigma_next > 0``.
        order: 1, 2 or 3 (Python int).

    Returns:
        ``(x_next, x_low)``, each ``S``.
    """

    def eps(x, sigma):
        return (x - tweedie(score_fn, x, sigma)) / sigma

    h = jnp.log(sigma) - jnp.log(sigma_next)
    eps_0 = eps(x, sigma)
    first = x - sigma_next * jnp.expm1(h) * eps_0
    if order == 1:
        return first, first
    r1 = 0.5 if order == 2 else 1.0 / 3.0
    sigma_1 = sigma * jnp.exp(-r1 * h)
    u1 = x - sigma_1 * jnp.expm1(r1 * h) * eps_0
    eps_1 = eps(u1, sigma_1)
    second = first - sigma_next / (2.0 * r1) * jnp.expm1(h) * (eps_1 - eps_0)
    if order == 2:
        return second, first
    r2 = 2.0 / 3.0
    sigma_2 = sigma * jnp.exp(-r2 * h)
    phi = jnp.expm1(r2 * h) / (r2 * h) - 1.0
    u2 = x - sigma_2 * jnp.expm1(r2 * h) * eps_0 - sigma_2 * (r2 / r1) * phi * (eps_1 - eps_0)
    eps_2 = eps(u2, sigma_2)
    return first - sigma_next / r2 * (jnp.expm1(h) / h - 1.0) * (eps_2 - eps_0), second


class DPMSolver(AbstractFlow):
    """DPM-Solver-1/2/3 with the grid's steps (:func:`dpm_solver`)."""

    kind: ClassVar[str] = "dpm_solver"
    order: int = option(3, "the solver's order, 1 to 3 (evaluations per step)", type=int,
                        in_label=True)  # fmt: skip
    has_final_step: ClassVar[bool] = True

    @property
    def nfe(self) -> int:
        return self.order * (self.n_steps - 1) + 1

    @classmethod
    def levels(cls, nfe: int, options) -> int:
        return (nfe - 1) // options["order"] + 1  # the largest N with order (N - 1) + 1 <= nfe

    def step(self, score_fn, x, inputs):
        (sigma, sigma_next), _ = inputs
        return dpm_solver_step(score_fn, x, sigma, sigma_next, self.order)[0], None

    def final_step(self, score_fn, x, inputs):
        (sigma, _), _ = inputs
        return tweedie(score_fn, x, sigma), None


@checked_options
def dpm_solver(sigmas, order: int = DPMSolver.order) -> DPMSolver:
    r"""DPM-Solver-1, -2 or -3 (Lu et al., 2022) with fixed steps on the grid, the building
    block of k-diffusion's ``sample_dpm_fast``.

    In :math:`\lambda = -\log\sigma` with :math:`h = \lambda_{i-1} - \lambda_i` and
    :math:`\epsilon = (x - D(x, \sigma))/\sigma`, DPM-Solver-1 is

    .. math::
        x_{i-1} = x_i - \sigma_{i-1} (e^{h} - 1)\, \epsilon(x_i, \sigma_i),

    (DDIM), and DPM-Solver-2 and -3 add one and two intermediate stages at
    :math:`\lambda_i + r h` (:math:`r = 1/2`; :math:`1/3, 2/3`) with their exponential-
    integrator corrections (Alg. 4-6 of the paper). The last step, to :math:`\sigma = 0`,
    is :math:`x = D(x_0, \sigma_0)`. On a geometric grid (uniform in :math:`\lambda`) of
    ``N`` levels this is ``sample_dpm_fast``'s time-uniform scheme at one order. Order
    ``order`` between levels.

    Args:
        sigmas: ``(N,)`` ascending grid.
        order: 1, 2 or 3.

    Returns:
        A :class:`DPMSolver` with ``nfe = order (N - 1) + 1``; trajectory ``(N, *S)`` as
        :func:`lms`. Draws nothing.

    Raises:
        ValueError: for a bad grid or ``order`` outside 1..3.

    References:
        Lu, C., Zhou, Y., Bao, F., Chen, J., Li, C. & Zhu, J. (2022). DPM-Solver: A Fast ODE
        Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps, Alg. 4-6.
        https://arxiv.org/abs/2206.00927
    """
    sigmas = check_sigmas(sigmas)
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    return DPMSolver(sigmas, int(order))
