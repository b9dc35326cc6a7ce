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


def to_classifier_input(images) -> np.ndarray:
    """Images as the classifier's ``(n, 1, 8, 8)`` float32 input.

    Args:
        images: ``(n, 1, 8, 8)``, ``(n, 64)``, ``(n, 1, 16, 16)`` or ``(n, 256)``; 16x16 images
            are reduced by 2x2 average pooling.

    Returns:
        ``(n, 1, 8, 8)`` float32.

    Raises:
        ValueError: for any other shape.
    """
    images = np.asarray(images, np.float32)
    n = images.shape[0] if images.ndim else 0
    size = {64: 8, 256: 16}.get(int(np.prod(images.shape[1:])) if images.ndim >= 2 else 0)
    if size is None or images.ndim not in (2, 4) or (images.ndim == 4 and images.shape[1] != 1):
        raise ValueError(
            f"images must have shape (n, 1, 8, 8), (n, 64), (n, 1, 16, 16) or (n, 256), "
            f"got {images.shape}"
        )
    images = images.reshape(n, 1, size, size)
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
        batch: images per call (memory; the result does not depend on it).

    Returns:
        ``(features, probabilities)``: float64 ``(n, 64)`` and ``(n, 10)``.
    """
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
        epochs, batch_size, learning_rate, weight_decay: the optimisation.

    Returns:
        The trained classifier.

    References:
        Loshchilov, I. & Hutter, F. (2019). Decoupled Weight Decay Regularization.
        https://arxiv.org/abs/1711.05101
    """
    key_init, key_order = jax.random.split(key)
    model = DigitsClassifier(key_init)
    optimiser = optax.adamw(learning_rate, weight_decay=weight_decay)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    x, y = jnp.asarray(to_classifier_input(images)), jnp.asarray(labels)

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
