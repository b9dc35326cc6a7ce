"""EDM preconditioning against the demo's NCSN model on the tutorial's mixture, at 20 NFE.

Trains, with the demo's budget (``scorelab.config.TRAIN_RECIPE``: 5000 Adam steps at batch
1024, cosine decay from 1e-3, EMA 0.999) on the demo's data (``seed_mixture``, 10 000 points):

- ``ncsn``: the demo's NCSN model (``DemoSettings().experiment("ncsn")``: noise-conditional MLP,
  sigma log-uniform in [0.02, 80], NCSN weighting sigma^2);
- ``edm``: the same network as EDM's raw network ``F`` inside
  ``scorelab.precond.EDMPreconditioned`` (sigma_data = the data's standard deviation), EDM's
  weighting, the same sigma draw;
- ``edm_lognormal``: as ``edm`` with EDM's own sigma draw, ln sigma ~ N(-1.2, 1.2^2) clipped to
  [0.02, 80];
- variants of ``edm`` (:data:`VARIANTS`): a smooth activation (``edm_silu``, ``edm_gelu``), EDM's
  positional noise embedding (``edm_positional``, ``model.noise_embedding``), and other laws of
  the training sigmas: EDM's moved to this data's scale (``edm_lognormal_fitted``), or centred
  between the modes' width and spacing (``edm_lognormal_modes``, ``..._narrow``), with the
  embedding or wider layers (``..._positional``, ``..._wide``),

then runs the sampler map's ODE solvers (DPM-Solver++(2M), Heun) at 20 NFE on its grid (Karras,
rho 7, sigma 0.02 to 80, x_T ~ N(0, 80^2 I)), 2 seeds x 3000 samples, with the exact score
beside the models (common random numbers), and reports every metric of the map against its
floor (``scorelab.sweep``); and each model's relative score error at every level of
DPM-Solver++(2M)'s 20-level grid (``scorelab.score_error``, 2000 exact samples per level), drawn
in ``benchmarks/results/edm_mixture_score_error.png``, with its mean over the levels 0.5-5
(:data:`BAND`, where the flow divides mass between modes). Run directories go to ``--runs``
(reused with ``--reuse``), the numbers to ``benchmarks/results/edm_mixture.json``. With
``--bands`` each model also drives the solvers on one band of levels only, the exact score on
the others, to show which levels put samples between the modes::

    python benchmarks/edm_mixture.py --runs runs/edm_mixture
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
from _harness import RESULTS_DIR, machine

from scorelab import builders, sweep, viz
from scorelab.config import ExperimentConfig
from scorelab.demo import DemoSettings
from scorelab.models import ExactScore
from scorelab.noise import sigma_grid
from scorelab.runs import load_run
from scorelab.score_error import score_error_profile
from scorelab.targets import seed_mixture
from scorelab.workflows import train_run

EDM = {"model": {"preconditioning": "edm"}, "loss": {"weighting": "edm"}}


def lognormal(p_mean: float, p_std: float) -> dict:
    """EDM's loss with ln sigma ~ N(p_mean, p_std^2), clipped to [0.02, 80]."""
    return {**EDM["loss"], "sigma_distribution": "lognormal", "p_mean": p_mean, "p_std": p_std}


# EDM's P_mean = -1.2 is set for data of standard deviation 0.5; moved by ln(sigma_data / 0.5)
# to this data's 7.99, the same law in units of sigma / sigma_data.
FITTED = lognormal(-1.2 + math.log(7.99 / 0.5), 1.2)
# The levels between the modes' width (sd 0.32) and their spacing (10), where the noised law is
# neither one Gaussian nor nine separate ones: ln sigma centred on their geometric mean, with
# EDM's P_std, or with the P_std that puts 95% of the draws between width and spacing.
MODES = lognormal(0.5 * math.log(0.1**0.5 * 10.0), 1.2)
MODES_NARROW = lognormal(MODES["p_mean"], math.log(10.0 / 0.1**0.5) / 4)
POSITIONAL = {**EDM["model"], "noise_embedding": "positional"}
VARIANTS = {
    "ncsn": {},
    "edm": EDM,
    "edm_lognormal": {"model": EDM["model"], "loss": lognormal(-1.2, 1.2)},
    "edm_silu": {"model": {**EDM["model"], "activation": "silu"}, "loss": EDM["loss"]},
    "edm_gelu": {"model": {**EDM["model"], "activation": "gelu"}, "loss": EDM["loss"]},
    "edm_positional": {"model": POSITIONAL, "loss": EDM["loss"]},
    "edm_lognormal_fitted": {"model": EDM["model"], "loss": FITTED},
    "edm_lognormal_modes": {"model": EDM["model"], "loss": MODES},
    "edm_lognormal_modes_narrow": {"model": EDM["model"], "loss": MODES_NARROW},
    "edm_lognormal_modes_positional": {"model": POSITIONAL, "loss": MODES},
    "edm_lognormal_modes_narrow_wide": {
        "model": {**EDM["model"], "widths": [384, 768, 384]},
        "loss": MODES_NARROW,
    },
}
NFE = 20
BAND = (0.5, 5.0)
SAMPLERS = ("dpmpp_2m", "heun")
GRID = {"grid": "karras", "sigma_min": 0.02, "sigma_max": 80.0, "rho": 7.0}


def config_of(variant: str, steps: int | None) -> ExperimentConfig:
    """The demo's NCSN experiment with ``variant``'s sections updated (and ``steps``);
    ``name@k`` is variant ``name`` with initialisation and training seeds ``k`` (default 0)."""
    name, _, seed = variant.partition("@")
    values = DemoSettings().experiment("ncsn").to_dict()
    for section, fields in VARIANTS[name].items():
        values[section] = {**values[section], **fields}
    if seed:
        values["model"]["seed"] = values["train"]["seed"] = int(seed)
    if steps is not None:
        values["train"]["steps"] = steps
    return ExperimentConfig.from_dict(values)


