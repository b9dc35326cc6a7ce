r"""DPM-Solver-12 and -23 with adaptive steps and PID step-size control (k-diffusion's
``sample_dpm_adaptive``).

In :math:`\lambda = -\log\sigma`, each attempted step :math:`s \to t = \min(\lambda_{\rm end},
s + h)` takes a lower- and a higher-order DPM-Solver step (1 and 2, or 2 with
:math:`r_1 = 1/3` and 3, sharing their evaluations: ``order`` evaluations an attempt), scores
their difference

.. math::
    e = \frac{1}{\sqrt{n}} \Big\lVert \frac{x_{\rm low} - x_{\rm high}}
    {\max(a_{\rm tol},\, r_{\rm tol} \max(|x_{\rm low}|, |x_{\rm prev}|))} \Big\rVert,

and lets a PID controller on :math:`1/e` propose the next :math:`h` (Lu et al., 2022,
Alg. 2 with Söderlind's digital filter): with :math:`\varepsilon_k = 1/(e_k + 10^{-8})`,

.. math::
    f = 1 + \arctan\!\big(\varepsilon_0^{\beta_1} \varepsilon_1^{\beta_2}
    \varepsilon_2^{\beta_3} - 1\big), \qquad
    \beta_1 = \tfrac{k_P + k_I + k_D}{p}, \ \beta_2 = -\tfrac{k_P + 2 k_D}{p}, \
    \beta_3 = \tfrac{k_D}{p},

:math:`h \leftarrow f h`, the step accepted when :math:`f \ge` ``accept_safety``. Hand-written
because diffrax's adaptive solvers are Runge-Kutta pairs in :math:`x`, not these exponential
integrators with this error norm and limiter, and parity with k-diffusion needs both.

References:
    Lu, C., Zhou, Y., Bao, F., Chen, J., Li, C. & Zhu, J. (2022). DPM-Solver: A Fast ODE Solver
    for Diffusion Probabilistic Model Sampling in Around 10 Steps, Sec. 3.4 and App. C.
    https://arxiv.org/abs/2206.00927
    Söderlind, G. (2003). Digital filters in adaptive time-stepping. ACM TOMS 29(1), 1-26.
    https://doi.org/10.1145/641876.641877
    Crowson, K. (2022). k-diffusion, ``PIDStepSizeController`` and ``sample_dpm_adaptive``.
    https://github.com/crowsonkb/k-diffusion
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from scorelab._validate import check_real
from scorelab.samplers._adaptive import AbstractAdaptive
from scorelab.samplers._core import (
    ATOL_USUAL,
    check_positive_int,
    check_sigmas,
    checked_options,
    option,
    tweedie,
)
from scorelab.samplers._kdpm import dpm_solver_step

END_SLACK = 1e-5
"""The solve stops once :math:`\\lambda` is within this of its end (k-diffusion's)."""

INVERSE_ERROR_EPS = 1e-8
"""Added to the error before inverting it (k-diffusion's ``eps``)."""


class DPMAdaptiveState(NamedTuple):
    """A chain of an adaptive DPM-Solver solve: its position ``x``."""

    x: Array


class DPMAdaptiveInfo(NamedTuple):
    """A chain's cost, scalar ints summed over its steps: score evaluations ``nfe``, and the
    accepted and rejected attempts."""

    nfe: Array
    n_accept: Array
    n_reject: Array


class _Controller(NamedTuple):
    lam: Array  # where the solve is, lambda = -log sigma
    h: Array  # the next attempted step
    x: Array
    x_prev: Array  # the last accepted lower-order solution (the error's scale)
    inverse_errors: Array  # (3,): 1/e now, at the last and the one before accepted attempts
    started: Array  # whether inverse_errors holds any
    n_accept: Array
    n_reject: Array


class DPMAdaptive(AbstractAdaptive):
    """DPM-Solver-12/23 with PID step-size control (:func:`dpm_adaptive`): one step, the whole
    solve from the grid's top to its bottom, then Tweedie's denoiser as the final step."""

    kind: ClassVar[str] = "dpm_adaptive"
    order: int = option(3, "the higher order of the pair: 2 (DPM-Solver-12) or 3 (-23)",
                        type=int)  # fmt: skip
    rtol: Array = option(0.05, "relative tolerance of the error norm", in_label=True)
    atol: Array = option(
        0.0078, "absolute tolerance of the error norm", in_label=True, usual=ATOL_USUAL
    )
    h_init: Array = option(0.05, "first attempted step in lambda = -log sigma, > 0")
    pcoeff: Array = option(0.0, "proportional coefficient of the PID controller")
    icoeff: Array = option(1.0, "integral coefficient of the PID controller")
    dcoeff: Array = option(0.0, "derivative coefficient of the PID controller")
    accept_safety: Array = option(0.81, "accept an attempt when the step factor is >= this")
    max_steps: int = option(4096, "the most attempts a solve may take", type=int)

    def init(self, score_fn, x: Array) -> DPMAdaptiveState:
        return DPMAdaptiveState(x)

    def position(self, state: DPMAdaptiveState) -> Array:
        return state.x

    def step(self, score_fn, state: DPMAdaptiveState, inputs):
        (sigma_from, sigma_to), _ = inputs
        x = state.x
        lam_end = -jnp.log(sigma_to)
        p, i, d = self.pcoeff, self.icoeff, self.dcoeff
        betas = jnp.stack([p + i + d, -(p + 2.0 * d), d]) / self.order

        def attempt(c: _Controller) -> _Controller:
            lam_next = jnp.minimum(lam_end, c.lam + c.h)
            sigma, sigma_next = jnp.exp(-c.lam), jnp.exp(-lam_next)
            x_high, x_low = dpm_solver_step(score_fn, c.x, sigma, sigma_next, self.order)
            scale = jnp.maximum(jnp.abs(x_low), jnp.abs(c.x_prev))
            delta = jnp.maximum(self.atol, self.rtol * scale)
            error = jnp.linalg.norm((x_low - x_high) / delta) / jnp.sqrt(x.size)
            inverse = 1.0 / (error + INVERSE_ERROR_EPS)
            errors = jnp.where(c.started, c.inverse_errors.at[0].set(inverse), inverse)
            factor = jnp.prod(errors**betas)
            factor = 1.0 + jnp.arctan(factor - 1.0)  # the limiter
            accept = factor >= self.accept_safety
            errors = jnp.where(accept, jnp.stack([errors[0], errors[0], errors[1]]), errors)
            return _Controller(
                jnp.where(accept, lam_next, c.lam), c.h * factor,
                jnp.where(accept, x_high, c.x), jnp.where(accept, x_low, c.x_prev),
                errors, jnp.ones((), bool),
                c.n_accept + accept, c.n_reject + (1 - accept),
            )  # fmt: skip

        def running(c: _Controller):
            return (c.lam < lam_end - END_SLACK) & (c.n_accept + c.n_reject < self.max_steps)

        zero = jnp.zeros((), jnp.int32)
        lam = -jnp.log(sigma_from)
        start = _Controller(lam, jnp.asarray(self.h_init, lam.dtype), x, x,
                            jnp.ones(3, lam.dtype), jnp.zeros((), bool), zero, zero)  # fmt: skip
        end = jax.lax.while_loop(running, attempt, start)
        x = eqx.error_if(
            end.x, end.lam < lam_end - END_SLACK,
            "dpm_adaptive: max_steps attempts did not reach sigma_0; raise max_steps",
        )  # fmt: skip
        attempts = end.n_accept + end.n_reject
        return DPMAdaptiveState(x), DPMAdaptiveInfo(self.order * attempts, end.n_accept,
                                                    end.n_reject)  # fmt: skip

    def final_step(self, score_fn, state: DPMAdaptiveState, inputs):
        (sigma, _), _ = inputs
        one, zero = jnp.ones((), jnp.int32), jnp.zeros((), jnp.int32)
        return DPMAdaptiveState(tweedie(score_fn, state.x, sigma)), DPMAdaptiveInfo(one, zero, zero)


@checked_options
def dpm_adaptive(
    sigmas,
    order: int = DPMAdaptive.order,
    rtol: float = DPMAdaptive.rtol,
    atol: float = DPMAdaptive.atol,
    h_init: float = DPMAdaptive.h_init,
    pcoeff: float = DPMAdaptive.pcoeff,
    icoeff: float = DPMAdaptive.icoeff,
    dcoeff: float = DPMAdaptive.dcoeff,
    accept_safety: float = DPMAdaptive.accept_safety,
    max_steps: int = DPMAdaptive.max_steps,
) -> DPMAdaptive:
    r"""DPM-Solver-12 / -23 with adaptive steps in :math:`\lambda` under PID control, from
    :math:`\sigma_{N-1}` to :math:`\sigma_0`, then :math:`x = D(x, \sigma_0)`.

    The module docstring gives the error norm and the controller; the defaults are
    k-diffusion's (an integral controller, ``rtol = 0.05``, ``atol = 0.0078``: about one
    8-bit level on data in [-1, 1]). Only the grid's end points set the solve. Deterministic
    (k-diffusion's ``eta`` is not offered).

    The number of score evaluations depends on the chain: :attr:`DPMAdaptive.nfe` is ``None``
    and :attr:`SamplerOutput.nfe` holds each chain's, ``order`` per attempt (accepted or
    rejected) plus one for the denoiser; :attr:`SamplerOutput.info` also counts the accepted
    and rejected attempts. Each chain controls its own step, where k-diffusion takes one
    error norm over the whole batch (the tests compare chain by chain).

    The solve is a ``lax.while_loop``, so it has forward-mode derivatives (``jax.jvp``) but
    no reverse-mode ones (``jax.grad`` through it fails in JAX); differentiate through
    ``tsit5``/``dopri5`` (:func:`adaptive`, diffrax's adjoint) or a fixed-step solver.

    Args:
        sigmas: ``(N,)`` ascending grid.
        order: 2 (DPM-Solver-1 inside -2) or 3 (-2 with :math:`r_1 = 1/3` inside -3).
        rtol, atol: the error norm's tolerances, in (0, 1) and ``>= 0``.
        h_init: the first attempted step in :math:`\lambda`, finite and ``> 0``.
        pcoeff, icoeff, dcoeff: the PID coefficients :math:`k_P, k_I, k_D`, finite;
            ``pcoeff >= 0``, ``icoeff > 0``, ``dcoeff >= 0`` (k-diffusion's are 0, 1, 0, an
            integral controller; PID gains are typically in [0, 1]).
        accept_safety: accept an attempt when its step factor is at least this, in (0, 1].
        max_steps: the most attempts; a chain that needs more raises.

    Returns:
        A :class:`DPMAdaptive` with ``nfe = None``. Trajectory ``(2, *S)``: the state at
        :math:`\sigma_0` and the final sample. Draws nothing.

    Raises:
        ValueError: for a bad grid, ``order`` not 2 or 3, ``rtol`` outside (0, 1), ``atol < 0``,
            ``h_init`` not finite and ``> 0``, ``icoeff`` not finite and ``> 0``, ``pcoeff`` or
            ``dcoeff`` not finite and ``>= 0``, ``accept_safety`` outside (0, 1] or
            ``max_steps`` not a positive integer. Each is checked here: a NaN or infinite
            coefficient otherwise stalled the controller, and the solve then failed at
            ``max_steps`` with advice to raise it.

    References:
        Lu, C. et al. (2022). DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model
        Sampling in Around 10 Steps, Sec. 3.4. https://arxiv.org/abs/2206.00927
        Crowson, K. (2022). k-diffusion, ``sample_dpm_adaptive``.
        https://github.com/crowsonkb/k-diffusion
    """
    sigmas = check_sigmas(sigmas)
    if isinstance(order, bool) or order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order}")
    if not (0 < rtol < 1 and atol >= 0 and h_init > 0):
        # A relative tolerance of 1 or more accepts a step that changes x by all of x.
        raise ValueError(
            f"need 0 < rtol < 1, atol >= 0 and h_init > 0, got {rtol}, {atol}, {h_init}"
        )
    if not icoeff > 0:
        # Under constant errors e the step factor is e^(-icoeff / order): with icoeff <= 0 a
        # step that meets the tolerance never grows and one that misses it never shrinks.
        raise ValueError(f"icoeff must be > 0 (the integral gain), got {icoeff}")
    # inf passed the comparisons above, NaN or negative P and D gains were not checked: each
    # stalled the controller, and the solve then blamed max_steps.
    check_real("h_init", h_init, "a number > 0", lambda v: v > 0)
    check_real("icoeff", icoeff, "a number > 0", lambda v: v > 0)
    check_real("pcoeff", pcoeff, "a number >= 0", lambda v: v >= 0)
    check_real("dcoeff", dcoeff, "a number >= 0", lambda v: v >= 0)
    if not 0 < accept_safety <= 1:
        # Above 1 an attempt is accepted only if the step grows: the solve stalls.
        raise ValueError(f"accept_safety must be in (0, 1], got {accept_safety}")
    return DPMAdaptive(
        sigmas, int(order), rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety,
        check_positive_int("max_steps", max_steps),
    )  # fmt: skip
