r"""The sampler map: sample quality against cost (NFE) for many samplers, beside the floor.

For a target with an exact score, a list of samplers and a list of NFE budgets, :func:`sweep`
runs every sampler at the largest grid that fits each budget, with the exact score (the
oracle) and with any other score functions given (trained models), and measures each run
against fresh exact samples: sliced Wasserstein, MMD², the mixture's mode-weight total
variation, within-mode variance ratio and far fraction. Each metric has its **floor**, the
same metric between two independent exact sample sets of the same size
(:func:`scorelab.metrics.floor`), so a row reads as floor + sampler error (exact score) +
model error (model minus exact). :func:`fewest_nfe` condenses the table into the fewest NFE
from which a sampler stays within a factor of the floor; ``scorelab sweep`` is the CLI.

Budgets map to grid sizes per sampler (:func:`sweep_sampler`): ``N = NFE`` for one evaluation
per level (Euler, DDIM, DPM-Solver++(2M), Euler-Maruyama, ancestral), ``N = (NFE + 1) // 2``
for Heun and EDM (``2N - 1``), ``N = NFE // (M + 1)`` for predictor-corrector, ``NFE // k``
for annealed Langevin with ``k`` steps per level (:func:`scorelab.samplers.budget_levels`).
Adaptive solvers take no budget: each tolerance is one row, at the NFE it spent (the mean over
chains). The samplers and their options are :data:`scorelab.samplers.SAMPLERS`, the table
``scorelab sample`` builds from too.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from scorelab import samplers, viz
from scorelab._files import jsonable, read_json
from scorelab._validate import (
    check_choice,
    check_fields,
    check_instance,
    check_int,
    check_mapping,
    check_memory,
    check_real,
    check_seed,
    check_sequence,
    check_sigma,
    check_unique,
    from_mapping,
)
from scorelab.builders import draw_prior
from scorelab.checkpoints import load_model, model_files, tree_sha256
from scorelab.classifier import load_digits_classifier
from scorelab.config import PRIORS, TARGETS, ConfigError, load_config, typed_sampler_options
from scorelab.image_metrics import image_measure
from scorelab.models import ExactScore, NoiseConditionalMLP
from scorelab.noise import (
    GRIDS,
    check_rho_shapes,
    is_saved_grid,
    saved_grid_path,
    sigma_grid,
    with_saved_range,
)
from scorelab.precond import EDMPreconditioned
from scorelab.report import IMAGE_METRICS as REPORT_IMAGE_METRICS
from scorelab.report import Report, floors, is_finite, is_floor_pair, measure
from scorelab.runs import (
    atomic_write,
    load_run,
    manifest,
    named_key,
    prepare_run_dir,
    write_json,
)
from scorelab.samplers import DEFAULT_SIGMA_MAX
from scorelab.targets import GaussianMixture

__all__ = [
    "SWEEP_SAMPLERS",
    "SweepSampler",
    "SweepResult",
    "SweepRun",
    "SweepSettings",
    "sweep_sampler",
    "sweep_runs",
    "sweep",
    "mean_rows",
    "fewest_nfe",
    "save",
    "PARTIAL",
    "save_partial",
    "load_partial",
    "load_score_model",
    "sweep_settings",
    "run_sweep",
    "METRICS",
    "IMAGE_METRICS",
    "VAR_RATIO_BAND",
]

METRICS = ("sw", "mmd2", "tv")
"""The metrics drawn against NFE, each with a floor."""

IMAGE_METRICS = tuple(name for name in REPORT_IMAGE_METRICS if name != "memo")
"""The classifier metrics (all of :data:`scorelab.report.IMAGE_METRICS` but the memorisation
ratio, which needs a training set) a sweep of a digits-shaped target adds (``image_metrics=True``,
:func:`scorelab.image_metrics.image_measure`), each with a floor; :func:`fewest_nfe` takes
``fd``, ``kid`` and ``class_tv`` (lower is better)."""


_IMAGE_FEWEST = ("fd", "kid", "class_tv")
"""The image metrics :func:`fewest_nfe` reads (lower is better; precision, recall and the top
probability are not)."""


def _as_digit_images(x: np.ndarray) -> np.ndarray:
    """Flat 64- or 256-vectors as ``(n, 1, s, s)`` images clipped to [-1, 1], as saved."""
    size = {64: 8, 256: 16}.get(x.shape[1])
    if size is None:
        raise ValueError(
            f"sweep.image_metrics: the target's points must be 8x8 or 16x16 images (64 or 256 "
            f"values), got {x.shape[1]}; use digits_mixture"
        )
    return np.clip(x, -1.0, 1.0).reshape(len(x), 1, size, size)


def _image_row(x, reference) -> dict[str, float]:
    if not is_finite(x):  # diverged chains: undefined measures, as measure() rows them
        return dict.fromkeys((*IMAGE_METRICS, "kid_se"), np.nan)
    return image_measure(
        _as_digit_images(np.asarray(x)), _as_digit_images(reference), load_digits_classifier()
    )


class SweepSampler(NamedTuple):
    """A sampler of the map: how to build it on a grid and how large a grid a budget buys.

    Attributes:
        label: the name in tables and plots, e.g. ``"pc(M=1)"``.
        build: ``sigmas (N,) -> Sampler``.
        levels: ``nfe budget -> N`` (the largest grid within the budget), or ``None`` for an
            adaptive solver, which takes no budget.
    """

    label: str
    build: Callable[[Any], samplers.AbstractSampler]
    levels: Callable[[int], int] | None


SWEEP_SAMPLERS = tuple(name for name, spec in samplers.SAMPLERS.items() if spec.uses_grid)
"""The sampler names :func:`sweep_sampler` accepts: those of :data:`scorelab.samplers.SAMPLERS`
that walk a sigma grid (all but ULA and MALA, which sample one noise level)."""


def sweep_sampler(name: str, **options) -> SweepSampler:
    """The :class:`SweepSampler` ``name`` with ``options``.

    Options are the sampler's declared ones (:func:`scorelab.samplers.options`), e.g.
    ``sweep_sampler("predictor_corrector", n_corrector=2)`` or
    ``sweep_sampler("tsit5", rtol=1e-2, atol=1e-2)``.
    A budget buys ``N = levels(nfe)`` levels (:func:`scorelab.samplers.budget_levels`: ``N =
    NFE``, ``(NFE + 1) // 2`` for Heun and EDM, ``NFE // (M + 1)`` for predictor-corrector).

    Args:
        name: one of :data:`SWEEP_SAMPLERS`.
        **options: the sampler's options; the rest take their defaults.

    Returns:
        A :class:`SweepSampler` with its label (:func:`scorelab.samplers.label`: the sampler's
        name and the options it declares for labels), ``build(sigmas)`` and ``levels(nfe)``
        (``None`` for ``tsit5`` / ``dopri5``).

    Raises:
        ValueError: for an unknown name or option, naming the accepted ones.
    """
    chosen = samplers.sampler_options(name, options)  # a former name: its new spelling
    if name not in SWEEP_SAMPLERS:
        raise ValueError(
            f"sampler {name!r} samples one noise level, not a grid; accepted: "
            f"{', '.join(SWEEP_SAMPLERS)}"
        )
    adaptive = samplers.budget_levels(name, 1, chosen) is None
    return SweepSampler(
        samplers.label(name, chosen),
        lambda sigmas: samplers.build_sampler(name, sigmas, **chosen),
        None if adaptive else lambda nfe: samplers.budget_levels(name, nfe, chosen),
    )


class SweepResult(NamedTuple):
    """Rows of the map and the floors.

    Attributes:
        rows: one dict per (sampler, score, budget, seed): ``sampler``, ``score``, ``nfe``
            (score evaluations per chain; the mean over chains for adaptive solvers),
            ``levels``, ``seed``, ``sw``, ``mmd2``, ``tv``, ``var_ratio``, ``near``, ``far``.
        floors: metric -> ``(mean, sd)`` between two exact sets of ``n_samples``.
        settings: the grid, sample size and seeds used.
    """

    rows: list[dict[str, Any]]
    floors: dict[str, tuple[float, float]]
    settings: dict[str, Any]


class SweepRun(NamedTuple):
    """One point of the map: a sampler on one grid, run from the same prior with every score.

    Attributes:
        spec: the :class:`SweepSampler`.
        levels: the grid size ``N``, or ``None`` for an adaptive solver.
        sampler: the sampler built on that grid.
        outputs: score label -> the :class:`scorelab.samplers.SamplerOutput` of its chains.
    """

    spec: SweepSampler
    levels: int | None
    sampler: samplers.AbstractSampler
    outputs: dict[str, samplers.SamplerOutput]


def sweep_runs(
    sampler_specs: Sequence[SweepSampler],
    nfes: Sequence[int],
    score_fns: Mapping[str, Callable],
    x_T,
    chain_key: Callable[[str, int | None, str], jax.Array],
    grid_fn: Callable[[int], Any],
    skip: Callable[[str, int | None], bool] | None = None,
) -> Iterator[SweepRun]:
    r"""The map's driver: every sampler at the largest grid within each budget, with every score.

    For each spec, the budgets become grid sizes :math:`N = ` ``spec.levels(nfe)`` (sorted,
    each once; sizes below 2 skipped; one run at ``N = 2`` for an adaptive solver, whose grid
    gives only its end points), the grid is ``grid_fn(N)`` and every score function samples
    the same chains' starts ``x_T``. :func:`sweep` measures
    what it yields against exact samples; ``scorelab demo`` runs its DDIM sweep over
    :math:`(\eta, N)` with it.

    Args:
        sampler_specs: :class:`SweepSampler` records (:func:`sweep_sampler`).
        nfes: NFE budgets, positive integers.
        score_fns: label -> ``score_fn(x, sigma)``.
        x_T: ``(n, *S)`` starting points, e.g. :func:`scorelab.samplers.ve_prior`.
        chain_key: ``(sampler label, N, score label) -> key`` of the chains of that run; a
            constant for common random numbers (:func:`sweep`).
        grid_fn: ``N -> (N,)`` ascending sigma grid, e.g. a :func:`scorelab.noise.sigma_grid`.
        skip: ``(sampler label, N) -> bool``: runs to leave out (measured before); each
            sampler is still built first.

    Yields:
        One :class:`SweepRun` per (spec, grid size), in the order of ``sampler_specs`` and
        ascending ``N``.

    Raises:
        ValueError: naming the sampler, for an option value its constructor refuses; every
            sampler is built before the first runs (a bad option of the last one failed after
            the others had sampled, and their work was lost).
    """
    plan = []
    for spec in sampler_specs:
        sizes = [2] if spec.levels is None else sorted({spec.levels(int(n)) for n in nfes})
        for size in (size for size in sizes if size >= 2):
            try:
                sampler = spec.build(grid_fn(size))
            except ValueError as error:
                raise ValueError(f"sampler {spec.label}: {error}") from error
            plan.append((spec, size if spec.levels is not None else None, sampler))
    for spec, levels, sampler in plan:
        if skip is not None and skip(spec.label, levels):
            continue
        outputs = {
            label: samplers.sample(chain_key(spec.label, levels, label), sampler, fn, x_T)
            for label, fn in score_fns.items()
        }
        yield SweepRun(spec, levels, sampler, outputs)


def _check_sweep(
    target: GaussianMixture,
    sampler_specs: Sequence[SweepSampler],
    nfes: Sequence[int],
    score_fns: Mapping[str, Callable],
    seeds: Sequence[int],
    n_samples: int,
    image_metrics: bool,
    prior: str = "normal",
) -> None:
    """:func:`sweep`'s checks of its sizes, run before any work (and by :func:`run_sweep`
    before it claims its run folder, which a refusal left holding a lock file).

    Raises:
        ValueError: as :func:`sweep` (empty lists, budgets, seeds, ``n_samples``, ``prior``,
            memory, ``image_metrics``).
        TypeError: for a ``target``, ``sampler_specs`` or ``score_fns`` of the wrong type.
    """
    check_instance(
        "target", target, GaussianMixture, "a GaussianMixture (scorelab.config.TARGETS[name]())"
    )
    if isinstance(sampler_specs, str) or any(
        not isinstance(spec, SweepSampler) for spec in sampler_specs
    ):
        raise TypeError(
            f"sampler_specs: expected SweepSampler records from sweep_sampler(name), got "
            f"{sampler_specs!r}"
        )
    check_mapping("score_fns", score_fns, "a mapping label -> score_fn")
    if not sampler_specs or not nfes or not score_fns or not seeds:
        raise ValueError("sweep needs at least one sampler, NFE budget, score and seed")
    for seed in seeds:  # 2**32 drew seed 0's numbers, and was averaged as another seed
        check_seed("seeds", seed)
    check_int("n_samples", n_samples, 2)
    check_choice("prior", prior, PRIORS)  # a misspelt prior was sampled as "normal"
    if any(isinstance(n, bool) or int(n) != n or n < 1 for n in nfes):
        raise ValueError(f"NFE budgets must be positive integers, got {list(nfes)}")
    # Sizes before any work: the prior, chains, reference and output sets; each grid (a few
    # floats a level in the grid and the sampler's per-step schedule).
    # Named by the settings (the command line puts its flag first); no remedy names a flag, as
    # a Python caller has none.
    check_memory("sweep.n_samples", 4.0 * n_samples * target.dim * 4, "ask for fewer samples")
    for spec in (spec for spec in sampler_specs if spec.levels is not None):
        levels = {n: spec.levels(int(n)) for n in nfes}
        for n, count in levels.items():
            remedy = f"use smaller budgets ({n} buys {spec.label} {count} levels)"
            check_memory("sweep.nfe", count * 4.0 * 64, remedy)
        if all(count < 2 for count in levels.values()):
            smallest = max(nfes) + 1
            while spec.levels(smallest) < 2:
                smallest += 1
            raise ValueError(
                f"sweep.nfe: no budget of {', '.join(map(str, nfes))} buys {spec.label} a grid "
                f"(2 levels take {smallest} evaluations); raise the budgets"
            )
    if image_metrics:
        _as_digit_images(np.zeros((0, target.dim)))  # refuse a target that is not image-shaped


def sweep(
    target: GaussianMixture,
    sampler_specs: Sequence[SweepSampler],
    nfes: Sequence[int],
    score_fns: Mapping[str, Callable],
    *,
    n_samples: int = 4000,
    seeds: Sequence[int] = (0, 1, 2),
    grid: str = "karras",
    sigma_min: float = 0.002,
    sigma_max: float = samplers.DEFAULT_SIGMA_MAX,
    rho: float = 7.0,
    prior: str = "normal",
    n_projections: int = 250,
    floor_repeats: int = 5,
    progress: Callable[[str], None] | None = None,
    image_metrics: bool = False,
    known_floors: Mapping[str, tuple[float, float]] | None = None,
    done_rows: Sequence[Mapping[str, Any]] = (),
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    r"""Run every sampler at every budget with every score, against fresh exact samples.

    Seed ``s`` gives ``key(s)``, split into the prior key (:math:`x_T` from ``prior`` at
    :math:`\sigma_{\max}`, by default :math:`\mathcal{N}(0, \sigma_{\max}^2 I)`; the same for
    every sampler: common random numbers), the chains' key and the reference key
    (``n_samples`` exact samples). A budget that buys
    the same grid as a smaller one, or a grid of fewer than 2 levels, is skipped.

    Args:
        target: the mixture (its exact samples are the reference).
        sampler_specs: :class:`SweepSampler` records (:func:`sweep_sampler`).
        nfes: NFE budgets.
        score_fns: label -> ``score_fn(x, sigma)``, e.g. ``{"exact": ExactScore(target),
            "model": model}``.
        n_samples: samples per run (and per floor set).
        seeds: one run per seed.
        grid, sigma_min, sigma_max, rho: the grid (:func:`scorelab.noise.sigma_grid`).
        prior: where the chains start (:func:`scorelab.builders.draw_prior`): ``normal``,
            ``moments`` (the Gaussian with the target's moments) or ``exact`` (the target's
            marginal at ``sigma_max``, which removes the prior's share of the error).
        n_projections: directions of the sliced Wasserstein distance.
        floor_repeats: exact pairs of the floors.
        progress: called with a line per finished run.
        image_metrics: also measure :data:`IMAGE_METRICS` (the target's points must be 8x8 or
            16x16 images; samples and reference are clipped to [-1, 1], as images are saved),
            with their floors between two clipped exact sets.
        known_floors: the floors of an earlier sweep with the same target, ``n_samples``,
            ``seeds``, ``n_projections``, ``floor_repeats`` and ``image_metrics``
            (its :attr:`SweepResult.floors`), returned instead of measured again: a map run
            in parts (one call per sampler, saved as it goes) measures them once.
        done_rows: rows of an interrupted sweep with the same arguments: a run (seed,
            sampler, grid size) whose every score has a row here is not sampled again, and
            its rows are returned in their place. Each row depends only on its own seed,
            sampler and grid, so the result is the uninterrupted sweep's.
        on_row: called with each row as it is measured (e.g. to save the rows so far).

    Returns:
        A :class:`SweepResult`: one row per (seed, sampler, grid size, score), the floors of
        :data:`METRICS` (from ``floor_repeats`` exact pairs of ``n_samples``) and the settings.

    Raises:
        ValueError: if any of ``sampler_specs``, ``nfes``, ``score_fns`` or ``seeds`` is empty,
            ``known_floors`` lacks a ``(mean, sd)`` pair for a floor the sweep measures (or has
            another), a row of ``done_rows`` is unlike the sweep's rows,
            a budget is not a positive integer, a seed is outside ``[0, 2**32 - 1]``,
            ``n_samples < 2``, ``prior`` is not one of :data:`scorelab.config.PRIORS`, the
            grid settings are invalid
            (:func:`scorelab.noise.sigma_grid`), ``image_metrics`` is asked of a target
            whose points are not 8x8 or 16x16 images, or the samples or a budget's grid need
            more memory than is available (checked before any work).
        TypeError: for a ``target`` that is not a ``GaussianMixture``, ``sampler_specs`` that
            are not :class:`SweepSampler` records, ``score_fns`` or ``known_floors`` that is
            not a mapping, or ``done_rows`` that is not a list.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models (samplers compared at equal NFE).
        https://arxiv.org/abs/2206.00364
    """
    _check_sweep(target, sampler_specs, nfes, score_fns, seeds, n_samples, image_metrics, prior)
    _check_done(known_floors, done_rows, image_metrics)
    settings = {
        "n_samples": n_samples,
        "seeds": list(seeds),
        "grid": grid,
        "sigma_min": sigma_min,
        "sigma_max": sigma_max,
        "rho": rho,
        "prior": prior,
        "n_projections": n_projections,
        "floor_repeats": floor_repeats,
    }
    done = {_row_key(row): dict(row) for row in done_rows}
    reused = []  # the keys of done rows whose runs were skipped

    def measured(seed, label, levels) -> bool:
        keys = [(seed, label, levels, score) for score in score_fns]
        if not all(key in done for key in keys):
            return False
        reused.extend(keys)
        return True

    rows = []
    for seed in seeds:
        key_prior, key_chain, key_reference = _seed_keys(seed)
        x_T = draw_prior(prior, key_prior, n_samples, target.dim, sigma_max, target, None,
                         "sweep.prior")  # fmt: skip
        reference = np.asarray(target.sample(key_reference, n_samples))
        runs = sweep_runs(
            sampler_specs,
            nfes,
            score_fns,
            x_T,
            lambda *_, key=key_chain: key,  # common random numbers: one key for every run
            lambda size: sigma_grid(grid, size, sigma_min, sigma_max, rho),
            lambda label, levels, seed=seed: measured(seed, label, levels),
        )
        for run in runs:
            for score_label, out in run.outputs.items():
                nfe = run.sampler.nfe if run.sampler.nfe is not None else float(np.mean(out.nfe))
                row = {
                    "sampler": run.spec.label,
                    "score": score_label,
                    "nfe": nfe,
                    "levels": run.levels,
                    "seed": seed,
                    **measure(np.asarray(out.x), reference, target, n_projections=n_projections),
                }
                if image_metrics:
                    row.update(_image_row(out.x, reference))
                rows.append(row)
                if on_row is not None:
                    on_row(row)
                if progress is not None:
                    progress(
                        f"{run.spec.label:>22} {score_label:>6} NFE {nfe:>6.4g} seed {seed}: "
                        f"SW {row['sw']:.3f} TV {row['tv']:.3f}"
                    )
    if reused:
        # The rows measured before, in their places: the order of seeds, samplers, grid sizes
        # (ascending; an adaptive solver's one run has none) and scores, as measured.
        rows += [done[key] for key in reused]
        labels = [spec.label for spec in sampler_specs]
        rows.sort(
            key=lambda row: (
                list(seeds).index(row["seed"]),
                labels.index(row["sampler"]),
                -1 if row["levels"] is None else row["levels"],
                list(score_fns).index(row["score"]),
            )
        )
    if known_floors is not None:
        return SweepResult(rows, dict(known_floors), settings)
    key_floor = _floor_key(seeds)
    floor = floors(
        METRICS,
        target.sample,
        key_floor,
        n_samples,
        floor_repeats,
        target=target,
        n_projections=n_projections,
    )
    if image_metrics:
        pairs = []
        for r in range(floor_repeats):
            key_x, key_y = jax.random.split(jax.random.fold_in(key_floor, r))
            pairs.append(
                _image_row(target.sample(key_x, n_samples), target.sample(key_y, n_samples))
            )
        for name in IMAGE_METRICS:
            values = [pair[name] for pair in pairs]
            floor[name] = (float(np.mean(values)), float(np.std(values, ddof=1)))
    return SweepResult(rows, floor, settings)


def _check_done(known_floors, done_rows, image_metrics: bool) -> None:
    """Refuse, before any work, ``known_floors`` without a ``(mean, sd)`` pair of numbers for
    each floor :func:`sweep` measures (and no other), and ``done_rows`` unlike its rows
    (:func:`_row_problem`): a missing floor failed in :func:`fewest_nfe`, a malformed row
    with a ``KeyError`` in the sweep."""
    if known_floors is not None:
        check_mapping("known_floors", known_floors, "a mapping of metric name -> (mean, sd)")
        names = (*METRICS, *(IMAGE_METRICS if image_metrics else ()))
        odd = sorted(map(str, set(known_floors) ^ set(names)))
        if odd:
            raise ValueError(
                f"known_floors: {', '.join(odd)} missing or unknown; give the floors of an "
                f"earlier sweep with the same image_metrics ({', '.join(names)})"
            )
        for name in names:
            pair = known_floors[name]
            if not is_floor_pair(pair):
                raise ValueError(
                    f"known_floors[{name!r}]: expected a (mean, sd) pair of numbers, got {pair!r}"
                )
    check_sequence("done_rows", done_rows, "rows of an earlier sweep (mappings)")
    for number, row in enumerate(done_rows, 1):
        problem = (
            f"a {type(row).__name__}, not a mapping"
            if not isinstance(row, Mapping)
            else _row_problem(row, image_metrics, nan=True)
        )
        if problem is not None:
            raise ValueError(
                f"done_rows: row {number}: {problem}; give rows of an earlier sweep with the "
                "same arguments"
            )


def _row_key(row: Mapping[str, Any]) -> tuple:
    """What identifies a row of :func:`sweep`: its seed, sampler, grid size and score."""
    return (row["seed"], row["sampler"], row["levels"], row["score"])


# The floors' stream: fold_in(key(s), _FLOOR_STREAM) is split(key(s), n)[_FLOOR_STREAM] for
# threefry, far past the 3 keys a seed splits into.
def _seed_keys(seed: int) -> jax.Array:
    """Seed ``seed``'s prior, chain and reference keys: ``split(key(seed), 3)``."""
    return jax.random.split(jax.random.key(seed), 3)


def _floor_key(seeds: Sequence[int]) -> jax.Array:
    """The floors' key: the largest seed's key named ``"floor"`` (:func:`scorelab.runs.named_key`),
    which no seed's keys (:func:`_seed_keys`) share. (``key(max(seeds) + 1)``
    wrapped round to ``key(0)`` at the largest seed ``2**32 - 1``, and its ``fold_in(., 0)``
    was seed 0's prior key.)"""
    return named_key(max(seeds), "floor")


def mean_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows averaged over seeds: one per (sampler, score, grid size), in first-seen order.

    Rows are grouped by ``sampler``, ``score`` and ``levels`` (a grid size fixes the NFE; an
    adaptive sampler, ``levels`` ``None``, forms one group per label) and each metric is the
    arithmetic mean over the group.

    Args:
        rows: :attr:`SweepResult.rows`, dicts with ``sampler``, ``score``, ``nfe``,
            ``levels``, ``sw``, ``mmd2``, ``tv``, ``var_ratio``, ``near`` and ``far``.

    Returns:
        A list of dicts with ``sampler``, ``score``, ``nfe`` (an int when every seed spent the
        same, else the mean rounded to 0.1), ``levels``, ``n_seeds`` and the mean of each
        metric.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["sampler"], row["score"], row["levels"]), []).append(row)
    averaged = []
    for group in groups.values():
        first = group[0]
        names = (*METRICS, "var_ratio", "near", *(k for k in IMAGE_METRICS if k in first))
        mean = {k: float(np.mean([r[k] for r in group])) for k in names}
        mean["far"] = float(np.mean([r["far"] for r in group]))
        nfe = float(np.mean([r["nfe"] for r in group]))
        averaged.append(
            {
                "sampler": first["sampler"],
                "score": first["score"],
                "nfe": int(nfe) if nfe == int(nfe) else round(nfe, 1),
                "levels": first["levels"],
                "n_seeds": len(group),
                **mean,
            }
        )
    return averaged


