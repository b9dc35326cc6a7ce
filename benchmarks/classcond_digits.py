"""A class-conditional VP U-Net on scikit-learn's 8x8 digits: are class K's samples a K?

Trains ``scorelab train``'s image recipe (:data:`scorelab.config.IMAGE_RECIPE`: 600 Adam
steps at batch 128, the 16-32 U-Net) with ``model.num_classes = 10`` and label dropout 0.1
(classifier-free guidance training, Ho & Salimans 2022) on the 1437 training digits, then for
each class draws ``--n`` samples with DDIM at 20 score evaluations
(:func:`scorelab.workflows.sample_run`, as ``scorelab sample --class K`` does), at guidance
weights ``w`` = 0 (the conditional score itself) and 1 and 3, and classifies them with the
shipped digits classifier (:func:`scorelab.classifier.load_digits_classifier`).

Reported per guidance weight: the fraction of samples classified as the class they were drawn
for (overall and per class) and the classifier's mean top probability; the **reference** is the
same on the 360 held-out digits (the classifier's own accuracy on real digits).

    python benchmarks/classcond_digits.py [--quick] [--n 36] [--steps 600] [--grids DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import parse_args, table, write

from scorelab.classifier import classifier_outputs, load_digits_classifier
from scorelab.config import IMAGE_RECIPE, ExperimentConfig
from scorelab.data import digits
from scorelab.workflows import sample_run, save_sample_grid, train_run

GUIDANCE = (0.0, 1.0, 3.0)


def experiment(steps: int) -> ExperimentConfig:
    """The image recipe with a class-conditional U-Net and label dropout 0.1."""
    return ExperimentConfig.from_dict(
        {
            "data": {"source": "digits"},
            "model": {"name": "unet", "num_classes": 10},
            "loss": {"name": "vp_epsilon", "label_dropout": 0.1},
            # One step per dispatch: an unrolled dispatch compiles in time proportional to its
            # steps, and the trained network does not depend on it.
            "train": {**IMAGE_RECIPE.to_dict(), "steps": steps, "steps_per_dispatch": 1},
            "sampler": {"name": "ddim", "nfe": 20},
        }
    )


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float, list]:
    """(fraction classified as ``labels``, mean top probability, per-class fractions)."""
    hits = probabilities.argmax(1) == labels
    per_class = [float(hits[labels == k].mean()) for k in range(10)]
    return float(hits.mean()), float(probabilities.max(1).mean()), per_class


def main() -> None:
    def extra(parser):
        parser.add_argument("--n", type=int, default=36, help="samples per class")
        parser.add_argument("--steps", type=int, default=IMAGE_RECIPE.steps, help="Adam steps")
        parser.add_argument("--grids", type=Path, default=None, help="folder for sample PNGs")

    args = parse_args(__doc__.splitlines()[0], repeats=1, extra=extra)
    config = experiment(4 if args.quick else args.steps)
    n = 2 if args.quick else args.n
    classifier = load_digits_classifier()
    test_x, test_y = digits("test", size=8)
    reference = accuracy(classifier_outputs(classifier, test_x)[1], test_y)
    rows = [["held-out digits (reference)", reference[0], reference[1], *reference[2]]]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = train_run(config, Path(folder) / "run", progress=False)
        seconds = time.perf_counter() - start
    model = result.model
    for w in GUIDANCE:
        drawn = sample_run(config, model, n, seed=0, guidance=w)
        hit, confidence, per_class = accuracy(
            classifier_outputs(classifier, np.clip(drawn.x, -1, 1))[1], drawn.labels
        )
        rows.append([f"samples, guidance {w:g}", hit, confidence, *per_class])
        results.append(
            {"guidance": w, "accuracy": hit, "confidence": confidence, "per_class": per_class}
        )
        if args.grids is not None:
            save_sample_grid(
                drawn.x,
                args.grids / f"classcond_digits_w{w:g}.png",
                label=f"class-conditional U-Net, DDIM 20 NFE, guidance {w:g}",
                labels=drawn.labels,
            )
    headers = ["samples", "as drawn", "top prob", *map(str, range(10))]
    print(f"trained {config.train.steps} steps in {seconds:.0f} s (compile included)")
    print(table(headers, rows))
    write(
        "classcond_digits",
        {
            "quick": args.quick,
            "config": config.to_dict(),
            "n_per_class": n,
            "train_seconds": seconds,
            "final_loss": float(np.mean(result.losses[-max(1, config.train.steps // 10) :])),
            "reference": {
                "accuracy": reference[0],
                "confidence": reference[1],
                "per_class": reference[2],
            },
            "results": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
