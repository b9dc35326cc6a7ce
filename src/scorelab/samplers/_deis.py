r"""Linear multistep solvers on the noise prediction: DEIS (log-:math:`\rho` AB) and iPNDM.

With :math:`\varepsilon(x, \sigma) = (x - D(x, \sigma)) / \sigma = -\sigma \nabla \log
q_\sigma(x)`, the probability-flow ODE of VE noise is :math:`dx / d\sigma = \varepsilon`, so

.. math::
    x_{k+1} = x_k + \int_{\sigma_k}^{\sigma_{k+1}} \varepsilon(x(\rho), \rho)\, d\rho
    \approx x_k + \sum_{j=0}^{p-1} c_{k,j}\, \varepsilon_{k-j},

with :math:`\varepsilon_{k-j}` the noise predictions of the last :math:`p` levels (one score
evaluation per level; the first steps use the history they have). The two solvers differ only
in the weights :math:`c_{k,j}`:

- **DEIS** (Zhang & Chen, 2023, "tAB-DEIS" in :math:`\rho = \sigma`): the integral of the
  Lagrange polynomial through the history, in :math:`\log\rho`, exactly as diffusers'
  ``DEISMultistepScheduler`` (``algorithm_type="deis"``) writes it;
- **iPNDM** (their improved pseudo-numerical method): the fixed Adams-Bashforth weights of a
  uniform step (1; 3/2, -1/2; 23/12, -16/12, 5/12; 55/24, -59/24, 37/24, -9/24) times the step
  :math:`\sigma_{k+1} - \sigma_k`, as diffusers' ``IPNDMScheduler`` applies them.

Hand-written: diffusers implements these as stateful torch schedulers on VP discrete
timesteps; here they are kernels of scorelab's driver on any VE grid (the exponential
integrator's updates are the same in VE coordinates, :mod:`scorelab.samplers._vp`).

References:
    Zhang, Q. & Chen, Y. (2023). Fast Sampling of Diffusion Models with Exponential
    Integrator. https://arxiv.org/abs/2204.13902
    Liu, L., Ren, Y., Lin, Z. & Zhao, Z. (2022). Pseudo Numerical Methods for Diffusion Models
    on Manifolds. https://arxiv.org/abs/2202.09778
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import jax.numpy as jnp
from jax import Array

from scorelab.samplers._core import (
    check_positive_int,
    check_sigmas,
    checked_options,
    descending_steps,
    option,
)
from scorelab.samplers._ode import AbstractFlow


class MultistepState(NamedTuple):
    """A multistep chain: position ``x`` ``S`` and the last values it combines, most recent
    first, ``(K, *S)``."""

    x: Array
    history: Array


def _history_sigmas(sigma_from: Array, depth: int) -> Array:
    """``(N, depth)``: entry ``(k, j)`` is the level of step ``k - j``; levels before the first
    step (never weighted) are padded with distinct finite values above the top."""
    padded = jnp.concatenate([sigma_from[0] * 2.0 ** jnp.arange(depth - 1, 0, -1), sigma_from])
    return jnp.stack([padded[depth - 1 - j : depth - 1 - j + sigma_from.shape[0]]
                      for j in range(depth)], axis=1)  # fmt: skip


def step_orders(n_steps: int, order: int, dtype=jnp.int32) -> Array:
    """``(N,)`` order of each step: ``min(order, k + 1)`` (the history a step has), and 1 on
    the last step, to :math:`\\sigma = 0`."""
    k = jnp.arange(n_steps, dtype=dtype)
    return jnp.where(k == n_steps - 1, 1, jnp.minimum(order, k + 1))


class AbstractNoiseMultistep(AbstractFlow):
    r"""A linear multistep solver of :math:`dx/d\sigma = \varepsilon(x, \sigma)`: one
    evaluation per level, the update a weighted sum of the last :attr:`order` predictions."""

    @property
    @abc.abstractmethod
    def order(self) -> int:
        """The number of predictions combined (the largest order)."""

    @property
    def nfe(self) -> int:
        return self.n_steps

    @abc.abstractmethod
    def weights(self, sigma_from: Array, sigma_to: Array) -> Array:
        """``(N, order)`` weights :math:`c_{k,j}` of :math:`\\varepsilon_{k-j}`."""

    def schedule(self):
        sigma_from, sigma_to = descending_steps(self.sigmas)
        return sigma_from, self.weights(sigma_from, sigma_to)

    def init(self, score_fn, x: Array) -> MultistepState:
        return MultistepState(x, jnp.zeros((self.order, *x.shape), x.dtype))

    def position(self, state: MultistepState) -> Array:
        return state.x

    def step(self, score_fn, state: MultistepState, inputs):
        (sigma, weights), _ = inputs
        eps = -sigma * score_fn(state.x, sigma)
        history = jnp.concatenate([eps[None], state.history[:-1]])
        x = state.x + jnp.tensordot(weights, history, axes=1)
        return MultistepState(x, history), None


def _deis_weights(rho_t: Array, nodes: list[Array]) -> Array:
    r""":math:`\int_{\rho_0}^{\rho_t} \ell_j(\log\rho)\, d\rho` for the Lagrange basis
    :math:`\ell_j` in :math:`\log\rho` through ``nodes`` (``nodes[0] = rho_0``, 1 to 3 of
    them), diffusers' closed forms (its ``ind_fn``); ``(N, len(nodes))``."""
    rho_0 = nodes[0]
    if len(nodes) == 1:
        return (rho_t - rho_0)[:, None]
    log = jnp.log
    if len(nodes) == 2:

        def ind(t, b, c):  # Integrate[(log t - log c) / (log b - log c), t]
            return t * (-log(c) + log(t) - 1) / (log(b) - log(c))

        b0, b1 = nodes
        return jnp.stack([ind(rho_t, b0, b1) - ind(rho_0, b0, b1),
                          ind(rho_t, b1, b0) - ind(rho_0, b1, b0)], axis=1)  # fmt: skip

    def ind3(t, b, c, d):  # Integrate[(log t - log c)(log t - log d) / ((log b - log c)(...)), t]
        numerator = t * (
            log(c) * (log(d) - log(t) + 1) - log(d) * log(t) + log(d) + log(t) ** 2
            - 2 * log(t) + 2
        )  # fmt: skip
        return numerator / ((log(b) - log(c)) * (log(b) - log(d)))

    b0, b1, b2 = nodes
    return jnp.stack([ind3(rho_t, b0, b1, b2) - ind3(rho_0, b0, b1, b2),
                      ind3(rho_t, b1, b2, b0) - ind3(rho_0, b1, b2, b0),
                      ind3(rho_t, b2, b0, b1) - ind3(rho_0, b2, b0, b1)], axis=1)  # fmt: skip


