"""The factory: what a configuration (:mod:`scorelab.config`) describes, built.

The configuration sections describe; these functions build the data, the target, the network,
the loss, the grid, the sampler and its starting points from them. Every job
(:mod:`scorelab.workflows`) and the demo build through here, so a section means the same thing
wherever it is used.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.tree_util import Partial

from scorelab import losses, models, precond, samplers
from scorelab._validate import check_instance, check_memory
from scorelab.config import (
    TARGETS,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    SamplerConfig,
    sampler_option_error,
)
from scorelab.data import (
    IMAGE_SOURCES,
    TOY_DATASETS,
    DataError,
    ImageData,
    digits,
    held_out_split,
    image_shape,
    load_array,
    load_images,
    npy_header,
)
from scorelab.noise import sigma_grid
from scorelab.targets import GaussianMixture
from scorelab.training import _tree_bytes

__all__ = [
    "LOSS_FIELDS",
    "SIGMA_LAW_FIELDS",
    "SCHEDULE_FIELDS",
    "MODEL_FIELDS",
    "loss_fields",
    "model_fields",
    "check_fields_read",
    "make_target",
    "make_data",
    "example_shape",
    "make_image_data",
    "data_scale",
    "make_model",
    "make_loss",
    "make_sigmas",
    "make_sampler",
    "check_log_density",
    "make_prior",
    "draw_prior",
]


# What each loss and network reads. make_loss and make_model build from the projection of
# their section onto these fields (every other field at its default), and check_fields_read
# refuses a section that differs from its projection: a field missing here reaches no build
# and is refused when set, so what is built and what is accepted cannot drift apart.
LOSS_FIELDS: dict[str, tuple[str, ...]] = {
    "hyvarinen": (),
    "hutchinson": ("n_probes", "probe"),
    "sliced": ("n_probes", "variance_reduction"),
    "dsm": ("sigma",),
    "ncsn": ("sigma_min", "sigma_max", "n_sigmas", "sigma_distribution", "weighting"),
    "vp_epsilon": ("schedule", "num_train_timesteps", "beta_start", "beta_end", "label_dropout"),
}
"""The fields of the loss section each loss reads, besides ``name``."""

SIGMA_LAW_FIELDS: dict[str, tuple[str, ...]] = {"loguniform": (), "lognormal": ("p_mean", "p_std")}
"""The fields each ``sigma_distribution`` reads, for a loss that reads ``sigma_distribution``."""

_BETAS = ("beta_start", "beta_end")
SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {
    "linear": _BETAS,
    "scaled_linear": _BETAS,
    "squaredcos_cap_v2": (),
    "cosine": (),
}
"""The fields each VP ``schedule`` reads, for a loss that reads ``schedule``: the cosine
schedule has no betas to set (given ones were ignored without a word)."""

_UNET_FIELDS = (
    "channels",
    "layers_per_block",
    "attention_resolutions",
    "norm_groups",
    "attention_head_dim",
)
MODEL_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("mlp", "none"): ("normalise_input", "activation"),
    ("ncsn_mlp", "none"): (
        "scale_by_sigma",
        "normalise_input",
        "activation",
        "widths",
        "noise_embedding",
    ),
    ("ncsn_mlp", "edm"): ("activation", "widths", "noise_embedding"),
    ("unet", "none"): (*_UNET_FIELDS, "dropout", "num_classes"),
    ("unet", "edm"): _UNET_FIELDS,
}
"""The fields of the model section each network ``(name, preconditioning)`` reads, besides
``name``, ``preconditioning`` and ``seed`` (``name`` resolved for the loss)."""

_ALWAYS_READ = ("name", "preconditioning", "seed")


def loss_fields(config: LossConfig) -> tuple[str, ...]:
    """The fields of the loss section ``config.name`` reads with its ``sigma_distribution``
    or VP ``schedule`` (:data:`LOSS_FIELDS`, :data:`SIGMA_LAW_FIELDS`,
    :data:`SCHEDULE_FIELDS`), besides ``name``."""
    _check_section(config, LossConfig)
    fields = LOSS_FIELDS[config.name]
    if "sigma_distribution" in fields:
        fields += SIGMA_LAW_FIELDS[config.sigma_distribution]
    if "schedule" in fields:
        fields = tuple(f for f in fields if f not in _BETAS) + SCHEDULE_FIELDS[config.schedule]
    return fields


def model_fields(config: ModelConfig, loss: LossConfig) -> tuple[str, ...]:
    """The fields of the model section its network reads (:data:`MODEL_FIELDS`), besides
    ``name``, ``preconditioning`` and ``seed``."""
    return MODEL_FIELDS[config.resolved(loss), config.preconditioning]


def _projection(config, fields: tuple[str, ...]):
    """``config`` with every field but ``fields`` (and ``name``, ``preconditioning``, ``seed``)
    at its default: all that a builder sees of its section."""
    names = {field.name for field in dataclasses.fields(config)}
    kept = (name for name in (*fields, *_ALWAYS_READ) if name in names)
    return type(config)(**{name: getattr(config, name) for name in kept})


def _check_read(section: str, config, fields: tuple[str, ...], reader) -> None:
    """Refuse the first field of ``config`` that differs from its projection on ``fields``;
    ``reader(field)`` names what does not read it."""
    projected = _projection(config, fields)
    for field in dataclasses.fields(config):
        if getattr(config, field.name) != getattr(projected, field.name):
            raise ConfigError(
                f"{section}.{field.name}: {reader(field.name)} does not read it; leave it out"
            )


def check_fields_read(config: ExperimentConfig) -> None:
    """Refuse a setting that training would ignore.

    A field of the loss or model section set away from its default that the chosen loss or
    network does not read (:func:`loss_fields`, :func:`model_fields`: ``loss.p_mean`` beside
    the ``loguniform`` law, ``loss.beta_end`` on ``ncsn``, ``model.channels`` on an MLP), or
    ``data.n`` for a source used whole (a file, a folder, ``digits``), ``data.seed`` for one
    used whole without a held-out split, or an image field
    (``data.hflip``, ``data.held_out``, ...) for a built-in target or toy set: the run would
    train other than asked, and say nothing. A saved run's configuration is not checked (it
    may predate a rule).

    Raises:
        ConfigError: naming the first such field and what does not read it.
    """
    drawn = config.data.source in TARGETS or config.data.source in TOY_DATASETS
    if drawn:  # a file's points are refused when read (make_data): its kind is known then
        _refuse_image_fields(config.data)
    folder = not config.data.is_builtin and Path(config.data.source).is_dir()
    if config.data.layout != DataConfig.layout and folder:
        raise ConfigError(
            f"data.layout: applies to an array file; {config.data.source} is a folder, whose "
            "images are read as image files: leave data.layout out"
        )
    if config.data.n != DataConfig.n and not drawn:
        raise ConfigError(
            f"data.n: the number of points drawn from a built-in target or toy set; "
            f"{config.data.source} is used whole: leave data.n out"
        )
    if config.data.seed != DataConfig.seed and not drawn and not config.data.held_out:
        raise ConfigError(
            f"data.seed: seeds a built-in target's draw or a file's held-out split; "
            f"{config.data.source} is used whole with none (data.held_out 0): leave data.seed "
            "out, or set data.held_out"
        )
    loss = config.loss
    laws = set(itertools.chain(*SIGMA_LAW_FIELDS.values()))

    def loss_reader(field: str) -> str:
        if field in laws and "sigma_distribution" in LOSS_FIELDS[loss.name]:
            return f"sigma_distribution {loss.sigma_distribution!r}"
        if field in _BETAS and "schedule" in LOSS_FIELDS[loss.name]:
            return f"schedule {loss.schedule!r}"
        return f"loss {loss.name!r}"

    _check_read("loss", loss, loss_fields(loss), loss_reader)
    model = config.model
    network = f"model {model.resolved(loss)!r}"
    if model.preconditioning != "none":
        network += f" with preconditioning {model.preconditioning!r}"
    _check_read("model", model, model_fields(model, loss), lambda field: network)


def _check_section(config, section: type) -> None:
    """``TypeError`` naming ``config`` unless it is the configuration section ``section`` (a
    dict or a name failed on an attribute deep inside)."""
    check_instance(
        "config",
        config,
        section,
        f"a {section.__name__}",
        remedy="build it with scorelab.config.ExperimentConfig.from_dict and take its section",
    )


def make_target(config: DataConfig) -> GaussianMixture | None:
    """The built-in target with an exact score, or ``None`` for data without one."""
    _check_section(config, DataConfig)
    return TARGETS[config.source]() if config.source in TARGETS else None


def make_data(config: DataConfig) -> np.ndarray:
    """The training data: ``float32 (n, d)`` points, or ``(n, C, H, W)`` images in [-1, 1].

    A built-in target or toy set gives ``n`` draws from ``key(seed)``; images are the training
    part of :func:`make_image_data`.

    Raises:
        FileNotFoundError, DataError: for a file that is missing or not valid data.
        ConfigError: for more memory than available, or image fields on points.
    """
    _check_section(config, DataConfig)
    key = jax.random.key(config.seed)
    if config.source in TARGETS or config.source in TOY_DATASETS:
        target = TARGETS[config.source]() if config.source in TARGETS else None
        dim = target.dim if target is not None else 2
        check_memory("data.n", 4.0 * config.n * dim * 4, "draw fewer points", error=ConfigError)
        if target is not None:
            return np.asarray(target.sample(key, config.n))
        return np.asarray(TOY_DATASETS[config.source](key, config.n))
    if config.is_images:
        return make_image_data(config).images
    _refuse_image_fields(config)
    return load_array(config.source)


def example_shape(config: DataConfig) -> tuple[int, ...]:
    """The shape of one example of :func:`make_data`'s: ``(d,)`` or ``(C, H, W)``, without
    drawing a point or reading pixels: the headers of an image file or folder
    (:func:`scorelab.data.image_shape`) or of a ``.npy`` of points; only a CSV is read whole.

    Raises:
        FileNotFoundError, DataError: for a file that is missing or not valid data.
    """
    _check_section(config, DataConfig)
    if config.source in TARGETS:  # drawing one point compiled the target's sampler: seconds
        return (TARGETS[config.source]().dim,)
    if config.source in TOY_DATASETS:
        return (2,)
    if config.source in IMAGE_SOURCES:
        return 1, IMAGE_SOURCES[config.source], IMAGE_SOURCES[config.source]
    if config.is_images:
        return image_shape(
            config.source, layout=config.layout, array=config.array, labels=config.labels
        )
    if not config.is_builtin and str(config.source).lower().endswith(".npy"):
        shape, _ = npy_header(config.source)
        if len(shape) == 2:  # any other rank is refused as points by make_data, below
            return shape[1:]
    return make_data(dataclasses.replace(config, n=1)).shape[1:]


def _refuse_image_fields(config: DataConfig) -> None:
    """Refuse a field that applies to images only (``layout``, ``pixel_range``, ``array``,
    ``labels``, ``held_out``, ``hflip``), set away from its default, for points."""
    defaults = DataConfig()
    for field in ("layout", "pixel_range", "array", "labels", "held_out", "hflip"):
        if getattr(config, field) != getattr(defaults, field):
            raise ConfigError(
                f"data.{field}: applies to images; {config.source} holds points (n, d)"
            )


def make_image_data(config: DataConfig, split: str = "train") -> ImageData:
    """The training (``"train"``) or held-out (``"test"``) images ``config`` names.

    ``digits`` and ``digits16`` are :func:`scorelab.data.digits` with its fixed split; a file
    or folder is :func:`scorelab.data.load_images`, split by
    :func:`scorelab.data.held_out_split` with ``round(held_out * n)`` images held out by
    ``seed``. The description says which part was taken.

    Raises:
        FileNotFoundError, DataError: for a missing or invalid file, or an empty part.
    """
    if config.source in IMAGE_SOURCES:
        size = IMAGE_SOURCES[config.source]
        images, labels = digits(split, size=size)
        filter_note = "" if size == 8 else ", resized from 8x8 by bicubic"
        description = (
            f"{config.source}: {len(images)} images of 1x{size}x{size} (C x H x W), "
            f"scikit-learn's digits, {split} split{filter_note}, pixel / 8 - 1"
        )
        return ImageData(images, labels, description)
    loaded = load_images(
        config.source,
        layout=config.layout,
        pixel_range=config.pixel_range,
        array=config.array,
        labels=config.labels,
    )
    n = len(loaded.images)
    n_held_out = round(config.held_out * n)
    # A fraction asked for must leave images on both sides, whichever part is taken: a
    # held-out part rounded to nothing would be trained on and reported as held out.
    train, held_out = held_out_split(n, n_held_out, config.seed)
    chosen = held_out if split == "test" else train
    for side, part in (("held-out", held_out), ("training", train)):
        if not len(part) and (config.held_out or part is chosen):
            raise DataError(
                f"data.held_out: the {side} part of {n} images at held_out = {config.held_out} "
                "is empty; choose a fraction that leaves images on both sides"
            )
    if len(chosen) == n:
        return loaded
    labels = None if loaded.labels is None else loaded.labels[chosen]
    part = (
        f"; {split} part: {len(chosen)} of {n} (held_out {config.held_out:g}, seed {config.seed})"
    )
    return ImageData(loaded.images[chosen], labels, loaded.description + part)


def data_scale(data: np.ndarray) -> float:
    """The data's standard deviation over all entries (EDM's ``sigma_data``), 1 for constant
    data (nothing to normalise).

    Raises:
        ValueError: for no data, or data whose standard deviation is not a finite number (NaN
            entries were taken for constant data, and 1e300 gave inf).
    """
    if np.size(data) == 0:
        raise ValueError("data: empty; its scale needs at least one entry")
    with np.errstate(over="ignore", invalid="ignore"):  # refused below, not warned about
        scale = float(np.std(data))
    if not np.isfinite(scale):
        raise ValueError(
            f"data: its standard deviation is {scale} (NaN, or beyond float64); give finite "
            "data of a moderate range"
        )
    return scale if scale > 0 else 1.0


def _record(cls: type, kwargs: dict) -> dict:
    """The model record of a wrapped network (:func:`scorelab.checkpoints.save_model`)."""
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "kwargs": kwargs}


def make_model(config: ModelConfig, loss: LossConfig, data: np.ndarray, key: Array | None = None):
    """A fresh network for ``data`` ``(n, *S)`` and ``loss``, and its constructor arguments.

    The MLPs take an example of any shape ``S`` (an image ``(C, H, W)``) flattened to
    ``d = prod(S)`` inputs, and return the score in that shape. The network sees the fields
    of ``config`` and ``loss`` it reads (:func:`model_fields`, :func:`loss_fields`); the
    others are taken at their defaults.

    Args:
        config: the model section.
        loss: the loss section (``auto`` resolves for it).
        data: ``(n, *S)`` training data, ``(n, d)`` points or ``(n, C, H, W)`` images; its
            standard deviation scales the inputs when ``normalise_input``.
        key: initialisation key; ``None`` uses ``key(config.seed)``.

    Returns:
        ``(model, kwargs)``: the network and what :func:`scorelab.checkpoints.save_model`
        records to rebuild it.
    """
    loss = _projection(loss, loss_fields(loss))
    config = _projection(config, model_fields(config, loss))
    key = jax.random.key(config.seed) if key is None else key
    # Its size first, abstractly: an MLP's first layer grows with the pixels of an image
    # (a 6000x6000 RGB image made a 100 GiB weight matrix).
    network = eqx.filter_eval_shape(lambda: _make_model(config, loss, data, key)[0])
    check_memory(
        f"model ({config.resolved(loss)} for examples of shape {tuple(data.shape[1:])})",
        4.0 * _tree_bytes(network),  # the parameters, their gradient and two optimiser moments
        "use smaller images or a smaller network (for images: --model unet)",
        error=ConfigError,
    )
    return _make_model(config, loss, data, key)


def _make_model(config: ModelConfig, loss: LossConfig, data: np.ndarray, key: Array):
    """:func:`make_model`'s network and record, its sections projected."""
    if config.resolved(loss) == "unet":
        return _make_unet(config, loss, data, key)
    dim = int(np.prod(data.shape[1:]))
    scale = data_scale(data) if config.normalise_input else None
    activation = config.resolved_activation(loss)
    if config.preconditioning == "edm":
        network_kwargs = {
            "dim": dim,
            "widths": list(config.widths),
            "activation": activation,
            "noise_embedding": config.noise_embedding,
        }
        return _edm(models.ConditionalMLP, network_kwargs, data, key)
    if config.resolved(loss) == "mlp":
        kwargs = {
            "dim": dim,
            "input_scale": 1.0 if scale is None else scale,
            "activation": activation,
        }
        return models.MLP(key, **kwargs), kwargs
    kwargs = {
        "dim": dim,
        "scale_by_sigma": config.scale_by_sigma,
        "widths": list(config.widths),
        "sigma_data": scale,
        "activation": activation,
        "noise_embedding": config.noise_embedding,
    }
    return models.NoiseConditionalMLP(key, **kwargs), kwargs


