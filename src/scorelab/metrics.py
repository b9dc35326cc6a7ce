r"""Sample-quality metrics: sliced Wasserstein, MMD, energy distance, a mixture report, the floor.

Every metric compares two sample sets ``x`` of shape ``(n, d)`` and ``y`` of shape ``(m, d)``
(NumPy or JAX arrays) and returns a Python ``float``, computed on the host (NumPy, POT): the
metrics take concrete samples, not values traced under ``jit``, ``vmap`` or ``grad``. A metric
value means little alone: read it against the **floor**, the same metric between two
independent exact sample sets of the same size (:func:`floor`), which is what a perfect sampler
scores.

Sliced Wasserstein is nearly blind to the spread *within* the modes of a multi-modal law: its
value is dominated by how much mass sits in each mode. On the tutorial's nine-mode target,
exact samples whose modes are widened to 2.5x the true variance score about 4.5% *better*
(sliced and max-sliced) against an independent reference set than the same samples unchanged
(``tests/test_metrics.py``). :func:`mixture_report` measures what it misses, mode by mode.

References:
    Bonneel, N., Rabin, J., Peyré, G. & Pfister, H. (2015). Sliced and Radon Wasserstein
    Barycenters of Measures. https://doi.org/10.1007/s10851-014-0506-3
    Deshpande, I. et al. (2019). Max-Sliced Wasserstein Distance and its use for GANs.
    https://arxiv.org/abs/1904.05877
    Gretton, A. et al. (2012). A Kernel Two-Sample Test. JMLR 13.
    https://jmlr.org/papers/v13/gretton12a.html
    Székely, G. J. & Rizzo, M. L. (2013). Energy statistics: A class of statistics based on
    distances. https://doi.org/10.1016/j.jspi.2013.03.018
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import ot
from jax import Array
from scipy import spatial, stats
from tqdm.auto import tqdm

from scorelab._keys import typed_key
from scorelab._validate import (
    FLOAT32_MAX,
    SIGMA_FLOOR,
    SIGMA_LIMIT,
    check_callable,
    check_instance,
    check_int,
    check_memory,
    check_real,
    check_seed,
    is_real_dtype,
    is_traced,
    real_number,
)
from scorelab.targets import GaussianMixture

__all__ = [
    "sliced_wasserstein",
    "max_sliced_wasserstein",
    "mmd",
    "median_bandwidth",
    "energy_distance",
    "MixtureReport",
    "mixture_report",
    "floor",
    "evaluate",
    "SteinDiscrepancy",
    "kernel_stein_discrepancy",
]


def _as_samples(x, name: str, min_rows: int = 1) -> np.ndarray:
    """``x`` as a float64 NumPy array of shape ``(n, d)``, ``n >= min_rows``, ``d >= 1``, of
    finite real numbers: the one check of every metric's samples.

    NaN rows (a diverged sampler's) gave NaN distances, or were counted as members of
    component 0 by the argmax of the mixture report; complex values lost their imaginary part
    with only a warning.

    Raises:
        ValueError: naming ``name``: complex or non-numeric values, the wrong shape, or NaN or
            inf (the number of rows and the first).
        TypeError: naming ``name``, for samples traced under ``jit``, ``vmap`` or ``grad``.
    """
    if is_traced(x):  # NumPy's conversion said only "TracerArrayConversionError"
        raise TypeError(
            f"{name}: a traced value (inside jit, vmap or grad); the metrics compute on the host "
            "(NumPy, POT): call them outside the transformation, on concrete samples"
        )
    array = np.asarray(x)
    if np.iscomplexobj(array):
        raise ValueError(
            f"{name}: complex values (dtype {array.dtype}); the metrics take real samples"
        )
    if array.dtype != np.bool_ and not is_real_dtype(array.dtype):
        raise ValueError(f"{name}: expected real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if array.ndim != 2 or array.shape[0] < min_rows or array.shape[1] < 1:
        raise ValueError(
            f"{name}: expected shape (n, d) with n >= {min_rows} and d >= 1, got {array.shape}"
        )
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(
            f"{name}: {bad.size} row(s) contain NaN or inf (first at row {bad[0]}); the metrics "
            "need finite numbers (drop or redraw those rows)"
        )
    return array


def _real_scalar(value):
    """A 0-d real NumPy or JAX array as a Python number, for :func:`check_real`; anything
    else unchanged (and judged there)."""
    if isinstance(value, np.ndarray | np.generic | jax.Array) and np.ndim(value) == 0:
        if np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer):
            return value.item()
    return value


def _as_pair(
    x, y, min_rows: int = 1, names: tuple[str, str] = ("x", "y")
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_as_samples` of both sets, named ``names`` in the messages, of one dimension."""
    x, y = _as_samples(x, names[0], min_rows), _as_samples(y, names[1], min_rows)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same dimension, got {x.shape} and {y.shape}"
        )
    return x, y


# --- Wasserstein through POT ----------------------------------------------------------------


