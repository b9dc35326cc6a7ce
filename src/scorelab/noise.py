r"""Noise processes and their sigma grids.

The perturbation kernel is :math:`q(x_t \mid x_0) = \mathcal{N}(\alpha_t x_0, \sigma_t^2 I)`.
Variance-exploding (VE) noise has :math:`\alpha_t = 1`; variance-preserving (VP) noise has
:math:`\alpha_t = \sqrt{\bar\alpha_t}`, :math:`\sigma_t = \sqrt{1 - \bar\alpha_t}`.

Grids are plain arrays, **ascending**: ``sigmas[0] = sigma_min`` and ``sigmas[-1] = sigma_max``,
so ``sigmas[i]`` is the tutorial's :math:`\upsilon_i`. Samplers walk them from the top down.

References:
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. https://arxiv.org/abs/1907.05600
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._files import write_json
from scorelab._keys import typed_key
from scorelab._validate import (
    FLOAT32_MAX,
    SIGMA_FLOOR,
    SIGMA_LIMIT,
    check_int,
    check_memory,
    check_real,
    check_sigma,
    first_line,
    is_real_dtype,
    is_traced,
    real_number,
    traced_message,
)

__all__ = [
    "ve_perturb",
    "vp_perturb",
    "sample_ve_noise",
    "karras_sigmas",
    "geometric_sigmas",
    "GRIDS",
    "sigma_grid",
    "check_sigma_range",
    "GridMergeError",
    "RhoError",
    "VP_SCHEDULES",
    "vp_betas",
    "vp_alphas_cumprod",
    "vp_alpha_sigma",
    "VP_BETA_MIN",
    "VP_BETA_MAX",
    "vp_sde_sigma",
    "vp_sde_time",
    "vp_sigmas",
    "log_snr_sigmas",
]


def ve_perturb(x_0: Array, sigma, eps: Array) -> Array:
    r"""VE perturbation: a sample of :math:`q(x_\sigma \mid x_0) = \mathcal{N}(x_0, \sigma^2 I)`.

    .. math::
        x_\sigma = x_0 + \sigma \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I).

    Args:
        x_0: clean data, shape ``(d,)`` (or any shape matching ``eps``), float.
        sigma: noise level, scalar or broadcastable to ``x_0``.
        eps: standard normal noise, same shape as ``x_0``.

    Returns:
        ``x_sigma``, the broadcast shape of ``x_0``, ``sigma`` and ``eps`` (``x_0``'s shape
        for a scalar ``sigma``), in their promoted dtype.

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600
    """
    return x_0 + sigma * eps


def vp_perturb(x_0: Array, alpha_bar, eps: Array) -> Array:
    r"""VP perturbation: a sample of DDPM's forward marginal :math:`q(x_t \mid x_0)` (eq. 4).

    .. math::
        x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon,
        \qquad \varepsilon \sim \mathcal{N}(0, I).

    Args:
        x_0: clean data, any shape (e.g. ``(d,)`` or ``(B, C, H, W)``), float.
        alpha_bar: :math:`\bar\alpha_t \in [0, 1]`, scalar or broadcastable to ``x_0``
            (not validated; values outside ``[0, 1]`` give NaN).
        eps: standard normal noise, same shape as ``x_0``.

    Returns:
        ``x_t``, the broadcast shape of ``x_0``, ``alpha_bar`` and ``eps``.

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
    """
    return jnp.sqrt(alpha_bar) * x_0 + jnp.sqrt(1.0 - alpha_bar) * eps


def check_sigma_range(sigma_min: float, sigma_max: float) -> None:
    """Check the end points of a sigma grid: ``0 < sigma_min < sigma_max``, both finite.

    Args:
        sigma_min: smallest noise level, Python or 0-d array float.
        sigma_max: largest noise level, Python or 0-d array float.

    Raises:
        ValueError: if either is not finite, ``sigma_min <= 0`` or ``sigma_min >= sigma_max``;
            the message names the field.
    """
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if is_traced(value):
            raise TypeError(traced_message(name))
        if np.ndim(value) or not is_real_dtype(np.asarray(value).dtype):
            raise TypeError(f"{name}: expected a real number, got {value!r}")
    # On the host: jnp.isfinite of a Python float is a tracer inside a caller's jit.
    if not (math.isfinite(float(sigma_min)) and math.isfinite(float(sigma_max))):
        raise ValueError(f"sigma_min and sigma_max must be finite, got {sigma_min}, {sigma_max}")
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min} >= {sigma_max}")
    check_sigma("sigma_min", float(sigma_min))
    check_sigma("sigma_max", float(sigma_max))


MAX_LEVELS = 2**31 - 1
"""The most levels a grid may have: JAX indexes in int32 (``10**12`` levels were truncated to
int32 with a warning, then the interpreter aborted)."""


def _check_n(n: int) -> None:
    """Refuse a level count that is not an integer ``>= 2`` (2.0 failed in linspace), or that
    JAX cannot index or memory cannot hold (``10**12`` levels, a 4 TB grid, aborted the
    interpreter), before anything is allocated."""
    if isinstance(n, bool) or not hasattr(n, "__index__") or n < 2:
        raise ValueError(f"n: a sigma grid needs an integer n >= 2 levels, got {n!r}")
    if n > MAX_LEVELS:
        raise ValueError(f"n: a sigma grid holds at most 2**31 - 1 levels, got {n!r}")
    # A few float32 arrays of n levels (the ramp, its transform, the grid, a float64 copy).
    check_memory("n", 32.0 * int(n), f"use fewer than {n} levels")


class RhoError(ValueError):
    """A grid's ``rho`` refused (not a finite number > 0, or overflowing ``sigma_max``): a
    subclass, so that a configuration names its ``rho`` field without reading the message."""


class GridMergeError(ValueError):
    """A grid whose float32 levels merge or overflow: the joint fault of its size, range and
    ``rho``, so that a configuration blames none of those fields alone (nor the grid's
    name)."""


def _check_rho(rho: float) -> None:
    real = not np.ndim(rho) and is_real_dtype(np.asarray(rho).dtype)
    if not (real and math.isfinite(float(rho)) and rho > 0):  # NaN passed "rho <= 0"
        raise RhoError(f"rho must be a finite number > 0, got {rho!r}")


def _built_on_the_host(grid_fn):
    """Decorate a grid builder: its levels are computed eagerly even inside a caller's ``jit``
    (a grid is a constant: its checks compare values, and ``default_sigmas(n)`` written in a
    jitted function failed on a Python constant); a traced argument is named
    (:func:`scorelab._validate.traced_message`)."""

    @functools.wraps(grid_fn)
    def build(*args, **kwargs):
        with jax.ensure_compile_time_eval():
            return grid_fn(*args, **kwargs)

    return build


def _pinned(sigmas: Array, sigma_min: float, sigma_max: float) -> Array:
    """``sigmas`` with its end points pinned, as float32, checked ascending there: levels
    that merge in float32 (a range of a few ulps, an extreme ``rho``) were returned and
    sampled to NaN.

    Raises:
        GridMergeError: naming the range, when the float32 levels are not finite and strictly
            ascending.
    """
    sigmas = sigmas.at[0].set(sigma_min).at[-1].set(sigma_max).astype(jnp.float32)
    levels = np.asarray(sigmas)
    if not (np.all(np.isfinite(levels)) and np.all(np.diff(levels) > 0)):
        raise GridMergeError(
            f"sigma grid of {levels.size} levels from {sigma_min} to {sigma_max}: its levels "
            "merge or overflow in float32; widen the range, use fewer levels, or a milder rho"
        )
    return sigmas


@_built_on_the_host
def karras_sigmas(
    n: int, sigma_min: float = 0.02, sigma_max: float = 10.0, rho: float = 5.0
) -> Array:
    r"""The tutorial's sigma ladder, Karras et al. (2022) eq. 5, ascending.

    .. math::
        \sigma_i = \Big(\sigma_{\min}^{1/\rho} + \tfrac{i}{n-1}
        \big(\sigma_{\max}^{1/\rho} - \sigma_{\min}^{1/\rho}\big)\Big)^{\rho},
        \quad i = 0, \dots, n-1.

    The defaults are the tutorial's (sigma_min 0.02, sigma_max 10, rho 5); EDM uses rho = 7.
    Note that sigma_max = 10 is too small for data with modes at +-10: see
    :func:`scorelab.samplers.ve_prior` and the README.

    Args:
        n: number of levels, ``>= 2``.
        sigma_min, sigma_max: end points, ``0 < sigma_min < sigma_max``.
        rho: curvature; ``rho = 1`` is uniform, larger concentrates levels near sigma_min.

    Returns:
        ``(n,)`` float32 array, ``sigmas[0] = sigma_min``, ``sigmas[-1] = sigma_max``.

    Raises:
        ValueError: if ``n`` is not an integer ``>= 2``, the range is invalid
            (:func:`check_sigma_range`), ``rho`` is not a finite number ``> 0``, or
            the levels merge or overflow in float32.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    _check_n(n)
    check_sigma_range(sigma_min, sigma_max)
    _check_rho(rho)
    ramp = jnp.linspace(0.0, 1.0, n)
    try:
        lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    except OverflowError:  # a Python float's power
        raise RhoError(f"rho {rho!r}: sigma_max ** (1 / rho) overflows; raise rho") from None
    sigmas = (lo + ramp * (hi - lo)) ** rho
    # Pin the end points: float rounding of x**(1/rho)**rho is a few ulps off.
    return _pinned(sigmas, sigma_min, sigma_max)


