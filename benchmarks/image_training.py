"""Image training: the same U-Net trained by scorelab and by diffusers with a torch AdamW loop.

The U-Net of ``_image_unet.py`` (1.1M parameters) at 16x16 and 32x32, batch 64, DDPM's
epsilon-prediction objective (Ho et al. 2020, eq. 14) on the linear schedule of 1000 steps:

* ``scorelab``: :func:`scorelab.training.train` (AdamW; ``--steps`` steps, ``--dispatch``
  unrolled steps per dispatch, ``TrainConfig.unroll`` on as ``scorelab train`` runs a U-Net;
  the batch drawn by index from the data set on the device) with the per-example loss
  :func:`epsilon_mse`; the network is scorelab's ``UNet2D`` called on one example;
* ``diffusers tN``: ``UNet2DModel`` with the same initial weights, ``torch.optim.AdamW``,
  the same loss written in torch, ``torch.set_num_threads(N)``; where JAX and torch both
  see a GPU, one case ``diffusers cuda`` instead (model, data and generator on the GPU).

Compilation is kept out of the timed rounds: one untimed ``train`` call of the same
configuration compiles it first (and one short untimed torch run warms torch's allocator and
AdamW state). Its wall time less the median timed run is reported as the compile time.
Compilation grows with the steps of a dispatch, because an unrolled dispatch is that many
copies of the U-Net's forward and backward pass in one program; so one step per dispatch is
the default: it compiles a single step, and each timed step still runs the same compiled
update (a dispatch adds one host synchronisation, far below a step's cost).
``--dispatch 5`` times ``config.IMAGE_RECIPE``'s dispatches instead.

Interleaved rounds (``_harness.interleaved``) time ``--steps`` steps of each case, the
compiled ``train`` call included whole (its device transfers too); reported: steps per second
(medians) and each case's speed over scorelab's. Data are standard normal images: their values
do not change the cost.

    python benchmarks/image_training.py [--quick] [--repeats 3] [--threads 1,2] [--steps 10]
        [--dispatch 1]

References:
    Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    https://arxiv.org/abs/2006.11239
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import torch
from _harness import (
    interleaved,
    median,
    parse_args,
    table,
    timed,
    torch_device,
    torch_label,
    torch_threads,
    use_torch_threads,
    write,
)
from _image_unet import CONFIG, build, n_parameters, noise

from scorelab.noise import vp_alphas_cumprod, vp_perturb
from scorelab.training import TrainConfig, train

BATCH, N_DATA, LEARNING_RATE = 64, 1024, 1e-4
ALPHAS_CUMPROD = vp_alphas_cumprod("linear", 1000)


def epsilon_mse(key, unet, x_0, *, alphas_cumprod, shape):
    r"""DDPM's simple loss of one flat example:
    :math:`\lVert \varepsilon_\theta(\sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t}
    \varepsilon, t) - \varepsilon \rVert^2 / D`, :math:`t \sim U\{0..T-1\}`,
    :math:`\varepsilon \sim N(0, I)`; ``x_0`` ``(C*H*W,)`` is reshaped to ``shape``."""
    t_key, eps_key = jax.random.split(key)
    t = jax.random.randint(t_key, (), 0, alphas_cumprod.shape[0])
    eps = jax.random.normal(eps_key, shape)
    x_t = vp_perturb(x_0.reshape(shape), alphas_cumprod[t], eps)
    return jnp.mean(jnp.square(unet(x_t[None], t[None])[0] - eps))


def loss_for(shape):
    """The per-example loss trained (``losses.vp_epsilon_loss`` replaces it when it lands)."""
    return functools.partial(epsilon_mse, alphas_cumprod=jnp.asarray(ALPHAS_CUMPROD), shape=shape)


def torch_steps(model, optimizer, data, alphas_cumprod, n_steps, n_threads, generator):
    """``n_steps`` AdamW steps of the same loss in torch, on ``data``'s device; returns the
    last loss on the CPU (which waits for the GPU's queued work)."""
    use_torch_threads(n_threads)
    device = data.device
    for _ in range(n_steps):
        x_0 = data[torch.randint(0, data.shape[0], (BATCH,), generator=generator, device=device)]
        t = torch.randint(0, alphas_cumprod.shape[0], (BATCH,), generator=generator, device=device)
        eps = torch.randn(x_0.shape, generator=generator, device=device)
        alpha_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = alpha_bar.sqrt() * x_0 + (1 - alpha_bar).sqrt() * eps
        loss = torch.nn.functional.mse_loss(model(x_t, t).sample, eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach().cpu()


def measure(size: int, steps: int, dispatch: int, threads: list[int | None], repeats: int) -> dict:
    """Every case at one image size; see the module docstring."""
    reference, unet = build(size)
    device = torch_device()
    reference.train().to(device)
    shape = (CONFIG["in_channels"], size, size)
    data = noise((N_DATA, *shape), seed=1)
    config = TrainConfig(
        steps=steps,
        learning_rate=LEARNING_RATE,
        optimizer="adamw",
        batch_size=BATCH,
        steps_per_dispatch=dispatch,
        # As `scorelab train` runs the U-Net (config.IMAGE_RECIPE): XLA:CPU runs a network's
        # gradient inside a loop body far slower than unrolled (benchmarks/unroll.py).
        unroll=True,
    )

    def run_scorelab():
        result = train(
            jax.random.key(0), unet, loss_for(shape), data.reshape(N_DATA, -1), config,
            progress=False,
        )  # fmt: skip
        return result.losses

    first_call_s = timed(run_scorelab)  # compiles: the same config, so the same program

    optimizer = torch.optim.AdamW(reference.parameters(), lr=LEARNING_RATE)
    data_torch = torch.from_numpy(data).to(device)
    alphas_torch = torch.from_numpy(ALPHAS_CUMPROD).to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def run_torch(n_threads):
        return torch_steps(
            reference, optimizer, data_torch, alphas_torch, steps, n_threads, generator
        )

    torch_steps(reference, optimizer, data_torch, alphas_torch, 2, threads[0], generator)
    cases = {"scorelab": lambda: steps / timed(run_scorelab)}
    for n in threads:
        cases[f"diffusers {torch_label(n)}"] = lambda n=n: steps / timed(lambda: run_torch(n))
    samples = interleaved(cases, repeats)
    return {
        "size": size,
        "parameters": n_parameters(reference),
        "steps_per_second": samples,
        "median_steps_per_second": {name: median(values) for name, values in samples.items()},
        "scorelab_dispatch": dispatch,
        "scorelab_first_call_seconds": first_call_s,
        "scorelab_compile_seconds": first_call_s - steps / median(samples["scorelab"]),
    }


def main() -> None:
    def extra(parser):
        parser.add_argument("--threads", default="1,2", help="torch thread counts to time")
        parser.add_argument("--steps", type=int, default=10, help="steps per timed run")
        parser.add_argument("--dispatch", type=int, default=1, help="scorelab steps per dispatch")

    args = parse_args(__doc__.splitlines()[0], repeats=3, extra=extra)
    threads = torch_threads(args.threads)
    sizes, steps = ([16], 2) if args.quick else ([16, 32], args.steps)
    results, rows = [], []
    for size in sizes:
        result = measure(size, steps, args.dispatch, threads, args.repeats)
        results.append(result)
        medians = result["median_steps_per_second"]
        for name, rate in medians.items():
            rows.append([f"{size}x{size}", name, rate, medians["scorelab"] / rate])
        print(
            f"{size}x{size}: scorelab's first call (compile + {steps} steps) "
            f"{result['scorelab_first_call_seconds']:.1f} s, compile "
            f"{result['scorelab_compile_seconds']:.1f} s",
            flush=True,
        )
    print(
        f"batch {BATCH}, {steps} steps per run in dispatches of {args.dispatch}, "
        f"{results[0]['parameters']} parameters"
    )
    print(table(["size", "case", "steps/s", "scorelab speed-up"], rows))
    write(
        "image_training",
        {
            "quick": args.quick,
            "batch": BATCH,
            "steps": steps,
            "dispatch": args.dispatch,
            "torch_threads": threads,
            "torch_device": torch_device(),
            "config": CONFIG,
            "results": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
