"""The moment-matched VE prior N(m, C + sigma^2 I): its moments against the closed form, the
standard prior unchanged, and the configuration's ``moments`` prior from a target or data."""

import re

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


def test_the_moment_prior_s_first_states_do_not_depend_on_n():
    """The first m of n states were the m states only to float32 rounding (3.8e-6 apart for
    m = 5, n = 50): the product with the covariance's factor was blocked by n (pass 21C)."""
    target = seed_mixture()
    mean, covariance = target.mean(), target.covariance()
    draw = lambda n: samplers.ve_prior(jax.random.key(3), n, 2, 80.0, mean, covariance)  # noqa: E731
    every = np.asarray(draw(50))
    for m in (1, 5, 7, 20):
        np.testing.assert_array_equal(np.asarray(draw(m)), every[:m])


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


_KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        # all-NaN samples, complex samples, "Error interpreting argument ... as an abstract array"
        (dict(sigma=float("nan")), ValueError, "sigma: expected a finite noise level >= 0"),
        (dict(sigma=-1.0), ValueError, "sigma: expected a finite noise level >= 0"),
        (dict(sigma=float("inf")), ValueError, "sigma: expected a finite noise level"),
        (dict(sigma=1e30), ValueError, "sigma: 1e\\+30 is beyond 9.2e18"),
        (dict(sigma=1.0 + 1j), TypeError, "sigma: expected a real noise level"),
        (dict(sigma="1.0"), TypeError, "sigma: expected a real noise level"),
        # JAX's "invalid PRNG key data"
        (dict(key=0), TypeError, r"key: expected a PRNG key \(jax.random.key\(seed\)\)"),
        (dict(key=jax.random.split(_KEY, 2)), TypeError, "key: expected one PRNG key"),
        # "cannot reshape array of shape (3,) (size 3) into shape (2,)"
        (dict(mean=jnp.zeros(3)), ValueError, re.escape("mean: expected shape (2,)")),
        (dict(mean=jnp.zeros(2, jnp.complex64)), TypeError, "mean: expected real numbers"),
        (dict(mean=[0.0, float("nan")]), ValueError, "mean: expected finite numbers"),
        # "add got incompatible shapes for broadcasting: (3, 3), (2, 2)"
        (dict(covariance=jnp.eye(3)), ValueError, re.escape("covariance: expected (2, 2)")),
        # a scalar broadcast to a full matrix of 2s
        (dict(covariance=2.0), ValueError, re.escape("covariance: expected (2, 2)")),
        # all-NaN samples: not positive definite, or not symmetric
        (dict(covariance=-5 * jnp.eye(2)), ValueError, "covariance: C \\+ sigma\\^2 I is not"),
        (dict(covariance=jnp.array([[1.0, 5.0], [0.0, 1.0]])), ValueError,
         "covariance: not symmetric"),
        (dict(covariance=jnp.full((2, 2), jnp.inf)), ValueError, "covariance: expected finite"),
        (dict(covariance=jnp.eye(2, dtype=jnp.complex64)), TypeError,
         "covariance: expected a real"),
        # an 8 TB "array" that aborted the interpreter when used
        (dict(n=10**12), ValueError, "n, shape: needs .* of memory"),
        (dict(n=2, shape=(10**6, 10**6)), ValueError, "n, shape: needs .* of memory"),
    ],
)  # fmt: skip
def test_ve_prior_names_each_argument_it_cannot_draw_from(kwargs, error, message):
    call = dict(key=_KEY, n=3, shape=2, sigma=0.1, mean=None, covariance=None)
    call.update(kwargs)
    with pytest.raises(error, match=message) as raised:
        samplers.ve_prior(**call)
    assert "\n" not in str(raised.value)


