r"""Score-matching losses, one example at a time.

Every loss has the signature ``loss(key, score_fn, x, **hyper) -> scalar``: it is pure, takes
ONE example ``x`` of shape ``(d,)`` and a score model ``score_fn(x, sigma) -> (d,)``, and
returns that example's loss. Callers ``vmap`` over a batch (one key per example, e.g.
``fold_in(key, i)``) and reduce. ``key`` comes first even where a loss draws nothing, so all
losses are interchangeable (see :data:`LOSSES`).

Two families:

* **Score matching on the data** (Hyvarinen, Hutchinson, sliced). With
  :math:`J(x) = \partial s(x) / \partial x`,

  .. math::
      \mathcal{J}(s) = \mathbb{E}_{q}\big[\operatorname{tr} J(x) + \tfrac12 \|s(x)\|^2\big]
      = \tfrac12 \mathbb{E}_{q}\|s(x) - \nabla \log q(x)\|^2 - \text{const},

  and the three losses differ only in how :math:`\operatorname{tr} J` is computed: exactly
  with ``d`` forward-mode products, or without bias from ``n`` random probes.
* **Denoising** (DSM at one sigma, NCSN over many, DDPM's VP epsilon loss over a diffusers
  schedule's levels). They learn the score of the *noised* law
  :math:`q_\sigma = q * \mathcal{N}(0, \sigma^2 I)` and need no Jacobian.

References:
    Hyvarinen, A. (2005). Estimation of Non-Normalized Statistical Models by Score Matching.
    JMLR 6, 695-709. https://jmlr.org/papers/v6/hyvarinen05a.html
    Song, Y., Garg, S., Shi, J. & Ermon, S. (2019). Sliced Score Matching: A Scalable Approach
    to Density and Score Estimation. https://arxiv.org/abs/1905.07088
    Vincent, P. (2011). A Connection Between Score Matching and Denoising Autoencoders.
    Neural Computation 23(7). https://doi.org/10.1162/NECO_a_00142
    Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. https://arxiv.org/abs/1907.05600

**Argument checks, common to every loss.** ``key`` must be one PRNG key (typed or legacy;
:func:`scorelab._keys.typed_key`), also where a loss draws nothing; ``score_fn`` (and a
``weighting_fn``) callable; the example real numbers (an integer one is taken as JAX's default
float; complex, boolean and empty ones are refused, and a concrete one must be finite).
While traced, ``score_fn`` must return a real floating array of its example's shape, as
:func:`scorelab.samplers.sample` requires of a state's score, and ``weighting_fn`` one real
number. A count that sizes an array (probes, noise levels, timesteps, a shape, the exact
trace's ``(d, d)`` basis) is refused before allocating when the array does not fit in the
available memory. Bad arguments raise ``TypeError`` (a wrong type or dtype) or ``ValueError``
(a wrong shape or value) naming the argument; checks of values run on concrete values only,
so a compiled training step pays nothing for them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import (
    all_finite,
    check_callable,
    check_choice,
    check_int,
    check_memory,
    check_real,
    check_sigma,
    is_traced,
)
from scorelab.noise import (
    check_sigma_range,
    sample_ve_noise,
    vp_alpha_sigma,
    vp_alphas_cumprod,
)
from scorelab.precond import EDMPreconditioned, check_concrete_positive
from scorelab.samplers import ve_sigmas_from_vp

__all__ = [
    "hyvarinen_loss",
    "hutchinson_loss",
    "sliced_score_matching_loss",
    "dsm_loss",
    "ncsn_loss",
    "ncsn_weighting",
    "vp_epsilon_loss",
    "edm_weighting",
    "sample_training_sigmas",
    "PROBES",
    "SIGMA_DISTRIBUTIONS",
    "WEIGHTINGS",
    "LOG_SIGMA_MEAN",
    "LOG_SIGMA_STD",
    "LOSSES",
]

ScoreFn = Callable[[Array, object], Array]

PROBES = ("rademacher", "gaussian")
SIGMA_DISTRIBUTIONS = ("lognormal", "loguniform")
WEIGHTINGS = ("ncsn", "edm")

# The founding tutorial's training-sigma law: log sigma ~ N(-0.5, 1.2^2), as in its
# `exp(normal * 1.2 - .5)`. (EDM uses N(-1.2, 1.2^2); Karras et al. 2022, Table 1.)
LOG_SIGMA_MEAN = -0.5
LOG_SIGMA_STD = 1.2


# --- small maps: unrolled on a CPU, vmapped elsewhere ----------------------------------------


_UNROLLED_MAP = 8
"""On a CPU, a per-example map over at most this many rows (the probes of a Jacobian trace,
the sigmas of :func:`ncsn_loss`) runs as one call per row; above it, and on any accelerator,
as one ``vmap``. Under the batch ``vmap`` of training, a ``vmap``-ped inner map gives the
network inputs of shape ``(batch, n, width)``: XLA:CPU runs those slower than ``n`` calls of
shape ``(batch, width)``, while a GPU, which pays per kernel launch rather than per FLOP at
these sizes, runs the one larger call faster (``benchmarks/trace_layout.py`` and
``benchmarks/training.py``; results in ``docs/benchmarks.md``). Unrolling grows the program
with ``n``, hence the cap."""


def _unroll(n: int) -> bool:
    """Whether to map over ``n`` rows one call at a time (see ``_UNROLLED_MAP``)."""
    return n <= _UNROLLED_MAP and jax.default_backend() == "cpu"


def _small_map(fn: Callable[..., Array], *rows: Array) -> Array:
    """``jax.vmap(fn)(*rows)``: one call per row on a CPU for a few rows (``_unroll``)."""
    n = rows[0].shape[0]
    if _unroll(n):
        return jnp.stack([fn(*(r[i] for r in rows)) for i in range(n)])
    return jax.vmap(fn)(*rows)


def _as_example(x) -> Array:
    """``x`` as a floating array: a list becomes an array (it had no ``.shape``), an integer
    array JAX's default float (``jax.linearize`` refused integer primals with an error about
    tangent values, and ``random.normal`` integer dtypes)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(x, 1.0))
    return x