VAR_RATIO_BAND = (0.85, 1.2)
"""Within-mode variance ratios :func:`fewest_nfe`'s ``"all"`` accepts. SW, MMD² and the
mode-weight TV can all miss modes that shrink (docs/benchmarks.md, "Sampler map": a
second-order multistep solver at a small budget passes all three with modes far too narrow)."""


def fewest_nfe(
    result: SweepResult, metric: str = "sw", factor: float = 1.5
) -> dict[tuple[str, str], float | None]:
    r"""The fewest NFE from which each (sampler, score) stays within ``factor`` x the floor.

    On the seed-averaged rows (:func:`mean_rows`), the smallest NFE such that the metric is
    ``<= factor * floor mean`` there and at every larger NFE swept; ``None`` if none.
    For ``mmd2`` and ``kid``, whose floors are centred on 0 (unbiased), the bound is floor mean +
    ``factor`` x floor sd instead. ``metric="all"`` asks every metric of :data:`METRICS` to
    hold its bound and the within-mode variance ratio to lie in :data:`VAR_RATIO_BAND`.

    .. math::
        \mathrm{NFE}^\star = \min\{n : m(n') \le b \ \text{for every swept}\ n' \ge n\},
        \qquad b = \begin{cases} \bar f + k\, s_f & \text{MMD}^2 \\ k \bar f &
        \text{otherwise,} \end{cases}

    with :math:`\bar f, s_f` the floor's mean and standard deviation and :math:`k` = ``factor``.

    Args:
        result: a :class:`SweepResult`.
        metric: one of :data:`METRICS`, ``"fd"``, ``"kid"`` or ``"class_tv"`` (after a sweep
            with ``image_metrics``), or ``"all"``.
        factor: :math:`k`, the allowed multiple of the floor.

    Returns:
        ``(sampler label, score label) -> NFE``, ``None`` where the bound fails at the
        largest budget swept (or any NaN metric there).

    Raises:
        ValueError: for an unknown ``metric``, or a ``factor`` that is not a finite number
            ``> 0`` (NaN made every pair ``None`` without a word).
        TypeError: for a ``result`` that is not a :class:`SweepResult`.
    """
    check_instance("result", result, SweepResult, "a SweepResult (sweep() or run_sweep())")
    check_real("factor", factor, "a number > 0", lambda v: v > 0)
    lower_better = (*METRICS, *_IMAGE_FEWEST)
    if metric not in (*lower_better, "all") or metric not in (*result.floors, "all"):
        accepted = ", ".join(name for name in lower_better if name in result.floors)
        raise ValueError(f"unknown metric {metric!r}; accepted: {accepted}, all")
    bounds = {}
    for name in METRICS if metric == "all" else (metric,):
        mean, sd = result.floors[name]
        bounds[name] = mean + factor * sd if name in ("mmd2", "kid") else factor * mean

    def holds(row) -> bool:  # NaN compares False: a NaN row never holds
        within = all(row[name] <= bound for name, bound in bounds.items())
        low, high = VAR_RATIO_BAND
        return within and (metric != "all" or low <= row["var_ratio"] <= high)

    by_pair: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for row in mean_rows(result.rows):
        by_pair.setdefault((row["sampler"], row["score"]), []).append((row["nfe"], holds(row)))
    fewest = {}
    for pair, points in by_pair.items():
        points.sort()
        fewest[pair] = None
        for nfe, ok in reversed(points):
            if not ok:
                break
            fewest[pair] = nfe
    return fewest


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """What ``scorelab sweep`` runs (the ``[sweep]`` table of a TOML file, or flags).

    Attributes:
        target: a built-in target with an exact score (:data:`scorelab.config.TARGETS`).
        samplers: names from :data:`SWEEP_SAMPLERS`.
        nfe: NFE budgets.
        tolerances: rtol = atol of each ``tsit5`` / ``dopri5`` row (unless ``options`` set
            ``rtol`` or ``atol``).
        n_samples, seeds, grid, sigma_min, sigma_max, rho, prior: as :func:`sweep`.
        options: sampler name -> options for :func:`sweep_sampler` (``[sweep.options.edm]``).
        image_metrics: also measure the classifier metrics (:data:`IMAGE_METRICS`), for an
            image-shaped target (``digits_mixture``).
    """

    target: str = "seed_mixture"
    samplers: tuple[str, ...] = (
        "euler",
        "heun",
        "dpmpp_2m",
        "ddim",
        "edm",
        "ancestral",
        "predictor_corrector",
    )
    nfe: tuple[int, ...] = (5, 10, 15, 20, 30, 40, 60, 80, 120)
    tolerances: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    n_samples: int = 4000
    seeds: tuple[int, ...] = (0, 1, 2)
    grid: str = "karras"
    sigma_min: float = 0.002
    sigma_max: float = DEFAULT_SIGMA_MAX
    rho: float = 7.0
    prior: str = "normal"
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    image_metrics: bool = False

    def __post_init__(self):
        check_fields(self, "sweep")
        check_choice("sweep.target", self.target, TARGETS)
        for name, table in self.options.items():
            check_mapping(
                f"sweep.options.{name}", table, "a table of option name -> value", error=ValueError
            )
        if self.image_metrics and TARGETS[self.target]().dim not in (64, 256):
            raise ValueError(
                f"sweep.image_metrics: the target's points must be 8x8 or 16x16 images (64 or "
                f"256 values), and {self.target}'s are not; use digits_mixture or leave it out"
            )
        for field, what in (("samplers", "sampler"), ("nfe", "NFE budget"), ("seeds", "seed")):
            if not getattr(self, field):  # was "sweep.sweep: needs at least one ..."
                raise ValueError(f"sweep.{field}: an empty list; give at least one {what}")
        for name in self.samplers:  # was "unknown sampler 'x'", naming no field
            try:
                sweep_sampler(name)  # unknown, a former name, or of one noise level
            except ValueError as error:
                raise ValueError(f"sweep.samplers: {error}") from error
        # Every table, swept or not (--samplers may narrow a file's list): a misspelt sampler's
        # was read, then ignored; a value of the wrong type failed mid-sweep.
        typed_options = {
            name: typed_sampler_options(name, table, f"sweep.options.{name}")
            for name, table in self.options.items()
        }
        object.__setattr__(self, "options", typed_options)  # a copy, never the caller's dict
        for value in self.nfe:
            check_int("sweep.nfe", value, 1)
        for value in self.seeds:
            check_seed("sweep.seeds", value)
        for value in self.tolerances:
            check_real("sweep.tolerances", value, "a number in (0, 1)", lambda v: 0 < v < 1)
        for field in ("samplers", "nfe", "seeds", "tolerances"):
            check_unique(f"sweep.{field}", getattr(self, field))
        adaptive = [name for name in self.samplers if name in samplers.ADAPTIVE_SOLVERS]
        if adaptive and not self.tolerances:
            raise ValueError(
                f"sweep.tolerances: {', '.join(adaptive)} run at tolerances, not budgets; give "
                "at least one (e.g. 1e-3)"
            )
        check_int("sweep.n_samples", self.n_samples, 2)
        if is_saved_grid(self.grid):
            saved_grid_path(self.grid)  # a one-line error naming the remedy
        else:
            check_choice("sweep.grid", self.grid, GRIDS)
        check_real("sweep.sigma_min", self.sigma_min, "a number > 0", lambda v: v > 0)
        check_sigma("sweep.sigma_min", self.sigma_min)
        check_real(
            "sweep.sigma_max",
            self.sigma_max,
            f"a number > sigma_min ({self.sigma_min})",
            lambda v: v > self.sigma_min,
        )
        check_sigma("sweep.sigma_max", self.sigma_max)
        check_real("sweep.rho", self.rho, "a number > 0", lambda v: v > 0)
        check_choice("sweep.prior", self.prior, PRIORS)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SweepSettings:
        """Settings from a mapping, e.g. the ``[sweep]`` table of a TOML file.

        Args:
            values: field name -> value; lists become tuples for ``samplers``, ``nfe``,
                ``tolerances`` and ``seeds``.

        Returns:
            The :class:`SweepSettings`.

        Raises:
            ValueError: for an unknown field or a value of the wrong type, naming the field.
        """
        return from_mapping(cls, values, "sweep")

    def specs(self) -> list[SweepSampler]:
        """The :class:`SweepSampler` records: one per name, one per tolerance if adaptive.

        Returns:
            A list of :class:`SweepSampler` in the order of ``samplers``.

        Raises:
            ValueError: for an unknown sampler name or option (:func:`sweep_sampler`).
        """
        specs = []
        for name in self.samplers:
            options = dict(self.options.get(name, {}))
            if name in samplers.ADAPTIVE_SOLVERS and not {"rtol", "atol"} & set(options):
                specs += [sweep_sampler(name, rtol=t, atol=t, **options) for t in self.tolerances]
            else:
                specs.append(sweep_sampler(name, **options))
        return specs


