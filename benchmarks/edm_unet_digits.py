"""EDM-preconditioned VE U-Net against the VP epsilon U-Net on 8x8 digits, at equal size and steps.

Both models are the same U-Net (:class:`scorelab.diffusers.UNetNetwork`, ``model.channels``
16-32, :data:`scorelab.config.IMAGE_RECIPE`'s Adam at 1e-3, batch 128, no EMA, with
``train.unroll`` on) trained for the same number of steps on the 1437 training digits:

* ``vp_epsilon``: DDPM's noise prediction on the linear schedule (T = 1000),
  :class:`scorelab.diffusers.VPEpsilonUNet`, sampled over the schedule's VE range
  [0.01, 157];
* ``edm``: EDM's preconditioning (:class:`scorelab.precond.EDMPreconditioned`,
  ``sigma_data`` the data's standard deviation) on the ``ncsn`` loss with EDM's weighting and
  log-normal sigmas (``P_mean = -1.2``, ``P_std = 1.2``) clipped to [0.002, 80], sampled over
  that range.

Each draws 360 samples with Heun at 20 score evaluations on a Karras grid (rho = 7) and is
measured by :func:`scorelab.workflows.evaluate_images` (what ``scorelab evaluate samples.npy
--data digits`` prints) against the digits, with the held-out floor.

    python benchmarks/edm_unet_digits.py [--quick] [--steps 600] [--runs DIR]
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import parse_args, table, write

from scorelab.config import IMAGE_RECIPE, ExperimentConfig
from scorelab.report import IMAGE_METRICS
from scorelab.workflows import evaluate_images, sample_run, train_run

SAMPLER = {"name": "heun", "nfe": 20, "grid": "karras", "rho": 7.0}
MODELS = {
    "vp_epsilon": ({"name": "unet"}, {"name": "vp_epsilon"}),
    "edm": (
        {"name": "unet", "preconditioning": "edm"},
        {
            "name": "ncsn",
            "weighting": "edm",
            "sigma_distribution": "lognormal",
            "p_mean": -1.2,
            "p_std": 1.2,
            "sigma_min": 0.002,
            "sigma_max": 80.0,
        },
    ),
}


def experiment(name: str, steps: int, steps_per_dispatch: int) -> ExperimentConfig:
    """The run ``name`` of :data:`MODELS` at ``steps`` steps of the image recipe, unrolled."""
    model, loss = MODELS[name]
    train = dataclasses.replace(
        IMAGE_RECIPE, steps=steps, unroll=True, steps_per_dispatch=steps_per_dispatch
    )
    return ExperimentConfig.from_dict(
        {
            "data": {"source": "digits"},
            "model": model,
            "loss": loss,
            "train": train.to_dict(),
            "sampler": SAMPLER,
        }
    )


def main() -> None:
    def extra(parser):
        parser.add_argument("--steps", type=int, default=600, help="training steps of each")
        parser.add_argument("--dispatch", type=int, default=5, help="train.steps_per_dispatch")
        parser.add_argument("--runs", type=Path, default=None, help="keep the run folders here")

    args = parse_args(__doc__.splitlines()[0], repeats=1, extra=extra)
    steps = 4 if args.quick else args.steps
    dispatch = 2 if args.quick else args.dispatch
    n = 16 if args.quick else 360
    runs = args.runs or Path(tempfile.mkdtemp(prefix="edm_unet_digits_"))
    rows, results, floors = [], [], None
    for name in MODELS:
        config = experiment(name, steps, dispatch)
        start = time.perf_counter()
        result = train_run(config, runs / name, overwrite=True, progress=False)
        seconds = time.perf_counter() - start
        drawn = sample_run(config, result.model, n, seed=0)
        report = evaluate_images(np.clip(drawn.x, -1.0, 1.0), floor_repeats=5, label=name)
        np.save(runs / name / "samples.npy", drawn.x)
        row = report.rows[0]
        floors = report.floors
        final_loss = float(np.mean(result.losses[-max(1, steps // 10) :]))
        rows.append([name, steps, seconds, final_loss, *[row[m] for m in IMAGE_METRICS]])
        results.append(
            {
                "model": name,
                "config": config.to_dict(),
                "train_seconds": seconds,
                "final_loss": final_loss,
                "nfe": drawn.nfe,
                "metrics": row,
            }
        )
        print(table(["model", "steps", "train s", "loss", *IMAGE_METRICS], rows[-1:]), flush=True)
    floor_row = ["floor (held out)", "", "", "", *[floors[m][0] for m in IMAGE_METRICS]]
    print(table(["model", "steps", "train s", "loss", *IMAGE_METRICS], [*rows, floor_row]))
    write(
        "edm_unet_digits",
        {"quick": args.quick, "sampler": SAMPLER, "floors": floors, "results": results},
        args.out,
    )


if __name__ == "__main__":
    main()
