"""Targets: the tutorial's mixture and its exact noised scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from scorelab.targets import (
    DIGITS_IMAGE_SHAPE,
    GaussianMixture,
    digits_mixture,
    gaussian,
    seed_mixture,
)


def _scipy_log_prob(target: GaussianMixture, x: np.ndarray) -> np.ndarray:
    """Independent float64 mixture log-density through scipy."""
    means = np.asarray(target.means, np.float64)
    covs = np.asarray(target.covariances, np.float64)
    weights = np.asarray(target.weights, np.float64)
    per_component = np.stack(
        [multivariate_normal(m, c).logpdf(x) for m, c in zip(means, covs)], axis=-1
    )
    return logsumexp(per_component + np.log(weights), axis=-1)


def test_seed_mixture_is_the_tutorials_target(mixture):
    # The tutorial builds means with meshgrid(arange(-10, 15, 10), ...) flattened, x fastest.
    expected_means = np.array(
        [[x, y] for y in (-10.0, 0.0, 10.0) for x in (-10.0, 0.0, 10.0)], np.float32
    )
    np.testing.assert_array_equal(mixture.means, expected_means)
    raw = jax.random.uniform(jax.random.key(42), (9,))
    np.testing.assert_allclose(mixture.weights, raw / raw.sum(), rtol=1e-6)
    np.testing.assert_allclose(mixture.covariances, np.broadcast_to(0.1 * np.eye(2), (9, 2, 2)))


@pytest.mark.parametrize("sigma", [0.0, 0.3, 2.0, 10.0])
def test_log_prob_matches_scipy_and_score_matches_finite_differences(mixture, sigma):
    noised = mixture.ve_marginal(sigma)
    x = np.asarray(noised.sample(jax.random.key(1), 64), np.float64)
    np.testing.assert_allclose(noised.log_prob(x), _scipy_log_prob(noised, x), rtol=1e-4, atol=1e-4)
    # Central differences of the float64 scipy density: truncation O(h^2 |d^3 log q|) and
    # rounding O(1e-16 / h) are both far below the float32 tolerance used.
    h = 1e-4
    fd = np.stack(
        [
            (_scipy_log_prob(noised, x + h * e) - _scipy_log_prob(noised, x - h * e)) / (2 * h)
            for e in np.eye(2)
        ],
        axis=-1,
    )
    score = np.asarray(jax.vmap(mixture.ve_score, in_axes=(0, None))(jnp.asarray(x), sigma))
    scale = np.abs(fd).max()
    np.testing.assert_allclose(score, fd, atol=2e-4 * max(scale, 1.0))
    # The one-pass pair: the same density and the same finite differences.
    log_prob, joint_score = jax.vmap(noised.log_prob_and_score)(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(log_prob, _scipy_log_prob(noised, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(joint_score, fd, atol=2e-4 * max(scale, 1.0))


def test_log_prob_and_score_equals_the_separate_methods(mixture):
    # At the modes, between them and far out (where every responsibility but one underflows).
    x = jnp.concatenate(
        [mixture.sample(jax.random.key(2), 32), jnp.array([[5.0, 5.0], [-40.0, 3.0], [0.0, 90.0]])]
    )
    for law in (mixture, mixture.ve_marginal(0.7)):
        log_prob, score = jax.vmap(law.log_prob_and_score)(x)
        np.testing.assert_allclose(log_prob, law.log_prob(x), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(score, jax.vmap(law.score)(x), rtol=1e-5, atol=1e-5)
    # The score is the gradient of the log-density it comes with (autodiff through log_prob).
    np.testing.assert_allclose(score, jax.vmap(jax.grad(law.log_prob))(x), rtol=1e-4, atol=1e-4)


def test_marginal_moments_match_perturbed_samples(mixture):
    # x_t = alpha x_0 + sigma eps has mean alpha m and covariance alpha^2 C + sigma^2 I.
    alpha, sigma, n = 0.6, 1.5, 200_000
    key_x, key_eps = jax.random.split(jax.random.key(2))
    x_t = alpha * mixture.sample(key_x, n) + sigma * jax.random.normal(key_eps, (n, 2))
    marginal = mixture.marginal(alpha, sigma)
    np.testing.assert_allclose(marginal.mean(), alpha * mixture.mean(), rtol=1e-6)
    expected_cov = alpha**2 * mixture.covariance() + sigma**2 * jnp.eye(2)
    np.testing.assert_allclose(marginal.covariance(), expected_cov, rtol=1e-5)
    # Standard error of the mean in each coordinate: sqrt(var / n); 4 SE.
    se_mean = np.sqrt(np.diag(expected_cov) / n)
    assert np.all(np.abs(x_t.mean(0) - marginal.mean()) < 4 * se_mean)
    # SE of a variance estimate ~ sqrt(E(x-m)^4 - var^2)/sqrt(n): use the empirical fourth moment.
    centred = np.asarray(x_t - x_t.mean(0))
    var_hat = (centred**2).mean(0)
    se_var = np.sqrt(((centred**2 - var_hat) ** 2).mean(0) / n)
    assert np.all(np.abs(var_hat - np.diag(expected_cov)) < 4 * se_var)


def test_vp_marginal_is_the_ddpm_kernel(mixture):
    alpha_bar = 0.3
    vp = mixture.vp_marginal(alpha_bar)
    np.testing.assert_allclose(vp.means, np.sqrt(alpha_bar) * mixture.means, rtol=1e-6)
    np.testing.assert_allclose(
        vp.covariances, alpha_bar * mixture.covariances + (1 - alpha_bar) * np.eye(2), rtol=1e-6
    )


def test_sampled_weights_within_multinomial_error(mixture):
    n = 40_000
    x = mixture.sample(jax.random.key(3), n)
    # Modes are 10 apart with sd 0.32: the nearest mean identifies the component surely.
    nearest = np.argmin(((np.asarray(x)[:, None] - np.asarray(mixture.means)) ** 2).sum(-1), 1)
    fractions = np.bincount(nearest, minlength=9) / n
    w = np.asarray(mixture.weights)
    se = np.sqrt(w * (1 - w) / n)
    assert np.all(np.abs(fractions - w) < 4.5 * se)  # 9 comparisons: 4.5 SE keeps false alarms rare


def test_sample_does_not_depend_on_n(mixture):
    key = jax.random.key(4)
    np.testing.assert_array_equal(mixture.sample(key, 10), mixture.sample(key, 50)[:10])


def test_responsibilities_are_a_posterior(mixture):
    x = mixture.sample(jax.random.key(5), 100)
    r = mixture.responsibilities(x)
    np.testing.assert_allclose(r.sum(-1), 1.0, rtol=1e-5)
    # Exact samples sit on their mode: the posterior is almost one-hot there.
    assert float(r.max(-1).min()) > 0.999


def test_gaussian_score_is_linear():
    mean = jnp.array([1.0, -2.0])
    cov = jnp.array([[2.0, 0.6], [0.6, 0.5]])
    target = gaussian(mean, cov)
    x = jnp.array([0.3, 0.7])
    np.testing.assert_allclose(target.score(x), -jnp.linalg.solve(cov, x - mean), rtol=1e-5)


def test_constructor_validates_shapes():
    with pytest.raises(ValueError, match="covariances"):
        GaussianMixture(jnp.zeros((2, 2)), jnp.zeros((2, 3, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(jnp.zeros((2, 2)), jnp.ones((2, 2, 2)), jnp.ones(3))


def _dot_precisions(jaxpr) -> list:
    """The ``precision`` of every ``dot_general`` in a closed jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for sub in jax.core.jaxprs_in_params(eqn.params):
            found += _dot_precisions(sub)
    return found