# --- argument checks shared by the public losses ------------------------------------------------


def _loss_example(x, name: str) -> Array:
    """``x``, one example, as :func:`_as_example` takes it, after refusing what is no real
    example: a complex ``x`` (it gave a complex 'loss'), booleans, an empty example (an
    internal 'Need at least one array to stack'), and, when concrete, non-finite entries."""
    try:
        array = jnp.asarray(x)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: expected an array of real numbers (one example), got {type(x).__name__}"
        ) from None
    if jnp.issubdtype(array.dtype, jnp.complexfloating) or array.dtype == jnp.bool_:
        raise TypeError(
            f"{name}: expected real numbers, got {array.dtype}; give a real floating array"
        )
    if not jnp.issubdtype(array.dtype, jnp.number):
        raise TypeError(f"{name}: expected real numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name}: expected one example of d >= 1 entries, got shape {array.shape}")
    if jnp.issubdtype(array.dtype, jnp.inexact) and all_finite(array) is False:
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(np.asarray(array))))
        raise ValueError(
            f"{name}: expected finite numbers, got {bad} NaN or infinite entries; "
            "clean or drop this example"
        )
    return _as_example(array)


def _checked_score(score_fn: ScoreFn) -> ScoreFn:
    """``score_fn``, refusing while it is traced a score that is not a real floating array of
    its example's shape, the check :func:`scorelab.samplers.sample` makes of a state's score.
    A scalar, ``(1,)`` or ``(2, d)`` score was broadcast against the ``(d,)`` noise and trained
    a model on a meaningless residual (the trace losses failed inside ``dot_general``); an
    integer score failed with a ``float0`` dtype error. Shapes and dtypes are static, so the
    check adds nothing to the compiled program."""

    def checked(x, sigma, *args):
        score = score_fn(x, sigma, *args)
        if not isinstance(score, (jax.Array, np.ndarray, np.generic)):
            raise TypeError(
                f"score_fn: returned {type(score).__name__} for an example of shape "
                f"{jnp.shape(x)}; it must return the score of one example, an array of the "
                "example's shape"
            )
        if jnp.shape(score) != jnp.shape(x):
            raise ValueError(
                f"score_fn: returned shape {jnp.shape(score)} for an example of shape "
                f"{jnp.shape(x)}; it must return the score of one example, of the example's "
                "shape"
            )
        if not jnp.issubdtype(score.dtype, jnp.floating):
            raise TypeError(
                f"score_fn: returned dtype {score.dtype}; it must return real floating-point "
                "numbers, the score of one example"
            )
        return score

    return checked


def _weight(weighting_fn: Callable, sigma) -> Array:
    """``weighting_fn(sigma)``, refusing while it is traced a weight that is not one real
    number (a ``(3,)`` weight made :func:`dsm_loss` return a ``(3,)`` 'loss')."""
    weight = weighting_fn(sigma)
    if not isinstance(weight, (jax.Array, np.ndarray, np.generic, numbers.Real)):
        raise TypeError(
            f"weighting_fn: returned {type(weight).__name__}; it must return one real weight "
            "lambda(sigma), a scalar"
        )
    if jnp.shape(weight) != ():
        raise ValueError(
            f"weighting_fn: returned shape {jnp.shape(weight)} for a scalar sigma; it must "
            "return one weight lambda(sigma), a scalar"
        )
    dtype = jnp.result_type(weight)
    if not jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"weighting_fn: returned dtype {dtype}; it must return one real weight "
            "lambda(sigma), a scalar"
        )
    return weight


_MEMORY_CHECK_FLOOR = 1 << 26
"""Allocations below 64 MiB are not checked against the available memory: reading it costs a
file read per (traced or eager) call, and such sizes fit any machine that runs JAX."""


def _check_allocation(field: str, n_bytes: float, remedy: str) -> None:
    """:func:`scorelab._validate.check_memory` for allocations of at least 64 MiB: a count
    that asked for terabytes aborted the interpreter or failed on first use."""
    if n_bytes >= _MEMORY_CHECK_FLOOR:
        check_memory(field, n_bytes, remedy)


def _check_probe_memory(field: str, n: int, x: Array) -> None:
    """Refuse ``n`` probes of the flat example ``x`` when the probes and their Jacobian-vector
    products, two ``(n, d)`` arrays, do not fit."""
    _check_allocation(
        field, 2 * n * x.size * x.dtype.itemsize, f"give a smaller {field} (d = {x.size})"
    )


