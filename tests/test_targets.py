"""Targets: the tutorial's mixture and its exact noised scores."""

import re

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


# --- hostile parameters and points: each refused naming the argument --------------------------

_EYE2 = np.stack([np.eye(2), np.eye(2)])
_ASYMMETRIC = np.array([[[1.0, 0.9], [0.0, 1.0]]] * 2)  # eigh read only its lower triangle


@pytest.mark.parametrize(
    "means, covariances, weights, argument",
    [
        (np.zeros((2, 2)), _EYE2, [1.0, -0.5], "weights"),  # was normalised to [2, -1]
        (np.zeros((2, 2)), _EYE2, [1.0, -1.0], "weights"),  # [inf, -inf]
        (np.zeros((2, 2)), _EYE2, [0.0, 0.0], "weights"),  # NaN weights
        (np.zeros((2, 2)), _EYE2, [np.nan, 1.0], "weights"),
        (np.zeros((2, 2)), _EYE2, [np.inf, 1.0], "weights"),
        (np.zeros((2, 2)), _EYE2, [1.0 + 1j, 1.0], "weights"),
        (np.array([[np.nan, 0.0], [0.0, 0.0]]), _EYE2, [1.0, 1.0], "means"),
        (np.array([[np.inf, 0.0], [0.0, 0.0]]), _EYE2, [1.0, 1.0], "means"),
        (np.zeros((2, 2)) + 1j, _EYE2, [1.0, 1.0], "means"),  # imaginary part was dropped
        (np.zeros((0, 2)), np.zeros((0, 2, 2)), np.zeros(0), "means"),  # K = 0: log_prob -inf
        (np.zeros((2, 0)), np.zeros((2, 0, 0)), [1.0, 1.0], "means"),  # d = 0
        (np.zeros((2, 2)), _ASYMMETRIC, [1.0, 1.0], "covariances"),
        (np.zeros((2, 2)), _EYE2 + 1j * _EYE2, [1.0, 1.0], "covariances"),
        (np.zeros((2, 2)), _EYE2 * np.nan, [1.0, 1.0], "covariances"),
        (np.zeros((2, 2)), -_EYE2, [1.0, 1.0], "covariances"),
    ],
)
def test_constructor_refuses_parameters_that_are_not_a_mixture(
    means, covariances, weights, argument
):
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        GaussianMixture(means, covariances, weights)


def test_asymmetry_is_judged_relative_to_the_covariances_scale():
    """An asymmetry of float rounding passes; one of 1e-3 of the scale does not, at any scale."""
    rounding = np.array([[[1.0, 0.3], [0.3 + 1e-8, 1.0]]])
    GaussianMixture(np.zeros((1, 2)), rounding, [1.0])
    GaussianMixture(np.zeros((1, 2)), 1e-6 * rounding, [1.0])
    skewed = np.array([[[1.0, 0.3], [0.301, 1.0]]])
    for scale in (1e-6, 1.0, 1e6):
        with pytest.raises(ValueError, match="^covariances: component 0 is not symmetric"):
            GaussianMixture(np.zeros((1, 2)), scale * skewed, [1.0])