def test_oracle_contracts_at_full_float32_precision():
    # On a GPU, XLA's default precision rounds float32 matmul operands to TF32; the oracle's
    # contractions ask for HIGHEST so that the exact score stays exact there (this CPU cannot
    # show the rounding, so the test reads the program instead).
    target = seed_mixture()
    programs = {
        "ve_score": jax.make_jaxpr(target.ve_score)(jnp.ones(2), 0.5),
        "log_prob": jax.make_jaxpr(target.log_prob)(jnp.ones((3, 2))),
        "log_prob_and_score": jax.make_jaxpr(target.log_prob_and_score)(jnp.ones(2)),
        "covariance": jax.make_jaxpr(target.covariance)(),
    }
    for name, program in programs.items():
        precisions = _dot_precisions(program.jaxpr)
        assert precisions, name
        highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
        assert all(p == highest for p in precisions), (name, precisions)


# --- the 64-D digits oracle ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits scaled to [-1, 1] as the oracle documents, and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images / 8.0 - 1.0, data.target


@pytest.fixture(scope="module")
def digits_target():
    return digits_mixture()


def test_digits_mixture_has_the_class_statistics(digits, digits_target):
    """Weights are class frequencies, means class means, laid out as (1, 8, 8) images."""
    images, labels = digits
    assert digits_target.means.shape == (10, 64) and DIGITS_IMAGE_SHAPE == (1, 8, 8)
    np.testing.assert_allclose(digits_target.weights, np.bincount(labels) / labels.size, rtol=1e-6)
    for c in range(10):
        class_mean_image = images[labels == c].mean(axis=0)  # (8, 8), row by row
        np.testing.assert_allclose(
            np.asarray(digits_target.means[c]).reshape(DIGITS_IMAGE_SHAPE)[0],
            class_mean_image,
            atol=1e-6,
        )


