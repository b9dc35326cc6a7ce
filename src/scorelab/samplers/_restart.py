r"""Restart sampling (Xu et al., 2023): Heun's ODE steps, with forward jumps that restart an
interval :math:`[\sigma_\mathrm{min}^R, \sigma_\mathrm{max}^R]` several times.

The main backward process is :func:`scorelab.samplers.heun` down the grid. When it reaches
the level :math:`t_\mathrm{min}` (the grid level nearest ``restart_sigma_min``), the Restart
loop runs ``n_restarts`` times (their Alg. 1):

.. math::
    x \leftarrow x + \sqrt{t_\mathrm{max}^2 - t_\mathrm{min}^2}\; z, \quad z \sim
    \mathcal{N}(0, I), \qquad x \leftarrow \text{ODE-solve}(x, t_\mathrm{max} \to
    t_\mathrm{min}) \text{ in } N_R \text{ Heun steps},

the forward jump adding exactly the noise of :math:`q_{t_\mathrm{max}} = q_{t_\mathrm{min}} *
\mathcal{N}(0, (t_\mathrm{max}^2 - t_\mathrm{min}^2) I)`, so the jump contracts the error
accumulated so far (their Theorem 2) while the ODE steps add little; then the main process
continues to 0. The restart steps follow EDM's :math:`\rho = 7` spacing between
:math:`t_\mathrm{max}` and :math:`t_\mathrm{min}`, as their code does.

Hand-written: neither diffusers nor k-diffusion has it; it is a flat schedule of Heun steps
(some preceded by a jump) on scorelab's driver.

References:
    Xu, Y., Deng, M., Cheng, X., Tian, Y., Liu, Z. & Jaakkola, T. (2023). Restart Sampling for
    Improving Generative Processes, Alg. 1. https://arxiv.org/abs/2306.14878
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from jax import Array

from scorelab.samplers._core import (
    check_positive_int,
    check_sigmas,
    checked_options,
    descending_steps,
    option,
)
from scorelab.samplers._ode import AbstractSecondOrderFlow, _flow_step

RESTART_RHO = 7.0
"""The spacing of the restart steps (EDM's :math:`\\rho`)."""


def restart_levels(t_min, t_max, n_steps: int) -> Array:
    r"""``(n_steps + 1,)`` levels from ``t_max`` down to ``t_min``, EDM's :math:`\rho = 7`
    spacing: :math:`(t_\mathrm{max}^{1/\rho} + \tfrac{j}{n}(t_\mathrm{min}^{1/\rho} -
    t_\mathrm{max}^{1/\rho}))^\rho`."""
    ramp = jnp.arange(n_steps + 1, dtype=jnp.result_type(t_min)) / n_steps
    lo, hi = t_min ** (1.0 / RESTART_RHO), t_max ** (1.0 / RESTART_RHO)
    return (hi + ramp * (lo - hi)) ** RESTART_RHO


class Restart(AbstractSecondOrderFlow):
    """Restart sampling (:func:`restart`)."""

    kind: ClassVar[str] = "restart"
    restart_sigma_min: Array = option(0.06, "the restart interval's bottom (nearest grid level)")
    restart_sigma_max: Array = option(0.3, "the restart interval's top, > restart_sigma_min")
    n_restarts: int = option(2, "restarts K of the interval", type=int, in_label=True)
    restart_steps: int = option(3, "Heun steps N_R from top to bottom of each restart", type=int)

    @property
    def n_steps(self) -> int:
        return self.sigmas.shape[0] + self.n_restarts * self.restart_steps

    @property
    def draws_per_step(self) -> int:
        return 1

    def schedule(self):
        r"""Per step ``(sigma, sigma_next, sigma_jump_from)``: a step whose
        ``sigma_jump_from < sigma`` first jumps from that level up to ``sigma``."""
        main_from, main_to = descending_steps(self.sigmas)
        n_main, n_restart = main_from.shape[0], self.n_restarts * self.restart_steps
        # t_min: the grid level nearest restart_sigma_min; the main step landing on it.
        landing = jnp.argmin(jnp.abs(jnp.log(main_to[:-1]) - jnp.log(self.restart_sigma_min)))
        t_min = main_to[landing]
        levels = restart_levels(
            t_min, jnp.maximum(self.restart_sigma_max, t_min), self.restart_steps
        )
        j = jnp.arange(n_main + n_restart)
        inner = jnp.clip(j - landing - 1, 0, n_restart - 1) % self.restart_steps
        in_restart = (j > landing) & (j <= landing + n_restart)
        main = jnp.where(j <= landing, j, j - n_restart).clip(0, n_main - 1)
        sigma = jnp.where(in_restart, levels[inner], main_from[main])
        sigma_next = jnp.where(in_restart, levels[inner + 1], main_to[main])
        jumps = in_restart & (inner == 0)
        return sigma, sigma_next, jnp.where(jumps, t_min, sigma)

    def _jump(self, x: Array, sigma, sigma_jump_from, z: Array) -> Array:
        # sqrt(sigma^2 - sigma_jump_from^2), exactly 0 when there is no jump; at least 0: an
        # interval clamped to no width starts (t_min^(1/rho))^rho, a rounding below t_min,
        # and the root of the negative difference was NaN (pass 29, #3)
        radicand = jnp.maximum((sigma - sigma_jump_from) * (sigma + sigma_jump_from), 0)
        return x + jnp.sqrt(radicand) * z

    def step(self, score_fn, x, inputs):
        (sigma, sigma_next, sigma_jump_from), noise = inputs
        x = self._jump(x, sigma, sigma_jump_from, noise(0))
        return _flow_step(score_fn, x, sigma, sigma_next, True), None

    def final_step(self, score_fn, x, inputs):
        (sigma, sigma_next, sigma_jump_from), noise = inputs
        x = self._jump(x, sigma, sigma_jump_from, noise(0))
        return _flow_step(score_fn, x, sigma, sigma_next, False), None

    @classmethod
    def levels(cls, nfe: int, options) -> int:
        # 2 (N + K N_R) - 1 evaluations
        return (nfe + 1) // 2 - options["n_restarts"] * options["restart_steps"]


@checked_options
def restart(
    sigmas,
    restart_sigma_min: float = Restart.restart_sigma_min,
    restart_sigma_max: float = Restart.restart_sigma_max,
    n_restarts: int = Restart.n_restarts,
    restart_steps: int = Restart.restart_steps,
) -> Restart:
    r"""Restart sampling (Xu et al., 2023, Alg. 1) with Heun's method as the ODE solver.

    .. math::
        x \leftarrow \text{Heun}(x, \sigma_i \to \sigma_{i-1});\quad \text{at }
        \sigma_{i-1} = t_\mathrm{min}, K \text{ times: } x \leftarrow \text{Heun}_{N_R}\big(x
        + \sqrt{t_\mathrm{max}^2 - t_\mathrm{min}^2}\, z,\; t_\mathrm{max} \to
        t_\mathrm{min}\big),

    with :math:`t_\mathrm{min}` the grid level nearest ``restart_sigma_min`` (above
    :math:`\sigma = 0`) and :math:`t_\mathrm{max} = \max(` ``restart_sigma_max``,
    :math:`t_\mathrm{min})`; the last main step, to 0, is Euler's (:func:`heun`).
    ``n_restarts = 0`` is :func:`heun`.

    Args:
        sigmas: ``(N,)`` ascending grid.
        restart_sigma_min, restart_sigma_max: the restart interval, ``0 < min < max``.
        n_restarts: :math:`K \ge 0`.
        restart_steps: :math:`N_R \ge 1` Heun steps per restart.

    Returns:
        A :class:`Restart` with ``nfe = 2 (N + K N_R) - 1``; trajectory ``(N + K N_R, *S)``,
        the state after every step; ``noise`` ``(N + K N_R, *S)``, one row per step, used
        only by the first step of each restart (the jump).

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels, for an interval that is not ``0 < min < max``, a negative
            ``n_restarts`` or ``restart_steps < 1``.

    References:
        Xu, Y. et al. (2023). Restart Sampling for Improving Generative Processes, Alg. 1.
        https://arxiv.org/abs/2306.14878
    """
    if not 0 < restart_sigma_min < restart_sigma_max:
        raise ValueError(
            "need 0 < restart_sigma_min < restart_sigma_max, got "
            f"{restart_sigma_min} and {restart_sigma_max}"
        )
    if isinstance(n_restarts, bool) or int(n_restarts) != n_restarts or n_restarts < 0:
        raise ValueError(f"n_restarts must be an integer >= 0, got {n_restarts}")
    check_positive_int("restart_steps", restart_steps)
    return Restart(check_sigmas(sigmas), restart_sigma_min, restart_sigma_max, int(n_restarts),
                   int(restart_steps))  # fmt: skip
