r"""A small digits classifier, shipped with scorelab, whose features the image metrics use.

Image papers measure samples in the feature space of a pretrained Inception network (FID, KID,
precision and recall); no such network can be downloaded here, and Inception is meaningless on
8x8 digits anyway. scorelab ships instead a small convolutional classifier trained on
``scorelab.data.digits("train")`` by the committed, seeded script
``scripts/make_digits_classifier.py``; its penultimate layer (64 features after a ReLU) is the
feature space of :mod:`scorelab.image_metrics` and its softmax gives the class statistics.
Its held-out accuracy is reported by the script and in ``docs/how-to/image-metrics.md``.

The weights are package data (``scorelab/_fixtures/digits_classifier.eqx``, about 190 kB) and
:func:`load_digits_classifier` refuses a file whose SHA-256 is not
:data:`DIGITS_CLASSIFIER_SHA256`. 16x16 digits (``digits(size=16)``) are classified after a
2x2 average pooling to 8x8 (:func:`to_classifier_input`): they are bicubic enlargements of the
8x8 images, so no second network is needed.

References:
    Heusel, M. et al. (2017). GANs Trained by a Two Time-Scale Update Rule Converge to a Local
    Nash Equilibrium (features of a fixed classifier as the space of a sample metric).
    https://arxiv.org/abs/1706.08500
"""

from __future__ import annotations

import functools
import hashlib
import io
from importlib import resources

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import check_int, check_real, is_real_dtype

__all__ = [
    "DigitsClassifier",
    "DIGITS_CLASSIFIER_SHA256",
    "to_classifier_input",
    "train_classifier",
    "load_digits_classifier",
    "classifier_outputs",
]

DIGITS_CLASSIFIER_SHA256 = "0a034c8ad23865f29def9d07f735b8746ab4102b1e245554e386dd5c0c938e4c"
"""SHA-256 of the shipped weights file; :func:`load_digits_classifier` checks it."""

_FIXTURE = "digits_classifier.eqx"


