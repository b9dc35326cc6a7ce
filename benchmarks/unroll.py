"""Why image training unrolls its loop and sampling need not: a U-Net in a loop body on XLA:CPU.

One gradient of the VP epsilon loss of the digits U-Net (``[model] name = "unet"``, batch 128,
8x8) timed three ways in one round, per step: at top level (one jitted gradient), as the body
of a ``lax.scan`` over ``K`` steps (what ``scorelab.training`` runs with ``unroll = false``),
and in the same scan unrolled into straight-line code (``unroll = true``). On a CPU the
rolled loop's convolutions leave XLA's fast path; ``TrainConfig.unroll`` exists for that.

The same network sampled: ``--nfe`` dependent calls of one jitted top-level forward of
``--sample-batch`` images (a run as long as a sampler's, so that a loaded machine's scheduler
treats both alike) beside :func:`scorelab.samplers.sample` (one ``lax.scan`` over the steps)
with DDIM (eta 0), Heun and DPM-Solver++(2M) at ``--nfe`` score evaluations, per evaluation.
A loop penalty would show as a sampler's evaluation costing more than a top-level forward;
the sampler's own arithmetic between evaluations is a few element-wise operations.

    python benchmarks/unroll.py [--quick] [--repeats 3] [--steps 5] [--channels 16,32]
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from _harness import interleaved, median, parse_args, table, timed, write

from scorelab import builders, samplers
from scorelab.config import ExperimentConfig
from scorelab.data import digits
from scorelab.noise import karras_sigmas

SAMPLERS = {"ddim": {"eta": 0.0}, "heun": {}, "dpmpp_2m": {}}


def main() -> None:
    def extra(parser):
        parser.add_argument("--steps", type=int, default=5, help="steps per scan (K)")
        parser.add_argument("--channels", default="16,32", help="U-Net channels per level")
        parser.add_argument("--batch", type=int, default=128)
        parser.add_argument("--sample-batch", type=int, default=64, help="images sampled")
        parser.add_argument("--nfe", type=int, default=10, help="score evaluations per sample")

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

    n_images, nfe = (4, 4) if args.quick else (args.sample_batch, args.nfe)
    x_T = 80.0 * jax.random.normal(jax.random.key(1), (n_images, *images.shape[1:]))
    forward = eqx.filter_jit(jax.vmap(lambda x: model(x, jnp.asarray(1.0))))

    def forwards():  # nfe dependent top-level calls: as long a run as a sampler's
        x = x_T
        for _ in range(nfe):
            x = forward(x)
        return x

    sampling = {"forward at top level": (forwards, nfe)}
    for name, options in SAMPLERS.items():
        levels = samplers.budget_levels(name, nfe)
        sampler = samplers.build_sampler(name, karras_sigmas(levels, 0.002, 80.0), **options)
        run = functools.partial(samplers.sample, jax.random.key(2), sampler, model, x_T)
        sampling[f"{sampler.name}, {sampler.nfe} NFE"] = (lambda run=run: run().x, sampler.nfe)
    for fn, _ in sampling.values():
        jax.block_until_ready(fn())
    samples = interleaved(
        {name: lambda fn=fn, k=k: timed(fn) / k for name, (fn, k) in sampling.items()},
        args.repeats,
    )
    per_nfe = {name: median(values) for name, values in samples.items()}
    base = per_nfe["forward at top level"]
    rows = [[name, 1e3 * value, value / base] for name, value in per_nfe.items()]
    print(f"sampling {n_images} images")
    print(table(["score evaluation", "ms / evaluation", "/ top level"], rows))
    results += [{"case": name, "seconds_per_nfe": value} for name, value in per_nfe.items()]
    payload = {"quick": args.quick, "channels": channels, "batch": batch, "results": results}
    write("unroll", {**payload, "sample_batch": n_images, "nfe": nfe}, args.out)


if __name__ == "__main__":
    main()