def sliced_wasserstein(x, y, n_projections: int = 1000, seed: int = 0, p: int = 2) -> float:
    r"""Sliced :math:`p`-Wasserstein distance between two empirical measures (POT).

    .. math::
        SW_p(\mu, \nu) = \Big( \frac{1}{L} \sum_{l=1}^{L}
            W_p^p(\theta_l^\top \# \mu, \theta_l^\top \# \nu) \Big)^{1/p},
        \qquad \theta_l \sim \mathcal{U}(S^{d-1}),

    a Monte-Carlo estimate of :math:`(\mathbb{E}_\theta W_p^p)^{1/p}`. In one dimension it is
    the exact :math:`W_p`. The projections come from ``seed`` so that two calls compare the
    same slices.

    Args:
        x: ``(n, d)`` samples.
        y: ``(m, d)`` samples.
        n_projections: number :math:`L` of random directions.
        seed: seed of the directions (NumPy ``RandomState``, as POT uses).
        p: order of the Wasserstein distance, ``>= 1``.

    Raises:
        ValueError: for samples that are not ``(n, d)`` finite real numbers of one ``d``,
            ``n_projections < 1``, a seed outside ``[0, 2**32)`` or ``p < 1``, each naming
            the argument.

    References:
        Bonneel, N., Rabin, J., Peyré, G. & Pfister, H. (2015). Sliced and Radon Wasserstein
        Barycenters of Measures. https://doi.org/10.1007/s10851-014-0506-3
    """
    x, y = _as_pair(x, y)
    _check_slicing(n_projections, seed, p, x, y)
    return float(ot.sliced_wasserstein_distance(x, y, n_projections=n_projections, p=p, seed=seed))


def _check_slicing(n_projections, seed, p, x: np.ndarray, y: np.ndarray) -> None:
    """The options shared by the sliced distances (``p = 0`` was POT's bare AssertionError,
    ``n_projections = 0`` a NaN), and the memory of the projections: POT holds the ``(d, L)``
    directions and the ``(n, L)``, ``(m, L)`` projected samples in float64 at once
    (``n_projections = 10**10`` was a MemoryError of 149 GiB from inside POT)."""
    check_int("n_projections", n_projections, 1)
    check_seed("seed", seed)
    check_real("p", _real_scalar(p), "a number >= 1", lambda v: v >= 1)
    rows = x.shape[1] + x.shape[0] + y.shape[0]
    check_memory("n_projections", 8.0 * n_projections * rows, "give fewer projections")


def max_sliced_wasserstein(x, y, n_projections: int = 1000, seed: int = 0, p: int = 2) -> float:
    r"""Max-sliced :math:`p`-Wasserstein distance (POT), the tutorial's metric.

    .. math::
        \max\text{-}SW_p(\mu, \nu) = \max_{l \le L} W_p(\theta_l^\top \# \mu, \theta_l^\top \# \nu),
        \qquad \theta_l \sim \mathcal{U}(S^{d-1}),

    the worst of ``n_projections`` random slices (POT maximises over random directions, it does
    not optimise :math:`\theta`).

    Args:
        x: ``(n, d)`` samples.
        y: ``(m, d)`` samples.
        n_projections: number :math:`L` of random directions.
        seed: seed of the directions.
        p: order of the Wasserstein distance, ``>= 1``.

    Raises:
        ValueError: as :func:`sliced_wasserstein`.

    References:
        Deshpande, I. et al. (2019). Max-Sliced Wasserstein Distance and its use for GANs.
        https://arxiv.org/abs/1904.05877
    """
    x, y = _as_pair(x, y)
    _check_slicing(n_projections, seed, p, x, y)
    return float(
        ot.max_sliced_wasserstein_distance(x, y, n_projections=n_projections, p=p, seed=seed)
    )


# --- kernel discrepancies (MMD, energy distance) ---------------------------------------------

# Largest number of float32 pair differences (block rows x m x d) held at once: 64 MiB.
_BLOCK_ELEMENTS = 2**24


def _gaussian_kernel(squared_distance: Array) -> Array:
    # Bandwidth 1: callers divide the data by the bandwidth first.
    return jnp.exp(-0.5 * squared_distance)


def _distance_kernel(squared_distance: Array) -> Array:
    return jnp.sqrt(squared_distance)


@partial(jax.jit, static_argnames="kernel_fn")
def _block_row_sums(x_blocks: Array, mask: Array, y: Array, kernel_fn) -> Array:
    """Row sums ``sum_j kernel_fn(|x_i - y_j|^2)`` for blocks ``(B, b, d)``; returns ``(B, b)``."""

    def one_block(block_and_mask):
        x_block, row_mask = block_and_mask
        # Differences, not |x|^2 + |y|^2 - 2 x.y: in float32 the expansion loses the small
        # distances that dominate the energy distance near zero.
        squared_distance = jnp.sum((x_block[:, None, :] - y[None, :, :]) ** 2, axis=-1)
        return jnp.where(row_mask, jnp.sum(kernel_fn(squared_distance), axis=1), 0.0)

    return jax.lax.map(one_block, (x_blocks, mask))