def test_digits_covariances_are_shrunk_class_covariances(digits, digits_target):
    """C_c = (1 - rho_c) S_c + rho_c tr(S_c)/64 I with one rho_c per class in [0.029, 0.080]: the
    smallest eigenvalue and condition number the docstring states."""
    images, labels = digits
    x = images.reshape(-1, 64)
    for c in range(10):
        members = x[labels == c]
        empirical = np.cov(members, rowvar=False, bias=True)
        covariance = np.asarray(digits_target.covariances[c], np.float64)
        off = ~np.eye(64, dtype=bool)
        # The off-diagonal is scaled by 1 - rho: recover rho by least squares, then check all.
        keep = np.sum(covariance[off] * empirical[off]) / np.sum(empirical[off] ** 2)
        rho = 1.0 - keep
        target_scale = np.trace(empirical) / 64
        expected = keep * empirical + rho * target_scale * np.eye(64)
        np.testing.assert_allclose(covariance, expected, atol=1e-6)
        assert 0.029 <= rho <= 0.080
        eigenvalues = np.asarray(digits_target.eigenvalues[c], np.float64)
        assert eigenvalues.min() >= 0.0067 and 150 <= eigenvalues.max() / eigenvalues.min() <= 810


@pytest.mark.parametrize("sigma", [0.0, 0.1, 1.0])
def test_digits_exact_score_is_the_gradient_of_log_prob(digits_target, sigma):
    noised = digits_target.ve_marginal(sigma)
    x = noised.sample(jax.random.key(3), 16)
    score = jax.vmap(digits_target.ve_score, in_axes=(0, None))(x, sigma)
    gradient = jax.vmap(jax.grad(noised.log_prob))(x)
    scale = float(jnp.max(jnp.abs(gradient)))
    np.testing.assert_allclose(score, gradient, atol=1e-4 * scale)


def test_digits_samples_have_the_mixture_mean(digits_target):
    n = 4000
    x = np.asarray(digits_target.sample(jax.random.key(4), n), np.float64)
    standard_error = x.std(axis=0, ddof=1) / np.sqrt(n)
    z = (x.mean(axis=0) - np.asarray(digits_target.mean())) / standard_error
    assert np.max(np.abs(z)) < 4.5  # 64 coordinates: two-sided normal tail 7e-6 each


def test_the_oracle_is_exact_to_float64_under_x64():
    """Under ``jax_enable_x64`` the mixture's parameters (and the log of its weights) are
    float64, so the exact noised score matches a float64 NumPy closed form to ~1e-12, where
    float32 parameters would leave ~1e-8."""
    from scorelab.models import ExactScore

    with jax.enable_x64(True):
        target = seed_mixture()
        assert target.means.dtype == target.weights.dtype == jnp.float64
        rng = np.random.default_rng(0)
        points = rng.normal(scale=8.0, size=(20, 2))
        sigma = 0.7
        means = np.asarray(target.means)
        covs = np.asarray(target.covariances) + sigma**2 * np.eye(2)
        weights = np.asarray(target.weights)
        score = ExactScore(target)
        for x in points:
            centred = x - means
            precision_times = np.linalg.solve(covs, centred[..., None])[..., 0]
            log_r = (
                np.log(weights)
                - 0.5 * np.einsum("ki,ki->k", centred, precision_times)
                - 0.5 * np.linalg.slogdet(covs)[1]
            )
            r = np.exp(log_r - logsumexp(log_r))
            expected = -(r[:, None] * precision_times).sum(axis=0)
            got = np.asarray(score(jnp.asarray(x), sigma))
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)
