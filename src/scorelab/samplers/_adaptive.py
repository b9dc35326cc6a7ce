r"""Adaptive Runge-Kutta solvers of the probability-flow ODE through diffrax (Tsit5, Dopri5).

The ODE is solved in :math:`u = \log\sigma`,

.. math::
    \frac{dx}{du} = -\sigma^2 \nabla \log q_\sigma(x) = x - D(x, \sigma),
    \qquad \sigma = e^u,

from :math:`\sigma_{\max}` to :math:`\sigma_{\min}`, then :math:`x = D(x, \sigma_{\min})`. In
:math:`\log\sigma` the field is :math:`O(|x|)` at both ends (in :math:`\sigma` it is
:math:`(x - D)/\sigma`, stiff near 0), which is also why DPM-Solver steps in
:math:`\lambda = -\log\sigma`.

References:
    Kidger, P. (2021). On Neural Differential Equations (diffrax). https://arxiv.org/abs/2202.02435
    Tsitouras, C. (2011). Runge-Kutta pairs of order 5(4) satisfying only the first column
    simplifying assumption. https://doi.org/10.1016/j.camwa.2011.06.002
    Dormand, J. R. & Prince, P. J. (1980). A family of embedded Runge-Kutta formulae.
    https://doi.org/10.1016/0771-050X(80)90013-3
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jax import Array

from scorelab.samplers._core import (
    ATOL_USUAL,
    AbstractSampler,
    check_positive_int,
    check_sigmas,
    checked_options,
    format_label,
    option,
    tweedie,
)

ADAPTIVE_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
"""The adaptive solvers by name."""

# Both are 7-stage first-same-as-last pairs: every step (accepted or rejected) evaluates the
# field 6 times, plus once at the start. `tests/test_samplers_ode.py` checks this count against
# a counter inside the field.
_NEW_STAGES_PER_STEP = 6


class AdaptiveState(NamedTuple):
    r"""A chain of an adaptive solve: its position ``x`` and the states at the grid's lower
    levels :math:`\sigma_{N-2}, \dots, \sigma_0` (dense output), ``(N - 1, *S)``."""

    x: Array
    path: Array


class AdaptiveInfo(NamedTuple):
    """The score evaluations of a step: ``nfe``, a scalar int."""

    nfe: Array


class AbstractAdaptive(AbstractSampler):
    """A solve whose steps are chosen as it goes: one step, the whole solve from the grid's top
    to its bottom, then Tweedie's denoiser as the final step; its cost is per chain."""

    has_final_step: ClassVar[bool] = True
    sigmas: Array

    @property
    def n_steps(self) -> int:
        return 2

    @property
    def draws_per_step(self) -> int:
        return 0

    @property
    def nfe(self) -> None:
        return None

    @classmethod
    def levels(cls, nfe: int, options) -> None:
        return None

    def schedule(self):
        r"""The solve :math:`\sigma_{N-1} \to \sigma_0`, then the denoiser at :math:`\sigma_0`."""
        return self.sigmas[jnp.array([-1, 0])], self.sigmas[jnp.array([0, 0])]


class AdaptiveODE(AbstractAdaptive):
    """An adaptive Runge-Kutta solve of the probability-flow ODE (:func:`adaptive`): one
    step, the whole diffrax solve, then Tweedie's denoiser as the final step."""

    kind: ClassVar[str] = "adaptive"
    solver: str = eqx.field(static=True)
    rtol: Array = option(1e-3, "relative tolerance of the step-size controller", in_label=True)
    atol: Array = option(
        1e-3,
        "absolute tolerance of the step-size controller",
        in_label=True,
        usual=ATOL_USUAL,
    )
    max_steps: int = option(4096, "the most steps a solve may take", type=int)

    @property
    def name(self) -> str:
        """The solver's name and tolerances, e.g. ``"tsit5(rtol=0.001, atol=0.001)"``."""
        return format_label(self.solver, type(self), self.option_values())

    def init(self, score_fn, x: Array) -> AdaptiveState:
        return AdaptiveState(x, jnp.zeros((self.sigmas.shape[0] - 1, *x.shape), x.dtype))

    def position(self, state: AdaptiveState) -> Array:
        return state.x

    def records(self, state: AdaptiveState) -> Array:
        return state.path

    def step(self, score_fn, state: AdaptiveState, inputs):
        def field(u, x, args):
            sigma = jnp.exp(u)
            return -(sigma**2) * score_fn(x, sigma)

        (sigma_from, sigma_to), _ = inputs
        x = state.x
        log_sigmas = jnp.log(self.sigmas.astype(x.dtype))
        # The states at the grid's lower levels come from the dense output: no extra
        # evaluations; the last of them is the solution at t1 itself.
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            ADAPTIVE_SOLVERS[self.solver](),
            t0=jnp.log(sigma_from.astype(x.dtype)),
            t1=jnp.log(sigma_to.astype(x.dtype)),
            dt0=None,
            y0=x,
            saveat=diffrax.SaveAt(ts=log_sigmas[:-1][::-1]),
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            max_steps=self.max_steps,
        )
        nfe = _NEW_STAGES_PER_STEP * solution.stats["num_steps"] + 1  # start, steps
        return AdaptiveState(solution.ys[-1], solution.ys), AdaptiveInfo(nfe)

    def final_step(self, score_fn, state: AdaptiveState, inputs):
        (sigma, _), _ = inputs
        x = tweedie(score_fn, state.x, sigma)
        return AdaptiveState(x, state.path), AdaptiveInfo(jnp.ones((), jnp.int32))