def save(result: SweepResult, out_dir) -> list[Path]:
    """Write a sweep's rows and summary to ``out_dir`` as CSV and JSON, and its manifest.

    ``sweep.csv`` holds every row; ``sweep.json`` holds the settings, floors, seed means
    (:func:`mean_rows`), the rows, and :func:`fewest_nfe` within 1.5x the floor for each
    metric of :data:`METRICS` (and ``fd``, ``kid``, ``class_tv`` after a sweep with image
    metrics) and for ``"all"``.

    Args:
        result: a :class:`SweepResult`.
        out_dir: the output folder, ``str`` or path-like; created if missing, files in it
            overwritten.

    Every file is written atomically; ``manifest.json`` (:func:`scorelab.runs.manifest` of
    the settings) marks the folder as a scorelab run that ``--overwrite`` may replace.

    Returns:
        ``[out_dir / "sweep.csv", out_dir / "sweep.json", out_dir / "manifest.json"]``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [*_ROW_ID, *_ROW_MEASURES]
    columns += [k for k in _ROW_IMAGE_MEASURES if result.rows and k in result.rows[0]]

    def write_csv(handle):
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.rows)
        text.detach()  # flushed; the binary handle stays open for atomic_write to close

    atomic_write(out_dir / "sweep.csv", write_csv)
    fewest = {
        metric: [
            {"sampler": sampler, "score": score, "nfe": nfe}
            for (sampler, score), nfe in fewest_nfe(result, metric).items()
        ]
        for metric in (*METRICS, *(m for m in _IMAGE_FEWEST if m in result.floors), "all")
    }
    payload = {
        "settings": result.settings,
        "floors": result.floors,
        "mean_rows": mean_rows(result.rows),
        "fewest_nfe_within_1.5x_floor": fewest,
        "rows": result.rows,
    }
    write_json(out_dir / "sweep.json", payload)
    write_json(out_dir / "manifest.json", manifest(result.settings, job="sweep"))
    return [out_dir / "sweep.csv", out_dir / "sweep.json", out_dir / "manifest.json"]


PARTIAL = "sweep.partial.json"
"""The file of an unfinished sweep's rows in its output folder (:func:`save_partial`)."""