@_built_on_the_host
def geometric_sigmas(n: int, sigma_min: float = 0.02, sigma_max: float = 10.0) -> Array:
    r"""Geometric sigma ladder, ascending (Song & Ermon, 2019): uniform in :math:`\log\sigma`.

    .. math::
        \sigma_i = \sigma_{\min} \Big(\frac{\sigma_{\max}}{\sigma_{\min}}\Big)^{i/(n-1)},
        \quad i = 0, \dots, n-1,

    the :math:`\rho \to \infty` limit of :func:`karras_sigmas`. Computed as
    ``exp(linspace(log sigma_min, log sigma_max, n))`` with the end points pinned exactly.

    Args:
        n: number of levels, integer ``>= 2``.
        sigma_min, sigma_max: end points, ``0 < sigma_min < sigma_max``.

    Returns:
        ``(n,)`` float32 array, ``sigmas[0] = sigma_min``, ``sigmas[-1] = sigma_max``.

    Raises:
        ValueError: if ``n`` is not an integer ``>= 2`` or the range is invalid
            (:func:`check_sigma_range`).

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600
    """
    _check_n(n)
    check_sigma_range(sigma_min, sigma_max)
    sigmas = jnp.exp(jnp.linspace(jnp.log(sigma_min), jnp.log(sigma_max), n))
    return _pinned(sigmas, sigma_min, sigma_max)


