r"""Score models: any callable ``score_fn(x, sigma) -> grad log q_sigma(x)`` for one example.

Every function in scorelab that takes a model takes a plain callable of one example
``x`` (a vector ``(d,)`` or any array, e.g. an image ``(C, H, W)``) and a scalar noise level
``sigma``, returning an array of ``x``'s shape, so a Flax
``functools.partial(model.apply, params)`` wrapped to that signature, an Equinox module, or a
hand-written function all plug in unchanged. The bundled networks are Equinox modules.

**Difference from the founding tutorial.** The tutorial's networks end in
``nn.leaky_relu``, which multiplies every negative output component by 0.01: a score pointing
left or down is shrunk a hundredfold, which smears NCSN samples into streaks. scorelab's
networks end in a *linear* layer.

**Activations.** The hidden activation is an argument (:data:`ACTIVATIONS`); the tutorial's is
the leaky ReLU. Score matching on the data with the Jacobian trace (Hyvarinen, Hutchinson,
sliced) needs a smooth one such as SiLU: the trace term
:math:`\operatorname{tr} \nabla_x s_\theta(x)` reaches the pre-activation biases, which place
the kinks, through the activation's second derivative, zero almost everywhere for a
piecewise-linear one, so only LayerNorm's curvature and the :math:`\tfrac12\|s\|^2` term
move them. On the tutorial's mixture (modes of sd 0.32,
10 apart; 2000 steps, batch 512) the leaky-ReLU network reaches a held-out Hyvarinen loss of
-4.1 against the exact score's -9.98, the SiLU network -9.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import check_choice, check_int, check_memory, check_real, is_traced
from scorelab.precond import _example, _noise_level
from scorelab.targets import GaussianMixture

__all__ = [
    "ACTIVATIONS",
    "NOISE_EMBEDDINGS",
    "MLP",
    "ConditionalMLP",
    "NoiseConditionalMLP",
    "ExactScore",
    "positional_embedding",
]

ACTIVATIONS = {
    "leaky_relu": jax.nn.leaky_relu,
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
}
"""Hidden-layer activations by name (names, not functions, so a model's constructor
arguments stay JSON for :func:`scorelab.checkpoints.save_model`)."""


NOISE_EMBEDDINGS = ("concat", "positional")
"""How :class:`ConditionalMLP` takes its scalar condition: ``concat`` appends it to the input,
``positional`` embeds it as EDM's networks do (:func:`positional_embedding`)."""

_POSITIONAL_CHANNELS = 32
_EMBEDDING_WIDTH = 128


def _check_activation(name: str) -> None:
    check_choice("activation", name, tuple(ACTIVATIONS))


def _positive(field: str, value, optional: bool = False) -> float | None:
    """``value`` as a Python float after checking it is a finite number ``> 0`` within
    float32's range (or ``None`` when ``optional``); a 0-d NumPy or JAX number is accepted.
    A constructor setting of 0, a negative or NaN one made every output NaN."""
    if isinstance(value, np.ndarray | np.generic | jax.Array) and np.ndim(value) == 0:
        value = value.item()
    check_real(field, value, "a number > 0", lambda v: v > 0, optional=optional)
    return None if value is None else float(value)


def _check_size(x: Array, dim: int) -> None:
    """Raise unless ``x`` holds ``dim`` entries, one example (a static check: it holds under
    ``jit``); a batch or another dimension was a ``dot_general`` error from inside."""
    if x.size != dim:
        raise ValueError(
            f"x: expected d = {dim} elements (one example; vmap over a batch), got shape {x.shape}"
        )


def _check_shape(dim, widths, length: int | None = None) -> tuple[int, ...]:
    """Check ``dim`` (an integer ``>= 1``) and ``widths`` (a non-empty list or tuple of integers
    ``>= 1``, of ``length`` entries when given) and return ``widths`` as a tuple: a checkpoint's
    JSON gives a list back."""
    check_int("dim", dim, 1)
    what = "integers >= 1, one per hidden layer" if length is None else f"{length} integers >= 1"
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"widths: expected a list or tuple of {what}, got {widths!r}")
    if not widths or (length is not None and len(widths) != length):
        raise ValueError(f"widths: expected {what}, got {widths!r}")
    for width in widths:
        check_int("widths", width, 1)
    return tuple(int(w) for w in widths)


