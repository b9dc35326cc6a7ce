r"""Sample pretrained diffusers DDPM-family pipelines natively in JAX (``scorelab pretrained``).

The founding tutorial ends with ``DDIMPipeline.from_pretrained("google/ddpm-ema-celebahq-256")``
sampled in 10 steps with eta = 1 and eta = 0. This module does the same without PyTorch: it
resolves a pipeline folder (or a hub id already in the local Hugging Face cache, offline),
loads the U-Net with :func:`scorelab.unet.load_unet` and the scheduler options with
:meth:`scorelab.schedulers.SchedulerConfig.from_diffusers`, runs
:func:`scorelab.schedulers.ddim_sample` under one ``jit``, and writes a PNG grid.
:func:`diffusers_sample` runs diffusers' own components for comparison (the ``diffusers``
extra).

References:
    Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
    https://arxiv.org/abs/2010.02502
    Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    https://arxiv.org/abs/2006.11239
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab.schedulers import SchedulerConfig, ddim_sample
from scorelab.unet import UNet2D, load_unet, unet_folder

__all__ = [
    "resolve_pipeline",
    "load_scheduler_config",
    "load_pipeline",
    "sample",
    "diffusers_sample",
    "to_images",
    "save_grid",
    "run",
]

SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"


def _hub_cache() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub`` (huggingface_hub's own order)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def resolve_pipeline(path_or_id: str | os.PathLike, revision: str = "main") -> Path:
    """A local folder for ``path_or_id``, never touching the network.

    An existing folder is returned as is. Otherwise ``owner/name`` is looked up in the hub
    cache's layout, ``models--owner--name/snapshots/<commit>`` with the commit read from
    ``refs/<revision>`` (what ``huggingface-cli download`` leaves behind). The cache is
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``.

    Args:
        path_or_id: a local folder, or a hub id ``owner/name`` already in the cache.
        revision: the cache ref naming the snapshot, e.g. ``main``.

    Returns:
        The :class:`~pathlib.Path` of the folder.

    Raises:
        ValueError: if it is neither a folder nor a cached snapshot, saying how to put the
            weights on this machine.
    """
    path = Path(path_or_id)
    if path.is_dir():
        return path
    repo_id = str(path_or_id)
    if repo_id.count("/") == 1 and not repo_id.startswith((".", "/")):
        repo = _hub_cache() / f"models--{repo_id.replace('/', '--')}"
        ref = repo / "refs" / revision
        if ref.is_file():
            snapshot = repo / "snapshots" / ref.read_text().strip()
            if snapshot.is_dir():
                return snapshot
    raise ValueError(
        f"{path_or_id!r} is neither a local folder nor in the Hugging Face cache "
        f"({_hub_cache()}); on a machine with network run `huggingface-cli download "
        f"{repo_id if '/' in repo_id else 'google/ddpm-ema-celebahq-256'}` and copy its cache "
        "folder (or the downloaded folder) here, then pass the hub id or the folder"
    )


def load_scheduler_config(folder: str | os.PathLike) -> SchedulerConfig:
    """The scheduler options of a pipeline folder, from ``scheduler/scheduler_config.json``.

    A bare model folder (no such file) gets diffusers' ``DDIMScheduler`` defaults (DDPM's
    linear schedule, 1000 steps).

    Args:
        folder: a local pipeline or model folder, ``str`` or path-like.

    Returns:
        The :class:`~scorelab.schedulers.SchedulerConfig`.

    Raises:
        ValueError: for malformed JSON, or an option
            :meth:`~scorelab.schedulers.SchedulerConfig.from_diffusers` does not support.
    """
    file = Path(folder) / SCHEDULER_CONFIG
    if not file.is_file():
        return SchedulerConfig()
    return SchedulerConfig.from_diffusers(json.loads(file.read_text()))


def load_pipeline(path_or_id: str | os.PathLike) -> tuple[UNet2D, SchedulerConfig]:
    """The U-Net and scheduler options of a pipeline folder, bare model folder or cached hub id.

    Args:
        path_or_id: as :func:`resolve_pipeline`.

    Returns:
        ``(unet, config)``: the :class:`~scorelab.unet.UNet2D` (:func:`scorelab.unet.load_unet`)
        and the :class:`~scorelab.schedulers.SchedulerConfig` (:func:`load_scheduler_config`).

    Raises:
        ValueError: from :func:`resolve_pipeline`, :func:`scorelab.unet.load_unet` or
            :func:`load_scheduler_config`.

    References:
        diffusers ``UNet2DModel`` documentation.
        https://huggingface.co/docs/diffusers/api/models/unet2d
    """
    folder = resolve_pipeline(path_or_id)
    return load_unet(folder), load_scheduler_config(folder)


def _image_size(sample_size) -> tuple[int, int]:
    """``(H, W)`` from a config's ``sample_size`` (an int or a pair)."""
    if sample_size is None:
        raise ValueError("the U-Net config has no sample_size; pass init noise instead")
    return (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)


