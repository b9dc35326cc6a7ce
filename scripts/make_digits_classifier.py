"""Train the digits classifier of scorelab's image metrics and write it as package data.

Run from the repository root (CPU, about a minute):

    python scripts/make_digits_classifier.py

Trains :class:`scorelab.classifier.DigitsClassifier` on ``scorelab.data.digits("train")`` with
:func:`scorelab.classifier.train_classifier` from ``jax.random.key(0)``, then writes

* ``src/scorelab/_fixtures/digits_classifier.eqx``: the weights (Equinox leaves);
* ``tests/fixtures/digits_classifier_golden.npz``: the logits of the first 8 held-out images
  and the number of held-out images classified correctly, which ``tests/test_classifier.py``
  recomputes from the shipped weights;

and prints the held-out accuracy and the weights' SHA-256, to be pasted into
``scorelab.classifier.DIGITS_CLASSIFIER_SHA256`` (and the accuracy into
``docs/how-to/image-metrics.md``).
"""

import hashlib
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from scorelab.classifier import classifier_outputs, train_classifier
from scorelab.data import digits

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "scorelab" / "_fixtures" / "digits_classifier.eqx"
GOLDEN = ROOT / "tests" / "fixtures" / "digits_classifier_golden.npz"
N_GOLDEN = 8


def main() -> None:
    train_images, train_labels = digits("train")
    test_images, test_labels = digits("test")
    model = train_classifier(jax.random.key(0), train_images, train_labels)
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    eqx.tree_serialise_leaves(WEIGHTS, model)
    _, probabilities = classifier_outputs(model, test_images)
    correct = int((probabilities.argmax(axis=1) == test_labels).sum())
    _, train_probabilities = classifier_outputs(model, train_images)
    train_correct = int((train_probabilities.argmax(axis=1) == train_labels).sum())
    logits = np.asarray(jax.vmap(model)(test_images[:N_GOLDEN]))
    np.savez(GOLDEN, logits=logits, correct=correct)
    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    print(f"train accuracy: {train_correct}/{len(train_labels)}")
    print(
        f"held-out accuracy: {correct}/{len(test_labels)} = {100 * correct / len(test_labels):.2f}%"
    )
    print(f"weights: {WEIGHTS.relative_to(ROOT)} ({WEIGHTS.stat().st_size} bytes)")
    print(f"sha256: {digest}")


if __name__ == "__main__":
    main()