def _edm(network_cls: type, network_kwargs: dict, data: np.ndarray, key: Array):
    """``network_cls(key, **network_kwargs)`` under EDM's preconditioning with ``sigma_data``
    the data's standard deviation, and the record that rebuilds both."""
    kwargs = {"network": _record(network_cls, network_kwargs), "sigma_data": data_scale(data)}
    network = network_cls(key, **network_kwargs)
    return precond.EDMPreconditioned(network, kwargs["sigma_data"]), kwargs


def _make_unet(config: ModelConfig, loss: LossConfig, data: np.ndarray, key: Array):
    """The U-Net for images ``data`` ``(n, C, H, W)``: the VP epsilon model on ``loss``'s
    schedule, or with EDM's preconditioning the raw network :math:`F(c_{in} x, c_{noise})` of
    a VE denoiser."""
    from scorelab.diffusers import UNetNetwork, VPEpsilonUNet

    if data.ndim != 4:
        raise ConfigError(
            f"model.name: 'unet' needs images (n, C, H, W), got data of shape {data.shape}; "
            "use image data (data.source=digits) or model.name=ncsn_mlp"
        )
    (height, width), levels = data.shape[2:], len(config.channels)
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
        # The U-Net's message named its sample_size and the pretrained loader's remedy.
        raise ConfigError(
            f"model.channels: a U-Net of {levels} levels needs images whose height and width "
            f"are multiples of 2 ** ({levels} - 1) = {factor}, and the data's are "
            f"{height}x{width}; use fewer levels (model.channels) or images of another size"
        )
    network_kwargs = {
        "image_shape": list(data.shape[1:]),
        "channels": list(config.channels),
        "layers_per_block": config.layers_per_block,
        "attention_resolutions": list(config.attention_resolutions),
        "norm_groups": config.norm_groups,
        "attention_head_dim": config.attention_head_dim,
    }
    try:
        if config.preconditioning == "edm":
            return _edm(UNetNetwork, network_kwargs, data, key)
        kwargs = {
            **network_kwargs,
            "schedule": loss.schedule,
            "num_train_timesteps": loss.num_train_timesteps,
            "beta_start": loss.beta_start,
            "beta_end": loss.beta_end,
            "dropout": config.dropout,
            "num_classes": config.num_classes,
            "null_class": loss.label_dropout > 0,
        }
        return VPEpsilonUNet(key, **kwargs), kwargs
    except ValueError as error:
        # The U-Net names its own options (attention_head_dim, norm_num_groups): the field
        # that sets each comes first, as for every other field.
        message = str(error)
        reason = message.removeprefix("U-Net options: ")
        for option, field in _UNET_OPTION_FIELDS.items():
            if reason.startswith(f"{option} "):
                raise ConfigError(f"model.{field}: {reason}") from error
            if reason.startswith(f"{option}: "):  # the model's own name for it (pass 25, #9)
                raise ConfigError(f"model.{field}: {reason[len(option) + 2 :]}") from error
        raise ConfigError(f"model: {message}") from error


