"""The VP epsilon U-Net on scikit-learn's 8x8 digits: training recipes compared on a CPU budget.

Each recipe trains :class:`scorelab.diffusers.VPEpsilonUNet` with
:func:`scorelab.losses.vp_epsilon_loss` (DDPM's linear schedule, T = 1000) on the 1437
training digits (:func:`scorelab.data.digits`), then draws 360 samples with 50 deterministic
DDIM steps (:func:`scorelab.diffusers.sample`, as the exported ``DDIMPipeline`` would) and
compares them with the 360 held-out digits:

* ``mmd``: :func:`scorelab.metrics.mmd` (Gaussian kernel, median bandwidth) on the flat
  64-vectors, and its **floor**, the same between 360 training digits and the held-out ones;
* ``grid``: a PNG of the first 64 samples, to look at.

Reported per recipe: steps, wall seconds of training (compile included), steps/s, the final
loss (mean of the last 10% of steps) and the metrics.

    python benchmarks/unet_digits.py [--quick] [--steps 600] [--grids DIR]
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np
from _harness import parse_args, table, write
from jax.tree_util import Partial

from scorelab.data import digits
from scorelab.diffusers import VPEpsilonUNet, sample, to_images
from scorelab.losses import vp_epsilon_loss
from scorelab.metrics import mmd
from scorelab.training import TrainConfig, train
from scorelab.viz import save_image_grid

BATCH = 128


def recipes(steps: int) -> dict[str, tuple[dict, TrainConfig]]:
    """Name -> (network options, training configuration)."""
    small = {"channels": (16, 32)}
    base = {"steps": steps, "batch_size": BATCH, "steps_per_dispatch": 50, "log_every": 50}
    warm = max(1, steps // 20)
    return {
        "16-32 adam 1e-3 constant": (small, TrainConfig(learning_rate=1e-3, **base)),
        "16-32 adam 2e-3 warmup-cosine, EMA 0.99": (
            small,
            TrainConfig(
                learning_rate=2e-3,
                schedule="warmup_cosine",
                warmup_steps=warm,
                ema_decay=0.99,
                **base,
            ),
        ),
        "16-32 adam 5e-3 warmup-cosine, EMA 0.99": (
            small,
            TrainConfig(
                learning_rate=5e-3,
                schedule="warmup_cosine",
                warmup_steps=warm,
                ema_decay=0.99,
                **base,
            ),
        ),
        "32-64 attn@4 adam 2e-3 warmup-cosine, EMA 0.99": (
            {"channels": (32, 64), "attention_resolutions": (4,)},
            TrainConfig(
                learning_rate=2e-3,
                schedule="warmup_cosine",
                warmup_steps=warm,
                ema_decay=0.99,
                **{**base, "steps": max(2, steps // 4)},
            ),
        ),
    }


def main() -> None:
    def extra(parser):
        parser.add_argument("--steps", type=int, default=600, help="steps of the 16-32 recipes")
        parser.add_argument("--grids", type=Path, default=None, help="folder for sample PNGs")

    args = parse_args(__doc__.splitlines()[0], repeats=1, extra=extra)
    steps = 4 if args.quick else args.steps
    train_x, _ = digits("train", size=8)
    test_x, _ = digits("test", size=8)
    flat_test = test_x.reshape(len(test_x), -1)
    floor = mmd(train_x[: len(test_x)].reshape(len(test_x), -1), flat_test)
    rows, results = [], []
    for i, (name, (options, config)) in enumerate(recipes(steps).items()):
        model = VPEpsilonUNet(jax.random.key(0), train_x.shape[1:], **options)
        start = time.perf_counter()
        result = train(
            jax.random.key(1), model, Partial(vp_epsilon_loss), train_x, config, progress=False
        )
        seconds = time.perf_counter() - start
        trained = result.ema_model if result.ema_model is not None else result.model
        n = 16 if args.quick else len(test_x)
        x = sample(trained.network.unet, trained.scheduler, jax.random.key(2), n=n)
        images = np.clip(np.asarray(x), -1, 1)
        distance = mmd(images.reshape(n, -1), flat_test)
        if args.grids is not None:
            save_image_grid(to_images(x[:64]), args.grids / f"unet_digits_{i}.png", ncols=8)
        final_loss = float(np.mean(result.losses[-max(1, config.steps // 10) :]))
        rows.append([name, config.steps, seconds, config.steps / seconds, final_loss, distance])
        results.append(
            {
                "recipe": name,
                "options": {k: list(v) for k, v in options.items()},
                "train": {k: v for k, v in vars(config).items()},
                "steps": config.steps,
                "seconds": seconds,
                "steps_per_second": config.steps / seconds,
                "final_loss": final_loss,
                "mmd": distance,
            }
        )
        print(table(["recipe", "steps", "s", "steps/s", "loss", "MMD"], rows[-1:]), flush=True)
    print(f"MMD floor (360 training digits vs the 360 held out): {floor:.4g}")
    print(table(["recipe", "steps", "s", "steps/s", "loss", "MMD"], rows))
    write(
        "unet_digits",
        {"quick": args.quick, "batch": BATCH, "mmd_floor": floor, "results": results},
        args.out,
    )


if __name__ == "__main__":
    main()