def test_ve_prior_takes_a_legacy_key_a_flat_mean_and_a_level_of_zero():
    key = jax.random.key(4)
    legacy = jax.random.key_data(key)
    np.testing.assert_array_equal(
        samplers.ve_prior(legacy, 5, 2, 3.0), samplers.ve_prior(key, 5, 2, 3.0)
    )
    mean = jnp.arange(4.0)
    np.testing.assert_array_equal(
        samplers.ve_prior(key, 5, (1, 2, 2), 3.0, mean),
        samplers.ve_prior(key, 5, (1, 2, 2), 3.0, mean.reshape(1, 2, 2)),
    )
    np.testing.assert_array_equal(samplers.ve_prior(key, 3, 2, 0.0), jnp.zeros((3, 2)))
    # a singular covariance with sigma > 0 is positive definite
    samplers.ve_prior(key, 3, 2, 0.5, None, jnp.zeros((2, 2)))


def test_ve_prior_checks_traced_arguments_only_by_type_under_jit():
    draw = jax.jit(lambda sigma, covariance: samplers.ve_prior(_KEY, 4, 2, sigma, None, covariance))
    np.testing.assert_allclose(
        draw(2.0, jnp.eye(2)), samplers.ve_prior(_KEY, 4, 2, 2.0, None, jnp.eye(2)), rtol=1e-6
    )
    with pytest.raises(TypeError, match="sigma: expected a real noise level"):
        jax.jit(lambda s: samplers.ve_prior(_KEY, 4, 2, s))(jnp.complex64(1.0))


@pytest.mark.parametrize(
    "call, error, message",
    [
        # all-NaN samples, JAX's key error, "'str' object has no attribute 've_marginal'"
        (lambda t: samplers.exact_prior(_KEY, t, 3, float("nan")), ValueError,
         "sigma: expected a finite noise level"),
        (lambda t: samplers.exact_prior(0, t, 3, 1.0), TypeError, "key: expected a PRNG key"),
        (lambda t: samplers.exact_prior(_KEY, "seed", 3, 1.0), TypeError,
         "target: expected a scorelab.targets.GaussianMixture"),
        (lambda t: samplers.exact_prior(_KEY, t, 2.5, 1.0), ValueError,
         "n: expected an integer >= 0"),
        (lambda t: samplers.exact_prior(_KEY, t, 10**12, 1.0), ValueError, "n: needs .* memory"),
        (lambda t: samplers.vp_prior(_KEY, 3, 2, 1.0 + 1j), TypeError,
         "sigma: expected a real noise level"),
        (lambda t: samplers.vp_prior(_KEY, 3, 2, float("nan")), ValueError,
         "sigma: expected a finite noise level"),
    ],
)  # fmt: skip
def test_exact_and_vp_priors_name_each_bad_argument(call, error, message):
    with pytest.raises(error, match=message):
        call(seed_mixture())


def test_a_normal_prior_narrower_than_the_data_warns_with_the_sigma_that_dominates_it():
    """sigma_max 3 on the tutorial's mixture (root mean square 8.04 per coordinate) put the
    mode weights 0.6 in total variation from the truth, exit 0 and no word (pass 21D). The
    spread is the closed form (|m|^2 + tr C) / d with a target, the data's mean square
    without; ULA's start (its law does not depend on it) and sigma_max >= 2 r are quiet."""
    target = seed_mixture()
    mean, covariance = np.asarray(target.mean()), np.asarray(target.covariance())
    spread = np.sqrt((mean @ mean + np.trace(covariance)) / 2)
    key = jax.random.key(0)
    narrow = SamplerConfig(name="heun", n_levels=5, sigma_max=3.0)
    message = (
        rf"sampler.sigma_max 3 is not well above the data's spread \(root mean square {spread:.3g}"
    )
    with pytest.warns(UserWarning, match=message):
        builders.make_prior(narrow, key, 4, 2, target)
    data = np.full((10, 2), 2.0)  # root mean square 2: sigma_max 3 < 2 r = 4
    with pytest.warns(UserWarning, match=r"\(root mean square 2 per coordinate\).* >= 4, or"):
        builders.make_prior(narrow, key, 4, 2, None, data)
    wide = SamplerConfig(name="heun", n_levels=5, sigma_max=float(2 * spread) + 0.01)
    builders.make_prior(wide, key, 4, 2, target)  # quiet: a warning is an error here
    builders.make_prior(SamplerConfig(name="ula"), key, 4, 2, target)
    moments = SamplerConfig(name="heun", n_levels=5, sigma_max=3.0, prior="moments")
    builders.make_prior(moments, key, 4, 2, target)
