r"""Sample pretrained diffusers DDPM-family pipelines natively in JAX (``scorelab pretrained``).

The founding tutorial ends with ``DDIMPipeline.from_pretrained("google/ddpm-ema-celebahq-256")``
sampled in 10 steps with eta = 1 and eta = 0. This module does the same without PyTorch: it
resolves a pipeline folder (or a hub id already in the local Hugging Face cache, offline,
through ``huggingface_hub``'s cache API), loads the U-Net with :func:`load_unet` and the
scheduler options with :meth:`SchedulerConfig.from_diffusers`, runs :func:`ddim_sample` under
one ``jit``, and writes a PNG grid (:func:`scorelab.viz.save_image_grid`). Nothing it reads is
trusted: every file, field, tensor and option is checked before use, and a failure is one
:class:`PretrainedError` line naming the input and the remedy. :func:`diffusers_sample` runs
diffusers' own components for comparison (the ``diffusers`` extra).

References:
    Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
    https://arxiv.org/abs/2010.02502
    Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    https://arxiv.org/abs/2006.11239
"""

from __future__ import annotations

import dataclasses
import os
import reprlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab import viz
from scorelab._files import atomic_write, check_writable, resolves_into
from scorelab._keys import typed_key
from scorelab._validate import (
    all_finite,
    check_instance,
    check_mapping,
    check_memory,
    check_seed,
    in_file,
    is_traced,
)
from scorelab._xla_cpu import convolution_jit
from scorelab.data import DataError, read_npy
from scorelab.diffusers._checks import PretrainedError, is_int, read_json
from scorelab.diffusers._schedulers import SchedulerConfig, _check_eta, ddim_sample, timesteps
from scorelab.diffusers._schedulers import _check_config as _check_scheduler_config
from scorelab.diffusers._unet import CONFIG_NAME, UNet2D, load_unet, unet_folder

SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"

# A file at the root of every cached snapshot scorelab can load: a pipeline's index, the U-Net
# of a pipeline, or a bare model's config.
_SNAPSHOT_FILES = ("model_index.json", "unet/config.json", "config.json")


def _cached_snapshot(repo_id: str, revision: str, cache: Path) -> Path | None:
    """The snapshot folder of ``repo_id`` at ``revision`` in the hub cache ``cache``, if any.

    ``huggingface_hub.try_to_load_from_cache`` resolves ``refs/<revision>`` and accepts only a
    commit that is a folder listed in ``snapshots/``, so a ref such as ``../../..`` finds
    nothing; the folder must also resolve inside the cache (no symlink out of it).
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    for name in _SNAPSHOT_FILES:
        try:
            file = try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision)
        except HFValidationError:
            return None
        if isinstance(file, str):
            snapshot = Path(file).parents[name.count("/")]
            if snapshot.resolve().is_relative_to(cache.resolve()):
                return snapshot
    return None


def resolve_pipeline(
    path_or_id: str | os.PathLike,
    revision: str = "main",
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local folder for ``path_or_id``, never touching the network.

    An existing folder is returned as is. Otherwise a hub id ``owner/name`` is looked up in
    the Hugging Face cache with ``huggingface_hub``'s cache API (offline), in the snapshot
    that ``refs/<revision>`` names: what ``hf download`` leaves behind (``huggingface-cli
    download`` before huggingface_hub 0.34).

    Args:
        path_or_id: a local folder, or a hub id ``owner/name`` already in the cache.
        revision: the cache ref naming the snapshot, e.g. ``main``.
        cache_dir: the hub cache; ``None`` is huggingface_hub's (``$HF_HUB_CACHE``, else
            ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``).

    Returns:
        The :class:`~pathlib.Path` of the folder.

    Raises:
        PretrainedError: if it is a file or a scorelab run, or neither a folder nor a cached
            snapshot inside the cache, saying how to put the weights on this machine.
    """
    from huggingface_hub import constants

    path = Path(path_or_id)
    if path.is_dir():
        if (path / "manifest.json").is_file() and (path / "config.json").is_file():
            # Read as a U-Net's config, it was "unsupported UNet2DModel config field(s)".
            raise PretrainedError(
                f"{path}: a scorelab run, not a diffusers pipeline; sample it with scorelab "
                f"sample --run {path} (a VP U-Net run exports with scorelab export RUN "
                "--diffusers DIR)"
            )
        return path
    if path.exists():  # a file (model_index.json, /dev/null) was 'not in the cache: download it'
        raise PretrainedError(
            f"{path}: a file, not a pipeline folder; pass the folder that holds model_index.json "
            "(or a model's config.json)"
        )
    repo_id = str(path_or_id)
    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    if repo_id.count("/") == 1 and not repo_id.startswith((".", "/")):
        snapshot = _cached_snapshot(repo_id, revision, cache)
        if snapshot is not None:
            return snapshot
    raise PretrainedError(
        f"{path_or_id!r} is neither a local folder nor in the Hugging Face cache "
        f"({cache}); on a machine with network run `hf download "
        f"{repo_id if '/' in repo_id else 'google/ddpm-ema-celebahq-256'}` and copy its cache "
        "folder (or the downloaded folder) here, then pass the hub id or the folder"
    )


