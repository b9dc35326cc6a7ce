r"""UniPC: a multistep predictor (UniP) and a free corrector (UniC) on the data prediction.

In :math:`\lambda = -\log\sigma` the probability-flow ODE of VE noise is solved exactly up to
the integral of the denoiser, :math:`x_t = \frac{\sigma_t}{\sigma_s} x_s + \sigma_t
\int_{\lambda_s}^{\lambda_t} e^{\lambda} D\, d\lambda` (DPM-Solver++). UniPC (Zhao et al.,
2023) expands the integral in the divided differences of the last :math:`p` denoised values,

.. math::
    x_{k+1} = \frac{\sigma_{k+1}}{\sigma_k} x^c_k - (e^{-h_k} - 1) D_k
    - B(h_k) \sum_{i=1}^{p-1} a_i \frac{D_{k-i} - D_k}{r_i},
    \qquad r_i = \frac{\lambda_{k-i} - \lambda_k}{h_k},

(UniP-:math:`p`, their Alg. 2), and after evaluating :math:`D_{k+1} = D(x_{k+1},
\sigma_{k+1})` corrects :math:`x^c_{k+1}` by the same formula with :math:`D_{k+1}` as one more
node (UniC-:math:`p`, their Alg. 1): local order :math:`p + 1` for the evaluations of
order :math:`p`, because the corrected state is never re-evaluated. The weights :math:`a_i` solve
:math:`R_p(h) a = \phi_p(h) / B(h)`; :math:`B(h) = h` ("bh1") or :math:`e^{h} - 1` ("bh2").

Hand-written: diffusers' ``UniPCMultistepScheduler`` is a stateful torch scheduler on VP
timesteps; this is the same arithmetic (weights, warm-up, ``lower_order_final``) as a kernel
of scorelab's driver on any VE grid, its weights computed once per grid in :meth:`UniPC.schedule`.

References:
    Zhao, W., Bai, L., Rao, Y., Zhou, J. & Lu, J. (2023). UniPC: A Unified
    Predictor-Corrector Framework for Fast Sampling of Diffusion Models.
    https://arxiv.org/abs/2302.04867
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import jax.numpy as jnp
from jax import Array

from scorelab.samplers._core import (
    check_positive_int,
    check_sigmas,
    checked_options,
    descending_steps,
    option,
    tweedie,
)
from scorelab.samplers._deis import _history_sigmas
from scorelab.samplers._ode import AbstractFlow

SOLVER_TYPES = ("bh1", "bh2")
"""UniPC's :math:`B(h)`: ``bh1`` is :math:`h`, ``bh2`` is :math:`e^h - 1`."""


class UniPCState(NamedTuple):
    """A UniPC chain: the predicted position ``x``, the corrected previous position ``x_corrected``
    and the last ``order`` denoised values, most recent first, ``(order, *S)``."""

    x: Array
    x_corrected: Array
    history: Array


