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

import diffrax
import jax.numpy as jnp
from jax import Array
from jax.tree_util import Partial

from scorelab.samplers._core import (
    Sampler,
    SamplerOutput,
    check_positive_int,
    check_sigmas,
    noise_source,
    tweedie,
)

ADAPTIVE_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
"""The adaptive solvers by name."""

# Both are 7-stage first-same-as-last pairs: every step (accepted or rejected) evaluates the
# field 6 times, plus once at the start. `tests/test_samplers_ode.py` checks this count against
# a counter inside the field.
_NEW_STAGES_PER_STEP = 6


def _adaptive_run(
    key: Array,
    score_fn,
    x_init: Array,
    trajectory: bool = False,
    noise=None,
    *,
    sigmas: Array,
    rtol: Array,
    atol: Array,
    solver,
    max_steps: int,
) -> SamplerOutput:
    noise_source(key, noise, 0, x_init)  # draws nothing; checks `noise`

    def field(u, x, args):
        sigma = jnp.exp(u)
        return -(sigma**2) * score_fn(x, sigma)

    log_sigmas = jnp.log(sigmas.astype(x_init.dtype))
    # With a trajectory, the states at the grid's lower levels come from the dense output:
    # no extra evaluations.
    save_at = diffrax.SaveAt(ts=log_sigmas[:-1][::-1]) if trajectory else diffrax.SaveAt(t1=True)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver,
        t0=log_sigmas[-1],
        t1=log_sigmas[0],
        dt0=None,
        y0=x_init,
        saveat=save_at,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    x = tweedie(score_fn, solution.ys[-1], sigmas[0])
    nfe = _NEW_STAGES_PER_STEP * solution.stats["num_steps"] + 1 + 1  # start, steps, denoiser
    x_all = jnp.concatenate([solution.ys, x[None]]) if trajectory else None
    return SamplerOutput(x, x_all, nfe)


def adaptive(
    sigmas, solver: str = "tsit5", rtol: float = 1e-3, atol: float = 1e-3, max_steps: int = 4096
) -> Sampler:
    r"""An adaptive 5(4) Runge-Kutta solve of the probability-flow ODE (diffrax), then Tweedie.

    Solves :math:`dx/du = x - D(x, e^u)` from :math:`u = \log\sigma_{N-1}` to
    :math:`\log\sigma_0` with a PID step-size controller (the module docstring says why
    :math:`\log\sigma`), then takes :math:`x = D(x, \sigma_0)`. Only the grid's end points set
    the solve; its other levels are where the trajectory is recorded.

    The number of score evaluations depends on the chain, so :attr:`Sampler.nfe` is ``None``
    and each chain reports its own in :attr:`SamplerOutput.nfe`: 6 per step, accepted or
    rejected, one at the start and one for the denoiser, counted from diffrax's
    ``stats["num_steps"]``. Under :func:`sample` the chains are batched, so the batch costs
    the largest chain's count; the per-chain count is what one chain alone would cost.

    Args:
        sigmas: ``(N,)`` ascending grid.
        solver: ``"tsit5"`` or ``"dopri5"``.
        rtol, atol: the controller's relative and absolute tolerances.
        max_steps: the most steps a solve may take (diffrax raises beyond).

    Returns:
        A :class:`Sampler` with ``nfe = None``. Trajectory ``(N, d)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` (dense output) and the final sample. Draws
        nothing: ``noise`` must be ``None`` or ``(0, d)``.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels; for an unknown ``solver`` (:data:`ADAPTIVE_SOLVERS`),
            ``rtol <= 0`` or ``atol <= 0``, or ``max_steps`` not a positive integer.

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
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got {rtol}, {atol}")
    run = Partial(
        _adaptive_run,
        sigmas=sigmas,
        rtol=jnp.float32(rtol),
        atol=jnp.float32(atol),
        solver=ADAPTIVE_SOLVERS[solver](),
        max_steps=check_positive_int("max_steps", max_steps),
    )
    return Sampler(f"{solver}(rtol={rtol}, atol={atol})", None, run)
