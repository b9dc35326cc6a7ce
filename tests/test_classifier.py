"""The shipped digits classifier: checksum, golden logits, documented accuracy, floors."""

from pathlib import Path

import jax
import numpy as np
import pytest

from scorelab import classifier
from scorelab.classifier import classifier_outputs, load_digits_classifier, to_classifier_input
from scorelab.data import digits

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = np.load(ROOT / "tests" / "fixtures" / "digits_classifier_golden.npz")


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
