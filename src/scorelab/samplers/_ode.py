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

import jax
import jax.numpy as jnp
from jax import Array
from jax.tree_util import Partial

from scorelab.samplers._core import (
    Sampler,
    SamplerOutput,
    check_sigmas,
    descending_steps,
    noise_source,
    tweedie,
)


def _edm_run(
    key: Array,
    score_fn,
    x_init: Array,
    trajectory: bool = False,
    noise=None,
    *,
    sigmas: Array,
    gammas: Array | None,
    s_noise: Array,
    heun: bool,
) -> SamplerOutput:
    # Karras et al. (2022), Alg. 2; with gammas None (no churn) it is Alg. 1 and draws nothing.
    n_levels = sigmas.shape[0]
    inputs, draw = noise_source(key, noise, 0 if gammas is None else n_levels, x_init)
    sigma_from, sigma_to = descending_steps(sigmas)

    def slope(x, sigma):  # dx/dsigma = -sigma s(x, sigma)
        return -sigma * score_fn(x, sigma)

    def step(x, per_step, second_order: bool):
        sigma, sigma_next, gamma, source = per_step
        if gammas is None:
            sigma_hat, x_hat = sigma, x
        else:  # churn: raise the noise to sigma_hat = (1 + gamma) sigma
            sigma_hat = sigma * (1.0 + gamma)
            # sqrt(sigma_hat^2 - sigma^2), written so that gamma = 0 gives exactly 0 (the
            # difference of squares can round below 0 under a fused multiply-add: NaN).
            raise_by = sigma * jnp.sqrt(gamma * (2.0 + gamma))
            x_hat = x + raise_by * s_noise * draw(source)
        d = slope(x_hat, sigma_hat)
        x_next = x_hat + (sigma_next - sigma_hat) * d
        if second_order:  # Heun's correction, trapezoidal in sigma
            x_next = x_hat + (sigma_next - sigma_hat) * 0.5 * (d + slope(x_next, sigma_next))
        return x_next, (x_next if trajectory else None)

    gamma_steps = jnp.zeros_like(sigma_from) if gammas is None else gammas
    sources = jnp.zeros((n_levels,)) if gammas is None else inputs
    per_step = (sigma_from, sigma_to, gamma_steps, sources)
    head = jax.tree.map(lambda a: a[:-1], per_step)
    last = jax.tree.map(lambda a: a[-1], per_step)
    x_1, x_all = jax.lax.scan(lambda x, p: step(x, p, heun), x_init, head)
    # The last step lands on sigma = 0, where the slope is undefined: Euler (Alg. 1, line 8).
    x, _ = step(x_1, last, False)
    x_all = jnp.concatenate([x_all, x[None]]) if trajectory else None
    return SamplerOutput(x, x_all)


def euler(sigmas) -> Sampler:
    r"""Euler's method on the probability-flow ODE in :math:`\sigma`.

    .. math::
        x_{i-1} = x_i + (\sigma_{i-1} - \sigma_i)\big(-\sigma_i\, s(x_i, \sigma_i)\big),
        \qquad i = N-1, \dots, 0, \quad \sigma_{-1} = 0.

    It equals :func:`ddim` with ``e = 0`` step for step (Karras et al., 2022, Sec. 4; tested),
    and converges with order 1 in the step.

    Args:
        sigmas: ``(N,)`` ascending grid.

    Returns:
        A :class:`Sampler` with ``nfe = N``. Trajectory ``(N, d)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` and the final sample. Draws nothing: ``noise``
        must be ``None`` or ``(0, d)``.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels.

    References:
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 1 without its line 6. https://arxiv.org/abs/2206.00364
    """
    sigmas = check_sigmas(sigmas)
    run = Partial(_edm_run, sigmas=sigmas, gammas=None, s_noise=jnp.float32(0.0), heun=False)
    return Sampler("euler", int(sigmas.shape[0]), run)