def load_scheduler_config(folder: str | os.PathLike) -> SchedulerConfig:
    """The scheduler options of a pipeline folder, from ``scheduler/scheduler_config.json``.

    A bare model folder (no such file, no ``scheduler/`` folder and no scheduler in a
    ``model_index.json``) gets diffusers' ``DDIMScheduler`` defaults (DDPM's linear schedule,
    1000 steps).

    Args:
        folder: a local pipeline or model folder, ``str`` or path-like.

    Returns:
        The :class:`SchedulerConfig`.

    Raises:
        PretrainedError: naming ``folder`` if it is not a folder (missing, a file: a typo
            sampled with the defaults); naming ``model_index.json`` if it names a pipeline
            class other than :data:`PIXEL_PIPELINES`; naming the file: missing from a
            pipeline that has a scheduler, unreadable or malformed JSON, not an object, or an
            option :meth:`SchedulerConfig.from_diffusers` refuses (unsupported, wrong type,
            out of range).
    """
    if not Path(folder).is_dir():
        what = "a file" if Path(folder).exists() else "not found"
        raise PretrainedError(
            f"folder: {folder} is {what}, not a pipeline or model folder; pass the folder that "
            "holds scheduler/ (or a model's config.json)"
        )
    index = _pipeline_index(Path(folder))
    file = Path(folder) / SCHEDULER_CONFIG
    if not file.exists():
        # A pipeline's scheduler folder without its options, or a pipeline whose index lists a
        # scheduler that is gone: its betas and spacing would be replaced by defaults.
        if file.parent.is_dir() or (index is not None and "scheduler" in index):
            raise PretrainedError(
                f"{file}: missing, but the pipeline has a scheduler; download the pipeline "
                "again, or pass its unet/ folder to sample with DDIM's defaults"
            )
        return SchedulerConfig()
    config = read_json(file)
    with in_file(file, PretrainedError, "fix the file or download the pipeline again"):
        return SchedulerConfig.from_diffusers(config)


PIXEL_PIPELINES = ("DDPMPipeline", "DDIMPipeline", "PNDMPipeline")
"""The pipeline classes (``model_index.json``'s ``_class_name``) scorelab samples: a
``UNet2DModel`` of DDPM timesteps in pixel space and a scheduler of its betas, nothing else."""


def _pipeline_index(folder: Path) -> dict | None:
    """The folder's ``model_index.json``, or ``None`` for a bare model folder (the U-Net alone),
    refusing one that names another kind of pipeline: an ``LDMPipeline``'s latents were
    written as the image, undecoded, and a ``ConsistencyModelPipeline``'s scheduler read as
    DDIM's, both with exit 0 (pass 28, #2)."""
    index = folder / "model_index.json"
    if not index.exists():
        return None
    contents = read_json(index)
    name = contents.get("_class_name")
    if name not in PIXEL_PIPELINES:
        raise PretrainedError(
            f"{index}: a {reprlib.repr(name)} pipeline; scorelab samples pixel-space DDPM "
            f"pipelines ({', '.join(PIXEL_PIPELINES)}) with DDIM: run this one with "
            "diffusers.DiffusionPipeline.from_pretrained"
        )
    return contents


def load_pipeline(path_or_id: str | os.PathLike) -> tuple[UNet2D, SchedulerConfig]:
    """The U-Net and scheduler options of a pipeline folder, bare model folder or cached hub id.

    Args:
        path_or_id: as :func:`resolve_pipeline`.

    Returns:
        ``(unet, config)``: the :class:`UNet2D` (:func:`load_unet`) and the
        :class:`SchedulerConfig` (:func:`load_scheduler_config`).

    Raises:
        PretrainedError: from :func:`resolve_pipeline`, :func:`load_scheduler_config` or
            :func:`load_unet`; for a U-Net of noise levels (Fourier timestep embedding), whose
            inputs DDPM's timesteps are not.

    References:
        diffusers ``UNet2DModel`` documentation.
        https://huggingface.co/docs/diffusers/api/models/unet2d
    """
    folder = resolve_pipeline(path_or_id)
    config = load_scheduler_config(folder)  # the small files first: fail before the weights
    _check_timestep_unet(folder)
    return load_unet(folder), config