_ROW_ID = ("sampler", "score", "nfe", "levels", "seed")
_ROW_MEASURES = ("sw", "mmd2", "tv", "var_ratio", "near", "far", "n_empty")
_ROW_IMAGE_MEASURES = (*IMAGE_METRICS, "kid_se")


def _row_problem(row: Mapping[str, Any], image_measures: bool, nan: bool = False) -> str | None:
    """What makes a saved row unlike one :func:`sweep` measures, or ``None``: a field missing
    or unknown (the image measures in every row or none), an identifier of the wrong type, or
    a measure that is not a finite number or null (a NaN measure is saved as null; ``nan``
    accepts it as NaN too, as :func:`load_partial` returns it)."""
    fields = {*_ROW_ID, *_ROW_MEASURES, *(_ROW_IMAGE_MEASURES if image_measures else ())}
    odd = set(row) ^ fields
    if odd:
        return f"field(s) {', '.join(sorted(map(str, odd)))} unlike the sweep's rows"
    kinds = {"sampler": str, "score": str, "nfe": (int, float), "levels": (int, type(None))}
    for name, kind in {**kinds, "seed": int}.items():
        if not isinstance(row[name], kind) or isinstance(row[name], bool):
            return f"{name} {row[name]!r} of the wrong type"
    for name in fields - set(_ROW_ID):
        value = row[name]
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not (math.isfinite(value) or (nan and math.isnan(value)))
        ):
            return f"{name} {value!r} is not a finite number"
    return None


