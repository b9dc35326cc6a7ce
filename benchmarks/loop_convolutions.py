"""Where a U-Net's gradient loses its time inside a loop on XLA:CPU: convolution by convolution.

Issue 18: ``scorelab.training.train`` ran the 1.1M-parameter U-Net of ``_image_unet.py`` at
about 10 s per step (16x16, batch 64) against 0.6 s for the same gradient jitted at top level.
Each convolution kind of that U-Net's forward (input ``(64, S, S, C_in)``, NHWC, HWIO kernel) is
differentiated here, :math:`(x, w) \\mapsto \\nabla_{x, w} \\langle \\mathrm{conv}(x, w), g
\\rangle` (the input gradient and the weight gradient, the two convolutions of its backward
pass), and timed two ways in interleaved rounds:

* ``top level``: one jitted gradient;
* ``loop body``: the same gradient as the body of a one-trip ``lax.scan`` (what
  ``lax.scan(..., unroll=True)`` of length 1 emits, and what ``train`` ran for a U-Net in
  dispatches of one step before ``training._run_slots``).

Beside the times, the dimension labels XLA compiled each backward convolution to (read from the
optimised HLO): at top level XLA:CPU rewrites JAX's transposed convolutions (``b01f_01oi``,
``f01b_i01o``) into the canonical ``b01f_01io`` its fast libraries (YNNPACK, Eigen) take; in a
loop body it leaves them, and they run on its generic emitter. ``--network`` adds the whole
U-Net's gradient (batch 64 at 16x16; compiling it twice takes minutes on two cores).

    python benchmarks/loop_convolutions.py [--quick] [--repeats 3] [--network]
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from _harness import interleaved, median, parse_args, table, timed, write

BATCH = 64
# (name, pixels per side of the input, C_in, C_out, kernel, stride): every convolution kind of
# _image_unet.py at 16x16 that XLA runs as a convolution (4x4 and below are matmuls, _unet._Conv)
LAYERS = [
    ("conv_in 1->32", 16, 1, 32, 3, 1),
    ("3x3 32->32 at 16", 16, 32, 32, 3, 1),
    ("3x3 96->32 at 16 (up)", 16, 96, 32, 3, 1),
    ("1x1 96->32 at 16 (shortcut)", 16, 96, 32, 1, 1),
    ("3x3 32->32 stride 2 (down)", 16, 32, 32, 3, 2),
    ("3x3 64->64 at 8", 8, 64, 64, 3, 1),
    ("conv_out 32->1", 16, 32, 1, 3, 1),
]


def conv(x, w, stride):
    pad = w.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def in_loop(fn):
    """``fn`` as the body of a one-trip ``lax.scan`` (a ``while`` loop in the program)."""

    def looped(*args):
        return jax.lax.scan(lambda carry, _: (carry, fn(*args)), 0, None, length=1)[1]

    return looped


def backward_labels(jitted, *args) -> list[str]:
    """Dimension labels of the convolutions of the compiled program that are not forward ones
    (``b01f_01io`` with no dilation), with the window's dilation when there is one."""
    text = jitted.lower(*args).compile().as_text()
    found = re.findall(r"convolution\([^)]*\), window=\{([^}]*)\}, dim_labels=(\S+?),", text)
    return [
        labels + (" lhs_dilate" if "lhs_dilate" in window else "")
        for window, labels in found
        if not labels.startswith("b01f_01io->") or "dilate" in window
    ]


def layer_cases(size, c_in, c_out, kernel, stride):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((BATCH, size, size, c_in), dtype=np.float32))
    w = jnp.asarray(0.1 * rng.standard_normal((kernel, kernel, c_in, c_out), dtype=np.float32))
    g = jnp.asarray(rng.standard_normal(conv(x, w, stride).shape, dtype=np.float32))

    def gradient(x, w):
        return jax.grad(lambda x, w: jnp.vdot(conv(x, w, stride), g), argnums=(0, 1))(x, w)

    return {"top level": jax.jit(gradient), "loop body": jax.jit(in_loop(gradient))}, (x, w)


def network_cases():
    import sys
    from pathlib import Path

    import equinox as eqx

    sys.path.insert(0, str(Path(__file__).parent))
    from _image_unet import build, noise
    from image_training import loss_for

    _, unet = build(16)
    shape = (1, 16, 16)
    loss_fn = loss_for(shape)
    params, static = eqx.partition(unet, eqx.is_inexact_array)
    x = jnp.asarray(noise((BATCH, 16 * 16), seed=1))
    keys = jax.random.split(jax.random.key(0), BATCH)

    def loss(params):
        model = eqx.combine(params, static)
        return jnp.mean(jax.vmap(lambda key, x_0: loss_fn(key, model, x_0))(keys, x))

    def gradient(params):
        return jax.value_and_grad(loss)(params)

    return {"top level": jax.jit(gradient), "loop body": jax.jit(in_loop(gradient))}, (params,)


def main() -> None:
    def extra(parser):
        parser.add_argument("--network", action="store_true", help="the whole U-Net too")

    args = parse_args(__doc__.splitlines()[0], repeats=3, extra=extra)
    layers = LAYERS[:2] if args.quick else LAYERS
    built = {name: layer_cases(*spec) for name, *spec in layers}
    if args.network and not args.quick:
        built["whole U-Net, value_and_grad"] = network_cases()
    results, rows, cases = {}, [], {}
    for name, (fns, inputs) in built.items():
        results[name] = {"labels": {}}
        for where, fn in fns.items():
            results[name]["labels"][where] = backward_labels(fn, *inputs)
            jax.block_until_ready(fn(*inputs))
            cases[f"{name} | {where}"] = lambda fn=fn, inputs=inputs: timed(lambda: fn(*inputs))
    samples = interleaved(cases, args.repeats)
    for name in built:
        top, loop = (median(samples[f"{name} | {where}"]) for where in ("top level", "loop body"))
        results[name].update(top_level_seconds=top, loop_body_seconds=loop)
        labels = results[name]["labels"]
        rows.append(
            [
                name,
                1e3 * top,
                1e3 * loop,
                loop / top,
                ", ".join(labels["top level"]) or "-",
                ", ".join(labels["loop body"]) or "-",
            ]
        )
    print(f"batch {BATCH}, gradient w.r.t. input and weight, medians of {args.repeats} rounds")
    headers = ["convolution", "top level ms", "loop body ms", "loop / top", "left at top level",
               "left in loop body"]  # fmt: skip
    print(table(headers, rows))
    write("loop_convolutions", {"quick": args.quick, "batch": BATCH, "results": results}, args.out)


if __name__ == "__main__":
    main()