_UNET_OPTION_FIELDS = {
    "attention_head_dim": "attention_head_dim",
    "norm_num_groups": "norm_groups",
    "layers_per_block": "layers_per_block",
    "block_out_channels": "channels",
    "attention_resolutions": "attention_resolutions",
}
"""The U-Net's option names (``UNet2DModel``'s) and the model fields that set them."""


def make_loss(
    config: LossConfig, sigma_data: float | None = None, null_label: int | None = None
) -> Partial:
    """The per-example loss ``loss_fn(key, score_fn, x)`` with its hyper-parameters bound:
    the fields of ``config`` it reads (:func:`loss_fields`), the others at their defaults.

    Args:
        config: the loss section.
        sigma_data: the data's standard deviation (:func:`data_scale`), which EDM's weighting
            needs; ``None`` for the others.
        null_label: the null class of a class-conditional model (its ``num_classes``), which
            ``label_dropout`` needs.

    Raises:
        ValueError: for EDM's weighting without ``sigma_data``.
    """
    _check_section(config, LossConfig)
    config = _projection(config, loss_fields(config))
    weighting = {}  # the default, NCSN's
    if config.weighting == "edm":
        if sigma_data is None:
            raise ValueError("make_loss: loss.weighting 'edm' needs sigma_data (data_scale)")
        weighting = {"weighting_fn": Partial(losses.edm_weighting, sigma_data=sigma_data)}
    kwargs = {
        "hyvarinen": {},
        "hutchinson": {"n_probes": config.n_probes, "probe": config.probe},
        "sliced": {
            "n_projections": config.n_probes,
            "variance_reduction": config.variance_reduction,
        },
        "dsm": {"sigma": config.sigma},
        "ncsn": {
            "sigma_min": config.sigma_min,
            "sigma_max": config.sigma_max,
            "n_sigmas": config.n_sigmas,
            "sigma_distribution": config.sigma_distribution,
            "p_mean": config.p_mean,
            "p_std": config.p_std,
            **weighting,
        },
        "vp_epsilon": {
            "schedule": config.schedule,
            "num_train_timesteps": config.num_train_timesteps,
            "beta_start": config.beta_start,
            "beta_end": config.beta_end,
            **(
                {"label_dropout": config.label_dropout, "null_label": null_label}
                if config.label_dropout
                else {}
            ),
        },
    }[config.name]
    return Partial(losses.LOSSES[config.name], **kwargs)


