"""Why image training unrolls its dispatches: a U-Net's gradient inside a loop body on XLA:CPU.

One gradient of the VP epsilon loss of the digits U-Net (``[model] name = "unet"``, batch 128,
8x8) timed three ways in one round, per step: at top level (one jitted gradient), as the body
of a ``lax.scan`` over ``K`` steps (what ``scorelab.training`` runs with ``unroll = false``),
and in the same scan unrolled into straight-line code (``unroll = true``). On a CPU the
rolled loop's convolutions leave XLA's fast path; ``TrainConfig.unroll`` exists for that.

    python benchmarks/unroll.py [--quick] [--repeats 3] [--steps 5] [--channels 16,32]
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from _harness import interleaved, median, parse_args, table, timed, write

from scorelab import builders
from scorelab.config import ExperimentConfig
from scorelab.data import digits


def main() -> None:
    def extra(parser):
        parser.add_argument("--steps", type=int, default=5, help="steps per scan (K)")
        parser.add_argument("--channels", default="16,32", help="U-Net channels per level")
        parser.add_argument("--batch", type=int, default=128)

    args = parse_args(__doc__.splitlines()[0], repeats=3, extra=extra)
    channels = [int(c) for c in args.channels.split(",")]
    batch, steps = (8, 2) if args.quick else (args.batch, args.steps)
    config = ExperimentConfig.from_dict(
        {
            "data": {"source": "digits"},
            "model": {"name": "unet", "channels": channels},
            "loss": {"name": "vp_epsilon"},
        }
    )
    images, _ = digits("train")
    model, _ = builders.make_model(config.model, config.loss, images)
    loss_fn = builders.make_loss(config.loss)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    x = jnp.asarray(images[:batch])
    keys = jax.random.split(jax.random.key(0), batch)

    def loss(p):
        score_fn = eqx.combine(p, static)
        return jnp.mean(jax.vmap(lambda k, x_0: loss_fn(k, score_fn, x_0))(keys, x))

    grad = jax.grad(loss)

    def descend(p, _):
        return jax.tree.map(lambda a, g: a - 1e-3 * g, p, grad(p)), None

    runs = {
        "top level": (jax.jit(lambda p: descend(p, None)[0]), 1),
        f"lax.scan of {steps}": (
            jax.jit(lambda p: jax.lax.scan(descend, p, None, steps)[0]),
            steps,
        ),
        f"lax.scan of {steps}, unrolled": (
            jax.jit(lambda p: jax.lax.scan(descend, p, None, steps, unroll=True)[0]),
            steps,
        ),
    }
    for fn, _ in runs.values():
        jax.block_until_ready(fn(params))  # compile outside the clock

    def case(fn, k):
        return lambda: timed(lambda: fn(params)) / k

    samples = interleaved({name: case(*run) for name, run in runs.items()}, args.repeats)
    per_step = {name: median(values) for name, values in samples.items()}
    base = per_step["top level"]
    rows = [[name, 1e3 * value, value / base] for name, value in per_step.items()]
    print(table(["gradient step", "ms / step", "/ top level"], rows))
    results = [{"case": name, "seconds_per_step": value} for name, value in per_step.items()]
    payload = {"quick": args.quick, "channels": channels, "batch": batch, "results": results}
    write("unroll", payload, args.out)


if __name__ == "__main__":
    main()
