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

    python benchmarks/convolutions.py [--quick] [--repeats 20]
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


def main():
    args = parse_args(__doc__.splitlines()[0], repeats=20)
    sizes = [(2, 16), (1, 16)] if args.quick else SIZES
    results, rows = [], []
    for size, channels in sizes:
        cases = cases_for(size, channels)
        for case in cases.values():
            case()  # warm-up
        samples = interleaved(cases, args.repeats)
        ms = {name: 1e3 * median(values) for name, values in samples.items()}
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