def make_sigmas(config: SamplerConfig) -> Array:
    """The ascending grid ``(n_levels,)`` (:func:`scorelab.noise.sigma_grid`)."""
    _check_section(config, SamplerConfig)
    return sigma_grid(config.grid, config.n_levels, config.sigma_min, config.sigma_max, config.rho)


def make_sampler(config: SamplerConfig, target: GaussianMixture | None = None):
    """The sampler ``config`` describes (:func:`scorelab.samplers.build_sampler`).

    Args:
        config: the sampler section.
        target: the target whose exact score is sampled, if any; MALA needs its log-density
            (at the option ``sigma``: the VE-noised marginal's), and refuses without it.

    Raises:
        ConfigError: for MALA without a target, or options the sampler rejects.
    """
    _check_section(config, SamplerConfig)
    options = samplers.sampler_options(config.name, config.options)
    log_density_fn = None
    check_log_density(config, target)
    if samplers.SAMPLERS[config.name].needs_log_density:
        sigma = options.get("sigma", 0.0)
        law = target.ve_marginal(sigma) if sigma > 0 else target
        # One pass for the log-density and the score (MALA's fast path); the score is the same
        # exact score the caller passes to `sample`.
        log_density_fn = law.log_prob_and_score
    try:
        return samplers.build_sampler(
            config.name,
            make_sigmas(config) if config.uses_grid else None,
            log_density_fn=log_density_fn,
            returns_score=log_density_fn is not None,
            **options,
        )
    except ConfigError:
        raise
    except ValueError as error:
        raise sampler_option_error(error, options) from error