class DEIS(AbstractNoiseMultistep):
    """DEIS, the log-rho multistep exponential integrator (:func:`deis`)."""

    kind: ClassVar[str] = "deis"
    order: int = option(2, "multistep order 1-3 (diffusers' solver_order)", type=int,
                        in_label=True)  # fmt: skip

    def weights(self, sigma_from, sigma_to):
        nodes = _history_sigmas(sigma_from, self.order)
        orders = step_orders(self.n_steps, self.order)
        # The last step (to 0) is first order; a positive stand-in keeps log(0) out of the
        # higher-order weights it does not use.
        rho_t = jnp.where(sigma_to > 0, sigma_to, 0.5 * sigma_from)
        chosen = jnp.zeros((self.n_steps, self.order), sigma_from.dtype)
        for p in range(1, self.order + 1):
            if p == 1:
                w = (sigma_to - sigma_from)[:, None]
            else:
                w = _deis_weights(rho_t, [nodes[:, j] for j in range(p)])
            w = jnp.pad(w, ((0, 0), (0, self.order - p)))
            chosen = jnp.where((orders == p)[:, None], w, chosen)
        return chosen


@checked_options
def deis(sigmas, order: int = DEIS.order) -> DEIS:
    r"""DEIS (Zhang & Chen, 2023): Adams-Bashforth on :math:`dx/d\sigma = \varepsilon`, the
    history interpolated by a polynomial in :math:`\log\sigma`.

    .. math::
        x_{k+1} = x_k + \sum_{j=0}^{p-1} \varepsilon_{k-j} \int_{\sigma_k}^{\sigma_{k+1}}
        \prod_{l \ne j} \frac{\log\rho - \log\sigma_{k-l}}{\log\sigma_{k-j} - \log\sigma_{k-l}}
        \, d\rho, \qquad p = \min(\text{order}, k + 1),

    (their eq. 15 with :math:`\rho = \sigma`, the "log-rho" variant diffusers'
    ``DEISMultistepScheduler`` implements, whose closed-form integrals are used here); the last
    step, to :math:`\sigma = 0`, is first order, :math:`x = D(x, \sigma_0)`. ``order = 1`` is
    DDIM (:func:`euler`). Converges with order ``min(order, 2)`` in the step: the first,
    first-order step (diffusers' warm-up too) leaves an error of order 2 that is never
    refined; its constant is small, so order 3 is seen until ~100 steps. The order is kept to
    the end: diffusers' scheduler, below 15 steps, lowers it on its last steps
    (``lower_order_final``), so there the two differ (by tens of percent at 2-5 steps).

    Args:
        sigmas: ``(N,)`` ascending grid.
        order: 1, 2 or 3.

    Returns:
        A :class:`DEIS` with ``nfe = N``; trajectory ``(N, *S)`` as :func:`euler`; draws
        nothing.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels, or for an order outside 1-3.

    References:
        Zhang, Q. & Chen, Y. (2023). Fast Sampling of Diffusion Models with Exponential
        Integrator. https://arxiv.org/abs/2204.13902
    """
    if check_positive_int("order", order) > 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    return DEIS(check_sigmas(sigmas), order)


