r"""Learned discretisation: the grid on which one ODE sampler's output is closest to the
converged probability-flow ODE from the same starts, saved and reused by name.

**The objective** (LD3's, Tong et al., 2024, without its slack term): for a deterministic
sampler :math:`\Phi_\sigma` on the grid :math:`\sigma = (\sigma_0 < \dots < \sigma_{N-1})` and
the converged solve :math:`\Phi^\star` of the same ODE (the teacher, :func:`teacher`), the
global error over starts :math:`x_T^{(i)}` drawn from the sampler's prior,

.. math::
    L(\sigma) = \frac{1}{n} \sum_{i=1}^{n} \big\| \Phi_\sigma(x_T^{(i)})
    - \Phi^\star(x_T^{(i)}) \big\|^2 .

Unlike the Align-Your-Steps bound (:mod:`scorelab.ays`, the stochastic sampler's KL bound),
it is the error of the sampler that will run, on the prior it will start from: a multistep
solver's history and a second-order step's curvature are in it. GITS (Chen et al., 2024)
instead adds up a first-order solver's local errors along teacher trajectories by dynamic
programming; a multistep solver's step depends on its history, so its error does not split
into per-interval costs, and the global error is what is measured here.

**The search** is derivative-free: coordinate descent over ``n_candidates`` log-spaced
positions of each level between its neighbours (Sabour et al., 2024, Sec. 3.3), the top level
fixed at the prior's :math:`\sigma_{\max}`, the lowest free between :math:`\sigma_1 /`
``lowest_ratio`` and :math:`\sigma_1`, every candidate scored on the same starts (common random
numbers). LD3 follows the gradient of :math:`L` instead (Adam through the sampler works here:
the grid is an array leaf of the sampler). On a mixture whose modes are far apart compared to
their width (:func:`scorelab.targets.seed_mixture`), :math:`\Phi_\sigma` is nearly constant on
each mode's basin, so :math:`L` is dominated by the chains that land in another mode than
:math:`\Phi^\star`, and its gradient sees only those near a basin's edge; the search compares
whole grids on that count directly, needs no step size or step count, and on the mixture put
fewer chains in another mode than Adam did (docs/benchmarks.md, "The moonshot, fourth look").

Hand-written: no well-kept library optimises a sampler's grid; LD3's and GITS' code is for
images and learned models on their own samplers.

References:
    Tong, V., Hoang, T.-D., Liu, A., Van den Broeck, G. & Niepert, M. (2024). Learning to
    Discretize Denoising Diffusion ODEs. https://arxiv.org/abs/2405.15506
    Sabour, A., Fidler, S. & Kreis, K. (2024). Align Your Steps: Optimizing Sampling Schedules
    in Diffusion Models. https://arxiv.org/abs/2404.14507
    Chen, D., Zhou, Z., Wang, C., Shen, C. & Lyu, S. (2024). On the Trajectory Regularity of
    ODE-based Diffusion Sampling. https://arxiv.org/abs/2405.11326
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from tqdm.auto import tqdm

from scorelab import samplers
from scorelab._validate import check_instance, check_int, check_memory, is_traced
from scorelab._xla_cpu import convolution_jit, takes_convolutions
from scorelab.noise import karras_sigmas, write_saved_grid
from scorelab.samplers._core import check_sigmas

TEACHER_LEVELS = 400
"""Levels of :func:`teacher`: Heun with 799 evaluations, on Karras' grid (rho 7) from 0.002;
199 evaluations already put under 0.1% of the mixture's chains in another mode
(docs/benchmarks.md, "The moonshot, third look")."""


def teacher(sigma_max: float, n_levels: int = TEACHER_LEVELS) -> samplers.AbstractSampler:
    r"""The probability-flow ODE solved to convergence from ``sigma_max``: Heun (Karras et al.,
    2022, Alg. 1) on Karras' grid, :math:`\rho = 7`, from 0.002, :math:`2N - 1` evaluations.

    Args:
        sigma_max: the prior's level, ``> 0.002``.
        n_levels: the grid's size ``N``.

    Returns:
        A deterministic :class:`scorelab.samplers.AbstractSampler`.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    return samplers.heun(karras_sigmas(n_levels, 0.002, sigma_max, 7.0))