def _check_timestep_unet(folder: Path) -> None:
    """Refuse, from its config alone, a U-Net that DDPM's timesteps cannot drive: one of noise
    levels (a Fourier embedding), or a class-conditional one (DDIMPipeline passes no class)."""
    file = unet_folder(folder) / CONFIG_NAME
    unet_config = read_json(file)
    if unet_config.get("time_embedding_type") == "fourier":
        raise PretrainedError(
            f"{file}: time_embedding_type 'fourier' is a U-Net of noise levels sigma "
            "(score_sde's variance-exploding networks), not of DDPM timesteps; scorelab samples "
            "DDPM/DDIM pipelines (load the network itself with scorelab.diffusers.load_unet)"
        )
    classes = unet_config.get("num_class_embeds")
    if classes is not None:
        raise PretrainedError(
            f"{folder}: a class-conditional U-Net (num_class_embeds {reprlib.repr(classes)}); "
            "DDIMPipeline, and so scorelab pretrained, passes no class: sample its scorelab run "
            "with scorelab sample --run RUN --class K"
        )


def _image_size(sample_size) -> tuple[int, int]:
    """``(H, W)`` from a config's ``sample_size`` (an int or a pair)."""
    if sample_size is None:
        raise PretrainedError("the U-Net config has no sample_size; pass init noise instead")
    return (sample_size, sample_size) if is_int(sample_size) else tuple(sample_size)


def _noise_shape(unet: UNet2D, n: int) -> tuple[int, int, int, int]:
    """``(n, C, H, W)``: the initial noise drawn for ``n`` images of the config's size."""
    config = dict(unet.config)
    return (n, config["in_channels"], *_image_size(config["sample_size"]))


def _check_options(num_inference_steps, eta, n) -> None:
    """The sampling options' types and ranges, before anything is loaded or drawn."""
    if not (is_int(num_inference_steps) and num_inference_steps >= 1):
        raise PretrainedError(
            f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}"
        )
    _check_eta(eta)
    if not (is_int(n) and n >= 1):
        raise PretrainedError(f"the number of images n must be an integer >= 1, got {n!r}")


def _check_init_noise(x_T: np.ndarray, unet: UNet2D) -> None:
    """``x_T`` against the U-Net: NCHW, its input channels, sizes its levels divide, finite."""
    config = dict(unet.config)
    channels, factor = config["in_channels"], 2 ** (len(config["block_out_channels"]) - 1)
    if x_T.ndim != 4 or x_T.shape[1] != channels or x_T.shape[0] < 1:
        raise PretrainedError(
            f"init noise must be NCHW (B, {channels}, H, W) for this U-Net, got {x_T.shape}"
        )
    if x_T.shape[2] % factor or x_T.shape[3] % factor or min(x_T.shape[2:]) < 1:
        raise PretrainedError(
            f"init noise of shape {x_T.shape}: H and W must be positive multiples of {factor} "
            "for this U-Net's levels"
        )
    if not np.all(np.isfinite(x_T)):
        raise PretrainedError("init noise holds NaN or inf values; draw it again")
    _check_noise_range("init noise", x_T)


_MAX_NOISE = 1e18  # the data loaders' bound: the squares of larger values overflow float32


def _check_noise_range(name: str, noise) -> None:
    """Refuse noise with values beyond :data:`_MAX_NOISE`: standard normal noise never holds
    them, and 1e30 was sampled to images of 1e31 without a word (3e38 blamed the pipeline)."""
    if is_traced(noise) or not np.size(noise):  # values unknown until run, or none
        return
    with jax.ensure_compile_time_eval():  # where the noise lives, no float64 host copy
        largest = float(jnp.max(jnp.abs(jnp.asarray(noise))))
    if largest > _MAX_NOISE:
        raise PretrainedError(
            f"{name} holds values beyond {_MAX_NOISE:.0e} (standard normal noise is within a "
            "few units); draw it again"
        )


