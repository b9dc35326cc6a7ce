"""The U-Net both image benchmarks time: one ``UNet2DModel`` config, built by diffusers (torch)
and read into scorelab's :class:`~scorelab.diffusers.UNet2D` with the same weights.

A small grey-scale DDPM U-Net (1.1M parameters): three levels of 32, 64 and 64 channels, one
residual block per level, self-attention at the lowest level and in the middle block, as a
digits- or MNIST-sized model would be. ``sample_size`` is the only field that changes between
sizes; the weights do not depend on it.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import UNet2DModel

from scorelab.diffusers import UNet2D

CONFIG = {
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
    "attention_head_dim": 32,
}


def build(size: int, seed: int = 0) -> tuple[UNet2DModel, UNet2D]:
    """``(diffusers UNet2DModel, scorelab UNet2D)`` of :data:`CONFIG` at ``size`` pixels, the
    torch model initialised by diffusers under ``torch.manual_seed(seed)``, scorelab's read
    from its state dict."""
    config = {**CONFIG, "sample_size": size}
    torch.manual_seed(seed)
    reference = UNet2DModel(**config)
    tensors = {name: value.detach().numpy() for name, value in reference.state_dict().items()}
    return reference, UNet2D.from_weights(config, tensors)


def n_parameters(model: UNet2DModel) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Standard normal float32 array of ``shape`` (NumPy, the same for both frameworks)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