def check_log_density(config: SamplerConfig, target: GaussianMixture | None) -> None:
    """Refuse a sampler that needs the target's log-density (MALA) without a ``target``.

    Raises:
        ConfigError: naming ``sampler.name`` and the targets that have one.
    """
    if samplers.SAMPLERS[config.name].needs_log_density and target is None:
        raise ConfigError(
            f"sampler.name: {config.name!r} needs the target's log-density, which only the "
            f"exact score of a built-in target has (--exact {'/'.join(TARGETS)}), not a "
            "trained model"
        )


def make_prior(
    config: SamplerConfig,
    key: Array,
    n: int,
    shape: int | tuple[int, ...],
    target: GaussianMixture | None,
    data=None,
) -> Array:
    """Starting points ``(n, *shape)`` from ``config.prior`` (:func:`draw_prior`).

    The prior's scale is ``sigma_max`` for a sampler that walks a grid, the tutorial's 10 for
    ULA and MALA.

    Args:
        config: the sampler section.
        key: PRNG key.
        n: number of chains.
        shape: one state's shape: ``d`` (or ``(d,)``) for points, ``(C, H, W)`` for images.
        target: the target with an exact score, if any.
        data: ``(m, *shape)`` training data, for ``moments`` without a target, and for the
            check of ``normal`` against the data's spread (:func:`_warn_narrow_prior`).

    Warns:
        UserWarning: for a ``normal`` prior of a grid sampler whose ``sigma_max`` does not
            dominate the spread of the target or ``data``.

    Raises:
        ConfigError: as :func:`draw_prior`.
    """
    sigma = config.sigma_max if config.uses_grid else 10.0
    if config.uses_grid and config.prior == "normal":
        _warn_narrow_prior(sigma, target, data)
    return draw_prior(config.prior, key, n, shape, sigma, target, data)


