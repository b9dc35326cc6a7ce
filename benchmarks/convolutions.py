"""Small convolutions: XLA's against one im2col matmul (``_unet._Conv``) and torch's.

A U-Net's deepest levels convolve a few pixels with many channels. For each size (the
CelebA-HQ U-Net's 3x3 convolutions at its levels of a 32x32 input, batch 1), three cases are
timed in interleaved rounds on the same input:

* ``xla``: ``_Conv.xla``, ``jax.lax.conv_general_dilated`` (NHWC, HWIO), what ``_Conv`` runs
  above ``unet._IM2COL_MAX_PIXELS`` output pixels and on accelerators;
* ``im2col``: ``_Conv.im2col``, its matmul path (``jnp.concatenate`` of the 9 shifted copies,
  one matmul), on every backend;
* ``torch``: ``torch.nn.functional.conv2d`` (NCHW) with torch's default threads, where torch
  is installed (the ``diffusers`` extra).

The table gives ms per convolution (medians) and the speed-up of ``im2col`` over ``xla``;
``scorelab.diffusers._unet._IM2COL_MAX_PIXELS`` is set from it.

``--gradient`` times training's side instead: the value and gradient (w.r.t. input and
kernel) of ``sum(sin(conv(x)))`` for the 3x3 convolutions of ``_image_unet.py``'s U-Net at
batch 64 (``xla``, ``im2col``, and ``_Conv`` itself, which on a CPU differentiates the matmul
above ``_unet._IM2COL_DERIVATIVE_MIN_CHANNELS`` output channels; ``torch``: the same in torch,
one thread), then the whole U-Net's loss gradient of ``image_training.py`` at 16x16 and
32x32 with that rule on (``_Conv``) and off (``xla``, XLA's convolution throughout above
``_IM2COL_MAX_PIXELS``).

    python benchmarks/convolutions.py [--quick] [--repeats 20] [--gradient]
"""

from __future__ import annotations

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
from _harness import interleaved, median, parse_args, table, timed, write

from scorelab.diffusers import _unet as unet

SIZES = [(32, 128), (16, 256), (8, 256), (4, 512), (2, 512), (1, 512)]  # (pixels per side, C)