class DigitsClassifier(eqx.Module):
    r"""A three-layer CNN for 8x8 digits: features :math:`\phi(x) \in \mathbb{R}^{64}`, logits.

    .. math::
        \phi(x) = \mathrm{relu}(W_4\, \mathrm{flat}(\mathrm{relu}(c_3(\mathrm{relu}(c_2(
        \mathrm{relu}(c_1(x)))))))), \qquad \mathrm{logits}(x) = W_5\, \phi(x) + b_5,

    with :math:`c_1` a 3x3 convolution 1 -> 16 channels (8x8), :math:`c_2` 3x3 stride 2,
    16 -> 32 (4x4), :math:`c_3` 3x3, 32 -> 32 (4x4).
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    conv3: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, key: Array):
        """Random initialisation (Equinox's defaults) from ``key``."""
        keys = jax.random.split(key, 5)
        self.conv1 = eqx.nn.Conv2d(1, 16, 3, padding=1, key=keys[0])
        self.conv2 = eqx.nn.Conv2d(16, 32, 3, stride=2, padding=1, key=keys[1])
        self.conv3 = eqx.nn.Conv2d(32, 32, 3, padding=1, key=keys[2])
        self.hidden = eqx.nn.Linear(32 * 4 * 4, 64, key=keys[3])
        self.head = eqx.nn.Linear(64, 10, key=keys[4])

    def features(self, x: Array) -> Array:
        """Penultimate features of one image ``x`` of shape ``(1, 8, 8)``: shape ``(64,)``."""
        h = jax.nn.relu(self.conv1(x))
        h = jax.nn.relu(self.conv2(h))
        h = jax.nn.relu(self.conv3(h))
        return jax.nn.relu(self.hidden(h.reshape(-1)))

    def __call__(self, x: Array) -> Array:
        """Class logits of one image ``x`` of shape ``(1, 8, 8)``: shape ``(10,)``."""
        return self.head(self.features(x))


_SHAPES = {(1, 8, 8): 8, (64,): 8, (1, 16, 16): 16, (256,): 16}
_RANGE = 2.0
"""Pixels beyond ``[-_RANGE, _RANGE]`` are refused: the classifier takes ``[-1, 1]`` images, and
a sampler's unclipped output overshoots a little, but ``[0, 255]`` pixels are another scale."""


def to_classifier_input(images, name: str = "images") -> np.ndarray:
    """Images as the classifier's ``(n, 1, 8, 8)`` float32 input.

    Args:
        images: ``(n, 1, 8, 8)``, ``(n, 64)``, ``(n, 1, 16, 16)`` or ``(n, 256)`` finite real
            values in about ``[-1, 1]`` (within ``[-2, 2]``), ``n >= 1``; 16x16 images are
            reduced by 2x2 average pooling.
        name: the argument named in error messages.

    Returns:
        ``(n, 1, 8, 8)`` float32.

    Raises:
        ValueError: naming ``name``, for any other shape (a ``(1, 4, 16)`` image was reshaped
            into 8x8), no images, complex or non-numeric values, NaN or inf, or values beyond
            ``[-2, 2]`` (``[0, 255]`` pixels).
    """
    array = np.asarray(images)
    if np.iscomplexobj(array):
        raise ValueError(f"{name}: complex values (dtype {array.dtype}); give real images")
    if array.dtype != np.bool_ and not is_real_dtype(array.dtype):
        raise ValueError(f"{name}: expected real numbers, got dtype {array.dtype}")
    size = _SHAPES.get(array.shape[1:]) if array.ndim >= 2 else None
    if size is None or array.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (n, 1, 8, 8), (n, 64), (n, 1, 16, 16) or (n, 256) with "
            f"n >= 1, got {array.shape}"
        )
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(axis=1))
        raise ValueError(
            f"{name}: {bad.size} image(s) hold NaN or inf (first at index {bad[0]}); drop or "
            "redraw them"
        )
    low, high = float(array.min()), float(array.max())
    if low < -_RANGE or high > _RANGE:
        raise ValueError(
            f"{name}: values in [{low:.4g}, {high:.4g}]; the classifier takes images in [-1, 1] "
            "(clip samples with np.clip(x, -1, 1), rescale [0, 255] pixels as x / 127.5 - 1)"
        )
    n = array.shape[0]
    images = array.astype(np.float32).reshape(n, 1, size, size)
    if size == 16:
        images = images.reshape(n, 1, 8, 2, 8, 2).mean(axis=(3, 5))
    return images


@eqx.filter_jit
def _outputs(model: DigitsClassifier, x: Array) -> tuple[Array, Array]:
    features = jax.vmap(model.features)(x)
    return features, jax.vmap(model.head)(features)


