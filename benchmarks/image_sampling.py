"""Image sampling: scorelab's UNet2D against diffusers' ``DDIMPipeline``, per DDIM step.

The U-Net of ``_image_unet.py`` (1.1M parameters, random weights: weights do not change the
cost) at 16, 32 and 64 pixels, built by diffusers (torch seed 0) and read into scorelab from
its state dict, so both sample the same network. For each size, interleaved rounds
(``_harness.interleaved``) time:

* ``scorelab``: :func:`scorelab.diffusers.sample` (one jitted ``lax.scan`` over the steps),
  compiled as the library compiles it (on a CPU, XLA's own convolutions:
  ``scorelab._xla_cpu``);
* ``scorelab, XLA defaults``: the same call compiled with XLA:CPU's default options
  (convolutions in YNNPACK), as scorelab compiled it before session 14;
* ``diffusers tN``: ``DDIMPipeline(unet, scheduler)(batch_size=B, num_inference_steps=S,
  eta=0)`` with ``torch.set_num_threads(N)``; where JAX and torch both see a GPU, one case
  ``diffusers cuda`` instead (the pipeline on the GPU, its generator on the CPU so that its
  initial noise stays the one scorelab replays);
* ``forward`` cases: one network evaluation alone (scorelab's jitted ``unet(x, t)``, compiled
  both ways, torch's ``UNet2DModel(x, t)`` under ``no_grad``), the part of a step the sampler
  cannot change.

Reported: milliseconds per step (medians over rounds), each case's time over scorelab's, and
the largest difference between the two samples (scorelab replays the pipeline's initial
noise; eta = 0 draws no other) and between scorelab's two compilations. scorelab's compile
time is reported apart.

    python benchmarks/image_sampling.py [--quick] [--repeats 3] [--threads 1,2] [--batch 16]
"""

from __future__ import annotations

import time
from unittest import mock

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import torch
from _harness import (
    interleaved,
    median,
    parse_args,
    table,
    timed,
    torch_device,
    torch_label,
    torch_sync,
    torch_threads,
    use_torch_threads,
    write,
)
from _image_unet import CONFIG, build, n_parameters
from diffusers import DDIMPipeline, DDIMScheduler

from scorelab._xla_cpu import convolution_jit
from scorelab.diffusers import SchedulerConfig, _pretrained, sample

SEED = 0


def measure(size: int, batch: int, steps: int, threads: list[int | None], repeats: int) -> dict:
    """Every case at one image size; see the module docstring."""
    reference, unet = build(size)
    reference.eval()
    pipeline = DDIMPipeline(unet=reference, scheduler=DDIMScheduler())
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(torch_device())
    shape = (batch, CONFIG["in_channels"], size, size)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(SEED)).numpy()
    key = jax.random.key(SEED)

    def run_scorelab():
        return sample(unet, SchedulerConfig(), key, num_inference_steps=steps, x_T=x_T)

    xla_defaults = eqx.filter_jit(_pretrained._ddim.__wrapped__)

    def run_scorelab_defaults():
        with mock.patch.object(_pretrained, "_ddim", xla_defaults):
            return run_scorelab()

    def run_diffusers(n_threads):
        use_torch_threads(n_threads)
        with torch.no_grad():
            return pipeline(
                batch_size=batch,
                generator=torch.Generator().manual_seed(SEED),
                eta=0.0,
                num_inference_steps=steps,
                output_type="np",
            ).images

    start = time.perf_counter()
    ours = np.asarray(jax.block_until_ready(run_scorelab()))
    compile_s = time.perf_counter() - start
    theirs = run_diffusers(threads[0])
    ours = np.clip(ours / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    max_difference = float(np.max(np.abs(ours - theirs)))
    defaults = np.asarray(jax.block_until_ready(run_scorelab_defaults()))
    defaults = np.clip(defaults / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    compilations_difference = float(np.max(np.abs(ours - defaults)))

    def network(unet, x, t):
        return unet(x, t)

    forward, forward_defaults = convolution_jit(network), eqx.filter_jit(network)
    x_jax, t_jax, x_torch = (
        jnp.asarray(x_T),
        jnp.asarray(500),
        torch.from_numpy(x_T).to(torch_device()),
    )
    jax.block_until_ready((forward(unet, x_jax, t_jax), forward_defaults(unet, x_jax, t_jax)))

    def torch_forward(n_threads):
        use_torch_threads(n_threads)
        with torch.no_grad():
            return torch_sync(reference(x_torch, 500).sample)

    cases = {
        "scorelab": lambda: timed(run_scorelab) / steps,
        "scorelab, XLA defaults": lambda: timed(run_scorelab_defaults) / steps,
    }
    for n in threads:
        cases[f"diffusers {torch_label(n)}"] = lambda n=n: timed(lambda: run_diffusers(n)) / steps
    cases["forward scorelab"] = lambda: timed(lambda: forward(unet, x_jax, t_jax))
    cases["forward scorelab, XLA defaults"] = lambda: timed(
        lambda: forward_defaults(unet, x_jax, t_jax)
    )
    for n in threads:
        cases[f"forward torch {torch_label(n)}"] = lambda n=n: timed(lambda: torch_forward(n))
    samples = interleaved(cases, repeats)
    return {
        "size": size,
        "parameters": n_parameters(reference),
        "seconds": samples,
        "median_seconds": {name: median(values) for name, values in samples.items()},
        "scorelab_first_call_seconds": compile_s,
        "max_abs_image_difference": max_difference,
        "max_abs_difference_between_compilations": compilations_difference,
    }


def main() -> None:
    def extra(parser):
        parser.add_argument("--threads", default="1,2", help="torch thread counts to time")
        parser.add_argument("--batch", type=int, default=16, help="images per sample")
        parser.add_argument("--steps", type=int, default=10, help="DDIM steps per sample")

    args = parse_args(__doc__.splitlines()[0], repeats=3, extra=extra)
    threads = torch_threads(args.threads)
    sizes, batch, steps = ([16], 2, 2) if args.quick else ([16, 32, 64], args.batch, args.steps)
    results, rows = [], []
    for size in sizes:
        result = measure(size, batch, steps, threads, args.repeats)
        results.append(result)
        medians = result["median_seconds"]
        for name, seconds in medians.items():
            base = medians["forward scorelab" if name.startswith("forward") else "scorelab"]
            rows.append([f"{size}x{size}", name, 1e3 * seconds, seconds / base])
        print(
            f"{size}x{size}: first call (compile + run) {result['scorelab_first_call_seconds']:.1f}"
            f" s; max |scorelab - diffusers| on the [0, 1] image "
            f"{result['max_abs_image_difference']:.1e}; between scorelab's two compilations "
            f"{result['max_abs_difference_between_compilations']:.1e}",
            flush=True,
        )
    print(f"batch {batch}, {steps} DDIM steps (eta 0), {results[0]['parameters']} parameters")
    print(table(["size", "case", "ms per step", "x scorelab"], rows))
    write(
        "image_sampling",
        {
            "quick": args.quick,
            "batch": batch,
            "steps": steps,
            "torch_threads": threads,
            "torch_device": torch_device(),
            "config": CONFIG,
            "results": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