_ADAMS_BASHFORTH = (
    (1.0,),
    (3.0 / 2.0, -1.0 / 2.0),
    (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0),
    (55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0),
)


class IPNDM(AbstractNoiseMultistep):
    """iPNDM, Adams-Bashforth with uniform-step weights (:func:`ipndm`)."""

    kind: ClassVar[str] = "ipndm"
    max_order: int = option(4, "largest Adams-Bashforth order 1-4 (diffusers: 4)", type=int)

    @property
    def order(self) -> int:
        return self.max_order

    def weights(self, sigma_from, sigma_to):
        k = jnp.arange(self.n_steps)
        rows = [row + (0.0,) * (self.order - len(row)) for row in _ADAMS_BASHFORTH[: self.order]]
        table = jnp.asarray(rows, sigma_from.dtype)
        return (sigma_to - sigma_from)[:, None] * table[jnp.minimum(k, self.order - 1)]


@checked_options
def ipndm(sigmas, max_order: int = IPNDM.max_order) -> IPNDM:
    r"""iPNDM (Zhang & Chen, 2023, Sec. 5): Adams-Bashforth on :math:`dx/d\sigma =
    \varepsilon` with the weights of a uniform step, warmed up by lower orders.

    .. math::
        x_{k+1} = x_k + (\sigma_{k+1} - \sigma_k) \sum_{j=0}^{p-1} a^{(p)}_j\,
        \varepsilon_{k-j}, \qquad p = \min(\text{max\_order}, k + 1),

    with :math:`a^{(4)} = (55, -59, 37, -9) / 24` and the lower Adams-Bashforth rows for the
    first steps, every step (the last, to 0, included) as diffusers' ``IPNDMScheduler``. The
    weights assume equal steps, and the Euler warm-up step is never refined: order
    ``min(max_order, 2)``, on a uniform grid and on a smooth one such as the geometric grid (step
    ratios :math:`1 + O(h)`).

    Args:
        sigmas: ``(N,)`` ascending grid.
        max_order: the largest order, 1 to 4.

    Returns:
        An :class:`IPNDM` with ``nfe = N``; trajectory as :func:`euler`; draws nothing.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels, or for an order outside 1-4.

    References:
        Zhang, Q. & Chen, Y. (2023). Fast Sampling of Diffusion Models with Exponential
        Integrator. https://arxiv.org/abs/2204.13902
        Liu, L. et al. (2022). Pseudo Numerical Methods for Diffusion Models on Manifolds.
        https://arxiv.org/abs/2202.09778
    """
    if check_positive_int("max_order", max_order) > 4:
        raise ValueError(f"max_order must be 1 to 4, got {max_order}")
    return IPNDM(check_sigmas(sigmas), max_order)
