r"""Exact log-likelihoods of a score model through the probability-flow ODE, and bits per dim.

The probability-flow ODE of VE noise transports :math:`q_\sigma = q_0 * \mathcal{N}(0,
\sigma^2 I)` from one level to another. Solved in :math:`u = \log\sigma` (as
:func:`scorelab.samplers.adaptive`, for the same reason: the field stays :math:`O(|x|)` at
both ends),

.. math::
    \frac{dx}{du} = f(x, u) = -\sigma^2 s(x, \sigma), \qquad \sigma = e^u,

and the instantaneous change of variables (Chen et al. 2018, Theorem 1) gives the
log-density along a solution, :math:`\frac{d}{du} \log q_\sigma(x(u)) = -\nabla \cdot f`:

.. math::
    \log q_{\sigma_{\min}}(x) = \log p_T(x(\log\sigma_{\max}))
        + \int_{\log\sigma_{\min}}^{\log\sigma_{\max}} \nabla \cdot f(x(u), u)\, du,
    \qquad \nabla \cdot f = -\sigma^2 \operatorname{tr} \frac{\partial s(x, \sigma)}{\partial x},

with the prior :math:`p_T = \mathcal{N}(0, \sigma_{\max}^2 I)` in place of
:math:`q_{\sigma_{\max}}`. With the exact score the only errors are the ODE solver's and this
prior mismatch (both measured in ``tests/test_likelihood.py``); with a learned score the
number is the exact log-density of the model the ODE defines, which is why it is the
likelihood of score-based models (Song et al. 2021, Sec. 4.3 and App. D.2).

The trace is either exact, :math:`\sum_i e_i^\top J e_i` from ``d`` Jacobian-vector products
sharing one linearisation (``jacfwd`` without forming :math:`J`), or Hutchinson's unbiased
estimate :math:`\frac1K \sum_k v_k^\top J v_k` with :math:`\mathbb{E}[v v^\top] = I`. As in
FFJORD the probes are drawn once per point and held fixed along the solve: the integral is
then :math:`\frac1K \sum_k v_k^\top (\int -\sigma^2 J\, du)\, v_k`, still unbiased for the
exact integral, and the ODE stays smooth for the adaptive solver.

References:
    Chen, R. T. Q., Rubanova, Y., Bettencourt, J. & Duvenaud, D. (2018). Neural Ordinary
    Differential Equations. https://arxiv.org/abs/1806.07366
    Grathwohl, W., Chen, R. T. Q., Bettencourt, J., Sutskever, I. & Duvenaud, D. (2019).
    FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models.
    https://arxiv.org/abs/1810.01367
    Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic Differential
    Equations, Sec. 4.3 and App. D. https://arxiv.org/abs/2011.13456
    Ho, J., Chen, X., Srinivas, A., Duan, Y. & Abbeel, P. (2019). Flow++: Improving Flow-Based
    Generative Models with Variational Dequantization and Architecture Design, Sec. 3.1.
    https://arxiv.org/abs/1902.00275
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import (
    all_finite,
    check_callable,
    check_choice,
    check_int,
    check_memory,
    check_real,
    is_traced,
    real_number,
)
from scorelab.losses import (
    PROBES,
    _as_example,
    _checked_score,
    _draw_probes,
    _score_and_quadratic_forms,
)
from scorelab.noise import check_sigma_range
from scorelab.precond import check_concrete_positive
from scorelab.samplers import DEFAULT_SIGMA_MAX, DEFAULT_SIGMA_MIN, SolveError
from scorelab.samplers._adaptive import _NEW_STAGES_PER_STEP, ADAPTIVE_SOLVERS
from scorelab.samplers._core import ATOL_USUAL, warn_if_unusual
from scorelab.samplers._vp import vp_alpha_sigma_from_ve

__all__ = [
    "PROCESSES",
    "EXACT_TRACE_MAX_DIM",
    "EIGHT_BIT_BIN_WIDTH",
    "LikelihoodOutput",
    "ode_log_likelihood",
    "log_likelihood",
    "dequantise",
    "bits_per_dim",
    "dequantised_bits_per_dim",
]

PROCESSES = ("ve", "vp")
"""Noise processes whose prior and coordinates :func:`ode_log_likelihood` knows."""

EXACT_TRACE_MAX_DIM = 128
"""With ``n_probes="auto"``, the largest dimension whose divergence is the exact trace (``d``
Jacobian-vector products per field evaluation); above it one Hutchinson probe is used."""

EIGHT_BIT_BIN_WIDTH = 2.0 / 255.0
r"""The dequantisation bin of 8-bit images scaled to [-1, 1] as :math:`x = k / 127.5 - 1`."""


class LikelihoodOutput(NamedTuple):
    """The result of :func:`ode_log_likelihood` (one point) or :func:`log_likelihood` (a batch).

    Attributes:
        log_prob: ``()`` or ``(n,)``: :math:`\\log q_{\\sigma_{\\min}}(x)` in nats (VE), or the
            VP marginal's log-density (see :func:`ode_log_likelihood`).
        latent: the ODE's end point :math:`y_T` in the VE variable, shaped like ``x`` (one
            point) or ``(n, *x.shape)``; the VP state is :math:`x_T = y_T / \\sqrt{1 +
            \\sigma_{\\max}^2}`.
        nfe: ``()`` or ``(n,)`` int: field evaluations, each one score evaluation linearised
            and ``K`` (or ``d``) Jacobian-vector products; 6 per solver step, accepted or
            rejected, plus one at the start (as :func:`scorelab.samplers.adaptive`).
    """

    log_prob: Array
    latent: Array
    nfe: Array


def _check_options(
    sigma_min, sigma_max, process, n_probes, probe, solver, rtol, atol, max_steps
) -> None:
    # Validated under jit too (log_likelihood's options are static): the range check must see
    # the floats, not tracers.
    with jax.ensure_compile_time_eval():
        check_sigma_range(sigma_min, sigma_max)
    check_choice("process", process, PROCESSES)
    if n_probes not in ("auto", "exact"):
        check_int("n_probes", n_probes, 1)
    check_choice("probe", probe, PROBES)
    check_choice("solver", solver, tuple(ADAPTIVE_SOLVERS))
    # A relative tolerance of 1 or more bounds no digit of the solution.
    check_real("rtol", rtol, "a number in (0, 1)", lambda v: 0 < v < 1)
    check_real("atol", atol, "a number > 0", lambda v: v > 0)
    # 1e20 was one step: -1.23 nats where the exact log-density is -8.14 (pass 26)
    warn_if_unusual("atol", atol, ATOL_USUAL)
    check_int("max_steps", max_steps, 1)


def _probes(key: Array, n_probes, probe: str, x: Array) -> tuple[Array, bool]:
    """The ``(K, d)`` probes of a flat point ``x`` and whether they are the exact basis."""
    dim = x.shape[-1]
    if n_probes == "exact" or (n_probes == "auto" and dim <= EXACT_TRACE_MAX_DIM):
        if probe != "rademacher":  # the default: a probe law asked for would be ignored
            raise ValueError(
                f"probe: {probe!r} is a law of Hutchinson probes, and n_probes {n_probes!r} "
                f"takes the exact trace at dimension {dim}; give n_probes an integer, or leave "
                "probe out"
            )
        return jnp.eye(dim, dtype=x.dtype), True
    return _draw_probes(key, 1 if n_probes == "auto" else n_probes, x, probe), False


def ode_log_likelihood(
    key: Array,
    score_fn,
    x: Array,
    *,
    sigma_min: float = DEFAULT_SIGMA_MIN,
    sigma_max: float = DEFAULT_SIGMA_MAX,
    process: str = "ve",
    n_probes: int | str = "auto",
    probe: str = "rademacher",
    solver: str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
) -> LikelihoodOutput:
    r"""The log-density of one point under the probability-flow ODE of ``score_fn``.

    Solves, from :math:`u = \log\sigma_{\min}` up to :math:`\log\sigma_{\max}`,

    .. math::
        \frac{d}{du} \begin{pmatrix} y \\ \ell \end{pmatrix}
        = \begin{pmatrix} -\sigma^2 s(y, \sigma) \\
          -\sigma^2 \operatorname{tr} \partial_y s(y, \sigma) \end{pmatrix},
        \qquad y(\log\sigma_{\min}) = y_0,\ \ell(\log\sigma_{\min}) = 0,

    and returns :math:`\log p_T(y_T) + \ell_T - d \log a`, where for

    * ``process="ve"``: :math:`y_0 = x`, :math:`a = 1`,
      :math:`p_T = \mathcal{N}(0, \sigma_{\max}^2 I)`; the result estimates
      :math:`\log q_{\sigma_{\min}}(x)`, :math:`q_\sigma = q_0 * \mathcal{N}(0, \sigma^2 I)`.
    * ``process="vp"``: ``x`` is a VP state :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`
      at the VE level :math:`\sigma_t / \alpha_t = \sigma_{\min}`;
      :math:`a = \alpha_t = (1 + \sigma_{\min}^2)^{-1/2}`, :math:`y_0 = x / a` (the VE
      variable of :mod:`scorelab.samplers._vp`), and :math:`p_T = \mathcal{N}(0, (1 +
      \sigma_{\max}^2) I)`, the VP prior :math:`x_T \sim \mathcal{N}(0, I)` in that variable.
      The result estimates the VP marginal's :math:`\log p_t(x)`; ``score_fn`` is the VE score
      of the VP model, :func:`scorelab.samplers.ve_score_from_vp`.

    ``sigma_min > 0`` is required: the field :math:`-\sigma^2 s` is smooth in :math:`u` only
    away from :math:`\sigma = 0`. For a density with a smooth, bounded score,
    :math:`\log q_\sigma(x) - \log q_0(x) = \tfrac{\sigma^2}{2} (\Delta \log q_0 + \|\nabla
    \log q_0\|^2) + O(\sigma^4)`, so a small ``sigma_min`` approximates :math:`\log q_0`; a
    learned model is only meaningful down to the lowest level it was trained on.

    Accuracy: with a smooth score (the exact oracle, a SiLU or softplus network) the error
    falls with ``rtol`` down to float32's resolution. A piecewise-linear network (leaky ReLU,
    the tutorial's) has a kinked field: the controller shrinks its steps at every kink and
    float32 rounding of :math:`\ell` accumulates over them, so in float32 a tolerance much
    below the default can move the result *away* from the converged value; solve under
    ``jax.enable_x64`` for tighter answers.

    The divergence (``n_probes``):

    * ``"exact"``: the trace from ``d`` Jacobian-vector products (one per basis vector, all
      sharing one ``jax.linearize`` of the score, i.e. ``jacfwd`` without forming
      :math:`J`);
    * an integer ``K >= 1``: Hutchinson's estimate with ``K`` probes (``probe``: Rademacher or
      Gaussian), drawn once from ``key`` and held fixed along the solve (FFJORD); unbiased for
      the exact result up to the solver's error, at ``K`` products per evaluation;
    * ``"auto"``: exact for ``d <=`` :data:`EXACT_TRACE_MAX_DIM` (the 64-D digits), else one
      probe of kind ``probe`` (Song et al. 2021 evaluate with one probe per point).

    Args:
        key: draws the probes (unused for the exact trace).
        score_fn: ``score_fn(x, sigma) -> ∇ log q_sigma(x)`` on one example shaped like ``x``,
            scalar ``sigma`` (any score model, e.g. :class:`scorelab.models.ExactScore`).
        x: one point, any shape (``(d,)`` or an image ``(C, H, W)``); ``d = x.size``. A list
            or an integer array is taken as an array of JAX's default float.
        sigma_min, sigma_max: the ODE's end levels, ``0 < sigma_min < sigma_max``.
        process: ``"ve"`` or ``"vp"`` (:data:`PROCESSES`).
        n_probes: ``"auto"``, ``"exact"`` or an integer ``K >= 1``.
        probe: ``"rademacher"`` or ``"gaussian"``.
        solver: ``"tsit5"`` or ``"dopri5"`` (adaptive 5(4) Runge-Kutta, diffrax).
        rtol, atol: the step-size controller's tolerances, on both ``y`` and ``ℓ``.
        max_steps: the most solver steps (diffrax raises beyond).

    Returns:
        :class:`LikelihoodOutput` with scalar ``log_prob`` (nats) and ``nfe``, and ``latent``
        shaped like ``x``.

    Raises:
        ValueError: for a bad sigma range, an unknown ``process``, ``probe`` or ``solver``,
            ``n_probes`` neither ``"auto"``, ``"exact"`` nor an integer ``>= 1``,
            ``rtol`` outside (0, 1), non-positive ``atol`` or ``max_steps``, a ``probe``
            other than the default beside the exact trace (which draws no probes), or a
            concrete ``x`` with a NaN or infinite entry (a traced one is not checked).

    References:
        Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
        Differential Equations, App. D.2. https://arxiv.org/abs/2011.13456
        Grathwohl, W. et al. (2019). FFJORD: Free-form Continuous Dynamics for Scalable
        Reversible Generative Models, Sec. 3.1. https://arxiv.org/abs/1810.01367
        Hutchinson, M. F. (1989). A Stochastic Estimator of the Trace of the Influence Matrix
        for Laplacian Smoothing Splines. https://doi.org/10.1080/03610918908812806
    """
    _check_options(sigma_min, sigma_max, process, n_probes, probe, solver, rtol, atol, max_steps)
    check_callable("score_fn", score_fn, "score_fn(x, sigma)")
    x = _as_real(x, "x")
    _check_finite("x", x)
    shape = x.shape
    score_fn = _checked_score(score_fn)
    x_flat = jnp.ravel(x)
    dim = x_flat.shape[0]
    _check_probe_memory(1, dim, n_probes)

    def flat_score(y, sigma):  # in the points' precision (a float64 target's under x64)
        return jnp.ravel(score_fn(y.reshape(shape), sigma)).astype(y.dtype)

    probes, exact = _probes(typed_key(key), n_probes, probe, x_flat)

    def field(u, state, args):
        y, _ = state
        sigma = jnp.exp(u)
        score, quadratic_forms = _score_and_quadratic_forms(flat_score, y, sigma, probes)
        trace = jnp.sum(quadratic_forms) if exact else jnp.mean(quadratic_forms)
        return -(sigma**2) * score, -(sigma**2) * trace

    if process == "ve":
        scale, prior_variance = 1.0, sigma_max**2
    else:
        scale = vp_alpha_sigma_from_ve(sigma_min)[0]
        prior_variance = 1.0 + sigma_max**2
    with _solve_errors(rtol, atol, max_steps):  # a concrete solve's (a traced one runs later)
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            ADAPTIVE_SOLVERS[solver](),
            # In the points' precision: diffrax promotes the state to its times' dtype.
            t0=jnp.asarray(math.log(sigma_min), x_flat.dtype),
            t1=jnp.asarray(math.log(sigma_max), x_flat.dtype),
            dt0=None,
            y0=(x_flat / scale, jnp.zeros((), x_flat.dtype)),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
        )
    y_T, integral = solution.ys[0][-1], solution.ys[1][-1]
    # In the prior's own scale, and its log-normaliser in Python floats: at the largest
    # accepted sigma_max (9.2e18), y_T**2 and 2 pi sigma_max**2 overflowed float32 to -inf.
    prior_log_prob = -0.5 * (
        jnp.sum(jnp.square(y_T / math.sqrt(prior_variance)))
        + dim * math.log(2 * math.pi * prior_variance)
    )
    log_prob = prior_log_prob + integral - dim * jnp.log(scale)
    nfe = _NEW_STAGES_PER_STEP * solution.stats["num_steps"] + 1
    return LikelihoodOutput(log_prob, y_T.reshape(shape), nfe)


@eqx.filter_jit
def _per_point(key: Array, score_fn, points: Array, bin_width: float | None, options: dict):
    """:func:`ode_log_likelihood` of every point (dequantised first unless ``bin_width`` is
    ``None``) with ``fold_in(key, i)``: the one ``vmap`` over points. ``options`` is a dict of
    Python values, static under ``filter_jit``."""

    def one_point(point_key, x):
        if bin_width is None:
            return ode_log_likelihood(point_key, score_fn, x, **options)
        key_dequantise, key_probes = jax.random.split(point_key)
        z = dequantise(key_dequantise, x, bin_width)
        return ode_log_likelihood(key_probes, score_fn, z, **options)

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(points.shape[0]))
    return jax.vmap(one_point)(keys, points)


def _solved(key: Array, score_fn, points: Array, bin_width: float | None, options: dict):
    """:func:`_per_point`, with a solve stopped at ``max_steps`` (diffrax's check inside the
    compiled solve, an internal error with its traceback before) raised as the samplers'
    :class:`~scorelab.samplers.SolveError`, naming the options (the defaults of
    :func:`ode_log_likelihood` where not given); Hutchinson probes that cannot fit in memory
    are refused first (``n_probes = 10**9`` was XLA's out-of-memory error), and so is a
    ``bin_width`` wider than the solve's ``sigma_max``."""
    _check_probe_memory(points.shape[0], math.prod(points.shape[1:]), options.get("n_probes"))
    defaults = inspect.signature(ode_log_likelihood).parameters
    given = {name: options.get(name, parameter.default) for name, parameter in defaults.items()}
    sigma_max = real_number(given["sigma_max"])
    if bin_width is not None and sigma_max is not None and bin_width > sigma_max:
        # 1e20 failed the solve, and the message blamed the tolerances
        raise ValueError(
            f"bin_width: {bin_width:g} is wider than sigma_max {sigma_max:g}, so the dequantised "
            "points lie beyond the prior's scale; give the data's quantisation step (2/256 for "
            "8-bit pixels in [-1, 1])"
        )
    if points.shape[0] == 0:
        # No points, no solve: empty results of the shapes and dtypes one point would give
        # (traced once, abstractly, which also checks the options). A zero-size batch failed
        # inside diffrax with "zero-size array to reduction operation".
        one = jax.eval_shape(
            lambda p: _per_point(key, score_fn, p, bin_width, options),
            jax.ShapeDtypeStruct((1, *points.shape[1:]), points.dtype),
        )
        return LikelihoodOutput(*(jnp.zeros((0, *s.shape[1:]), s.dtype) for s in one))
    tolerances = (given[name] for name in ("rtol", "atol", "max_steps"))
    sigmas = (given["sigma_min"], given["sigma_max"])
    with _solve_errors(*tolerances, score_fn=score_fn, x=points[0], sigmas=sigmas):
        if points.shape[0] == 1:  # a lone point's program rounds otherwise: solved as a pair
            pair = _per_point(key, score_fn, jnp.concatenate([points, points]), bin_width, options)
            return jax.tree.map(lambda a: a[:1], pair)
        return _per_point(key, score_fn, points, bin_width, options)


@contextlib.contextmanager
def _solve_errors(rtol, atol, max_steps, score_fn=None, x=None, sigmas=()) -> Iterator[None]:
    """A solve stopped at ``max_steps`` (diffrax's check inside the compiled solve, an
    internal error with its traceback) raised as the samplers'
    :class:`~scorelab.samplers.SolveError`, naming the options; or, when ``score_fn`` is not
    finite at the point ``x`` at one of ``sigmas`` (a model with NaN weights), naming the
    score: loosening the tolerances, the other remedy, could not help."""
    try:
        yield
    except eqx.EquinoxRuntimeError as error:
        if score_fn is not None and not all(
            bool(jnp.all(jnp.isfinite(score_fn(x, jnp.asarray(sigma, x.dtype)))))
            for sigma in sigmas
        ):
            raise SolveError(
                "likelihood: the score is not finite (NaN or inf) at the points; the score "
                "model is broken (a diverged or damaged run): train it again or restore it"
            ) from error
        raise SolveError(
            f"likelihood: the ODE solve took more than max_steps ({max_steps}) steps at rtol "
            f"{rtol:g}, atol {atol:g}; loosen the tolerances (--rtol, --atol: float32 resolves "
            "about 1e-6)"
        ) from error


_PROBE_COPIES = 8
"""Copies of the probes a batched solve holds at once (its tangents at each of up to 7 stages
of a step, and the probes), the factor of :func:`_check_probe_memory`."""


def _check_probe_memory(n_points: int, dim: int, n_probes) -> None:
    """Refuse probes that cannot fit in memory before drawing them: the ``(n, K, d)`` probes
    (``K = d`` basis vectors for the exact trace) and about as much again for each of a solver
    step's stages. ``n_probes = 10**9`` was XLA's out-of-memory error, and ``10**12`` for one
    point (:func:`ode_log_likelihood`) aborted the interpreter; an ``n_probes`` that is none of
    the accepted values is left to the option check."""
    if n_probes == "exact" or (n_probes in ("auto", None) and dim <= EXACT_TRACE_MAX_DIM):
        count, remedy = dim, "give n_probes an integer (Hutchinson probes), or fewer points"
    elif n_probes in ("auto", None):
        count, remedy = 1, "use fewer points"
    elif isinstance(n_probes, int) and not isinstance(n_probes, bool) and n_probes > 0:
        count, remedy = n_probes, "use fewer probes or points"
    else:
        return
    # exact integers: n_probes may be huge
    check_memory("n_probes", 4 * n_points * count * dim * _PROBE_COPIES, remedy)


def _as_real(x, field: str) -> Array:
    """``x`` as the solve takes it: integers as JAX's default float, float16 and bfloat16 as
    float32 (the solve's tangents were refused as 'inconsistent with the original primal
    values'); complex values refused naming ``field`` (they were blamed on sigma)."""
    x = _as_example(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{field}: expected real numbers, got {x.dtype}; give real points")
    if jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


def _check_finite(field: str, x: Array) -> None:
    """Raise unless the concrete ``x`` is finite; a traced one (under ``jit``) is not checked.
    A NaN point otherwise ran the solve to ``max_steps``, which blamed the tolerances."""
    if all_finite(x) is False:
        raise ValueError(f"{field}: contains NaN or infinite values; give finite points")


def _as_points(points) -> Array:
    points = _as_real(points, "points")
    if points.ndim < 2:
        raise ValueError(f"points must have shape (n, *shape), got {points.shape}")
    _check_finite("points", points)
    return points


def log_likelihood(key: Array, score_fn, points: Array, **options) -> LikelihoodOutput:
    r"""Per-point log-densities (nats) of a batch under the probability-flow ODE of ``score_fn``.

    :func:`ode_log_likelihood` on every point, ``vmap``-ped and jitted (``equinox.filter_jit``:
    an Equinox model's weights are traced, so new weights do not recompile; the options are
    static). Point ``i``'s probes come from ``fold_in(key, i)``, so a point's result does not
    depend on the batch it is in. The batched solve runs until its slowest point is done;
    ``nfe`` is still each point's own count.

    Args:
        key: PRNG key of the probes.
        score_fn: ``score_fn(x, sigma)`` on one example (see :func:`ode_log_likelihood`).
        points: ``(n, *shape)``: ``n`` points of any shape, e.g. ``(n, d)`` or
            ``(n, C, H, W)``.
        **options: keyword options of :func:`ode_log_likelihood` (``sigma_min``,
            ``sigma_max``, ``process``, ``n_probes``, ``probe``, ``solver``, ``rtol``,
            ``atol``, ``max_steps``).

    Returns:
        :class:`LikelihoodOutput`: ``log_prob`` ``(n,)``, ``latent`` ``(n, *shape)``, ``nfe``
        ``(n,)``; empty arrays for ``n = 0``. Integer points are taken as JAX's default float.

    Raises:
        ValueError: as :func:`ode_log_likelihood`, for ``points`` with no leading axis, or
            for concrete ``points`` with a NaN or infinite entry (a solve from one used up
            ``max_steps``, which blamed the tolerances).
        SolveError: a ``ValueError``, when a point's solve uses up ``max_steps``.
    """
    return _solved(typed_key(key), score_fn, _as_points(points), None, options)


def dequantise(key: Array, x: Array, bin_width: float = EIGHT_BIT_BIN_WIDTH) -> Array:
    r"""Uniform dequantisation of one quantised point: :math:`z = x + \Delta u`,
    :math:`u \sim \mathcal{U}[0, 1)^D`.

    With levels :math:`\Delta` apart, the bins :math:`[x, x + \Delta)` tile the space, so
    :math:`P(x) = \int_{[0,1)^D} p(x + \Delta u)\, \Delta^D du` and, by Jensen,
    :math:`\log P(x) \ge \mathbb{E}_u[\log p(x + \Delta u)] + D \log \Delta`
    (Theis et al. 2016; Ho et al. 2019, Sec. 3.1).

    Args:
        key: PRNG key of this point's noise.
        x: one quantised point, any shape.
        bin_width: the spacing :math:`\Delta > 0` of the levels (:data:`EIGHT_BIT_BIN_WIDTH`
            for 8-bit images in [-1, 1]; ``1/8`` for :func:`scorelab.targets.digits_mixture`).

    Returns:
        :math:`z`, shaped like ``x`` and typed like it when it is floating (an integer or a
        list ``x`` gives JAX's default float).

    Raises:
        ValueError: ``bin_width`` is not finite and ``> 0`` (a traced one is not checked).

    References:
        Theis, L., van den Oord, A. & Bethge, M. (2016). A note on the evaluation of
        generative models. https://arxiv.org/abs/1511.01844
        Ho, J. et al. (2019). Flow++, Sec. 3.1. https://arxiv.org/abs/1902.00275
    """
    check_concrete_positive("bin_width", bin_width)
    x = _as_real(x, "x")
    return x + bin_width * jax.random.uniform(typed_key(key), x.shape, x.dtype)


def _bin_width(value) -> float:
    """``bin_width`` as a Python float, checked finite and ``> 0``: a number, or a concrete
    0-d array (:func:`~scorelab._validate.real_number`; a JAX scalar was refused, though
    :func:`dequantise` takes it)."""
    number = None if is_traced(value) else real_number(value)
    check_real("bin_width", value if number is None else number, "a number > 0", lambda v: v > 0)
    return number


def bits_per_dim(log_prob, dim: int, bin_width: float = EIGHT_BIT_BIN_WIDTH) -> Array:
    r"""Bits per dimension of quantised data from a continuous log-density of its dequantisation.

    .. math::
        \mathrm{bpd} = \frac{-\log p(z) - D \log \Delta}{D \log 2},
        \qquad z = x + \Delta u,

    with :math:`z` from :func:`dequantise`. Its expectation over :math:`u` bounds
    :math:`-\log_2 P(x) / D` of the discrete data from above (see :func:`dequantise`). The
    convention, precisely: 8-bit pixels :math:`k \in \{0, \dots, 255\}` are scaled to
    :math:`x = k / 127.5 - 1 \in [-1, 1]` (DDPM's scaling), the dequantised point is
    :math:`z = (k + u) / 127.5 - 1`, :math:`u \sim \mathcal{U}[0, 1)^D`, so
    :math:`\Delta = 2/255` and

    .. math::
        \mathrm{bpd} = \frac{-\log p(z) + D \log 127.5}{D \log 2},

    the bits per dimension of the density of :math:`k + u` on :math:`[0, 256)^D` (Ho et al.
    2019), whose Jacobian to :math:`z` is :math:`127.5^{-D}`. A model uniform on
    :math:`[-1, 1 + \Delta)^D` scores exactly 8. Song et al. (2021)'s code maps
    :math:`k + u` to :math:`(k + u)/128 - 1 \in [-1, 1)` instead (:math:`\Delta = 1/128`, an
    offset of exactly 7 bits): the same :math:`\log p` reads :math:`\log_2(128/127.5) =
    0.0056` bits higher there, so compare numbers only under one convention.

    Args:
        log_prob: log-density(ies) :math:`\log p(z)` in nats, any shape.
        dim: the data dimension :math:`D` (e.g. ``C * H * W``).
        bin_width: :math:`\Delta`, the spacing of the quantised levels in data units, ``> 0``.

    Returns:
        Bits per dimension, shaped like ``log_prob``.

    Raises:
        ValueError: ``dim`` is not an integer ``>= 1`` or ``bin_width`` not a finite number
            ``> 0`` (``log`` of it raised Python's bare "math domain error").

    References:
        Ho, J. et al. (2019). Flow++, Sec. 3.1. https://arxiv.org/abs/1902.00275
        Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
        Differential Equations, App. D.2. https://arxiv.org/abs/2011.13456
    """
    check_int("dim", dim, 1)
    bin_width = _bin_width(bin_width)
    return (-jnp.asarray(log_prob) - dim * math.log(bin_width)) / (dim * math.log(2.0))


def dequantised_bits_per_dim(
    key: Array,
    score_fn,
    points: Array,
    *,
    bin_width: float = EIGHT_BIT_BIN_WIDTH,
    **options,
) -> tuple[Array, LikelihoodOutput]:
    r"""Bits per dimension of quantised points (e.g. images) under the probability-flow ODE.

    For point ``i``, ``fold_in(key, i)`` is split into a dequantisation key and a probe key;
    :math:`z_i =` :func:`dequantise` of the point, :math:`\log p(z_i)` from
    :func:`ode_log_likelihood`, and

    .. math::
        \mathrm{bpd}_i = \frac{-\log p(z_i) - D \log \Delta}{D \log 2}

    (:func:`bits_per_dim`).

    The mean over points is the usual reported number; each term is a one-sample estimate of
    the dequantisation bound.

    Args:
        key: PRNG key.
        score_fn: ``score_fn(x, sigma)`` on one example (see :func:`ode_log_likelihood`).
        points: ``(n, *shape)`` quantised points in data units, e.g. ``(n, C, H, W)`` in
            [-1, 1]; ``D = prod(shape)``.
        bin_width: the spacing :math:`\Delta` of the levels (see :func:`bits_per_dim`).
        **options: keyword options of :func:`ode_log_likelihood`.

    Returns:
        ``(bpd, output)``: ``(n,)`` bits per dimension and the :class:`LikelihoodOutput` of
        the dequantised points.

    Raises:
        ValueError: as :func:`log_likelihood`, or unless ``bin_width > 0`` and at most the
            prior's ``sigma_max`` (wider dequantisation noise puts the points beyond the scale
            the ODE maps to its prior).
    """
    bin_width = _bin_width(bin_width)
    points = _as_points(points)
    output = _solved(typed_key(key), score_fn, points, bin_width, options)
    return bits_per_dim(output.log_prob, math.prod(points.shape[1:]), bin_width), output