def _check_weights(dim: int, widths: tuple[int, ...], keys: Array) -> None:
    """Refuse an MLP's float32 weights beyond the memory before drawing them (``dim = 10**12``
    built a model whose weights failed on 16 TB later). Skipped while ``keys`` is traced: under
    ``eqx.filter_eval_shape`` nothing is allocated, and :func:`scorelab.builders.make_model`
    names the network by its examples' shape."""
    if is_traced(keys):
        return
    sizes = (dim, *widths, dim)
    parameters = sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
    check_memory("dim" if dim > max(widths) else "widths", 4 * parameters, "give a smaller network")


def positional_embedding(c, channels: int = _POSITIONAL_CHANNELS, max_positions: float = 1e4):
    r"""EDM's positional embedding of a scalar condition (Vaswani et al. 2017's sinusoids).

    .. math::
        e(c) = \big[\cos(f_0 c), \dots, \cos(f_{m-1} c),\ \sin(f_0 c), \dots,
            \sin(f_{m-1} c)\big], \qquad f_i = P^{-i/(m-1)},\ m = \text{channels}/2,

    with :math:`P` = ``max_positions``: frequencies from 1 down to :math:`1/P`, as in the
    ``PositionalEmbedding(endpoint=True)`` of Karras et al.'s DDPM++ network, which embeds
    :math:`c_{noise} = \tfrac14 \ln\sigma`. Written here because neither Equinox nor optax
    ships it; it is four lines.

    Args:
        c: the condition, a scalar.
        channels: the embedding's size, even and ``>= 4``.
        max_positions: :math:`P`, the ratio of the highest frequency to the lowest, ``> 0``.

    Returns:
        ``(channels,)``.

    Raises:
        ValueError: ``channels`` is not an even integer ``>= 4``, ``max_positions`` is not a
            finite number ``> 0``, or ``c`` is not a scalar.
        TypeError: ``c`` is complex or not numeric.

    References:
        Vaswani, A. et al. (2017). Attention Is All You Need. https://arxiv.org/abs/1706.03762
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    check_int("channels", channels, 4)
    if channels % 2:
        raise ValueError(f"channels: expected an even number (cosines and sines), got {channels}")
    # the frequencies, the angles and the embedding, float32 (10**12 channels tried 2 TB)
    check_memory("channels", 3 * 4 * channels, "give fewer channels")
    if not is_traced(max_positions):  # 0 or a negative one gave NaN
        max_positions = _positive("max_positions", max_positions)
    c = _example(c, "c")
    if c.size != 1:
        raise ValueError(f"c: expected a scalar condition, got shape {c.shape}")
    half = channels // 2
    frequencies = max_positions ** (-jnp.arange(half) / (half - 1))
    angles = jnp.asarray(c).reshape(()) * frequencies
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)])


def _dense(layer: eqx.nn.Linear, x: Array) -> Array:
    """``layer(x)`` as ``x @ W.T + b``.

    It computes the same function as Equinox's ``W @ x + b``, but the layout differs under
    ``vmap``. Equinox's form puts the batch axis last in each product, and XLA:CPU then
    transposes the activations around the linearised network of the trace losses. This form
    keeps the batch leading: the tutorial's Hyvarinen step runs faster with it and its DSM
    step at the same speed (``benchmarks/training.py``; docs: benchmarks, "Training").
    """
    return x @ layer.weight.T + layer.bias


def _normed_dense(
    layer: eqx.nn.Linear, norm: eqx.nn.LayerNorm, x: Array, shift: Array | None = None
) -> Array:
    r"""``norm(layer(x))`` with LayerNorm's centring folded into the layer.

    LayerNorm sees :math:`h = W x + b` only through :math:`h - \bar h`, and
    :math:`h - \bar h = W_c x + b_c` with :math:`W_c = W - \mathbf{1} \bar w^\top` (each column
    minus its mean) and :math:`b_c = b - \bar b`. So the layer multiplies by the centred
    weights, and only the scale :math:`(\overline{h_c^2} + \epsilon)^{-1/2}` is taken over
    the activations. It is the same function with the same parameters and, through the
    centring, the same gradients. Under ``vmap`` the centring is paid once per call on the
    weights instead of a mean and a subtraction per example. That is one pass fewer over the
    activations forward and several backward, which XLA:CPU runs faster
    (``benchmarks/training.py``; docs: benchmarks, "Training").

    ``shift``, if given, is added to :math:`h` before the normalisation (centred with it).
    """
    weight, bias = _centred(layer)
    h = x @ weight.T + bias
    if shift is not None:
        h = h + shift - jnp.mean(shift)
    return h * jax.lax.rsqrt(jnp.mean(h * h) + norm.eps) * norm.weight + norm.bias


def _centred(layer: eqx.nn.Linear) -> tuple[Array, Array]:
    r"""``(W_c, b_c)``: the layer's weight with each column's mean removed, and its bias with
    its mean removed, so that :math:`W_c x + b_c = h - \bar h` for :math:`h = W x + b`."""
    return layer.weight - jnp.mean(layer.weight, axis=0), layer.bias - jnp.mean(layer.bias)


class MLP(eqx.Module):
    r"""The tutorial's unconditional score network: ``d -> 128 -> 512 -> 256 -> d``.

    Each hidden layer is Linear, LayerNorm, ``activation`` (the tutorial's leaky ReLU, slope 0.01,
    by default; use ``"silu"`` for the trace-based losses, see the module docstring); the output
    layer is
    **linear** (the tutorial's extra final leaky ReLU is a defect, see the module docstring).
    The network ignores ``sigma``: it models the score of one distribution.

    ``input_scale`` :math:`c` feeds :math:`x / c` to the first layer (the output stays the
    score in ``x``'s units). It matters because the first layer is followed by LayerNorm,
    which is invariant to the scale of :math:`W x + b`: when :math:`|W x| \gg |b|` (data
    spread over :math:`\pm 10`, biases of order 1) the normalised features depend on the
    *direction* of :math:`x` alone, and the network cannot resolve where along a ray a point
    lies. Setting :math:`c` to the data's scale (its standard deviation) restores that. The
    tutorial's network is ``input_scale=1``.

    The layers are applied in a faster but equal form: LayerNorm's centring is folded into the
    preceding weights, and every product is ``x @ W.T`` (see ``_normed_dense``). The
    ``eqx.nn.Linear`` and ``eqx.nn.LayerNorm`` fields hold the parameters; only their
    ``weight``, ``bias`` and ``eps`` are read.

    Call: ``model(x, sigma=None)`` with ``x`` of ``d`` elements in any shape (a vector, or an
    image flattened inside); returns the score in ``x``'s shape.

    Raises:
        ValueError: ``dim`` is not an integer ``>= 1``, ``widths`` is empty or holds an entry
            that is not an integer ``>= 1``, ``input_scale`` is not a finite number ``> 0``,
            or ``activation`` is unknown; at a call, ``x`` does not hold ``dim`` entries.
        TypeError: ``widths`` is not a list or tuple, ``key`` is not a PRNG key; at a call,
            ``x`` is complex or not numeric.
    """

    hidden_layers: tuple[eqx.nn.Linear, ...]
    norms: tuple[eqx.nn.LayerNorm, ...]
    output_layer: eqx.nn.Linear
    input_scale: float = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        key: Array,
        dim: int = 2,
        widths: Sequence[int] = (128, 512, 256),
        input_scale: float = 1.0,
        activation: str = "leaky_relu",
    ):
        widths = _check_shape(dim, widths)
        _check_activation(activation)
        input_scale = _positive("input_scale", input_scale)
        keys = jax.random.split(typed_key(key), len(widths) + 1)
        _check_weights(dim, widths, keys)
        sizes = (dim, *widths)
        self.hidden_layers = tuple(
            eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys[:-1])
        )
        self.norms = tuple(eqx.nn.LayerNorm(w) for w in widths)
        self.output_layer = eqx.nn.Linear(widths[-1], dim, key=keys[-1])
        self.input_scale = float(input_scale)
        self.activation = activation

    def __call__(self, x: Array, sigma=None) -> Array:
        del sigma  # unconditional
        x = _example(x)
        _check_size(x, self.output_layer.out_features)
        act = ACTIVATIONS[self.activation]
        h = x.reshape(-1) / self.input_scale
        for layer, norm in zip(self.hidden_layers, self.norms):
            h = act(_normed_dense(layer, norm, h))
        return _dense(self.output_layer, h).reshape(x.shape)


class ConditionalMLP(eqx.Module):
    r"""The noise-conditional network's body :math:`F(x, c)`, conditioned on a scalar ``c``.

    ``256`` (LayerNorm) ``-> 512 -> 256`` (LayerNorm), ``activation`` after each hidden layer,
    and a **linear** output layer. :class:`NoiseConditionalMLP` calls it with
    :math:`c = \tfrac14 \log\sigma`; as the raw network of
    :class:`scorelab.precond.EDMPreconditioned` it is EDM's :math:`F_\theta(c_{in} x, c_{noise})`.
    ``noise_embedding`` (:data:`NOISE_EMBEDDINGS`) says how ``c`` enters:

    - ``"concat"`` (the tutorial's): the input is :math:`[x, c]`, nothing is done to either;
    - ``"positional"`` (EDM's DDPM++ network): the embedding
      :math:`e = \phi(W_2\, \phi(W_1 \operatorname{pos}(c) + b_1) + b_2)` of
      :func:`positional_embedding` (32 channels) through a two-layer map of width 128
      (:math:`\phi` the activation) is added, through its own linear map :math:`A_l e`, to
      every hidden layer's pre-activation :math:`W_l h + b_l + A_l e` (before its LayerNorm),
      so that each layer's kinks move with the noise level; the input is :math:`x` alone.

    The layers are applied in the same equal, faster form as :class:`MLP`'s.

    Call: ``network(x, c)`` with ``x`` of any shape of ``d`` entries (flattened, e.g. an image
    ``(1, 8, 8)``) and a scalar ``c``; returns ``x``'s shape.

    Raises:
        ValueError: ``dim`` is not an integer ``>= 1``, ``widths`` is not 3 integers ``>= 1``,
            or ``activation`` or ``noise_embedding`` is unknown; at a call, ``x`` does not
            hold ``dim`` entries, ``c`` is not a scalar or a concrete ``c`` is not finite.
        TypeError: ``widths`` is not a list or tuple, ``key`` is not a PRNG key; at a call,
            ``x`` or ``c`` is complex or not numeric.

    References:
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """

    layers: tuple[eqx.nn.Linear, eqx.nn.Linear, eqx.nn.Linear]
    norm_in: eqx.nn.LayerNorm
    norm_out: eqx.nn.LayerNorm
    output_layer: eqx.nn.Linear
    embedding_layers: tuple[eqx.nn.Linear, eqx.nn.Linear] | None
    shift_layers: tuple[eqx.nn.Linear, eqx.nn.Linear, eqx.nn.Linear] | None
    activation: str = eqx.field(static=True)
    noise_embedding: str = eqx.field(static=True)

    def __init__(
        self,
        key: Array,
        dim: int = 2,
        widths: tuple[int, int, int] = (256, 512, 256),
        activation: str = "leaky_relu",
        noise_embedding: str = "concat",
    ):
        widths = _check_shape(dim, widths, 3)
        _check_activation(activation)
        check_choice("noise_embedding", noise_embedding, NOISE_EMBEDDINGS)
        key = typed_key(key)
        k1, k2, k3, k4 = jax.random.split(key, 4)
        _check_weights(dim, widths, k1)
        w1, w2, w3 = widths
        inputs = dim + 1 if noise_embedding == "concat" else dim
        self.layers = (
            eqx.nn.Linear(inputs, w1, key=k1),
            eqx.nn.Linear(w1, w2, key=k2),
            eqx.nn.Linear(w2, w3, key=k3),
        )
        self.norm_in = eqx.nn.LayerNorm(w1)
        self.norm_out = eqx.nn.LayerNorm(w3)
        self.output_layer = eqx.nn.Linear(w3, dim, key=k4)
        self.activation = activation
        self.noise_embedding = noise_embedding
        if noise_embedding == "concat":
            self.embedding_layers = self.shift_layers = None
        else:
            keys = jax.random.split(jax.random.fold_in(key, 1), 5)
            self.embedding_layers = (
                eqx.nn.Linear(_POSITIONAL_CHANNELS, _EMBEDDING_WIDTH, key=keys[0]),
                eqx.nn.Linear(_EMBEDDING_WIDTH, _EMBEDDING_WIDTH, key=keys[1]),
            )
            self.shift_layers = tuple(
                eqx.nn.Linear(_EMBEDDING_WIDTH, w, key=k) for w, k in zip(widths, keys[2:])
            )

    def __call__(self, x: Array, c) -> Array:
        # x's float type (c cast to an integer x's dtype was 0.5 -> 0), x cast with it.
        x = _example(x)
        _check_size(x, self.output_layer.out_features)
        c = _example(c, "c")
        if c.size != 1:
            raise ValueError(f"c: expected a scalar condition, got shape {c.shape}")
        if not is_traced(c) and not np.isfinite(np.asarray(c)).all():
            raise ValueError(f"c: expected a finite condition, got {float(c.reshape(-1)[0])}")
        dtype = jnp.result_type(x, 1.0)
        x, c = x.astype(dtype), c.astype(dtype).reshape((1,))
        act = ACTIVATIONS[self.activation]
        first, middle, last = self.layers
        if self.noise_embedding == "concat":
            inputs, shifts = jnp.concatenate([x.reshape(-1), c]), (None, None, None)
        else:
            e = positional_embedding(c[0])
            for layer in self.embedding_layers:
                e = act(_dense(layer, e))
            inputs, shifts = x.reshape(-1), tuple(_dense(a, e) for a in self.shift_layers)
        h = act(_normed_dense(first, self.norm_in, inputs, shifts[0]))
        h = _dense(middle, h)
        h = act(h if shifts[1] is None else h + shifts[1])
        h = act(_normed_dense(last, self.norm_out, h, shifts[2]))
        return _dense(self.output_layer, h).reshape(x.shape)


class NoiseConditionalMLP(eqx.Module):
    r"""The tutorial's noise-conditional network :math:`s_\theta(x, \sigma)`.

    :class:`ConditionalMLP` on :math:`x` and :math:`\tfrac14 \log\sigma` (``noise_embedding``
    says how the level enters, :data:`NOISE_EMBEDDINGS`): ``256`` (LayerNorm)
    ``-> 512 -> 256`` (LayerNorm), ``activation`` (leaky ReLU by default, as the tutorial) after
    each hidden layer, and a **linear** output layer.

    With ``scale_by_sigma=True`` (the default) the output is divided by :math:`\sigma`, so the
    network predicts :math:`-\varepsilon` rather than :math:`-\varepsilon/\sigma`; this is
    technique 3 of Song & Ermon (2020) and keeps the output O(1) over a sigma range of four
    decades. ``scale_by_sigma=False`` is the tutorial's parameterisation.

    With ``sigma_data`` :math:`\sigma_d` set, the input is
    :math:`c_{in}(\sigma)\, x` with :math:`c_{in} = 1/\sqrt{\sigma^2 + \sigma_d^2}`, so the
    network sees unit-variance inputs at every noise level (Karras et al. 2022, Table 1); see
    :class:`MLP` for why this matters before a LayerNorm. ``None`` is the tutorial's raw input.
    EDM's full preconditioning (skip connection and output scale as well) is
    :class:`scorelab.precond.EDMPreconditioned`.

    Call: ``model(x, sigma)`` with ``x`` of shape ``(d,)`` and scalar ``sigma > 0``.

    Raises:
        ValueError, TypeError: as :class:`ConditionalMLP` for ``dim``, ``widths``,
            ``activation``, ``noise_embedding``, ``key`` and ``x``.
        ValueError: ``sigma_data`` is neither ``None`` nor a finite number ``> 0``; at a call,
            ``sigma`` is not a scalar, or a concrete ``sigma`` is not a finite number ``> 0``
            within float32's range of noise levels (``sigma = 0`` gave NaN).
        TypeError: ``scale_by_sigma`` is not ``True`` or ``False`` (``"no"`` was truthy);
            at a call, ``sigma`` is complex or not numeric.

    References:
        Song, Y. & Ermon, S. (2020). Improved Techniques for Training Score-Based Generative
        Models. https://arxiv.org/abs/2006.09011
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """

    network: ConditionalMLP
    scale_by_sigma: bool = eqx.field(static=True)
    sigma_data: float | None = eqx.field(static=True)

    def __init__(
        self,
        key: Array,
        dim: int = 2,
        widths: tuple[int, int, int] = (256, 512, 256),
        scale_by_sigma: bool = True,
        sigma_data: float | None = None,
        activation: str = "leaky_relu",
        noise_embedding: str = "concat",
    ):
        if not isinstance(scale_by_sigma, bool | np.bool_):
            raise TypeError(f"scale_by_sigma: expected True or False, got {scale_by_sigma!r}")
        sigma_data = _positive("sigma_data", sigma_data, optional=True)
        self.network = ConditionalMLP(key, dim, widths, activation, noise_embedding)
        self.scale_by_sigma = bool(scale_by_sigma)
        self.sigma_data = sigma_data

    @property
    def activation(self) -> str:
        """The hidden activation's name (:data:`ACTIVATIONS`)."""
        return self.network.activation

    def __call__(self, x: Array, sigma) -> Array:
        x = _example(x)
        sigma = _noise_level(x, sigma)  # x's float type: an integer x's dtype made 0.5 -> 0
        if self.sigma_data is not None:
            x = x * jax.lax.rsqrt(sigma**2 + self.sigma_data**2)
        out = self.network(x, 0.25 * jnp.log(sigma))
        return out / sigma if self.scale_by_sigma else out


class ExactScore(eqx.Module):
    r"""The exact VE-noised score of a Gaussian-mixture target, as a score model.

    ``ExactScore(target)(x, sigma)`` returns :math:`\nabla \log q_\sigma(x)` with
    :math:`q_\sigma = q_0 * \mathcal{N}(0, \sigma^2 I)`; ``sigma = 0`` gives the clean score.
    This is the oracle: run any sampler with it to separate sampler error from model error.

    Raises:
        TypeError: ``target`` is not a :class:`~scorelab.targets.GaussianMixture`; at a call,
            ``x`` or ``sigma`` is complex or not numeric.
        ValueError: at a call, ``x`` is not one point of the target's dimension, ``sigma`` is
            not a scalar, or a concrete ``sigma`` is not a finite number ``>= 0`` within
            float32's range of noise levels.
    """

    target: GaussianMixture

    def __init__(self, target: GaussianMixture):
        if not isinstance(target, GaussianMixture):
            raise TypeError(
                f"target: expected a scorelab.targets.GaussianMixture, got {type(target).__name__}"
            )
        self.target = target

    def __call__(self, x: Array, sigma=0.0) -> Array:
        x = _example(x)
        # x's float type: sigma cast to an integer x's dtype was 0.5 -> 0, the clean score.
        return self.target.ve_score(x, _noise_level(x, sigma, zero=True))
