"""Typed, validated experiment configuration: data, model, loss, sampler (and training).

The schema only: each section describes, :mod:`scorelab.builders` builds. A configuration is
a TOML document with one table per section::

    [data]
    source = "seed_mixture"      # a built-in target, a toy set, digits, or a file / folder
    [model]
    name = "ncsn_mlp"
    [loss]
    name = "ncsn"
    sigma_max = 80.0
    [train]                      # scorelab.training.TrainConfig
    steps = 2000
    [sampler]
    name = "ddim"
    [sampler.options]            # the sampler's own options (scorelab.samplers.options)
    eta = 1.0

:func:`load_config` reads it, :func:`apply_overrides` applies ``section.field=value`` strings
(values parsed as TOML literals; ``sampler.options.eta=0.5`` for a sampler option), and
:meth:`ExperimentConfig.from_dict` reads every section with strict types
(:func:`scorelab._validate.from_mapping`) and a ``ConfigError`` whose message starts with
``section.field:`` and names the accepted values. The CLI is a thin layer over this module.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scorelab import losses, models, samplers
from scorelab._validate import (
    SIGMA_FLOOR,
    SIGMA_LIMIT,
    check_choice,
    check_file,
    check_int,
    check_memory,
    check_real,
    check_seed,
    check_sigma,
    check_unique,
    first_line,
    from_mapping,
    nesting,
    typed,
)
from scorelab.data import (
    IMAGE_LAYOUTS,
    IMAGE_SOURCES,
    MAX_CLASSES,
    PIXEL_RANGES,
    TOY_DATASETS,
    is_image_file,
)
from scorelab.diffusers import MAX_LAYERS_PER_BLOCK
from scorelab.noise import (
    GRIDS,
    VP_SCHEDULES,
    GridMergeError,
    RhoError,
    is_saved_grid,
    read_saved_grid,
    sigma_grid,
    vp_alpha_sigma,
    vp_alphas_cumprod,
    with_saved_range,
)
from scorelab.targets import DIGITS_IMAGE_SHAPE, digits_mixture, seed_mixture
from scorelab.training import TrainConfig, field_defaults

__all__ = [
    "TARGETS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "SamplerConfig",
    "ExperimentConfig",
    "is_builtin_source",
    "load_config",
    "apply_overrides",
]

TARGETS = {"seed_mixture": seed_mixture, "digits_mixture": digits_mixture}
"""Built-in targets with an exact score, by name: the tutorial's 2-D mixture and the 64-D
mixture fitted to scikit-learn's digits (:func:`scorelab.targets.digits_mixture`)."""

TARGET_IMAGE_SHAPES = {"digits_mixture": DIGITS_IMAGE_SHAPE}
"""The image shape ``(C, H, W)`` a flat point of a built-in target reshapes to, for the targets
whose points are images (:data:`scorelab.targets.DIGITS_IMAGE_SHAPE`)."""

TRAIN_RECIPE = TrainConfig(
    steps=5000, learning_rate=1e-3, batch_size=1024, schedule="cosine", ema_decay=0.999
)
"""``scorelab train``'s defaults: the recipe that measured best for the NCSN model on the
tutorial's mixture, the demo's (README, "The demo's result", has the comparison with a constant
rate and no EMA): 5000 Adam steps at batch 1024, cosine decay from 1e-3, EMA 0.999."""

IMAGE_RECIPE = TrainConfig(
    steps=600, learning_rate=1e-3, batch_size=128, steps_per_dispatch=5, unroll=True
)
"""``scorelab train``'s defaults for the U-Net (``model.name = "unet"``, default channels 16-32)
on 8x8 digits: 600 Adam steps at batch 128, constant rate 1e-3, no EMA, in dispatches of 5
unrolled steps (XLA:CPU runs a U-Net's gradient inside a loop body several times slower:
``TrainConfig.unroll``). Of the four recipes ``benchmarks/image_recipe.py`` compares at 300 steps
(a lower rate, warm-up and cosine, EMA), this one has the lowest held-out loss, beyond the
paired standard errors (docs/benchmarks.md, "Image recipes by held-out loss")."""

MODELS = ("auto", "mlp", "ncsn_mlp", "unet")
NOISE_CONDITIONAL_MODELS = ("ncsn_mlp", "unet")
PRECONDITIONINGS = ("none", "edm")
PRIORS = ("normal", "exact", "moments")


class ConfigError(ValueError):
    """An invalid configuration value; the message starts with ``section.field:``."""

    def renamed(self, names: dict[str, str]) -> ConfigError:
        """This error under the name its field has where it was set: the message's first
        prefix among ``names`` replaced by its value (a demo's ``sampler.rho`` is
        ``demo.rho``); unchanged when none matches."""
        text = str(self)
        for field, setting in names.items():
            if text.startswith(field):
                return ConfigError(setting + text[len(field) :])
        return self


def _fail(section: str, field: str, message: str):
    raise ConfigError(f"{section}.{field}: {message}")


def _check_choice(section, field, value, accepted):
    check_choice(f"{section}.{field}", value, accepted, error=ConfigError)


def _check_int(section, field, value, minimum):
    check_int(f"{section}.{field}", value, minimum, error=ConfigError)


def _check_real(section, field, value, accepted: str, test):
    check_real(f"{section}.{field}", value, accepted, test, error=ConfigError)


class SigmaRangeError(ConfigError):
    """``SECTION.sigma_max`` not above ``sigma_min``: a :class:`ConfigError` that carries the
    section and both ends, so a caller that knows which end the user gave can blame that one
    (the message names ``sigma_max``)."""

    def __init__(self, message: str, section: str, sigma_min, sigma_max):
        super().__init__(message)
        self.section, self.sigma_min, self.sigma_max = section, sigma_min, sigma_max


