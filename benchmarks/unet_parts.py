"""Where a U-Net forward spends its time: scorelab's layers against torch's, one kind at a time.

The profile behind ``image_sampling.py``'s forward cases. One forward of the U-Net of
``_image_unet.py`` at ``--size`` pixels (batch ``--batch``) is recorded layer by layer: every
convolution, group norm and attention block with the input it received (scorelab's through
``jax.eval_shape``, torch's through forward hooks). Each kind is then timed alone, all its
layers of the forward in one call, on random inputs of the recorded shapes:

* ``scorelab``: the layers of ``UNet2D`` under one ``jax.jit`` per kind (convolutions as
  ``_Conv`` dispatches them: XLA's convolution, or im2col up to ``_IM2COL_MAX_PIXELS``
  output pixels), compiled with the options scorelab's image samplers use
  (``scorelab._xla_cpu.convolution_options``: on a CPU, XLA's convolutions, not YNNPACK's);
* ``torch tN``: the same modules of diffusers' ``UNet2DModel`` under ``no_grad`` with
  ``torch.set_num_threads(N)``.

``whole forward`` times the network itself, so the kinds' sum can be read against it (the
rest: SiLU, additions, the timestep MLP, resampling and concatenation). Interleaved rounds,
medians in milliseconds.

    python benchmarks/unet_parts.py [--quick] [--repeats 5] [--size 32] [--batch 16]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import torch
from _harness import interleaved, median, parse_args, table, timed, write
from _image_unet import CONFIG, build, noise
from diffusers.models.attention_processor import Attention

from scorelab._xla_cpu import convolution_options
from scorelab.diffusers import _unet

KINDS = {"convolution": _unet._Conv, "group norm": _unet._GroupNorm, "attention": _unet._Attention}
TORCH_KINDS = {
    "convolution": torch.nn.Conv2d,
    "group norm": torch.nn.GroupNorm,
    "attention": Attention,
}


def record_scorelab(unet, x, t) -> dict[str, list]:
    """``kind -> [(layer, input shape)]`` in call order, from one abstract forward."""
    calls: dict[str, list] = {kind: [] for kind in KINDS}
    originals = {kind: cls.__call__ for kind, cls in KINDS.items()}

    def recording(kind):
        def call(layer, h, *args):
            calls[kind].append((layer, h.shape))
            return originals[kind](layer, h, *args)

        return call

    try:
        for kind, cls in KINDS.items():
            cls.__call__ = recording(kind)
        jax.eval_shape(lambda x: unet(x, t), x)
    finally:
        for kind, cls in KINDS.items():
            cls.__call__ = originals[kind]
    return calls


def record_torch(model, x) -> dict[str, list]:
    """``kind -> [(module, input shape)]`` from one forward, by forward pre-hooks."""
    calls: dict[str, list] = {kind: [] for kind in TORCH_KINDS}
    handles = []
    for module in model.modules():
        for kind, cls in TORCH_KINDS.items():
            if isinstance(module, cls):
                handles.append(
                    module.register_forward_pre_hook(
                        lambda m, args, kind=kind: calls[kind].append((m, tuple(args[0].shape)))
                    )
                )
    with torch.no_grad():
        model(torch.from_numpy(x), 500)
    for handle in handles:
        handle.remove()
    # Attention's own group norm is recorded as a group norm too; keep it with attention.
    inner = {id(m.group_norm) for m, _ in calls["attention"] if m.group_norm is not None}
    calls["group norm"] = [(m, s) for m, s in calls["group norm"] if id(m) not in inner]
    return calls


def main() -> None:
    def extra(parser):
        parser.add_argument("--size", type=int, default=32, help="image size in pixels")
        parser.add_argument("--batch", type=int, default=16, help="images per forward")
        parser.add_argument("--threads", default="1,2", help="torch thread counts to time")

    args = parse_args(__doc__.splitlines()[0], repeats=5, extra=extra)
    size, batch = (16, 2) if args.quick else (args.size, args.batch)
    threads = [int(n) for n in args.threads.split(",")]
    reference, unet = build(size)
    reference.eval()
    x = noise((batch, CONFIG["in_channels"], size, size), seed=0)
    t = jnp.asarray(500)
    ours, theirs = record_scorelab(unet, jnp.asarray(x), t), record_torch(reference, x)

    cases = {}
    options = convolution_options()
    forward = jax.jit(lambda unet, x: unet(x, t), compiler_options=options)
    cases["whole forward: scorelab"] = (forward, (unet, jnp.asarray(x)))
    counts = {}
    for kind, layers in ours.items():
        # The attention blocks normalise internally; the group norms counted are the others.
        if kind == "group norm":
            inside = {id(a.group_norm) for a, _ in ours["attention"]}
            layers = [(layer, shape) for layer, shape in layers if id(layer) not in inside]
        inputs = [noise(shape, seed=i) for i, (_, shape) in enumerate(layers)]
        modules = [layer for layer, _ in layers]
        run = jax.jit(
            lambda modules, inputs: [m(h) for m, h in zip(modules, inputs)],
            compiler_options=options,
        )
        cases[f"{kind}: scorelab"] = (run, (modules, [jnp.asarray(h) for h in inputs]))
        counts[kind] = len(layers)
    for n in threads:
        cases[f"whole forward: torch t{n}"] = (reference, (torch.from_numpy(x), 500), n)
        for kind, layers in theirs.items():
            inputs = [torch.from_numpy(noise(shape, seed=i)) for i, (_, shape) in enumerate(layers)]
            cases[f"{kind}: torch t{n}"] = ([m for m, _ in layers], inputs, n)

    def case(spec):
        if len(spec) == 2:  # jax: (jitted function, arguments)
            function, arguments = spec
            jax.block_until_ready(function(*arguments))  # compile
            return lambda: timed(lambda: function(*arguments))
        target, inputs, n_threads = spec

        def run_torch():
            torch.set_num_threads(n_threads)
            with torch.no_grad():
                if isinstance(target, list):
                    return [m(h) for m, h in zip(target, inputs)]
                return target(*inputs).sample

        return lambda: timed(run_torch)

    samples = interleaved({name: case(spec) for name, spec in cases.items()}, args.repeats)
    ms = {name: 1e3 * median(values) for name, values in samples.items()}
    rows = []
    for kind in ["whole forward", *KINDS]:
        base = ms[f"{kind}: scorelab"]
        row = [kind, counts.get(kind, 1), base]
        row += [ms[f"{kind}: torch t{n}"] for n in threads]
        row += [base / ms[f"{kind}: torch t{n}"] for n in threads]
        rows.append(row)
    headers = ["layers", "count", "scorelab ms"]
    headers += [f"torch t{n} ms" for n in threads] + [f"scorelab / torch t{n}" for n in threads]
    print(f"{size}x{size}, batch {batch}")
    print(table(headers, rows))
    write(
        "unet_parts",
        {
            "quick": args.quick,
            "size": size,
            "batch": batch,
            "torch_threads": threads,
            "im2col_max_pixels": _unet._IM2COL_MAX_PIXELS,
            "results": [{"case": name, "ms": value} for name, value in ms.items()],
            "seconds": samples,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