@pytest.mark.parametrize(
    "mean, covariance, argument",
    [
        (np.zeros(2) + 1j, np.eye(2), "mean"),
        (np.zeros(2), np.eye(2) + 1j, "covariance"),
        (np.zeros((1, 2)), np.eye(2), "mean"),
        (np.zeros(2), np.eye(3), "covariance"),
        (np.array([np.nan, 0.0]), np.eye(2), "mean"),
        (np.zeros(2), _ASYMMETRIC[0], "covariance"),
    ],
)
def test_gaussian_names_its_own_arguments(mean, covariance, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        gaussian(mean, covariance)


def test_checked_parameters_stay_float64_under_x64_and_unchecked_in_a_trace():
    """The checks change no dtype; a mixture built from traced parameters (inside ``jit``)
    gets the shape checks only, as its factorisation runs in the trace."""
    with jax.enable_x64(True):
        target = GaussianMixture(np.zeros((2, 2)), _EYE2, np.array([1.0, 3.0]))
        assert target.means.dtype == target.covariances.dtype == target.weights.dtype
        assert target.weights.dtype == jnp.float64
        assert target.sample(jax.random.key(0), 3).dtype == jnp.float64

    @jax.jit
    def log_prob_at_zero(means):
        return GaussianMixture(means, jnp.asarray(_EYE2), jnp.ones(2)).log_prob(jnp.zeros(2))

    assert np.isfinite(float(log_prob_at_zero(jnp.zeros((2, 2)))))


@pytest.mark.parametrize(
    "method, shape, message",
    [
        ("score", (1,), r"^x: expected one point of shape \(2,\), got \(1,\)$"),  # gave (2,)
        ("score", (3,), r"^x: expected one point of shape \(2,\), got \(3,\)$"),
        ("score", (5, 2), r"^x: expected one point .* got \(5, 2\); use jax.vmap"),
        ("score", (), r"^x: expected one point"),
        ("log_prob_and_score", (5, 2), r"^x: .*use jax.vmap"),
        ("log_prob", (5, 1), r"^x: expected points of shape \(\.\.\., 2\), got \(5, 1\)$"),
        ("log_prob", (3,), r"^x: expected points of shape \(\.\.\., 2\)"),
        ("log_prob", (), r"^x: expected points of shape"),
        ("component_log_probs", (4, 3), r"^x: "),
        ("responsibilities", (1,), r"^x: "),
    ],
)
def test_point_methods_refuse_points_of_another_dimension(mixture, method, shape, message):
    with pytest.raises(ValueError, match=message):
        getattr(mixture, method)(jnp.zeros(shape))


def test_point_checks_hold_under_jit_and_vmap(mixture):
    """Shapes are static: the checks run at trace time, and a valid point still compiles."""
    ve_score = jax.jit(lambda x, sigma: mixture.ve_score(x, sigma))
    with pytest.raises(ValueError, match=r"^x: expected one point of shape \(2,\), got \(3,\)"):
        ve_score(jnp.ones(3), 0.5)
    with pytest.raises(ValueError, match=r"^x: "):
        jax.vmap(mixture.score)(jnp.ones((4, 3)))
    assert ve_score(jnp.ones(2), 0.5).shape == (2,)
    assert jax.vmap(mixture.ve_score, in_axes=(0, None))(jnp.ones((4, 2)), 0.5).shape == (4, 2)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda m: m.ve_score(jnp.ones(2), jnp.ones(2)), "sigma"),  # was per-coordinate
        (lambda m: m.ve_marginal(jnp.ones((1,))), "sigma"),
        (lambda m: m.ve_marginal(0.5 + 0.1j), "sigma"),
        (lambda m: m.vp_marginal(jnp.full(2, 0.5)), "alpha_bar"),
        (lambda m: m.marginal(jnp.ones(2), 1.0), "alpha_t"),
        (lambda m: m.marginal(1.0, jnp.ones(2)), "sigma_t"),
    ],
)
def test_noise_levels_must_be_scalars(mixture, call, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: expected a scalar|^{argument}: complex"):
        call(mixture)


@pytest.mark.parametrize("n", [2.5, -3, True, "4", None, jnp.int32(3)])
def test_sample_requires_an_integer_count(mixture, n):
    """2.5 drew 3 samples and -3 none."""
    with pytest.raises(ValueError, match="^n: expected an integer >= 0"):
        mixture.sample(jax.random.key(0), n)


def test_sample_accepts_numpy_integers_and_zero(mixture):
    key = jax.random.key(0)
    np.testing.assert_array_equal(mixture.sample(key, np.int64(3)), mixture.sample(key, 3))
    assert mixture.sample(key, 0).shape == (0, 2)


# --- concrete noise levels, subnormal weights, points and counts -------------------------------


def test_a_weight_that_is_zero_in_float32_is_refused_naming_the_weights():
    """1e-45 passed NumPy's sum > 0, XLA flushed it to 0, and the weights were 0/0 = NaN."""
    with pytest.raises(ValueError, match=r"^weights: .* smallest normal number") as error:
        GaussianMixture(np.zeros((2, 2)), _EYE2, np.array([1e-45, 0.0]))
    assert "\n" not in str(error.value)
    tiny = GaussianMixture(np.zeros((2, 2)), _EYE2, np.array([2e-38, 0.0]))  # normal: kept
    np.testing.assert_array_equal(tiny.weights, [1.0, 0.0])


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda m: m.ve_marginal(float("nan")), "sigma"),  # NaN scores
        (lambda m: m.ve_marginal(float("inf")), "sigma"),
        (lambda m: m.ve_marginal(-0.5), "sigma"),
        (lambda m: m.ve_marginal(jnp.float32(-0.5)), "sigma"),
        (lambda m: m.ve_marginal("0.5"), "sigma"),
        (lambda m: m.ve_score(jnp.ones(2), 1e30), "sigma"),  # sigma**2 overflows float32
        (lambda m: m.ve_score(jnp.ones(2), 1e-30), "sigma"),  # sigma**2 underflows
        (lambda m: m.vp_marginal(2.0), "alpha_bar"),  # NaN scores
        (lambda m: m.vp_marginal(-1.0), "alpha_bar"),
        (lambda m: m.vp_marginal(float("nan")), "alpha_bar"),
        (lambda m: m.marginal(0.0, 0.0), "alpha_t, sigma_t"),  # degenerate: NaN log_prob
        (lambda m: m.marginal(1e-30, 0.0), "alpha_t, sigma_t"),  # 0 in float32
        (lambda m: m.marginal(1e20, 0.0), "alpha_t, sigma_t"),  # inf in float32
        (lambda m: m.marginal(float("nan"), 1.0), "alpha_t"),
        (lambda m: m.marginal(1.0, -1.0), "sigma_t"),
        (lambda m: m.marginal(1.0, float("inf")), "sigma_t"),
    ],
)
def test_concrete_noise_levels_are_checked(mixture, call, argument):
    with pytest.raises(ValueError, match=rf"^{re.escape(argument)}: ") as error:
        call(mixture)
    assert "\n" not in str(error.value)