@_built_on_the_host
def polyexponential_sigmas(
    n: int, sigma_min: float = 0.02, sigma_max: float = 10.0, rho: float = 1.0
) -> Array:
    r"""k-diffusion's polyexponential grid, ascending: a power ``rho`` of the ramp in
    :math:`\log\sigma`.

    .. math::
        \sigma_i = \exp\Big(\log\sigma_{\min} + \big(\tfrac{i}{n-1}\big)^{\rho}
        \log\frac{\sigma_{\max}}{\sigma_{\min}}\Big), \quad i = 0, \dots, n-1,

    k-diffusion's ``get_sigmas_polyexponential`` read from the bottom up (without its
    appended 0: scorelab's samplers step to 0 themselves). ``rho = 1`` is
    :func:`geometric_sigmas`; ``rho > 1`` puts more levels near ``sigma_min``.

    Args:
        n: number of levels, integer ``>= 2``.
        sigma_min, sigma_max: end points, ``0 < sigma_min < sigma_max``.
        rho: the exponent, ``> 0``.

    Returns:
        ``(n,)`` float32 array, ``sigmas[0] = sigma_min``, ``sigmas[-1] = sigma_max``.

    Raises:
        ValueError: if ``n`` is not an integer ``>= 2``, the range is invalid
            (:func:`check_sigma_range`), ``rho`` is not a finite number ``> 0``, or
            the levels merge or overflow in float32.

    References:
        Crowson, K. k-diffusion, ``k_diffusion/sampling.py``, ``get_sigmas_polyexponential``.
        https://github.com/crowsonkb/k-diffusion
    """
    _check_n(n)
    check_sigma_range(sigma_min, sigma_max)
    _check_rho(rho)
    ramp = jnp.linspace(0.0, 1.0, n) ** rho
    sigmas = jnp.exp(jnp.log(sigma_min) + ramp * (jnp.log(sigma_max) - jnp.log(sigma_min)))
    return _pinned(sigmas, sigma_min, sigma_max)


GRIDS = ("geometric", "karras", "vp", "polyexponential")
"""Names accepted by :func:`sigma_grid`; it also takes a saved grid (:func:`saved_sigmas`)."""

RHO_GRIDS = ("karras", "polyexponential")
"""The grids of :data:`GRIDS` that ``rho`` shapes; the others ignore it."""


def check_rho_shapes(field: str, grid: str, error: type[ValueError] = ValueError) -> None:
    """Refuse a ``rho`` given (as ``field``) for a ``grid`` it does not shape: ``--rho 3`` on
    the geometric grid sampled the geometric grid and said nothing."""
    if grid not in RHO_GRIDS:
        raise error(
            f"{field}: the {grid!r} grid has no rho (it shapes the {' and '.join(RHO_GRIDS)} "
            "grids); leave it out, or choose one of those"
        )


AYS_PREFIX = "ays:"
"""``ays:NAME`` names a grid bundled with scorelab (``scorelab/grids/NAME.json``)."""

GRIDS_DIR = Path(__file__).parent / "grids"
"""Where the bundled optimised grids live."""


def saved_grid_path(name: str) -> Path:
    """The file of a saved grid: ``ays:NAME`` (bundled, :data:`GRIDS_DIR`) or a ``.json``
    path; ``ValueError`` naming the remedy if it is neither or does not exist."""
    if name.startswith(AYS_PREFIX):
        stem = name[len(AYS_PREFIX) :]
        path = GRIDS_DIR / f"{stem}.json"
        if not stem or Path(stem).name != stem or not path.is_file():
            bundled = ", ".join(sorted(AYS_PREFIX + p.stem for p in GRIDS_DIR.glob("*.json")))
            raise ValueError(f"grid {name!r}: no such bundled grid; bundled: {bundled or 'none'}")
        return path
    path = Path(name)
    if path.suffix != ".json" or not path.is_file():
        raise ValueError(
            f"grid {name!r}: not one of {', '.join(GRIDS)}, an {AYS_PREFIX}NAME grid or an "
            "existing .json grid file (scorelab grid makes one)"
        )
    return path


def read_saved_grid(name: str) -> np.ndarray:
    """The levels of a saved grid (``ays:NAME`` or a ``.json`` file of ``scorelab grid``),
    ``(M,)`` float64, ascending.

    Raises:
        ValueError: naming the grid and the remedy, for a missing file, one that is not JSON or
            has no ``sigmas`` list, or levels that are not at least 2 ascending positive
            numbers finite in float32.
    """
    return check_grid_levels(
        _saved_grid_record(name)["sigmas"], f"grid {name!r} sigmas", "make one with scorelab grid"
    )


def check_grid_levels(values, what: str, remedy: str, minimum: int = 2) -> np.ndarray:
    """``values`` as ``(M,)`` float64 levels of a saved grid, checked as a sampler takes them:
    a list or 1-D array of at least ``minimum`` real numbers, finite, positive and strictly
    ascending in float32 (where the levels are sampled: 1e-300 is 0 there), its ends within
    the noise levels' range (:func:`scorelab._validate.check_sigma`). The one check of a grid
    read (:func:`read_saved_grid`) and written (``scorelab.ays.save_grid``,
    ``scorelab.ld3.save_learned_grid``): no grid is written that a sampler refuses later.

    Raises:
        ValueError: naming ``what`` and ending with ``remedy``.
    """
    numbers_only = isinstance(values, list | tuple | np.ndarray | jax.Array) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)
        for v in np.asarray(values, object).reshape(-1)
    )
    try:
        saved = np.asarray(values, np.float64) if numbers_only else np.zeros(0)
    except OverflowError:  # an integer past float64's range: "int too large to convert"
        saved = np.array([np.inf])
    finite = saved.ndim == 1 and saved.size and np.all(np.abs(saved) <= FLOAT32_MAX)
    as32 = saved.astype(np.float32) if finite else saved
    if saved.size < minimum or not finite or not np.all(np.diff(as32) > 0) or as32[0] <= 0:
        raise ValueError(
            f"{what}: expected a list of at least {minimum} ascending positive numbers (finite "
            f"in float32); {remedy}"
        )
    check_sigma(f"{what}: the smallest level", float(saved[0]))
    check_sigma(f"{what}: the largest level", float(saved[-1]))
    return saved