def _check_learnable(sampler) -> None:
    """``ValueError`` unless ``sampler`` is a deterministic fixed-grid solver."""
    fixed = getattr(sampler, "uses_grid", False) and sampler.nfe is not None
    if not fixed or sampler.draws_per_step != 0 or not hasattr(sampler, "sigmas"):
        raise ValueError(
            f"sampler {sampler.name}: a learned grid needs a deterministic sampler on a fixed "
            "grid (an ODE solver such as unipc, dpmpp_2m, ipndm or heun)"
        )


def on_grid(sampler, sigmas) -> samplers.AbstractSampler:
    """``sampler`` with its grid replaced by ``sigmas`` ``(N,)`` (same size; no recompilation:
    the grid is an array leaf).

    A concrete ``sigmas`` gets the grid check of the samplers' constructors (a NaN, descending
    or zero grid sampled NaN or wrong samples without a word); a traced one (:func:`learn_grid`'s
    candidates, ascending by construction) is taken as it is.

    Raises:
        TypeError: if ``sampler`` is not an :class:`~scorelab.samplers.AbstractSampler`, or
            ``sigmas`` is not real numbers.
        ValueError: if ``sampler`` has no grid, or ``sigmas`` is not a 1-D, finite, positive,
            strictly ascending grid of the sampler's size.
    """
    what = "an AbstractSampler (e.g. samplers.heun(sigmas))"
    check_instance("sampler", sampler, samplers.AbstractSampler, what)
    if not isinstance(getattr(sampler, "sigmas", None), jax.Array | np.ndarray):
        raise ValueError(
            f"sampler: {sampler.name} has no sigma grid to replace; give a sampler on a grid"
        )
    if not is_traced(sigmas):
        sigmas = check_sigmas(sigmas)
    if jnp.shape(sigmas) != sampler.sigmas.shape:
        raise ValueError(
            f"sigmas: expected the sampler's grid size {sampler.sigmas.shape}, got shape "
            f"{jnp.shape(sigmas)}; give a grid of as many levels"
        )
    return eqx.tree_at(lambda s: s.sigmas, sampler, jnp.asarray(sigmas, sampler.sigmas.dtype))


def global_error(sampler, score_fn, x_T: Array, x_teacher: Array) -> Array:
    r"""Each chain's squared global error :math:`\|\Phi_\sigma(x_T) - \Phi^\star(x_T)\|^2`.

    Args:
        sampler: a deterministic sampler on its grid.
        score_fn: ``score_fn(x, sigma)`` on one state.
        x_T: ``(n, *S)`` starts.
        x_teacher: ``(n, *S)`` the teacher's outputs from the same starts.

    Returns:
        ``(n,)`` squared distances (callers reduce).

    Raises:
        ValueError: if ``x_teacher``'s shape is not ``x_T``'s.
    """
    if jnp.shape(x_T) != jnp.shape(x_teacher):
        raise ValueError(
            f"x_teacher: expected x_T's shape {jnp.shape(x_T)}, got {jnp.shape(x_teacher)}; "
            "give the teacher's outputs from the same starts"
        )
    x = samplers.sample(jax.random.key(0), sampler, score_fn, x_T).x  # draws nothing
    return jnp.sum(((x - x_teacher) ** 2).reshape(x.shape[0], -1), axis=-1)


