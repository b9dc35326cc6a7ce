r"""The diffusers U-Net as a trainable scorelab model, in diffusers' layout so export is exact.

Two Equinox modules around one randomly initialised :class:`~scorelab.diffusers.UNet2D`
(:meth:`UNet2D.init`), each built from JSON constructor arguments so
:func:`scorelab.checkpoints.save_model` can record and rebuild it:

* :class:`UNetNetwork`, the raw noise-conditional network :math:`F(x, c_\mathrm{noise})` on one
  example: its timestep input is any real conditioning (an integer DDPM timestep, or EDM's
  :math:`c_\mathrm{noise} = \tfrac14 \ln\sigma`), the signature preconditioning wrappers take;
* :class:`VPEpsilonUNet`, DDPM's :math:`\varepsilon`-prediction model on a diffusers schedule,
  as scorelab's VE ``score_fn(x, sigma)`` through :func:`scorelab.adapters.from_epsilon`.

References:
    Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    https://arxiv.org/abs/2006.11239
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models, Table 1. https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from scorelab._validate import (
    check_float32,
    check_instance,
    check_int,
    check_real,
    is_traced,
)
from scorelab.adapters import from_epsilon
from scorelab.diffusers._checks import PretrainedError, is_int, is_number
from scorelab.diffusers._schedulers import SchedulerConfig
from scorelab.diffusers._unet import UNet2D

__all__ = ["unet_config", "UNetNetwork", "VPEpsilonUNet", "ClassConditioned"]


def unet_config(
    image_shape: Sequence[int],
    channels: Sequence[int] = (32, 64, 64),
    layers_per_block: int = 1,
    attention_resolutions: Sequence[int] = (4,),
    norm_groups: int = 8,
    attention_head_dim: int = 8,
    num_class_embeds: int | None = None,
    dropout: float = 0.0,
) -> dict:
    """The ``UNet2DModel`` config of a U-Net for images of ``image_shape``.

    Level ``i`` has ``channels[i]`` channels at resolution ``H / 2**i``; its down and up
    blocks attend (``AttnDownBlock2D`` / ``AttnUpBlock2D``) iff that resolution is in
    ``attention_resolutions``, as in DDPM's ``attn_resolutions``; the middle block always
    attends (diffusers' default).

    Args:
        image_shape: ``(C, H, W)``.
        channels: ``block_out_channels``, one entry per level.
        layers_per_block: residual blocks per down level (the up levels have one more).
        attention_resolutions: resolutions (``H / 2**i``) whose blocks attend.
        norm_groups: ``norm_num_groups``; must divide every entry of ``channels``.
        attention_head_dim: channels per attention head.
        num_class_embeds: classes of a class-conditional network (``nn.Embedding``), or None.
        dropout: the residual blocks' dropout rate in ``[0, 1)``, as diffusers' ``dropout``
            (applied only when the network is called with a training ``key``).

    Returns:
        A config dict :meth:`UNet2D.init` accepts.

    Raises:
        ValueError: naming the option: ``image_shape`` not three positive integers;
            ``channels`` or ``attention_resolutions`` not a list of positive integers;
            ``layers_per_block``, ``norm_groups`` or ``attention_head_dim`` not an integer
            ``>= 1``, ``num_class_embeds`` not ``None`` or one; ``dropout`` not a number in
            ``[0, 1)`` (non-integers were truncated, ``1.9`` layers built 1); an attention
            resolution no level has. A shape the network cannot take (``H`` not divisible by
            ``2 ** (len(channels) - 1)``, groups or heads that do not divide the channels) is
            refused by :meth:`UNet2D.init`.
    """
    _check_int_list("image_shape", image_shape, "(C, H, W): three positive integers", 3)
    _check_int_list("channels", channels, "a non-empty list of positive integers")
    check_int("layers_per_block", layers_per_block, 1)
    _check_int_list("attention_resolutions", attention_resolutions, "a list of resolutions", 0)
    check_int("norm_groups", norm_groups, 1)
    check_int("attention_head_dim", attention_head_dim, 1)
    check_int("num_class_embeds", num_class_embeds, 1, optional=True)
    check_real("dropout", dropout, "a number in [0, 1)", lambda p: 0 <= p < 1)
    in_channels, height, width = (int(n) for n in image_shape)
    resolutions = [height // 2**i for i in range(len(channels))]
    unknown = sorted(set(attention_resolutions) - set(resolutions))
    if unknown:
        raise ValueError(
            f"attention_resolutions: {unknown} is not a level's resolution (its height); this "
            f"U-Net's levels are at {resolutions}"
        )
    attends = [r in attention_resolutions for r in resolutions]
    config = {
        "sample_size": height if height == width else [height, width],
        "in_channels": in_channels,
        "out_channels": in_channels,
        "block_out_channels": [int(c) for c in channels],
        "layers_per_block": int(layers_per_block),
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in attends[::-1]],
        "norm_num_groups": int(norm_groups),
        "attention_head_dim": int(attention_head_dim),
        "num_class_embeds": num_class_embeds,
        "dropout": float(dropout),
    }
    return config


def _check_int_list(name: str, value, accepted: str, length: int | None = None) -> None:
    """Refuse ``value`` unless a list or tuple of positive integers: exactly ``length`` of
    them (``0``: any number, even none; ``None``: at least one)."""
    ok = isinstance(value, list | tuple) and all(is_int(v) and v >= 1 for v in value)
    if ok and length is not None and length > 0:
        ok = len(value) == length
    if ok and length is None:
        ok = len(value) >= 1
    if not ok:
        raise ValueError(f"{name}: expected {accepted}, got {value!r}")


def _init_unet(key: Array, config: dict) -> UNet2D:
    """:meth:`UNet2D.init`, its refusals phrased for model options, not a checkpoint."""
    try:
        return UNet2D.init(key, config)
    except PretrainedError as error:
        reason = str(error).split("; ")[0].removeprefix("config: ")
        raise ValueError(
            f"U-Net options: {reason}; choose channels, groups and heads that fit"
        ) from None


class UNetNetwork(eqx.Module):
    r"""The U-Net as a raw noise-conditional network :math:`F(x, c_\mathrm{noise})` on one image.

    .. math::
        F(x, c) = \mathrm{UNet2DModel}(x[\mathrm{None}], c).\mathrm{sample}[0],

    with :math:`c` fed to the sinusoidal timestep embedding as a real number. The weights are
    a :class:`~scorelab.diffusers.UNet2D` in diffusers' names and layout (``unet``).

    Under :class:`scorelab.precond.EDMPreconditioned`, :math:`c = c_\mathrm{noise} =
    \tfrac14 \ln\sigma` goes in unscaled, as in EDM's own networks: the embedding
    (:func:`~scorelab.diffusers.timestep_embedding`, :math:`D` = ``channels[0]`` features)
    is :math:`[\cos(\omega_j c), \sin(\omega_j c)]` at :math:`\omega_j = 10^{-8j/D}`, so over
    :math:`\sigma \in [0.002, 80]` (:math:`c \in [-1.55, 1.10]`) the fastest frequency
    :math:`\omega_0 = 1` turns through 2.65 rad (one-to-one in :math:`c`) and the slower ones
    are nearly linear in :math:`c`; the time MLP learns from these (DDPM's integer timesteps
    :math:`t \in [0, T)` spread over all frequencies instead).

    Call: ``network(x (C, H, W), c_noise scalar, class_label=None, *, key=None) -> (C, H, W)``;
    ``class_label`` an integer scalar for a class-conditional network, ``key`` a training step's
    dropout key (:meth:`UNet2D.__call__`).

    Args:
        key: initialisation key (:meth:`UNet2D.init`).
        image_shape: ``(C, H, W)``.
        **options: :func:`unet_config`'s other arguments (lists or tuples).

    Raises:
        TypeError: ``key`` not a PRNG key.
        ValueError: for options :func:`unet_config` or :meth:`UNet2D.init` refuses.
    """

    unet: UNet2D

    def __init__(self, key: Array, image_shape: Sequence[int], **options):
        self.unet = _init_unet(key, unet_config(image_shape, **options))

    def __call__(self, x: Array, c_noise, class_label=None, *, key: Array | None = None) -> Array:
        labels = None if class_label is None else jnp.asarray(class_label).reshape(1)
        c_noise = jnp.asarray(c_noise, jnp.float32).reshape(1)
        return self.unet(x[None], c_noise, labels, key=key)[0]


class VPEpsilonUNet(eqx.Module):
    r"""DDPM's :math:`\varepsilon`-prediction U-Net as a VE score model ``score_fn(x, sigma)``.

    The network :math:`\hat\varepsilon(x_t, t)` sees :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 +
    \sqrt{1 - \bar\alpha_t}\, \varepsilon` at timesteps :math:`t = 0, \dots, T - 1` of the
    ``scheduler``'s :math:`\bar\alpha_t`; in scorelab's VE variable (level
    :math:`\sigma = \sqrt{(1 - \bar\alpha_t) / \bar\alpha_t}`),

    .. math::
        s(x, \sigma) = -\frac{\hat\varepsilon\big(x / \sqrt{1 + \sigma^2},\, t(\sigma)\big)}
            {\sigma},

    :func:`scorelab.adapters.from_epsilon`, exact on the schedule's own levels. Trained with
    :func:`scorelab.losses.vp_epsilon_loss` on the same schedule it is DDPM, and exports to a
    diffusers ``DDIMPipeline`` (:func:`scorelab.diffusers.export_pipeline`).

    With ``num_classes`` it is class-conditional, :math:`\hat\varepsilon(x_t, t, y)` through
    diffusers' class embedding (``num_class_embeds``); with ``null_class`` the embedding has one
    more row, the label :math:`y = \varnothing` (index ``num_classes``) of classifier-free
    guidance (Ho & Salimans 2022; :class:`ClassConditioned`).

    Call: ``model(x (C, H, W), sigma scalar > 0, class_label=None, *, key=None) -> (C, H, W)``:
    ``class_label`` an integer scalar in ``[0, num_classes]`` for a class-conditional model
    (``num_classes`` is the null label), ``key`` a training step's dropout key (only then is
    ``dropout`` applied).

    Args:
        key: initialisation key.
        image_shape: ``(C, H, W)``.
        schedule: diffusers' ``beta_schedule`` (``linear``, ``scaled_linear``,
            ``squaredcos_cap_v2``).
        num_train_timesteps: ``T``.
        beta_start, beta_end: the (scaled) linear schedule's end points.
        num_classes: the data's classes ``0 .. num_classes - 1``, or ``None`` (unconditional).
        null_class: give a class-conditional network the null label ``num_classes`` too.
        **options: :func:`unet_config`'s other arguments (not ``num_class_embeds``).

    Raises:
        TypeError: ``key`` not a PRNG key.
        ValueError: for options :func:`unet_config` refuses, a schedule
            :class:`~scorelab.diffusers.SchedulerConfig` refuses, ``num_classes`` not ``None``
            or an integer ``>= 1`` (a bool was one class), ``null_class`` not a bool, or
            ``null_class`` without ``num_classes``.

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
        Ho, J. & Salimans, T. (2022). Classifier-Free Diffusion Guidance.
        https://arxiv.org/abs/2207.12598
    """

    network: UNetNetwork
    scheduler: SchedulerConfig = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)
    null_class: bool = eqx.field(static=True)

    def __init__(
        self,
        key: Array,
        image_shape: Sequence[int],
        schedule: str = "linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        num_classes: int | None = None,
        null_class: bool = False,
        **options,
    ):
        check_int("num_classes", num_classes, 1, optional=True)
        if not isinstance(null_class, bool):
            raise ValueError(f"null_class: expected True or False, got {null_class!r}")
        if null_class and num_classes is None:
            raise ValueError(
                "null_class: a null label needs a class-conditional model; set num_classes"
            )
        self.num_classes, self.null_class = num_classes, bool(null_class)
        self.scheduler = SchedulerConfig(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=schedule,
        )
        embeds = None if num_classes is None else num_classes + self.null_class
        self.network = UNetNetwork(key, image_shape, num_class_embeds=embeds, **options)

    @property
    def dropout(self) -> float:
        """The residual blocks' dropout rate (applied only when called with a ``key``)."""
        return dict(self.network.unet.config)["dropout"]

    def __call__(self, x: Array, sigma, class_label=None, *, key: Array | None = None) -> Array:
        def eps_fn(x_t, t):
            return self.network(x_t, t, class_label, key=key)

        # from_epsilon checks the schedule and takes logs of it: constants, not traced values
        with jax.ensure_compile_time_eval():
            score_fn = from_epsilon(eps_fn, self.scheduler.alphas_cumprod())
        return score_fn(x, sigma)


class ClassConditioned(eqx.Module):
    r"""A class-conditional :class:`VPEpsilonUNet` as the score of one class, optionally guided.

    .. math::
        \tilde s(x, \sigma) = (1 + w)\, s(x, \sigma, y) - w\, s(x, \sigma, \varnothing),

    classifier-free guidance (Ho & Salimans 2022, eq. 6, written for the score: at one level
    :math:`s = -\hat\varepsilon / \sigma` is linear in :math:`\hat\varepsilon`). :math:`w = 0`
    is the conditional score :math:`\nabla \log q_\sigma(x \mid y)` itself (one network
    evaluation); :math:`w > 0` sharpens the class at the cost of diversity and a second
    evaluation per score.

    Call: ``score_fn(x (C, H, W), sigma scalar > 0) -> (C, H, W)``.

    Args:
        model: a class-conditional :class:`VPEpsilonUNet`.
        class_label: the class :math:`y` in ``[0, model.num_classes)`` (an integer; traced, so
            another class does not recompile a sampler).
        guidance: :math:`w \ge 0`; ``> 0`` needs a model with a null label (trained with label
            dropout).

    Raises:
        TypeError: ``model`` not a :class:`VPEpsilonUNet`.
        ValueError: for an unconditional model, a ``class_label`` that is not an integer (a
            float, a string or a bool was truncated or converted to a class) or out of range,
            a ``guidance`` that is not a finite number ``>= 0``, or guidance on a model
            without a null label; each naming the remedy.

    References:
        Ho, J. & Salimans, T. (2022). Classifier-Free Diffusion Guidance, eq. 6.
        https://arxiv.org/abs/2207.12598
    """

    model: VPEpsilonUNet
    class_label: Array
    guidance: float = eqx.field(static=True)

    def __init__(self, model: VPEpsilonUNet, class_label: int, guidance: float = 0.0):
        check_instance("model", model, VPEpsilonUNet, "a VPEpsilonUNet")
        if model.num_classes is None:
            raise ValueError("--class: the model is unconditional (trained without num_classes)")
        integer = is_int(class_label) or (
            not is_traced(class_label)
            and getattr(class_label, "shape", None) == ()
            and jnp.issubdtype(class_label.dtype, jnp.integer)
        )
        if not integer:
            raise ValueError(f"--class: expected an integer class, got {class_label!r}")
        if not (is_number(guidance) and guidance >= 0):
            raise ValueError(f"--guidance: expected a finite number >= 0, got {guidance!r}")
        check_float32("--guidance", guidance)  # 1e308 was cast to inf with a warning
        if not 0 <= int(class_label) < model.num_classes:
            raise ValueError(
                f"--class: {class_label} is not a class of this model; choose one in "
                f"[0, {model.num_classes})"
            )
        if guidance > 0 and not model.null_class:
            raise ValueError(
                "--guidance: the model has no null label (train with loss.label_dropout > 0 for "
                "classifier-free guidance); drop --guidance"
            )
        self.model, self.guidance = model, float(guidance)
        self.class_label = jnp.asarray(int(class_label), jnp.int32)

    @property
    def network_evaluations(self) -> int:
        """Network evaluations per score evaluation: 2 under guidance (the conditional and the
        unconditional prediction), else 1."""
        return 2 if self.guidance > 0 else 1

    def __call__(self, x: Array, sigma) -> Array:
        conditional = self.model(x, sigma, self.class_label)
        if self.guidance == 0:
            return conditional
        unconditional = self.model(x, sigma, self.model.num_classes)
        return (1 + self.guidance) * conditional - self.guidance * unconditional