def save_partial(out_dir, about: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the rows measured so far, and what they were measured for (``about``: the
    settings, the model), to ``out_dir / PARTIAL``, atomically; :func:`load_partial` reads them
    back for a sweep with the same ``about``, whose :func:`sweep` (``done_rows``) skips them."""
    return write_json(Path(out_dir) / PARTIAL, {"about": about, "rows": list(rows)})


def load_partial(out_dir, about: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows :func:`save_partial` wrote to ``out_dir``, if they were measured for ``about``.

    Raises:
        ValueError: no such file, a damaged one (a row unlike those :func:`sweep` measures:
            other fields, an identifier of the wrong type, a measure that is not a finite
            number), or one whose ``about`` differs (naming the fields that do).
    """
    path = Path(out_dir) / PARTIAL
    if not path.is_file():
        raise ValueError(
            f"--resume: {out_dir} holds no unfinished sweep ({PARTIAL}); drop --resume"
        )
    current = json.loads(json.dumps(jsonable(dict(about))))
    try:
        record = read_json(path)
        saved, rows = dict(record["about"]), [dict(row) for row in record["rows"]]
        for row in rows:
            hash(_row_key(row))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"--resume: {path} is damaged ({type(error).__name__}); start anew with --overwrite"
        ) from None
    image_measures = bool(rows) and "kid_se" in rows[0]
    for number, row in enumerate(rows, 1):  # a hand-edited row failed after every new run
        problem = _row_problem(row, image_measures)
        if problem is not None:
            raise ValueError(
                f"--resume: {path} row {number}: {problem}; restore the file or start anew "
                "with --overwrite"
            )
    differing = sorted(k for k in {*saved, *current} if saved.get(k) != current.get(k))
    if differing:
        raise ValueError(
            f"--resume: {', '.join(differing)} differ from the unfinished sweep's ({path}); "
            "give the same settings and model, or start anew with --overwrite"
        )
    text_fields = ("sampler", "score", "levels", "seed")
    for row in rows:  # a NaN measure is saved as null (the JSON files' policy)
        row.update({k: np.nan for k, v in row.items() if v is None and k not in text_fields})
    return rows


