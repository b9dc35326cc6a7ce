"""Image training recipes compared: the digits U-Net's held-out VP epsilon loss at a fixed budget.

Each recipe trains the U-Net ``scorelab train`` builds for ``[model] name = "unet"`` (VP
epsilon prediction, :func:`scorelab.losses.vp_epsilon_loss`, DDPM's linear schedule) on the
1437 training digits (:func:`scorelab.data.digits`, 8x8) from the same initial weights and the
same batch keys, for the same number of steps, then scores the trained network (its EMA
average where the recipe keeps one) on the 360 held-out digits:

* ``held-out loss``: the mean of :func:`~scorelab.losses.vp_epsilon_loss` over every held-out
  image and ``--draws`` draws of ``(t, eps)`` per image. The draws are the same for every
  recipe (common random numbers), so recipes differ only by their networks;
* ``SE``: its standard error over images (each image's mean over its draws is one
  observation: the draws of one image are not independent of each other);
* ``vs best``: the paired difference to the recipe with the lowest loss, per image, and its
  standard error over images: a difference more than 2 SE from 0 is one the data resolve.

    python benchmarks/image_recipe.py [--quick] [--steps 300] [--draws 8] [--recipes 0,2]
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _harness import parse_args, table, write

from scorelab import builders
from scorelab.config import IMAGE_RECIPE, ExperimentConfig
from scorelab.data import digits
from scorelab.training import TrainConfig, train


def recipes(steps: int) -> dict[str, TrainConfig]:
    """Name -> training configuration; every field not named is ``config.IMAGE_RECIPE``'s.

    EMA decays are those whose averaging window, ``1 / (1 - decay)`` steps, fits the budget:
    EMA 0.9999 would leave ``0.9999 ** 300 = 0.97`` of its weight on the initial network.
    """
    # One step per dispatch: an unrolled dispatch compiles in time proportional to its steps,
    # and each recipe compiles its own (the result does not depend on it).
    base = {**IMAGE_RECIPE.to_dict(), "steps": steps, "steps_per_dispatch": 1}
    base["log_every"] = max(1, steps // 10)
    warm = {"schedule": "warmup_cosine", "warmup_steps": max(1, steps // 20)}
    return {
        name: TrainConfig(**{**base, **changes})
        for name, changes in {
            "adam 1e-3 constant": {"learning_rate": 1e-3},
            "adam 2e-4 constant": {"learning_rate": 2e-4},
            "adam 2e-3 warm-up + cosine, EMA 0.99": {
                "learning_rate": 2e-3,
                **warm,
                "ema_decay": 0.99,
            },
            "adam 1e-3 constant, EMA 0.99": {"learning_rate": 1e-3, "ema_decay": 0.99},
        }.items()
    }


def held_out_losses(model, loss_fn, images: np.ndarray, draws: int, key) -> np.ndarray:
    """Each held-out image's mean loss over ``draws`` fixed ``(t, eps)`` draws, ``(n,)``;
    draw ``j`` of image ``i`` uses ``fold_in(fold_in(key, i), j)``."""

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(len(images)))
    return np.asarray(_per_image(model, loss_fn, draws, jnp.asarray(images), keys))


@eqx.filter_jit
def _per_image(model, loss_fn, draws: int, images, keys):
    """Compiled once for every recipe (a function defined per call compiled per recipe)."""

    def one(x_0, image_key):
        draw_keys = jax.vmap(lambda j: jax.random.fold_in(image_key, j))(jnp.arange(draws))
        return jnp.mean(jax.vmap(lambda k: loss_fn(k, model, x_0))(draw_keys))

    return jax.vmap(one)(images, keys)


def main() -> None:
    def extra(parser):
        parser.add_argument("--steps", type=int, default=300, help="training steps per recipe")
        parser.add_argument("--draws", type=int, default=8, help="(t, eps) draws per image")
        parser.add_argument("--recipes", default=None, help="comma-separated indices (default all)")

    args = parse_args(__doc__.splitlines()[0], repeats=1, extra=extra)
    steps, draws = (4, 2) if args.quick else (args.steps, args.draws)
    model_table = {"name": "unet", **({"channels": [8, 16]} if args.quick else {})}
    config = ExperimentConfig.from_dict(
        {"data": {"source": "digits"}, "model": model_table, "loss": {"name": "vp_epsilon"}}
    )
    train_x, _ = digits("train")
    test_x, _ = digits("test")
    if args.quick:
        test_x = test_x[:16]
    model, _ = builders.make_model(config.model, config.loss, train_x, jax.random.key(0))
    loss_fn = builders.make_loss(config.loss)
    losses, results = {}, []
    chosen = list(recipes(steps).items())
    if args.recipes is not None:
        chosen = [chosen[int(i)] for i in args.recipes.split(",")]
    for name, recipe in chosen:
        start = time.perf_counter()
        result = train(jax.random.key(1), model, loss_fn, train_x, recipe, progress=False)
        seconds = time.perf_counter() - start
        trained = result.ema_model if result.ema_model is not None else result.model
        losses[name] = held_out_losses(trained, loss_fn, test_x, draws, jax.random.key(2))
        results.append(
            {
                "recipe": name,
                "train": recipe.to_dict(),
                "seconds": seconds,
                "final_train_loss": float(np.mean(result.losses[-max(1, steps // 10) :])),
                "held_out_loss": float(np.mean(losses[name])),
                "held_out_se": float(np.std(losses[name], ddof=1) / np.sqrt(len(test_x))),
                "held_out_per_image": losses[name].tolist(),
                "load_average_1min": open("/proc/loadavg").read().split()[0],
            }
        )
        print(f"{name}: {results[-1]}", flush=True)
    best = min(losses, key=lambda name: np.mean(losses[name]))
    rows = []
    for result in results:
        difference = losses[result["recipe"]] - losses[best]
        result["minus_best"] = float(np.mean(difference))
        result["minus_best_se"] = float(np.std(difference, ddof=1) / np.sqrt(len(test_x)))
        rows.append(
            [
                result["recipe"],
                result["final_train_loss"],
                result["held_out_loss"],
                result["held_out_se"],
                result["minus_best"],
                result["minus_best_se"],
                result["seconds"],
            ]
        )
    print(f"{steps} steps, batch {IMAGE_RECIPE.batch_size}, {len(test_x)} digits x {draws} draws")
    headers = ["recipe", "train loss", "held-out loss", "SE", "vs best", "SE", "s"]
    print(table(headers, rows))
    payload = {"quick": args.quick, "steps": steps, "draws": draws, "best": best}
    write("image_recipe", {**payload, "results": results}, args.out)


if __name__ == "__main__":
    main()
