r"""A JAX/Equinox ``UNet2DModel`` for diffusers checkpoints of the DDPM family.

The network of Ho et al. (2020): a U-Net of residual blocks conditioned on a sinusoidal timestep
embedding, with self-attention at chosen resolutions, mirroring diffusers' ``UNet2DModel`` for
the block types ``DownBlock2D``, ``AttnDownBlock2D``, ``UpBlock2D``, ``AttnUpBlock2D`` and
``UNetMidBlock2D``; also residual blocks that resample themselves (``ResnetDownsampleBlock2D``,
``ResnetUpsampleBlock2D``, ``downsample_type`` / ``upsample_type`` ``"resnet"``: the
consistency models' layout) and Fourier (score_sde's noise-level networks) or learned timestep
embeddings. Weights are read from ``diffusion_pytorch_model.safetensors`` with
``safetensors.numpy`` (no torch); parameter names are diffusers' (``down_blocks.0.resnets.1.
conv1.weight`` ...), including the legacy attention names ``query/key/value/proj_attn``.

Arrays are NCHW at the boundary, like diffusers; inside, activations are NHWC (XLA's fast
convolution layout on CPU and GPU) and convolution kernels HWIO.

Hand-written because no maintained JAX port exists: diffusers removed its Flax models in 0.40.

References:
    Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    https://arxiv.org/abs/2006.11239
    Ronneberger, O., Fischer, P. & Brox, T. (2015). U-Net: Convolutional Networks for
    Biomedical Image Segmentation. https://arxiv.org/abs/1505.04597
"""

from __future__ import annotations

import json
import math
import reprlib
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import (
    check_file,
    check_int,
    check_mapping,
    check_memory,
    first_line,
    in_file,
    is_traced,
)
from scorelab.diffusers._checks import PretrainedError, is_int, is_number, read_json

__all__ = ["UNet2D", "UNET_DEFAULTS", "load_unet", "unet_folder", "timestep_embedding"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

UNET_DEFAULTS = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896),
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "num_train_timesteps": None,
}
"""diffusers' ``UNet2DModel`` defaults: a ``config.json`` key left out takes this value, as
in diffusers."""

# Accepted values of the options whose other values select layers this module lacks.
_SUPPORTED_VALUES = {
    "time_embedding_type": ("positional", "fourier", "learned"),
    "mid_block_type": ("UNetMidBlock2D", None),
    "downsample_type": ("conv", "resnet"),
    "upsample_type": ("conv", "resnet"),
    "act_fn": ("silu", "swish"),
    "resnet_time_scale_shift": ("default", "scale_shift"),
    "class_embed_type": (None,),
}
_DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D")
_UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D")
_LEGACY_PREFIX = "UNetRes"  # diffusers reads "UNetResDownBlock2D" as "DownBlock2D"
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

# Bounds that no DDPM-family checkpoint comes near; they stop a hostile config.json from
# allocating before anything is read (a 1000000-pixel sample_size, a million channels).
_MAX_SAMPLE_SIZE = 4096
_MAX_CHANNELS = 8192
MAX_LAYERS_PER_BLOCK = 64
"""The most ResNet blocks a U-Net level takes (no DDPM-family checkpoint comes near)."""
_REMEDY = "fix config.json or download the model again"


def _int_field(full: dict, field: str, low: int, high: int, optional: bool = False) -> None:
    value = full[field]
    if optional and value is None:
        return
    if not (is_int(value) and low <= value <= high):
        kind = "None or an integer" if optional else "an integer"
        raise PretrainedError(
            f"{field} must be {kind} in [{low}, {high}], got {value!r}; {_REMEDY}"
        )


def _bool_field(full: dict, field: str) -> None:
    if not isinstance(full[field], bool):
        raise PretrainedError(f"{field} must be true or false, got {full[field]!r}; {_REMEDY}")


def _list_field(full: dict, field: str, check: Callable, what: str) -> tuple:
    value = full[field]
    if not (isinstance(value, (list, tuple)) and value and all(check(v) for v in value)):
        raise PretrainedError(
            f"{field} must be a non-empty list of {what}, got {value!r}; {_REMEDY}"
        )
    return tuple(value)


def _check_types(full: dict) -> None:
    """Type and range of every field the network's shapes or arithmetic depend on."""
    for field in ("in_channels", "out_channels"):
        _int_field(full, field, 1, _MAX_CHANNELS)
    for field in ("time_embedding_dim", "attention_head_dim", "attn_norm_num_groups"):
        _int_field(full, field, 1, _MAX_CHANNELS, optional=True)
    _int_field(full, "layers_per_block", 1, MAX_LAYERS_PER_BLOCK)
    _int_field(full, "downsample_padding", 0, 1)
    _int_field(full, "num_train_timesteps", 1, 10**6, optional=True)
    _int_field(full, "num_class_embeds", 1, 10**6, optional=True)
    for field in ("center_input_sample", "flip_sin_to_cos", "add_attention"):
        _bool_field(full, field)
    for field in ("norm_eps", "mid_block_scale_factor"):
        if not (is_number(full[field]) and full[field] > 0):
            raise PretrainedError(f"{field} must be a number > 0, got {full[field]!r}; {_REMEDY}")
    if not (is_number(full["dropout"]) and 0 <= full["dropout"] < 1):
        raise PretrainedError(
            f"dropout must be a number in [0, 1), got {full['dropout']!r}; {_REMEDY}"
        )
    size = full["sample_size"]
    sizes = size if isinstance(size, (list, tuple)) and len(size) == 2 else (size,)
    if size is not None and not all(is_int(s) and 1 <= s <= _MAX_SAMPLE_SIZE for s in sizes):
        raise PretrainedError(
            f"sample_size must be an integer or a pair of integers in [1, {_MAX_SAMPLE_SIZE}], "
            f"got {size!r}; {_REMEDY}"
        )
    channels = _list_field(
        full, "block_out_channels", lambda c: is_int(c) and 1 <= c <= _MAX_CHANNELS,
        f"integers in [1, {_MAX_CHANNELS}]",
    )  # fmt: skip
    for field in ("down_block_types", "up_block_types"):
        _list_field(full, field, lambda b: isinstance(b, str), "block names")
    half = channels[0] // 2
    if full["time_embedding_type"] != "positional":  # Fourier and learned embeddings read
        return  # neither the shift nor the sine-cosine halves (pass 28, #5)
    if half < 1:  # no freq_shift satisfies [0, 0): the channel count is what to change
        raise PretrainedError(
            f"block_out_channels[0] must be at least 2 (the timestep embedding's sine and "
            f"cosine halves), got {channels[0]}; {_REMEDY}"
        )
    if not (is_number(full["freq_shift"]) and 0 <= full["freq_shift"] < half):
        raise PretrainedError(
            f"freq_shift must be a number in [0, {half}) (half of block_out_channels[0]), "
            f"got {full['freq_shift']!r}; {_REMEDY}"
        )


def _check_divisibility(full: dict) -> None:
    """The group norms, attention heads and resolutions the layers need to divide evenly."""
    channels, n_levels = full["block_out_channels"], len(full["block_out_channels"])
    groups = full["norm_num_groups"]
    if not is_int(groups) or groups < 1:
        raise PretrainedError(f"norm_num_groups must be an integer >= 1, got {groups!r}; {_REMEDY}")
    if any(c % groups for c in channels):
        raise PretrainedError(
            f"norm_num_groups {groups} must divide every block_out_channels entry "
            f"{list(channels)}; {_REMEDY}"
        )
    attn_groups = full["attn_norm_num_groups"]
    if attn_groups is not None and channels[-1] % attn_groups:
        raise PretrainedError(
            f"attn_norm_num_groups {attn_groups} must divide block_out_channels[-1] "
            f"{channels[-1]}; {_REMEDY}"
        )
    head_dim = full["attention_head_dim"]
    attended = [c for c, b in zip(channels, full["down_block_types"]) if b.startswith("Attn")]
    attended += [c for c, b in zip(channels[::-1], full["up_block_types"]) if b.startswith("Attn")]
    if full["mid_block_type"] is not None and full["add_attention"]:
        attended.append(channels[-1])
    if head_dim is not None and any(c % head_dim for c in attended):
        raise PretrainedError(
            f"attention_head_dim {head_dim} must divide the channels of every attention block "
            f"{sorted(set(attended))}; {_REMEDY}"
        )
    size, factor = full["sample_size"], 2 ** (n_levels - 1)
    if size is not None and any(s % factor for s in np.atleast_1d(size)):
        raise PretrainedError(
            f"sample_size {size!r} must be divisible by 2 ** (len(block_out_channels) - 1) = "
            f"{factor}; {_REMEDY}"
        )