def load_score_model(
    path, dim: int | None = None, target: str | None = None
) -> NoiseConditionalMLP | EDMPreconditioned:
    """The trained noise-conditional score model at ``path``, for the map's ``model`` rows.

    Args:
        path: a ``scorelab train`` run directory, or a model written by
            :func:`scorelab.checkpoints.save_model` (with or without its suffix, e.g. the
            demo's ``runs/demo/models/ncsn``).
        dim: the target's dimension ``d``, checked against the model's input (abstractly,
            :func:`jax.eval_shape`), or ``None``.
        target: the name of the target the map measures against, checked against a run
            directory's ``data.source`` (a model trained on other data measured against it
            gave numbers that meant nothing, exit 0), or ``None``.

    Returns:
        The :class:`scorelab.models.NoiseConditionalMLP` or
        :class:`scorelab.precond.EDMPreconditioned`, a ``score_fn(x (d,), sigma)``.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: if the model is not noise-conditional (the samplers query every sigma),
            does not take points of dimension ``dim``, or was trained on other data than
            ``target``'s.
    """
    path = Path(path)
    if not path.is_dir() and not model_files(path)[1].is_file():
        raise FileNotFoundError(
            f"--run {path}: neither a run directory nor a saved model (<path>.json and .eqx)"
        )
    config, model = load_run(path) if path.is_dir() else (None, load_model(path))
    if not isinstance(model, NoiseConditionalMLP | EDMPreconditioned):
        raise ValueError(
            f"--run: the sampler map measures noise-conditional models of points (ncsn_mlp, "
            f"with or without EDM preconditioning), {path} holds {type(model).__name__}"
        )
    source = None if config is None else config.data.source
    if target is not None and source is not None and source != target:
        remedy = (
            f"pass --target {source}"
            if source in TARGETS
            else "the map needs data with an exact score: train on the target's samples "
            f"(data.source = {target!r})"
        )
        raise ValueError(
            f"--run: {path} was trained on {source!r} data, and the map measures against the "
            f"target {target!r}, which its numbers would not describe; {remedy}"
        )
    if dim is not None:
        point = jax.ShapeDtypeStruct((dim,), jnp.float32)
        try:
            jax.eval_shape(model, point, jnp.float32(1.0))
        except (TypeError, ValueError):  # a matrix product of mismatched sizes
            raise ValueError(
                f"--run: {path} holds a model of other points than the target's {dim}-d ones; "
                "sweep the target it was trained on (--target)"
            ) from None
    return model