def check_search(n_candidates, n_sweeps, error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` for a search :func:`learn_grid` cannot run: ``n_candidates`` or
    ``n_sweeps`` not an integer >= 1, or more candidate positions than memory holds (checked
    before they are allocated, so a caller can refuse before its teacher's solve)."""
    check_int("ld3.candidates", n_candidates, 1, error=error)
    check_int("ld3.sweeps", n_sweeps, 1, error=error)
    # Each sweep of a level holds its candidates' ramp and positions (float64).
    check_memory("ld3.candidates", 2.0 * 8 * n_candidates, "try fewer candidates", error)


def learn_grid(
    sampler,
    score_fn,
    x_T: Array,
    x_teacher: Array,
    *,
    n_candidates: int = 16,
    n_sweeps: int = 3,
    lowest_ratio: float = 20.0,
    progress: bool = False,
) -> tuple[np.ndarray, float, float]:
    r"""The grid of ``sampler``'s size minimising its mean global error (module docstring).

    Args:
        sampler: a deterministic fixed-grid sampler; its grid is the start, and its top level
            (the prior's :math:`\sigma_{\max}`) stays.
        score_fn: ``score_fn(x, sigma)`` on one state.
        x_T: ``(n, *S)`` training starts from the sampler's prior.
        x_teacher: ``(n, *S)`` :func:`teacher`'s outputs from ``x_T``.
        n_candidates: positions tried for each level in a sweep.
        n_sweeps: passes over the levels, lowest first.
        lowest_ratio: the lowest level moves between :math:`\sigma_1 /` ``lowest_ratio`` and
            :math:`\sigma_1`.
        progress: show a tqdm bar over the search's sampler passes (``n_sweeps`` x
            ``(N - 1)`` x ``n_candidates``).

    Returns:
        ``(sigmas, error, error_start)``: the ascending ``(N,)`` float64 grid, its mean error
        on ``x_T`` and the starting grid's.

    Raises:
        ValueError: for a stochastic, adaptive or grid-free sampler, ``x_T`` and ``x_teacher``
            of other shapes, ``n_candidates`` or ``n_sweeps`` below 1 (or candidates beyond
            memory, :func:`check_search`) or ``lowest_ratio <= 1``.
    """
    _check_learnable(sampler)
    check_search(n_candidates, n_sweeps)
    if not lowest_ratio > 1:
        raise ValueError(f"ld3.lowest_ratio must be > 1, got {lowest_ratio}")
    if jnp.shape(x_T) != jnp.shape(x_teacher):
        raise ValueError(
            f"x_T {jnp.shape(x_T)} and x_teacher {jnp.shape(x_teacher)} must have one shape: "
            "the teacher's outputs from the same starts"
        )
    # One program per search, the sampler's driver traced inside it (a nested jit): on images
    # it is this program that compiles with XLA:CPU's own convolutions (scorelab._xla_cpu).
    error = (convolution_jit if takes_convolutions(x_T) else eqx.filter_jit)(
        lambda grid: jnp.mean(global_error(on_grid(sampler, grid), score_fn, x_T, x_teacher))
    )
    sigmas = np.asarray(sampler.sigmas, np.float64)
    cost = lambda grid: float(error(jnp.asarray(grid, sampler.sigmas.dtype)))  # noqa: E731
    start = current = cost(sigmas)
    ramp = (np.arange(n_candidates) + 1.0) / (n_candidates + 1.0)
    total = n_sweeps * (sigmas.size - 1) * n_candidates
    with tqdm(total=total, desc="ld3 grid", unit="pass", disable=not progress) as bar:
        for _ in range(n_sweeps):
            before = current
            for i in range(sigmas.size - 1):
                low = sigmas[i - 1] if i > 0 else sigmas[1] / lowest_ratio
                for candidate in np.exp(np.log(low) + ramp * np.log(sigmas[i + 1] / low)):
                    trial = sigmas.copy()
                    trial[i] = candidate
                    value = cost(trial)
                    if value < current:
                        sigmas, current = trial, value
                    bar.update()
                bar.set_postfix(error=f"{current:.4g}")
            if current == before:  # the cost is fixed: every later sweep would move nothing
                break
    return sigmas, current, start


def save_learned_grid(path, sigmas, *, error: float, error_start: float, about: dict[str, Any]):
    """Write a learned grid ``(N,)`` as JSON (:func:`scorelab.noise.write_saved_grid`), with its
    mean global error and the start's on the training starts, and ``about`` (the sampler, the
    starts, the score: JSON-serialisable, without the file's own keys ``kind``, ``sigmas``,
    ``objective``, ``error``, ``error_start``); any saved grid's name reads it back. Returns
    the path.

    Raises:
        TypeError: for ``about`` not a dict with string keys, or errors that are not numbers.
        ValueError: naming the argument, before writing, for levels that are not an
            ascending grid of at least 2 finite positive levels, a NaN or infinite error, or a
            reserved key in ``about``.
    """
    record = {
        "kind": "ld3",
        "objective": "mean squared global error against the converged ODE (scorelab.ld3)",
        "error": error,
        "error_start": error_start,
    }
    finite = {"error": error, "error_start": error_start}
    return write_saved_grid(path, sigmas, record, about, minimum=2, finite=finite)


__all__ = ["check_search", "global_error", "learn_grid", "on_grid", "save_learned_grid", "teacher"]