def _row_blocks(elements_per_row: int, *arrays: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Rows of ``arrays`` (same length ``n``) zero-padded into ``(n_blocks, block, ...)`` blocks
    of at most ``_BLOCK_ELEMENTS // elements_per_row`` rows, and the ``(n_blocks, block)`` mask
    of real rows."""
    n = arrays[0].shape[0]
    block = max(1, min(n, _BLOCK_ELEMENTS // elements_per_row))
    n_blocks = -(-n // block)
    pad = n_blocks * block - n
    blocks = [
        np.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)).reshape(n_blocks, block, *a.shape[1:])
        for a in arrays
    ]
    return blocks, (np.arange(n_blocks * block) < n).reshape(n_blocks, block)


def _pairwise_sum(x: np.ndarray, y: np.ndarray, kernel_fn) -> float:
    r"""The double sum :math:`\sum_{i,j} \kappa(\lVert x_i - y_j \rVert^2)` in bounded memory.

    Rows of ``x`` are processed in blocks under ``lax.map`` so that at most
    ``_BLOCK_ELEMENTS`` differences exist at once (``n = m = 20000`` never builds an
    ``n x m`` matrix); per-row sums are float32, their total float64.

    Args:
        x: ``(n, d)``.
        y: ``(m, d)``.
        kernel_fn: a module-level function of the squared distance (static under ``jit``).
    """
    (x_blocks,), mask = _row_blocks(y.size, x)
    row_sums = _block_row_sums(
        jnp.asarray(x_blocks, jnp.float32),
        jnp.asarray(mask),
        jnp.asarray(y, jnp.float32),
        kernel_fn,
    )
    return float(np.sum(np.asarray(row_sums, dtype=np.float64)))


def median_bandwidth(x, y, max_points: int = 2000, seed: int = 0) -> float:
    r"""Median heuristic: :math:`h = \operatorname{median}_{i<j} \lVert z_i - z_j \rVert`.

    :math:`z` is the pooled sample :math:`x \cup y`; above ``max_points`` points a random
    subset of that size (fixed ``seed``) is used, so the cost stays
    :math:`O(\text{max\_points}^2)` whatever ``n``.

    Args:
        x: ``(n, d)`` samples.
        y: ``(m, d)`` samples.
        max_points: the largest pooled subset whose pairwise distances are formed, ``>= 2``.
        seed: seed of the subset, an integer ``>= 0``.

    Raises:
        ValueError: for samples that are not ``(n, d)`` finite real numbers of one ``d``,
            ``max_points < 2`` (no pair, a NaN median), a bad ``seed``, or a median of 0.

    References:
        Gretton, A. et al. (2012). A Kernel Two-Sample Test. JMLR 13, section 8.
        https://jmlr.org/papers/v13/gretton12a.html
    """
    x, y = _as_pair(x, y)
    check_int("max_points", max_points, 2)
    check_int("seed", seed, 0)
    pooled = np.concatenate([x, y])
    if pooled.shape[0] > max_points:
        pooled = np.random.default_rng(seed).choice(pooled, size=max_points, replace=False)
    bandwidth = float(np.median(spatial.distance.pdist(pooled)))
    if bandwidth <= 0.0:
        # Which set is one point: a constant reference was blamed on the samples (pass 25).
        single = [
            name
            for name, z in (("x (the samples)", x), ("y (the reference)", y))
            if np.all(z == z[0])
        ]
        where = f": {' and '.join(single)} all one point" if single else ""
        raise ValueError(
            "MMD's median heuristic: the median pairwise distance of the points is 0 (more "
            f"than half of them coincide{where}), so it gives no kernel bandwidth; check the "
            "data and the samples (a collapsed sampler puts them at one point), or pass "
            "bandwidth (Python)"
        )
    return bandwidth


def mmd(x, y, bandwidth: float | None = None) -> float:
    r"""Unbiased squared maximum mean discrepancy with a Gaussian (RBF) kernel.

    With :math:`k(a, b) = \exp(-\lVert a - b \rVert^2 / (2 h^2))`,

    .. math::
        \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)} \sum_{i \ne i'} k(x_i, x_{i'})
            + \frac{1}{m(m-1)} \sum_{j \ne j'} k(y_j, y_{j'})
            - \frac{2}{nm} \sum_{i, j} k(x_i, y_j),

    the U-statistic of Gretton et al. (2012, eq. 3): its expectation is the population
    :math:`\mathrm{MMD}^2`, so it is centred on 0 when both samples share a law and may then be
    slightly negative. It is returned squared (not square-rooted) to keep that unbiasedness.
    Memory is :math:`O(n + m)`: pairs are summed in blocks.

    Args:
        x: ``(n, d)`` samples, ``n >= 2``.
        y: ``(m, d)`` samples, ``m >= 2``.
        bandwidth: kernel bandwidth :math:`h`, a finite number ``> 0``; ``None`` uses
            :func:`median_bandwidth` on the pooled sample.

    Raises:
        ValueError: for samples that are not ``(n, d)`` finite real numbers of one ``d``,
            fewer than two samples on a side, or a ``bandwidth`` that is not a finite number
            ``> 0`` (``inf`` reported every pair of laws as identical).

    References:
        Gretton, A. et al. (2012). A Kernel Two-Sample Test. JMLR 13.
        https://jmlr.org/papers/v13/gretton12a.html
    """
    x, y = _as_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    if min(n, m) < 2:
        raise ValueError("mmd needs at least two samples on each side")
    bandwidth = _real_scalar(bandwidth)
    check_real("bandwidth", bandwidth, "a number > 0", lambda v: v > 0, optional=True)
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    x, y = x / h, y / h
    reach = max(np.max(np.abs(x)), np.max(np.abs(y)))
    if reach > FLOAT32_MAX:  # inf in float32, then inf - inf = NaN for coinciding points
        raise ValueError(
            f"bandwidth: the samples divided by it reach {reach:.3g}, beyond float32's range "
            "(3.4e38) in which the kernel is computed; give a larger bandwidth"
        )
    # k(a, a) = 1 exactly (zero difference), so the diagonal of each within-sum is n (resp. m).
    k_xx = (_pairwise_sum(x, x, _gaussian_kernel) - n) / (n * (n - 1))
    k_yy = (_pairwise_sum(y, y, _gaussian_kernel) - m) / (m * (m - 1))
    k_xy = _pairwise_sum(x, y, _gaussian_kernel) / (n * m)
    return k_xx + k_yy - 2.0 * k_xy


def energy_distance(x, y, unbiased: bool = True) -> float:
    r"""Energy distance (Székely & Rizzo), estimated from all pairs.

    .. math::
        \mathcal{E}(X, Y) = 2\,\mathbb{E}\lVert X - Y \rVert - \mathbb{E}\lVert X - X' \rVert
            - \mathbb{E}\lVert Y - Y' \rVert,

    .. math::
        \hat{\mathcal{E}} = \frac{2}{nm} \sum_{i,j} \lVert x_i - y_j \rVert
            - \frac{1}{N_x} \sum_{i \ne i'} \lVert x_i - x_{i'} \rVert
            - \frac{1}{N_y} \sum_{j \ne j'} \lVert y_j - y_{j'} \rVert,

    with :math:`N_x = n(n-1)` (U-statistic, unbiased, centred on 0 under equal laws) or
    :math:`N_x = n^2` (V-statistic, always :math:`\ge 0`) when ``unbiased=False``. This is the
    energy distance of Székely & Rizzo, the *square* of a metric; ``scipy.stats.energy_distance``
    (1-D only) returns :math:`\sqrt{\hat{\mathcal{E}}}` of the V-statistic. It is the MMD of the
    distance kernel and shares its blocked :math:`O(n + m)`-memory computation.

    Args:
        x: ``(n, d)`` samples (``n >= 2`` when ``unbiased``).
        y: ``(m, d)`` samples.
        unbiased: U-statistic (default) or V-statistic.

    Raises:
        ValueError: for samples that are not ``(n, d)``, ``d >= 1``, finite real numbers of
            one ``d``, or fewer than two samples on a side when ``unbiased``.
        TypeError: if ``unbiased`` is not ``True`` or ``False``.

    References:
        Székely, G. J. & Rizzo, M. L. (2013). Energy statistics: A class of statistics based on
        distances. J. Stat. Plan. Inference 143(8). https://doi.org/10.1016/j.jspi.2013.03.018
    """
    check_instance("unbiased", unbiased, bool | np.bool_, "True or False")  # "no" read as True
    x, y = _as_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    if unbiased and min(n, m) < 2:
        raise ValueError("the unbiased energy distance needs at least two samples on each side")
    n_xx, n_yy = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    # The distances are float32 sums of squares, which overflowed (a NaN at scale 1e20) or
    # underflowed (0 at scale 1e-25) for finite samples. The energy distance is
    # 1-homogeneous, E(a x, a y) = a E(x, y): the samples are divided by the power of two
    # nearest their largest magnitude and the result multiplied back. A power of two scales
    # every float32 operation exactly, so samples that fitted before give the same bits.
    scale = _power_of_two_scale(x, y)
    x, y = x / scale, y / scale
    # |a - a| = 0: the diagonal adds nothing, so only the normalisation differs (U vs V).
    e_xx = _pairwise_sum(x, x, _distance_kernel) / n_xx
    e_yy = _pairwise_sum(y, y, _distance_kernel) / n_yy
    e_xy = _pairwise_sum(x, y, _distance_kernel) / (n * m)
    return (2.0 * e_xy - e_xx - e_yy) * scale


def _power_of_two_scale(*arrays: np.ndarray) -> float:
    """``2**e`` with the largest magnitude of ``arrays`` in ``[2**(e - 1), 2**e)`` (1 for all
    zeros): dividing by it is exact in float64 and leaves magnitudes below 1."""
    largest = max(float(np.max(np.abs(a))) for a in arrays)
    return 1.0 if largest == 0.0 else math.ldexp(1.0, math.frexp(largest)[1])


# --- mixture report ----------------------------------------------------------------------------

_NEAR_RADIUS = 3.0
"""A sample is *near* component k when its Mahalanobis distance to mu_k under C_k is <= 3."""

_FAR_RADIUS = 5.0
"""A sample is *far* when its Mahalanobis distance to every component exceeds 5."""

_VARIANCE_TAIL = 1e-6
"""Mass of a true component left outside the region used for its variance (see mixture_report)."""


class MixtureReport(NamedTuple):
    """How samples populate the components of a Gaussian mixture (see :func:`mixture_report`).

    Attributes:
        fractions: ``(K,)`` fraction of samples assigned to each component.
        total_variation: :math:`\\frac12 \\sum_k |f_k - w_k|`.
        n_empty: number of components with no sample assigned.
        near_fraction: fraction of samples within 3 standard deviations (Mahalanobis) of some
            component mean.
        variance_ratio: ``(K,)`` within-component variance of the samples over the truth; NaN
            where fewer than two samples are available.
        variance_ratio_mean: weight-averaged ``variance_ratio`` over components where it is
            defined.
        far_fraction: fraction of samples farther than 5 standard deviations (Mahalanobis)
            from every component mean: between modes, not in a tail.
    """

    fractions: np.ndarray
    total_variation: float
    n_empty: int
    near_fraction: float
    variance_ratio: np.ndarray
    variance_ratio_mean: float
    far_fraction: float


def _check_target(target) -> None:
    check_instance("target", target, GaussianMixture, "a scorelab.targets.GaussianMixture")


def _squared_mahalanobis(samples: np.ndarray, target: GaussianMixture) -> np.ndarray:
    r""":math:`(x - \mu_k)^\top C_k^{-1} (x - \mu_k)` for every sample and component, ``(n, K)``."""
    means = np.asarray(target.means, np.float64)
    precisions = np.linalg.inv(np.asarray(target.covariances, np.float64))
    centred = samples[:, None, :] - means[None]
    return np.einsum("nki,kij,nkj->nk", centred, precisions, centred)


def mixture_report(samples, target: GaussianMixture) -> MixtureReport:
    r"""Mode weights, coverage and within-mode spread of samples from a Gaussian mixture target.

    Why it exists: sliced Wasserstein is nearly blind to the spread inside modes. On the
    tutorial's target (modes 10 apart, standard deviation 0.32) the multinomial mode-weight
    error of a finite sample moves mass over distances of 10, which dominates the distance;
    widening every mode to 2.5x its variance even *lowers* it (by about 4.5%), because wider
    modes shorten each projection's transport of excess mass from one mode to the next. This
    report reads mode weights and within-mode spread separately.

    Each sample :math:`x` is assigned to :math:`\hat k(x) = \arg\max_k p(k \mid x)`, the
    target's posterior (:meth:`GaussianMixture.responsibilities`). With
    :math:`D_k^2(x) = (x - \mu_k)^\top C_k^{-1} (x - \mu_k)`:

    - ``fractions`` :math:`f_k = \#\{\hat k = k\} / n` and
      ``total_variation`` :math:`\frac12 \sum_k |f_k - w_k|`; exact samples give
      :math:`\mathbb{E}\,\mathrm{TV} \approx \frac12 \sum_k \sqrt{2 w_k (1 - w_k) / (\pi n)}`
      (multinomial noise);
    - ``n_empty``: components with :math:`f_k = 0`;
    - ``near_fraction``: fraction with :math:`\min_k D_k(x) \le 3`; exact samples give about
      :math:`P(\chi^2_d \le 9)` (:math:`1 - e^{-4.5} \approx 0.989` in 2-D) when modes are well
      separated;
    - ``variance_ratio``
      :math:`r_k = \operatorname{tr}\widehat{\mathrm{Cov}}(S_k) / \operatorname{tr} C_k`, with
      the empirical covariance (ddof 1, centred on the samples' own mean) of
      :math:`S_k = \{x : \hat k(x) = k,\ D_k^2(x) \le q\}`, :math:`q` the :math:`1 - 10^{-6}`
      quantile of :math:`\chi^2_d` (27.6 in 2-D: 5.3 standard deviations). The cut drops
      stragglers between modes (halfway between two tutorial modes a sample sits 250 variances
      away, and one such sample would add 30% to a mode of 400) yet keeps all but
      :math:`10^{-6}` of a true component: exact samples give :math:`r_k = 1` up to a
      truncation bias below :math:`10^{-4}`, and modes inflated 2.5x read
      :math:`2.5\,F_{\chi^2_{d+2}}(q/2.5) / F_{\chi^2_d}(q/2.5) \approx 2.44` in 2-D (a
      3-standard-deviation cut would read 1.69). NaN where :math:`|S_k| < 2`.
    - ``variance_ratio_mean``: :math:`\sum_k w_k r_k / \sum_k w_k` over defined :math:`r_k`.
    - ``far_fraction``: fraction with :math:`\min_k D_k(x) > 5`, between modes rather than in
      a tail (an exact 2-D sample is that far with probability :math:`e^{-12.5} \approx 4
      \cdot 10^{-6}`).

    Args:
        samples: ``(n, d)`` samples.
        target: the mixture the samples should follow.

    Returns:
        A :class:`MixtureReport` of NumPy arrays and Python scalars.

    Raises:
        TypeError: ``target`` is not a :class:`~scorelab.targets.GaussianMixture`.
        ValueError: ``samples`` are not ``(n, d)`` finite real numbers (a NaN row was
            assigned to component 0), or of another dimension than ``target``.
    """
    _check_target(target)
    samples = _as_samples(samples, "samples")
    if samples.shape[1] != target.dim:
        raise ValueError(f"samples have dimension {samples.shape[1]}, target has {target.dim}")
    n, dim = samples.shape
    weights = np.asarray(target.weights, np.float64)
    n_components = weights.shape[0]

    covariances = np.asarray(target.covariances, np.float64)
    squared_distance = _squared_mahalanobis(samples, target)
    # argmax_k p(k | x) = argmax_k [log w_k - D_k^2 / 2 - log det C_k / 2]: the target's
    # posterior, in float64 from the distances needed anyway (and without recompiling the
    # numpyro log-density for every new n).
    log_posterior = (
        np.log(weights) - 0.5 * squared_distance - 0.5 * np.linalg.slogdet(covariances)[1]
    )
    assignment = np.argmax(log_posterior, axis=-1)
    counts = np.bincount(assignment, minlength=n_components)
    fractions = counts / n
    nearest = np.min(squared_distance, axis=1)
    near_fraction = float(np.mean(nearest <= _NEAR_RADIUS**2))
    far_fraction = float(np.mean(nearest > _FAR_RADIUS**2))

    cut = stats.chi2.ppf(1.0 - _VARIANCE_TAIL, dim)
    traces = np.trace(covariances, axis1=1, axis2=2)
    variance_ratio = np.full(n_components, np.nan)
    for k in range(n_components):
        members = samples[(assignment == k) & (squared_distance[:, k] <= cut)]
        if members.shape[0] >= 2:
            covariance = np.cov(members, rowvar=False, ddof=1).reshape(dim, dim)
            variance_ratio[k] = np.trace(covariance) / traces[k]
    defined = np.isfinite(variance_ratio)
    variance_ratio_mean = (
        float(np.sum(weights[defined] * variance_ratio[defined]) / np.sum(weights[defined]))
        if defined.any()
        else math.nan
    )
    return MixtureReport(
        fractions=fractions,
        total_variation=float(0.5 * np.sum(np.abs(fractions - weights))),
        n_empty=int(np.sum(counts == 0)),
        near_fraction=near_fraction,
        variance_ratio=variance_ratio,
        variance_ratio_mean=variance_ratio_mean,
        far_fraction=far_fraction,
    )


# --- floor and a report for the CLI -------------------------------------------------------------


MAX_FLOOR_REPEATS = 1000
"""The most repeats a floor takes: its mean's standard error shrinks as ``1/sqrt(repeats)``,
so 1000 already estimate it to 3% of its spread, and more only take time (``evaluate
--floor-repeats 100000000`` ran for hours without a word)."""


def check_floor_repeats(field: str, repeats, error: type[ValueError] = ValueError) -> None:
    """Refuse a repeat count of a floor that is not an integer in ``[2, MAX_FLOOR_REPEATS]``
    (one repeat has no spread; see :data:`MAX_FLOOR_REPEATS`)."""
    check_int(field, repeats, 2, error=error)
    if repeats > MAX_FLOOR_REPEATS:
        raise error(
            f"{field}: {repeats} repeats; at most {MAX_FLOOR_REPEATS} (they estimate the floor "
            "to 3% of its spread; more only take time)"
        )


def floor(
    metric_fn: Callable,
    sample_fn: Callable,
    key: Array,
    n: int,
    repeats: int = 5,
    *,
    progress: bool = False,
    label: str = "floor",
) -> tuple[float, float]:
    r"""The floor of a metric: its value between two independent *exact* sample sets of size n.

    .. math::
        m_r = \mathrm{metric}(X^{(r)}, Y^{(r)}), \quad X^{(r)}, Y^{(r)} \overset{iid}{\sim} q^n,
        \qquad \text{returns } (\bar m, \operatorname{sd}(m)),

    over ``repeats`` pairs; the spread is the sample standard deviation (ddof 1). Repeat
    ``r`` uses ``fold_in(key, r)`` split into one key for each set, so no key is reused. A
    sampler is perfect, as far as the metric can tell, when it scores within this spread.

    Args:
        metric_fn: ``(x (n, d), y (n, d)) -> float``, e.g. :func:`sliced_wasserstein`.
        sample_fn: ``(key, n) -> (n, d)`` exact sampler, e.g. ``target.sample``.
        key: PRNG key.
        n: size of each sample set.
        repeats: number of independent pairs, ``>= 2``.
        progress: show a tqdm bar over the repeats, named ``label``.
        label: the bar's name.

    Returns:
        ``(mean, std)`` as Python floats.

    Raises:
        ValueError: ``repeats`` is not an integer in ``[2, MAX_FLOOR_REPEATS]`` (one repeat
            has no spread), or ``n`` not an integer ``>= 1``.
        TypeError: ``metric_fn`` or ``sample_fn`` is not callable, ``key`` is not a PRNG key,
            or ``metric_fn`` returns something other than one real number.
    """
    check_floor_repeats("repeats", repeats)
    check_callable("metric_fn", metric_fn, "metric_fn(x, y) -> float (e.g. energy_distance)")
    check_callable("sample_fn", sample_fn, "sample_fn(key, n) -> samples (e.g. target.sample)")
    key = typed_key(key, "key")
    check_int("n", n, 1)
    values = []
    for r in tqdm(range(repeats), desc=label, unit="repeat", disable=not progress):
        key_x, key_y = jax.random.split(jax.random.fold_in(key, r))
        value = metric_fn(sample_fn(key_x, n), sample_fn(key_y, n))
        if real_number(value) is None:
            got = f"shape {np.shape(value)}" if hasattr(value, "shape") else type(value).__name__
            raise TypeError(f"metric_fn: returned {got}; it must return one real number")
        values.append(real_number(value))
    return float(np.mean(values)), float(np.std(values, ddof=1))


def _json_float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def evaluate(
    samples,
    reference,
    target: GaussianMixture | None = None,
    *,
    n_projections: int = 1000,
    seed: int = 0,
    bandwidth: float | None = None,
) -> dict:
    """All metrics of ``samples`` against ``reference`` as a JSON-ready dict.

    Keys: ``sliced_wasserstein``, ``max_sliced_wasserstein``, ``mmd2`` (unbiased squared MMD,
    :func:`mmd`), ``energy_distance``, ``n_samples``, ``n_reference``; with a
    :class:`~scorelab.targets.GaussianMixture` ``target``, also the :class:`MixtureReport`
    fields (arrays as lists). Undefined values (NaN) become ``None``.

    Args:
        samples: ``(n, d)`` samples to judge.
        reference: ``(m, d)`` samples of the target law (e.g. the data set).
        target: the exact mixture, when known.
        n_projections: directions for the sliced distances.
        seed: seed of the directions.
        bandwidth: MMD bandwidth; ``None`` for the median heuristic.

    Raises:
        TypeError: ``target`` is neither ``None`` nor a
            :class:`~scorelab.targets.GaussianMixture` (it was silently ignored).
        ValueError: as the metrics: samples that are not ``(n, d)`` finite real numbers of one
            ``d``, or a bad option, naming it.
    """
    if target is not None:
        _check_target(target)
    samples, reference = _as_pair(samples, reference, names=("samples", "reference"))
    # The options before any distance is computed (a bad bandwidth came after both slicings).
    _check_slicing(n_projections, seed, 2, samples, reference)
    check_real("bandwidth", _real_scalar(bandwidth), "a number > 0", lambda v: v > 0, True)
    result = {
        "n_samples": samples.shape[0],
        "n_reference": reference.shape[0],
        "sliced_wasserstein": sliced_wasserstein(samples, reference, n_projections, seed),
        "max_sliced_wasserstein": max_sliced_wasserstein(samples, reference, n_projections, seed),
        "mmd2": mmd(samples, reference, bandwidth),
        "energy_distance": energy_distance(samples, reference),
    }
    if target is not None:
        report = mixture_report(samples, target)
        for name, value in report._asdict().items():
            if isinstance(value, np.ndarray):
                result[name] = [_json_float(v) for v in value]
            elif isinstance(value, int | np.integer):
                result[name] = int(value)
            else:
                result[name] = _json_float(value)
    return result


# --- kernel Stein discrepancy ---------------------------------------------------------------------


class SteinDiscrepancy(NamedTuple):
    """The result of :func:`kernel_stein_discrepancy`.

    Attributes:
        ksd_squared: the U-statistic :math:`\\widehat{\\mathrm{KSD}}^2_u`, unbiased, centred
            on 0 when the samples follow the score's law (and then possibly negative).
        standard_error: its estimated standard deviation (Hoeffding's variance formula).
    """

    ksd_squared: float
    standard_error: float


@partial(jax.jit, static_argnames=("c", "beta"))
def _stein_row_sums(
    blocks: tuple[Array, Array, Array], mask: Array, x: Array, scores: Array, c: float, beta: float
) -> tuple[Array, Array]:
    r""":math:`\sum_{j \ne i} u(x_i, x_j)` and :math:`\sum_{j \ne i} u(x_i, x_j)^2` per row.

    ``blocks`` are ``(B, b, d)`` rows, ``(B, b, d)`` their scores and ``(B, b)`` their indices;
    returns two ``(B, b)`` arrays, 0 on padding rows.
    """
    dim = x.shape[-1]
    columns = jnp.arange(x.shape[0])

    def one_block(block_and_mask):
        (x_block, score_block, rows), row_mask = block_and_mask
        r = x_block[:, None, :] - x[None, :, :]  # x_i - x_j, (b, n, d)
        base = c**2 + jnp.sum(r**2, axis=-1)
        kernel = base**beta
        # s_i . s_j at full float32 (a GPU's default TF32 would round the scores to 10 bits).
        score_products = jnp.matmul(score_block, scores.T, precision=jax.lax.Precision.HIGHEST)
        # s_i . grad_{x_j} k + s_j . grad_{x_i} k, with grad_{x_i} k = 2 beta base^(beta-1) r
        score_r = jnp.sum((scores[None, :, :] - score_block[:, None, :]) * r, axis=-1)
        gradient_terms = 2.0 * beta * base ** (beta - 1.0) * score_r
        trace_term = (
            -2.0 * beta * base ** (beta - 2.0) * (dim * base + 2.0 * (beta - 1.0) * (base - c**2))
        )
        u = kernel * score_products + gradient_terms + trace_term
        u = jnp.where((rows[:, None] != columns[None, :]) & row_mask[:, None], u, 0.0)
        return jnp.sum(u, axis=1), jnp.sum(u**2, axis=1)

    return jax.lax.map(one_block, (blocks, mask))


def _check_stein_range(samples: np.ndarray, scores: np.ndarray, c: float, beta: float) -> None:
    r"""Raise unless every float32 term of :func:`_stein_row_sums` is finite.

    The pair terms are float32 (the samples were checked finite in float64): samples at
    1e37 or scores at 1e30 made :math:`\lVert r \rVert^2` or :math:`s_i^\top s_j` infinite
    and the discrepancy NaN. Bounds, with :math:`R^2 = \sum_k (\max x_k - \min x_k)^2
    \ge \lVert x_i - x_j \rVert^2`, :math:`S = \max_i \lVert s_i \rVert` and
    :math:`b \ge c^2`: :math:`b \le c^2 + R^2`, :math:`b^{\beta - 2} \le c^{2\beta - 4}`,
    and :math:`|u| \le B = c^{2\beta} S^2 + 4|\beta| c^{2\beta - 1} S
    + 2|\beta| c^{2\beta - 2} (d + 2(1 - \beta))`, whose square, summed over a row of
    :math:`n` pairs, must be finite too (the standard error).
    """
    n, dim = samples.shape
    spread = np.ptp(samples, axis=0)
    r2 = float(np.sum(spread**2))
    if (c**2 + r2) * (dim + 2.0 * (1.0 - beta)) > FLOAT32_MAX:
        raise ValueError(
            f"samples: their pairwise squared distances reach up to {r2:.3g}, beyond float32's "
            "range (3.4e38) in which the Stein kernel is computed; rescale the samples by a "
            "factor a (and their scores by 1/a)"
        )
    # Logarithms: the bounds themselves overflow float64 for the worst inputs.
    log_max = math.log(FLOAT32_MAX)
    if (2.0 * beta - 4.0) * math.log(c) > log_max:
        raise ValueError(
            f"c: {c!r} makes the Stein kernel's terms (c^(2 beta - 4)) overflow float32, in "
            "which they are computed; give a larger c (of the order of the samples' spread)"
        )
    s = float(np.max(np.sqrt(np.sum(scores**2, axis=1))))
    log_c, log_s = math.log(c), math.log(s) if s > 0 else -math.inf
    score_terms = (
        2.0 * beta * log_c + 2.0 * log_s,
        math.log(4.0 * abs(beta)) + (2.0 * beta - 1.0) * log_c + log_s,
        log_s + 0.5 * math.log(max(r2, 1e-300)) + math.log(2.0),
    )
    trace_term = math.log(2.0 * abs(beta) * (dim + 2.0 * (1.0 - beta))) + (2.0 * beta - 2.0) * log_c
    bound = max(*score_terms, trace_term) + math.log(3.0)
    if 2.0 * bound + math.log(n) > log_max:
        culprit = "score" if max(score_terms) >= trace_term else "c"
        raise ValueError(
            f"{culprit}: the Stein kernel's terms reach about {math.exp(min(bound, 700)):.3g} "
            f"(scores up to {s:.3g}, c = {c!r}), whose squares overflow float32, in which they "
            "are computed; rescale the samples by a factor a and their scores by 1/a"
            + (", or give a larger c" if culprit == "c" else "")
        )


def kernel_stein_discrepancy(
    samples, score, *, c: float = 1.0, beta: float = -0.5
) -> SteinDiscrepancy:
    r"""Squared kernel Stein discrepancy of samples to the law of a score, IMQ kernel, U-statistic.

    With the inverse multiquadric kernel :math:`k(x, y) = (c^2 + \lVert x - y \rVert^2)^\beta`
    and the Langevin Stein kernel of the score :math:`s = \nabla \log p`,

    .. math::
        u_p(x, y) = s(x)^\top s(y)\, k + s(x)^\top \nabla_y k + s(y)^\top \nabla_x k
            + \operatorname{tr} \nabla_x \nabla_y k,

    which for this kernel, :math:`r = x - y`, :math:`b = c^2 + \lVert r \rVert^2`, is

    .. math::
        u_p(x, y) = b^\beta s(x)^\top s(y) + 2\beta b^{\beta-1} (s(y) - s(x))^\top r
            - 2\beta d\, b^{\beta-1} - 4\beta(\beta-1) \lVert r \rVert^2 b^{\beta-2},

    the discrepancy :math:`\mathrm{KSD}^2(q, p) = \mathbb{E}_{x, x' \sim q}\, u_p(x, x')` is 0
    if and only if :math:`q = p` (for :math:`\beta \in (-1, 0)` it also controls weak
    convergence; Gorham & Mackey 2017, Theorem 8). It is estimated by the U-statistic

    .. math::
        \widehat{\mathrm{KSD}}^2_u = \frac{1}{n(n-1)} \sum_{i \ne j} u_p(x_i, x_j),

    unbiased (Liu et al. 2016, eq. 14); the V-statistic's diagonal
    :math:`u_p(x, x) = c^{2\beta} \lVert s \rVert^2 - 2\beta d c^{2\beta-2} > 0` would bias it
    upwards. Its variance is Hoeffding's
    :math:`\frac{2}{n(n-1)} \big(2(n-2) \zeta_1 + \zeta_2\big)` with
    :math:`\zeta_1 = \operatorname{Var} \mathbb{E}[u_p(x, x') \mid x]` and
    :math:`\zeta_2 = \operatorname{Var} u_p(x, x')`, estimated from the same pairs:
    :math:`\hat\zeta_2 = \overline{u_{ij}^2} - \widehat{\mathrm{KSD}}^4` and
    :math:`\hat\zeta_1 = \overline{u_{ij} u_{ik}} - \widehat{\mathrm{KSD}}^4` (mean over
    distinct triples, clipped at 0). When :math:`q = p`, :math:`\zeta_1 = 0` (the statistic
    is degenerate, of order :math:`1/n` rather than :math:`1/\sqrt n`, and not Gaussian) and
    the noise of :math:`\hat\zeta_1` makes the standard error conservative there.

    Cost :math:`O(n^2 d)` time, memory :math:`O(n)`: rows are processed in blocks (float32
    pair terms, float64 totals).

    Args:
        samples: ``(n, d)`` samples, ``n >= 3``.
        score: ``(n, d)`` scores :math:`s(x_i)` of the law to test against, or a callable
            ``score_fn(x) -> (d,)`` on one example, ``vmap``-ped over the samples (e.g.
            :class:`scorelab.models.ExactScore` ``(target)``, an unconditional model, or
            ``functools.partial(model, sigma=sigma_min)``).
        c: the kernel's scale, ``> 0``.
        beta: the kernel's exponent, in ``(-1, 0)``.

    Returns:
        :class:`SteinDiscrepancy` ``(ksd_squared, standard_error)`` as Python floats.

    Raises:
        ValueError: for samples not ``(n, d)`` finite real numbers with ``n >= 3``, scores
            of another shape or not finite, ``c`` not a finite number in ``[1.1e-19, 9.2e18]``
            (its square is a float32 number) or ``beta`` outside ``(-1, 0)``, naming the
            argument; samples, scores or ``c`` whose kernel terms overflow float32, in which
            they are computed (they gave NaN), naming ``samples``, ``score`` or ``c``.

    References:
        Liu, Q., Lee, J. D. & Jordan, M. I. (2016). A Kernelized Stein Discrepancy for
        Goodness-of-fit Tests. https://arxiv.org/abs/1602.03253
        Gorham, J. & Mackey, L. (2017). Measuring Sample Quality with Kernels.
        https://arxiv.org/abs/1703.01717
        Hoeffding, W. (1948). A Class of Statistics with Asymptotically Normal Distribution.
        Ann. Math. Statist. 19(3). https://doi.org/10.1214/aoms/1177730196
    """
    samples = _as_samples(samples, "samples")
    n, dim = samples.shape
    if n < 3:
        raise ValueError(f"kernel_stein_discrepancy needs n >= 3 samples, got {n}")
    c, beta = _real_scalar(c), _real_scalar(beta)
    check_real("c", c, "a number in [1.1e-19, 9.2e18]", lambda v: SIGMA_FLOOR <= v <= SIGMA_LIMIT)
    check_real("beta", beta, "a number in (-1, 0)", lambda v: -1 < v < 0)
    if callable(score):
        score = jax.vmap(score)(jnp.asarray(samples, jnp.float32))
    scores = _as_samples(score, "score")
    if scores.shape != samples.shape:
        raise ValueError(f"scores must have the samples' shape {samples.shape}, got {scores.shape}")
    _check_stein_range(samples, scores, float(c), float(beta))

    blocks, mask = _row_blocks(n * dim, samples, scores, np.arange(n))
    row_sums, row_squares = _stein_row_sums(
        (jnp.asarray(blocks[0], jnp.float32), jnp.asarray(blocks[1], jnp.float32),
         jnp.asarray(blocks[2])),
        jnp.asarray(mask),
        jnp.asarray(samples, jnp.float32),
        jnp.asarray(scores, jnp.float32),
        float(c),
        float(beta),
    )  # fmt: skip
    row_sums = np.asarray(row_sums, np.float64).ravel()[:n]
    row_squares = np.asarray(row_squares, np.float64).ravel()[:n]
    n_pairs = n * (n - 1)
    ksd_squared = np.sum(row_sums) / n_pairs
    zeta_2 = np.sum(row_squares) / n_pairs - ksd_squared**2
    zeta_1 = np.sum(row_sums**2 - row_squares) / (n_pairs * (n - 2)) - ksd_squared**2
    variance = 2.0 / n_pairs * (2.0 * (n - 2) * max(zeta_1, 0.0) + max(zeta_2, 0.0))
    return SteinDiscrepancy(float(ksd_squared), float(math.sqrt(variance)))
