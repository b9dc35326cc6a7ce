r"""The image demo's network: its last iterate against its EMA averages, by held-out loss.

Trains the U-Net of ``scorelab demo images`` exactly as the demo does (its configuration,
:meth:`scorelab.image_demo.ImageDemoSettings.experiment`, the same named keys ``init`` and
``train``, the 1437 training digits), but keeping an EMA of decay ``--ema`` (the demo's recipe
until session 11: 0.999), and scores three networks of that one trajectory on the 360 held-out
digits:

* ``last iterate``: the parameters after the last step (the cosine schedule ends at rate 0);
* ``EMA``: :math:`\bar\theta_T = \beta^T \theta_0 + \sum_{i=1}^T (1 - \beta) \beta^{T-i}
  \theta_i`, ``scorelab.training``'s average, which starts at the initial network and keeps
  the weight :math:`\beta^T` on it (0.999^2000 = 0.135);
* ``EMA, debiased``: :math:`(\bar\theta_T - \beta^T \theta_0) / (1 - \beta^T)`, the same
  exponential weights on the iterates renormalised, with no weight on :math:`\theta_0`
  (optax's ``ema(debias=True)``; the bias correction of Kingma & Ba 2015, Adam, Sec. 3,
  https://arxiv.org/abs/1412.6980).

Each network's loss :func:`scorelab.losses.vp_epsilon_loss` is taken per held-out image at
``--levels`` evenly spaced timesteps ``t = 0, T/L, ...`` with ``--draws`` noise draws each, the
same draws for every network (common random numbers): ``held-out loss`` is its mean (the
uniform-``t`` loss DDPM trains, on a systematic grid of ``t``), ``SE`` its standard error over
images, ``vs best`` the paired difference per image to the best network with its own standard
error (a difference beyond 2 of those is one the data resolve), and the last columns the loss
at the two lowest timesteps (sigma 0.010 and 0.095, where speckle comes from) and from
``t = 3T/4`` up.

    python benchmarks/image_demo_model.py [--quick] [--steps 2000] [--ema 0.999]
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _harness import parse_args, table, write

from scorelab import builders
from scorelab.data import digits
from scorelab.image_demo import ImageDemoSettings
from scorelab.losses import dsm_loss, ncsn_weighting
from scorelab.noise import vp_alpha_sigma, vp_alphas_cumprod
from scorelab.runs import named_key
from scorelab.samplers import ve_sigmas_from_vp
from scorelab.training import train


def per_level_losses(model, loss_config, images, levels: int, draws: int, key) -> np.ndarray:
    """Each image's epsilon loss at ``levels`` evenly spaced timesteps, ``(n, levels)``, the
    mean over ``draws`` noise draws; draw ``j`` at level ``l`` of image ``i`` uses the key
    ``split(fold_in(key, i), levels * draws)[l * draws + j]``."""
    config = loss_config
    alphas_cumprod = vp_alphas_cumprod(
        config.schedule, config.num_train_timesteps, config.beta_start, config.beta_end
    )
    # the VE levels vp_epsilon_loss trains at (its one VP conversion)
    sigmas = jnp.asarray(ve_sigmas_from_vp(*vp_alpha_sigma(alphas_cumprod)))
    timesteps = jnp.arange(levels) * (config.num_train_timesteps // levels)

    def loss(model, x_0, t, noise_key):
        # vp_epsilon_loss at a fixed t: dsm_loss at sigma_t, NCSN-weighted, over d
        weighted = dsm_loss(noise_key, model, x_0, sigma=sigmas[t], weighting_fn=ncsn_weighting)
        return weighted / x_0.size

    def per_image(model, x_0, index):
        keys = jax.random.split(jax.random.fold_in(key, index), levels * draws)
        keys = keys.reshape(levels, draws)
        at_level = jax.vmap(lambda t, k: jax.vmap(lambda kk: loss(model, x_0, t, kk))(k))
        return jnp.mean(at_level(timesteps, keys), axis=1)

    @eqx.filter_jit
    def every_image(model, images):
        indices = jnp.arange(images.shape[0])
        return jax.lax.map(lambda a: per_image(model, *a), (images, indices), batch_size=60)

    return np.asarray(every_image(model, jnp.asarray(images)))


def main() -> None:
    def extra(parser):
        parser.add_argument("--steps", type=int, default=None, help="training steps (the demo's)")
        parser.add_argument("--ema", type=float, default=0.999, help="the EMA decay kept")
        parser.add_argument("--levels", type=int, default=40, help="timesteps scored")
        parser.add_argument("--draws", type=int, default=2, help="noise draws per timestep")

    args = parse_args(__doc__.splitlines()[0], repeats=1, extra=extra)
    settings = ImageDemoSettings()
    config = settings.experiment()
    recipe = dataclasses.replace(config.train, ema_decay=args.ema)
    if args.steps is not None:
        recipe = dataclasses.replace(recipe, steps=args.steps)
    levels, draws = args.levels, args.draws
    train_x, _ = digits("train", size=settings.size)
    test_x, _ = digits("test", size=settings.size)
    if args.quick:
        recipe = dataclasses.replace(recipe, steps=4, warmup_steps=1, steps_per_dispatch=2)
        test_x, levels, draws = test_x[:8], 4, 1
    init_model, _ = builders.make_model(
        config.model, config.loss, train_x, named_key(settings.seed, "init")
    )
    loss_fn = builders.make_loss(config.loss, builders.data_scale(train_x))
    start = time.perf_counter()
    result = train(
        named_key(settings.seed, "train"), init_model, loss_fn, train_x, recipe, progress=False
    )
    seconds = time.perf_counter() - start
    weight = args.ema**recipe.steps  # on the initial network
    params = {
        name: eqx.filter(model, eqx.is_inexact_array)
        for name, model in {"init": init_model, "ema": result.ema_model}.items()
    }
    debiased = jax.tree.map(
        lambda ema, initial: (ema - weight * initial) / (1 - weight), params["ema"], params["init"]
    )
    networks = {
        "last iterate": result.model,
        f"EMA {args.ema}": result.ema_model,
        f"EMA {args.ema}, debiased": eqx.combine(debiased, result.ema_model),
    }
    losses = {
        name: per_level_losses(model, config.loss, test_x, levels, draws, jax.random.key(2))
        for name, model in networks.items()
    }
    best = min(losses, key=lambda name: losses[name].mean())
    rows, results = [], []
    n = len(test_x)
    for name, per in losses.items():
        difference = per.mean(axis=1) - losses[best].mean(axis=1)
        record = {
            "network": name,
            "held_out_loss": float(per.mean()),
            "held_out_se": float(per.mean(axis=1).std(ddof=1) / np.sqrt(n)),
            "minus_best": float(difference.mean()),
            "minus_best_se": float(difference.std(ddof=1) / np.sqrt(n)),
            "loss_by_level": per.mean(axis=0).tolist(),
        }
        results.append(record)
        rows.append(
            [
                name,
                record["held_out_loss"],
                record["held_out_se"],
                record["minus_best"],
                record["minus_best_se"],
                float(per[:, 0].mean()),
                float(per[:, 1].mean()),
                float(per[:, 3 * levels // 4 :].mean()),
            ]
        )
    print(
        f"{recipe.steps} steps ({seconds:.0f} s), EMA weight on the initial network "
        f"{weight:.3f}; {n} digits x {levels} timesteps x {draws} draws"
    )
    step = config.loss.num_train_timesteps // levels
    headers = ["network", "held-out loss", "SE", "vs best", "SE", "t=0", f"t={step}"]
    headers.append(f"t>={3 * levels // 4 * step}")
    print(table(headers, rows))
    payload = {"quick": args.quick, "train": recipe.to_dict(), "seconds": seconds}
    payload.update(levels=levels, draws=draws, results=results)
    write("image_demo_model", payload, args.out)


if __name__ == "__main__":
    main()