def check_size(unet: UNet2D, shape: tuple[int, ...]) -> None:
    """Refuse, before anything is drawn or run, ``(B, C, H, W)`` images whose forward pass
    needs more memory than is available (:meth:`UNet2D.memory_bytes`): one image too large
    names its size, a batch too large the number of images. ``n = 10**11`` was an internal
    error from XLA ('Out of memory allocating 307200000000000 bytes')."""
    n, _, height, width = shape
    one = unet.memory_bytes(1, height, width)
    check_memory(
        f"one {height}x{width} image",
        one,
        "this U-Net cannot sample it here: give smaller init noise (--init-noise)",
        PretrainedError,
    )
    check_memory("n", n * one, "draw fewer images (--n)", PretrainedError)


@convolution_jit  # XLA:CPU's own convolutions (scorelab._xla_cpu)
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
    n: int | None = None,
    use_clipped_model_output: bool = False,
    x_T: Array | None = None,
    step_noise: Array | None = None,
) -> Array:
    r"""DDIM samples of a pretrained U-Net, as diffusers' ``DDIMPipeline`` before its clamp.

    :math:`x_T \sim \mathcal{N}(0, I)` walked down the timesteps with DDIM's update
    (:func:`scorelab.diffusers.ddim_step`, Song et al. 2021 eq. 12) under one ``jit``; the
    pipeline's ``(x/2 + 0.5).clamp(0, 1)`` is left to :func:`to_images`.

    Args:
        unet: the network (:func:`load_pipeline`).
        config: scheduler options.
        key: PRNG key for the initial noise and, when ``eta > 0``, the step noise.
        num_inference_steps, use_clipped_model_output: as diffusers' pipeline.
        eta: DDIM's :math:`\eta \ge 0` (Song et al. 2021, eq. 16; diffusers' name): 0 is
            deterministic, 1 DDPM's posterior noise.
        n: batch size when ``x_T`` is drawn, ``>= 1`` (``None``: 1); with ``x_T`` only
            ``None`` or its batch ``B`` (another ``n`` was ignored).
        x_T: ``(B, C, H, W)`` initial noise, real numbers; drawn from ``key`` when ``None``.
        step_noise: ``(num_inference_steps, B, C, H, W)`` finite step noise for ``eta > 0``;
            drawn when ``None``.

    Returns:
        ``(B, C, H, W)`` float32 samples in model space (about ``[-1, 1]``).

    Raises:
        TypeError: ``unet`` not a :class:`UNet2D`, ``config`` not a :class:`SchedulerConfig`,
            ``key`` not a PRNG key (:func:`scorelab._keys.typed_key`), ``x_T`` or
            ``step_noise`` not real numbers (a path, a complex array).
        PretrainedError: before anything is drawn or run, if ``num_inference_steps``,
            ``eta`` or ``n`` is not an integer ``>= 1`` / number ``>= 0`` / integer ``>= 1``,
            ``n`` differs from the batch of ``x_T``, ``x_T`` is not finite
            ``(B, in_channels, H, W)`` with ``H`` and ``W`` multiples of
            ``2 ** (levels - 1)``, ``x_T`` is ``None`` and the U-Net config has no
            ``sample_size`` or ``n`` images need more memory than available, ``step_noise``
            holds NaN or inf or is given at ``eta = 0`` (where it would be ignored), the U-Net
            is one DDPM's timesteps cannot drive (a Fourier embedding of noise levels, or
            class-conditional: :func:`load_pipeline` refuses both), or from
            :func:`ddim_sample` (``num_inference_steps`` above the training steps,
            ``step_noise`` of the wrong shape).

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
        https://arxiv.org/abs/2010.02502
    """
    check_instance("unet", unet, UNet2D, "a UNet2D (load_pipeline, load_unet)")
    _check_scheduler_config(config)
    key = typed_key(key, "key")
    _check_options(num_inference_steps, eta, 1 if n is None else n)
    unet_options = dict(unet.config)
    if unet_options["time_embedding_type"] == "fourier":  # DDIM's t = 0 is log 0: NaN samples
        raise PretrainedError(
            "unet: time_embedding_type 'fourier' is a U-Net of noise levels sigma, not of DDPM "
            "timesteps, which DDIM would feed it; call the network itself at noise levels"
        )
    if unet_options["num_class_embeds"] is not None:
        raise PretrainedError(
            f"unet: a class-conditional U-Net (num_class_embeds "
            f"{unet_options['num_class_embeds']}), and sample passes no class; call ddim_sample "
            "with lambda x, t: unet(x, t, class_labels)"
        )
    if x_T is not None:
        _check_real("x_T", x_T)
        if n is not None and np.ndim(x_T) and n != np.shape(x_T)[0]:
            raise PretrainedError(
                f"n {n}: x_T holds {np.shape(x_T)[0]} images and n would be ignored; drop n, or "
                f"give n={np.shape(x_T)[0]}"
            )
    _check_step_noise(step_noise, eta)
    n = 1 if n is None else n
    key_init, key_steps = jax.random.split(key)
    if x_T is None:
        shape = _noise_shape(unet, n)
        check_size(unet, shape)
        x_T = jax.random.normal(key_init, shape)
    else:
        x_T = np.asarray(x_T, np.float32)
        _check_init_noise(x_T, unet)
        check_size(unet, x_T.shape)
    return _ddim(
        unet,
        jnp.asarray(x_T, jnp.float32),
        key_steps,
        step_noise,
        config,
        num_inference_steps,
        eta,
        use_clipped_model_output,
    )


