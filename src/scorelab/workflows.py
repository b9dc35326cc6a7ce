"""The CLI's jobs as library functions: train a run, sample, evaluate with the floor, plot.

Each function takes a validated :class:`scorelab.config.ExperimentConfig` (or paths) and
does one job; ``scorelab.cli`` only parses arguments and calls these.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from scorelab import metrics, samplers, viz
from scorelab._validate import check_real
from scorelab.checkpoints import save_model
from scorelab.config import TARGETS, ConfigError, ExperimentConfig
from scorelab.data import load_array
from scorelab.models import MLP, ExactScore, NoiseConditionalMLP
from scorelab.runs import load_run, manifest, write_json
from scorelab.training import train

__all__ = [
    "SampleResult",
    "train_run",
    "score_model",
    "sample_run",
    "evaluate_samples",
    "format_table",
    "plot_run",
]


def train_run(
    config: ExperimentConfig, out_dir, *, resume: bool = False, progress: bool = True
) -> Path:
    """Train the model ``config`` describes and write a run directory (see :mod:`scorelab.runs`).

    Returns:
        The run directory.
    """
    out_dir = Path(out_dir)
    data = config.data.load()
    model, model_kwargs = config.model.build(data, config.loss)
    result = train(
        jax.random.key(config.train.seed),
        model,
        config.loss.build(),
        data,
        config.train,
        out_dir=out_dir / "checkpoints",
        resume=resume,
        progress=progress,
    )
    trained = result.ema_model if result.ema_model is not None else result.model
    save_model(out_dir / "model", trained, **model_kwargs)
    np.save(out_dir / "losses.npy", result.losses)
    write_json(out_dir / "config.json", config.to_dict())
    write_json(out_dir / "manifest.json", manifest(config.to_dict(), data_shape=data.shape))
    return out_dir


def _one_law_under_a_grid(config: ExperimentConfig, model) -> bool:
    """Whether ``model`` is an unconditional network (the score of one law) and the configured
    sampler walks a sigma grid, which would query that one score at every level."""
    return isinstance(model, MLP) and config.sampler.uses_grid


def score_model(config: ExperimentConfig, model=None):
    """The score to sample with: ``model``, or the exact score of the configured target.

    Raises:
        ConfigError: for a bundled network that cannot serve the configured sampler: an
            unconditional :class:`scorelab.models.MLP` (Hyvarinen, Hutchinson, sliced, DSM)
            under a sampler that walks a sigma grid, which would query the score of one
            distribution at every level; or a noise-conditional network under ULA at sigma 0.
    """
    if model is not None:
        if _one_law_under_a_grid(config, model):
            trained = f"loss {config.loss.name!r}"
            if config.loss.name == "dsm":
                trained += f" at sigma {config.loss.sigma:g}"
            raise ConfigError(
                f"sampler.name: {config.sampler.name!r} walks a sigma grid and needs a "
                f"noise-conditional model (trained with --loss ncsn); this model is "
                f"unconditional ({trained}), the score of one distribution: sample it with "
                "--sampler ula"
            )
        if (
            isinstance(model, NoiseConditionalMLP)
            and config.sampler.name == "ula"
            and config.sampler.sigma <= 0
        ):
            raise ConfigError(
                "sampler.sigma: a noise-conditional model needs sigma > 0 for ULA, got "
                f"{config.sampler.sigma}"
            )
        return model
    target = config.data.target()
    if target is None:
        raise ConfigError(
            f"data.source: no exact score for {config.data.source!r}; "
            f"accepted for --exact: {', '.join(TARGETS)}"
        )
    return ExactScore(target)


class SampleResult(NamedTuple):
    """Samples, optional trajectories, and the score evaluations they cost.

    Attributes:
        x: samples ``(n, d)``.
        trajectory: ``(n, n_records, d)``, or ``None`` when not asked for.
        nfe: score evaluations per chain; for an adaptive solver, whose chains differ, the
            mean over chains.
        nfe_per_chain: each chain's own count ``(n,)`` for an adaptive solver, else ``None``.
    """

    x: np.ndarray
    trajectory: np.ndarray | None
    nfe: float
    nfe_per_chain: np.ndarray | None = None


def sample_run(
    config: ExperimentConfig, model, n: int, seed: int, *, trajectory: bool = False
) -> SampleResult:
    """Draw ``n`` samples with the configured sampler, from ``model`` or the exact score.

    The key ``key(seed)`` is split into a prior key and a sampler key; chain ``i`` depends only
    on index ``i`` of each, so the first ``m`` samples do not depend on ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"sample.n: expected an integer >= 1, got {n!r}")
    score_fn = score_model(config, model)
    target = config.data.target()
    dim = target.dim if target is not None else config.data.load().shape[1]
    key_prior, key_sampler = jax.random.split(jax.random.key(seed))
    # MALA's log-density is the exact target's: only when sampling its exact score.
    sampler = config.sampler.build(target if model is None else None)
    x_init = config.sampler.prior_samples(key_prior, n, dim, target)
    out = samplers.sample(key_sampler, sampler, score_fn, x_init, trajectory=trajectory)
    traj = None if out.trajectory is None else np.asarray(out.trajectory)
    if sampler.nfe is not None:
        return SampleResult(np.asarray(out.x), traj, sampler.nfe)
    per_chain = np.asarray(out.nfe)
    return SampleResult(np.asarray(out.x), traj, float(np.mean(per_chain)), per_chain)