def train_or_load(variant: str, runs: Path, steps: int | None, reuse: bool):
    run_dir = runs / variant
    if not (reuse and (run_dir / "model.json").is_file()):
        config = config_of(variant, steps)
        train_run(config, run_dir, overwrite=True, data=builders.make_data(config.data))
    return load_run(run_dir)[1]


def banded(model, exact, low: float, high: float):
    """The model's score at levels in ``[low, high)``, the exact score at the others."""

    def score_fn(x, sigma):
        return jnp.where((sigma >= low) & (sigma < high), model(x, sigma), exact(x, sigma))

    return score_fn


def band_rows(result, target, score_fns, variants, edges):
    """Far fraction and variance ratio with each variant's model on one band of levels only
    (the exact score elsewhere): which levels make the far samples."""
    bounds = [0.0, *edges, float("inf")]
    banded_fns = {
        f"{variant} on [{low:g}, {high:g})": banded(
            score_fns[variant], score_fns["exact"], low, high
        )
        for variant in variants
        for low, high in zip(bounds[:-1], bounds[1:])
    }
    banded_result = sweep.sweep(
        target,
        [sweep.sweep_sampler(name) for name in SAMPLERS],
        [NFE],
        banded_fns,
        n_samples=result.settings["n_samples"],
        seeds=(0, 1),
        known_floors=result.floors,
        **GRID,
    )
    rows = sweep.mean_rows(banded_result.rows)
    for row in rows:
        print(f"{row['sampler']} | {row['score']} | far {100 * row['far']:.2f}% | "
              f"var ratio {row['var_ratio']:.2f}")  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/edm_mixture"))
    parser.add_argument(
        "--variants",
        default="ncsn,edm",
        help=f"of {', '.join(VARIANTS)}; name@k trains with seeds k",
    )
    parser.add_argument(
        "--bands",
        default=None,
        help="sigma edges, e.g. 0.3,0.7,1.2,2.5: also sample with each model on one band only",
    )
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's 5000")
    parser.add_argument("--reuse", action="store_true", help="load runs already trained")
    parser.add_argument("--n-samples", type=int, default=3000)
    parser.add_argument(
        "--floor-repeats", type=int, default=5, help="exact pairs of the floors (the map's 5)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "edm_mixture.json")
    args = parser.parse_args()
    variants = args.variants.split(",")
    target = seed_mixture()
    score_fns = {"exact": ExactScore(target)}
    for variant in variants:
        score_fns[variant] = train_or_load(variant, args.runs, args.steps, args.reuse)
    result = sweep.sweep(
        target,
        [sweep.sweep_sampler(name) for name in SAMPLERS],
        [NFE],
        score_fns,
        n_samples=args.n_samples,
        seeds=(0, 1),
        floor_repeats=args.floor_repeats,
        **GRID,
    )
    fewest = sweep.fewest_nfe(result, "all")
    rows = sweep.mean_rows(result.rows)
    for row in rows:
        row["all"] = fewest[(row["sampler"], row["score"])] is not None
    header = "sampler | score | SW | MMD2 | TV | var ratio | far | all"
    print(header)
    for row in rows:
        print(
            f"{row['sampler']} | {row['score']} | {row['sw']:.3f} | {row['mmd2']:.2e} | "
            f"{row['tv']:.3f} | {row['var_ratio']:.2f} | {100 * row['far']:.1f}% | {row['all']}"
        )
    sigmas = sigma_grid(GRID["grid"], NFE, GRID["sigma_min"], GRID["sigma_max"], GRID["rho"])
    profiles = {
        variant: score_error_profile(jax.random.key(0), score_fns[variant], target, sigmas)
        for variant in variants
    }
    print("sigma | " + " | ".join(f"{v} rel. error (se)" for v in variants))
    for i, sigma in enumerate(sigmas):
        cells = [
            f"{p.relative_error[i]:.3g} ({p.standard_error[i]:.1g})" for p in profiles.values()
        ]
        print(f"{float(sigma):.3g} | " + " | ".join(cells))
    band_means = {
        v: float(p.relative_error[(p.sigmas >= BAND[0]) & (p.sigmas <= BAND[1])].mean())
        for v, p in profiles.items()
    }
    print(f"mean relative error over sigma {BAND[0]}-{BAND[1]}:", band_means)
    figure = viz.score_error_profile(
        {v: p[:3] for v, p in profiles.items()},
        title="Relative score error on the 20-level Karras grid (seed_mixture)",
    )
    viz.save_figure(figure, args.out.with_name(args.out.stem + "_score_error.png"))
    bands = None
    if args.bands:
        edges = [float(edge) for edge in args.bands.split(",")]
        bands = band_rows(result, target, score_fns, variants, edges)
    floors = {name: list(value) for name, value in result.floors.items()}
    print("floors (mean, sd):", floors)
    payload = {
        "benchmark": "edm_mixture",
        "machine": machine(),
        "nfe": NFE,
        "train": {v: dataclasses.asdict(config_of(v, args.steps).train) for v in variants},
        "configs": {v: config_of(v, args.steps).to_dict() for v in variants},
        "settings": result.settings,
        "floors": floors,
        "rows": rows,
        "per_seed": result.rows,
        "score_error": {v: p.to_dict() for v, p in profiles.items()},
        "score_error_band": {"band": list(BAND), "mean": band_means},
        "bands": bands,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