@eqx.filter_jit
def _ddim(unet, x_T, key, noise, config, num_inference_steps, eta, use_clipped_model_output):
    return ddim_sample(
        unet,
        x_T,
        config,
        num_inference_steps,
        eta=eta,
        use_clipped_model_output=use_clipped_model_output,
        key=key,
        noise=noise,
    )


def sample(
    unet: UNet2D,
    config: SchedulerConfig,
    key: Array,
    *,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    n: int = 1,
    use_clipped_model_output: bool = False,
    x_T: Array | None = None,
    step_noise: Array | None = None,
) -> Array:
    r"""DDIM samples of a pretrained U-Net, as diffusers' ``DDIMPipeline`` before its clamp.

    :math:`x_T \sim \mathcal{N}(0, I)` walked down the timesteps with DDIM's update
    (:func:`scorelab.schedulers.ddim_step`, Song et al. 2021 eq. 12) under one ``jit``; the
    pipeline's ``(x/2 + 0.5).clamp(0, 1)`` is left to :func:`to_images`.

    Args:
        unet: the network (:func:`load_pipeline`).
        config: scheduler options.
        key: PRNG key for the initial noise and, when ``eta > 0``, the step noise.
        num_inference_steps, eta, use_clipped_model_output: as diffusers' pipeline.
        n: batch size when ``x_T`` is drawn.
        x_T: ``(B, C, H, W)`` initial noise; drawn from ``key`` when ``None``.
        step_noise: ``(num_inference_steps, B, C, H, W)`` step noise; drawn when ``None``.

    Returns:
        ``(B, C, H, W)`` float32 samples in model space (about ``[-1, 1]``).

    Raises:
        ValueError: if ``x_T`` is not ``(B, in_channels, H, W)``, ``x_T`` is ``None`` and the
            U-Net config has no ``sample_size``, or from
            :func:`scorelab.schedulers.ddim_sample` (bad ``num_inference_steps``, ``eta < 0``,
            ``step_noise`` of the wrong shape).

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
        https://arxiv.org/abs/2010.02502
    """
    key_init, key_steps = jax.random.split(key)
    if x_T is None:
        config_unet = dict(unet.config)
        shape = (n, config_unet["in_channels"], *_image_size(config_unet["sample_size"]))
        x_T = jax.random.normal(key_init, shape)
    x_T = jnp.asarray(x_T, jnp.float32)
    channels = dict(unet.config)["in_channels"]
    if x_T.ndim != 4 or x_T.shape[1] != channels:
        raise ValueError(
            f"init noise must be NCHW (B, {channels}, H, W) for this U-Net, got {x_T.shape}"
        )
    return _ddim(
        unet, x_T, key_steps, step_noise, config, num_inference_steps, eta, use_clipped_model_output
    )


def diffusers_sample(
    path_or_id: str | os.PathLike,
    config: SchedulerConfig,
    *,
    seed: int = 0,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    n: int = 1,
    use_clipped_model_output: bool = False,
    x_T: np.ndarray | None = None,
    step_noise: np.ndarray | None = None,
) -> np.ndarray:
    """The same samples computed by diffusers (needs the ``diffusers`` extra).

    Runs ``DDIMPipeline.__call__``'s loop with diffusers' ``UNet2DModel`` (from the same
    folder) and a ``DDIMScheduler`` with the options of ``config``, noise drawn as the
    pipeline draws it from ``torch.Generator().manual_seed(seed)`` unless injected. The loop
    is written out because the pipeline takes no initial noise and returns only the clamped
    images; the tests check it against ``DDIMPipeline`` itself.

    Args:
        path_or_id: as :func:`resolve_pipeline`.
        config: scheduler options, passed to ``DDIMScheduler`` (less ``variance_type``).
        seed: seed of the ``torch.Generator`` that draws ``x_T`` and the step noise.
        num_inference_steps, eta, use_clipped_model_output: as diffusers' pipeline.
        n: batch size when ``x_T`` is drawn.
        x_T: ``(B, C, H, W)`` initial noise; drawn from the generator when ``None``.
        step_noise: ``(num_inference_steps, B, C, H, W)`` float32 step noise; drawn from the
            generator when ``None``.

    Returns:
        ``(B, C, H, W)`` float32 samples in model space.

    Raises:
        ValueError: if torch or diffusers is not installed, or from :func:`resolve_pipeline`
            and :func:`scorelab.unet.unet_folder`.

    References:
        diffusers ``DDIMPipeline`` / ``DDIMScheduler`` documentation.
        https://huggingface.co/docs/diffusers/api/pipelines/ddim
    """
    try:
        import torch
        from diffusers import DDIMScheduler, UNet2DModel
        from diffusers.utils.torch_utils import randn_tensor
    except ImportError as error:
        raise ValueError(
            "--backend diffusers needs the diffusers extra: pip install 'scorelab[diffusers]'"
        ) from error
    folder = unet_folder(resolve_pipeline(path_or_id))
    unet = UNet2DModel.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False)
    unet.eval()
    options = {k: v for k, v in dataclasses.asdict(config).items() if k != "variance_type"}
    scheduler = DDIMScheduler(**options)
    generator = torch.Generator().manual_seed(seed)
    if x_T is None:
        shape = (n, unet.config.in_channels, *_image_size(unet.config.sample_size))
        x = randn_tensor(shape, generator=generator, dtype=unet.dtype)
    else:
        x = torch.from_numpy(np.asarray(x_T, np.float32))
    scheduler.set_timesteps(num_inference_steps)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            variance_noise = None if step_noise is None else torch.from_numpy(step_noise[i])
            x = scheduler.step(
                unet(x, t).sample,
                t,
                x,
                eta=eta,
                use_clipped_model_output=use_clipped_model_output,
                generator=generator if variance_noise is None else None,
                variance_noise=variance_noise,
            ).prev_sample
    return x.numpy()


