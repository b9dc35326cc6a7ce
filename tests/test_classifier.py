"""The shipped digits classifier: checksum, golden logits, documented accuracy, floors."""

import re
from pathlib import Path

import jax
import numpy as np
import pytest

from scorelab import classifier
from scorelab.classifier import classifier_outputs, load_digits_classifier, to_classifier_input
from scorelab.data import digits

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = np.load(ROOT / "tests" / "fixtures" / "digits_classifier_golden.npz")


@pytest.mark.slow  # about 12 s of a worker: kept out of the default suite's 15 minutes
def test_shipped_weights_reproduce_the_golden_logits_and_the_documented_accuracy():
    model = load_digits_classifier()
    images, labels = digits("test")
    logits = np.asarray(jax.vmap(model)(images[: len(GOLDEN["logits"])]))
    np.testing.assert_allclose(logits, GOLDEN["logits"], rtol=1e-5, atol=1e-5)
    _, probabilities = classifier_outputs(model, images)
    correct = int((probabilities.argmax(axis=1) == labels).sum())
    assert correct == int(GOLDEN["correct"])
    documented = f"{correct}/{len(labels)} = {100 * correct / len(labels):.2f}%"
    assert documented in (ROOT / "docs" / "how-to" / "image-metrics.md").read_text()


def test_a_damaged_weights_file_is_refused(monkeypatch):
    monkeypatch.setattr(classifier, "DIGITS_CLASSIFIER_SHA256", "0" * 64)
    load_digits_classifier.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="checksum"):
            load_digits_classifier()
    finally:
        load_digits_classifier.cache_clear()


def test_classifier_input_shapes():
    """Flat and image 8x8 are the same input; 16x16 is 2x2-average pooled; others refused."""
    images, _ = digits("test")
    np.testing.assert_array_equal(to_classifier_input(images.reshape(-1, 64)), images)
    big = np.repeat(np.repeat(images, 2, axis=2), 2, axis=3)
    np.testing.assert_allclose(to_classifier_input(big.reshape(-1, 256)), images, atol=1e-6)
    with pytest.raises(ValueError, match="images must have shape"):
        to_classifier_input(images.reshape(-1, 8, 8))


# --- hostile input: clear one-line errors naming the argument ----------------------------------

_IMAGES = np.random.default_rng(0).uniform(-1, 1, (20, 1, 8, 8)).astype(np.float32)
_LABELS = np.random.default_rng(0).integers(0, 10, 20)


@pytest.mark.parametrize(
    ("images", "argument"),
    [
        (np.full((3, 64), np.nan), "images"),
        (np.full((3, 64), 255.0), "images"),
        (np.full((3, 64), 1e300), "images"),
        (np.zeros((3, 64), complex), "images"),
        (np.zeros((3, 1, 4, 16)), "images must have shape"),
        (np.zeros((3, 1, 64, 1)), "images must have shape"),
        (np.zeros((0, 64)), "images must have shape"),
        ("abc", "images"),
    ],
    ids=["nan", "0-255", "huge", "complex", "4x16", "64x1", "empty", "string"],
)
def test_to_classifier_input_refuses(images, argument):
    with pytest.raises(ValueError, match=f"^{re.escape(argument)}") as info:
        to_classifier_input(images)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"batch_size": 64}, ValueError, "batch_size"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": -1}, ValueError, "epochs"),
        ({"labels": _LABELS + 20}, ValueError, "labels"),
        ({"labels": _LABELS[:5]}, ValueError, "labels"),
        ({"labels": _LABELS + 0.5}, ValueError, "labels"),
        ({"images": np.full_like(_IMAGES, np.nan)}, ValueError, "images"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate"),
        ({"learning_rate": -1.0}, ValueError, "learning_rate"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"key": 0}, TypeError, "key"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_train_classifier_refuses(kwargs, error, argument):
    arguments = {"key": jax.random.key(0), "images": _IMAGES, "labels": _LABELS}
    arguments.update(kwargs)
    key, images, labels = arguments.pop("key"), arguments.pop("images"), arguments.pop("labels")
    options = {"epochs": 1, "batch_size": 4, **arguments}
    with pytest.raises(error, match=f"^{re.escape(argument)}: "):
        classifier.train_classifier(key, images, labels, **options)


@pytest.mark.parametrize(
    ("model", "images", "batch", "error", "argument"),
    [
        ("clf", np.zeros((5, 64)), 0, ValueError, "batch"),
        ("clf", np.zeros((5, 64)), -1, ValueError, "batch"),
        (None, np.zeros((2, 64)), 8, TypeError, "model"),
        ("clf", np.full((2, 64), np.nan), 8, ValueError, "images"),
    ],
    ids=["batch0", "batch-1", "no-model", "nan"],
)
def test_classifier_outputs_refuses(model, images, batch, error, argument):
    model = load_digits_classifier() if model == "clf" else model
    with pytest.raises(error, match=f"^{re.escape(argument)}: "):
        classifier_outputs(model, images, batch=batch)