def _warn_narrow_prior(sigma: float, target: GaussianMixture | None, data) -> None:
    r"""Warn when ``sigma`` does not dominate the data's spread: the ``normal`` prior
    :math:`\mathcal{N}(0, \sigma^2 I)` stands for the noised data :math:`q_\sigma`, whose
    second moment per coordinate is :math:`\sigma^2 + r^2` (:math:`r^2`: the data's mean
    square per coordinate, about 0). Past :math:`r > \sigma / 2` the two differ by more than
    25% in variance, and a deterministic sampler carries that into the samples: on the
    tutorial's mixture (:math:`r = 8.0`) ``sigma_max`` 3 put the mode weights 0.6 in total
    variation from the truth, exit 0 (pass 21D)."""
    if target is not None:
        mean = np.asarray(target.mean(), np.float64)
        square = (mean @ mean + np.trace(np.asarray(target.covariance(), np.float64))) / mean.size
    elif data is not None:
        square = float(np.mean(np.square(np.asarray(data, np.float64))))
    else:
        return
    spread = math.sqrt(square)
    if spread > sigma / 2:
        warnings.warn(
            f"sampler.sigma_max {sigma:g} is not well above the data's spread (root mean "
            f"square {spread:.3g} per coordinate): the normal prior N(0, sigma_max^2 I) is far "
            "from the noised data, and the samples are biased (the modes' weights first); use "
            f"sigma_max >= {2 * spread:.3g}, or prior 'moments' (or 'exact' for a built-in "
            "target)",
            stacklevel=4,
        )


