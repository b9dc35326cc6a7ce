r"""DDIM for VE noise (the tutorial's parameterisation) and its inference process.

References:
    Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
    https://arxiv.org/abs/2010.02502
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.tree_util import Partial

from scorelab.samplers._core import Sampler, SamplerOutput, check_sigmas, noise_source, tweedie


def ve_ddim_etas(sigmas, e: float = 1.0, eta_0: float = 0.0) -> Array:
    r"""The tutorial's DDIM noise scales for VE noise, ``(N,)``.

    .. math::
        \eta_{k} = \operatorname{clip}\Big(e \sqrt{\sigma_{k}^2 - \sigma_{k-1}^2}
        \,\frac{\sigma_{k-1}}{\sigma_{k}},\; 0,\; \sigma_{k-1} - 10^{-8}\Big),
        \quad k = 1, \dots, N-1, \qquad \eta_0 = \text{eta\_0}.

    ``etas[k]`` is the standard deviation of the noise added on leaving level ``k``: the step
    :math:`\sigma_k \to \sigma_{k-1}` for ``k >= 1`` (the tutorial's :math:`\eta_{t-1}`), and the
    final step :math:`\sigma_0 \to 0` for ``k = 0``. ``e = 1`` gives the Bayes (ancestral)
    posterior :math:`q(x_{k-1} \mid x_k, x_0)` of the forward chain; ``e = 0`` deterministic
    DDIM. The clip keeps :math:`\sigma_{k-1}^2 - \eta_k^2 > 0` for ``e > 1``.

    Args:
        sigmas: ``(N,)`` ascending grid.
        e: scale of the noise, ``>= 0``.
        eta_0: noise of the final step, ``>= 0``.

    Returns:
        ``(N,)`` float32 array (JAX's default float), ``etas[0] = eta_0``.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels, or if ``e < 0`` or ``eta_0 < 0``.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models, eq. 16.
        https://arxiv.org/abs/2010.02502
    """
    sigmas = check_sigmas(sigmas)
    if not (e >= 0 and eta_0 >= 0):
        raise ValueError(f"e and eta_0 must be >= 0, got e={e}, eta_0={eta_0}")
    sigma_t, sigma_prev = sigmas[1:], sigmas[:-1]
    etas = e * jnp.sqrt(sigma_t**2 - sigma_prev**2) * sigma_prev / sigma_t
    etas = jnp.clip(etas, 0.0, sigma_prev - 1e-8)
    return jnp.concatenate([jnp.full((1,), eta_0, dtype=jnp.float32), etas])


def _posterior_step(x_0: Array, x_t: Array, sigma_t, sigma_prev, eta, z: Array) -> Array:
    r"""A draw of :math:`q^\eta(x_{t-1} \mid x_t, x_0) = \mathcal{N}(x_0 +
    \sqrt{\sigma_{t-1}^2 - \eta^2}\,(x_t - x_0)/\sigma_t,\ \eta^2 I)`, the tutorial's
    ``inference_process`` plus its noise."""
    return x_0 + jnp.sqrt(sigma_prev**2 - eta**2) / sigma_t * (x_t - x_0) + eta * z


def _ddim_run(
    key: Array,
    score_fn,
    x_init: Array,
    trajectory: bool = False,
    noise=None,
    *,
    sigmas: Array,
    etas: Array,
) -> SamplerOutput:
    n_levels = sigmas.shape[0]
    inputs, draw = noise_source(key, noise, n_levels, x_init)

    def step(x_t, per_step):
        sigma_t, sigma_prev, eta, source = per_step
        x_prev = _posterior_step(
            tweedie(score_fn, x_t, sigma_t), x_t, sigma_t, sigma_prev, eta, draw(source)
        )
        return x_prev, (x_prev if trajectory else None)

    # Walk k = N-1, ..., 1: sigma_k -> sigma_{k-1} with etas[k].
    per_step = (sigmas[1:][::-1], sigmas[:-1][::-1], etas[1:][::-1], inputs[:-1])
    x_1, x_all = jax.lax.scan(step, x_init, per_step)
    # Final step sigma_0 -> 0 with its own, independent draw (the tutorial reuses the parent
    # key here, correlating this draw with the chain's first one).
    x = tweedie(score_fn, x_1, sigmas[0]) + etas[0] * draw(inputs[-1])
    x_all = jnp.concatenate([x_all, x[None]]) if trajectory else None
    return SamplerOutput(x, x_all)


def ddim(sigmas, e: float = 1.0, eta_0: float = 0.0) -> Sampler:
    r"""DDIM for VE noise with the tutorial's parameterisation.

    With Tweedie's denoiser :math:`\hat x_0(x, \sigma) = x + \sigma^2 s(x, \sigma)`, each step
    :math:`\sigma_k \to \sigma_{k-1}` (``k = N-1, ..., 1``) replaces the unknown :math:`x_0` of
    the inference process (:func:`inference_process`) by :math:`\hat x_0`:

    .. math::
        x_{k-1} = \hat x_0 + \frac{\sqrt{\sigma_{k-1}^2 - \eta_k^2}}{\sigma_k}
        (x_k - \hat x_0) + \eta_k z_k,

    and the final step is :math:`x = \hat x_0(x_0', \sigma_0) + \eta_0 z` with
    ``etas = ve_ddim_etas(sigmas, e, eta_0)``. ``e = 1`` is ancestral sampling from the Bayes
    posterior, ``e = 0`` deterministic DDIM.

    With ``e = 0`` (and ``eta_0 = 0``) every step is exactly an Euler step of the
    probability-flow ODE :math:`dx/d\sigma = -\sigma s(x, \sigma)` in :math:`\sigma`:
    :math:`x_{k-1} = x_k + (\sigma_{k-1} - \sigma_k)(-\sigma_k s(x_k, \sigma_k))`, the final
    one with :math:`\sigma_{-1} = 0` (Karras et al., 2022, Sec. 4).

    Unlike the tutorial, every draw, the final one included, comes from its own key.

    Args:
        sigmas: ``(N,)`` ascending grid; start the chain at ``x_init`` drawn near
            :math:`q_{\sigma_{N-1}}` (:func:`ve_prior` or :func:`exact_prior`).
        e: noise scale, ``>= 0``.
        eta_0: noise of the final step, ``>= 0``.

    Returns:
        A :class:`Sampler` with ``nfe = N``. Trajectory ``(N, d)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` and the final sample (as the tutorial's).
        ``noise`` is ``(N, d)``: row ``j < N - 1`` for the step leaving :math:`\sigma_{N-1-j}`,
        row ``N - 1`` for the final step.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels, or if ``e < 0`` or ``eta_0 < 0``.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
        https://arxiv.org/abs/2010.02502
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    sigmas = check_sigmas(sigmas)
    run = Partial(_ddim_run, sigmas=sigmas, etas=ve_ddim_etas(sigmas, e, eta_0))
    return Sampler(f"ddim(e={e}, eta_0={eta_0})", int(sigmas.shape[0]), run)


def inference_process(
    key: Array,
    x_0: Array,
    x_T: Array,
    sigmas,
    etas,
    noise=None,
    trajectory: bool = True,
) -> SamplerOutput:
    r"""Sample the DDIM inference process :math:`q^\eta(x_{1:T} \mid x_0)` backwards from ``x_T``.

    For ``k = N-1, ..., 1``:

    .. math::
        x_{k-1} = x_0 + \frac{\sqrt{\sigma_{k-1}^2 - \eta_k^2}}{\sigma_k} (x_k - x_0)
        + \eta_k z_k,

    which keeps every marginal :math:`q(x_k \mid x_0) = \mathcal{N}(x_0, \sigma_k^2 I)` when
    :math:`x_T \sim \mathcal{N}(x_0, \sigma_{N-1}^2 I)`, whatever the :math:`\eta`
    (Song et al., 2021, Lemma 1). The tutorial's ``inference_process_sampling``; :func:`ddim` is
    this chain with :math:`x_0` replaced by Tweedie's estimate.

    Args:
        key: PRNG key for the draws.
        x_0: ``(d,)`` the clean point.
        x_T: ``(d,)`` the start at ``sigmas[-1]``.
        sigmas: ``(N,)`` ascending grid.
        etas: ``(N,)`` in the layout of :func:`ve_ddim_etas`; ``etas[0]`` is not used (the
            process stops at :math:`\sigma_0`).
        noise: optional ``(N - 1, d)`` standard normal draws, row ``j`` for the step leaving
            :math:`\sigma_{N-1-j}`.
        trajectory: whether to return the states.

    Returns:
        :class:`SamplerOutput` with ``x`` the state at :math:`\sigma_0` and ``trajectory``
        ``(N - 1, d)``, the states at :math:`\sigma_{N-2}, \dots, \sigma_0`.

    Raises:
        ValueError: if ``etas`` and ``sigmas`` differ in shape, or ``noise`` is not
            ``(N - 1, d)``.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models, eq. 7.
        https://arxiv.org/abs/2010.02502
    """
    sigmas = jnp.asarray(sigmas, dtype=x_T.dtype)
    etas = jnp.asarray(etas, dtype=x_T.dtype)
    if etas.shape != sigmas.shape:
        raise ValueError(f"etas must have the shape of sigmas {sigmas.shape}, got {etas.shape}")
    inputs, draw = noise_source(key, noise, sigmas.shape[0] - 1, x_T)

    def step(x_t, per_step):
        sigma_t, sigma_prev, eta, source = per_step
        x_prev = _posterior_step(x_0, x_t, sigma_t, sigma_prev, eta, draw(source))
        return x_prev, (x_prev if trajectory else None)

    per_step = (sigmas[1:][::-1], sigmas[:-1][::-1], etas[1:][::-1], inputs)
    x, x_all = jax.lax.scan(step, x_T, per_step)
    return SamplerOutput(x, x_all)