def _saved_grid_record(name: str) -> dict[str, Any]:
    """The JSON object of a saved grid, with a ``sigmas`` entry; ``ValueError`` naming the
    grid and the remedy otherwise."""
    path = saved_grid_path(name)
    try:
        record = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM, as read_json
    except (ValueError, OSError, RecursionError) as error:
        message = first_line(error)
        raise ValueError(
            f"grid {name!r}: not a grid file ({type(error).__name__}: {message}); make one "
            "with scorelab grid"
        ) from error
    if not isinstance(record, dict) or "sigmas" not in record:  # was "TypeError: list indices"
        raise ValueError(
            f"grid {name!r}: not a grid file (a JSON object with a 'sigmas' list); make one "
            "with scorelab grid"
        )
    return record


def saved_grid_origin(name: str) -> tuple[str | None, str | None]:
    """``(sampler, data)``: the sampler a saved grid was learned for (``scorelab grid --method
    ld3`` records one; an Align-Your-Steps grid serves every sampler) and the data it was made
    for, each ``None`` where the record holds none (a name that is no saved grid, or a file
    that cannot be read, records neither)."""
    with contextlib.suppress(ValueError):
        record = _saved_grid_record(name)
        return tuple(
            v if isinstance(v, str) else None for v in map(record.get, ("sampler", "data"))
        )
    return None, None


def write_saved_grid(
    path,
    sigmas,
    record: dict,
    about: Mapping[str, Any],
    *,
    minimum: int = 2,
    finite: Mapping[str, Any] | None = None,
) -> Path:
    """Write a grid as JSON, atomically, for :func:`read_saved_grid`: ``record`` (what made
    it: ``kind``, its objective and results) and ``about`` (how: the settings, for the record)
    with ``sigmas``, the ``(N,)`` ascending levels, as a list of floats. Everything is checked
    before anything is written. Returns the path written.

    Args:
        path: the ``.json`` file.
        sigmas: the levels, at least ``minimum`` (:func:`check_grid_levels`).
        record: the grid's own fields, e.g. ``{"kind": "ays", "klub": 8.0}``.
        about: JSON-serialisable settings, with string keys none of which is ``kind``,
            ``sigmas`` or a key of ``record`` (an ``about`` key ``sigmas`` replaced the levels).
        minimum: the fewest levels of such a grid.
        finite: argument name -> a value of ``record`` that must be one finite number.

    Raises:
        TypeError: for ``about`` not a mapping with string keys, or a ``finite`` value that
            is not a real number.
        ValueError: naming the argument, for a ``path`` not ending ``.json``, levels that are
            not an ascending grid of ``minimum`` finite positive levels, a NaN or infinite
            ``finite`` value, or a reserved key in ``about``.
    """
    if Path(path).suffix != ".json":  # written, then refused by every reader of grids
        raise ValueError(
            f"{path}: a saved grid is a .json file (sigma_grid reads no other); give a name "
            "ending .json"
        )
    levels = check_grid_levels(sigmas, "sigmas", "give the grid's levels", minimum)
    for name, value in (finite or {}).items():
        _check_finite_number(name, value)
    reserved = ("kind", "sigmas", *(key for key in record if key != "kind"))
    if not isinstance(about, Mapping):
        raise TypeError(f"about: expected a dict of how the grid was made, got {about!r}")
    if not all(isinstance(k, str) for k in about):
        raise TypeError(f"about: expected string keys, got {sorted(map(repr, about))}")
    clashes = sorted(set(about) & set(reserved))
    if clashes:
        raise ValueError(
            f"about: keys {clashes} are reserved (the grid's own fields: "
            f"{', '.join(reserved)}); rename them"
        )
    record = {"kind": record.get("kind"), "sigmas": [float(s) for s in levels], **record, **about}
    return write_json(path, record)


def _check_finite_number(name: str, value) -> None:
    """Raise unless ``value`` is one finite real number (NaN was written as ``null``)."""
    number = real_number(value)
    if number is None:
        raise TypeError(f"{name}: expected a finite number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {number}")


def is_saved_grid(name: str) -> bool:
    """Whether ``name`` names a saved grid (``ays:NAME`` or a ``.json`` path)."""
    return name.startswith(AYS_PREFIX) or name.endswith(".json")


def with_saved_range(fields: Mapping[str, Any], *, levels: bool = False) -> dict[str, Any]:
    """``fields`` (a sampler's or a sweep's settings) with ``sigma_min`` and ``sigma_max``
    defaulting to the ends of its ``grid`` when that is a saved grid: the grid carries its
    range, and another range is refused. With ``levels`` (a sampler's settings), ``n_levels``
    defaults to the grid's own count too. A grid that cannot be read is left to the settings'
    own check, which names why."""
    grid = fields.get("grid")
    if isinstance(grid, str) and is_saved_grid(grid):
        with contextlib.suppress(ValueError):
            saved = read_saved_grid(grid)
            count = {"n_levels": len(saved)} if levels else {}
            return {"sigma_min": float(saved[0]), "sigma_max": float(saved[-1]), **count, **fields}
    return dict(fields)