def evaluate_samples(
    samples,
    *,
    target: str | None = None,
    data=None,
    floor_repeats: int = 5,
    seed: int = 0,
    label: str = "samples",
    sigma: float = 0.0,
) -> dict[str, Any]:
    r"""Metrics of ``samples`` (an array or a .npy/.csv path) against a target or data, with
    the sliced-Wasserstein floor at the same sample size.

    With a built-in ``target``, the reference is ``n`` fresh exact samples and the floor is
    the metric between two independent exact sets of size ``n``. With ``data`` (an array or a
    path), the reference is the data and the floor is the metric between two independent
    sets of ``n`` draws (with replacement) from the data's empirical law.

    With ``sigma > 0`` the reference law is the noised one,
    :math:`q_\sigma = q * \mathcal{N}(0, \sigma^2 I)`: the target's exact VE marginal, or the
    data plus fresh Gaussian noise. That is the law a DSM model trained at ``sigma`` learns,
    so its samples are judged against it, not against the data.

    Returns:
        ``{"metrics": ..., "floor": {"sliced_wasserstein": [mean, sd], ...}, "row": ...}``
        where ``row`` is a flat dict for :func:`format_table`.
    """
    if isinstance(samples, str | Path):
        samples = load_array(samples)
    samples = np.asarray(samples, np.float32)
    n = samples.shape[0]
    check_real("sigma", sigma, "a number >= 0", lambda v: v >= 0, error=ConfigError)
    key_reference, key_floor = jax.random.split(jax.random.key(seed))
    if target is not None:
        if target not in TARGETS:
            raise ConfigError(f"target: unknown {target!r}; accepted: {', '.join(TARGETS)}")
        mixture = TARGETS[target]()
        if sigma > 0:
            mixture = mixture.ve_marginal(sigma)
        reference = np.asarray(mixture.sample(key_reference, n))
        sample_fn = mixture.sample
    else:
        mixture = None
        points = load_array(data) if isinstance(data, str | Path) else np.asarray(data)
        if points.shape[0] < 2:
            raise ConfigError("data: need at least 2 reference points for a floor")

        def sample_fn(key, size):
            # iid draws from the empirical law of the data (noised at sigma): that law's floor.
            pick, noise = jax.random.split(key)
            drawn = points[np.asarray(jax.random.choice(pick, points.shape[0], (size,)))]
            if sigma == 0:
                return drawn
            return drawn + sigma * np.asarray(jax.random.normal(noise, drawn.shape))

        reference = points if sigma == 0 else sample_fn(key_reference, points.shape[0])

    if samples.shape[1] != reference.shape[1]:
        raise ConfigError(
            f"samples: dimension {samples.shape[1]} does not match the reference's "
            f"{reference.shape[1]}"
        )
    result = metrics.evaluate(samples, reference, mixture)
    floors = {
        "sliced_wasserstein": metrics.floor(
            metrics.sliced_wasserstein, sample_fn, key_floor, n, floor_repeats
        ),
    }
    if mixture is not None:
        floors["total_variation"] = metrics.floor(
            lambda x, y: metrics.mixture_report(x, mixture).total_variation,
            sample_fn,
            key_floor,
            n,
            floor_repeats,
        )
    row = {
        "method": label,
        "n": n,
        "sw": result["sliced_wasserstein"],
        "sw_floor": floors["sliced_wasserstein"][0],
        "mmd2": result["mmd2"],
        "tv": result.get("total_variation"),
        "var_ratio": result.get("variance_ratio_mean"),
        "near": result.get("near_fraction"),
    }
    return {"metrics": result, "floor": floors, "row": row}


_COLUMNS = (
    ("method", "method", "{}"),
    ("nfe", "NFE", "{}"),
    ("sw", "SW", "{:.3f}"),
    ("sw_exact", "SW exact", "{:.3f}"),
    ("sw_floor", "SW floor", "{:.3f}"),
    ("tv", "TV", "{:.3f}"),
    ("tv_exact", "TV exact", "{:.3f}"),
    ("var_ratio", "var ratio", "{:.2f}"),
    ("near", "near", "{:.3f}"),
    ("mmd2", "MMD^2", "{:.2e}"),
)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of result rows; columns absent from every row are left out."""
    columns = [c for c in _COLUMNS if any(r.get(c[0]) is not None for r in rows)]

    def cell(row, name, fmt):
        value = row.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return fmt.format(value)

    table = [[title for _, title, _ in columns]]
    table += [[cell(row, name, fmt) for name, _, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)) for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def plot_run(run_dir, out_dir=None) -> list[Path]:
    """The figures of a training run: loss curve, score field over the data, samples.

    For a demo run directory (with ``metrics.json``), redraws the demo's figures instead.

    Returns:
        The paths written.
    """
    from scorelab.demo import plot_demo

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "figures"
    if (run_dir / "demo.json").is_file():
        return plot_demo(run_dir, out_dir)
    config, model = load_run(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = config.data.load()
    written = []
    losses = {config.loss.name: np.load(run_dir / "losses.npy")}
    written.append(viz.save_figure(viz.loss_curves(losses), out_dir / "loss.png"))
    sigma = config.sampler.sigma if config.sampler.sigma > 0 else config.loss.sigma
    field = viz.mesh_score(model, sigma=sigma)
    written.append(viz.save_figure(viz.score_field(field, data), out_dir / "score_field.png"))
    if _one_law_under_a_grid(config, model):
        # The run keeps the default grid sampler, which an unconditional model cannot serve.
        config = dataclasses.replace(
            config, sampler=dataclasses.replace(config.sampler, name="ula")
        )
    result = sample_run(config, model, 1000, 0)
    figure = viz.ddim_samples(
        {f"{config.loss.name} model": result.x},
        data,
        key_name=None,
        title=f"{config.sampler.name} samples",
    )
    written.append(viz.save_figure(figure, out_dir / "samples.png"))
    return written
