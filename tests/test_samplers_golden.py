"""Every sampler reproduces its pinned numbers (``tests/fixtures/sampler_golden.npz``).

The file holds, for each case of ``_sampler_checks.GOLDEN_CASES``, three chains on the exact
score of the seed mixture over ``default_sigmas(12)``: with injected standard normal rows and
from a key. It was written by the samplers before the kernel/driver redesign, so this test is
what shows that the redesign changed no number.

Equality is exact (``assert_array_equal``): the same float32 operations in the same order on
the same CPU give the same bits; a refactor that reorders arithmetic fails here, on purpose.
"""

import pathlib

import jax
import numpy as np
import pytest
from _sampler_checks import GOLDEN_CASES, golden_sampler

from scorelab.models import ExactScore
from scorelab.samplers import sample
from scorelab.targets import seed_mixture

GOLDEN = np.load(pathlib.Path(__file__).parent / "fixtures" / "sampler_golden.npz")


@pytest.mark.parametrize("label", GOLDEN_CASES)
def test_sampler_reproduces_its_golden_numbers(label):
    sampler = golden_sampler(label, GOLDEN["sigmas"])
    score_fn = ExactScore(seed_mixture())
    x_init = GOLDEN["x_data"] if label in ("ula", "mala") else GOLDEN["x_top"]
    key = jax.random.wrap_key_data(GOLDEN["key_chain"])
    noise = GOLDEN[f"{label}/noise"]
    injected = sample(key, sampler, score_fn, x_init, trajectory=True, noise=noise)
    keyed = sample(key, sampler, score_fn, x_init, trajectory=True)
    for path, out in (("injected", injected), ("key", keyed)):
        np.testing.assert_array_equal(out.x, GOLDEN[f"{label}/{path}_x"])
        np.testing.assert_array_equal(out.trajectory, GOLDEN[f"{label}/{path}_trajectory"])
        if f"{label}/{path}_nfe" in GOLDEN:
            np.testing.assert_array_equal(out.nfe, GOLDEN[f"{label}/{path}_nfe"])
