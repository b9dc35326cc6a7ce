"""The tutorial's CelebA-HQ sample: one 10-step DDIM sample at 256x256, scorelab against diffusers.

The network is ``google/ddpm-ema-celebahq-256``'s ``UNet2DModel`` (its ``config.json`` values
below) with random weights, since the real ones cannot be fetched here; weights do not change
the cost. diffusers builds and initialises it (torch seed 0) and scorelab reads the same state
dict, so both sample the same network:

* ``scorelab``: :func:`scorelab.diffusers.sample` (one jitted ``lax.scan``), compiled as the
  library compiles it (on a CPU, XLA's own convolutions: ``scorelab._xla_cpu``);
* ``diffusers tN``: ``DDIMPipeline(unet, scheduler)(batch_size=1, num_inference_steps=10,
  eta=1)`` with ``torch.set_num_threads(N)``; on a machine where JAX and torch both see a GPU,
  one case ``diffusers cuda`` instead (the pipeline on the GPU, its generator on the CPU so that
  its noise stays the one scorelab replays).

Cases run interleaved, each once per round (``_harness.interleaved``); medians over rounds.
scorelab's compile time (``lower`` + ``compile`` of the jitted sampler) is reported
separately. The first round also checks that both give the same sample: scorelab replays the
noise the pipeline draws from its generator.

    python benchmarks/pretrained_ddim.py [--quick] [--repeats 2] [--threads 1,2]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from _harness import interleaved, median, parse_args, table, timed, torch_device, write
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

from scorelab.diffusers import SchedulerConfig, UNet2D, sample
from scorelab.diffusers._pretrained import _ddim

# google/ddpm-ema-celebahq-256, unet/config.json (DDPM's 256x256 architecture, 114M parameters).
CELEBAHQ_UNET = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "center_input_sample": False,
    "down_block_types": [
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "AttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "time_embedding_type": "positional",
    "up_block_types": [
        "UpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
    ],
}
STEPS, ETA, SEED = 10, 1.0, 0


def main() -> None:
    def extra(parser):
        parser.add_argument("--threads", default="1,2", help="torch thread counts to time")

    args = parse_args(__doc__.splitlines()[0], repeats=2, extra=extra)
    device = torch_device()
    threads = [None] if device == "cuda" else [int(t) for t in args.threads.split(",")]
    size = 32 if args.quick else 256
    config = {**CELEBAHQ_UNET, "sample_size": size}

    torch.manual_seed(0)
    reference = UNet2DModel(**config).eval()
    scheduler = (
        DDIMScheduler()
    )  # the DDPMScheduler config of the hub repo, as DDIMPipeline reads it
    pipeline = DDIMPipeline(unet=reference, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    unet = UNet2D.from_weights(config, {k: v.numpy() for k, v in reference.state_dict().items()})
    n_parameters = sum(p.numel() for p in reference.parameters())
    pipeline.to(device)

    # The pipeline's noise: x_T, then one draw per step, from one generator.
    generator = torch.Generator().manual_seed(SEED)
    shape = (1, 3, size, size)
    x_T = torch.randn(shape, generator=generator).numpy()
    noise = np.stack([torch.randn(shape, generator=generator).numpy() for _ in range(STEPS)])
    key = jax.random.key(SEED)

    def run_scorelab():
        return sample(
            unet,
            SchedulerConfig(),
            key,
            num_inference_steps=STEPS,
            eta=ETA,
            x_T=x_T,
            step_noise=noise,
        )

    # Compile time, ahead of time: the jitted sampler behind sample(), lowered and compiled.
    start = time.perf_counter()
    _ddim.lower(unet, jnp.asarray(x_T), key, noise, SchedulerConfig(), STEPS, ETA, False).compile()
    compile_s = time.perf_counter() - start
    first = np.asarray(jax.block_until_ready(run_scorelab()))  # fills jit's cache

    def run_diffusers(n_threads):
        if n_threads is not None:
            torch.set_num_threads(n_threads)
        with torch.no_grad():
            return pipeline(
                batch_size=1,
                generator=torch.Generator().manual_seed(SEED),
                eta=ETA,
                num_inference_steps=STEPS,
                output_type="np",
            ).images

    images = run_diffusers(threads[0])
    ours = np.clip(first / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    max_difference = float(np.max(np.abs(ours - images)))

    cases = {"scorelab": lambda: timed(run_scorelab)}
    for n_threads in threads:
        name = "diffusers cuda" if n_threads is None else f"diffusers t{n_threads}"
        cases[name] = lambda n=n_threads: timed(lambda: run_diffusers(n))
    samples = interleaved(cases, args.repeats)
    medians = {name: median(values) for name, values in samples.items()}

    rows = [
        [name, medians[name], medians[name] / medians["scorelab"], len(samples[name])]
        for name in cases
    ]
    print(table(["case", "s per 10-step sample", "x scorelab", "rounds"], rows))
    print(f"scorelab compile (lower + compile): {compile_s:.1f} s")
    print(f"max |scorelab - diffusers| on the [0, 1] image: {max_difference:.2e}")
    write(
        "pretrained_ddim",
        {
            "size": size,
            "steps": STEPS,
            "eta": ETA,
            "batch": 1,
            "parameters": n_parameters,
            "seconds": samples,
            "median_seconds": medians,
            "scorelab_compile_seconds": compile_s,
            "max_abs_image_difference": max_difference,
            "torch_threads": threads,
            "torch_device": device,
            "jax_devices": [str(d) for d in jax.devices()],
        },
        args.out,
    )


if __name__ == "__main__":
    main()
