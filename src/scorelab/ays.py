r"""Align-Your-Steps grids: a sigma grid that minimises a bound on the sampler's
discretisation error, for one data set and one score, saved and reused by name.

**The bound.** The reverse VE SDE :math:`dx = -2\sigma\, \nabla \log q_\sigma(x)\, d\sigma +
\sqrt{2\sigma}\, d\bar W` (EDM's, Karras et al., 2022, eq. 6 with :math:`\beta = 1`) has drift
:math:`2 (x - D(x, \sigma)) / \sigma`. A sampler that holds the denoiser at the top of each
interval, :math:`D(x_{\sigma_i}, \sigma_i)` on :math:`[\sigma_{i-1}, \sigma_i]` (stochastic
DDIM; Sabour et al., 2024, Sec. 3), has drift error :math:`2 (D(x_\sigma, \sigma) -
D(x_{\sigma_i}, \sigma_i)) / \sigma`, and Girsanov's theorem bounds the KL divergence between
the true and the discretised path laws by half the integral of its square over
:math:`g^2 = 2\sigma`:

.. math::
    \mathrm{KLUB}(\sigma_0, \dots, \sigma_{N-1}) = \sum_{i=1}^{N-1}
    \int_{\sigma_{i-1}}^{\sigma_i} \frac{1}{\sigma^3}\,
    \mathbb{E}\,\big\| D(x_\sigma, \sigma) - D(x_{\sigma_i}, \sigma_i) \big\|^2 \, d\sigma,

with :math:`x_\sigma = x_0 + \sigma z` and :math:`x_{\sigma_i} = x_\sigma + \sqrt{\sigma_i^2 -
\sigma^2}\, z'` on one forward path (their eq. 9, in VE). It is estimated by Monte Carlo with
:math:`\sigma` log-uniform in each interval (:math:`d\sigma = \sigma\, d\log\sigma`) and
**common random numbers** (one key for every grid compared), so that two grids differ by their
bounds, not by their draws.

**The search.** The ends stay at ``sigma_min`` and ``sigma_max``; each interior level in turn
moves to the best of ``n_candidates`` log-spaced positions between its neighbours (coordinate
descent, their Sec. 3.3), for ``n_sweeps`` sweeps from the geometric grid. A grid of another
size is the saved one interpolated linearly in :math:`\log\sigma` against its index (their
Sec. 3.4).

Hand-written: no well-kept library optimises a grid; the paper's code is for images and
learned EDM models.

References:
    Sabour, A., Fidler, S. & Kreis, K. (2024). Align Your Steps: Optimizing Sampling Schedules
    in Diffusion Models. https://arxiv.org/abs/2404.14507
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from tqdm.auto import tqdm

from scorelab._keys import typed_key
from scorelab._validate import (
    all_finite,
    check_callable,
    check_int,
    check_memory,
    first_line,
    is_real_dtype,
    is_traced,
)
from scorelab._xla_cpu import convolution_jit, takes_convolutions
from scorelab.noise import geometric_sigmas, write_saved_grid


def _data(x_0, name: str = "x_0") -> Array:
    """``x_0`` as a float array of at least one example (``(m, *S)``, ``m >= 1``), integer or
    float64 data cast to float32 (the grid is cast to the data's dtype: float64 warned and
    was truncated, integers truncated the grid itself), checked finite when concrete.

    Raises:
        TypeError: naming ``name``, for anything but real numbers.
        ValueError: naming ``name``, for no examples or a NaN or infinite entry (every bound
            was NaN, and the search returned the geometric grid as optimised).
    """
    dtype = getattr(x_0, "dtype", None)
    if dtype is None:
        try:
            x_0 = np.asarray(x_0)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{name}: expected an array of data samples (m, *S), got {type(x_0).__name__} "
                f"({first_line(error)})"
            ) from None
        dtype = x_0.dtype
    if not is_real_dtype(dtype):
        raise TypeError(f"{name}: expected real-valued data samples (m, *S), got dtype {dtype}")
    if np.ndim(x_0) < 1 or np.shape(x_0)[0] < 1 or np.size(x_0) == 0:
        raise ValueError(
            f"{name}: expected at least one data sample (m, *S) with m >= 1, got shape "
            f"{np.shape(x_0)}"
        )
    if np.dtype(dtype).kind != "f" or np.dtype(dtype).itemsize > 4:
        x_0 = jnp.asarray(x_0, jnp.float32)
    else:
        x_0 = jnp.asarray(x_0)
    if all_finite(x_0) is False:
        raise ValueError(f"{name}: holds NaN or infinite values; give finite data samples")
    return x_0


def _check_denoiser(denoise_fn, x_0: Array, dtype) -> None:
    """Refuse a ``denoise_fn`` that is not callable or whose output on one example is not of
    the example's shape (``x[:1]`` was broadcast into a finite, meaningless bound); traced
    once on shapes, nothing is computed."""
    check_callable("denoise_fn", denoise_fn, "denoiser D(x, sigma)")
    example = jax.ShapeDtypeStruct(x_0.shape[1:], x_0.dtype)
    out = jax.eval_shape(denoise_fn, example, jax.ShapeDtypeStruct((), dtype))
    if getattr(out, "shape", None) != example.shape:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"denoise_fn: returned {got} on one example of shape {example.shape}; a denoiser "
            "returns its input's shape"
        )


def _sigmas(sigmas, minimum: int) -> Array:
    """``sigmas`` as a float ``(N,)`` array of ``N >= minimum`` levels, checked positive,
    finite and strictly ascending when concrete (a descending grid gave a NaN bound)."""
    if not hasattr(sigmas, "dtype"):
        sigmas = np.asarray(sigmas) if _real_list(sigmas) else None
    if sigmas is None or not is_real_dtype(sigmas.dtype):
        raise TypeError(f"sigmas: expected an ascending grid of noise levels (N,), got {sigmas!r}")
    if np.ndim(sigmas) != 1 or np.shape(sigmas)[0] < minimum:
        raise ValueError(
            f"sigmas: expected an ascending grid of at least {minimum} noise levels (N,), got "
            f"shape {np.shape(sigmas)}"
        )
    if np.dtype(sigmas.dtype).kind != "f" or np.dtype(sigmas.dtype).itemsize > 4:
        sigmas = jnp.asarray(sigmas, jnp.float32)
    sigmas = jnp.asarray(sigmas)
    if not is_traced(sigmas):
        levels = np.asarray(sigmas)
        if not (np.all(np.isfinite(levels)) and levels[0] > 0 and np.all(np.diff(levels) > 0)):
            shown = np.array2string(levels, separator=", ", threshold=8)
            raise ValueError(f"sigmas: expected finite levels > 0, strictly ascending, got {shown}")
    return sigmas


def _real_list(values) -> bool:
    """Whether ``values`` converts to an array of real numbers (not strings or objects)."""
    try:
        return is_real_dtype(np.asarray(values).dtype)
    except (TypeError, ValueError):
        return False


def klub_terms(denoise_fn: Callable, x_0: Array, key: Array, sigmas: Array, n_inner: int) -> Array:
    r"""The Monte-Carlo terms of each interval of the bound (module docstring), ``(N - 1,)``.

    Args:
        denoise_fn: ``D(x, sigma)`` on one example ``x`` of shape ``S``, a vector ``(d,)`` or
            an image ``(C, H, W)``, e.g. Tweedie's :math:`x + \sigma^2 s(x, \sigma)` of a score.
        x_0: ``(m, *S)`` data samples (the same for every grid compared).
        key: PRNG key of the forward paths (the same for every grid compared).
        sigmas: ``(N,)`` ascending grid.
        n_inner: :math:`\sigma` draws per interval and data point.

    Returns:
        ``(N - 1,)`` estimates of :math:`\int_{\sigma_{i-1}}^{\sigma_i} \sigma^{-3}
        \mathbb{E}\|\Delta D\|^2 d\sigma`.

    Raises:
        TypeError: naming the argument, for a ``key`` that is no PRNG key, data or levels that
            are not real arrays, or a ``denoise_fn`` that is not callable.
        ValueError: naming the argument, for no data or non-finite data, fewer than 2 levels
            or levels not positive and strictly ascending, ``n_inner < 1``, a denoiser
            returning another shape than its input, or a NaN or infinite result (checked on
            concrete values only).
    """
    check_int("n_inner", n_inner, 1)
    # the draws and the denoiser's values of every interval, as optimise_grid counts them
    check_memory(
        "n_inner",
        4.0 * 4 * np.size(x_0) * n_inner * max(1, np.size(sigmas) - 1),
        "use fewer data points or inner draws",
    )
    key = typed_key(key)
    x_0 = _data(x_0)
    sigmas = _sigmas(sigmas, 2)
    _check_denoiser(denoise_fn, x_0, sigmas.dtype)
    terms = _klub_terms(denoise_fn, x_0, key, sigmas, n_inner)
    if all_finite(terms) is False:
        raise ValueError(
            "denoise_fn: the bound is NaN or infinite on these sigmas; check that the "
            "denoiser is finite on x_0 noised up to the largest level"
        )
    return terms


def _klub_terms(denoise_fn: Callable, x_0: Array, key: Array, sigmas: Array, n_inner: int):
    """:func:`klub_terms` on checked arguments."""
    draws = (sigmas.shape[0] - 1, n_inner, x_0.shape[0])  # (interval, draw, point)
    state = x_0.shape[1:]  # S: the bound is a squared norm over every axis of an example
    key_u, key_z, key_w = jax.random.split(key, 3)
    # Uniform variates and normals drawn once per (interval, draw, point): a grid is only a
    # change of variables of the same random numbers.
    u = jax.random.uniform(key_u, draws, sigmas.dtype)
    z = jax.random.normal(key_z, (*draws, *state), sigmas.dtype)
    w = jax.random.normal(key_w, (*draws, *state), sigmas.dtype)
    lo, hi = jnp.log(sigmas[:-1]), jnp.log(sigmas[1:])
    sigma = jnp.exp(lo[:, None, None] + u * (hi - lo)[:, None, None])  # log-uniform
    top = sigmas[1:][:, None, None]
    per_example = lambda a: a.reshape(*draws, *(1,) * len(state))  # noqa: E731
    x_sigma = x_0 + per_example(sigma) * z
    x_top = x_sigma + per_example(jnp.sqrt(top**2 - sigma**2)) * w
    flat = lambda a: a.reshape(-1, *a.shape[3:])  # noqa: E731
    denoise = jax.vmap(denoise_fn)
    gap = denoise(flat(x_sigma), flat(sigma)) - denoise(
        flat(x_top), flat(jnp.broadcast_to(top, sigma.shape))
    )
    squared = jnp.sum(gap.reshape(*draws, -1) ** 2, axis=-1)
    # d sigma / sigma^3 = d log sigma / sigma^2, and the log-uniform density is 1 / (hi - lo).
    return jnp.mean(squared / sigma**2, axis=(1, 2)) * (hi - lo)


def optimise_grid(
    denoise_fn: Callable,
    x_0: Array,
    key: Array,
    n_levels: int,
    sigma_min: float,
    sigma_max: float,
    *,
    n_inner: int = 4,
    n_candidates: int = 16,
    n_sweeps: int = 3,
    progress: bool = False,
) -> tuple[np.ndarray, float, float]:
    r"""The grid of ``n_levels`` minimising the bound (coordinate descent, module docstring).

    Args:
        denoise_fn: ``D(x, sigma)`` on one example of shape ``S`` (a vector or an image).
        x_0: ``(m, *S)`` data samples.
        key: PRNG key of the bound's common random numbers.
        n_levels: ``N >= 3`` (with 2 levels only the ends remain).
        sigma_min, sigma_max: the fixed ends, ``0 < sigma_min < sigma_max``.
        n_inner: :math:`\sigma` draws per interval and point.
        n_candidates: positions tried for each level in a sweep.
        n_sweeps: passes over the interior levels.
        progress: show a tqdm bar over the level moves (``n_sweeps`` x ``(N - 2)``) and the
            bound's intervals (``N - 1`` at the start and at the end).

    Returns:
        ``(sigmas, bound, bound_geometric)``: the ascending ``(N,)`` float64 grid, its bound and
        the geometric grid's (the start), both on the same random numbers.

    Raises:
        TypeError: naming the argument, for a ``key`` that is no PRNG key, data that is not a
            real array, a non-integer ``n_levels`` or a ``denoise_fn`` that is not callable.
        ValueError: for ``n_levels < 3``, ``n_inner``, ``n_candidates`` or ``n_sweeps`` below
            1, a bad range, no data or non-finite data, a denoiser returning another shape
            than its input, more memory than available for the bound's draws, or a NaN or
            infinite bound of the starting grid.
    """
    if isinstance(n_levels, bool) or not isinstance(n_levels, numbers.Integral):
        raise TypeError(f"n_levels: expected an integer >= 3, got {n_levels!r}")
    if n_levels < 3:
        raise ValueError(f"n_levels: an optimised grid needs at least 3 levels, got {n_levels}")
    for name, value in (("inner", n_inner), ("candidates", n_candidates), ("sweeps", n_sweeps)):
        check_int(f"grid.{name}", value, 1)
    key = typed_key(key)
    x_0 = _data(x_0)
    # The bound's draws: n_inner noised copies of x_0 for each of n_candidates positions.
    check_memory(
        "grid.n",
        4.0 * 4 * x_0.size * n_inner * n_candidates,
        "use fewer data points, inner draws or candidates",
    )
    sigmas = np.asarray(geometric_sigmas(n_levels, sigma_min, sigma_max), np.float64)
    sigmas[[0, -1]] = sigma_min, sigma_max
    _check_denoiser(denoise_fn, x_0, x_0.dtype)

    # Images are what convolution networks take: their program compiles with XLA:CPU's own
    # convolutions, as the samplers' does (scorelab._xla_cpu).
    @(convolution_jit if takes_convolutions(x_0) else jax.jit)
    def pair_cost(trio, keys):  # the two intervals around a moved level, for each candidate
        return jax.vmap(lambda s: jnp.sum(_klub_terms(denoise_fn, x_0, keys, s, n_inner)))(trio)

    keys = jax.random.split(key, n_levels - 1)

    def cost(grid, bar) -> float:  # one interval at a time: the bar moves on a long grid
        total = 0.0
        for i in range(n_levels - 1):
            total += float(pair_cost(jnp.asarray(grid[None, i : i + 2], x_0.dtype), keys[i])[0])
            bar.update()
        return total

    ramp = (np.arange(n_candidates) + 1.0) / (n_candidates + 1.0)
    moves = n_sweeps * (n_levels - 2)
    # The bar counts the bound's intervals, at the start and the end, and the level moves.
    with tqdm(total=moves + 2 * (n_levels - 1), desc="ays grid", unit="step",
              disable=not progress) as bar:  # fmt: skip
        start = cost(sigmas, bar)
        if not math.isfinite(start):  # every comparison with NaN is false: nothing would move
            raise ValueError(
                f"denoise_fn: the bound of the geometric grid is {start}; check that the "
                "denoiser is finite on x_0 noised up to sigma_max"
            )
        for _ in range(n_sweeps):
            moved = False
            for i in range(1, n_levels - 1):
                lo, hi = np.log(sigmas[i - 1]), np.log(sigmas[i + 1])
                candidates = np.exp(lo + ramp * (hi - lo))
                trios = np.stack(
                    [np.broadcast_to(sigmas[i - 1], candidates.shape), candidates,
                     np.broadcast_to(sigmas[i + 1], candidates.shape)], axis=1
                )  # fmt: skip
                # Interval i-1 and i keep their own keys: the draws follow the interval.
                costs = pair_cost(jnp.asarray(trios[:, :2], x_0.dtype), keys[i - 1]) + pair_cost(
                    jnp.asarray(trios[:, 1:], x_0.dtype), keys[i]
                )
                current = float(
                    pair_cost(jnp.asarray(sigmas[None, i - 1 : i + 1], x_0.dtype), keys[i - 1])[0]
                    + pair_cost(jnp.asarray(sigmas[None, i : i + 2], x_0.dtype), keys[i])[0]
                )
                best = int(np.argmin(np.asarray(costs)))
                if float(costs[best]) < current:
                    sigmas[i] = candidates[best]
                    moved = True
                bar.update()
                moves -= 1
            if not moved:  # the costs are fixed: every later sweep would move nothing either
                break
        bar.update(moves)  # the sweeps left out
        return sigmas, cost(sigmas, bar), start


def save_grid(path, sigmas, *, bound: float, bound_geometric: float, about: dict[str, Any]):
    """Write an optimised grid as JSON (atomically): ``sigmas`` ascending, the bounds, and
    ``about`` (target, score, settings) for the record.

    Args:
        path: the ``.json`` file.
        sigmas: ``(N,)`` ascending grid, ``N >= 3`` (:func:`optimise_grid`'s).
        bound, bound_geometric: the grid's bound and the geometric grid's, finite.
        about: how it was made, JSON-serialisable, without the file's own keys (``kind``,
            ``sigmas``, ``bound``, ``klub``, ``klub_geometric``).

    Returns:
        The path written.

    Raises:
        TypeError: for ``about`` not a dict with string keys, or bounds that are not numbers.
        ValueError: naming the argument, before writing, for levels that are not an
            ascending grid of at least 3 finite positive levels, a NaN or infinite bound, or a
            reserved key in ``about``.
    """
    record = {
        "kind": "ays",
        "bound": "KLUB, Sabour et al. (2024) eq. 9 in VE (scorelab.ays)",
        "klub": bound,
        "klub_geometric": bound_geometric,
    }
    finite = {"bound": bound, "bound_geometric": bound_geometric}
    return write_saved_grid(path, sigmas, record, about, minimum=3, finite=finite)


__all__ = ["klub_terms", "optimise_grid", "save_grid"]