def to_images(x) -> np.ndarray:
    r"""Model-space samples to uint8 images, as diffusers' pipelines convert them.

    .. math::
        v = \operatorname{clip}(x/2 + 1/2,\ 0,\ 1), \qquad
        \text{pixel} = \operatorname{round}(255\, v).

    Args:
        x: ``(B, C, H, W)`` array-like samples in model space (about ``[-1, 1]``).

    Returns:
        ``(B, H, W, C)`` uint8 NumPy array (channels last).
    """
    x = np.asarray(x, np.float32)
    images = np.clip(x / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    return np.round(images * 255).astype(np.uint8)


def save_grid(images: np.ndarray, path: str | os.PathLike, columns: int | None = None) -> Path:
    """Tile ``(B, H, W, C)`` uint8 images into one PNG (row-major, black padding), pixel exact.

    The grid has ``ceil(B / columns)`` rows; one-channel images are written as greyscale.

    Args:
        images: ``(B, H, W, C)`` uint8 array, ``C`` in 1, 3 or 4 (:func:`to_images`).
        path: the PNG file; missing parent folders are created.
        columns: images per row; ``None`` (or 0) means ``ceil(sqrt(B))``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.image import imsave

    batch, height, width, channels = images.shape
    columns = columns or int(np.ceil(np.sqrt(batch)))
    rows = -(-batch // columns)
    grid = np.zeros((rows * height, columns * width, channels), np.uint8)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, grid[..., 0] if channels == 1 else grid, cmap="gray" if channels == 1 else None)
    return path


def run(
    path_or_id: str | os.PathLike,
    output: str | os.PathLike,
    *,
    backend: str = "jax",
    seed: int = 0,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    n: int = 1,
    use_clipped_model_output: bool = False,
    init_noise: str | os.PathLike | None = None,
    step_noise: str | os.PathLike | None = None,
    save_array: str | os.PathLike | None = None,
    scheduler: dict | None = None,
) -> np.ndarray:
    """``scorelab pretrained``: sample a pipeline, write the PNG grid (and the array).

    Args:
        path_or_id: pipeline folder, bare model folder, or hub id in the local cache.
        output: PNG path of the grid.
        backend: ``jax`` (scorelab) or ``diffusers`` (:func:`diffusers_sample`).
        seed: PRNG seed (a JAX key, or a torch generator for ``diffusers``: the two backends
            draw different noise from one seed; inject it to compare them).
        num_inference_steps, eta, use_clipped_model_output: as diffusers' ``DDIMPipeline``.
        n: batch size when the initial noise is drawn.
        init_noise, step_noise: ``.npy`` files of ``(B, C, H, W)`` and
            ``(steps, B, C, H, W)`` noise.
        save_array: ``.npy`` path for the model-space samples.
        scheduler: :class:`SchedulerConfig` fields overriding the folder's scheduler config
            (``None`` values are ignored).

    Returns:
        The model-space samples, ``(B, C, H, W)`` float32 NumPy array.

    Raises:
        ValueError: for a ``backend`` other than ``jax`` or ``diffusers``, or from
            :func:`resolve_pipeline`, :func:`load_scheduler_config`, :func:`sample` and
            :func:`diffusers_sample`.
    """
    if backend not in ("jax", "diffusers"):
        raise ValueError(f"backend must be jax or diffusers, got {backend!r}")
    folder = resolve_pipeline(path_or_id)
    overrides = {k: v for k, v in (scheduler or {}).items() if v is not None}
    config = dataclasses.replace(load_scheduler_config(folder), **overrides)
    x_T = None if init_noise is None else np.load(init_noise)
    noise = None if step_noise is None else np.load(step_noise)
    options = dict(
        num_inference_steps=num_inference_steps,
        eta=eta,
        n=n,
        use_clipped_model_output=use_clipped_model_output,
        x_T=x_T,
        step_noise=noise,
    )
    if backend == "jax":
        x = np.asarray(sample(load_unet(folder), config, jax.random.key(seed), **options))
    else:
        x = diffusers_sample(folder, config, seed=seed, **options)
    if save_array is not None:
        np.save(save_array, x)
    save_grid(to_images(x), output)
    return x
