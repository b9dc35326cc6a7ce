"""The moment-matched VE prior N(m, C + sigma^2 I): its moments against the closed form, the
standard prior unchanged, and the configuration's ``moments`` prior from a target or data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab import builders, samplers
from scorelab.config import ConfigError, SamplerConfig
from scorelab.targets import seed_mixture


def test_the_moment_prior_has_the_mean_and_covariance_of_q_sigma():
    """N(m, C + sigma^2 I): sample mean and covariance within 4 standard errors of the closed
    form (covariance entry (i, j) has variance (S_ii S_jj + S_ij^2) / n for a Gaussian)."""
    n, sigma = 40_000, 3.0
    mean, covariance = np.array([1.5, -0.5]), np.array([[30.0, 12.0], [12.0, 20.0]])
    x = np.asarray(samplers.ve_prior(jax.random.key(0), n, 2, sigma, mean, covariance), np.float64)
    total = covariance + sigma**2 * np.eye(2)
    se_mean = np.sqrt(np.diag(total) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 4 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(total), np.diag(total)) + total**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - total), 4 * se_cov)


def test_the_moment_prior_with_zero_moments_is_the_standard_prior():
    """Same standard normals: m = 0, C = 0 gives sigma z (to float32 rounding); the default
    draws are unchanged by the new arguments."""
    key = jax.random.key(5)
    standard = samplers.ve_prior(key, 16, (1, 2, 2), 4.0)
    moments = samplers.ve_prior(key, 16, (1, 2, 2), 4.0, jnp.zeros((1, 2, 2)), jnp.zeros((4, 4)))
    np.testing.assert_allclose(moments, standard, rtol=1e-6)
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (1, 2, 2)))(jnp.arange(16))
    np.testing.assert_array_equal(standard, 4.0 * z)


def test_the_configured_moment_prior_uses_the_target_or_the_data_moments():
    """With a target its exact moments; without, the data's sample moments (here data whose
    sample mean is 3 and covariance 4 I exactly, so q_sigma's is (4 + sigma^2) I)."""
    config = SamplerConfig(name="heun", n_levels=5, sigma_max=2.0, prior="moments")
    key = jax.random.key(1)
    target = seed_mixture()
    np.testing.assert_allclose(
        builders.make_prior(config, key, 8, 2, target),
        samplers.ve_prior(key, 8, 2, 2.0, target.mean(), target.covariance()),
        rtol=1e-6,
    )
    data = 3.0 + 2.0 * np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * np.sqrt(
        0.75
    )
    x = builders.make_prior(config, key, 8, (2,), None, data)
    z = samplers.ve_prior(key, 8, 2, 1.0)
    np.testing.assert_allclose(x, 3.0 + np.sqrt(4.0 + 2.0**2) * z, rtol=1e-5)
    with pytest.raises(ConfigError, match="'moments' needs a target or training data"):
        builders.make_prior(config, key, 8, 2, None)


@pytest.mark.parametrize(
    "n, shape, sigma, message",
    [
        (2.5, 2, 1.0, "n: expected an integer >= 0"),  # drew 3 rows
        (-1, 2, 1.0, "n: expected an integer >= 0"),  # drew none
        (3, 2.0, 1.0, "shape: expected an integer d >= 1"),
        (3, (1, 0, 8), 1.0, "shape: expected an integer d >= 1"),
        (3, 2, jnp.array([1.0, 100.0]), "sigma: expected one noise level"),  # per dimension
    ],
)
def test_ve_prior_refuses_counts_shapes_and_levels_it_would_misread(n, shape, sigma, message):
    with pytest.raises(ValueError, match=message):
        samplers.ve_prior(jax.random.key(0), n, shape, sigma)


def test_ve_prior_takes_numpy_integers_and_lists():
    key = jax.random.key(0)
    np.testing.assert_array_equal(
        samplers.ve_prior(key, np.int64(3), [1, 2, 2], 2.0),
        samplers.ve_prior(key, 3, (1, 2, 2), 2.0),
    )