@_built_on_the_host
def saved_sigmas(name: str, n: int, sigma_min: float, sigma_max: float) -> Array:
    r"""A saved grid (:mod:`scorelab.ays`) with ``n`` levels: itself when it has ``n``, else
    interpolated linearly in :math:`\log\sigma` against the level's relative index
    (Sabour et al., 2024, Sec. 3.4).

    .. math::
        \log\sigma_i = \operatorname{interp}\Big(\tfrac{i}{n-1};\ \tfrac{j}{M-1},
        \log\hat\sigma_j\Big), \quad i = 0, \dots, n-1.

    Args:
        name: ``ays:NAME`` or a path to a ``.json`` grid file.
        n: number of levels, integer ``>= 2``.
        sigma_min, sigma_max: must equal the saved grid's ends (relative 1e-6): the prior and
            the grid share ``sigma_max``.

    Returns:
        ``(n,)`` float32 array, ascending.

    Raises:
        ValueError: for an unknown name, a file that is not a grid, or other ends.

    References:
        Sabour, A., Fidler, S. & Kreis, K. (2024). Align Your Steps: Optimizing Sampling
        Schedules in Diffusion Models. https://arxiv.org/abs/2404.14507
    """
    _check_n(n)
    saved = read_saved_grid(name)
    if not np.allclose([sigma_min, sigma_max], saved[[0, -1]], rtol=1e-6, atol=0):
        raise ValueError(
            f"grid {name!r} spans [{saved[0]:g}, {saved[-1]:g}]; set sigma_min = {saved[0]:g} "
            f"and sigma_max = {saved[-1]:g}"
        )
    if n == saved.size:
        return jnp.asarray(saved, jnp.float32)
    log_sigma = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, saved.size), np.log(saved))
    return jnp.asarray(np.exp(log_sigma), jnp.float32)


@_built_on_the_host
def sigma_grid(
    name: str, n: int, sigma_min: float = 0.02, sigma_max: float = 10.0, rho: float = 5.0
) -> Array:
    r"""The ascending sigma grid called ``name``, dispatched to its builder.

    * ``geometric``: :func:`geometric_sigmas` (uniform in :math:`\log\sigma`, i.e. in log-SNR);
    * ``karras``: :func:`karras_sigmas` with ``rho``;
    * ``vp``: :func:`vp_sigmas` (uniform in the time of Song et al.'s VP SDE, with its default
      ``beta_min``/``beta_max``).
    * ``polyexponential``: :func:`polyexponential_sigmas` with ``rho`` as its exponent
      (k-diffusion's; ``rho = 1`` is ``geometric``);
    * ``ays:NAME`` or a ``.json`` path: a saved optimised grid (:func:`saved_sigmas`).

    Args:
        name: one of :data:`GRIDS`, ``ays:NAME`` or a ``.json`` grid file.
        n: number of levels, integer ``>= 2``.
        sigma_min, sigma_max: end points, ``0 < sigma_min < sigma_max``.
        rho: Karras curvature (``karras``) or the polyexponential exponent.

    Returns:
        ``(n,)`` float32 array, ascending from ``sigma_min`` to ``sigma_max``.

    Raises:
        ValueError: for an unknown ``name``, or from the builder for a bad ``n`` or range.
    """
    if name == "geometric":
        return geometric_sigmas(n, sigma_min, sigma_max)
    if name == "karras":
        return karras_sigmas(n, sigma_min, sigma_max, rho)
    if name == "vp":
        return vp_sigmas(n, sigma_min, sigma_max)
    if name == "polyexponential":
        return polyexponential_sigmas(n, sigma_min, sigma_max, rho)
    if isinstance(name, str) and is_saved_grid(name):
        return saved_sigmas(name, n, sigma_min, sigma_max)
    raise ValueError(f"unknown grid {name!r}; accepted: {', '.join(GRIDS)}, or a saved grid")


def sample_ve_noise(key: Array, x_0: Array, sigma) -> tuple[Array, Array]:
    r"""Draw :math:`\varepsilon \sim \mathcal{N}(0, I)` and perturb ``x_0`` with it (VE).

    .. math::
        x_\sigma = x_0 + \sigma \varepsilon.

    Args:
        key: a ``jax.random`` key (a typed key or a legacy ``uint32`` one).
        x_0: clean data, any shape (e.g. ``(d,)`` or ``(B, d)``); ``eps`` takes its shape and
            dtype.
        sigma: noise level, scalar or broadcastable to ``x_0`` (e.g. ``(B, 1)``).

    Returns:
        ``(x_sigma, eps)``: ``eps`` shaped and typed like ``x_0`` (an integer ``x_0`` or a
        list is taken as an array of JAX's default float); ``x_sigma`` as :func:`ve_perturb`.

    Raises:
        TypeError: for a ``key`` that is not one PRNG key (a seed, a batch of keys:
            JAX's "invalid PRNG key data"; :func:`scorelab._keys.typed_key`).
    """
    key = typed_key(key)
    x_0 = jnp.asarray(x_0)  # a list had no .shape
    if not jnp.issubdtype(x_0.dtype, jnp.inexact):
        x_0 = x_0.astype(jnp.result_type(x_0, 1.0))  # normal() draws floats only
    eps = jax.random.normal(key, x_0.shape, x_0.dtype)
    return ve_perturb(x_0, sigma, eps), eps


# --- Variance-preserving (DDPM) schedules, computed exactly as diffusers computes them. ---

VP_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine")
"""Beta schedules accepted by :func:`vp_betas` (diffusers' names; ``cosine`` is an alias of
``squaredcos_cap_v2``)."""