def _check_label(name: str, value) -> None:
    """Raise unless ``value`` is one integer class ``>= 0``: a Python or numpy integer, or an
    integer array of shape ``()`` (traced or concrete; a traced value is checked for its dtype
    and shape only). A float label, an array of labels for one example and a negative label
    were taken without a word."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an integer class >= 0, got {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ValueError(f"{name}: expected an integer class >= 0, got {value!r}")
        return
    dtype = getattr(value, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        what = f"dtype {dtype}" if dtype is not None else type(value).__name__
        raise TypeError(f"{name}: expected an integer class >= 0, got {what}")
    if jnp.shape(value) != ():
        raise ValueError(
            f"{name}: expected one integer class (a scalar) for one example, got shape "
            f"{jnp.shape(value)}; vmap the loss over a batch of examples and labels"
        )
    if not is_traced(value) and int(value) < 0:
        raise ValueError(f"{name}: expected an integer class >= 0, got {int(value)}")


# --- the Jacobian-trace machinery shared by the three data score-matching losses -------------


def _score_and_quadratic_forms(
    score_fn: ScoreFn, x: Array, sigma, probes: Array
) -> tuple[Array, Array]:
    r"""Return :math:`s(x)` ``(d,)`` and :math:`v_k^\top J(x) v_k` ``(n,)`` for probes ``(n, d)``.

    The score is linearised once at ``x`` and its Jacobian-vector product applied to each
    probe: ``n`` forward-mode products sharing one forward pass, never a full Jacobian. An
    example of any shape (an image ``(C, H, W)``) is taken flat, ``d = x.size``, as the
    probes are (a ``(1, 8, 8)`` image met ``(8,)`` probes and failed inside ``linearize``).
    """
    shape = x.shape
    score, score_jvp = jax.linearize(
        lambda y: jnp.ravel(score_fn(y.reshape(shape), sigma)), jnp.ravel(x)
    )
    # Full float32 on every backend (a no-op on a CPU): vmapped over probes this dot is a
    # batched matmul, which a GPU's default precision may round to TF32 (10-bit mantissa),
    # and the likelihood integrates these forms over the whole ODE solve.
    return score, _small_map(
        lambda v: jnp.dot(v, score_jvp(v), precision=jax.lax.Precision.HIGHEST), probes
    )


def _draw_probes(key: Array, n: int, x: Array, probe: str) -> Array:
    """``n`` probes of the flat example, shape ``(n, d)`` with ``d = x.size``; each has
    E[v v^T] = I."""
    if probe == "rademacher":
        return jax.random.rademacher(key, (n, x.size), x.dtype)
    return jax.random.normal(key, (n, x.size), x.dtype)


# --- score matching on the data -------------------------------------------------------------


def hyvarinen_loss(key: Array, score_fn: ScoreFn, x: Array, *, sigma=None) -> Array:
    r"""Hyvarinen's score-matching loss with the exact Jacobian trace.

    .. math::
        \ell(x) = \operatorname{tr}\frac{\partial s(x)}{\partial x} + \tfrac12 \|s(x)\|^2 .

    The trace is :math:`\sum_i e_i^\top J e_i`: ``d`` forward-mode Jacobian-vector products
    sharing one ``jax.linearize``, one per basis vector. The cost grows like ``d``
    score evaluations; use :func:`hutchinson_loss` when ``d`` is large.

    Args:
        key: unused (``None`` or a PRNG key); kept so every loss has the same signature.
        score_fn: ``score_fn(x, sigma) -> (d,)``.
        x: one data point, shape ``(d,)``; an integer ``x`` is taken as JAX's default float.
        sigma: passed unchanged to ``score_fn``. ``None`` (the default) suits unconditional
            models, which ignore it; give a value to score a noise-conditional network at a
            fixed level, or ``sigma=0.0`` for :class:`scorelab.models.ExactScore` (which
            does not accept ``None``).

    Returns:
        Scalar loss of this example.

    Raises:
        TypeError, ValueError: for a bad ``key``, ``score_fn``, example or score (see the
            module's argument checks).
        ValueError: ``x`` is so large (``d`` entries) that the ``(d, d)`` basis does not fit
            in memory; use :func:`hutchinson_loss`.

    References:
        Hyvarinen, A. (2005). Estimation of Non-Normalized Statistical Models by Score
        Matching. JMLR 6, 695-709 (eq. 4). https://jmlr.org/papers/v6/hyvarinen05a.html
    """
    if key is not None:  # unused (deterministic): None, or a key checked as every loss's
        typed_key(key)
    check_callable("score_fn", score_fn, "score_fn(x, sigma)")
    x = _loss_example(x, "x")
    _check_allocation(
        "x",
        2 * x.size**2 * x.dtype.itemsize,
        f"the exact trace builds a (d, d) basis and its products, d = {x.size}; use "
        "hutchinson_loss or sliced_score_matching_loss for a large example",
    )
    basis = jnp.eye(x.size, dtype=x.dtype)
    score, diagonal = _score_and_quadratic_forms(_checked_score(score_fn), x, sigma, basis)
    return jnp.sum(diagonal) + 0.5 * jnp.dot(score, score)


def hutchinson_loss(
    key: Array,
    score_fn: ScoreFn,
    x: Array,
    *,
    n_probes: int = 1,
    probe: str = "rademacher",
    sigma=None,
) -> Array:
    r"""Hyvarinen's loss with Hutchinson's unbiased trace estimator.

    .. math::
        \ell(x) = \tfrac12 \|s(x)\|^2 + \frac1n \sum_{k=1}^n v_k^\top J(x)\, v_k,
        \qquad \mathbb{E}[v v^\top] = I,

    so :math:`\mathbb{E}_v[\ell] =` :func:`hyvarinen_loss`. All probes share one
    linearisation of ``score_fn``, and each probe costs one Jacobian-vector product, as each
    basis vector does in :func:`hyvarinen_loss`: with ``n_probes >= d`` the exact trace costs
    no more and has no variance, so this loss pays off only for ``n_probes`` well below the
    dimension. Per probe, with
    :math:`A = (J + J^\top)/2`, the variance is :math:`2 \sum_{i \ne j} A_{ij}^2` for
    Rademacher probes (the minimum over probe laws; Hutchinson, 1989) and
    :math:`2 \operatorname{tr} A^2` for Gaussian ones. This completes the founding
    tutorial's unfinished ``use_hutching_trick`` branch.

    Args:
        key: draws the ``(n_probes, d)`` probes.
        score_fn: ``score_fn(x, sigma) -> (d,)``.
        x: one data point, shape ``(d,)``; an integer ``x`` is taken as JAX's default float.
        n_probes: number of probes ``n >= 1``.
        probe: ``"rademacher"`` (entries +-1) or ``"gaussian"`` (standard normal).
        sigma: passed unchanged to ``score_fn``; see :func:`hyvarinen_loss`.

    Returns:
        Scalar loss of this example.

    Raises:
        TypeError, ValueError: for a bad ``key``, ``score_fn``, example or score (see the
            module's argument checks).
        ValueError: ``n_probes`` not an integer ``>= 1`` or too many to fit in memory, an
            unknown ``probe``.

    References:
        Hutchinson, M. F. (1989). A Stochastic Estimator of the Trace of the Influence Matrix
        for Laplacian Smoothing Splines. Communications in Statistics - Simulation and
        Computation 18(3). https://doi.org/10.1080/03610918908812806
        Grathwohl, W. et al. (2018). FFJORD: Free-form Continuous Dynamics for Scalable
        Reversible Generative Models. https://arxiv.org/abs/1810.01367
    """
    key = typed_key(key)
    check_callable("score_fn", score_fn, "score_fn(x, sigma)")
    check_int("n_probes", n_probes, 1)
    check_choice("probe", probe, PROBES)
    x = _loss_example(x, "x")
    _check_probe_memory("n_probes", n_probes, x)
    probes = _draw_probes(key, n_probes, x, probe)
    score, quadratic_forms = _score_and_quadratic_forms(_checked_score(score_fn), x, sigma, probes)
    return 0.5 * jnp.dot(score, score) + jnp.mean(quadratic_forms)


def sliced_score_matching_loss(
    key: Array,
    score_fn: ScoreFn,
    x: Array,
    *,
    n_projections: int = 1,
    variance_reduction: bool = False,
    sigma=None,
) -> Array:
    r"""Sliced score matching (SSM), plain or variance-reduced (SSM-VR), with Gaussian ``v``.

    .. math::
        \ell_{\text{SSM}}(x) = \frac1n \sum_{k=1}^n \Big[v_k^\top J(x)\, v_k
            + \tfrac12 (v_k^\top s(x))^2\Big], \qquad
        \ell_{\text{SSM-VR}}(x) = \frac1n \sum_{k=1}^n v_k^\top J(x)\, v_k
            + \tfrac12 \|s(x)\|^2,

    with :math:`v_k \sim \mathcal{N}(0, I)` (Song et al., 2019, eqs. 7 and 8). Both are
    unbiased for :func:`hyvarinen_loss`. SSM-VR with Gaussian probes *is*
    :func:`hutchinson_loss` with ``probe="gaussian"`` (same key, same value).

    Per projection, with :math:`A = (J + J^\top)/2`, the variances are
    :math:`2 \operatorname{tr}(A + \tfrac12 s s^\top)^2` (SSM) and
    :math:`2 \operatorname{tr} A^2` (SSM-VR); SSM minus SSM-VR is
    :math:`\tfrac12 \|s\|^4 + 2 s^\top A s`. This is positive when the score is large
    compared with its Jacobian (high dimension, far from modes), but not always: for the
    true score :math:`s(x) = -x` of :math:`\mathcal{N}(0, I_2)` at :math:`\|x\| = 1` plain SSM
    has variance 2.5 and SSM-VR 4.

    Args:
        key: draws the ``(n_projections, d)`` projections.
        score_fn: ``score_fn(x, sigma) -> (d,)``.
        x: one data point, shape ``(d,)``; an integer ``x`` is taken as JAX's default float.
        n_projections: number of projections ``n >= 1``.
        variance_reduction: replace :math:`\tfrac12 (v^\top s)^2` by its expectation.
        sigma: passed unchanged to ``score_fn``; see :func:`hyvarinen_loss`.

    Returns:
        Scalar loss of this example.

    Raises:
        TypeError, ValueError: for a bad ``key``, ``score_fn``, example or score (see the
            module's argument checks).
        ValueError: ``n_projections`` not an integer ``>= 1`` or too many to fit in memory.
        TypeError: ``variance_reduction`` is not a boolean.

    References:
        Song, Y., Garg, S., Shi, J. & Ermon, S. (2019). Sliced Score Matching: A Scalable
        Approach to Density and Score Estimation. https://arxiv.org/abs/1905.07088
    """
    key = typed_key(key)
    check_callable("score_fn", score_fn, "score_fn(x, sigma)")
    check_int("n_projections", n_projections, 1)
    if not isinstance(variance_reduction, (bool, np.bool_)):
        raise TypeError(f"variance_reduction: expected True or False, got {variance_reduction!r}")
    x = _loss_example(x, "x")
    _check_probe_memory("n_projections", n_projections, x)
    projections = _draw_probes(key, n_projections, x, "gaussian")
    score, quadratic_forms = _score_and_quadratic_forms(
        _checked_score(score_fn), x, sigma, projections
    )
    if variance_reduction:
        score_term = 0.5 * jnp.dot(score, score)
    else:
        score_term = 0.5 * jnp.mean((projections @ score) ** 2)
    return jnp.mean(quadratic_forms) + score_term


# --- denoising --------------------------------------------------------------------------------


def ncsn_weighting(sigma):
    r"""The NCSN weighting :math:`\lambda(\sigma) = \sigma^2` (Song & Ermon, 2019, Sec. 4.2),
    which makes every noise level's term O(1).

    The denoising target :math:`-\varepsilon/\sigma` has squared norm :math:`d/\sigma^2` on
    average, so :math:`\lambda(\sigma)\,\|s + \varepsilon/\sigma\|^2` is of order :math:`d` at
    every level.

    Args:
        sigma: noise level(s), any shape.

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600
    """
    return sigma**2


def edm_weighting(sigma, sigma_data: float):
    r"""EDM's loss weighting, as the weight of the score residual.

    Karras et al. (2022, Table 1) weight the denoiser's squared error by
    :math:`\lambda_{EDM}(\sigma) = (\sigma^2 + \sigma_d^2)/(\sigma \sigma_d)^2`. The
    losses here weight the score residual, and with :math:`s = (D - x)/\sigma^2` and
    :math:`x = x_0 + \sigma\varepsilon`,
    :math:`s + \varepsilon/\sigma = (D - x_0)/\sigma^2`; so the same loss is

    .. math::
        \lambda_{EDM}(\sigma)\, \|D - x_0\|^2
            = \lambda(\sigma)\, \|s + \varepsilon/\sigma\|^2, \qquad
        \lambda(\sigma) = \sigma^4 \lambda_{EDM}(\sigma)
            = \frac{\sigma^2 (\sigma^2 + \sigma_d^2)}{\sigma_d^2},

    which is returned. It is :func:`ncsn_weighting` times :math:`1 + \sigma^2/\sigma_d^2`:
    equal below :math:`\sigma_d`, more weight above it. Under
    :class:`scorelab.precond.EDMPreconditioned` it makes the raw network's effective target
    unit-weighted: :math:`\lambda_{EDM}\, c_{out}^2 = 1`.

    Args:
        sigma: noise level(s), any shape.
        sigma_data: :math:`\sigma_d`, the data's standard deviation, ``> 0``.

    Raises:
        ValueError: ``sigma_data`` is not finite and ``> 0`` (0 divided by zero, a negative
            one was squared away); a traced ``sigma_data`` under ``jit`` is not checked.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models (Table 1, eq. 8). https://arxiv.org/abs/2206.00364
    """
    check_concrete_positive("sigma_data", sigma_data)
    return sigma**2 * (sigma**2 + sigma_data**2) / sigma_data**2


def dsm_loss(
    key: Array,
    score_fn: ScoreFn,
    x_0: Array,
    *,
    sigma,
    weighting_fn: Callable | None = None,
) -> Array:
    r"""Denoising score matching at one noise level (Vincent, 2011).

    .. math::
        \ell(x_0) = \lambda(\sigma)\, \big\| s(x_0 + \sigma\varepsilon, \sigma)
            + \varepsilon / \sigma \big\|^2, \qquad \varepsilon \sim \mathcal{N}(0, I),

    summed over dimensions as in the founding tutorial (no factor 1/2), with
    :math:`\lambda \equiv 1` unless ``weighting_fn`` is given. Its expectation is
    :math:`\lambda(\sigma)\,\big(\mathbb{E}\|s - \nabla \log q_\sigma\|^2 + d/\sigma^2
    - \mathbb{E}\|\nabla \log q_\sigma\|^2\big)`, minimised by the noised score
    :math:`\nabla \log q_\sigma`.

    Args:
        key: draws ``eps`` of shape ``(d,)``.
        score_fn: ``score_fn(x, sigma) -> (d,)``; unconditional models ignore ``sigma``.
        x_0: one clean data point, shape ``(d,)`` (a list or an integer array is taken as an
            array of JAX's default float).
        sigma: noise level, scalar ``> 0`` (may be a traced array).
        weighting_fn: optional :math:`\lambda(\sigma)`, e.g. :func:`ncsn_weighting`.

    Returns:
        Scalar loss of this example.

    Raises:
        ValueError: ``sigma`` is not a scalar (a vector was applied per dimension), or is a
            concrete value not finite and ``> 0`` (``sigma = 0`` gave an infinite loss) or
            outside ``[1.1e-19, 9.2e18]``, where its square is no normal float32; a traced
            ``sigma`` under ``jit`` or ``vmap`` is checked for its shape and dtype only.
            ``weighting_fn`` returned other than one real number.
        TypeError, ValueError: for a bad ``key``, ``score_fn``, example or score (see the
            module's argument checks).

    References:
        Vincent, P. (2011). A Connection Between Score Matching and Denoising Autoencoders.
        Neural Computation 23(7), 1661-1674. https://doi.org/10.1162/NECO_a_00142
    """
    key = typed_key(key)
    check_callable("score_fn", score_fn, "score_fn(x, sigma)")
    check_callable("weighting_fn", weighting_fn, "weighting_fn(sigma)", optional=True)
    if jnp.ndim(sigma) != 0:
        raise ValueError(f"sigma: expected a scalar noise level, got shape {jnp.shape(sigma)}")
    if not is_traced(sigma):
        check_concrete_positive("sigma", sigma)
        check_sigma("sigma", float(np.asarray(sigma)))
    elif not jnp.issubdtype(sigma.dtype, jnp.number) or jnp.issubdtype(
        sigma.dtype, jnp.complexfloating
    ):
        raise TypeError(f"sigma: expected a real noise level > 0, got dtype {sigma.dtype}")
    x_0 = _loss_example(x_0, "x_0")
    return _dsm(key, score_fn, x_0, sigma, weighting_fn)


def _dsm(key: Array, score_fn: ScoreFn, x_0: Array, sigma, weighting_fn) -> Array:
    """:func:`dsm_loss` on checked arguments (``x_0`` a floating example): the loss itself,
    shared by :func:`ncsn_loss` and :func:`vp_epsilon_loss`, whose levels are valid."""
    x_sigma, eps = sample_ve_noise(key, x_0, sigma)
    if isinstance(score_fn, EDMPreconditioned):
        # (D - x_0) / sigma^2, the same residual: s + eps / sigma cancels two terms of size
        # 1 / sigma to one of 1 / sigma^2, and lost sigma times float32's precision (a relative
        # error of 4e-3 in the loss at sigma 1e5, 7e-3 in its gradient; pass 30, #3)
        residual = (score_fn.denoise(x_sigma, sigma) - x_0) / sigma**2
    else:
        residual = _checked_score(score_fn)(x_sigma, sigma) + eps / sigma
    loss = jnp.sum(residual**2)
    return loss if weighting_fn is None else _weight(weighting_fn, sigma) * loss


def _check_shape(shape) -> None:
    """Raise unless ``shape`` is a tuple or list of integers ``>= 0`` (``(-1,)`` failed in
    MLIR with 'Invalid type')."""
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape: expected a tuple of integers >= 0, got {shape!r}")
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0
               for n in shape):  # fmt: skip
        raise ValueError(f"shape: expected a tuple of integers >= 0, got {shape!r}")


def sample_training_sigmas(
    key: Array,
    shape: tuple[int, ...],
    *,
    sigma_min: float = 0.02,
    sigma_max: float = 10.0,
    distribution: str = "lognormal",
    p_mean: float = LOG_SIGMA_MEAN,
    p_std: float = LOG_SIGMA_STD,
) -> Array:
    r"""Draw training noise levels, float32 of shape ``shape``, inside ``[sigma_min, sigma_max]``.

    * ``"lognormal"``:
      :math:`\sigma = \operatorname{clip}(e^{P_{mean} + P_{std} z}, \sigma_{\min},
      \sigma_{\max})`, :math:`z \sim \mathcal{N}(0, 1)`; the clipping puts atoms at both end
      points. The defaults :math:`P_{mean} = -0.5, P_{std} = 1.2` are the founding tutorial's
      draw; EDM's are :math:`-1.2, 1.2` for data of standard deviation 0.5 (Karras et al.
      2022, Table 1).
    * ``"loguniform"``: :math:`\log\sigma \sim \mathcal{U}(\log\sigma_{\min},
      \log\sigma_{\max})`, the continuous limit of the geometric ladder.

    Args:
        key: PRNG key of the draw.
        shape: output shape, e.g. ``(n_sigmas,)``.
        sigma_min: lower end of the range, ``> 0``.
        sigma_max: upper end of the range, ``> sigma_min``.
        distribution: ``"lognormal"`` or ``"loguniform"``.
        p_mean, p_std: mean (finite) and standard deviation (``> 0``) of :math:`\log\sigma`
            for ``"lognormal"``.

    Raises:
        ValueError: for a bad sigma range, an unknown ``distribution``, a ``p_mean`` that is
            not a finite number, ``p_std`` not ``> 0``, or ``shape`` not a tuple of integers
            ``>= 0``, or one whose draw does not fit in memory.
        TypeError: ``shape`` is not a tuple or list, or ``key`` is not one PRNG key.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models (log-normal sigma draw, Sec. 5).
        https://arxiv.org/abs/2206.00364
    """
    key = typed_key(key)
    check_choice("distribution", distribution, SIGMA_DISTRIBUTIONS)
    # Losses run under jit; the range check must see the (static) floats, not tracers.
    with jax.ensure_compile_time_eval():
        check_sigma_range(sigma_min, sigma_max)
        check_real("p_mean", p_mean, "a finite number", lambda v: True)
        check_real("p_std", p_std, "a number > 0", lambda v: v > 0)
    _check_shape(shape)
    # The float32 draw and the float32 result.
    _check_allocation("shape", 2 * 4 * math.prod(shape), "give a smaller shape")
    if distribution == "lognormal":
        log_sigma = p_mean + p_std * jax.random.normal(key, shape)
    else:
        log_sigma = jax.random.uniform(
            key, shape, minval=math.log(sigma_min), maxval=math.log(sigma_max)
        )
    # Clip in both cases: exp(log(sigma_max)) can round one ulp above sigma_max.
    return jnp.clip(jnp.exp(log_sigma), sigma_min, sigma_max).astype(jnp.float32)


def ncsn_loss(
    key: Array,
    score_fn: ScoreFn,
    x_0: Array,
    *,
    sigma_min: float = 0.02,
    sigma_max: float = 10.0,
    n_sigmas: int = 1,
    sigma_distribution: str = "lognormal",
    p_mean: float = LOG_SIGMA_MEAN,
    p_std: float = LOG_SIGMA_STD,
    weighting_fn: Callable = ncsn_weighting,
) -> Array:
    r"""The NCSN multi-noise denoising loss: :func:`dsm_loss` averaged over random sigmas.

    .. math::
        \ell(x_0) = \frac1n \sum_{k=1}^n \lambda(\sigma_k)\,
            \big\| s(x_0 + \sigma_k \varepsilon_k, \sigma_k) + \varepsilon_k / \sigma_k \big\|^2,

    with :math:`\sigma_k` from :func:`sample_training_sigmas` (default: the tutorial's clipped
    log-normal), independent :math:`\varepsilon_k \sim \mathcal{N}(0, I)` and
    :math:`\lambda(\sigma) = \sigma^2` by default. EDM's loss (Karras et al. 2022, eq. 8) is
    ``p_mean=-1.2, p_std=1.2`` (for data of standard deviation 0.5) with
    ``weighting_fn=Partial(edm_weighting, sigma_data=...)``. ``n_sigmas`` is the tutorial's
    ``n_time_samples`` (noise levels per data point).

    **Difference from the founding tutorial.** Its ``make_ncns_loss`` splits ``key`` into
    ``key_uniform, key_noise``, then draws ``eps`` from the parent ``key`` again and never uses
    ``key_noise``. Here sigma and eps come from separate sub-keys.

    Args:
        key: split into a sigma key and a noise key.
        score_fn: noise-conditional ``score_fn(x, sigma) -> (d,)``.
        x_0: one clean data point, shape ``(d,)``.
        sigma_min, sigma_max: range of the drawn sigmas, ``0 < sigma_min < sigma_max``.
        n_sigmas: noise levels drawn for this example, ``>= 1``.
        sigma_distribution: ``"lognormal"`` or ``"loguniform"``.
        p_mean, p_std: the log-normal law of :math:`\log\sigma`
            (:func:`sample_training_sigmas`).
        weighting_fn: :math:`\lambda(\sigma)`.

    Returns:
        Scalar loss of this example.

    Raises:
        ValueError: as :func:`sample_training_sigmas` (a bad range, ``p_mean`` or ``p_std``),
            or ``n_sigmas`` not an integer ``>= 1`` or too many to fit in memory.
        TypeError, ValueError: for a bad ``key``, ``score_fn``, example or score (see the
            module's argument checks).
        TypeError, ValueError: as :func:`dsm_loss`, for a bad ``weighting_fn``.

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution (eqs. 5-6). https://arxiv.org/abs/1907.05600
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    key = typed_key(key)
    check_callable("score_fn", score_fn, "score_fn(x, sigma)")
    check_callable("weighting_fn", weighting_fn, "weighting_fn(sigma)", optional=True)
    check_int("n_sigmas", n_sigmas, 1)
    check_choice("sigma_distribution", sigma_distribution, SIGMA_DISTRIBUTIONS)
    x_0 = _loss_example(x_0, "x_0")
    # Per level: the noise, the noised example and its score, each of the example's size.
    _check_allocation(
        "n_sigmas",
        n_sigmas * (3 * x_0.size * x_0.dtype.itemsize + 16),
        f"give fewer noise levels per example (d = {x_0.size})",
    )
    key_sigma, key_eps = jax.random.split(key)
    sigmas = sample_training_sigmas(
        key_sigma,
        (n_sigmas,),
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        distribution=sigma_distribution,
        p_mean=p_mean,
        p_std=p_std,
    )
    per_sigma = _small_map(
        lambda key_k, sigma_k: _dsm(key_k, score_fn, x_0, sigma_k, weighting_fn),
        jax.random.split(key_eps, n_sigmas),
        sigmas,
    )
    return jnp.mean(per_sigma)


def vp_epsilon_loss(
    key: Array,
    score_fn: ScoreFn,
    x_0: Array,
    class_label: Array | None = None,
    *,
    schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    label_dropout: float = 0.0,
    null_label: int | None = None,
) -> Array:
    r"""DDPM's :math:`\varepsilon`-prediction loss on a diffusers schedule (Ho et al., 2020).

    .. math::
        \ell(x_0) = \frac1d \big\| \hat\varepsilon(\sqrt{\bar\alpha_t}\, x_0
            + \sqrt{1 - \bar\alpha_t}\, \varepsilon,\ t) - \varepsilon \big\|^2,
        \qquad t \sim \mathcal{U}\{0, \dots, T - 1\},\ \varepsilon \sim \mathcal{N}(0, I),

    the mean squared error of diffusers' training example (``F.mse_loss``) with
    :math:`\bar\alpha_t` from :func:`scorelab.noise.vp_alphas_cumprod`. For a VE score model
    the prediction is :math:`\hat\varepsilon = -\sigma_t\, s(x, \sigma_t)` at the level
    :math:`\sigma_t = \sqrt{(1 - \bar\alpha_t) / \bar\alpha_t}`, which makes the loss
    :func:`dsm_loss` at :math:`\sigma_t` with :func:`ncsn_weighting`, divided by :math:`d`;
    for :class:`scorelab.diffusers.VPEpsilonUNet` it is exactly DDPM's objective. Its
    minimiser is :math:`\hat\varepsilon^* = -\sigma_t \nabla \log q_{\sigma_t}`, the
    posterior mean of the noise.

    With a ``class_label`` :math:`y` the model is class-conditional,
    :math:`\hat\varepsilon(x_t, t, y)`, called as ``score_fn(x, sigma, y)``; the minimiser is
    then :math:`-\sigma_t \nabla \log q_{\sigma_t}(x \mid y)`. With ``label_dropout``
    :math:`p > 0`, :math:`y` is replaced by the null label :math:`\varnothing` with probability
    :math:`p`, so one network also learns the unconditional score: classifier-free guidance's
    training (Ho & Salimans 2022, Algorithm 1, :math:`p_\mathrm{uncond}`).

    Args:
        key: split into a timestep key and a noise key (first a label-dropout key, when
            ``label_dropout > 0``).
        score_fn: noise-conditional ``score_fn(x, sigma) -> x.shape``, or with ``class_label``
            ``score_fn(x, sigma, class_label)``.
        x_0: one clean example, any shape (e.g. ``(C, H, W)``) of ``d`` entries.
        class_label: this example's integer class (scalar), or ``None`` (unconditional).
        schedule: diffusers' ``beta_schedule`` (:data:`scorelab.noise.VP_SCHEDULES`).
        num_train_timesteps: ``T``.
        beta_start, beta_end: the (scaled) linear schedule's end points.
        label_dropout: :math:`p_\mathrm{uncond} \in [0, 1)`; ``> 0`` needs ``class_label`` and
            ``null_label``.
        null_label: the integer of :math:`\varnothing` (the model's ``num_classes``).

    Returns:
        Scalar loss of this example.

    Raises:
        ValueError: for ``label_dropout`` outside ``[0, 1)``, or ``> 0`` without a class label
            or a null label; ``num_train_timesteps`` not an integer ``>= 1``, or too many to
            fit in memory.
        TypeError, ValueError: ``class_label`` or ``null_label`` not one integer ``>= 0``
            (a traced label is checked for its dtype and shape only).
        TypeError, ValueError: for a bad ``key``, ``score_fn``, example or score (see the
            module's argument checks).

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models
        (Algorithm 1). https://arxiv.org/abs/2006.11239
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models, Table 1 (VP). https://arxiv.org/abs/2206.00364
        Ho, J. & Salimans, T. (2022). Classifier-Free Diffusion Guidance (Algorithm 1).
        https://arxiv.org/abs/2207.12598
    """
    key = typed_key(key)
    check_callable(
        "score_fn",
        score_fn,
        "score_fn(x, sigma)" if class_label is None else "score_fn(x, sigma, class_label)",
    )
    x_0 = _loss_example(x_0, "x_0")
    check_int("num_train_timesteps", num_train_timesteps, 1)
    # The schedule's float64 betas, their running product and the levels, (T,) each.
    _check_allocation(
        "num_train_timesteps",
        3 * 8 * num_train_timesteps,
        "give fewer training timesteps (DDPM uses 1000)",
    )
    if class_label is not None:
        _check_label("class_label", class_label)
    if null_label is not None:
        _check_label("null_label", null_label)
    with jax.ensure_compile_time_eval():  # the schedule is a constant, not a traced value
        alphas_cumprod = vp_alphas_cumprod(schedule, num_train_timesteps, beta_start, beta_end)
        sigmas = ve_sigmas_from_vp(*vp_alpha_sigma(alphas_cumprod))
        check_real("label_dropout", label_dropout, "a number in [0, 1)", lambda v: 0 <= v < 1)
    if label_dropout > 0:
        if class_label is None or null_label is None:
            raise ValueError(
                "label_dropout: drops class labels; give class_label and null_label, or set it 0"
            )
        key, key_drop = jax.random.split(key)
        dropped = jax.random.bernoulli(key_drop, label_dropout)
        class_label = jnp.where(dropped, null_label, class_label)
    if class_label is not None:
        conditional_fn = score_fn

        def score_fn(x, sigma):
            return conditional_fn(x, sigma, class_label)

    key_t, key_eps = jax.random.split(key)
    t = jax.random.randint(key_t, (), 0, num_train_timesteps)
    loss = _dsm(key_eps, score_fn, x_0, sigmas[t], ncsn_weighting)
    return loss / x_0.size


LOSSES: dict[str, Callable[..., Array]] = {
    "hyvarinen": hyvarinen_loss,
    "hutchinson": hutchinson_loss,
    "sliced": sliced_score_matching_loss,
    "dsm": dsm_loss,
    "ncsn": ncsn_loss,
    "vp_epsilon": vp_epsilon_loss,
}
"""Loss name (as used by the CLI) -> per-example loss function."""
