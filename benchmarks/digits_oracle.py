"""The 64-D oracle table: image metrics of exact digits_mixture samples and of ODE samplers.

Two floors, because two laws are involved:

* the **data floor**: the image metrics between the digits' held-out split and equal-size
  subsets of its training split (:func:`scorelab.report.image_evaluation`, 360 images, the
  held-out size). It is what a perfect sampler *of the digits* scores.
* the **mixture floor**: the same metrics between two independent exact sample sets of
  ``digits_mixture`` (clipped to [-1, 1] like every image judged). It is what a perfect
  sampler *of the mixture* scores, and the floor a sampler driven by the mixture's exact score
  must reach.

``digits_mixture`` is a Gaussian mixture fitted to all 1797 digits: its exact samples follow
the mixture, not the digits, so against the training images they show the mixture's own
distance from the data (a model error that no sampler can remove), and only against exact
samples of the mixture do they sit at a floor by construction. Part 1 prints both; part 2
runs every ODE sampler at the sampler-map budgets (the "all" column of docs/benchmarks.md on
the 2-D mixture: Euler 80, Heun 19, EDM 39, DPM-Solver++(2M) 20; each sampler at all four, and
Tsit5 at rtol = atol = 1e-3)
with the exact score (:class:`scorelab.models.ExactScore`) through :func:`scorelab.sweep.sweep`
with ``image_metrics=True`` and reads each metric against the mixture floor.

    python benchmarks/digits_oracle.py --n 500 --seeds 0,1 --repeats 10 \
        --out benchmarks/results/digits_oracle.json
    python benchmarks/digits_oracle.py --n 500 --seeds 2,3,4,5,6,7,8,9 --repeats 10 \
        --samplers dpmpp_2m --nfe 40 --out benchmarks/results/digits_oracle_dpmpp_2m.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from scorelab.classifier import load_digits_classifier
from scorelab.data import digits
from scorelab.models import ExactScore
from scorelab.report import IMAGE_METRICS, image_evaluation
from scorelab.sweep import IMAGE_METRICS as SWEEP_METRICS
from scorelab.sweep import mean_rows, sweep, sweep_sampler
from scorelab.targets import digits_mixture

BUDGETS = {"euler": 80, "heun": 19, "edm": 39, "dpmpp_2m": 20}


def _z(value: float, floor: tuple[float, float]) -> float:
    mean, sd = floor
    return (value - mean) / sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per sampler run and floor set")
    parser.add_argument("--seeds", default="0,1,2", help="sampler seeds")
    parser.add_argument("--repeats", type=int, default=10, help="pairs of each floor")
    parser.add_argument(
        "--samplers", default="euler,heun,edm,dpmpp_2m,tsit5", help="which ODE samplers"
    )
    parser.add_argument("--nfe", help="NFE budgets (default: the map budgets)")
    parser.add_argument("--out", type=Path, help="JSON output")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    start = time.perf_counter()
    target = digits_mixture()
    train, _ = digits("train")
    held_out, _ = digits("test")

    # Part 1: exact mixture samples against the data, beside the data floor.
    exact = np.clip(np.asarray(target.sample(jax.random.key(100), len(held_out))), -1, 1)
    (exact_row,), data_floor = image_evaluation(
        [exact.reshape(-1, 1, 8, 8)],
        train,
        held_out,
        load_digits_classifier(),
        jax.random.key(0),
        args.repeats,
    )
    print(f"Part 1: {len(held_out)} images, {args.repeats} repeats")
    print("| metric | data floor (held-out vs train) | exact digits_mixture vs train |")
    print("|---|---|---|")
    for name in IMAGE_METRICS:
        mean, sd = data_floor[name]
        print(f"| {name} | {mean:.4g} +- {sd:.2g} | {exact_row[name]:.4g} |")

    # Part 2: every ODE sampler at its map budget with the exact score, against exact samples.
    names = args.samplers.split(",")
    specs = [sweep_sampler(name) for name in names if name != "tsit5"]
    if "tsit5" in names:
        specs.append(sweep_sampler("tsit5", rtol=1e-3, atol=1e-3))
    budgets = [int(n) for n in args.nfe.split(",")] if args.nfe else sorted(set(BUDGETS.values()))
    result = sweep(
        target,
        specs,
        budgets,
        {"exact": ExactScore(target)},
        n_samples=args.n,
        seeds=seeds,
        floor_repeats=args.repeats,
        image_metrics=True,
    )
    kept = mean_rows(result.rows)
    print(f"\nPart 2: {args.n} samples, seeds {seeds}; mixture floor over {args.repeats} pairs")
    header = " | ".join(SWEEP_METRICS)
    print(f"| sampler | NFE | {header} |")
    print("|---" * (len(SWEEP_METRICS) + 2) + "|")
    floor_cells = " | ".join(
        f"{result.floors[m][0]:.4g} +- {result.floors[m][1]:.2g}" for m in SWEEP_METRICS
    )
    print(f"| mixture floor (exact vs exact) | - | {floor_cells} |")
    for row in kept:
        cells = " | ".join(
            f"{row[m]:.4g} ({_z(row[m], result.floors[m]):+.1f} sd)" for m in SWEEP_METRICS
        )
        print(f"| {row['sampler']} | {row['nfe']} | {cells} |")
    seconds = time.perf_counter() - start
    print(f"\n{seconds:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "settings": {**result.settings, "budgets": BUDGETS, "held_out": len(held_out)},
            "data_floor": data_floor,
            "exact_vs_train": exact_row,
            "mixture_floor": {m: result.floors[m] for m in SWEEP_METRICS},
            "samplers": kept,
            "seconds": seconds,
        }
        args.out.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