def draw_prior(
    kind: str,
    key: Array,
    n: int,
    shape: int | tuple[int, ...],
    sigma: float,
    target: GaussianMixture | None,
    data=None,
    field: str = "sampler.prior",
) -> Array:
    r"""``n`` starting points ``(n, *shape)`` at noise level ``sigma`` from the prior ``kind``.

    One of :data:`scorelab.config.PRIORS`: ``normal`` draws :math:`\mathcal{N}(0, \sigma^2 I)`,
    ``moments`` :math:`\mathcal{N}(m, C + \sigma^2 I)` (:func:`scorelab.samplers.ve_prior`)
    with the target's exact mean and covariance, or the sample moments of ``data`` without a
    target, and ``exact`` the target's exact marginal :math:`q_\sigma`
    (:func:`scorelab.samplers.exact_prior`). Sample ``i`` depends only on ``fold_in(key, i)``.

    Args:
        kind: ``normal``, ``moments`` or ``exact``.
        key: PRNG key.
        n: number of points.
        shape: one state's shape.
        sigma: the prior's noise level.
        target: the target with an exact score, if any.
        data: ``(m, *shape)`` training data, for ``moments`` without a target.
        field: the setting ``kind`` came from, for messages.

    Raises:
        ConfigError: for ``exact`` without a target, ``moments`` with neither a target nor
            data, or a covariance too large for memory.
    """
    check_prior(kind, target, field)
    if kind == "exact":
        return samplers.exact_prior(key, target, n, sigma)
    if kind == "moments":
        mean, covariance = _moments(target, data, shape, field)
        return samplers.ve_prior(key, n, shape, jnp.float32(sigma), mean, covariance)
    return samplers.ve_prior(key, n, shape, jnp.float32(sigma))


def check_prior(kind: str, target: GaussianMixture | None, field: str = "sampler.prior") -> None:
    """Refuse the prior ``kind`` where it cannot be drawn: ``exact`` needs a ``target``.

    Raises:
        ConfigError: starting ``{field}:``.
    """
    if kind == "exact" and target is None:
        raise ConfigError(f"{field}: 'exact' needs a built-in target with an exact score")


def _moments(target, data, shape, field) -> tuple[Array, Array]:
    """The mean ``shape`` and covariance ``(D, D)`` of the target, or of ``data`` (sample
    moments), for the ``moments`` prior; ``D`` is the size of one state."""
    if target is not None:
        return target.mean(), target.covariance()
    if data is None:
        raise ConfigError(f"{field}: 'moments' needs a target or training data")
    size = int(np.prod(shape))
    check_memory(
        field,
        8.0 * size * (size + np.shape(data)[0]),
        "use prior = 'normal': the data's covariance is too large",
        error=ConfigError,
    )
    flat = np.asarray(data, np.float64).reshape(np.shape(data)[0], size)
    covariance = np.cov(flat, rowvar=False).reshape(size, size)
    return jnp.asarray(flat.mean(0).reshape(shape), jnp.float32), jnp.asarray(
        covariance, jnp.float32
    )