def _check_config(config) -> dict:
    """``config`` with diffusers' defaults filled in, every field's type and range checked.

    Raises:
        PretrainedError: naming the field, for a config that is not a mapping, unknown fields,
            values of the wrong type or out of range, unsupported options, mismatched lengths,
            and group counts, head sizes or sample sizes that do not divide evenly.
    """
    if not isinstance(config, Mapping):
        raise PretrainedError(
            f"the U-Net config must be a JSON object, got {type(config).__name__}; {_REMEDY}"
        )
    unknown = sorted(
        str(k) for k in config if not str(k).startswith("_") and k not in UNET_DEFAULTS
    )
    if unknown:
        raise PretrainedError(
            f"unsupported UNet2DModel config field(s): {', '.join(unknown)} (scorelab ports the "
            "DDPM block family and the resampling residual blocks only)"
        )
    full = {**UNET_DEFAULTS, **{k: v for k, v in config.items() if not str(k).startswith("_")}}
    for field, accepted in _SUPPORTED_VALUES.items():
        if full[field] not in accepted:
            raise PretrainedError(
                f"unsupported UNet2DModel config: {field}={full[field]!r} (supported: {accepted})"
            )
    if full["norm_num_groups"] is None:
        raise PretrainedError("unsupported UNet2DModel config: norm_num_groups=None")
    _check_types(full)
    if full["time_embedding_type"] == "learned" and full["num_train_timesteps"] is None:
        raise PretrainedError(
            "time_embedding_type 'learned' needs num_train_timesteps (the embedding table's "
            f"rows); {_REMEDY}"
        )
    for field, accepted in (("down_block_types", _DOWN_BLOCKS), ("up_block_types", _UP_BLOCKS)):
        full[field] = tuple(block.removeprefix(_LEGACY_PREFIX) for block in full[field])
        for block in full[field]:
            if block not in accepted:
                raise PretrainedError(
                    f"unsupported UNet2DModel config: {field} contains {block!r} "
                    f"(supported: {', '.join(accepted)})"
                )
    n = len(full["block_out_channels"])
    if len(full["down_block_types"]) != n or len(full["up_block_types"]) != n:
        raise PretrainedError(
            "UNet2DModel config: down_block_types, up_block_types and block_out_channels "
            f"must have the same length; {_REMEDY}"
        )
    _check_divisibility(full)
    return full


def _check_config_argument(config) -> dict:
    """:func:`_check_config` of a ``config`` given as an argument (a dict, no file): its
    refusals name the argument, not a ``config.json`` the caller may never have had."""
    try:
        return _check_config(config)
    except PretrainedError as error:
        message = str(error).replace(_REMEDY, "fix the config argument")
        message = message.replace("must be a JSON object", "must be a mapping")
        raise PretrainedError(f"config: {message}") from None


# --- the checkpoint's tensors -------------------------------------------------------------------

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
"""The tensor dtypes scorelab reads."""


def _dtype_name(code: str) -> str:
    """NumPy's name of a safetensors dtype code: ``F32`` float32, ``I64`` int64, ``BF16``
    bfloat16, ``BOOL`` bool, other codes as they are."""
    kinds = {"F": "float", "I": "int", "U": "uint", "BF": "bfloat"}
    kind, bits = code.rstrip("0123456789"), code[len(code.rstrip("0123456789")) :]
    return f"{kinds[kind]}{bits}" if kind in kinds and bits else code.lower()


class _Weights:
    """A checkpoint's tensors by diffusers name, each checked before use.

    Built from every tensor's shape and dtype (a safetensors header, or arrays) and a reader
    that returns one tensor's data; dtypes are checked for all tensors at construction, a
    tensor's shape when the network asks for it (against the shape its config implies), its
    values (finite) when it is read. Without a reader (:meth:`shapes_only`) it returns
    zeros of the shape, for a build under ``jax.eval_shape`` that checks every name and shape
    before any tensor is read. Records which names were used.
    """

    def __init__(
        self, specs: Mapping[str, tuple[tuple, str]], read: Callable[[str], np.ndarray] | None
    ):
        self.specs, self.read, self.names = {}, read, {}
        for name, (shape, dtype) in specs.items():
            if dtype not in _FLOAT_DTYPES:
                raise PretrainedError(
                    f"tensor {name!r} has dtype {dtype}, expected float16, bfloat16, float32 or "
                    "float64; "
                    "save the checkpoint in one of them"
                )
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] in _LEGACY_ATTENTION:
                parts[-2] = _LEGACY_ATTENTION[parts[-2]]
            canonical = ".".join(parts)
            if canonical in self.specs:
                raise PretrainedError(
                    f"checkpoint holds tensor {canonical!r} twice (as {self.names[canonical]!r} "
                    f"and {name!r}); keep one of the two names"
                )
            self.specs[canonical], self.names[canonical] = tuple(shape), name
        self.used: set[str] = set()

    @classmethod
    def from_arrays(cls, tensors: Mapping[str, np.ndarray]) -> _Weights:
        """Weights from diffusers parameter name -> NumPy array; refuses (one
        :class:`PretrainedError` naming ``tensors``) anything but a mapping of string names to
        concrete arrays."""
        check_mapping(
            "tensors",
            tensors,
            "a mapping of parameter name (str) -> array",
            remedy="pass a state dict such as unet.state_dict()",
            error=PretrainedError,
        )
        for name, value in tensors.items():
            if not isinstance(name, str):
                raise PretrainedError(
                    f"tensors: parameter names must be strings, got {name!r}; use diffusers' "
                    "names (conv_in.weight, ...)"
                )
            if is_traced(value):
                raise PretrainedError(
                    f"tensors: tensor {name!r} is traced; from_weights reads concrete arrays: "
                    "build the network outside jit (and pass it in as an argument)"
                )
        arrays = {name: np.asarray(value) for name, value in tensors.items()}
        specs = {name: (a.shape, a.dtype.name) for name, a in arrays.items()}
        return cls(specs, arrays.__getitem__)

    def shapes_only(self) -> _Weights:
        """The same tensors without their values: a call returns zeros of the checked shape."""
        weights = _Weights({}, None)
        weights.specs, weights.names = self.specs, self.names
        return weights

    def __call__(self, name: str, *shapes: tuple) -> Array:
        """Tensor ``name`` as float32, if its shape is one of ``shapes`` and it is finite."""
        self._check(name, shapes)
        if self.read is None:
            return jnp.zeros(self.specs[name], jnp.float32)
        value = self.read(self.names[name])
        if not np.all(np.isfinite(value)):
            raise PretrainedError(
                f"tensor {name!r} holds NaN or inf values; the checkpoint is corrupt: "
                "download the model again"
            )
        return jnp.asarray(value, dtype=jnp.float32)

    def _check(self, name: str, shapes: tuple[tuple, ...]) -> None:
        """That tensor ``name`` exists with one of ``shapes``; records it as used."""
        if name not in self.specs:
            raise PretrainedError(
                f"checkpoint lacks tensor {name!r} required by its config; the weights do not "
                "belong to this config.json: download the model again"
            )
        if self.specs[name] not in shapes:
            expected = " or ".join(str(s) for s in shapes)
            raise PretrainedError(
                f"tensor {name!r} has shape {self.specs[name]}, expected {expected} from the "
                "config; the weights do not belong to this config.json: download the model again"
            )
        self.used.add(name)

    def check_all_used(self) -> None:
        unused = sorted(set(self.specs) - self.used)
        if unused:
            shown = ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else "")
            raise PretrainedError(
                f"checkpoint has {len(unused)} tensor(s) this config does not use: {shown}; "
                "the weights do not belong to this config.json"
            )


class _Recorder(_Weights):
    """Every tensor a config asks for, by name, with the first shape it accepts (diffusers'
    own: ``(out, in)`` for the attention projections); returns zeros."""

    def __init__(self):
        super().__init__({}, None)
        self.shapes: dict[str, tuple] = {}

    def __call__(self, name: str, *shapes: tuple) -> Array:
        self.shapes[name] = shapes[0]
        return jnp.zeros(shapes[0], jnp.float32)

    def check_all_used(self) -> None:
        pass


class _Traced(_Weights):
    """Tensors that may be traced (no value checks): the network as a function of its state
    dict, whose transpose is the export (:meth:`UNet2D.state_dict`)."""

    def __call__(self, name: str, *shapes: tuple) -> Array:
        self._check(name, shapes)
        return self.read(self.names[name])