def test_noise_levels_at_the_ends_of_their_ranges_are_accepted_and_traced_ones_unchecked(mixture):
    x = jnp.array([1.0, -2.0])
    np.testing.assert_array_equal(mixture.ve_marginal(0.0).score(x), mixture.score(x))
    np.testing.assert_allclose(mixture.vp_marginal(1.0).score(x), mixture.score(x), rtol=1e-6)
    assert np.isfinite(mixture.vp_marginal(0.0).log_prob(x))  # the standard normal
    assert np.isfinite(mixture.marginal(0.0, 1.0).log_prob(x))
    ve_score = jax.jit(jax.vmap(mixture.ve_score))
    assert ve_score(jnp.ones((3, 2)), jnp.full(3, 0.5)).shape == (3, 2)


@pytest.mark.parametrize("method", ["log_prob", "score", "log_prob_and_score", "responsibilities"])
def test_points_are_converted_and_complex_ones_refused(mixture, method):
    """A list was a TypeError from indexing; a complex point gave complex results."""
    x = jnp.array([1.0, -2.0])
    want = getattr(mixture, method)(x)
    for got, expected in zip(
        jax.tree.leaves(getattr(mixture, method)([1.0, -2.0])), jax.tree.leaves(want), strict=True
    ):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(TypeError, match=r"^x: expected real numbers, got dtype complex64"):
        getattr(mixture, method)(x.astype(jnp.complex64))


def test_sample_refuses_a_count_beyond_memory_and_a_seed_for_a_key(mixture):
    with pytest.raises(ValueError, match=r"^n: needs .* of memory"):
        mixture.sample(jax.random.key(0), 10**12)  # was RESOURCE_EXHAUSTED (8 TB)
    with pytest.raises(TypeError, match=r"^key: expected a PRNG key"):
        mixture.sample(0, 3)
    np.testing.assert_array_equal(
        mixture.sample(jax.random.PRNGKey(0), 3), mixture.sample(jax.random.key(0), 3)
    )


def test_weights_near_float32_s_top_normalise():
    """Weights of 1e38 were normalised to 0 (XLA multiplies by ``1 / sum``, subnormal in
    float32, flushed to 0), and the mixture's density was ``-inf`` (pass 19A, #4)."""
    mixture = GaussianMixture(
        jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2), jnp.array([1e38, 1e38], jnp.float32)
    )
    np.testing.assert_allclose(mixture.weights, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(mixture.log_prob(jnp.zeros((1, 2))), [-np.log(2 * np.pi)], 1e-6)