def _phi_over_b(hh: Array, b_h: Array, p: int) -> list[Array]:
    """diffusers' right-hand side ``b``: ``p`` entries, each ``(N,)``."""
    h_phi_k = jnp.expm1(hh) / hh - 1.0
    factorial, b = 1.0, []
    for i in range(1, p + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return b


def unipc_weights(sigma_from: Array, sigma_to: Array, order: int, solver_type: str):
    r"""The predictor's and the corrector's weights of every step, from diffusers' formulas.

    Step ``k`` goes from ``sigma_from[k]`` to ``sigma_to[k]`` with predictor order
    :math:`p_k = \min(\text{order}, k + 1, N - k)` (warm-up and ``lower_order_final``):

    - ``predictor[k]``: ``(order,)``, :math:`x_{k+1} = \frac{\sigma_{k+1}}{\sigma_k} x^c_k +
      \sum_j w_j D_{k-j}`;
    - ``corrector[k]``: ``(order + 1,)``, the UniC-:math:`p_k` update that follows step ``k``,
      :math:`x^c_{k+1} = \frac{\sigma_{k+1}}{\sigma_k} x^c_k + \sum_j w_j D_{k+1-j}`.

    Args:
        sigma_from, sigma_to: ``(N,)`` the descending steps; ``sigma_to[-1] = 0``.
        order: the largest predictor order, 1 to 3.
        solver_type: ``bh1`` or ``bh2``.

    Returns:
        ``(predictor, corrector)``, ``(N, order)`` and ``(N, order + 1)``; the last rows (the
        step to 0, whose update is :math:`D` itself) are unused.
    """
    n = sigma_from.shape[0]
    k = jnp.arange(n)
    orders = jnp.minimum(jnp.minimum(order, k + 1), n - k)
    safe_to = jnp.where(sigma_to > 0, sigma_to, 0.5 * sigma_from)  # the unused last row
    hh = jnp.log(safe_to) - jnp.log(sigma_from)  # -h, with h the step in lambda = -log sigma
    h_phi_1 = jnp.expm1(hh)
    b_h = hh if solver_type == "bh1" else jnp.expm1(hh)
    nodes = _history_sigmas(sigma_from, order)
    # r_i = (lambda_{k-i} - lambda_k) / h
    rks = [(jnp.log(nodes[:, 0]) - jnp.log(nodes[:, i])) / -hh for i in range(order)]
    zero = jnp.zeros_like(sigma_from)
    predictor = jnp.zeros((n, order), sigma_from.dtype)
    corrector = jnp.zeros((n, order + 1), sigma_from.dtype)
    for p in range(1, order + 1):
        b = jnp.stack(_phi_over_b(hh, b_h, p), axis=1)  # (N, p)
        r = jnp.stack([*rks[1:p], jnp.ones_like(sigma_from)], axis=1)  # (N, p)
        R = jnp.stack([r**i for i in range(p)], axis=1)  # (N, p, p): row i is r**i
        # Predictor: D_k gets -h_phi_1; each difference (D_{k-i} - D_k) / r_i gets -B(h) a_i.
        if p == 1:
            a_p = jnp.zeros((n, 0), sigma_from.dtype)
        elif p == 2:
            a_p = jnp.full((n, 1), 0.5, sigma_from.dtype)
        else:
            a_p = jnp.linalg.solve(R[:, :-1, :-1], b[:, :-1, None])[..., 0]
        w = [-h_phi_1] + [zero] * (order - 1)
        for i in range(1, p):
            w[i] = -b_h * a_p[:, i - 1] / r[:, i - 1]
            w[0] = w[0] + b_h * a_p[:, i - 1] / r[:, i - 1]
        predictor = jnp.where((orders == p)[:, None], jnp.stack(w, axis=1), predictor)
        # Corrector: the new value D_{k+1} is node r = 1, weight a_p of (D_{k+1} - D_k).
        if p == 1:
            a_c = jnp.full((n, 1), 0.5, sigma_from.dtype)
        else:
            a_c = jnp.linalg.solve(R, b[..., None])[..., 0]
        w = [-b_h * a_c[:, -1], -h_phi_1 + b_h * a_c[:, -1]] + [zero] * (order - 1)
        for i in range(1, p):
            w[i + 1] = -b_h * a_c[:, i - 1] / r[:, i - 1]
            w[1] = w[1] + b_h * a_c[:, i - 1] / r[:, i - 1]
        corrector = jnp.where((orders == p)[:, None], jnp.stack(w, axis=1), corrector)
    return predictor, corrector


class UniPC(AbstractFlow):
    """UniPC (:func:`unipc`)."""

    kind: ClassVar[str] = "unipc"
    has_final_step: ClassVar[bool] = True
    order: int = option(2, "predictor order 1-3 (diffusers' solver_order)", type=int,
                        in_label=True)  # fmt: skip
    solver_type: str = option("bh2", "B(h): bh1 = h, bh2 = e^h - 1", type=str,
                              choices=SOLVER_TYPES)  # fmt: skip

    @property
    def nfe(self) -> int:
        return self.n_steps

    def schedule(self):
        sigma_from, sigma_to = descending_steps(self.sigmas)
        predictor, corrector = unipc_weights(sigma_from, sigma_to, self.order, self.solver_type)
        # Step k corrects with the weights of step k - 1; the first step corrects nothing.
        ratio = sigma_to / sigma_from
        corrector = jnp.concatenate([jnp.zeros_like(corrector[:1]), corrector[:-1]])
        ratio_prev = jnp.concatenate([jnp.zeros_like(ratio[:1]), ratio[:-1]])
        first = jnp.arange(self.n_steps) == 0
        return sigma_from, ratio, predictor, ratio_prev, corrector, first

    def init(self, score_fn, x: Array) -> UniPCState:
        return UniPCState(x, x, jnp.zeros((self.order, *x.shape), x.dtype))

    def position(self, state: UniPCState) -> Array:
        return state.x

    def _evaluate_and_correct(self, score_fn, state: UniPCState, inputs):
        (sigma, _, _, ratio_prev, corrector, first), _ = inputs
        denoised = tweedie(score_fn, state.x, sigma)
        nodes = jnp.concatenate([denoised[None], state.history])
        corrected = ratio_prev * state.x_corrected + jnp.tensordot(corrector, nodes, axes=1)
        return denoised, jnp.where(first, state.x, corrected), nodes[:-1]

    def step(self, score_fn, state: UniPCState, inputs):
        (_, ratio, predictor, *_), _ = inputs
        _, x_corrected, history = self._evaluate_and_correct(score_fn, state, inputs)
        x = ratio * x_corrected + jnp.tensordot(predictor, history, axes=1)
        return UniPCState(x, x_corrected, history), None

    def final_step(self, score_fn, state: UniPCState, inputs):
        # The first-order predictor to sigma = 0 is D_{N-1} itself (diffusers' last step);
        # the final correction would not change it, so it is skipped.
        (sigma, *_), _ = inputs
        return state._replace(x=tweedie(score_fn, state.x, sigma)), None


@checked_options
def unipc(sigmas, order: int = UniPC.order, solver_type: str = UniPC.solver_type) -> UniPC:
    r"""UniPC (Zhao et al., 2023): UniP-:math:`p` predictor and UniC corrector on the data
    prediction, in :math:`\lambda = -\log\sigma`.

    .. math::
        x_{k+1} = \frac{\sigma_{k+1}}{\sigma_k} x^c_k - (e^{-h_k} - 1) D_k
        - B(h_k) \sum_{i=1}^{p-1} a_i \frac{D_{k-i} - D_k}{r_i}, \qquad
        x^c_{k+1} = \text{the same with } D_{k+1} \text{ as node } r = 1,

    :math:`p = \min(\text{order}, k + 1, N - k)`, one evaluation per level; the last step, to
    :math:`\sigma = 0`, is :math:`x = D(x_{N-1}, \sigma_0)` (module docstring). Same updates as
    diffusers' ``UniPCMultistepScheduler`` (``predict_x0=True``, ``lower_order_final=True``,
    ``final_sigmas_type="zero"``). Converges with order ``min(order + 1, 3)``: UniC raises
    UniP-:math:`p` by one, and the warm-up (first step UniP-1 + UniC-1) and the second-to-last
    step (UniP-2, ``lower_order_final``) cap it at 3.

    Args:
        sigmas: ``(N,)`` ascending grid.
        order: the predictor order, 1 to 3.
        solver_type: ``bh1`` (:math:`B(h) = h`) or ``bh2`` (:math:`B(h) = e^h - 1`).

    Returns:
        A :class:`UniPC` with ``nfe = N``; trajectory ``(N, *S)``, the predicted (uncorrected)
        states at :math:`\sigma_{N-2}, \dots, \sigma_0` and the sample; draws nothing.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels, for an order outside 1-3 or an unknown ``solver_type``.

    References:
        Zhao, W. et al. (2023). UniPC: A Unified Predictor-Corrector Framework for Fast
        Sampling of Diffusion Models, Alg. 1-3. https://arxiv.org/abs/2302.04867
    """
    if check_positive_int("order", order) > 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if solver_type not in SOLVER_TYPES:
        raise ValueError(
            f"solver_type must be one of {', '.join(SOLVER_TYPES)}, got {solver_type!r}"
        )
    return UniPC(check_sigmas(sigmas), order, solver_type)
