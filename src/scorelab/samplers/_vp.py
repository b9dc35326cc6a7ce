r"""VP noise through VE samplers: the one conversion between the two.

A VP model sees :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`. Divided by
:math:`\alpha_t` this is the VE variable

.. math::
    y = x_t / \alpha_t = x_0 + \sigma\, \varepsilon, \qquad \sigma = \sigma_t / \alpha_t,

and scores map as :math:`\nabla_y \log p(y) = \alpha_t \nabla_{x_t} \log p_t(x_t)`. With
:math:`\alpha_t^2 + \sigma_t^2 = 1`, :math:`\alpha_t = 1 / \sqrt{1 + \sigma^2}` and
:math:`\sigma_t = \sigma \alpha_t`, so a VE level :math:`\sigma` names a VP level
(its log signal-to-noise ratio is :math:`-2\log\sigma`). Every sampler of
:mod:`scorelab.samplers` therefore samples a VP model unchanged: wrap its score with
:func:`ve_score_from_vp`, take a VE grid of VP levels (:func:`scorelab.noise.vp_sigmas`,
:func:`ve_sigmas_from_vp`), start from :func:`vp_prior`, and map states back with
:func:`vp_state`. A VP sampler written in :math:`x_t` (DDPM, VP-DDIM) is the VE sampler in
:math:`y` on that grid; the tests check it step for step.

References:
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models, Sec. 2 and App. B.2 (the scaling s(t)).
    https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.tree_util import Partial

from scorelab.samplers._core import check_level, ve_prior

SQUARE_LIMIT = 1.8e19
"""Noise levels above which :math:`\\sigma^2` overflows float32 (``sqrt`` of its largest
finite value is 1.84e19); there :math:`1 / \\sqrt{1 + \\sigma^2}` is :math:`1 / \\sigma` to
float32 precision (:math:`\\sigma^{-2} < 3 \\times 10^{-39}` is far below its resolution)."""


def vp_alpha_sigma_from_ve(sigma) -> tuple[Array, Array]:
    r"""The VP scales of a VE level :math:`\sigma`.

    .. math::
        \alpha_t = \frac{1}{\sqrt{1 + \sigma^2}}, \qquad \sigma_t = \sigma \alpha_t
        = \frac{\sigma}{\sqrt{1 + \sigma^2}},

    the unique :math:`(\alpha_t, \sigma_t)` with :math:`\alpha_t^2 + \sigma_t^2 = 1` and
    :math:`\sigma_t / \alpha_t = \sigma`.

    Above :data:`SQUARE_LIMIT`, where :math:`\sigma^2` overflows float32, they are computed
    as :math:`\alpha_t = 1 / \sigma` and :math:`\sigma_t = 1`, their values to float32
    precision (``1 / sqrt(1 + inf)`` was 0, and ``sigma * 0`` NaN, for finite
    :math:`\sigma \ge 1.9 \times 10^{19}`); below it the result is unchanged, bit for bit.

    Args:
        sigma: VE level(s) :math:`\sigma \ge 0`, scalar or array of any shape.

    Returns:
        ``(alpha_t, sigma_t)``, each shaped like ``sigma``.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models, Sec. 2 and App. B.2. https://arxiv.org/abs/2206.00364
    """
    large = sigma > SQUARE_LIMIT
    # The inner where keeps the unused branch finite, so gradients stay finite too.
    alpha_t = jnp.where(
        large, 1.0 / jnp.where(large, sigma, 1.0), 1.0 / jnp.sqrt(1.0 + jnp.square(sigma))
    )
    return alpha_t, jnp.where(large, 1.0, sigma * alpha_t)


def ve_sigmas_from_vp(alpha_t, sigma_t) -> Array:
    r"""VE levels :math:`\sigma = \sigma_t / \alpha_t` of VP levels, e.g. of
    :func:`scorelab.noise.vp_alpha_sigma` of DDPM's ``alphas_cumprod`` (ascending in ``t``).

    Args:
        alpha_t, sigma_t: ``(T,)`` signal and noise scales.

    Returns:
        ``(T,)`` float32 (any common shape of the inputs works elementwise).

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models, Sec. 2 and App. B.2. https://arxiv.org/abs/2206.00364
    """
    return (jnp.asarray(sigma_t, jnp.float32) / jnp.asarray(alpha_t, jnp.float32)).astype(
        jnp.float32
    )


def _ve_score(y: Array, sigma, vp_score_fn) -> Array:
    alpha_t, sigma_t = vp_alpha_sigma_from_ve(sigma)
    return alpha_t * vp_score_fn(alpha_t * y, alpha_t, sigma_t)


def ve_score_from_vp(vp_score_fn):
    r"""A VE ``score_fn(y, sigma)`` from a VP score ``vp_score_fn(x_t, alpha_t, sigma_t)``.

    .. math::
        s_{VE}(y, \sigma) = \alpha_t\, s_{VP}(\alpha_t y, \alpha_t, \sigma_t), \qquad
        \alpha_t = \frac{1}{\sqrt{1 + \sigma^2}}, \quad \sigma_t = \sigma \alpha_t.

    An :math:`\varepsilon`-prediction model gives :math:`s_{VP} = -\hat\varepsilon / \sigma_t`;
    a model indexed by time finds its :math:`t` from :math:`(\alpha_t, \sigma_t)`; the exact
    VP score of a mixture is ``target.marginal(alpha_t, sigma_t).score(x_t)``.

    Args:
        vp_score_fn: ``(x_t (d,), alpha_t, sigma_t) -> (d,)``.

    Returns:
        A :class:`jax.tree_util.Partial` (an Equinox module's weights stay traced leaves
        under :func:`scorelab.samplers.sample`), called as ``score_fn(y (d,), sigma) -> (d,)``.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models, Sec. 2 and App. B.2. https://arxiv.org/abs/2206.00364
    """
    return Partial(_ve_score, vp_score_fn=vp_score_fn)


def vp_prior(key: Array, n: int, shape: int | tuple[int, ...], sigma) -> Array:
    r"""``n`` draws from the VP prior :math:`x_T \sim \mathcal{N}(0, I)` in the VE variable.

    .. math::
        y_T = x_T / \alpha_T \sim \mathcal{N}\big(0, (1 + \sigma^2) I\big),

    with :math:`\sigma` the grid's top level. Sample ``i`` is drawn from ``fold_in(key, i)``
    (:func:`ve_prior` with standard deviation :math:`\sqrt{1 + \sigma^2}`).

    Args:
        key: PRNG key.
        n: number of samples (Python int).
        shape: one state's shape: an int ``d`` for vectors, or a tuple such as ``(C, H, W)``.
        sigma: the grid's top VE level ``sigmas[-1]``, a scalar.

    Returns:
        ``(n, *shape)`` float32 array of starting states :math:`y_T`.

    Raises:
        TypeError, ValueError: as :func:`ve_prior`; ``sigma`` is checked before it is
            converted (a complex level was cast to real with a warning).

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models, Sec. 2 and App. B.2. https://arxiv.org/abs/2206.00364
    """
    check_level("sigma", sigma)
    return ve_prior(key, n, shape, jnp.sqrt(1.0 + jnp.square(jnp.float32(sigma))))


def vp_state(y: Array, sigma) -> Array:
    r"""A VE state back in VP coordinates.

    .. math::
        x_t = \alpha_t\, y, \qquad \alpha_t = 1 / \sqrt{1 + \sigma^2};

    at :math:`\sigma = 0` (a finished chain), :math:`x_0 = y`.

    Args:
        y: VE state(s), e.g. ``(d,)`` or ``(n, d)``.
        sigma: VE level of ``y``, scalar or broadcastable against ``y`` (e.g. ``(n, 1)``).

    Returns:
        :math:`x_t`, the broadcast shape of ``y`` and ``sigma``.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models, Sec. 2 and App. B.2. https://arxiv.org/abs/2206.00364
    """
    return vp_alpha_sigma_from_ve(sigma)[0] * y