def _init_tensor(key: Array, name: str, shapes: Mapping[str, tuple]) -> Array:
    r"""Tensor ``name`` as PyTorch initialises it in diffusers' ``UNet2DModel``.

    Convolution and linear weights and biases
    :math:`\sim \mathcal{U}(-1/\sqrt{f}, 1/\sqrt{f})` with :math:`f` the weight's fan-in
    (``kaiming_uniform_(a=sqrt(5))`` and the bias rule of ``nn.Conv2d`` / ``nn.Linear``),
    group-norm scales 1 and shifts 0, the class embedding :math:`\mathcal{N}(0, 1)`
    (``nn.Embedding``). diffusers zeroes no layer of ``UNet2DModel``.
    """
    shape, stem = shapes[name], name.rsplit(".", 1)[0]
    if stem == "class_embedding":
        return _drawn(jax.random.normal, key, shape)
    if stem == "time_proj":  # GaussianFourierProjection(scale=16)'s or nn.Embedding's N(0, 1)
        scale = 16.0 if len(shape) == 1 else 1.0
        return scale * _drawn(jax.random.normal, key, shape)
    weight = shapes[f"{stem}.weight"]
    if len(weight) == 1:  # a group norm
        fill = jnp.ones if name.endswith("weight") else jnp.zeros
        return fill(shape, jnp.float32)  # float32 under x64 too, as every other tensor
    bound = 1.0 / math.sqrt(math.prod(weight[1:]))
    return _drawn(jax.random.uniform, key, shape, minval=-bound, maxval=bound)