def _check_sigma_range(section: str, sigma_min, sigma_max) -> None:
    """``SECTION.sigma_min`` and ``sigma_max``: finite noise levels, ``0 < min < max``.

    Raises:
        SigmaRangeError: ``sigma_max`` a number, not above ``sigma_min`` (NaN included).
        ConfigError: either is not a finite positive number.
    """
    _check_real(section, "sigma_min", sigma_min, "a number > 0", lambda v: v > 0)
    check_sigma(f"{section}.sigma_min", sigma_min, ConfigError)
    try:
        _check_real(
            section,
            "sigma_max",
            sigma_max,
            f"a number > sigma_min ({sigma_min})",
            lambda v: v > sigma_min,
        )
    except ConfigError as error:
        if isinstance(sigma_max, bool) or not isinstance(sigma_max, int | float):
            raise  # not a number: not a range
        raise SigmaRangeError(str(error), section, sigma_min, sigma_max) from None
    check_sigma(f"{section}.sigma_max", sigma_max, ConfigError)


def is_builtin_source(name: str) -> bool:
    """Whether ``name`` is a built-in target, toy set or image set (:attr:`DataConfig.source`
    names one, or a file)."""
    return name in TARGETS or name in TOY_DATASETS or name in IMAGE_SOURCES


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the training / reference data come from.

    Attributes:
        source: ``"seed_mixture"`` or ``"digits_mixture"`` (targets with an exact score), a
            toy set (``two_moons``, ``swiss_roll``, ``rings``, ``checkerboard``), a built-in
            image set (``digits`` 8x8, ``digits16`` 16x16: :func:`scorelab.data.digits`), or a
            path: a ``.npy`` / ``.csv`` of points ``(n, d)``, or images: an ``.npy`` of rank 3
            or 4, an ``.npz``, or a folder of PNG/JPEG files
            (:func:`scorelab.data.load_images`).
        n: number of points drawn from a built-in target or toy set (the tutorial uses 10 000).
        seed: seed of the draw (``sample(key(seed), n)``), and of a file's held-out split.
        layout: images: ``auto`` (inferred from a channel axis of size 1, 3 or 4), ``NHWC`` or
            ``NCHW``.
        pixel_range: images: the stored range mapped onto [-1, 1]: ``auto``, ``0-255``,
            ``0-1`` or ``-1-1``.
        array: images: the ``.npz`` key of the images (default: its only array).
        labels: images: the ``.npz`` key of integer labels (a folder's labels are its
            sub-folders).
        held_out: images from a file or folder: the fraction held out of training, by
            ``seed`` (:func:`scorelab.data.held_out_split`); ``digits`` have a fixed split.
        hflip: images: flip each training example left-right with probability 1/2, drawn
            from the batch key (a training augmentation; see :func:`scorelab.training.train`).
    """

    source: str = "seed_mixture"
    n: int = 10_000
    seed: int = 0
    layout: str = "auto"
    pixel_range: str = "auto"
    array: str | None = None
    labels: str | None = None
    held_out: float = 0.0
    hflip: bool = False

    def __post_init__(self):
        _check_int("data", "n", self.n, 1)
        check_seed("data.seed", self.seed, error=ConfigError)
        _check_choice("data", "layout", self.layout, IMAGE_LAYOUTS)
        _check_choice("data", "pixel_range", self.pixel_range, PIXEL_RANGES)
        _check_real("data", "held_out", self.held_out, "a number in [0, 1)", lambda v: 0 <= v < 1)
        if not isinstance(self.source, str) or not self.source.strip():
            # Path("") is the current folder, which would be read as a folder of images.
            _fail("data", "source", f"expected a built-in name or a path, got {self.source!r}")
        suffix = Path(self.source).suffix.lower()
        if not self.is_builtin and suffix not in (".npy", ".csv", ".npz"):
            path = Path(self.source)
            if path.exists() and not path.is_dir():  # /dev/null was 'no such file or folder'
                try:
                    check_file(path, "data file", ConfigError)
                except ConfigError as error:  # named as the field it is, not "data./dev/null"
                    _fail("data", "source", str(error))
            if path.is_file():
                _fail("data", "source", f"{path}: unsupported file type; give a .npy, .csv or "
                      ".npz file, or a folder of PNG/JPEG images")  # fmt: skip
            if not path.is_dir() and len(path.parts) > 1:
                _fail("data", "source", f"{path}: no such file or folder; check the path")
            if not path.is_dir():
                accepted = ", ".join(
                    [*TARGETS, *TOY_DATASETS, *IMAGE_SOURCES, "a .npy/.csv/.npz path or a folder"]
                )
                _fail("data", "source", f"unknown source {self.source!r}; accepted: {accepted}")
        if self.source in IMAGE_SOURCES:
            if self.held_out:
                _fail("data", "held_out", f"{self.source} has a fixed held-out split; leave it 0")
            file_fields = {"layout": "auto", "pixel_range": "auto", "array": None, "labels": None}
            for field, default in file_fields.items():
                if getattr(self, field) != default:
                    _fail("data", field, f"applies to image files, not the built-in {self.source}")

    @property
    def is_builtin(self) -> bool:
        """Whether ``source`` names a built-in target, toy set or image set (not a file)."""
        return is_builtin_source(self.source)

    @property
    def target_image_shape(self) -> tuple[int, ...] | None:
        """The image shape ``(C, H, W)`` a flat point of this built-in target reshapes to
        (:data:`TARGET_IMAGE_SHAPES`: ``digits_mixture``'s 8x8), else ``None``."""
        return TARGET_IMAGE_SHAPES.get(self.source)

    @property
    def is_images(self) -> bool:
        """Whether ``source`` is image data (a built-in image set, or an image file or folder:
        :func:`scorelab.data.is_image_file`, which reads an ``.npy``'s header)."""
        if self.source in IMAGE_SOURCES:
            return True
        return not self.is_builtin and is_image_file(self.source)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    r"""The score network.

    Attributes:
        name: ``"mlp"`` (unconditional, for Hyvarinen / sliced / DSM at one sigma),
            ``"ncsn_mlp"`` (noise-conditional, for the NCSN objective), ``"unet"`` (diffusers'
            ``UNet2DModel``, for image data ``(N, C, H, W)``: predicting the noise on the
            ``vp_epsilon`` loss, :class:`scorelab.diffusers.VPEpsilonUNet`, or with
            ``preconditioning = "edm"`` a VE denoiser on the ``ncsn`` loss), or ``"auto"``
            (the one the loss needs).
        scale_by_sigma: for ``ncsn_mlp``, divide the output by sigma (Song & Ermon 2020).
        normalise_input: feed the network inputs of unit scale: ``mlp`` divides ``x`` by the
            data's standard deviation (``input_scale``), ``ncsn_mlp`` multiplies it by
            ``1/sqrt(sigma^2 + sigma_data^2)`` with ``sigma_data`` the data's standard
            deviation (EDM's c_in). ``false`` is the tutorial's raw input; see
            :class:`scorelab.models.MLP` for why it matters.
        activation: hidden activation (:data:`scorelab.models.ACTIVATIONS`), or ``"auto"``:
            ``silu`` for the Jacobian-trace losses (Hyvarinen, Hutchinson, sliced), which a
            piecewise-linear network cannot optimise well (see :mod:`scorelab.models`), and the
            tutorial's ``leaky_relu`` otherwise.
        widths: ``ncsn_mlp``: the three hidden layers' widths (the tutorial's 256-512-256).
        noise_embedding: for ``ncsn_mlp``, how the noise level enters the network
            (:data:`scorelab.models.NOISE_EMBEDDINGS`): ``concat`` (the tutorial's: appended
            to the input) or ``positional`` (EDM's: a sinusoidal embedding added to every
            hidden layer; :class:`scorelab.models.ConditionalMLP`).
        preconditioning: ``"none"``, or ``"edm"`` for a noise-conditional network on the
            ``ncsn`` loss (``ncsn_mlp`` or ``unet``): EDM's denoiser
            :math:`c_{skip} x + c_{out} F(c_{in} x, c_{noise})` around the raw network, called
            as its score, with ``sigma_data`` the data's standard deviation
            (:class:`scorelab.precond.EDMPreconditioned`); ``scale_by_sigma`` and
            ``normalise_input`` then do not apply. The U-Net receives
            :math:`c_{noise} = \tfrac14 \ln\sigma` as its timestep
            (:class:`scorelab.diffusers.UNetNetwork`).
        seed: initialisation seed.
        channels: ``unet``: channels per level (diffusers' ``block_out_channels``).
        layers_per_block: ``unet``: residual blocks per level.
        attention_resolutions: ``unet``: resolutions whose blocks have self-attention (the
            middle block always has); a level's resolution is its height.
        norm_groups: ``unet``: group-norm groups; divides every ``channels`` entry.
        attention_head_dim: ``unet``: channels per attention head.
        dropout: ``unet``: dropout rate in ``[0, 1)`` of the residual blocks (diffusers'
            ``dropout``), in training only.
        num_classes: ``unet``: a class-conditional model of the data's integer labels
            ``0 .. num_classes - 1`` (diffusers' class embedding), or unset (unconditional).
    """

    name: str = "auto"
    scale_by_sigma: bool = True
    normalise_input: bool = True
    activation: str = "auto"
    widths: tuple[int, int, int] = (256, 512, 256)
    noise_embedding: str = "concat"
    preconditioning: str = "none"
    seed: int = 0
    channels: tuple[int, ...] = (16, 32)
    layers_per_block: int = 1
    attention_resolutions: tuple[int, ...] = ()
    norm_groups: int = 8
    attention_head_dim: int = 8
    dropout: float = 0.0
    num_classes: int | None = None

    def __post_init__(self):
        _check_choice("model", "name", self.name, MODELS)
        _check_choice("model", "preconditioning", self.preconditioning, PRECONDITIONINGS)
        _check_choice("model", "activation", self.activation, ("auto", *models.ACTIVATIONS))
        _check_choice("model", "noise_embedding", self.noise_embedding, models.NOISE_EMBEDDINGS)
        if len(self.widths) != 3:
            _fail(
                "model",
                "widths",
                f"expected three hidden widths, e.g. [256, 512, 256], got {list(self.widths)}",
            )
        for width in self.widths:
            _check_int("model", "widths", width, 1)
        check_seed("model.seed", self.seed, error=ConfigError)
        if not self.channels:
            _fail("model", "channels", "expected at least one level, e.g. [32, 64]")
        for channels in self.channels:
            _check_int("model", "channels", channels, 1)
        _check_int("model", "layers_per_block", self.layers_per_block, 1)
        if self.layers_per_block > MAX_LAYERS_PER_BLOCK:  # the U-Net's own bound, by its field
            _fail(
                "model",
                "layers_per_block",
                f"expected at most {MAX_LAYERS_PER_BLOCK}, got {self.layers_per_block}",
            )
        for resolution in self.attention_resolutions:
            _check_int("model", "attention_resolutions", resolution, 1)
        check_unique("model.attention_resolutions", self.attention_resolutions, ConfigError)
        _check_int("model", "norm_groups", self.norm_groups, 1)
        _check_int("model", "attention_head_dim", self.attention_head_dim, 1)
        if self.name == "unet" and any(c % self.norm_groups for c in self.channels):
            # Found here, not when the U-Net is built after the data are loaded; and named by
            # the fields a configuration sets (the image demo's renames model.channels).
            _fail(
                "model",
                "channels",
                f"every entry must be a multiple of the U-Net's norm groups, {self.norm_groups} "
                f"(model.norm_groups of a train configuration), got {list(self.channels)}",
            )
        _check_real("model", "dropout", self.dropout, "a number in [0, 1)", lambda v: 0 <= v < 1)
        if self.num_classes is not None:
            _check_int("model", "num_classes", self.num_classes, 2)
            if self.num_classes > MAX_CLASSES:  # diffusers' UNet2DModel's num_class_embeds
                raise ConfigError(
                    f"model.num_classes: at most {MAX_CLASSES} classes, got "
                    f"{self.num_classes}; give the number of distinct labels of the data"
                )

    def resolved(self, loss: LossConfig) -> str:
        """The network name, with ``auto`` resolved for ``loss``."""
        if self.name != "auto":
            return self.name
        return "ncsn_mlp" if loss.needs_noise_conditional_model else "mlp"

    def resolved_activation(self, loss: LossConfig) -> str:
        """The hidden activation, with ``auto`` resolved for ``loss``."""
        if self.activation != "auto":
            return self.activation
        return "silu" if loss.uses_jacobian_trace else "leaky_relu"


@dataclasses.dataclass(frozen=True)
class LossConfig:
    r"""The training objective and its hyper-parameters (see :mod:`scorelab.losses`).

    Attributes:
        name: ``hyvarinen``, ``hutchinson``, ``sliced``, ``dsm``, ``ncsn`` or ``vp_epsilon``
            (DDPM's noise prediction on a diffusers schedule).
        sigma: DSM noise level (the tutorial's 1.0).
        sigma_min, sigma_max: NCSN noise range.
        n_sigmas: NCSN noise levels per data point (the tutorial's 2).
        sigma_distribution: NCSN sigma draw, ``loguniform`` (the demo's recipe) or
            ``lognormal`` (:math:`\log\sigma \sim \mathcal{N}(P_{mean}, P_{std}^2)`).
        p_mean, p_std: the ``lognormal`` law of :math:`\log\sigma`; the defaults -0.5, 1.2
            are the tutorial's, EDM's -1.2, 1.2 (Karras et al. 2022, for data of standard
            deviation 0.5).
        weighting: NCSN weighting :math:`\lambda(\sigma)`: ``ncsn`` (:math:`\sigma^2`) or
            ``edm`` (EDM's, with ``sigma_data`` the data's standard deviation; see
            :func:`scorelab.losses.edm_weighting`).
        n_probes: Hutchinson probes / sliced projections per example.
        probe: Hutchinson probe law, ``rademacher`` or ``gaussian``.
        variance_reduction: sliced score matching's variance-reduced form (SSM-VR).
        schedule: ``vp_epsilon``: diffusers' ``beta_schedule``
            (:data:`scorelab.noise.VP_SCHEDULES`).
        num_train_timesteps: ``vp_epsilon``: the schedule's ``T``.
        beta_start, beta_end: ``vp_epsilon``: the (scaled) linear schedule's end points.
        label_dropout: ``vp_epsilon`` with a class-conditional model: the probability
            :math:`p_\mathrm{uncond}` of training on the null label instead of the example's,
            for classifier-free guidance (Ho & Salimans 2022); 0 trains no null label.
    """

    name: str = "ncsn"
    sigma: float = 1.0
    sigma_min: float = samplers.DEFAULT_SIGMA_MIN
    sigma_max: float = samplers.DEFAULT_SIGMA_MAX
    n_sigmas: int = 2
    sigma_distribution: str = "loguniform"
    p_mean: float = losses.LOG_SIGMA_MEAN
    p_std: float = losses.LOG_SIGMA_STD
    weighting: str = "ncsn"
    n_probes: int = 1
    probe: str = "rademacher"
    variance_reduction: bool = False
    schedule: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    label_dropout: float = 0.0

    def __post_init__(self):
        _check_choice("loss", "name", self.name, tuple(losses.LOSSES))
        _check_real("loss", "sigma", self.sigma, "a number > 0", lambda v: v > 0)
        check_sigma("loss.sigma", self.sigma, ConfigError)
        _check_sigma_range("loss", self.sigma_min, self.sigma_max)
        _check_int("loss", "n_sigmas", self.n_sigmas, 1)
        _check_choice(
            "loss", "sigma_distribution", self.sigma_distribution, losses.SIGMA_DISTRIBUTIONS
        )
        _check_real("loss", "p_mean", self.p_mean, "a number", lambda v: True)
        _check_real("loss", "p_std", self.p_std, "a number > 0", lambda v: v > 0)
        if self.sigma_distribution == "lognormal":
            # Draws are clipped to [sigma_min, sigma_max]: a law beyond the range by 3 p_std
            # puts all but 0.13% of them on one end point, one noise level.
            low = math.log(self.sigma_min) - 3 * self.p_std
            high = math.log(self.sigma_max) + 3 * self.p_std
            _check_real(
                "loss",
                "p_mean",
                self.p_mean,
                f"a number in [{low:.3g}, {high:.3g}] (ln sigma_min - 3 p_std, ln sigma_max + "
                "3 p_std): farther out, every lognormal draw is clipped to one end of the range",
                lambda v: low <= v <= high,
            )
        _check_choice("loss", "weighting", self.weighting, losses.WEIGHTINGS)
        _check_int("loss", "n_probes", self.n_probes, 1)
        _check_choice("loss", "probe", self.probe, losses.PROBES)
        _check_choice("loss", "schedule", self.schedule, VP_SCHEDULES)
        _check_int("loss", "num_train_timesteps", self.num_train_timesteps, 2)
        check_memory(  # the schedule's few float64 arrays of T entries
            "loss.num_train_timesteps",
            8.0 * 8 * self.num_train_timesteps,
            "use fewer timesteps (DDPM's 1000 is the usual)",
            error=ConfigError,
        )
        _check_real(
            "loss", "beta_start", self.beta_start, "a number in (0, 1)", lambda v: 0 < v < 1
        )
        _check_real(
            "loss",
            "beta_end",
            self.beta_end,
            f"a number in (beta_start ({self.beta_start}), 1)",
            lambda v: self.beta_start < v < 1,
        )
        _check_real(
            "loss", "label_dropout", self.label_dropout, "a number in [0, 1)", lambda v: 0 <= v < 1
        )
        if self.name == "vp_epsilon":
            self._check_vp_range()

    def _check_vp_range(self) -> None:
        """Refuse a VP schedule whose VE levels ``sqrt((1 - a) / a)`` float32 cannot hold: the
        sampler inherits them, and ``sampler.sigma_max: ... got inf`` blamed a field nobody set
        (``beta_end = 0.9``: the cumulative product underflows)."""
        low, high = self.sigma_range
        schedule = (
            f"the {self.schedule!r} schedule of {self.num_train_timesteps} steps reaches VE "
            f"levels from {low:.3g} to {high:.3g} (sqrt((1 - alpha_bar) / alpha_bar))"
        )
        betas = self.schedule in ("linear", "scaled_linear")
        if not (math.isfinite(high) and high <= SIGMA_LIMIT):
            fix = "a smaller beta_end or fewer" if betas else "fewer"
            longer = self.num_train_timesteps > LossConfig.num_train_timesteps  # than DDPM's
            field = "beta_end" if betas and not longer else "num_train_timesteps"
            _fail("loss", field, f"{schedule}, beyond float32's; give {fix} num_train_timesteps")
        if not low >= SIGMA_FLOOR:
            field = "beta_start" if betas else "num_train_timesteps"
            fix = "a larger beta_start" if betas else "fewer num_train_timesteps"
            _fail("loss", field, f"{schedule}, below float32's; give {fix}")

    @property
    def needs_noise_conditional_model(self) -> bool:
        r"""Whether the loss trains :math:`s_\theta(x, \sigma)` over many sigmas (NCSN,
        VP epsilon)."""
        return self.name in ("ncsn", "vp_epsilon")

    @property
    def sigma_range(self) -> tuple[float, float]:
        r"""The VE levels the loss trains over: ``(sigma_min, sigma_max)``, for ``vp_epsilon``
        the schedule's :math:`\sqrt{(1 - \bar\alpha_t) / \bar\alpha_t}` at ``t = 0`` and
        ``T - 1``."""
        if self.name != "vp_epsilon":
            return self.sigma_min, self.sigma_max
        alphas_cumprod = vp_alphas_cumprod(
            self.schedule, self.num_train_timesteps, self.beta_start, self.beta_end
        )
        with jax.ensure_compile_time_eval():  # numbers, even read under a trace (eval_shape)
            sigmas = samplers.ve_sigmas_from_vp(*vp_alpha_sigma(alphas_cumprod))
            return float(sigmas[0]), float(sigmas[-1])

    @property
    def uses_jacobian_trace(self) -> bool:
        r"""Whether the loss contains :math:`\operatorname{tr} \nabla_x s_\theta(x)` (Hyvarinen,
        Hutchinson, sliced), which needs a smooth hidden activation."""
        return self.name in ("hyvarinen", "hutchinson", "sliced")


def typed_sampler_options(name: str, options: dict[str, Any], field: str) -> dict[str, Any]:
    """``options`` of the sampler ``name``: options it takes
    (:func:`scorelab.samplers.sampler_options`), each of the type it declares
    (:func:`scorelab.samplers.options`; :func:`scorelab._validate.typed`), an integer below
    2**31 (options enter the compiled samplers as int32), a float finite in float32 (``inf``
    only for an unbounded option, ``s_tmax``).

    Raises:
        ConfigError: starting ``{field}:`` for an unknown sampler or option (or the new
            spelling of a former one), ``{field}.{option}:`` for a value.
    """
    try:
        samplers.sampler_options(name, options)
    except ValueError as error:  # an unknown option, by its field
        raise sampler_option_error(error, options, field) from error
    declared = {option.name: option for option in samplers.options(name)}
    checked = {
        option: typed(declared[option].type, value, f"{field}.{option}", error=ConfigError)
        for option, value in options.items()
    }
    for option, value in checked.items():
        try:
            samplers.check_option(declared[option], value, f"{field}.{option}")
        except ValueError as error:  # the library's message, as a configuration's error
            raise ConfigError(str(error)) from error
    return checked


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """A sampler, its grid and its options (see :mod:`scorelab.samplers`).

    Attributes:
        name: a key of :data:`scorelab.samplers.SAMPLERS` (``scorelab sample --help`` lists
            them with their options).
        n_levels: number of sigma levels N of the grid (samplers that walk one).
        nfe: a budget of score evaluations per chain instead of a grid size (0: none): when
            given, ``n_levels`` becomes the largest grid whose NFE fits it, from the sampler's
            own cost (:func:`scorelab.samplers.budget_levels`), so that samplers compare at
            equal work.
        grid: ``geometric`` (scorelab's default, see :func:`scorelab.samplers.default_sigmas`),
            ``karras`` (the tutorial's, with ``rho``), ``vp`` (uniform in t for the VP SDE) or
            ``polyexponential`` (k-diffusion's, with ``rho`` its exponent), or a saved
            optimised grid, ``ays:NAME`` (bundled) or a ``.json`` file (``scorelab grid``).
        sigma_min, sigma_max, rho: the grid's range and Karras curvature; the tutorial's
            sigma_max is 10, scorelab's default 80 (10 is too small for modes at +-10). A
            configuration whose loss trains over a sigma range (NCSN) samples over that range
            unless these are given.
        prior: ``normal`` (x_T ~ N(0, sigma_max^2 I); ULA and MALA start from N(0, 100 I) as
            in the tutorial), ``exact`` (x_T from the exact q at sigma_max; needs a target) or
            ``moments`` (x_T ~ N(m, C + sigma_max^2 I), the Gaussian with the moments of q at
            sigma_max: the target's m and C, or the training data's sample moments).
        options: the sampler's own options, name -> value
            (:func:`scorelab.samplers.options`); the others keep their defaults.
    """

    name: str = "ddim"
    n_levels: int = 100
    nfe: int = 0
    grid: str = "geometric"
    sigma_min: float = samplers.DEFAULT_SIGMA_MIN
    sigma_max: float = samplers.DEFAULT_SIGMA_MAX
    rho: float = 5.0
    prior: str = "normal"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.name not in samplers.SAMPLERS:
            try:
                samplers.options(self.name)  # a former name: its new spelling
            except ValueError as error:
                _fail("sampler", "name", str(error))
        checked = typed_sampler_options(self.name, self.options, "sampler.options")
        object.__setattr__(self, "options", checked)  # a copy: never a shared default's dict
        _check_int("sampler", "n_levels", self.n_levels, 2)
        _check_int("sampler", "nfe", self.nfe, 0)
        if self.nfe:
            object.__setattr__(self, "n_levels", self._budget_levels())
        # A grid and each sampler's per-step schedule hold a few floats per level.
        check_memory(
            "sampler.nfe" if self.nfe else "sampler.n_levels",
            self.n_levels * 4.0 * 64,
            "use fewer score evaluations" if self.nfe else "use fewer levels",
            error=ConfigError,
        )
        if not is_saved_grid(self.grid) and self.grid not in GRIDS:
            _fail(  # the saved forms too (a folder was told only the four names)
                "sampler",
                "grid",
                f"unknown value {self.grid!r}; accepted: {', '.join(GRIDS)}, ays:NAME (a "
                "bundled grid) or a .json grid file (scorelab grid makes one)",
            )
        _check_sigma_range("sampler", self.sigma_min, self.sigma_max)
        if is_saved_grid(self.grid):
            # The whole file is read here, so a bad grid fails before any model is loaded.
            low, high = _saved_grid_range(self.grid)
            if not np.allclose([self.sigma_min, self.sigma_max], [low, high], rtol=1e-6, atol=0):
                _fail(
                    "sampler",
                    "grid",
                    f"{self.grid!r} spans [{low:g}, {high:g}], but sigma_min, sigma_max are "
                    f"{self.sigma_min:g}, {self.sigma_max:g}; set sampler.sigma_min = {low:g} "
                    f"and sampler.sigma_max = {high:g} (--sigma-min, --sigma-max)",
                )
        _check_real("sampler", "rho", self.rho, "a number > 0", lambda v: v > 0)
        _check_choice("sampler", "prior", self.prior, PRIORS)
        self._check_buildable()

    def _check_buildable(self) -> None:
        """Build the grid and the sampler once, so that what a sampler refuses (an option out
        of its range, a grid that overflows or whose levels merge) is refused when the
        configuration is read: ``scorelab train`` saved such samplers, and every later
        ``scorelab sample --run`` refused them. MALA's log-density comes with the target when
        sampling; a stand-in serves to check its options. A warning (a step beyond its
        stability bound) is the sampler's to issue when it samples."""
        stand_in = _no_log_density if samplers.SAMPLERS[self.name].needs_log_density else None
        # numbers, even built under a trace (eval_shape); the warnings are the sampler's
        with jax.ensure_compile_time_eval(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigmas = None
            if self.uses_grid:
                try:
                    sigmas = sigma_grid(
                        self.grid, self.n_levels, self.sigma_min, self.sigma_max, self.rho
                    )
                except GridMergeError as error:  # levels, range and rho together
                    raise ConfigError(f"sampler: {first_line(error)}") from None
                except ValueError as error:
                    message = first_line(error)
                    _fail("sampler", "rho" if isinstance(error, RhoError) else "grid", message)
            try:
                samplers.build_sampler(self.name, sigmas, log_density_fn=stand_in, **self.options)
            except ValueError as error:
                raise sampler_option_error(error, self.options) from None

    @property
    def uses_grid(self) -> bool:
        """Whether the sampler walks a sigma grid (all but ULA and MALA)."""
        return samplers.SAMPLERS[self.name].uses_grid

    def _budget_levels(self) -> int:
        """The largest grid within ``nfe`` evaluations, or a one-line error naming why none."""
        levels = samplers.budget_levels(self.name, self.nfe, self.options)
        if levels is None:
            _fail(
                "sampler",
                "nfe",
                f"sampler {self.name!r} has no fixed grid to size by a budget (no grid, or an "
                "adaptive one); remove nfe",
            )
        if levels < 2:
            smallest = self.nfe + 1
            while samplers.budget_levels(self.name, smallest, self.options) < 2:
                smallest += 1
            _fail(
                "sampler",
                "nfe",
                f"a budget of {self.nfe} evaluations is too small for "
                f"{samplers.label(self.name, self.options)}, whose smallest grid (2 levels) "
                f"takes {smallest}; raise nfe",
            )
        return levels


def _no_log_density(x):
    """A stand-in log-density for MALA, to check its options: never evaluated."""
    raise AssertionError("a stand-in log-density was evaluated")


def sampler_option_error(
    error: ValueError, options: dict[str, Any], field: str = "sampler.options"
) -> ConfigError:
    """A sampler's ``ValueError`` as a configuration error: a sampler names a bad value by its
    option (``n_steps must be ...``), so the field of that option comes first, as for every
    other field (and the command's flag for it); a message about several (``need 0 <= s_tmin
    <= s_tmax``, an unknown ``'eta'``) under the first given option it names; others under
    ``field`` (the options' table)."""
    message, where = first_line(error), field
    named = [option for option in options if message.startswith(f"{option} ")]
    # else the first option given that the message names ("need 0 <= s_tmin <= s_tmax")
    named = named or [o for o in options if re.search(rf"\b{re.escape(o)}\b", message)][:1]
    if named:
        option = max(named, key=len)
        where = f"{where}.{option}"
        if message.startswith(f"{option} must "):  # said once: "FIELD: must be ..."
            message = message[len(option) + 1 :]
    return ConfigError(f"{where}: {message}")


def _saved_grid_range(grid: str) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` of a saved grid, or a ``sampler.grid`` error naming why not."""
    try:
        sigmas = read_saved_grid(grid)
    except ValueError as error:
        _fail("sampler", "grid", str(error))
    return float(sigmas[0]), float(sigmas[-1])


def _check_model_and_loss(model: ModelConfig, loss: LossConfig) -> None:
    """Refuse a network the loss cannot train, or a preconditioning the network cannot take.

    The U-Net is two models: with ``preconditioning = "none"`` DDPM's noise predictor on the
    ``vp_epsilon`` loss's schedule (:class:`scorelab.diffusers.VPEpsilonUNet`), with ``"edm"``
    a VE denoiser trained by the ``ncsn`` loss
    (:class:`scorelab.precond.EDMPreconditioned` around :class:`scorelab.diffusers.UNetNetwork`).
    """
    resolved = model.resolved(loss)
    if loss.needs_noise_conditional_model != (resolved in NOISE_CONDITIONAL_MODELS):
        wanted = "ncsn_mlp" if loss.needs_noise_conditional_model else "mlp"
        _fail("model", "name", f"loss {loss.name!r} trains model {wanted!r}, got {model.name!r}")
    if model.preconditioning != "none" and resolved not in NOISE_CONDITIONAL_MODELS:
        _fail(
            "model",
            "preconditioning",
            f"{model.preconditioning!r} wraps a noise-conditional network (loss 'ncsn'), not "
            f'{resolved!r}; set model.preconditioning = "none"',
        )
    if loss.name == "vp_epsilon" and model.preconditioning == "edm":
        _fail(
            "model",
            "preconditioning",
            "'edm' makes the network a VE denoiser trained by loss 'ncsn', not a noise "
            "predictor on the vp_epsilon schedule; set loss.name=ncsn, or "
            'model.preconditioning="none"',
        )
    for field, unset in (("dropout", 0.0), ("num_classes", None)):
        if getattr(model, field) != unset and (resolved, model.preconditioning) != ("unet", "none"):
            _fail(
                "model",
                field,
                'applies to model.name = "unet" with preconditioning "none", not '
                + (
                    f"{resolved!r}; leave it out"
                    if resolved != "unet"
                    else f"preconditioning {model.preconditioning!r}; leave it out, or set "
                    'model.preconditioning="none" (with loss.name=vp_epsilon)'
                ),
            )
    if loss.label_dropout and model.num_classes is None:
        _fail(
            "loss",
            "label_dropout",
            "drops class labels of a class-conditional model; set model.num_classes",
        )
    if resolved == "unet" and loss.name != "vp_epsilon" and model.preconditioning != "edm":
        _fail(
            "model",
            "name",
            f"'unet' predicts the noise on the vp_epsilon loss's schedule, or is a VE denoiser "
            f"with model.preconditioning=edm; set loss.name=vp_epsilon or "
            f"model.preconditioning=edm (got loss {loss.name!r})",
        )


def _sampler_table(table: Any) -> Any:
    """The ``[sampler]`` table with the flat option keys of earlier versions (``e = 1.0`` beside
    ``name``) moved into ``options``; a renamed option fails naming its new spelling there."""
    if not isinstance(table, dict):
        return table
    fields = {field.name for field in dataclasses.fields(SamplerConfig)}
    flat = {key: value for key, value in table.items() if key not in fields}
    if not flat:
        return table
    kept = {key: value for key, value in table.items() if key in fields}
    options = kept.get("options") or {}
    if isinstance(options, dict):  # else from_mapping names the table's type
        for key in flat.keys() & options.keys():
            if options[key] != flat[key]:  # the flat value was dropped without a word
                raise ConfigError(
                    f"sampler.{key}: given as {flat[key]!r} and as sampler.options.{key} = "
                    f"{options[key]!r}; give it once, as sampler.options.{key}"
                )
        return {**kept, "options": {**flat, **options}}
    return {**kept, "options": options}


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "sampler": SamplerConfig,
}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """All sections of an experiment."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TRAIN_RECIPE
    # Built on demand: a SamplerConfig builds its grid (JAX work), and a default built when this
    # module is imported started JAX's backend before `jax.distributed.initialize`.
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from nested mappings (:func:`scorelab._validate.from_mapping` per section).

        A loss that trains over a sigma range (NCSN) sets the sampler's range unless the
        ``[sampler]`` table gives ``sigma_min`` / ``sigma_max``: a model is sampled over the
        levels it learned. A loss of one law (Hyvarinen, Hutchinson, sliced, DSM) samples with
        ``ula`` unless the table names a sampler: the default DDIM walks a grid of levels that
        model does not know. The ``[train]`` fields not given are :data:`TRAIN_RECIPE`'s, or
        :data:`IMAGE_RECIPE`'s for the U-Net.

        Raises:
            ConfigError: for a non-mapping, an unknown section or field, a value of the wrong
                type or range, or a model that does not match the loss.
        """
        if not isinstance(values, dict):
            raise ConfigError(
                f"configuration: expected a table of sections, got {type(values).__name__}"
            )
        unknown = sorted(set(values) - set(_SECTIONS))
        if unknown:
            name = unknown[0] if str(unknown[0]).isidentifier() else repr(unknown[0])
            raise ConfigError(f"{name}: unknown section; accepted: {', '.join(_SECTIONS)}")
        tables = {**values, "sampler": _sampler_table(values.get("sampler", {}))}
        sections, implied = {}, ""
        for name, section_cls in _SECTIONS.items():
            table = tables.get(name, {})
            if name == "sampler" and isinstance(table, dict):
                grid = table.get("grid")
                if isinstance(grid, str) and is_saved_grid(grid):
                    # A saved grid carries its range: a run's or the loss's does not apply;
                    # and its levels, unless others are asked for (it was interpolated to the
                    # default 100: a 4-level optimised grid sampled 100 levels).
                    table = with_saved_range(table, levels=True)
                elif sections["loss"].needs_noise_conditional_model:
                    sigma_min, sigma_max = sections["loss"].sigma_range
                    table = {"sigma_min": sigma_min, "sigma_max": sigma_max, **table}
                elif "name" not in table:  # one law's score: ULA (the default DDIM walks a grid)
                    table = {"name": "ula", **table}
                    implied = f" (ula: the sampler of loss {sections['loss'].name!r} unless named)"
            base = getattr(cls, name, None)  # the section's defaults (the training recipe)
            if name == "train" and sections["model"].resolved(sections["loss"]) == "unet":
                base = IMAGE_RECIPE
            try:
                sections[name] = from_mapping(
                    section_cls, table, name, base=base, error=ConfigError
                )
            except ConfigError as error:  # a sampler's refusal of ULA's options: say why ULA
                if name == "sampler" and implied:
                    raise ConfigError(f"{error}{implied}") from None
                raise
        config = cls(**sections)
        _check_model_and_loss(config.model, config.loss)
        return config

    def levels_beyond_training(self) -> str | None:
        """What the sampling grid asks of noise levels that a noise-conditional loss never
        trained: one sentence when ``sampler.sigma_min``/``sigma_max`` lie outside the loss's
        :attr:`LossConfig.sigma_range` (allowed: a model's scores there are extrapolations, and
        ``scorelab sample`` prints it as a note), else ``None``, as for a loss of one law or a
        sampler without a grid."""
        if not (self.loss.needs_noise_conditional_model and self.sampler.uses_grid):
            return None
        low, high = self.loss.sigma_range
        sigma_min, sigma_max = self.sampler.sigma_min, self.sampler.sigma_max
        if sigma_min >= low * (1 - 1e-6) and sigma_max <= high * (1 + 1e-6):
            return None
        return (
            f"the grid spans sigma {sigma_min:g} to {sigma_max:g}, beyond the {low:g} to {high:g} "
            "the model was trained on: its scores outside that range are extrapolations"
        )

    def changed_fields(self, base: ExperimentConfig) -> list[str]:
        """The fields whose values differ from ``base``'s, as ``section.field`` in the order
        of the sections and their fields; a sampler option as ``sampler.options.NAME``."""
        changed = []
        for name in _SECTIONS:
            section, other = getattr(self, name), getattr(base, name)
            for field in dataclasses.fields(section):
                value, before = getattr(section, field.name), getattr(other, field.name)
                if field.name == "options":
                    changed += [
                        f"{name}.options.{option}"
                        for option in dict.fromkeys([*before, *value])
                        if value.get(option) != before.get(option)
                    ]
                elif value != before:
                    changed.append(f"{name}.{field.name}")
        return changed

    def to_dict(self) -> dict[str, Any]:
        """Nested JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}

    @staticmethod
    def field_defaults() -> dict[str, Any]:
        """Every section's declared field defaults, nested as :meth:`to_dict` (``train``'s
        ``run_defaults``: a field an older run's checkpoint lacks resumes at its default)."""
        return {name: field_defaults(section) for name, section in _SECTIONS.items()}


_NESTING_LIMIT = 64
"""The deepest nesting of tables and arrays a configuration file may have (a configuration
nests a few levels): ``[a.b.c...]`` 900 deep parsed, then overflowed the copy that applies
``--set`` (a ``RecursionError`` traceback)."""


def load_config(path) -> dict[str, Any]:
    """Read a TOML configuration file into nested dicts (validated by ``from_dict``).

    Args:
        path: a ``.toml`` file with ``[data]``, ``[model]``, ``[loss]``, ``[train]`` and
            ``[sampler]`` tables (each optional).

    Returns:
        ``{section: {field: value}}`` as parsed by ``tomllib``.

    Raises:
        FileNotFoundError: nothing is at ``path``.
        ConfigError: a folder or a special file, text that is not UTF-8, or invalid TOML.
    """
    path = check_file(path, "config file", ConfigError)
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is dropped, not an error.
        values = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        if nesting(values) > _NESTING_LIMIT:  # copied and merged recursively after this
            raise RecursionError
        return values
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}); a TOML file is UTF-8: save it as such"
        ) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from error
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(
            f"{path}: invalid TOML (arrays or tables nested too deeply); a configuration "
            "nests a few levels"
        ) from None


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides; values are TOML literals, else plain strings.

    Args:
        values: ``{section: {field: value}}``, e.g. from :func:`load_config`.
        overrides: strings such as ``"train.steps=2000"``, ``"data.source=points.csv"`` or
            ``"sampler.options.eta=0.5"``.

    Returns:
        A new nested dict; ``values`` is not modified.

    Raises:
        ConfigError: for ``values`` that are not a dict, ``overrides`` that are not a list of
            strings, an override that is not ``section.field=value``, spans several lines,
            sets a field inside a value, gives a field another value than an earlier one, or
            replaces the table holding a field an earlier one set.
    """
    if not isinstance(values, dict):
        raise ConfigError(
            f"values: expected a dict of sections ({{section: {{field: value}}}}), got "
            f"{type(values).__name__}"
        )
    if isinstance(overrides, str | bytes) or not isinstance(overrides, list | tuple):
        wrap = " (wrap it in a list)" if isinstance(overrides, str) else ""
        raise ConfigError(
            f"overrides: expected a list of 'section.field=value' strings, got "
            f"{type(overrides).__name__}{wrap}"
        )
    result = copy.deepcopy(values)
    given: dict[str, Any] = {}  # field -> value of this call's overrides
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(
                f"override {item!r}: expected a string section.field=value, got "
                f"{type(item).__name__}"
            )
        name, sep, raw = item.partition("=")
        path = [part.strip() for part in name.split(".")]
        if not sep or len(path) < 2 or not all(path):
            raise ConfigError(f"override {item!r}: expected section.field=value")
        if "\n" in raw or "\r" in raw:
            # TOML would read the first line as the value and the others as more keys, which
            # were dropped without a word: one override is one line.
            raise ConfigError(
                f"override {item!r}: a value on several lines; give one --set per field"
            )
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        except RecursionError:  # tomllib parses nested arrays recursively
            raise ConfigError(
                f"override {name.strip()}: a value nested too deeply; a configuration value "
                "nests a few levels"
            ) from None
        field = ".".join(path)
        # The first was dropped without a word; 1 and true (or 1.0) are not one value.
        if field in given and (type(given[field]), given[field]) != (type(value), value):
            raise ConfigError(
                f"{field}: --set gives {given[field]!r}, then {value!r}; give it once"
            )
        # A table set after one of its fields replaced that field without a word.
        inside = [earlier for earlier in given if earlier.startswith(f"{field}.")]
        if inside:
            raise ConfigError(
                f"{field}: an override replaces this table, dropping {inside[0]} set by an "
                "earlier one; give one of them"
            )
        given[field] = value
        put(result, path, value, f"override {item!r}")
    return result


def put(values: dict[str, Any], path: list[str], value: Any, where: str) -> Any:
    """Set the field at ``path`` (``["sampler", "options", "eta"]``) of the nested dict
    ``values`` to ``value``, creating the tables on the way, and return what was there
    (``None`` if nothing): one writer for ``--set`` (:func:`apply_overrides`) and the CLI's
    named flags.

    Raises:
        ConfigError: ``{where}: {part} is not a table`` where a value stands on the path.
    """
    table = values
    for part in path[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {part} is not a table")
    previous = table.get(path[-1])
    table[path[-1]] = value
    return previous
