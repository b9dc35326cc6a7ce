"""Checks shared by the sampler test modules."""

import jax
import jax.numpy as jnp
import numpy as np


def assert_nfe_counts_score_evaluations(sampler, nfe: int, n_levels: int) -> None:
    """``sampler.nfe`` equals ``nfe`` and the number of score calls one chain makes (counted by
    a host callback inside the score), and the trajectory has one row per level ending at ``x``."""
    calls = []

    def score_fn(x, sigma):
        jax.debug.callback(lambda: calls.append(None))
        return -x / (1.0 + sigma**2)

    out = sampler.run(jax.random.key(9), score_fn, jnp.ones(2), trajectory=True)
    jax.effects_barrier()
    assert sampler.nfe == nfe == len(calls)
    assert out.trajectory.shape == (n_levels, 2)
    np.testing.assert_array_equal(out.trajectory[-1], out.x)