def _check_step_noise(step_noise, eta: float) -> None:
    """Refuse ``step_noise`` that the samples would ignore (``eta`` 0), that is not real
    numbers, or that holds values no standard normal draw gives (NaN, inf, beyond
    :data:`_MAX_NOISE`); ``None`` passes. Its shape is checked where the batch is known."""
    if step_noise is None:
        return
    if eta == 0:
        raise PretrainedError(
            "step_noise: eta 0 is deterministic and adds no step noise, so it would be "
            "ignored; drop step_noise, or set eta > 0"
        )
    _check_real("step_noise", step_noise)
    if all_finite(step_noise) is False:
        raise PretrainedError("step_noise holds NaN or inf values; give finite noise")
    _check_noise_range("step_noise", step_noise)


def _check_real(name: str, value) -> None:
    """Refuse ``value`` unless an array (or nested list) of real numbers, concrete: a path
    string was 'could not convert string to float', a complex array lost its imaginary part
    with only a warning."""
    if is_traced(value):
        raise TypeError(f"{name}: sample runs on concrete arrays; call it outside jit")
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):
            dtype = np.dtype(object)
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(
            f"{name}: expected an array of real numbers, got {type(value).__name__} of dtype "
            f"{dtype} (read a .npy file with numpy.load first)"
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
        TypeError: ``config`` not a :class:`SchedulerConfig`, ``x_T`` or ``step_noise`` not
            real numbers.
        PretrainedError: if torch or diffusers is not installed; before anything is loaded,
            for the options :func:`sample` and :func:`run` refuse (``seed`` not an integer in
            ``[0, 2**32 - 1]``, ``num_inference_steps`` not an integer in ``[1, T]``, ``eta``
            not in ``[0, 1]``, ``n`` not an integer ``>= 1``, ``x_T`` not a finite 4-D array,
            ``step_noise`` not finite, of another shape than ``(steps, *x_T.shape)``, or given
            at ``eta = 0``); ``x_T`` of another channel count than the U-Net's; a
            ``num_inference_steps`` for which diffusers' scheduler makes another number of
            timesteps (the ``trailing`` rounding artefact, :func:`timesteps`); or from
            :func:`resolve_pipeline` and :func:`unet_folder`.

    References:
        diffusers ``DDIMPipeline`` / ``DDIMScheduler`` documentation.
        https://huggingface.co/docs/diffusers/api/pipelines/ddim
    """
    try:
        import torch
        from diffusers import DDIMScheduler, UNet2DModel
        from diffusers.utils.torch_utils import randn_tensor
    except ImportError as error:
        raise PretrainedError(
            "--backend diffusers needs the diffusers extra: pip install 'scorelab[diffusers]'"
        ) from error
    _check_scheduler_config(config)
    check_seed("seed", seed, error=PretrainedError)
    _check_options(num_inference_steps, eta, n)
    timesteps(config, num_inference_steps)  # at most T steps
    if x_T is not None:
        _check_real("x_T", x_T)
        if np.ndim(x_T) != 4 or not np.all(np.isfinite(x_T)):
            raise PretrainedError(
                f"x_T: expected finite (B, C, H, W) noise, got shape {np.shape(x_T)}"
            )
    _check_step_noise(step_noise, eta)
    folder = resolve_pipeline(path_or_id)
    _pipeline_index(folder)  # the kind of pipeline, before the weights
    folder = unet_folder(folder)
    unet = UNet2DModel.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False)
    if x_T is not None and np.shape(x_T)[1] != unet.config.in_channels:
        raise PretrainedError(
            f"x_T: expected (B, {unet.config.in_channels}, H, W) for this U-Net, got "
            f"{np.shape(x_T)}"
        )
    unet.eval()
    scheduler = DDIMScheduler(**config.ddim_options())
    generator = torch.Generator().manual_seed(seed)
    if x_T is None:
        shape = (n, unet.config.in_channels, *_image_size(unet.config.sample_size))
        x = randn_tensor(shape, generator=generator, dtype=unet.dtype)
        batch_shape = shape
    else:
        batch_shape = np.shape(x_T)
        x = torch.from_numpy(np.asarray(x_T, np.float32))
    if step_noise is not None and np.shape(step_noise) != (num_inference_steps, *batch_shape):
        raise PretrainedError(
            f"step_noise: shape {np.shape(step_noise)}, expected "
            f"{(num_inference_steps, *batch_shape)} (steps, then x_T's shape)"
        )
    scheduler.set_timesteps(num_inference_steps)
    if len(scheduler.timesteps) != num_inference_steps:  # trailing: a float arange's extra -1
        raise PretrainedError(
            f"num_inference_steps {num_inference_steps}: diffusers' DDIMScheduler makes "
            f"{len(scheduler.timesteps)} timesteps for it (a rounding artefact ending at t = -1, "
            "which scorelab drops); compare at another number of steps"
        )
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

    Raises:
        ValueError: naming ``x``, for another shape (and for ``(n, H, H, C)`` with ``H > 4``
            and ``C`` in 1, 3 or 4: channels last), complex or non-numeric values, or NaN or
            inf (which became black pixels with only a cast warning).
    """
    x = np.asarray(x)
    if np.iscomplexobj(x) or x.dtype.kind not in "biuf":
        raise ValueError(f"x: expected real samples, got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"x: expected (n, C, H, W) samples, got shape {x.shape}")
    if x.shape[1] > 4 and x.shape[1] == x.shape[2] and x.shape[3] in (1, 3, 4):
        # (2, 8, 8, 3) was taken for 8-channel 8x3 images without a word
        raise ValueError(
            f"x: shape {x.shape} reads as (n, H, W, C) images, channels last; give (n, C, H, "
            "W) samples (x.transpose(0, 3, 1, 2))"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("x: the samples hold NaN or inf (a diverged sampler); drop or redraw them")
    # Clipped first: beyond [-1, 1] every value is one pixel, and 1e300 overflowed float32.
    x = np.clip(x, -3.0, 3.0).astype(np.float32)
    images = np.clip(x / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    return np.round(images * 255).astype(np.uint8)


def _load_noise(file: str | os.PathLike, flag: str) -> np.ndarray:
    """A noise array from a ``.npy`` file (:func:`scorelab.data.read_npy`, the one reader of
    arrays as stored), as float32; ``flag`` names the option in errors."""
    remedy = "save a float array with numpy.save"
    try:
        array = read_npy(file)
    except (FileNotFoundError, DataError) as error:
        raise PretrainedError(f"{flag} {error}") from None
    if array.dtype.kind not in "fiu":
        raise PretrainedError(f"{flag} {file}: holds no numeric array; {remedy}")
    if not np.all(np.isfinite(array)):
        raise PretrainedError(f"{flag} {file}: holds NaN or inf values; {remedy}")
    largest = float(np.max(np.abs(array))) if array.size else 0.0
    if largest > float(np.finfo(np.float32).max):  # the cast gave inf, with a NumPy warning
        raise PretrainedError(
            f"{flag} {file}: values up to {largest:.3g} are beyond float32's range (|x| <= "
            "3.4e38), in which the U-Net samples; give standard normal noise"
        )
    return array.astype(np.float32)


def _check_overrides_used(overrides: dict, config: SchedulerConfig) -> None:
    """Refuse a scheduler option the user gave that the resulting schedule never reads.

    ``steps_offset`` shifts only the ``leading`` spacing, and ``clip_sample_range`` bounds a
    clipping that ``clip_sample=False`` turns off: given otherwise, each was ignored and the
    samples came out as without it.
    """
    if "steps_offset" in overrides and config.timestep_spacing != "leading":
        raise PretrainedError(
            f"steps_offset {overrides['steps_offset']}: only the leading timestep spacing adds "
            f"it, and this schedule's is {config.timestep_spacing}; drop it, or choose the "
            "leading spacing"
        )
    if "clip_sample_range" in overrides and not config.clip_sample:
        raise PretrainedError(
            f"clip_sample_range {overrides['clip_sample_range']:g}: x0 clipping is off for this "
            "schedule (clip_sample false); drop the range, or turn clipping on"
        )


def run(
    path_or_id: str | os.PathLike,
    output: str | os.PathLike,
    *,
    backend: str = "jax",
    seed: int = 0,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    n: int | None = None,
    use_clipped_model_output: bool = False,
    init_noise: str | os.PathLike | None = None,
    step_noise: str | os.PathLike | None = None,
    save_array: str | os.PathLike | None = None,
    scheduler: dict | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """``scorelab pretrained``: sample a pipeline, write the PNG grid (and the array).

    The options and noise files are checked before the pipeline is loaded, the pipeline's
    files before any sampling.

    Args:
        path_or_id: pipeline folder, bare model folder, or hub id in the local cache.
        output: PNG path of the grid (:func:`scorelab.viz.save_image_grid`).
        backend: ``jax`` (scorelab) or ``diffusers`` (:func:`diffusers_sample`).
        seed: PRNG seed (a JAX key, or a torch generator for ``diffusers``: the two backends
            draw different noise from one seed; inject it to compare them).
        num_inference_steps, eta, use_clipped_model_output: as diffusers' ``DDIMPipeline``.
        n: batch size, ``>= 1``: 1 by default when the initial noise is drawn, the batch of
            ``init_noise`` when it is given (another ``n`` is refused: it was ignored).
        init_noise, step_noise: ``.npy`` files of ``(B, C, H, W)`` and
            ``(steps, B, C, H, W)`` noise.
        save_array: ``.npy`` path for the model-space samples (written atomically).
        scheduler: a mapping of :class:`SchedulerConfig` fields overriding the folder's
            scheduler config (``None`` values are ignored).
        overwrite: replace an existing ``output`` or ``save_array`` file (the CLI's
            ``--overwrite``); never a file this call reads.

    Returns:
        The model-space samples, ``(B, C, H, W)`` float32 NumPy array.

    Raises:
        PretrainedError: one line naming the input, before anything is loaded or sampled: an
            ``output`` not ending ``.png``, a folder, or in a folder that takes no file; a
            ``save_array`` not ending ``.npy``, a folder, or the same file as ``output``,
            ``init_noise`` or ``step_noise``; either output existing without ``overwrite``;
            a ``scheduler`` that is not a mapping of
            :class:`SchedulerConfig` fields; a ``backend`` other than ``jax`` or
            ``diffusers``, a bad option or noise file, step noise for eta 0, a ``scheduler``
            override the schedule does not read (``steps_offset`` without the ``leading``
            spacing, ``clip_sample_range`` without clipping), or from
            :func:`resolve_pipeline`, :func:`load_scheduler_config`, :func:`load_unet`,
            :func:`sample` and :func:`diffusers_sample`; a class-conditional U-Net (the
            pipeline takes no class).
    """
    if backend not in ("jax", "diffusers"):
        raise PretrainedError(f"backend must be jax or diffusers, got {backend!r}")
    _check_options(num_inference_steps, eta, 1 if n is None else n)
    inputs = {"init_noise": init_noise, "step_noise": step_noise}
    if not isinstance(overwrite, bool):
        raise PretrainedError(f"overwrite: expected True or False, got {overwrite!r}")
    _check_output("output", output, ".png", inputs, overwrite)
    if save_array is not None:
        _check_output("save_array", save_array, ".npy", {**inputs, "output": output}, overwrite)
    overrides = _scheduler_overrides(scheduler)
    check_seed("seed", seed, error=PretrainedError)
    x_T = None if init_noise is None else _load_noise(init_noise, "--init-noise")
    if x_T is not None and n is not None and x_T.ndim and n != x_T.shape[0]:
        raise PretrainedError(
            f"--n {n}: the init noise {init_noise} holds {x_T.shape[0]} images; drop --n, or "
            f"give --n {x_T.shape[0]}"
        )
    n = 1 if n is None else n
    if step_noise is not None and eta == 0:  # read, then never used: the samples ignored it
        raise PretrainedError(
            f"--step-noise {step_noise}: eta 0 is deterministic and adds no step noise; drop "
            "--step-noise, or set --eta > 0"
        )
    noise = None if step_noise is None else _load_noise(step_noise, "--step-noise")
    if noise is not None and x_T is not None and noise.shape != (num_inference_steps, *x_T.shape):
        raise PretrainedError(
            f"--step-noise {step_noise}: shape {noise.shape}, expected "
            f"{(num_inference_steps, *x_T.shape)} (steps, then the init noise's shape)"
        )
    folder = resolve_pipeline(path_or_id)
    for name, path in (("output", output), ("save_array", save_array)):
        # `--save-array` through a link to the weights replaced them with the samples
        if path is not None and Path(path).exists() and resolves_into(path, folder):
            raise PretrainedError(
                f"{name}: {path} is a file of the pipeline {path_or_id}, which this call reads; "
                "give the output another name"
            )
    config = dataclasses.replace(load_scheduler_config(folder), **overrides)
    _check_overrides_used(overrides, config)
    options = dict(
        num_inference_steps=num_inference_steps,
        eta=eta,
        n=n if x_T is None else None,  # the init noise's batch (checked above)
        use_clipped_model_output=use_clipped_model_output,
        x_T=x_T,
        step_noise=noise,
    )
    _check_timestep_unet(folder)  # before any weights are read
    unet = load_unet(folder)  # the weights checked for either backend (diffusers fills gaps)
    if x_T is not None:
        try:
            _check_init_noise(x_T, unet)
        except PretrainedError as error:
            raise PretrainedError(f"--init-noise {init_noise}: {error}") from None
    shape = _noise_shape(unet, n) if x_T is None else x_T.shape
    if noise is not None and noise.shape != (num_inference_steps, *shape):
        raise PretrainedError(
            f"--step-noise {step_noise}: shape {noise.shape}, expected "
            f"{(num_inference_steps, *shape)}: --steps, then --n images of this U-Net's "
            "(C, H, W)"
        )
    check_size(unet, shape)
    if backend == "jax":
        x = np.asarray(sample(unet, config, jax.random.key(seed), **options))
    else:
        x = diffusers_sample(folder, config, seed=seed, **{**options, "n": n})
    if not np.all(np.isfinite(x)):
        raise PretrainedError(
            f"{path_or_id}: the samples are not finite (NaN or inf); the weights or the "
            "scheduler options are broken: check them, or download the pipeline again"
        )
    if save_array is not None:
        atomic_write(save_array, lambda handle: np.save(handle, x))
    viz.save_image_grid(to_images(x), output)
    return x


def _check_output(name: str, path, suffix: str, inputs: dict, overwrite: bool) -> None:
    """Refuse, before any work, an output ``path`` of :func:`run` that cannot be written as
    asked: another suffix (``np.save`` appended ``.npy`` to the name; the grid is PNG), a
    folder, the same file as one of ``inputs`` (name -> path or ``None``), an existing file
    unless ``overwrite`` (it was replaced without a word), or a folder that takes no new file
    (missing parents are created, as the writers create them)."""
    if not isinstance(path, str | os.PathLike):
        raise PretrainedError(f"{name}: expected a file path, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise PretrainedError(f"{name}: {path}: give a file name ending {suffix}")
    if path.is_dir():
        raise PretrainedError(f"{name}: {path} is a folder; give a file name ending {suffix}")
    for other, given in inputs.items():
        if given is not None and path.exists() and Path(given).exists():
            if os.path.samefile(path, given):
                raise PretrainedError(
                    f"{name}: {path} is the same file as {other}, which this call reads or "
                    "writes; give the output another name"
                )
    if path.exists() and not overwrite:  # the CLI's --overwrite guard, in the same words
        raise PretrainedError(
            f"{name}: {path}: exists; pass overwrite=True to replace it, or choose another name"
        )
    try:  # found now, not after sampling
        check_writable(path)
    except OSError as error:
        raise PretrainedError(
            f"{name}: {path}: cannot write in its folder ({error.strerror or error}); choose "
            "another path"
        ) from None


def _scheduler_overrides(scheduler) -> dict:
    """The ``scheduler`` overrides of :func:`run` without their ``None`` values, refused
    unless a mapping of :class:`SchedulerConfig` field names."""
    if scheduler is None:
        return {}
    check_mapping(
        "scheduler",
        scheduler,
        "a mapping of SchedulerConfig fields to values",
        error=PretrainedError,
    )
    fields = [field.name for field in dataclasses.fields(SchedulerConfig)]
    for name in scheduler:
        if name not in fields:
            raise PretrainedError(
                f"scheduler: unknown option {name!r}; accepted: {', '.join(fields)}"
            )
    return {name: value for name, value in scheduler.items() if value is not None}
