"""Make the tiny diffusers pipeline fixture and the golden arrays scorelab's tests compare with.

Needs the ``diffusers`` extra (torch). Run from the repository root:

    python scripts/make_pretrained_fixture.py

Writes

* ``tests/fixtures/tiny_ddpm/``: a ``DDIMPipeline`` folder (``model_index.json``, ``unet/``,
  ``scheduler/``) with a random-weight ``UNet2DModel`` of the DDPM block family (DownBlock2D,
  AttnDownBlock2D, UpBlock2D, AttnUpBlock2D, UNetMidBlock2D; DDPM's own options:
  ``flip_sin_to_cos=False``, ``freq_shift=1``, ``downsample_padding=0``, ``norm_eps=1e-6``),
  16x16 RGB. Its GroupNorm affines (initialised to exactly 1 and 0) are perturbed so that
  every parameter matters to the output.
* ``tests/fixtures/tiny_ddpm_golden/``: U-Net inputs and outputs at timesteps 999, 500 and 0;
  the initial and step noise; 10-step DDIM samples with eta = 0 and eta = 1 from that noise
  (diffusers' ``DDIMScheduler.step`` with ``variance_noise``), in model space.
* ``tests/fixtures/vp_schedules/``: diffusers' betas and alphas_cumprod of the three VP
  schedules (1000 steps).
"""

from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
PIPELINE, GOLDEN, SCHEDULES = ROOT / "tiny_ddpm", ROOT / "tiny_ddpm_golden", ROOT / "vp_schedules"

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    attention_head_dim=8,  # two heads at 16 channels, four in the 32-channel middle
    norm_num_groups=4,
    norm_eps=1e-6,
    flip_sin_to_cos=False,
    freq_shift=1,
    downsample_padding=0,
)
TIMESTEPS = (999, 500, 0)
BATCH, STEPS = 2, 10


def make_unet() -> UNet2DModel:
    torch.manual_seed(0)
    unet = UNet2DModel(**UNET_CONFIG).eval()
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "norm" in name:  # GroupNorm weight == 1, bias == 0 at initialisation
                parameter.add_(0.2 * torch.randn_like(parameter))
    return unet


def ddim_loop(unet, scheduler, x_T, noise, eta):
    """DDIMPipeline's loop, with the step noise injected instead of drawn."""
    scheduler.set_timesteps(STEPS)
    x = torch.from_numpy(x_T)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            model_output = unet(x, t).sample
            x = scheduler.step(
                model_output, t, x, eta=eta, variance_noise=torch.from_numpy(noise[i])
            ).prev_sample
    return x.numpy()


def main() -> None:
    torch.set_num_threads(1)
    unet, scheduler = make_unet(), DDIMScheduler()
    DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(PIPELINE)

    GOLDEN.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (BATCH, 3, 16, 16)
    x = rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        outputs = [unet(torch.from_numpy(x), t).sample.numpy() for t in TIMESTEPS]
    x_T = rng.standard_normal(shape).astype(np.float32)
    noise = rng.standard_normal((STEPS, *shape)).astype(np.float32)
    arrays = {
        "unet_input": x,
        "unet_timesteps": np.array(TIMESTEPS, np.int64),
        "unet_output": np.stack(outputs),
        "x_T": x_T,
        "step_noise": noise,
        "ddim_eta0": ddim_loop(unet, scheduler, x_T, noise, 0.0),
        "ddim_eta1": ddim_loop(unet, scheduler, x_T, noise, 1.0),
    }
    for name, array in arrays.items():
        np.save(GOLDEN / f"{name}.npy", array)

    SCHEDULES.mkdir(parents=True, exist_ok=True)
    for schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        reference = DDIMScheduler(beta_schedule=schedule)
        np.save(SCHEDULES / f"{schedule}_betas.npy", reference.betas.numpy())
        np.save(SCHEDULES / f"{schedule}_alphas_cumprod.npy", reference.alphas_cumprod.numpy())


if __name__ == "__main__":
    main()