def _round_fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once to float32, like a hardware fused multiply-add.

    ``a``, ``b``, ``c`` are float32. The float64 product of two float32 numbers is exact; the
    float64 sum is exact up to the TwoSum residual, which decides the rare float32 ties that
    plain double rounding would get wrong.
    """
    prod = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    total = prod + c64
    # TwoSum (Knuth): total + residual == prod + c64 exactly.
    back = total - prod
    residual = (prod - (total - back)) + (c64 - back)
    rounded = total.astype(np.float32)
    toward = np.where(residual > 0, np.inf, -np.inf).astype(np.float32)
    neighbour = np.nextafter(rounded, toward)
    tie = (rounded.astype(np.float64) + neighbour.astype(np.float64)) / 2 == total
    return np.where(tie & (residual != 0), neighbour, rounded)


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    r"""``torch.linspace(start, end, steps, dtype=torch.float32)`` on CPU, to the last bit.

    PyTorch's CPU kernel fills the first half forwards and the second half backwards,

    .. math::
        x_i = \begin{cases} s + h\,i & i < \lfloor n/2 \rfloor \\
        e - h\,(n - 1 - i) & \text{otherwise} \end{cases}, \qquad h = (e - s)/(n - 1),

    all in float32, each element one fused multiply-add on x86-64 builds with AVX2/AVX512
    (``torch.backends.cpu.get_cpu_capability()``; the scalar ``DEFAULT`` build rounds twice
    and can differ by one ulp). ``numpy.linspace`` computes in float64 and differs in the
    last bit for about a third of DDPM's betas, which is why this is hand-written.
    """
    s, e = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([s], np.float32)
    h = np.float32((e - s) / np.float32(steps - 1))
    i = np.arange(steps)
    forward = _round_fma_f32(np.full(steps, h), i.astype(np.float32), np.full(steps, s))
    backward = _round_fma_f32(
        np.full(steps, -h), (steps - 1 - i).astype(np.float32), np.full(steps, e)
    )
    return np.where(i < steps // 2, forward, backward)


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    r"""The cosine schedule of Nichol & Dhariwal (2021, eq. 17), as diffusers'
    ``betas_for_alpha_bar``: :math:`\beta_i = \min(1 - \bar\alpha(t_{i+1})/\bar\alpha(t_i),
    0.999)` with :math:`\bar\alpha(t) = \cos^2\!\big(\tfrac{t + 0.008}{1.008}\tfrac{\pi}{2}\big)`,
    :math:`t_i = i/T`, in Python floats (``math.cos``, as diffusers) then rounded to float32."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(
            1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps),
            max_beta,
        )
        for i in range(num_train_timesteps)
    ]
    return np.asarray(betas, np.float64).astype(np.float32)