def sweep_settings(config_path=None, overrides: Mapping[str, Any] | None = None) -> SweepSettings:
    """The settings of ``scorelab sweep``: the ``[sweep]`` table of a TOML file (its only
    table), then ``overrides`` (:class:`SweepSettings` field -> value, the command's flags).
    A saved grid (``ays:NAME`` or a ``.json`` file) sets ``sigma_min`` and ``sigma_max`` to its
    own ends unless they are given.

    Raises:
        ConfigError: another table in the file, a ``[sweep]`` that is not a table, an unknown
            field or value, a target without an exact score, or ``rho`` or ``tolerances``
            given where nothing reads them (a grid ``rho`` does not shape; no ``tsit5`` or
            ``dopri5`` row, unless ``overrides`` narrowed a file's samplers), or ``overrides``
            that is not a mapping.
    """
    if overrides is not None:
        check_mapping("overrides", overrides, "a mapping of field -> value", error=ConfigError)
    loaded = load_config(config_path) if config_path is not None else {}
    for section, value in loaded.items():
        if section != "sweep" and not isinstance(value, dict):
            raise ConfigError(
                f"{section}: a key outside the [sweep] table of {config_path}; put it under "
                "[sweep] (scorelab sweep reads only that table)"
            )
        if section != "sweep":
            raise ConfigError(
                f"{section}: scorelab sweep reads only the [sweep] table of {config_path} "
                f"(the sampler and its grid are the [sweep] fields); leave [{section}] out"
            )
    table = loaded.get("sweep", {})
    if not isinstance(table, dict):
        raise ConfigError(f"sweep: expected a [sweep] table of fields, got {table!r}")
    values = with_saved_range({**table, **(overrides or {})})  # as scorelab sample's
    target = values.get("target", SweepSettings.target)
    if isinstance(target, str) and target not in TARGETS:  # an exact score's, as a ConfigError
        accepted = ", ".join(TARGETS)
        raise ConfigError(f"sweep.target: unknown {target!r}; accepted: {accepted}")
    settings = SweepSettings.from_dict(values)
    if "rho" in values:  # read, then ignored on a grid it does not shape
        check_rho_shapes("sweep.rho", settings.grid, ConfigError)
    given = overrides or {}
    if (
        "tolerances" in values
        and not any(name in samplers.ADAPTIVE_SOLVERS for name in settings.samplers)
        and ("tolerances" in given or "samplers" not in given)  # a file's, narrowed: quiet
    ):  # read, then ignored without a word
        raise ConfigError(
            f"sweep.tolerances: only tsit5 and dopri5 rows run at tolerances, and "
            f"sweep.samplers ({', '.join(settings.samplers)}) has neither; leave it out"
        )
    if (
        "nfe" in values
        and all(name in samplers.ADAPTIVE_SOLVERS for name in settings.samplers)
        and ("nfe" in given or "samplers" not in given)
    ):  # the mirror case: budgets that no row reads
        raise ConfigError(
            f"sweep.nfe: sweep.samplers ({', '.join(settings.samplers)}) run at tolerances "
            "(sweep.tolerances), not at budgets; leave it out"
        )
    return settings


