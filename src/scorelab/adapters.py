r"""Adapters: other libraries' model conventions as scorelab's ``score_fn(x, sigma)``.

======================  ==============================================  =====================
convention              model                                           adapter
======================  ==============================================  =====================
EDM, k-diffusion        denoiser :math:`D(x, \sigma)`                   :func:`from_denoiser`
diffusers (DDPM, VP)    :math:`\hat\varepsilon(x_t, t)`, integer ``t``  :func:`from_epsilon`
PyTorch / Flax batches  ``f(x (n, *S), sigma (n,))``                    :func:`batched`
======================  ==============================================  =====================

Each returns a :class:`jax.tree_util.Partial` called as ``score_fn(x (*S), sigma) -> (*S)`` on
one example, so a wrapped Equinox module's weights stay traced leaves under
:func:`scorelab.samplers.sample` (a new set of weights does not recompile) and every sampler
runs it unchanged.

References:
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    https://arxiv.org/abs/2006.11239
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.tree_util import Partial

from scorelab._validate import check_callable, is_traced
from scorelab.noise import vp_alpha_sigma
from scorelab.samplers import ve_score_from_vp, ve_sigmas_from_vp

__all__ = ["from_denoiser", "from_epsilon", "batched"]


def _denoiser_score(x: Array, sigma, denoiser_fn) -> Array:
    return (denoiser_fn(x, sigma) - x) / jnp.square(sigma)


def from_denoiser(denoiser_fn):
    r"""The score of a denoiser :math:`D(x, \sigma) \approx E[x_0 \mid x_\sigma = x]`.

    By Tweedie's formula (Karras et al. 2022, eq. 3, :math:`\nabla_x \log p(x; \sigma) =
    (D(x; \sigma) - x) / \sigma^2`),

    .. math::
        s(x, \sigma) = \frac{D(x, \sigma) - x}{\sigma^2}, \qquad x = x_0 + \sigma \varepsilon,

    EDM's and k-diffusion's convention (VE noise, a model of the clean data). Defined for
    :math:`\sigma > 0`. In float32 the subtraction costs accuracy where :math:`\sigma^2 |s| \ll
    |x|`: the absolute error is about :math:`\epsilon_{32} (|D| + |D - x|) / \sigma^2`.

    Args:
        denoiser_fn: ``(x (*S), sigma scalar) -> (*S)``, the denoised estimate of ``x``.

    Returns:
        ``score_fn(x (*S), sigma scalar > 0) -> (*S)``, a :class:`jax.tree_util.Partial`.

    Raises:
        TypeError: ``denoiser_fn`` is not callable.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models, eq. 3. https://arxiv.org/abs/2206.00364
    """
    check_callable("denoiser_fn", denoiser_fn, "model denoiser_fn(x, sigma)")
    return Partial(_denoiser_score, denoiser_fn=denoiser_fn)


def _eps_vp_score(x_t: Array, alpha_t, sigma_t, eps_fn, log_sigmas: Array) -> Array:
    log_sigma = jnp.log(ve_sigmas_from_vp(alpha_t, sigma_t))
    t = jnp.interp(log_sigma, log_sigmas, jnp.arange(log_sigmas.shape[0], dtype=log_sigmas.dtype))
    return -eps_fn(x_t, t) / sigma_t


def from_epsilon(eps_fn, alphas_cumprod):
    r"""The VE score of a diffusers-style :math:`\varepsilon`-prediction VP model.

    The model sees :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\,
    \varepsilon` at timesteps :math:`t = 0, \dots, T - 1` (diffusers' ``scheduler.timesteps``
    and ``scheduler.alphas_cumprod``). In scorelab's VE variable
    :math:`x = x_t / \sqrt{\bar\alpha_t}`, of level :math:`\sigma = \sqrt{(1 - \bar\alpha_t) /
    \bar\alpha_t}`, the score is

    .. math::
        s(x, \sigma) = -\frac{\hat\varepsilon(\alpha_t x,\, t(\sigma))}{\sigma}, \qquad
        \alpha_t = \frac{1}{\sqrt{1 + \sigma^2}},

    i.e. :func:`scorelab.samplers.ve_score_from_vp` of the VP score
    :math:`-\hat\varepsilon / \sigma_t`; equivalently Tweedie's formula
    (:func:`from_denoiser`) of the VP denoiser :math:`D(x, \sigma) = x - \sigma
    \hat\varepsilon(x / \sqrt{1 + \sigma^2}, t(\sigma))` (Karras et al. 2022, Table 1, VP;
    k-diffusion's ``DiscreteEpsDDPMDenoiser``).

    **The timestep of a level.** :math:`t(\sigma)` interpolates ``t`` linearly in
    :math:`\log\sigma` between the grid's own levels :math:`\sigma_i` (k-diffusion's
    ``DiscreteSchedule.sigma_to_t``), a continuous ``t`` in ``[0, T - 1]``; levels outside
    :math:`[\sigma_0, \sigma_{T-1}]` are clamped to ``t = 0`` or ``T - 1`` (the input scale
    :math:`\alpha_t` still follows :math:`\sigma`). On the grid's levels it is exact, up to the
    float32 rounding of :math:`\sigma` (an error in ``t`` of order
    :math:`\epsilon_{32} / \Delta\log\sigma_i`). Between them the model is evaluated at its
    own level of :math:`t(\sigma)`; if its level :math:`\lambda(t) = \log\sigma(t)` is curved
    between integer timesteps, that level misses :math:`\log\sigma` by the chord error
    :math:`|\delta| \le \max |\lambda''| / 8`, and the score errs to first order in
    :math:`\delta` (a relative error of order :math:`|\delta|`). For DDPM's linear betas
    (``T = 1000``) with :math:`\bar\alpha` linear in ``t`` between timesteps, :math:`|\delta|`
    is 0.038 in the first interval (:math:`\sigma` from 0.010 to 0.015), 0.0011 at ``t = 10``
    and below :math:`3 \times 10^{-5}` from ``t = 100`` on. To stay exact, sample on the
    grid's levels (:func:`scorelab.samplers.ve_sigmas_from_vp` of
    :func:`scorelab.noise.vp_alpha_sigma`, or a subset of them).

    A model that takes integer timesteps only can round ``t`` itself; a batched model can be
    given as ``lambda x_t, t: model(x_t[None], t[None])[0]``.

    Args:
        eps_fn: ``(x_t (*S), t scalar float in [0, T - 1]) -> (*S)``, the predicted noise.
        alphas_cumprod: ``(T,)`` :math:`\bar\alpha_t`, strictly decreasing in ``(0, 1)`` (e.g.
            :func:`scorelab.noise.vp_alphas_cumprod`); concrete, not traced.

    Returns:
        ``score_fn(x (*S), sigma scalar > 0) -> (*S)``, a :class:`jax.tree_util.Partial`.

    Raises:
        TypeError: ``eps_fn`` is not callable, or ``alphas_cumprod`` is traced (build the
            score function outside ``jit``).
        ValueError: unless ``alphas_cumprod`` is 1-D, non-empty, strictly decreasing and
            inside ``(0, 1)`` (in float32).

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models, Table 1 and App. B.2. https://arxiv.org/abs/2206.00364
        Crowson, K. (2022). k-diffusion, ``k_diffusion/external.py``
        (``DiscreteSchedule.sigma_to_t``). https://github.com/crowsonkb/k-diffusion
    """
    check_callable("eps_fn", eps_fn, "model eps_fn(x_t, t)")
    if is_traced(alphas_cumprod):
        raise TypeError(
            "alphas_cumprod: traced; from_epsilon reads the schedule's values: build the score "
            "function outside jit (or under jax.ensure_compile_time_eval())"
        )
    log_sigmas = jnp.log(ve_sigmas_from_vp(*vp_alpha_sigma(alphas_cumprod)))
    # jnp.interp needs ascending, finite levels: abar strictly decreasing inside (0, 1)
    if (
        log_sigmas.ndim != 1
        or log_sigmas.size == 0
        or not (jnp.all(jnp.isfinite(log_sigmas)) and jnp.all(jnp.diff(log_sigmas) > 0))
    ):
        raise ValueError(
            "alphas_cumprod: expected a 1-D schedule strictly decreasing inside (0, 1), e.g. "
            "scheduler.alphas_cumprod"
        )
    vp_score_fn = Partial(_eps_vp_score, eps_fn=eps_fn, log_sigmas=log_sigmas)
    return ve_score_from_vp(vp_score_fn)  # finite for every finite sigma >= 0


def _batched_score(x: Array, sigma, score_fn_batched) -> Array:
    # An integer x is scored as floats: sigma cast to its dtype was 0.5 -> 0.
    x = jnp.asarray(x, dtype=jnp.result_type(x, 1.0))
    sigma = jnp.asarray(sigma, dtype=x.dtype)
    if sigma.size != 1:  # was reshape's "cannot reshape array of shape (3,) into (1,)"
        raise ValueError(
            f"sigma: expected one noise level for the one example, got shape {sigma.shape}; "
            "the samplers' vmap over chains batches the calls"
        )
    sigma = sigma.reshape(1)
    return score_fn_batched(x[None], sigma)[0]


def batched(score_fn_batched):
    r"""A one-example ``score_fn`` from a batched one, through a leading axis of 1.

    .. math::
        s(x, \sigma) = f(x[\mathrm{None}], [\sigma])[0],

    for models written for a batch (most PyTorch and Flax code): ``f(x (n, *S), sigma (n,))``.
    The samplers' ``vmap`` over chains then batches the calls.

    Args:
        score_fn_batched: ``(x (n, *S), sigma (n,)) -> (n, *S)``.

    Returns:
        ``score_fn(x (*S), sigma scalar) -> (*S)``, a :class:`jax.tree_util.Partial`;
        ``sigma`` is cast to ``x``'s dtype.

    Raises:
        TypeError: ``score_fn_batched`` is not callable.
        ValueError: (when called) ``sigma`` is more than one noise level.
    """
    check_callable("score_fn_batched", score_fn_batched, "model score_fn_batched(x, sigma)")
    return Partial(_batched_score, score_fn_batched=score_fn_batched)