def cases_for(size: int, channels: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, size, size, channels)).astype(np.float32)
    weight = (0.01 * rng.normal(size=(3, 3, channels, channels))).astype(np.float32)
    conv = unet._Conv(jnp.asarray(weight), jnp.zeros(channels), 1, ((1, 1), (1, 1)))
    x_jax = jnp.asarray(x)

    im2col = jax.jit(lambda x, conv: conv.im2col(x)).lower(x_jax, conv).compile()
    xla = jax.jit(lambda x, conv: conv.xla(x)).lower(x_jax, conv).compile()
    np.testing.assert_allclose(im2col(x_jax, conv), xla(x_jax, conv), rtol=1e-4, atol=1e-4)
    cases = {
        "xla": functools.partial(timed, functools.partial(xla, x_jax, conv)),
        "im2col": functools.partial(timed, functools.partial(im2col, x_jax, conv)),
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        w_torch = torch.from_numpy(weight.transpose(3, 2, 0, 1).copy())

        def run_torch():
            with torch.no_grad():
                return torch.nn.functional.conv2d(x_torch, w_torch, padding=1)

        cases["torch"] = functools.partial(timed, run_torch)
    return cases


GRADIENT_SIZES = [(16, 1, 32), (16, 32, 32), (16, 96, 32), (8, 64, 64), (32, 32, 32), (32, 96, 32)]
GRADIENT_SIZES += [(32, 32, 1)]  # (pixels per side, C_in, C_out); the last: conv_out


def gradient_cases_for(size: int, c_in: int, c_out: int) -> dict:
    """Value and gradient of ``sum(sin(conv(x)))``, batch 64, by each path."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, size, size, c_in)).astype(np.float32)
    weight = (0.1 * rng.normal(size=(3, 3, c_in, c_out))).astype(np.float32)
    bias = jnp.zeros(c_out)

    def gradient_of(apply):
        def loss(x, weight):
            return jnp.sum(jnp.sin(apply(unet._Conv(weight, bias, 1, ((1, 1), (1, 1))), x)))

        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return functools.partial(timed, functools.partial(compiled, jnp.asarray(x), weight))

    cases = {
        "xla": gradient_of(lambda conv, x: conv.xla(x)),
        "im2col": gradient_of(lambda conv, x: conv.im2col(x)),
        "_Conv": gradient_of(lambda conv, x: conv(x)),
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)
        x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
        w_torch = torch.from_numpy(weight.transpose(3, 2, 0, 1).copy()).requires_grad_()

        def run_torch():
            y = torch.nn.functional.conv2d(x_torch, w_torch, padding=1)
            torch.sin(y).sum().backward()

        cases["torch"] = functools.partial(timed, run_torch)
    return cases


def network_cases_for(size: int) -> dict:
    """The U-Net's batch-64 loss gradient of ``image_training.py``, the CPU rule on and off."""
    import equinox as eqx
    from _image_unet import CONFIG, build, noise
    from image_training import loss_for

    shape = (CONFIG["in_channels"], size, size)
    params, static = eqx.partition(build(size)[1], eqx.is_array)
    data = jnp.asarray(noise((64, *shape), seed=1)).reshape(64, -1)
    keys = jax.random.split(jax.random.key(0), 64)
    loss = loss_for(shape)

    def total(params):
        model = eqx.combine(params, static)
        return jnp.mean(jax.vmap(lambda key, x: loss(key, model, x))(keys, data))

    cases, rule = {}, unet._IM2COL_DERIVATIVE_MIN_CHANNELS
    for name, channels in [("_Conv", rule), ("xla", np.inf)]:
        unet._IM2COL_DERIVATIVE_MIN_CHANNELS = channels  # read when the gradient is traced
        compiled = jax.jit(jax.value_and_grad(total)).lower(params).compile()
        cases[name] = functools.partial(timed, functools.partial(compiled, params))
    unet._IM2COL_DERIVATIVE_MIN_CHANNELS = rule
    return cases


def timed_cases(cases: dict, repeats: int) -> dict:
    for case in cases.values():
        case()  # warm-up
    samples = interleaved(cases, repeats)
    return {name: 1e3 * median(values) for name, values in samples.items()}, samples


def gradients(args) -> None:
    sizes = [(8, 8, 8)] if args.quick else GRADIENT_SIZES
    results, rows = [], []
    for size, c_in, c_out in sizes:
        ms, samples = timed_cases(gradient_cases_for(size, c_in, c_out), args.repeats)
        results.append({"size": size, "c_in": c_in, "c_out": c_out, "ms": ms, "samples_s": samples})
        rows.append(
            [f"{c_in}->{c_out} at {size}x{size}", ms["xla"], ms["im2col"], ms["_Conv"]]
            + [ms.get("torch", "-"), ms["xla"] / ms["_Conv"]]
        )
    print(table(["convolution", "xla ms", "im2col ms", "_Conv ms", "torch ms", "speed-up"], rows))
    network = []
    for size in [] if args.quick else [16, 32]:
        ms, samples = timed_cases(network_cases_for(size), max(1, args.repeats // 4))
        network.append({"size": size, "ms": ms, "samples_s": samples})
        off, on = ms["xla"], ms["_Conv"]
        print(f"U-Net gradient, {size}x{size}, batch 64: rule off {off:.0f} ms, on {on:.0f} ms")
    payload = {"quick": args.quick, "repeats": args.repeats, "results": results}
    write("convolution_gradients", {**payload, "network": network}, args.out)


def main():
    def extra(parser):
        parser.add_argument("--gradient", action="store_true", help="time gradients instead")

    args = parse_args(__doc__.splitlines()[0], repeats=20, extra=extra)
    if args.gradient:
        return gradients(args)
    sizes = [(2, 16), (1, 16)] if args.quick else SIZES
    results, rows = [], []
    for size, channels in sizes:
        ms, samples = timed_cases(cases_for(size, channels), args.repeats)
        results.append({"size": size, "channels": channels, "ms": ms, "samples_s": samples})
        rows.append(
            [f"{size}x{size}", channels, ms["xla"], ms["im2col"], ms.get("torch", "-")]
            + [ms["xla"] / ms["im2col"]]
        )
    print(table(["input", "channels", "xla ms", "im2col ms", "torch ms", "im2col speed-up"], rows))
    write(
        "convolutions", {"quick": args.quick, "repeats": args.repeats, "results": results}, args.out
    )


if __name__ == "__main__":
    main()