def _drawn(draw: Callable, key: Array, shape: tuple, **bounds) -> Array:
    """``draw(key, shape, float32, **bounds)`` (``jax.random.uniform`` or ``normal``), drawn
    eagerly as a flat array whose size is the next power of four, then cut and reshaped.

    With JAX's partitionable threefry (its default) element ``i`` of a draw depends only on
    the key and ``i``, so the values are those of the direct draw, bit for bit; but a
    network's first build compiles one program per power of four, not one per tensor shape
    (a tiny U-Net's 51 shapes). Other keys, the other threefry and
    traced keys (``jax.eval_shape``) draw directly."""
    n = math.prod(shape)
    direct = (
        is_traced(key)
        or not jax.config.jax_threefry_partitionable
        or str(jax.random.key_impl(key)) != "threefry2x32"
        or n == 0
    )
    if direct:
        return draw(key, shape, jnp.float32, **bounds)
    size = 1 << 2 * -(-(n - 1).bit_length() // 2)  # the next power of 4: few programs
    flat = draw(key, (size,), jnp.float32, **bounds)
    return jax.device_put(np.asarray(flat)[:n].reshape(shape))  # jnp.asarray compiles a copy


def _permuted(x: Array, axes: tuple[int, ...]) -> Array:
    """``jnp.transpose(x, axes)``; done by NumPy on a concrete array, as the eager transpose
    compiles one program per shape (19 of a tiny U-Net's first build)."""
    if is_traced(x):
        return jnp.transpose(x, axes)
    return jax.device_put(np.transpose(np.asarray(x), axes))


_IM2COL_MAX_PIXELS = 16
"""On a CPU, convolutions with at most this many output pixels (4x4 and below: a U-Net's
deepest levels) run as one matmul over shifted copies of the input instead of XLA's
convolution, which is pathological at the smallest sizes and slower up to 4x4; from 8x8 up
XLA's is as fast or faster (docs/benchmarks.md, "Pretrained DDIM 256x256";
``python benchmarks/convolutions.py``). GPUs keep cuDNN's."""

_IM2COL_DERIVATIVE_MIN_CHANNELS = 8
"""On a CPU, larger convolutions with at least this many output channels run XLA's
convolution when evaluated, but the matmul path wherever they are differentiated (forward or
reverse mode, so in training): XLA:CPU's convolution gradients run several times slower than
its forward, while the matmul's derivatives are matmuls (docs/benchmarks.md, "Convolution
gradients on a CPU"; ``python benchmarks/convolutions.py --gradient``). With fewer output
channels (a U-Net's 1- or 3-channel ``conv_out``) the matmul degenerates to a
matrix-vector product and XLA's gradient is as fast."""


class _Conv(eqx.Module):
    """2-D convolution, kernel HWIO; padding as ``((top, bottom), (left, right))``."""

    weight: Array
    bias: Array
    stride: int = eqx.field(static=True)
    padding: tuple = eqx.field(static=True)

    def __call__(self, x: Array) -> Array:
        """``x`` ``(n, h, w, c_in)`` -> ``(n, h_out, w_out, c_out)``. On a CPU, outputs of at most
        ``_IM2COL_MAX_PIXELS`` pixels go through :meth:`im2col`, and convolutions with at least
        ``_IM2COL_DERIVATIVE_MIN_CHANNELS`` output channels through :meth:`xla` when evaluated
        and :meth:`im2col` when differentiated; everything else, and every convolution on an
        accelerator, through :meth:`xla`."""
        if jax.default_backend() != "cpu":
            return self.xla(x)
        h_out, w_out = self._out_size(x)
        if h_out * w_out <= _IM2COL_MAX_PIXELS:
            return self.im2col(x)
        if self.weight.shape[-1] >= _IM2COL_DERIVATIVE_MIN_CHANNELS:
            return _xla_with_matmul_derivatives(self, x)
        return self.xla(x)

    def _out_size(self, x: Array) -> tuple[int, int]:
        (top, bottom), (left, right) = self.padding
        kh, kw = self.weight.shape[:2]
        return (
            (x.shape[1] + top + bottom - kh) // self.stride + 1,
            (x.shape[2] + left + right - kw) // self.stride + 1,
        )

    def columns(self, x: Array) -> Array:
        """The ``kh * kw`` shifted copies of the padded input, side by side on the last axis:
        ``(n, h_out, w_out, kh * kw * c_in)``, so that the convolution is one matmul."""
        (top, bottom), (left, right) = self.padding
        kh, kw = self.weight.shape[:2]
        h_out, w_out = self._out_size(x)
        padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        return jnp.concatenate(
            [
                padded[
                    :,
                    i : i + self.stride * (h_out - 1) + 1 : self.stride,
                    j : j + self.stride * (w_out - 1) + 1 : self.stride,
                ]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=-1,
        )

    def matmul(self, x: Array, weight: Array) -> Array:
        """``weight`` applied to ``x`` as one matmul over :meth:`columns`, without the bias."""
        return self.columns(x) @ weight.reshape(-1, weight.shape[-1])

    def im2col(self, x: Array) -> Array:
        """The convolution as one matmul over the ``kh * kw`` shifted copies of the input."""
        return self.matmul(x, self.weight) + self.bias

    def xla(self, x: Array) -> Array:
        """The convolution as XLA's ``conv_general_dilated`` (cuDNN on a GPU)."""
        y = jax.lax.conv_general_dilated(
            x,
            self.weight,
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.bias


@jax.custom_jvp
def _xla_with_matmul_derivatives(conv: _Conv, x: Array) -> Array:
    """``conv.xla(x)``; differentiated, ``conv.im2col(x)`` and its tangent (transposed by JAX,
    its gradient) by :meth:`_Conv.matmul`: the same function, as matmuls."""
    return conv.xla(x)


def _xla_with_matmul_derivatives_jvp(primals, tangents):
    conv, x = primals
    d_conv, d_x = tangents
    columns = conv.columns(x)  # under differentiation the value too is the matmul's
    y = columns @ conv.weight.reshape(-1, conv.weight.shape[-1]) + conv.bias
    terms = []  # a tangent that is symbolically zero (a frozen weight, the data) costs nothing
    if not _is_zero(d_conv.weight):
        terms.append(columns @ d_conv.weight.reshape(-1, conv.weight.shape[-1]))
    if not _is_zero(d_conv.bias):
        terms.append(jnp.broadcast_to(d_conv.bias, y.shape))
    if not _is_zero(d_x):
        terms.append(conv.matmul(d_x, conv.weight))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


_xla_with_matmul_derivatives.defjvp(_xla_with_matmul_derivatives_jvp, symbolic_zeros=True)


def _conv(
    weights: _Weights,
    name: str,
    c_in: int,
    c_out: int,
    size: int = 3,
    stride: int = 1,
    padding=None,
) -> _Conv:
    """A ``size x size`` convolution from ``c_in`` to ``c_out`` channels (OIHW in the file)."""
    kernel = weights(f"{name}.weight", (c_out, c_in, size, size))
    kernel = _permuted(kernel, (2, 3, 1, 0))  # OIHW -> HWIO
    if padding is None:  # "same" for odd kernels, as diffusers' padding=k//2
        padding = ((size // 2, size // 2), (size // 2, size // 2))
    return _Conv(kernel, weights(f"{name}.bias", (c_out,)), stride, padding)


class _Linear(eqx.Module):
    weight: Array  # (in, out)
    bias: Array

    def __call__(self, x: Array) -> Array:
        return x @ self.weight + self.bias


def _linear(weights: _Weights, name: str, d_in: int, d_out: int) -> _Linear:
    # (d_out, d_in, 1, 1): the legacy 1x1-convolution attention projections
    weight = weights(f"{name}.weight", (d_out, d_in), (d_out, d_in, 1, 1))
    return _Linear(
        _permuted(weight.reshape(d_out, d_in), (1, 0)), weights(f"{name}.bias", (d_out,))
    )


class _GroupNorm(eqx.Module):
    r"""GroupNorm over the channel axis (last): :math:`(x - \mu_g)/\sqrt{\sigma_g^2 + \epsilon}`
    per group of channels, with the biased variance (as torch), then a per-channel affine map.

    Group statistics are means of per-channel spatial means (groups have equal sizes, so this
    is exact): XLA:CPU reduces over the contiguous spatial axes faster than over the grouped
    ``(H, W, C/G)`` axes of the textbook reshape.
    """

    weight: Array
    bias: Array
    groups: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def _group_mean(self, x: Array) -> Array:
        """Per-group mean of ``x`` over all but the batch axis, broadcast back to ``x``."""
        channels = x.shape[-1]
        per_channel = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))  # (B, C)
        grouped = per_channel.reshape(-1, self.groups, channels // self.groups).mean(axis=-1)
        per_group = jnp.repeat(grouped, channels // self.groups, axis=-1)  # (B, C)
        return per_group.reshape(x.shape[0], *(1,) * (x.ndim - 2), channels)

    def __call__(self, x: Array) -> Array:
        centred = x - self._group_mean(x)
        variance = self._group_mean(jnp.square(centred))
        return centred * jax.lax.rsqrt(variance + self.eps) * self.weight + self.bias


def _group_norm(weights: _Weights, name: str, channels: int, groups: int, eps: float):
    affine = (weights(f"{name}.weight", (channels,)), weights(f"{name}.bias", (channels,)))
    return _GroupNorm(*affine, groups, eps)


class _ResnetBlock(eqx.Module):
    r"""``ResnetBlock2D``: :math:`h = \mathrm{conv}_2(\mathrm{drop}_p(\mathrm{silu}(\mathrm{GN}_2(
    \mathrm{conv}_1(\mathrm{silu}(\mathrm{GN}_1(x))) + W \mathrm{silu}(e)))))`, output
    :math:`(\mathrm{shortcut}(x) + h)/s`; with ``scale_shift`` the embedding gives
    :math:`(a, b)` and :math:`\mathrm{GN}_2(\cdot)(1 + a) + b` instead of the sum.

    :math:`\mathrm{drop}_p` is inverted dropout (``torch.nn.Dropout(p)``, Srivastava et al.
    2014): each entry kept with probability :math:`1 - p` and scaled by :math:`1/(1 - p)`, so its
    mean over masks is the identity; only with a ``key`` (training), the identity without."""

    norm1: _GroupNorm
    conv1: _Conv
    time_emb_proj: _Linear
    norm2: _GroupNorm
    conv2: _Conv
    conv_shortcut: _Conv | None
    scale_shift: bool = eqx.field(static=True)
    output_scale_factor: float = eqx.field(static=True)
    dropout: float = eqx.field(static=True)
    resample: str | None = eqx.field(static=True, default=None)

    def __call__(self, x: Array, emb: Array, key: Array | None = None) -> Array:
        h = jax.nn.silu(self.norm1(x))
        if self.resample is not None:  # both paths, after the first norm (diffusers' order)
            x, h = _resample(x, self.resample), _resample(h, self.resample)
        h = self.conv1(h)
        e = self.time_emb_proj(jax.nn.silu(emb))[:, None, None, :]
        if self.scale_shift:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = jax.nn.silu(h)
        if key is not None and self.dropout > 0:
            keep = jax.random.bernoulli(key, 1.0 - self.dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - self.dropout), 0.0)
        h = self.conv2(h)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (shortcut + h) / self.output_scale_factor


def _resample(x: Array, how: str) -> Array:
    """``ResnetBlock2D``'s resampling of an NHWC array without weights: ``"up"`` nearest
    neighbour 2x (``Upsample2D(use_conv=False)``), ``"down"`` the mean of each 2x2 patch
    (``Downsample2D(use_conv=False)``, an ``AvgPool2d(2, 2)``)."""
    if how == "up":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    batch, height, width, channels = x.shape
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))


def _resnet(
    weights: _Weights,
    name: str,
    config: dict,
    c_in: int,
    c_out: int,
    scale: float = 1.0,
    resample: str | None = None,
) -> _ResnetBlock:
    """``ResnetBlock2D`` from ``c_in`` to ``c_out`` channels; a 1x1 shortcut iff they differ;
    ``resample`` ``"up"`` or ``"down"`` for its ``up=True`` / ``down=True`` form."""
    groups, eps = config["norm_num_groups"], config["norm_eps"]
    scale_shift = config["resnet_time_scale_shift"] == "scale_shift"
    emb_dim = _time_embed_dim(config)
    return _ResnetBlock(
        norm1=_group_norm(weights, f"{name}.norm1", c_in, groups, eps),
        conv1=_conv(weights, f"{name}.conv1", c_in, c_out),
        time_emb_proj=_linear(weights, f"{name}.time_emb_proj", emb_dim, c_out * (1 + scale_shift)),
        norm2=_group_norm(weights, f"{name}.norm2", c_out, groups, eps),
        conv2=_conv(weights, f"{name}.conv2", c_out, c_out),
        conv_shortcut=(
            None if c_in == c_out else _conv(weights, f"{name}.conv_shortcut", c_in, c_out, 1)
        ),
        scale_shift=scale_shift,
        output_scale_factor=scale,
        dropout=float(config["dropout"]),
        resample=resample,
    )


class _Attention(eqx.Module):
    r"""Spatial self-attention over the :math:`HW` positions, residual:
    :math:`(x + W_o\, \mathrm{softmax}(Q K^\top/\sqrt{d})\, V)/s` with
    :math:`Q, K, V = W_{q,k,v}\, \mathrm{GN}(x)` split into heads of size :math:`d`."""

    group_norm: _GroupNorm | None
    to_q: _Linear
    to_k: _Linear
    to_v: _Linear
    to_out: _Linear
    heads: int = eqx.field(static=True)
    rescale_output_factor: float = eqx.field(static=True)

    def __call__(self, x: Array) -> Array:
        batch, height, width, channels = x.shape
        h = x if self.group_norm is None else self.group_norm(x)
        h = h.reshape(batch, height * width, channels)
        head_dim = channels // self.heads

        def split(t):
            return t.reshape(batch, height * width, self.heads, head_dim)

        out = jax.nn.dot_product_attention(
            split(self.to_q(h)), split(self.to_k(h)), split(self.to_v(h))
        )
        out = self.to_out(out.reshape(batch, height * width, channels))
        return (out.reshape(x.shape) + x) / self.rescale_output_factor


def _attention(
    weights: _Weights, name: str, channels: int, config: dict, groups, scale: float = 1.0
) -> _Attention:
    head_dim = config["attention_head_dim"] or channels
    norm = f"{name}.group_norm"
    return _Attention(
        group_norm=None
        if groups is None
        else _group_norm(weights, norm, channels, groups, config["norm_eps"]),
        to_q=_linear(weights, f"{name}.to_q", channels, channels),
        to_k=_linear(weights, f"{name}.to_k", channels, channels),
        to_v=_linear(weights, f"{name}.to_v", channels, channels),
        to_out=_linear(weights, f"{name}.to_out.0", channels, channels),
        heads=channels // head_dim,
        rescale_output_factor=scale,
    )


class _Block(eqx.Module):
    """One down or up block: resnets, optional attention after each, optional resampler."""

    resnets: list
    attentions: list | None
    resample: _Conv | _ResnetBlock | None  # a convolution, or a resnet that resamples itself
    up: bool = eqx.field(static=True)

    def __call__(self, x: Array, emb: Array, skips: list | None = None, key=None):
        outputs = []
        by_resnet = isinstance(self.resample, _ResnetBlock)
        keys = _split(key, len(self.resnets) + by_resnet)
        for i, (resnet, resnet_key) in enumerate(zip(self.resnets, keys)):
            if self.up:
                x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = resnet(x, emb, resnet_key)
            if self.attentions is not None:
                x = self.attentions[i](x)
            outputs.append(x)
        if by_resnet:
            x = self.resample(x, emb, keys[-1])
            outputs.append(x)
        elif self.resample is not None:
            if self.up:  # nearest-neighbour 2x, then a 3x3 convolution
                x = _resample(x, "up")
            x = self.resample(x)
            outputs.append(x)
        return x, outputs


class _MidBlock(eqx.Module):
    resnets: list
    attentions: list | None

    def __call__(self, x: Array, emb: Array, key=None) -> Array:
        key_0, key_1 = _split(key, 2)
        x = self.resnets[0](x, emb, key_0)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, emb, key_1)


def _split(key: Array | None, n: int) -> list:
    """``n`` sub-keys of ``key``, or ``n`` Nones without one (no dropout: evaluation)."""
    return [None] * n if key is None else list(jax.random.split(key, n))


def timestep_embedding(
    timesteps: Array, dim: int, flip_sin_to_cos: bool, freq_shift: float, max_period: int = 10000
) -> Array:
    r"""Sinusoidal timestep embedding, as diffusers' ``get_timestep_embedding``.

    .. math::
        \omega_j = \exp\!\Big(-\frac{j \log P}{D/2 - s}\Big),\ j < D/2, \qquad
        e(t) = [\sin(t\omega), \cos(t\omega)],

    swapped to :math:`[\cos, \sin]` with ``flip_sin_to_cos``, zero-padded for odd ``dim``.

    Args:
        timesteps: ``(B,)`` timesteps :math:`t`, integer or float (cast to float32); an array
            or a list.
        dim: the embedding size :math:`D`, an integer ``>= 1``.
        flip_sin_to_cos: put the cosines first, :math:`[\cos, \sin]`.
        freq_shift: the frequency shift :math:`s` (diffusers' ``downscale_freq_shift``), a
            number below :math:`D/2` (rounded down) when :math:`D \ge 2`.
        max_period: the longest period :math:`P`, a number ``> 0``.

    Returns:
        ``(B, dim)`` float32 array.

    Raises:
        TypeError: ``timesteps`` not real numbers, or ``flip_sin_to_cos`` not a bool.
        ValueError: naming the argument: ``timesteps`` not 1-D, ``dim`` not an integer
            ``>= 1``, ``freq_shift`` not a finite number below ``dim // 2`` (at it the
            frequencies divide 0 by 0), ``max_period`` not a finite number ``> 0``.

    References:
        Vaswani, A. et al. (2017). Attention Is All You Need (sec. 3.5).
        https://arxiv.org/abs/1706.03762
    """
    dtype = _real_dtype(timesteps)
    if dtype is None:
        raise TypeError(f"timesteps: expected real numbers, got {_describe(timesteps)}")
    if np.ndim(timesteps) != 1:
        raise ValueError(
            f"timesteps: expected a (B,) array, got shape {np.shape(timesteps)}; give one "
            "timestep per example (jnp.atleast_1d(t) for one)"
        )
    check_int("dim", dim, 1)
    # the angles and the embedding of every timestep, float32 (10**12 tried 2 TB)
    check_memory("dim", 3 * 4 * dim * max(1, np.shape(timesteps)[0]), "give a smaller dim")
    if not isinstance(flip_sin_to_cos, bool):
        raise TypeError(f"flip_sin_to_cos: expected True or False, got {flip_sin_to_cos!r}")
    half = dim // 2
    if not is_number(freq_shift) or (half >= 1 and not freq_shift < half):
        raise ValueError(
            f"freq_shift: expected a finite number < dim // 2 = {half}, got {freq_shift!r}"
        )
    if not (is_number(max_period) and max_period > 0):
        raise ValueError(f"max_period: expected a finite number > 0, got {max_period!r}")
    timesteps = jnp.asarray(timesteps)
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
    frequencies = jnp.exp(exponent / (half - freq_shift))
    angles = timesteps.astype(jnp.float32)[:, None] * frequencies[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def _real_dtype(value):
    """The dtype of the array-like ``value`` if it holds real numbers (integers or floats,
    not bools), else ``None`` (strings, ``None``, complex numbers, objects)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):
            return None
    try:
        real = jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
    except TypeError:
        return None
    return dtype if real and dtype != np.bool_ else None


def _describe(value) -> str:
    """``value``'s dtype (an array) or type (anything else), for a message."""
    dtype = getattr(value, "dtype", None)
    return f"dtype {dtype}" if dtype is not None else f"{type(value).__name__} {value!r:.40}"


_TIMESTEP_ROUNDING = 1e-3
"""How far from an integer a learned embedding's timestep may be: the rounding of a float32
t(sigma), not a step between two rows."""


class UNet2D(eqx.Module):
    r"""diffusers' ``UNet2DModel`` (DDPM block family) in Equinox, the network of Ho et al. (2020).

    Build with :meth:`from_weights` or :func:`load_unet` (a checkpoint), or :meth:`init` (random
    weights, to train); :meth:`state_dict` gives the weights back in diffusers' names and
    layout. Call as ``unet(x_t, t)`` with ``x_t`` of shape ``(B, in_channels, H, W)`` (NCHW, as
    diffusers) and ``t`` a scalar or ``(B,)`` timestep (``unet(x_t, t, class_labels)`` for a
    class-conditional config); it returns ``(B, out_channels, H, W)``, what
    ``UNet2DModel(x_t, t).sample`` returns (the model output of the checkpoint's prediction
    type, e.g. :math:`\varepsilon`), as in diffusers' evaluation mode; ``unet(x_t, t, key=k)``
    is its training mode, with the config's ``dropout`` in the residual blocks.
    ``H`` and ``W`` must be divisible by ``2 ** (len(block_out_channels) - 1)`` so the up
    path's skip connections line up.

    The sole public field is ``config``: the full ``config.json`` (defaults filled in from
    :data:`UNET_DEFAULTS`) as a sorted tuple of ``(key, value)`` pairs.

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
        diffusers ``UNet2DModel`` documentation.
        https://huggingface.co/docs/diffusers/api/models/unet2d
        Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I. & Salakhutdinov, R. (2014).
        Dropout: A Simple Way to Prevent Neural Networks from Overfitting. JMLR 15.
        https://jmlr.org/papers/v15/srivastava14a.html
    """

    conv_in: _Conv
    time_linear_1: _Linear
    time_linear_2: _Linear
    time_proj: Array | None  # the Fourier frequencies or the learned table; None: positional
    class_embedding: Array | None
    down_blocks: list
    mid_block: _MidBlock | None
    up_blocks: list
    conv_norm_out: _GroupNorm
    conv_out: _Conv
    config: dict = eqx.field(static=True)

    @property
    def frozen_fields(self) -> tuple[str, ...]:
        """The fields :func:`scorelab.training.train` leaves untrained: a Fourier embedding's
        frequencies, which diffusers' ``GaussianFourierProjection`` keeps fixed
        (``requires_grad=False``); they were trained, decayed and clipped with the rest (pass
        30, #1). A learned embedding's table trains."""
        return ("time_proj",) if dict(self.config)["time_embedding_type"] == "fourier" else ()

    @classmethod
    def from_weights(cls, config: Mapping, tensors: Mapping[str, np.ndarray]) -> UNet2D:
        """Build from a diffusers ``config.json`` dict and its state dict (name -> array).

        Args:
            config: the parsed ``config.json``; keys starting with ``_`` are ignored, missing
                keys take :data:`UNET_DEFAULTS`.
            tensors: diffusers parameter name -> NumPy array in PyTorch layout (convolutions
                OIHW), any float dtype (cast to float32); legacy attention names
                (``query``/``key``/``value``/``proj_attn``) are accepted.

        Returns:
            The :class:`UNet2D`, float32.

        Raises:
            PretrainedError: one line naming the field or tensor, before any tensor is used:
                ``tensors`` not a mapping of string names to concrete arrays (a traced array:
                build the network outside ``jit``),
                a config that is not a mapping, outside the DDPM block family (unknown keys,
                unsupported block types or options), with a field of the wrong type or out of
                range (``sample_size`` above 4096, channels above 8192, ``norm_eps <= 0``),
                mismatched lengths, or group counts, head sizes or sample sizes that do not
                divide; a tensor missing, unused, duplicated (legacy and new name), of a
                non-float dtype, of a shape other than the config implies, or not finite.
        """
        return cls._build(_check_config_argument(config), _Weights.from_arrays(tensors))

    @classmethod
    def init(cls, key: Array, config: Mapping) -> UNet2D:
        """A randomly initialised network of ``config``, as ``UNet2DModel(**config)`` draws it.

        The state dict is drawn tensor by tensor (PyTorch's defaults, ``_init_tensor``), each
        from ``fold_in(key, crc32(name))``, then loaded as :meth:`from_weights` loads a
        checkpoint: the network is the same whether trained here or exported and loaded. It
        traces (``jax.eval_shape`` of it allocates nothing).

        Args:
            key: PRNG key.
            config: a ``UNet2DModel`` config (checked as in :meth:`from_weights`).

        Returns:
            The :class:`UNet2D`, float32.

        Raises:
            TypeError: ``key`` not a PRNG key (:func:`scorelab._keys.typed_key`).
            PretrainedError: for a config :meth:`from_weights` refuses (naming ``config``), or,
                called eagerly (not under a trace such as ``jax.eval_shape``), one whose
                parameters (drawn, then built into the network: twice their float32 size) need
                more memory than is available, before anything is drawn.

        References:
            He, K., Zhang, X., Ren, S. & Sun, J. (2015). Delving Deep into Rectifiers
            (the initialisation PyTorch's default modifies). https://arxiv.org/abs/1502.01852
        """
        key = typed_key(key, "key")
        config = _check_config_argument(config)
        specs = _tensor_specs(config)
        shapes = {name: shape for name, (shape, _) in specs.items()}
        n_parameters = sum(math.prod(shape) for shape in shapes.values())
        # under a trace (jax.eval_shape) nothing is allocated: no check
        if not is_traced(jnp.zeros(())):
            check_memory(
                "config (block_out_channels, layers_per_block)",
                2 * 4 * n_parameters,
                f"its {n_parameters:,} parameters do not fit: choose fewer channels or layers",
                PretrainedError,
            )
        tensors = {
            name: _init_tensor(jax.random.fold_in(key, zlib.crc32(name.encode())), name, shapes)
            for name in shapes
        }
        return cls._build(config, _Traced(specs, tensors.__getitem__))

    def _check_call(self, x_t, t, class_labels) -> None:
        """The checks of :meth:`__call__`: types and shapes always (static, so under ``jit``
        too), values when concrete."""
        config = dict(self.config)
        channels, factor = config["in_channels"], 2 ** (len(config["block_out_channels"]) - 1)
        if _real_dtype(x_t) is None:
            raise TypeError(f"x_t: expected a real (float) array, got {_describe(x_t)}")
        shape = np.shape(x_t)
        if len(shape) != 4 or shape[1] != channels:
            raise ValueError(
                f"x_t: expected shape (B, {channels}, H, W) (NCHW, in_channels {channels}), got "
                f"{shape}"
            )
        if shape[2] < 1 or shape[3] < 1 or shape[2] % factor or shape[3] % factor:
            raise ValueError(
                f"x_t: H and W must be positive multiples of {factor} (2 ** (levels - 1)) for "
                f"this U-Net's skip connections, got shape {shape}"
            )
        batch = shape[0]
        for name, value in (("t", t), ("class_labels", class_labels)):
            if value is None:
                continue
            if np.ndim(value) not in (0, 1) or (
                np.ndim(value) == 1 and len(value) not in (1, batch)
            ):
                raise ValueError(
                    f"{name}: expected a scalar or a ({batch},) array (one per image), got "
                    f"shape {np.shape(value)}"
                )
        if _real_dtype(t) is None:
            raise TypeError(f"t: expected a real timestep or noise level, got {_describe(t)}")
        n_classes = config["num_class_embeds"]
        if class_labels is not None and n_classes is not None:
            dtype = getattr(class_labels, "dtype", None) or np.asarray(class_labels).dtype
            if not jnp.issubdtype(dtype, jnp.integer) or dtype == np.bool_:
                raise TypeError(f"class_labels: expected integers, got {_describe(class_labels)}")
            if not is_traced(class_labels):
                labels = np.asarray(class_labels)
                if labels.size and not (labels.min() >= 0 and labels.max() < n_classes):
                    raise ValueError(
                        f"class_labels: expected classes in [0, {n_classes}) (num_class_embeds), "
                        f"got {reprlib.repr(labels.tolist())}"
                    )
        if is_traced(t):
            return
        values = np.asarray(t, np.float64)
        kind = config["time_embedding_type"]
        if not np.all(np.isfinite(values)):
            raise ValueError(f"t: expected finite timesteps, got {reprlib.repr(values.tolist())}")
        if kind == "learned":
            rows, nearest = config["num_train_timesteps"], np.round(values)
            # within 1e-3 of an integer, the row it rounds to: from_epsilon's float32 t(sigma)
            # of a level (1e-4 off) was refused here, and truncated under jit (pass 30, #2)
            near = np.abs(values - nearest) <= _TIMESTEP_ROUNDING
            if not np.all(near & (nearest >= 0) & (nearest < rows)):
                raise ValueError(
                    f"t: a learned embedding has one row per integer timestep in [0, {rows}) "
                    f"(num_train_timesteps), got {reprlib.repr(values.tolist())}"
                )
        if kind == "fourier" and not np.all(values > 0):
            raise ValueError(
                "t: a fourier U-Net takes noise levels sigma > 0 (it embeds log sigma and "
                f"divides by sigma), got {reprlib.repr(values.tolist())}"
            )

    def memory_bytes(self, n: int, height: int, width: int) -> float:
        """A lower bound of the float32 memory one forward pass of ``n`` images of
        ``height x width`` holds at once: the down path's outputs, which the up path reads back
        as skip connections, and the largest attention matrix (``heads x (HW)^2`` per image at
        the block's resolution; :func:`jax.nn.dot_product_attention` forms it whole).

        Sizes are checked against it before sampling: a U-Net at 4096 x 4096 was an
        out-of-memory error from XLA, or the kernel's kill, after the weights were loaded."""
        config = dict(self.config)
        channels, layers = config["block_out_channels"], config["layers_per_block"]
        levels = len(channels)
        head_dim = config["attention_head_dim"]

        def pixels(level):
            return height * width / 4**level

        def attention(level, attended):
            heads = channels[level] // (head_dim or channels[level]) if attended else 0
            return heads * pixels(level) ** 2

        skips = channels[0] * pixels(0)  # conv_in's output
        largest = 0.0
        for level, block in enumerate(config["down_block_types"]):
            skips += layers * channels[level] * pixels(level)
            skips += channels[level] * pixels(level + 1) if level < levels - 1 else 0.0
            largest = max(largest, attention(level, block.startswith("Attn")))
        for i, block in enumerate(config["up_block_types"]):
            largest = max(largest, attention(levels - 1 - i, block.startswith("Attn")))
        mid = config["mid_block_type"] is not None and config["add_attention"]
        largest = max(largest, attention(levels - 1, mid))
        return 4.0 * n * (skips + largest)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights as diffusers' ``UNet2DModel`` names them, float32 in PyTorch layout.

        Loading is a linear map from the state dict to the network's leaves (transposes and
        reshapes, each tensor to one leaf), so this is its transpose
        (:func:`jax.linear_transpose`): exact, and ``UNet2D.from_weights(config,
        unet.state_dict())`` rebuilds ``unet`` bit for bit.

        Returns:
            Parameter name -> ``float32`` NumPy array (convolutions OIHW, linear layers
            ``(out, in)``), what ``UNet2DModel.state_dict()`` holds.
        """
        config = dict(self.config)
        specs = _tensor_specs(config)
        zeros = {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, (shape, _) in
                 specs.items()}  # fmt: skip

        def load(tensors):
            return self._layers(config, _Traced(specs, tensors.__getitem__))

        (tensors,) = jax.linear_transpose(load, zeros)(self)
        return {name: np.array(tensor) for name, tensor in tensors.items()}  # writable copies

    @classmethod
    def _build(cls, config: dict, weights: _Weights) -> UNet2D:
        """The network of a checked ``config``: every tensor's name and shape checked against
        it first, abstractly (nothing read), then each tensor's values as they are read."""
        jax.eval_shape(lambda: cls._layers(config, weights.shapes_only()))
        return cls._layers(config, weights)

    @classmethod
    def _layers(cls, config: dict, weights: _Weights) -> UNet2D:
        """The network of a checked ``config`` from ``weights``, in diffusers' layer order."""
        channels, layers = list(config["block_out_channels"]), config["layers_per_block"]
        groups, eps, n_levels = config["norm_num_groups"], config["norm_eps"], len(channels)
        emb_dim = _time_embed_dim(config)
        conv_in = _conv(weights, "conv_in", config["in_channels"], channels[0])
        time_proj, proj_dim = None, channels[0]
        if config["time_embedding_type"] == "fourier":  # GaussianFourierProjection: sin, cos
            time_proj, proj_dim = weights("time_proj.weight", (channels[0],)), 2 * channels[0]
        elif config["time_embedding_type"] == "learned":  # nn.Embedding over the timesteps
            rows = config["num_train_timesteps"]
            time_proj = weights("time_proj.weight", (rows, channels[0]))
        time_linear_1 = _linear(weights, "time_embedding.linear_1", proj_dim, emb_dim)
        time_linear_2 = _linear(weights, "time_embedding.linear_2", emb_dim, emb_dim)
        n_classes = config["num_class_embeds"]
        class_embedding = None  # diffusers: class_embed_type None with num_class_embeds
        if n_classes is not None:
            class_embedding = weights("class_embedding.weight", (n_classes, emb_dim))

        down_blocks, out = [], channels[0]
        for i, block_type in enumerate(config["down_block_types"]):
            name, final = f"down_blocks.{i}", i == n_levels - 1
            c_in, out = out, channels[i]
            resnets = [
                _resnet(weights, f"{name}.resnets.{j}", config, c_in if j == 0 else out, out)
                for j in range(layers)
            ]
            attentions = None
            if block_type == "AttnDownBlock2D":
                attentions = [
                    _attention(weights, f"{name}.attentions.{j}", out, config, groups)
                    for j in range(layers)
                ]
            resample = None
            by_resnet = block_type == "ResnetDownsampleBlock2D" or (
                block_type == "AttnDownBlock2D" and config["downsample_type"] == "resnet"
            )
            if not final and by_resnet:
                downsampler = f"{name}.downsamplers.0"
                resample = _resnet(weights, downsampler, config, out, out, resample="down")
            elif not final:
                pad = config["downsample_padding"]
                # padding 0 pads only bottom and right (diffusers' Downsample2D)
                padding = ((0, 1), (0, 1)) if pad == 0 else ((pad, pad), (pad, pad))
                resample = _conv(weights, f"{name}.downsamplers.0.conv", out, out, 3, 2, padding)
            down_blocks.append(_Block(resnets, attentions, resample, up=False))

        mid_block = None
        if config["mid_block_type"] is not None:
            scale, deepest = config["mid_block_scale_factor"], channels[-1]
            attn_groups = config["attn_norm_num_groups"]
            if attn_groups is None and config["resnet_time_scale_shift"] == "default":
                attn_groups = groups
            attentions = None
            if config["add_attention"]:
                attentions = [
                    _attention(
                        weights, "mid_block.attentions.0", deepest, config, attn_groups, scale
                    )
                ]
            mid_block = _MidBlock(
                [
                    _resnet(weights, f"mid_block.resnets.{j}", config, deepest, deepest, scale)
                    for j in range(2)
                ],
                attentions,
            )

        # diffusers' UNet2DModel: resnet j of up block i takes the previous block's output
        # (j = 0) or its own, concatenated with the skip of the matching down level.
        up_blocks, out = [], channels[-1]
        for i, block_type in enumerate(config["up_block_types"]):
            name, final = f"up_blocks.{i}", i == n_levels - 1
            previous, out = out, channels[n_levels - 1 - i]
            skip_in = channels[max(n_levels - 2 - i, 0)]
            resnets = [
                _resnet(
                    weights,
                    f"{name}.resnets.{j}",
                    config,
                    (previous if j == 0 else out) + (skip_in if j == layers else out),
                    out,
                )
                for j in range(layers + 1)
            ]
            attentions = None
            if block_type == "AttnUpBlock2D":
                attentions = [
                    _attention(weights, f"{name}.attentions.{j}", out, config, groups)
                    for j in range(layers + 1)
                ]
            resample, upsampler = None, f"{name}.upsamplers.0"
            if not final and (
                block_type == "ResnetUpsampleBlock2D"
                or (block_type == "AttnUpBlock2D" and config["upsample_type"] == "resnet")
            ):
                resample = _resnet(weights, upsampler, config, out, out, resample="up")
            elif not final:
                resample = _conv(weights, f"{upsampler}.conv", out, out)
            up_blocks.append(_Block(resnets, attentions, resample, up=True))

        unet = cls(
            conv_in=conv_in,
            time_linear_1=time_linear_1,
            time_linear_2=time_linear_2,
            time_proj=time_proj,
            class_embedding=class_embedding,
            down_blocks=down_blocks,
            mid_block=mid_block,
            up_blocks=up_blocks,
            conv_norm_out=_group_norm(weights, "conv_norm_out", channels[0], groups, eps),
            conv_out=_conv(weights, "conv_out", channels[0], config["out_channels"]),
            config=_hashable(config),
        )
        weights.check_all_used()
        return unet

    def __call__(
        self, x_t: Array, t, class_labels: Array | None = None, *, key: Array | None = None
    ) -> Array:
        r"""The network's output at ``(x_t, t)``, as ``UNet2DModel(x_t, t, class_labels).sample``.

        Without ``key`` it is ``UNet2DModel.eval()``'s output; with one, ``.train()``'s: the
        config's ``dropout`` is applied in every residual block (each block's mask from its
        own sub-key of ``key``; attention has none, as in diffusers).

        Args:
            x_t: ``(B, in_channels, H, W)`` float array (NCHW).
            t: timestep, a scalar or ``(B,)`` array (broadcast over the batch): an integer
                row of the table for a ``learned`` embedding, a noise level :math:`\sigma > 0`
                for a ``fourier`` one (which embeds :math:`\log \sigma` and divides its
                output by :math:`\sigma`, as diffusers does).
            class_labels: integer class(es) in ``[0, num_class_embeds)``, a scalar or ``(B,)``;
                required by a class-conditional config, refused by another.
            key: the dropout key of a training step, or ``None`` (evaluation: no dropout).

        Returns:
            ``(B, out_channels, H, W)`` array in ``x_t``'s float width (float32 for integer
            ``x_t``): the network computes
            in its weights' (float32), so a float64 state under ``jax_enable_x64`` (where
            scorelab's samplers compute in float64) is evaluated at float32 precision, not
            refused by the convolutions.

        Raises:
            TypeError: naming the argument: ``x_t`` or ``t`` not real numbers (a string,
                ``None``, a complex array), ``class_labels`` not integers, ``key`` not a PRNG
                key (:func:`scorelab._keys.typed_key`).
            ValueError: naming the argument: ``x_t`` not ``(B, in_channels, H, W)`` with
                ``H`` and ``W`` positive multiples of ``2 ** (len(block_out_channels) - 1)``;
                ``t`` or ``class_labels`` neither a scalar nor ``(B,)``; ``class_labels``
                given to an unconditional network, or missing for a class-conditional one.
                On concrete values (not under ``jit``, where these are not checked): a class
                outside ``[0, num_class_embeds)``, or a ``t`` that is not finite, not an
                integer row of a ``learned`` table, or not ``> 0`` for a ``fourier``
                embedding (JAX's gather clamped the first two to the last row, and log 0 made
                NaN outputs).
        """
        self._check_call(x_t, t, class_labels)
        if key is not None:
            key = typed_key(key, "key")
        config = dict(self.config)
        # A float state's width; integer pixels get the weights' float (a uint8 output
        # truncated every noise prediction to 0).
        out_dtype = jnp.result_type(x_t)
        if not jnp.issubdtype(out_dtype, jnp.floating):
            out_dtype = self.conv_in.weight.dtype
        x_t = jnp.asarray(x_t, self.conv_in.weight.dtype)
        if config["center_input_sample"]:
            x_t = 2 * x_t - 1.0
        batch = x_t.shape[0]
        timesteps = jnp.broadcast_to(jnp.asarray(t), (batch,))
        kind = config["time_embedding_type"]
        if kind == "fourier":  # of log t, sines first (UNet2DModel passes no flip)
            log_t = jnp.log(timesteps.astype(jnp.float32))
            angles = log_t[:, None] * self.time_proj[None, :] * 2 * jnp.pi
            t_emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
        elif kind == "learned":
            # rounded, not truncated: from_epsilon's t(sigma) of a level lands within 1e-4 of
            # its integer, below it at ~0.7% of the levels (the previous row, pass 30 #2)
            t_emb = self.time_proj[jnp.round(timesteps).astype(jnp.int32)]
        else:
            dim, flip, shift = (
                self.time_linear_1.weight.shape[0],
                config["flip_sin_to_cos"],
                config["freq_shift"],
            )
            t_emb = timestep_embedding(timesteps, dim, flip, shift)
        t_emb = t_emb.astype(x_t.dtype)
        emb = self.time_linear_2(jax.nn.silu(self.time_linear_1(t_emb)))
        if (class_labels is None) != (self.class_embedding is None):
            raise ValueError(
                "class_labels: pass them to a class-conditional U-Net (num_class_embeds set) "
                "and only to one"
            )
        if self.class_embedding is not None:
            emb = emb + self.class_embedding[jnp.broadcast_to(class_labels, (batch,))]

        if config["dropout"] == 0:
            key = None  # nothing to draw: the same computation as evaluation
        n_down, n_up = len(self.down_blocks), len(self.up_blocks)
        block_keys = _split(key, n_down + 1 + n_up)
        x = self.conv_in(jnp.transpose(x_t, (0, 2, 3, 1)))  # NCHW -> NHWC
        skips = [x]
        for block, block_key in zip(self.down_blocks, block_keys[:n_down]):
            x, outputs = block(x, emb, key=block_key)
            skips.extend(outputs)
        if self.mid_block is not None:
            x = self.mid_block(x, emb, block_keys[n_down])
        for block, block_key in zip(self.up_blocks, block_keys[n_down + 1 :]):
            x, _ = block(x, emb, skips, block_key)
        x = self.conv_out(jax.nn.silu(self.conv_norm_out(x)))
        if kind == "fourier":  # a noise-level network's output over its sigma (score_sde's)
            x = x / timesteps.astype(x.dtype)[:, None, None, None]
        return jnp.transpose(x, (0, 3, 1, 2)).astype(out_dtype)  # NHWC -> NCHW


def _tensor_specs(config: dict) -> dict[str, tuple[tuple, str]]:
    """Every tensor of a checked ``config``'s state dict: name -> (diffusers' shape, float32)."""
    recorder = _Recorder()
    jax.eval_shape(lambda: UNet2D._layers(config, recorder))
    return {name: (shape, "float32") for name, shape in recorder.shapes.items()}


def _time_embed_dim(config: dict) -> int:
    """Width of the timestep MLP: ``time_embedding_dim``, else 4 ``block_out_channels[0]``."""
    return config["time_embedding_dim"] or 4 * config["block_out_channels"][0]


def _hashable(config: dict) -> tuple:
    """The config as a sorted tuple of pairs (lists made tuples), so Equinox can hash it."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))


def unet_folder(path) -> Path:
    """The folder holding the U-Net's ``config.json`` in a pipeline or model folder.

    ``path/unet`` in a pipeline folder (the hub's layout, next to ``scheduler/``), else
    ``path`` itself (a bare model folder).

    Args:
        path: a pipeline or model folder, ``str`` or path-like.

    Returns:
        The :class:`~pathlib.Path` of the folder holding ``config.json``.

    Raises:
        PretrainedError: if neither ``path/unet/config.json`` nor ``path/config.json`` exists.
    """
    path = Path(path)
    if (path / "unet" / CONFIG_NAME).exists():  # not a file: read_json names what it is
        return path / "unet"
    if (path / CONFIG_NAME).exists():
        return path
    raise PretrainedError(
        f"no UNet2DModel found in {path}: expected {CONFIG_NAME} or unet/{CONFIG_NAME}; pass a "
        "diffusers pipeline or model folder"
    )


def _read_safetensors(file: Path) -> _Weights:
    """The tensors of a safetensors file, their names, shapes and dtypes read from its header
    first (no tensor is loaded until the network asks for it)."""
    from safetensors import SafetensorError, safe_open

    remedy = "the file is damaged: download the model again"
    try:
        handle = safe_open(str(file), framework="numpy")
        specs = {}
        for name in handle.keys():
            tensor = handle.get_slice(name)
            specs[name] = (tuple(tensor.get_shape()), _dtype_name(tensor.get_dtype()))
    except (SafetensorError, OSError) as error:
        raise PretrainedError(
            f"{file}: not a readable safetensors file ({first_line(error)}); {remedy}"
        ) from None

    def read(name: str) -> np.ndarray:
        if specs[name][1] == "bfloat16":  # NumPy has no bfloat16: safetensors' numpy refuses it
            return _read_bfloat16(file, name)
        return handle.get_tensor(name)

    with in_file(file, PretrainedError):
        return _Weights(specs, read)


def _read_bfloat16(file: Path, name: str) -> np.ndarray:
    """The bfloat16 tensor ``name`` of the safetensors ``file`` as float32 (exact), read from
    the format's own layout: an 8-byte little-endian header length, the JSON header of
    ``{name: {"dtype", "shape", "data_offsets"}}``, then the data (``ml_dtypes``, which JAX
    installs, knows the type)."""
    import ml_dtypes

    with open(file, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        entry = json.loads(handle.read(size))[name]
        start, end = entry["data_offsets"]
        handle.seek(8 + size + start)
        data = handle.read(end - start)
    values = np.frombuffer(data, ml_dtypes.bfloat16).reshape(entry["shape"])
    return values.astype(np.float32)


def load_unet(path) -> UNet2D:
    """Load a diffusers ``UNet2DModel`` from a pipeline or model folder, without torch.

    Reads ``config.json``, checks every field (:meth:`UNet2D.from_weights`), then
    ``diffusion_pytorch_model.safetensors``: its header first (every tensor's name, shape and
    dtype against the config) and each tensor's values (finite) before use. Checkpoints saved
    only as PyTorch pickles (``.bin``) must be converted once, where torch is installed:
    ``UNet2DModel.from_pretrained(path).save_pretrained(path)`` writes safetensors.

    Args:
        path: a pipeline folder (with ``unet/``) or a model folder, ``str`` or path-like
            (:func:`unet_folder`).

    Returns:
        The :class:`UNet2D`; call it on ``(B, C, H, W)`` inputs.

    Raises:
        PretrainedError: one line naming the file and the field or tensor: no ``config.json``,
            unreadable JSON or not an object, a ``_class_name`` other than ``UNet2DModel``, a
            missing or damaged (truncated, oversized header) safetensors file, or any check of
            :meth:`UNet2D.from_weights` on the config and the tensors.

    References:
        diffusers ``UNet2DModel`` documentation.
        https://huggingface.co/docs/diffusers/api/models/unet2d
    """
    folder = unet_folder(path)
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    config = read_json(config_file)
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise PretrainedError(
            f"{config_file}: unsupported model class {config['_class_name']!r}; scorelab loads "
            "UNet2DModel pipelines (DDPM, DDIM) only"
        )
    with in_file(config_file, PretrainedError):
        config = _check_config(config)
    index = weights_file.with_name(f"{WEIGHTS_NAME}.index.json")
    if not weights_file.exists() and index.exists():  # was called a .bin-only checkpoint
        raise PretrainedError(
            f"{index}: a sharded checkpoint; scorelab reads one safetensors file: merge it once "
            "with torch: UNet2DModel.from_pretrained(folder).save_pretrained(folder, "
            'max_shard_size="100GB")'
        )
    if not weights_file.exists():
        stem = WEIGHTS_NAME.removesuffix(".safetensors")
        variants = sorted(folder.glob(f"{stem}.*.safetensors"))
        if variants:  # save_pretrained(variant="fp16") writes only those: not a .bin (pass 28)
            raise PretrainedError(
                f"{weights_file} not found, only the variant {variants[0].name}; scorelab reads "
                "the main file: save it once with torch: UNet2DModel.from_pretrained(folder, "
                f'variant="{variants[0].suffixes[-2][1:]}").save_pretrained(folder)'
            )
        if not any(folder.glob(f"{stem}*.bin")):
            raise PretrainedError(f"{weights_file} not found; download the pipeline again")
        raise PretrainedError(
            f"{weights_file} not found; a .bin-only checkpoint needs converting once with torch: "
            "UNet2DModel.from_pretrained(folder).save_pretrained(folder) writes safetensors"
        )
    check_file(weights_file, "safetensors file", PretrainedError, "download the pipeline again")
    weights = _read_safetensors(weights_file)
    with in_file(weights_file, PretrainedError):
        return UNet2D._build(config, weights)
