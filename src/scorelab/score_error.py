r"""Where is the model wrong? The relative score error of a model at each noise level.

For a target with an exact noised score (:class:`scorelab.targets.GaussianMixture`), the
relative error of a score model :math:`s_\theta` at noise level :math:`\sigma` is

.. math::
    e(\sigma) = \frac{\mathbb{E}_{x \sim q_\sigma} \|s_\theta(x, \sigma)
        - \nabla \log q_\sigma(x)\|^2}{\mathbb{E}_{x \sim q_\sigma} \|\nabla \log q_\sigma(x)\|^2},

the model's error in units of the score's own size (its Fisher information), with
:math:`q_\sigma = q_0 * \mathcal{N}(0, \sigma^2 I)`. Over a sampler's grid it tells which
noise levels a sampler's result inherits its error from: the probability-flow ODE integrates
the model's score over the whole grid, and a relative error at small :math:`\sigma` moves
samples within a mode, one at large :math:`\sigma` moves mass between modes.

Written here because no library computes it: it needs the exact noised score, which only
scorelab's oracle targets have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import SIGMA_LIMIT, check_callable, check_instance, check_int, check_memory
from scorelab.targets import GaussianMixture

__all__ = ["ScoreErrorProfile", "score_error_profile"]


class ScoreErrorProfile(NamedTuple):
    """The relative score error at each noise level, with its standard error.

    Attributes:
        sigmas: the noise levels ``(L,)``.
        relative_error: :math:`\\hat e(\\sigma)` at each level ``(L,)``.
        standard_error: its standard error ``(L,)`` (delta method, see
            :func:`score_error_profile`).
        n: exact samples per level.
    """

    sigmas: np.ndarray
    relative_error: np.ndarray
    standard_error: np.ndarray
    n: int

    def to_dict(self) -> dict:
        """JSON-serialisable: lists of floats and ``n``."""
        return {
            "sigmas": self.sigmas.tolist(),
            "relative_error": self.relative_error.tolist(),
            "standard_error": self.standard_error.tolist(),
            "n": self.n,
        }


@eqx.filter_jit
def _level(key, sigma, score_fn, target, n: int, shape: tuple) -> tuple[Array, Array]:
    """The ratio estimate and its standard error at one level (:func:`score_error_profile`)."""
    noised = target.ve_marginal(sigma)
    x = noised.sample(key, n)
    exact = jax.vmap(noised.score)(x)

    def one(x_j):
        score = score_fn(x_j.reshape(shape), sigma)
        if jnp.shape(score) != shape:  # checked once, when traced: (1,) was broadcast
            raise ValueError(
                f"score_fn: returned shape {jnp.shape(score)}, expected the example's {shape}"
            )
        return score.reshape(-1)

    model = jax.vmap(one)(x)
    a = jnp.sum((model - exact) ** 2, axis=-1)
    b = jnp.sum(exact**2, axis=-1)
    ratio = jnp.sum(a) / jnp.sum(b)
    return ratio, jnp.std(a - ratio * b, ddof=1) / (jnp.sqrt(n) * jnp.mean(b))


def score_error_profile(
    key: Array,
    score_fn: Callable[[Array, Array], Array],
    target: GaussianMixture,
    sigmas,
    n: int = 2000,
    shape: Sequence[int] | None = None,
) -> ScoreErrorProfile:
    r"""The relative score error :math:`e(\sigma)` of ``score_fn`` at each of ``sigmas``.

    At each level, :math:`n` exact samples :math:`x_j \sim q_\sigma` give
    :math:`a_j = \|s_\theta(x_j, \sigma) - \nabla \log q_\sigma(x_j)\|^2` and
    :math:`b_j = \|\nabla \log q_\sigma(x_j)\|^2`, and

    .. math::
        \hat e = \frac{\sum_j a_j}{\sum_j b_j}, \qquad
        \widehat{\mathrm{se}}(\hat e) = \frac{\operatorname{sd}_j(a_j - \hat e\, b_j)}
            {\sqrt{n}\; \bar b}

    (the ratio estimator's delta-method standard error: :math:`\hat e` is consistent, with
    bias :math:`O(1/n)`, below its standard error for any :math:`n` worth using). Level
    :math:`i` draws its samples from ``fold_in(key, i)``.

    Args:
        key: PRNG key of the samples.
        score_fn: ``score_fn(x, sigma)`` on one example of shape ``shape`` (the target's
            ``(d,)`` by default), returning that shape.
        target: the clean law :math:`q_0`, with its exact VE-noised score.
        sigmas: noise levels ``(L,)``, each ``> 0``.
        n: exact samples per level, ``>= 2``.
        shape: the example shape ``score_fn`` takes, e.g. ``(1, 8, 8)`` for
            :func:`scorelab.targets.digits_mixture`'s images (``prod(shape) = d``).

    Returns:
        A :class:`ScoreErrorProfile`.

    Raises:
        TypeError: naming the argument, for a ``key`` that is no PRNG key, a ``target`` that is
            no :class:`scorelab.targets.GaussianMixture`, a ``score_fn`` that is not callable,
            or ``sigmas`` that are not numbers.
        ValueError: for ``n < 2`` or more samples than memory holds, sigmas that are not
            finite, positive and at most 9.2e18 (beyond, the noised law's precision underflows
            float32), a ``shape`` of another size than ``d`` or not of positive integers, a
            ``score_fn`` returning another shape than its input, or a NaN or infinite error.
    """
    key = typed_key(key)
    check_callable("score_fn", score_fn, "score_fn(x, sigma)")
    check_instance(
        "target",
        target,
        GaussianMixture,
        "a scorelab.targets.GaussianMixture (a law with an exact noised score)",
    )
    check_int("n", n, 2)
    try:
        levels = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"sigmas: expected noise levels (L,) as numbers, got {sigmas!r}") from None
    with np.errstate(over="ignore"):
        sigmas = levels.astype(np.float32)
    if not (sigmas.size and np.all(levels <= SIGMA_LIMIT) and np.all(sigmas > 0)):
        shown = levels.tolist() if levels.size <= 8 else f"{levels.size} levels"
        raise ValueError(
            "sigmas: expected a non-empty grid of noise levels > 0 (finite, at most 9.2e18, "
            f"nonzero in float32), got {shown}"
        )
    if shape is None:
        shape = (target.dim,)
    else:
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(
                f"shape: expected a tuple of positive integers, got {shape!r}"
            ) from None
        for size in shape:
            check_int("shape", size, 1)
    if int(np.prod(shape)) != target.dim:
        raise ValueError(f"shape: {shape} has not the target's {target.dim} entries")
    # A level holds its n samples, their noised copies and both scores.
    check_memory("n", 4.0 * n * target.dim * 4, "use fewer samples per level")

    # One compiled level at a time, reused across levels and calls: memory stays that of one
    # level's n samples.
    results = [
        _level(jax.random.fold_in(key, i), sigma, score_fn, target, n, shape)
        for i, sigma in enumerate(jnp.asarray(sigmas))
    ]
    ratios, ses = (np.asarray([r[k] for r in results], dtype=np.float64) for k in (0, 1))
    if not np.all(np.isfinite(ratios)):
        bad = float(sigmas[np.argmin(np.isfinite(ratios))])
        raise ValueError(
            f"score_fn: its relative error at sigma = {bad:g} is {ratios[~np.isfinite(ratios)][0]}"
            "; check that the score is finite there"
        )
    return ScoreErrorProfile(sigmas, ratios, ses, n)
