"""The image demo's training with the CPU convolution rule on and off, in one process.

``scorelab.diffusers._unet._Conv`` differentiates convolutions of at least
``_IM2COL_DERIVATIVE_MIN_CHANNELS`` output channels as matmuls on a CPU (XLA:CPU's convolution
gradients are slow; ``convolutions.py --gradient`` times the layers). This benchmark asks what
that is worth where it matters most to a new user, ``scorelab demo images``: the demo's own
network, data, loss and training configuration (:class:`scorelab.image_demo.ImageDemoSettings`,
5 unrolled steps per dispatch) for ``--steps`` steps (warm-up shortened to fit), alternately
with the rule on (``rule``) and off (``xla``: XLA's convolution gradients, as before session
13). Each case clears JAX's caches, so the rule is read when the step is traced, then runs
:func:`scorelab.training.train` three times: the first call compiles, the other two are
timed; rounds alternate the cases. Reported: seconds per timed call (medians), the
compile time (first call less a timed one), and the last loss of each case.

    python benchmarks/image_demo_training.py [--quick] [--repeats 2] [--steps 20]
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from _harness import median, parse_args, table, timed, write

from scorelab import builders
from scorelab.diffusers import _unet as unet
from scorelab.image_demo import ImageDemoSettings
from scorelab.training import train

CASES = {"rule": unet._IM2COL_DERIVATIVE_MIN_CHANNELS, "xla": np.inf}


def main() -> None:
    def extra(parser):
        parser.add_argument("--steps", type=int, default=20, help="training steps per call")

    args = parse_args(__doc__.splitlines()[0], repeats=2, extra=extra)
    settings = ImageDemoSettings()
    config = settings.experiment()
    data = builders.make_image_data(config.data).images
    model, _ = builders.make_model(config.model, config.loss, data, jax.random.key(0))
    loss = builders.make_loss(config.loss, builders.data_scale(data), None)
    steps = 2 if args.quick else args.steps
    train_config = dataclasses.replace(
        config.train,
        steps=steps,
        warmup_steps=1,
        steps_per_dispatch=1 if args.quick else config.train.steps_per_dispatch,
    )

    seconds = {name: [] for name in CASES}
    compile_s = {name: [] for name in CASES}
    last_loss = {}

    def call(name):
        losses = train(jax.random.key(1), model, loss, data, train_config, progress=False).losses
        last_loss[name] = float(np.asarray(losses)[-1])
        return losses

    for _ in range(args.repeats):
        for name, channels in CASES.items():
            jax.clear_caches()
            unet._IM2COL_DERIVATIVE_MIN_CHANNELS = channels  # read when the step is traced
            run = functools.partial(call, name)
            first = timed(run)
            runs = [timed(run) for _ in range(2)]
            seconds[name] += runs
            compile_s[name].append(first - median(runs))
    unet._IM2COL_DERIVATIVE_MIN_CHANNELS = CASES["rule"]
    rows = [
        [name, median(seconds[name]), median(compile_s[name]), last_loss[name]]
        + [median(seconds["xla"]) / median(seconds[name])]
        for name in CASES
    ]
    print(f"the image demo's training, {steps} steps per call, dispatches of "
          f"{train_config.steps_per_dispatch}")  # fmt: skip
    print(table(["case", "s per call", "compile s", "last loss", "speed-up over xla"], rows))
    write(
        "image_demo_training",
        {
            "quick": args.quick,
            "repeats": args.repeats,
            "steps": steps,
            "steps_per_dispatch": train_config.steps_per_dispatch,
            "results": [
                {
                    "case": name,
                    "seconds": seconds[name],
                    "compile_seconds": compile_s[name],
                    "last_loss": last_loss[name],
                }
                for name in CASES
            ],
        },  # fmt: skip
        args.out,
    )


if __name__ == "__main__":
    main()