def adaptive(
    sigmas,
    solver: str = "tsit5",
    rtol: float = AdaptiveODE.rtol,
    atol: float = AdaptiveODE.atol,
    max_steps: int = AdaptiveODE.max_steps,
) -> AdaptiveODE:
    r"""An adaptive 5(4) Runge-Kutta solve of the probability-flow ODE (diffrax), then Tweedie.

    Solves :math:`dx/du = x - D(x, e^u)` from :math:`u = \log\sigma_{N-1}` to
    :math:`\log\sigma_0` with a PID step-size controller (the module docstring says why
    :math:`\log\sigma`), then takes :math:`x = D(x, \sigma_0)`. Only the grid's end points set
    the solve; its other levels are where the trajectory is recorded. :func:`tsit5` and
    :func:`dopri5` are this with their solver.

    The number of score evaluations depends on the chain, so :attr:`AdaptiveODE.nfe` is
    ``None`` and each chain reports its own in :attr:`SamplerOutput.nfe`: 6 per step, accepted
    or rejected, one at the start and one for the denoiser, counted from diffrax's
    ``stats["num_steps"]``. Under :func:`sample` the chains are batched, so the batch costs
    the largest chain's count; the per-chain count is what one chain alone would cost.

    Args:
        sigmas: ``(N,)`` ascending grid.
        solver: ``"tsit5"`` or ``"dopri5"`` (:data:`ADAPTIVE_SOLVERS`).
        rtol, atol: the controller's relative and absolute tolerances.
        max_steps: the most steps a solve may take (diffrax raises beyond).

    Returns:
        An :class:`AdaptiveODE` with ``nfe = None``. Trajectory ``(N, *S)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` (dense output) and the final sample. Draws
        nothing: ``noise`` must be ``None`` or ``(0, *S)``.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels; for an unknown ``solver``, ``rtol`` outside (0, 1), ``atol <= 0``,
            or ``max_steps`` not a positive integer.

    References:
        Kidger, P. (2021). On Neural Differential Equations (diffrax).
        https://arxiv.org/abs/2202.02435
        Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
        Differential Equations, Sec. 4.3 (RK45 on the probability-flow ODE).
        https://arxiv.org/abs/2011.13456
    """
    sigmas = check_sigmas(sigmas)
    if solver not in ADAPTIVE_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; accepted: {', '.join(ADAPTIVE_SOLVERS)}")
    if not (0 < rtol < 1 and atol > 0):
        # A relative tolerance of 1 or more accepts a step that changes x by all of x.
        raise ValueError(f"need 0 < rtol < 1 and atol > 0, got {rtol}, {atol}")
    return AdaptiveODE(sigmas, solver, rtol, atol, check_positive_int("max_steps", max_steps))


@checked_options
def tsit5(
    sigmas,
    rtol: float = AdaptiveODE.rtol,
    atol: float = AdaptiveODE.atol,
    max_steps: int = AdaptiveODE.max_steps,
) -> AdaptiveODE:
    """:func:`adaptive` with Tsitouras' 5(4) pair (diffrax's ``Tsit5``).

    References:
        Tsitouras, C. (2011). Runge-Kutta pairs of order 5(4) satisfying only the first column
        simplifying assumption. https://doi.org/10.1016/j.camwa.2011.06.002
    """
    return adaptive(sigmas, "tsit5", rtol, atol, max_steps)


@checked_options
def dopri5(
    sigmas,
    rtol: float = AdaptiveODE.rtol,
    atol: float = AdaptiveODE.atol,
    max_steps: int = AdaptiveODE.max_steps,
) -> AdaptiveODE:
    """:func:`adaptive` with the Dormand-Prince 5(4) pair (diffrax's ``Dopri5``).

    References:
        Dormand, J. R. & Prince, P. J. (1980). A family of embedded Runge-Kutta formulae.
        https://doi.org/10.1016/0771-050X(80)90013-3
    """
    return adaptive(sigmas, "dopri5", rtol, atol, max_steps)