def heun(sigmas) -> Sampler:
    r"""Heun's second-order method on the probability-flow ODE (Karras et al., 2022, Alg. 1).

    .. math::
        \tilde x = x_i + (\sigma_{i-1} - \sigma_i)\, d_i, \qquad
        x_{i-1} = x_i + (\sigma_{i-1} - \sigma_i)\, \tfrac12 \big(d_i + d(\tilde x,
        \sigma_{i-1})\big), \qquad d(x, \sigma) = -\sigma s(x, \sigma),

    for every step between levels; the last step, to :math:`\sigma = 0`, is Euler's. Order 2.

    Args:
        sigmas: ``(N,)`` ascending grid.

    Returns:
        A :class:`Sampler` with ``nfe = 2 N - 1``; trajectory and ``noise`` as :func:`euler`.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels.

    References:
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 1. https://arxiv.org/abs/2206.00364
    """
    sigmas = check_sigmas(sigmas)
    run = Partial(_edm_run, sigmas=sigmas, gammas=None, s_noise=jnp.float32(0.0), heun=True)
    return Sampler("heun", int(2 * sigmas.shape[0] - 1), run)


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
        ``(N,)`` float32 array, ``gammas[j]`` for the level :math:`\sigma_{N-1-j}` (from the
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
    sigma_from = sigmas[::-1]
    gamma = min(s_churn / sigmas.shape[0], math.sqrt(2.0) - 1.0)
    inside = (sigma_from >= s_tmin) & (sigma_from <= s_tmax)
    return jnp.where(inside, gamma, 0.0).astype(jnp.float32)


def edm(
    sigmas,
    s_churn: float = 40.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.003,
) -> Sampler:
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
        A :class:`Sampler` with ``nfe = 2 N - 1``; trajectory as :func:`euler`; ``noise``
        ``(N, d)``, row ``j`` for the churn at :math:`\sigma_{N-1-j}`.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels; for bad churn settings (:func:`edm_gammas`) or
            ``s_noise < 0``.

    References:
        Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
        Models, Alg. 2. https://arxiv.org/abs/2206.00364
    """
    sigmas = check_sigmas(sigmas)
    if not s_noise >= 0:
        raise ValueError(f"s_noise must be >= 0, got {s_noise}")
    run = Partial(
        _edm_run,
        sigmas=sigmas,
        gammas=edm_gammas(sigmas, s_churn, s_tmin, s_tmax),
        s_noise=jnp.float32(s_noise),
        heun=True,
    )
    name = f"edm(s_churn={s_churn}, s_tmin={s_tmin}, s_tmax={s_tmax}, s_noise={s_noise})"
    return Sampler(name, int(2 * sigmas.shape[0] - 1), run)


def _dpmpp_2m_run(
    key: Array,
    score_fn,
    x_init: Array,
    trajectory: bool = False,
    noise=None,
    *,
    sigmas: Array,
) -> SamplerOutput:
    noise_source(key, noise, 0, x_init)  # draws nothing; checks `noise`
    sigma_from = sigmas[::-1]
    first = jnp.arange(sigmas.shape[0] - 1) == 0

    def step(carry, per_step):
        x, denoised_prev, h_prev = carry
        sigma, sigma_next, is_first = per_step
        denoised = tweedie(score_fn, x, sigma)
        h = jnp.log(sigma) - jnp.log(sigma_next)  # step in lambda = -log sigma
        r = h_prev / h
        # Second-order multistep correction (Lu et al., 2022, Alg. 2); the first step is
        # first order (DDIM), having no previous denoised value.
        corrected = (1.0 + 0.5 / r) * denoised - (0.5 / r) * denoised_prev
        denoised_used = jnp.where(is_first, denoised, corrected)
        x = (sigma_next / sigma) * x - jnp.expm1(-h) * denoised_used
        return (x, denoised, h), (x if trajectory else None)

    init = (x_init, jnp.zeros_like(x_init), jnp.ones((), x_init.dtype))
    (x_1, _, _), x_all = jax.lax.scan(step, init, (sigma_from[:-1], sigma_from[1:], first))
    # Lower-order final step to sigma = 0: the data prediction itself (k-diffusion's
    # sample_dpmpp_2m: sigma_next = 0 takes the first-order update, which is D).
    x = tweedie(score_fn, x_1, sigmas[0])
    x_all = jnp.concatenate([x_all, x[None]]) if trajectory else None
    return SamplerOutput(x, x_all)


def dpmpp_2m(sigmas) -> Sampler:
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
        A :class:`Sampler` with ``nfe = N``; trajectory and ``noise`` as :func:`euler`.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels.

    References:
        Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models, Alg. 2. https://arxiv.org/abs/2211.01095
    """
    sigmas = check_sigmas(sigmas)
    return Sampler("dpmpp_2m", int(sigmas.shape[0]), Partial(_dpmpp_2m_run, sigmas=sigmas))
