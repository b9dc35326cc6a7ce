"""Score models: shapes, the linear output layer, the exact-score oracle wrapper."""

import jax
import jax.numpy as jnp
import numpy as np

from scorelab.models import MLP, ExactScore, NoiseConditionalMLP


def test_mlp_output_is_linear_not_leaky():
    model = MLP(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (256, 2)) * 10
    out = jax.vmap(model)(x)
    assert out.shape == (256, 2)
    # The output equals the last Linear layer applied to the features: no activation after it.
    # The tutorial's leaky ReLU would make negative components 100x smaller than the positives.
    negatives, positives = -out[out < 0], out[out > 0]
    assert negatives.size > 0 and positives.size > 0
    assert float(negatives.mean()) > 0.1 * float(positives.mean())


def test_noise_conditional_mlp_scaling_and_conditioning():
    key = jax.random.key(2)
    scaled = NoiseConditionalMLP(key)
    raw = NoiseConditionalMLP(key, scale_by_sigma=False)
    x = jnp.array([0.3, -1.2])
    for sigma in (0.02, 1.0, 80.0):
        np.testing.assert_allclose(scaled(x, sigma), raw(x, sigma) / sigma, rtol=1e-5)
    # sigma enters through 0.25 log sigma: different levels give different outputs.
    assert not np.allclose(raw(x, 0.1), raw(x, 10.0))
    batched = jax.vmap(scaled)(jnp.ones((4, 2)), jnp.full((4,), 2.0))
    assert batched.shape == (4, 2)


def test_exact_score_wraps_the_noised_target(mixture):
    oracle = ExactScore(mixture)
    x = jnp.array([3.0, -4.0])
    np.testing.assert_allclose(oracle(x, 2.0), mixture.ve_marginal(2.0).score(x), rtol=1e-6)
    np.testing.assert_allclose(oracle(x), mixture.score(x), rtol=1e-6)