def vp_betas(
    schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> np.ndarray:
    r"""DDPM's per-step variances :math:`\beta_1, \dots, \beta_T`, bit for bit as diffusers.

    * ``linear`` (Ho et al., 2020): ``linspace(beta_start, beta_end, T)`` in float32;
    * ``scaled_linear`` (latent diffusion): ``linspace(sqrt(beta_start), sqrt(beta_end), T)**2``;
    * ``squaredcos_cap_v2`` / ``cosine`` (Nichol & Dhariwal, 2021): see :func:`_cosine_betas`
      (``beta_start`` and ``beta_end`` are unused).

    Args:
        schedule: one of :data:`VP_SCHEDULES`.
        num_train_timesteps: ``T >= 1``.
        beta_start, beta_end: end points of the (scaled) linear schedules.

    Returns:
        ``(T,)`` float32 numpy array; index ``t`` is diffusers' timestep ``t``.

    Raises:
        ValueError: for an unknown ``schedule``, ``num_train_timesteps`` not an integer
            ``>= 1``, or (linear schedules) ``beta_start`` or ``beta_end`` not a finite number
            in (0, 1): a variance outside it gave ``alphas_cumprod`` above 1 or NaN.

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
        Nichol, A. & Dhariwal, P. (2021). Improved Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2102.09672
    """
    # NaN, inf, None and True were int()'s errors, or T = 1.
    check_int("num_train_timesteps", num_train_timesteps, 1)
    num_train_timesteps = int(num_train_timesteps)
    check_memory("num_train_timesteps", 16.0 * num_train_timesteps, "use fewer timesteps")
    if schedule in ("linear", "scaled_linear"):
        for name, beta in (("beta_start", beta_start), ("beta_end", beta_end)):
            check_real(name, beta, "a number in (0, 1)", lambda v: 0 < v < 1)
    if schedule == "linear":
        return _torch_linspace_f32(beta_start, beta_end, num_train_timesteps)
    if schedule == "scaled_linear":
        return _torch_linspace_f32(beta_start**0.5, beta_end**0.5, num_train_timesteps) ** 2
    if schedule in ("squaredcos_cap_v2", "cosine"):
        return _cosine_betas(num_train_timesteps)
    raise ValueError(f"unknown VP schedule {schedule!r}; accepted: {', '.join(VP_SCHEDULES)}")


def vp_alphas_cumprod(
    schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> np.ndarray:
    r""":math:`\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)` for :func:`vp_betas`' schedule.

    ``1 - beta`` is taken in float32 and the running product accumulated in float64, then
    rounded to float32, as ``torch.cumprod`` does on CPU (its accumulator type for float32).

    Args:
        schedule: one of :data:`VP_SCHEDULES`.
        num_train_timesteps: ``T >= 1``.
        beta_start, beta_end: end points of the (scaled) linear schedules.

    Returns:
        ``(T,)`` float32 numpy array, decreasing from ``1 - beta_1``.

    Raises:
        ValueError: as :func:`vp_betas`, for an unknown schedule, a bad ``T``, or
            ``beta_start`` or ``beta_end`` outside (0, 1).

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
    """
    alphas = np.float32(1.0) - vp_betas(schedule, num_train_timesteps, beta_start, beta_end)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def vp_alpha_sigma(alphas_cumprod) -> tuple[np.ndarray, np.ndarray]:
    r"""VP signal and noise scales :math:`\alpha_t = \sqrt{\bar\alpha_t}`,
    :math:`\sigma_t = \sqrt{1 - \bar\alpha_t}`, so :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`
    and :math:`\alpha_t^2 + \sigma_t^2 = 1`.

    Args:
        alphas_cumprod: ``(T,)`` array of :math:`\bar\alpha_t \in (0, 1]`.

    Returns:
        ``(alpha_t, sigma_t)``, each shaped like ``alphas_cumprod``, in its dtype.

    Raises:
        ValueError: if any entry of ``alphas_cumprod`` is NaN or lies outside ``[0, 1]``.
        TypeError: for a complex or non-numeric ``alphas_cumprod``.
    """
    alphas_cumprod = np.asarray(alphas_cumprod)
    if not is_real_dtype(alphas_cumprod.dtype):
        # A complex array passed the comparisons on its real part.
        raise TypeError(
            f"alphas_cumprod: expected real numbers in [0, 1], got dtype {alphas_cumprod.dtype}"
        )
    if not np.all((alphas_cumprod >= 0) & (alphas_cumprod <= 1)):  # NaN fails both
        bad = alphas_cumprod[~((alphas_cumprod >= 0) & (alphas_cumprod <= 1))].ravel()[0]
        raise ValueError(f"alphas_cumprod: expected entries in [0, 1], got {float(bad)!r}")
    return np.sqrt(alphas_cumprod), np.sqrt(1 - alphas_cumprod)


# --- VP SDE time and log-SNR grids, as VE levels sigma = sigma_t / alpha_t ------------------------

VP_BETA_MIN = 0.1
"""beta_min of the continuous VP SDE (Song et al., 2021)."""

VP_BETA_MAX = 20.0
"""beta_max of the continuous VP SDE (Song et al., 2021)."""


def _check_nonnegative(field: str, value) -> None:
    """Raise unless the concrete real ``value`` (any shape) has every entry ``>= 0``; a traced
    value (under ``jit`` or ``vmap``) is not checked."""
    if is_traced(value):
        return
    array = np.asarray(value)
    if not is_real_dtype(array.dtype):
        raise TypeError(f"{field}: expected real numbers >= 0, got dtype {array.dtype}")
    if not np.all(array >= 0):  # NaN fails too
        raise ValueError(f"{field}: expected numbers >= 0, got {value!r}")


def _check_betas(beta_min, beta_max) -> None:
    """Raise unless ``0 < beta_min < beta_max``, both finite in float32 (concrete ones; traced
    ones are not checked): ``beta_min > beta_max`` gave a level without a word, negative ones
    NaN, equal ones NaN times, and ``beta_max = 1e39`` an internal 't' of NaN."""
    if is_traced(beta_min) or is_traced(beta_max):
        return
    check_real("beta_min", beta_min, "a number > 0", lambda v: v > 0)
    check_real("beta_max", beta_max, f"a number > beta_min ({beta_min})", lambda v: v > beta_min)


def vp_sde_sigma(t, beta_min: float = VP_BETA_MIN, beta_max: float = VP_BETA_MAX) -> Array:
    r"""The VE level :math:`\sigma(t) = \sigma_t / \alpha_t` of the VP SDE at time ``t``.

    :math:`d x = -\tfrac12 \beta(t) x\, dt + \sqrt{\beta(t)}\, dw` with
    :math:`\beta(t) = \beta_{\min} + t (\beta_{\max} - \beta_{\min})` has
    :math:`\log \alpha_t = -\tfrac14 t^2 (\beta_{\max} - \beta_{\min}) - \tfrac12 t \beta_{\min}`
    and :math:`\sigma_t^2 = 1 - \alpha_t^2`, so

    .. math::
        \sigma(t) = \sqrt{\exp\big(\tfrac12 t^2 (\beta_{\max} - \beta_{\min})
        + t \beta_{\min}\big) - 1}

    (k-diffusion's ``get_sigmas_vp``); ``t`` in [1e-3, 1] spans :math:`\sigma` in
    [0.0105, 152].

    Args:
        t: SDE time(s) :math:`t \ge 0`, scalar or array of any shape.
        beta_min, beta_max: the linear :math:`\beta(t)` of the VP SDE.

    Returns:
        :math:`\sigma(t)`, an array shaped like ``t`` (float32 unless x64 is enabled).

    Raises:
        ValueError: for a concrete ``t`` with an entry NaN or ``< 0`` (a traced ``t`` under
            ``jit`` is not checked): ``t = -1`` gave a level, as ``sigma = 1`` gives a time;
            unless ``0 < beta_min < beta_max``.

    References:
        Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
        Differential Equations, eq. 11 and App. B. https://arxiv.org/abs/2011.13456
    """
    _check_nonnegative("t", t)
    _check_betas(beta_min, beta_max)
    t = jnp.asarray(t)
    return jnp.sqrt(jnp.expm1(0.5 * t**2 * (beta_max - beta_min) + t * beta_min))


def vp_sde_time(sigma, beta_min: float = VP_BETA_MIN, beta_max: float = VP_BETA_MAX) -> Array:
    r"""The VP SDE time of a VE level: the inverse of :func:`vp_sde_sigma`.

    The root :math:`t \ge 0` of
    :math:`\tfrac12 (\beta_{\max} - \beta_{\min}) t^2 + \beta_{\min} t = \log(1 + \sigma^2)`,

    .. math::
        t(\sigma) = \frac{\sqrt{\beta_{\min}^2 + 2 (\beta_{\max} - \beta_{\min})
        \log(1 + \sigma^2)} - \beta_{\min}}{\beta_{\max} - \beta_{\min}}.

    Args:
        sigma: VE level(s) :math:`\sigma \ge 0`, scalar or array of any shape.
        beta_min, beta_max: the linear :math:`\beta(t)` of the VP SDE,
            ``0 < beta_min < beta_max``.

    Returns:
        :math:`t(\sigma)`, an array shaped like ``sigma``.

    Raises:
        ValueError: for a concrete ``sigma`` with an entry NaN or ``< 0`` (a traced one under
            ``jit`` is not checked): ``sigma = -1`` gave the time of ``sigma = 1``; unless
            ``0 < beta_min < beta_max``.

    References:
        Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
        Differential Equations. https://arxiv.org/abs/2011.13456
    """
    _check_nonnegative("sigma", sigma)
    _check_betas(beta_min, beta_max)
    delta = beta_max - beta_min
    log_one_plus = jnp.log1p(jnp.square(jnp.asarray(sigma)))
    return (jnp.sqrt(beta_min**2 + 2.0 * delta * log_one_plus) - beta_min) / delta


@_built_on_the_host
def vp_sigmas(
    n: int,
    sigma_min: float = 0.02,
    sigma_max: float = 80.0,
    beta_min: float = VP_BETA_MIN,
    beta_max: float = VP_BETA_MAX,
) -> Array:
    r"""A grid uniform in the time of the continuous VP SDE, as ascending VE levels.

    .. math::
        \sigma_i = \sigma\big(t_{\min} + \tfrac{i}{n-1} (t_{\max} - t_{\min})\big),
        \qquad t_{\min} = t(\sigma_{\min}),\ t_{\max} = t(\sigma_{\max}),

    with :math:`\sigma(t)` of :func:`vp_sde_sigma` and :math:`t(\sigma)` of
    :func:`vp_sde_time`: Song et al. (2021)'s uniform time steps (their ``t`` from 1e-3 to 1
    is ``sigma_min = 0.0105``, ``sigma_max = 152``). VP samplers run on these levels through
    the conversion of :mod:`scorelab.samplers` (``vp_*``).

    Args:
        n: number of levels, ``>= 2``.
        sigma_min, sigma_max: end points, ``0 < sigma_min < sigma_max``.
        beta_min, beta_max: the VP SDE's :math:`\beta(t)`, ``0 < beta_min < beta_max``.

    Returns:
        ``(n,)`` float32 array, ascending.

    Raises:
        ValueError: for a bad ``n``, sigma range, or unless ``0 < beta_min < beta_max``.

    References:
        Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
        Differential Equations. https://arxiv.org/abs/2011.13456
    """
    _check_n(n)
    check_sigma_range(sigma_min, sigma_max)
    _check_betas(beta_min, beta_max)
    t_min, t_max = (float(vp_sde_time(s, beta_min, beta_max)) for s in (sigma_min, sigma_max))
    sigmas = vp_sde_sigma(jnp.linspace(t_min, t_max, n), beta_min, beta_max)
    return _pinned(sigmas, sigma_min, sigma_max)


@_built_on_the_host
def log_snr_sigmas(n: int, log_snr_min: float, log_snr_max: float) -> Array:
    r"""A grid uniform in the log signal-to-noise ratio, as ascending VE levels.

    The VP level :math:`(\alpha_t, \sigma_t)` has
    :math:`\lambda = \log(\alpha_t^2 / \sigma_t^2) = -2 \log\sigma` in VE terms, so a grid
    uniform in :math:`\lambda` (DPM-Solver's ``logSNR`` steps, Lu et al. 2022) is the
    geometric grid :func:`geometric_sigmas` from :math:`e^{-\lambda_{\max}/2}` to
    :math:`e^{-\lambda_{\min}/2}`; this names it in VP terms.

    Args:
        n: number of levels, ``>= 2``.
        log_snr_min, log_snr_max: :math:`\lambda` at the noisiest and cleanest level.

    Returns:
        ``(n,)`` float32 array, ascending in :math:`\sigma` (descending in :math:`\lambda`).

    Raises:
        ValueError: unless ``log_snr_min < log_snr_max``, or for a bad ``n``.

    References:
        Lu, C. et al. (2022). DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model
        Sampling in Around 10 Steps. https://arxiv.org/abs/2206.00927
    """
    lowest, highest = -2 * math.log(SIGMA_LIMIT), -2 * math.log(SIGMA_FLOOR)
    for name, value in (("log_snr_min", log_snr_min), ("log_snr_max", log_snr_max)):
        check_real(name, value, "a number", lambda v: True)  # a string failed a comparison
        if not lowest <= value <= highest:
            raise ValueError(
                f"{name}: expected a number in [{lowest:.4g}, {highest:.4g}] (sigma = "
                f"exp(-log_snr / 2) within the noise levels float32 holds), got {value!r}"
            )
    if not log_snr_min < log_snr_max:
        raise ValueError(f"need log_snr_min < log_snr_max, got {log_snr_min}, {log_snr_max}")
    return geometric_sigmas(n, math.exp(-0.5 * log_snr_max), math.exp(-0.5 * log_snr_min))