def classifier_outputs(
    model: DigitsClassifier, images, batch: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Features and class probabilities of many images, in chunks of ``batch``.

    Args:
        model: the classifier.
        images: any shape :func:`to_classifier_input` accepts, ``n`` images.
        batch: images per call, >= 1 (memory; the result depends on it only in float32 rounding).

    Returns:
        ``(features, probabilities)``: float64 ``(n, 64)`` and ``(n, 10)``.

    Raises:
        TypeError: for a ``model`` that is not a :class:`DigitsClassifier`.
        ValueError: for ``batch < 1`` or images :func:`to_classifier_input` refuses.
    """
    if not isinstance(model, DigitsClassifier):
        raise TypeError(
            f"model: expected a DigitsClassifier (load_digits_classifier()), got "
            f"{type(model).__name__}"
        )
    check_int("batch", batch, 1)
    x = to_classifier_input(images)
    parts = [_outputs(model, jnp.asarray(x[i : i + batch])) for i in range(0, len(x), batch)]
    features = np.concatenate([np.asarray(f, np.float64) for f, _ in parts])
    logits = np.concatenate([np.asarray(g, np.float64) for _, g in parts])
    return features, np.asarray(jax.nn.softmax(logits, axis=-1))


def train_classifier(
    key: Array,
    images,
    labels,
    *,
    epochs: int = 40,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
) -> DigitsClassifier:
    r"""Train a :class:`DigitsClassifier` by cross-entropy with AdamW (optax), seeded.

    .. math::
        \min_\theta \frac{1}{n} \sum_i -\log \mathrm{softmax}(f_\theta(x_i))_{y_i}

    Each epoch visits the images in a fresh permutation (``fold_in(key, epoch)``); the last
    incomplete batch is dropped.

    Args:
        key: PRNG key (initialisation and order).
        images: ``(n, 1, 8, 8)`` float32 images in [-1, 1].
        labels: ``(n,)`` integer classes 0-9.
        epochs, batch_size, learning_rate, weight_decay: the optimisation: ``epochs >= 1``,
            ``1 <= batch_size <= n``, ``learning_rate > 0`` and ``weight_decay >= 0`` finite.

    Returns:
        The trained classifier.

    Raises:
        TypeError: for a ``key`` that is not a PRNG key.
        ValueError: naming the argument, for images :func:`to_classifier_input` refuses,
            labels that are not ``(n,)`` integers 0-9, or settings out of range (a batch larger
            than the data trained nothing; a NaN learning rate made NaN weights).

    References:
        Loshchilov, I. & Hutter, F. (2019). Decoupled Weight Decay Regularization.
        https://arxiv.org/abs/1711.05101
    """
    key = typed_key(key)
    x = to_classifier_input(images)
    y = _check_labels(labels, len(x))
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    if batch_size > len(x):
        raise ValueError(
            f"batch_size: {batch_size} is more than the {len(x)} images (the last incomplete "
            f"batch is dropped, so nothing would be trained); give batch_size <= {len(x)}"
        )
    check_real("learning_rate", learning_rate, "a number > 0", lambda v: v > 0)
    check_real("weight_decay", weight_decay, "a number >= 0", lambda v: v >= 0)
    key_init, key_order = jax.random.split(key)
    model = DigitsClassifier(key_init)
    optimiser = optax.adamw(learning_rate, weight_decay=weight_decay)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    x, y = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(model, xb, yb):
        logits = jax.vmap(model)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @eqx.filter_jit
    def step(model, state, xb, yb):
        grads = eqx.filter_grad(loss_fn)(model, xb, yb)
        updates, state = optimiser.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state

    n_batches = x.shape[0] // batch_size
    for epoch in range(epochs):
        order = jax.random.permutation(jax.random.fold_in(key_order, epoch), x.shape[0])
        for b in range(n_batches):
            chosen = order[b * batch_size : (b + 1) * batch_size]
            model, state = step(model, state, x[chosen], y[chosen])
    return model


def _check_labels(labels, n: int) -> np.ndarray:
    """``labels`` as ``(n,)`` int32 classes 0-9, or a ValueError naming ``labels``."""
    array = np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"labels: expected integer classes 0-9, got dtype {array.dtype} (cast whole-number "
            "floats with labels.astype(int))"
        )
    if array.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},), one class per image, got {array.shape}")
    if array.min() < 0 or array.max() > 9:
        raise ValueError(
            f"labels: expected classes 0-9, got values in [{array.min()}, {array.max()}]"
        )
    return array.astype(np.int32)


@functools.cache
def load_digits_classifier() -> DigitsClassifier:
    """The shipped digits classifier, its weights checked against their SHA-256.

    Returns:
        The :class:`DigitsClassifier` of ``scripts/make_digits_classifier.py``.

    Raises:
        RuntimeError: if the weights file's checksum differs from
            :data:`DIGITS_CLASSIFIER_SHA256` (a damaged installation).
    """
    payload = resources.files("scorelab").joinpath("_fixtures", _FIXTURE).read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != DIGITS_CLASSIFIER_SHA256:
        raise RuntimeError(
            f"scorelab/_fixtures/{_FIXTURE}: checksum {digest[:12]}... differs from the "
            f"expected {DIGITS_CLASSIFIER_SHA256[:12]}...; reinstall scorelab"
        )
    skeleton = DigitsClassifier(jax.random.key(0))
    return eqx.tree_deserialise_leaves(io.BytesIO(payload), skeleton)