def run_sweep(
    settings: SweepSettings,
    out,
    *,
    run=None,
    inputs: Sequence = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = print,
) -> tuple[Report, list[Path]]:
    """The ``scorelab sweep`` job: the map of ``settings`` with the exact score (and the
    trained model of ``run``), written to the run directory ``out``: ``sweep.csv``,
    ``sweep.json``, the manifest and ``sampler_map.png``.

    Each row is saved as it is measured (:data:`PARTIAL`), so an interrupted sweep keeps them
    and ``resume=True`` measures only the rest, refusing other settings or another model; the
    file is deleted when the map is written. An interrupt with rows kept is re-raised as a
    ``KeyboardInterrupt`` saying so.

    Args:
        settings: the :class:`SweepSettings` (:func:`sweep_settings`).
        out: the run directory (:func:`scorelab.runs.prepare_run_dir`'s rules).
        run: a trained model for the ``model`` rows (:func:`load_score_model`), or ``None``.
        inputs: the files read (a config, the run), which ``out`` must not be or hold.
        resume, overwrite: continue an unfinished sweep in ``out``, or replace ``out``.
        progress: called with each progress line, or ``None`` for quiet.

    Returns:
        The report of the seed-mean rows beside the floors, and the paths written.

    Raises:
        ValueError: for sizes :func:`sweep` refuses (memory of ``n_samples`` or a budget's
            grid, budgets that buy no grid), before ``out`` is claimed; as
            :func:`scorelab.runs.prepare_run_dir` for ``out``.
    """
    target = TARGETS[settings.target]()
    score_fns = {"exact": ExactScore(target)}
    if run is not None:
        score_fns["model"] = load_score_model(run, dim=target.dim, target=settings.target)
    # What the rows are measured for: a resumed sweep must have the same settings and weights
    # (the model's array leaves: another leaf, a function say, need not hash the same twice).
    weights = None if run is None else eqx.filter(score_fns["model"], eqx.is_array)
    about = {
        **{f"sweep.{k}": v for k, v in dataclasses.asdict(settings).items()},
        "model": None if weights is None else tree_sha256(weights),
    }
    _check_sweep(
        target,
        settings.specs(),
        settings.nfe,
        score_fns,
        settings.seeds,
        settings.n_samples,
        settings.image_metrics,
        settings.prior,
    )  # before the run folder is claimed
    rows_so_far = []

    def kept(row):
        rows_so_far.append(row)
        save_partial(out, about, rows_so_far)

    with prepare_run_dir(
        out, resume=resume, overwrite=overwrite, inputs=list(inputs), job="sweep"
    ) as folder:
        if resume:
            # sweep.json beside the rows file is a finish cut short (its figure, say, on a full
            # disk): the rows file goes only once every output is written.
            if (folder / "sweep.json").is_file() and not (folder / PARTIAL).is_file():
                raise ValueError(
                    f"--resume: {folder} holds a finished sweep; nothing to continue (a new "
                    "sweep: drop --resume and give another --out, or --overwrite)"
                )
            rows_so_far += load_partial(folder, about)
            if progress is not None:
                done = len(rows_so_far)
                progress(f"resuming: {done} rows measured before, in {folder / PARTIAL}")
        try:
            result = sweep(
                target,
                settings.specs(),
                settings.nfe,
                score_fns,
                n_samples=settings.n_samples,
                seeds=settings.seeds,
                grid=settings.grid,
                sigma_min=settings.sigma_min,
                sigma_max=settings.sigma_max,
                rho=settings.rho,
                prior=settings.prior,
                progress=progress,
                image_metrics=settings.image_metrics,
                done_rows=list(rows_so_far),
                on_row=kept,
            )
        except KeyboardInterrupt:
            if not rows_so_far:
                raise
            raise KeyboardInterrupt(
                f"{len(rows_so_far)} rows kept in {folder / PARTIAL}; rerun it with --resume "
                "(the same settings, without --overwrite) to continue"
            ) from None
        rows = mean_rows(result.rows)
        table = [{"method": f"{r['sampler']} [{r['score']}]", **r} for r in rows]
        written = save(result, folder)
        figure = viz.sampler_map(rows, result.floors)
        written.append(viz.save_figure(figure, folder / "sampler_map.png"))
        (folder / PARTIAL).unlink(missing_ok=True)
    return Report(table, result.floors), written
