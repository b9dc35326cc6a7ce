"""Metrics against closed forms, POT / SciPy, and independent NumPy transcriptions.

Statistical checks compare a mean over independent repeats with its expectation within 4
standard errors (two-sided false-alarm rate 6e-5 per check under a normal approximation); the
standard error is derived in closed form where one exists, else estimated from the repeats.
"""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from scipy import spatial, special, stats

from scorelab import metrics
from scorelab.targets import GaussianMixture


def draw(target, key, n):
    return np.asarray(target.sample(key, n), dtype=np.float64)


def assigned_means(samples, target):
    """The nearest component mean of each sample, ``(n, d)``.

    On the tutorial's target (equal isotropic covariances, modes 31 sd apart) this is the
    posterior argmax except with probability ~1e-200.
    """
    means = np.asarray(target.means, np.float64)
    return means[np.argmin(spatial.distance.cdist(samples, means), axis=1)]


def mean_and_standard_error(values):
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), values.std(ddof=1) / math.sqrt(values.size)


# --- Wasserstein ---------------------------------------------------------------------------------


def test_sliced_distances_are_pot_with_a_fixed_projection_seed():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 3)), rng.normal(0.5, 1.5, size=(200, 3))
    for seed in (0, 1):
        assert metrics.sliced_wasserstein(x, y, 100, seed) == pytest.approx(
            ot.sliced_wasserstein_distance(x, y, n_projections=100, seed=seed), rel=1e-12
        )
        assert metrics.max_sliced_wasserstein(x, y, 100, seed) == pytest.approx(
            ot.max_sliced_wasserstein_distance(x, y, n_projections=100, seed=seed), rel=1e-12
        )
    # JAX input, same numbers; a different seed slices differently.
    assert metrics.sliced_wasserstein(jnp.asarray(x), jnp.asarray(y)) == pytest.approx(
        metrics.sliced_wasserstein(x, y), rel=1e-6
    )
    assert metrics.sliced_wasserstein(x, y, 100, 0) != metrics.sliced_wasserstein(x, y, 100, 1)


def test_sliced_wasserstein_in_one_dimension_is_scipy_w1_and_gaussian_w2():
    # In 1-D every direction is +-1, so the sliced distance is the exact W_p of the samples.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 1)), rng.normal(1.0, 2.0, size=(400, 1))
    assert metrics.sliced_wasserstein(x, y, n_projections=3, p=1) == pytest.approx(
        stats.wasserstein_distance(x[:, 0], y[:, 0]), rel=1e-9
    )

    # W2^2(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2. The empirical W2^2 has sd
    # ~ 2|m1 - m2| sqrt((s1^2 + s2^2) / n) ~ 0.05 and a bias O(log log n / n) ~ 1e-4 (Bobkov &
    # Ledoux, 2019), negligible against the standard error of the mean of 20 repeats.
    m1, s1, m2, s2, n = 0.0, 1.0, 1.0, 1.5, 5000
    values = []
    for r in range(20):
        x = rng.normal(m1, s1, size=(n, 1))
        y = rng.normal(m2, s2, size=(n, 1))
        values.append(metrics.sliced_wasserstein(x, y, n_projections=1, seed=r) ** 2)
    mean, standard_error = mean_and_standard_error(values)
    assert abs(mean - ((m1 - m2) ** 2 + (s1 - s2) ** 2)) < 4 * standard_error


def test_sliced_w2_between_isotropic_gaussians_matches_closed_form():
    # Projected on theta, N(m, s^2 I) is N(theta.m, s^2), so
    # SW2^2 = E_theta (theta.(m1 - m2))^2 + (s1 - s2)^2 = |m1 - m2|^2 / d + (s1 - s2)^2.
    # The projection seed varies with the repeat, so the spread of the repeats holds both the
    # sampling and the Monte-Carlo-over-directions error.
    rng = np.random.default_rng(2)
    d, n, s1, s2 = 3, 2000, 1.0, 1.5
    shift = np.array([2.0, -1.0, 0.5])
    values = []
    for r in range(16):
        x = rng.normal(0.0, s1, size=(n, d))
        y = shift + rng.normal(0.0, s2, size=(n, d))
        values.append(metrics.sliced_wasserstein(x, y, n_projections=100, seed=r) ** 2)
    mean, standard_error = mean_and_standard_error(values)
    expected = shift @ shift / d + (s1 - s2) ** 2
    assert abs(mean - expected) < 4 * standard_error


# --- MMD and energy distance -----------------------------------------------------------------


def numpy_mmd2_unbiased(x, y, bandwidth):
    """Gretton et al. (2012, eq. 3) transcribed with full float64 kernel matrices."""

    def gram(a, b):
        return np.exp(-spatial.distance.cdist(a, b, "sqeuclidean") / (2 * bandwidth**2))

    n, m = len(x), len(y)
    k_xx, k_yy = gram(x, x), gram(y, y)
    return (
        (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
        + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        - 2 * gram(x, y).mean()
    )


def numpy_energy(x, y, unbiased):
    n, m = len(x), len(y)
    n_xx, n_yy = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    return (
        2 * spatial.distance.cdist(x, y).mean()
        - spatial.distance.cdist(x, x).sum() / n_xx
        - spatial.distance.cdist(y, y).sum() / n_yy
    )


@pytest.mark.parametrize("block_elements", [metrics._BLOCK_ELEMENTS, 7000])
def test_kernel_discrepancies_match_numpy_transcriptions(monkeypatch, block_elements):
    # 7000 elements = 7 rows of 300 x 3 per block: many blocks and a padded last block.
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 3)), rng.normal(0.3, 1.2, size=(250, 3))
    # float32 pair sums of O(1) terms: relative error ~1e-6 on each mean.
    assert metrics.mmd(x, y, bandwidth=1.3) == pytest.approx(
        numpy_mmd2_unbiased(x, y, 1.3), abs=1e-5
    )
    bandwidth = np.median(spatial.distance.pdist(np.concatenate([x, y])))
    assert metrics.median_bandwidth(x, y) == pytest.approx(bandwidth, rel=1e-12)
    assert metrics.mmd(x, y) == pytest.approx(numpy_mmd2_unbiased(x, y, bandwidth), abs=1e-5)
    for unbiased in (True, False):
        assert metrics.energy_distance(x, y, unbiased=unbiased) == pytest.approx(
            numpy_energy(x, y, unbiased), abs=1e-5
        )


def test_energy_distance_v_statistic_is_scipy_squared():
    # scipy.stats.energy_distance is sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) with V-statistics (its
    # CDF formula, sqrt(2) times the L2 distance of the empirical CDFs), 1-D only.
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 1)), rng.normal(0.5, 1.0, size=(300, 1))
    assert metrics.energy_distance(x, y, unbiased=False) == pytest.approx(
        stats.energy_distance(x[:, 0], y[:, 0]) ** 2, rel=1e-5
    )


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0])
def test_mmd_is_unbiased_for_the_gaussian_closed_form(shift):
    # X ~ N(0, s^2 I_d), Y ~ N(mu, s^2 I_d), k = exp(-|a - b|^2 / (2 h^2)):
    # E k(X, X') = (h^2 / (h^2 + 2 s^2))^(d/2),
    # E k(X, Y) = (h^2 / (h^2 + 2 s^2))^(d/2) exp(-|mu|^2 / (2 (h^2 + 2 s^2))),
    # MMD^2 = 2 (h^2 / (h^2 + 2 s^2))^(d/2) (1 - exp(-|mu|^2 / (2 (h^2 + 2 s^2)))), exactly the
    # mean of the unbiased estimator (0 when shift = 0).
    rng = np.random.default_rng(5)
    d, s, h, n = 2, 1.0, 1.0, 800
    mu = np.array([shift, 0.0])
    values = [
        metrics.mmd(rng.normal(0, s, (n, d)), mu + rng.normal(0, s, (n, d)), bandwidth=h)
        for _ in range(12)
    ]
    ratio = h**2 / (h**2 + 2 * s**2)
    expected = 2 * ratio ** (d / 2) * (1 - math.exp(-(mu @ mu) / (2 * (h**2 + 2 * s**2))))
    mean, standard_error = mean_and_standard_error(values)
    assert abs(mean - expected) < 4 * standard_error


def test_mmd_grows_with_the_shift():
    x = np.random.default_rng(6).normal(size=(500, 2))
    values = [metrics.mmd(x, x + np.array([shift, 0.0])) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(values) > 0)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_energy_distance_is_unbiased_for_the_gaussian_closed_form(shift):
    # 1-D, X ~ N(0, 1), Y ~ N(mu, 1): X - X' ~ N(0, 2), X - Y ~ N(-mu, 2), and for
    # Z ~ N(m, v): E|Z| = sqrt(2 v / pi) exp(-m^2 / (2 v)) + m (1 - 2 Phi(-m / sqrt(v))).
    def mean_abs(m, v):
        return math.sqrt(2 * v / math.pi) * math.exp(-(m**2) / (2 * v)) + m * (
            1 - 2 * special.ndtr(-m / math.sqrt(v))
        )

    expected = 2 * mean_abs(shift, 2.0) - 2 * mean_abs(0.0, 2.0)
    rng = np.random.default_rng(7)
    values = [
        metrics.energy_distance(rng.normal(size=(800, 1)), rng.normal(shift, 1.0, (800, 1)))
        for _ in range(12)
    ]
    mean, standard_error = mean_and_standard_error(values)
    assert abs(mean - expected) < 4 * standard_error


# --- mixture report ------------------------------------------------------------------------------


N_MIXTURE = 2000  # one sample size for every mixture draw: one compilation of the sampler


def exact_samples(target, seed, n=N_MIXTURE):
    return draw(target, jax.random.key(seed), n)


def truncated_variance_ratio_law(inflation, d, n_k):
    """Mean and standard error of ``variance_ratio`` for one mode with n_k samples.

    Samples N(mu, s C) with C isotropic, cut at D^2 <= q (q the chi2_d quantile 1 - 1e-6):
    D^2 = s chi2_d given chi2_d <= c = q / s, with E[chi2_d^j; <= c] = d (d + 2) ... F_{d+2j}(c),
    and r = mean(D^2) / d over n_k samples (the ddof-1 centring changes it by O(1/n_k^2)).
    """
    c = stats.chi2.ppf(1 - 1e-6, d) / inflation
    mass = stats.chi2.cdf(c, d)
    first = d * stats.chi2.cdf(c, d + 2) / mass
    second = d * (d + 2) * stats.chi2.cdf(c, d + 4) / mass
    return inflation * first / d, inflation * math.sqrt((second - first**2) / n_k) / d


def weighted_ratio_law(report, weights, inflation, d, n):
    """Closed-form mean and standard error of ``variance_ratio_mean`` given the counts."""
    laws = [truncated_variance_ratio_law(inflation, d, f * n) for f in report.fractions]
    means, errors = np.array(laws).T
    v = weights / weights.sum()
    return float(v @ means), float(np.sqrt(np.sum((v * errors) ** 2)))


def test_parity_of_assignment_with_the_target_posterior(mixture):
    samples = exact_samples(mixture, 10)
    # Push a quarter of the points between modes, where the posterior argmax matters.
    samples[::4] *= 0.5
    posterior = eqx.filter_jit(lambda target, x: target.responsibilities(x))(mixture, samples)
    labels = np.argmax(np.asarray(posterior), axis=-1)
    counts = np.bincount(labels, minlength=mixture.n_components)
    np.testing.assert_array_equal(
        metrics.mixture_report(samples, mixture).fractions, counts / len(samples)
    )


def test_mixture_report_on_exact_samples(mixture):
    n, repeats, d = N_MIXTURE, 4, mixture.dim
    weights = np.asarray(mixture.weights, np.float64)
    reports = [
        metrics.mixture_report(exact_samples(mixture, 20 + r), mixture) for r in range(repeats)
    ]

    # Modes sit 31 standard deviations apart, so the posterior misassigns with probability
    # ~1e-200 and TV is exactly that of Multinomial(n, w) / n: its mean and sd come from 10^5
    # multinomial draws (Monte-Carlo error < 0.5% of the sd). E TV is close to the normal
    # approximation 1/2 sum_k sqrt(2 w_k (1 - w_k) / (pi n)).
    null_tv = 0.5 * np.abs(
        np.random.default_rng(8).multinomial(n, weights, size=100_000) / n - weights
    ).sum(axis=1)
    normal_approximation = 0.5 * np.sum(np.sqrt(2 * weights * (1 - weights) / (math.pi * n)))
    assert null_tv.mean() == pytest.approx(normal_approximation, rel=0.02)
    tv = np.mean([rep.total_variation for rep in reports])
    assert abs(tv - null_tv.mean()) < 4 * null_tv.std() / math.sqrt(repeats)
    assert all(rep.n_empty == 0 for rep in reports)

    # Within 3 sd of its own mean with probability P(chi2_2 <= 9) = 1 - exp(-4.5) ~ 0.989;
    # binomial standard error over all n * repeats samples.
    p_near = 1 - math.exp(-4.5)
    near = np.mean([rep.near_fraction for rep in reports])
    assert abs(near - p_near) < 4 * math.sqrt(p_near * (1 - p_near) / (n * repeats))

    # Per mode, tr Cov_hat / tr C is the mean of d independent chi2_{n_k - 1} / (n_k - 1):
    # mean 1, standard error sqrt(2 / (d (n_k - 1))) (truncation bias < 1e-4).
    for rep in reports:
        counts = rep.fractions * n
        np.testing.assert_array_less(
            np.abs(rep.variance_ratio - 1.0), 4 * np.sqrt(2 / (d * (counts - 1)))
        )
    laws = [weighted_ratio_law(rep, weights, 1.0, d, n) for rep in reports]
    expected = np.mean([mean for mean, _ in laws])
    standard_error = math.sqrt(sum(error**2 for _, error in laws)) / repeats
    assert expected == pytest.approx(1.0, abs=1e-4)
    assert abs(np.mean([rep.variance_ratio_mean for rep in reports]) - 1.0) < 4 * standard_error


@pytest.mark.slow  # floors of every measure
def test_sliced_wasserstein_is_nearly_blind_to_within_mode_spread_and_the_report_is_not(mixture):
    # The same exact samples, each pushed away from its mode's mean so that every mode has
    # 2.5x the true variance: mode weights are unchanged, only the spread differs. Against an
    # independent reference set the inflated set scores *better* in sliced Wasserstein (wider
    # modes shorten the 1-D transport of the excess mass between modes, which dominates); the
    # mixture report reads the inflation.
    n, repeats, inflation, d = N_MIXTURE, 3, 2.5, mixture.dim
    weights = np.asarray(mixture.weights, np.float64)
    sw, max_sw = metrics.sliced_wasserstein, metrics.max_sliced_wasserstein
    log_ratios, observed, laws = {"sliced": [], "max-sliced": []}, [], []
    for r in range(repeats):
        reference, samples = exact_samples(mixture, 30 + r), exact_samples(mixture, 40 + r)
        centre = assigned_means(samples, mixture)
        inflated = centre + math.sqrt(inflation) * (samples - centre)
        for name, metric_fn in (("sliced", sw), ("max-sliced", max_sw)):
            log_ratios[name].append(
                math.log(metric_fn(inflated, reference) / metric_fn(samples, reference))
            )
        report = metrics.mixture_report(inflated, mixture)
        observed.append(report.variance_ratio_mean)
        laws.append(weighted_ratio_law(report, weights, inflation, d, n))

    # Paired over repeats, the log-ratio (the difference scales with the distance itself, so
    # the ratio is the steadier statistic; about -4.5%) is below 0 by more than 4 standard
    # errors, for the sliced and the tutorial's max-sliced distance.
    for values in log_ratios.values():
        mean, standard_error = mean_and_standard_error(values)
        assert mean + 4 * standard_error < 0.0

    # Closed form: s F_{chi2_{d+2}}(q / s) / F_{chi2_d}(q / s) = 2.44 for s = 2.5, d = 2.
    expected = np.mean([m for m, _ in laws])
    assert expected == pytest.approx(2.44, abs=0.01)
    standard_error = math.sqrt(sum(error**2 for _, error in laws)) / repeats
    assert abs(np.mean(observed) - expected) < 4 * standard_error


def test_mixture_report_counts_a_missing_component(mixture):
    samples = exact_samples(mixture, 13)
    keep = np.any(assigned_means(samples, mixture) != np.asarray(mixture.means[0]), axis=1)
    report = metrics.mixture_report(samples[keep], mixture)
    assert report.n_empty == 1
    assert report.fractions[0] == 0.0
    assert np.isnan(report.variance_ratio[0])
    assert np.isfinite(report.variance_ratio_mean)
    # With f_0 = 0: TV = (w_0 + sum_{k>0} |f_k - w_k|) / 2 >= (w_0 + |1 - (1 - w_0)|) / 2 = w_0.
    assert report.total_variation >= float(mixture.weights[0]) - 1e-12


def test_mixture_report_by_hand():
    # Two 1-D components N(0, 1) and N(10, 4), weights 1/4, 3/4. Points: 0 and 1 (component 0,
    # Mahalanobis 0 and 1), 10 and 16 (component 1, Mahalanobis 0 and 3: near), 25 (component 1,
    # Mahalanobis 7.5: not near, and beyond the variance cut of 5.3).
    target = GaussianMixture(
        jnp.array([[0.0], [10.0]]), jnp.array([[[1.0]], [[4.0]]]), jnp.array([1.0, 3.0])
    )
    report = metrics.mixture_report(np.array([[0.0], [1.0], [10.0], [16.0], [25.0]]), target)
    np.testing.assert_allclose(report.fractions, [0.4, 0.6])
    assert report.total_variation == pytest.approx(0.15)
    assert report.n_empty == 0
    assert report.near_fraction == pytest.approx(0.8)
    # Variances (ddof 1): {0, 1} -> 0.5, ratio 0.5; {10, 16} -> 18, ratio 18 / 4 = 4.5.
    np.testing.assert_allclose(report.variance_ratio, [0.5, 4.5])
    assert report.variance_ratio_mean == pytest.approx(0.25 * 0.5 + 0.75 * 4.5)
    assert report.far_fraction == pytest.approx(0.2)  # 25 alone: Mahalanobis 7.5 > 5; 16 is 3


def test_mixture_report_assigns_by_the_posterior_with_unequal_covariances():
    """Each point goes to its most probable component, log-determinants included: with
    N(0, 1) and N(0, 100) at equal weights, 2.5 belongs to the wide one (posterior 0.69) and
    0.5 and 2.0 to the narrow one. Every other test mixture has equal covariances, where the
    log-determinant term is the same for each component and its factor went unchecked."""
    target = GaussianMixture(
        jnp.array([[0.0], [0.0]]), jnp.array([[[1.0]], [[100.0]]]), jnp.array([1.0, 1.0])
    )
    points = np.array([[2.5], [0.5], [2.0]])
    np.testing.assert_array_equal(np.argmax(target.responsibilities(points), axis=1), [1, 0, 0])
    np.testing.assert_allclose(metrics.mixture_report(points, target).fractions, [2 / 3, 1 / 3])


def test_mixture_report_rejects_a_dimension_mismatch(mixture):
    with pytest.raises(ValueError, match="dimension"):
        metrics.mixture_report(np.zeros((5, 3)), mixture)


# --- floor and evaluate -------------------------------------------------------------------------


def test_floor_uses_fresh_keys_and_reports_mean_and_spread():
    seen = []

    def sample_fn(key, n):
        seen.append(tuple(np.asarray(jax.random.key_data(key)).ravel()))
        return jax.random.normal(key, (n, 1))

    def metric_fn(x, y):
        return float(jnp.mean(x) - jnp.mean(y))

    key = jax.random.key(14)
    mean, std = metrics.floor(metric_fn, sample_fn, key, 100, repeats=4)
    assert len(set(seen)) == 8  # two sets per repeat, no key reused
    values = []
    for r in range(4):
        key_x, key_y = jax.random.split(jax.random.fold_in(key, r))
        values.append(metric_fn(sample_fn(key_x, 100), sample_fn(key_y, 100)))
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))
    assert std > 0
    with pytest.raises(ValueError, match="repeats"):
        metrics.floor(metric_fn, sample_fn, key, 100, repeats=1)


def test_evaluate_is_json_ready(mixture):
    samples, reference = exact_samples(mixture, 15), exact_samples(mixture, 16)
    result = metrics.evaluate(samples[samples[:, 0] > -5], reference, mixture, n_projections=50)
    json.dumps(result, allow_nan=False)
    assert result["n_empty"] == 3  # the three modes at x = -10 are gone: ratios undefined
    assert result["variance_ratio"].count(None) == 3
    assert result["sliced_wasserstein"] == metrics.sliced_wasserstein(
        samples[samples[:, 0] > -5], reference, n_projections=50
    )
    plain = metrics.evaluate(samples, reference)
    assert set(plain) == {
        "n_samples",
        "n_reference",
        "sliced_wasserstein",
        "max_sliced_wasserstein",
        "mmd2",
        "energy_distance",
    }


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same dimension"):
        metrics.mmd(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="shape"):
        metrics.energy_distance(np.zeros(4), np.zeros((4, 1)))


# --- kernel Stein discrepancy -----------------------------------------------------------------


def _imq(x, y, c, beta):
    return (c**2 + np.sum((x - y) ** 2)) ** beta


def _stein_kernel_by_differences(x, y, s_x, s_y, c, beta, h=1e-4):
    """u_p(x, y) = s_x.s_y k + s_x.grad_y k + s_y.grad_x k + sum_a d2k/dx_a dy_a, with every
    derivative of k a float64 central difference (errors O(h^2) and O(1e-16 / h^2))."""
    k = _imq(x, y, c, beta)
    u = s_x @ s_y * k
    for a in np.eye(x.size) * h:
        grad_x = (_imq(x + a, y, c, beta) - _imq(x - a, y, c, beta)) / (2 * h)
        grad_y = (_imq(x, y + a, c, beta) - _imq(x, y - a, c, beta)) / (2 * h)
        axis = np.flatnonzero(a)[0]
        mixed = (
            _imq(x + a, y + a, c, beta)
            - _imq(x + a, y - a, c, beta)
            - _imq(x - a, y + a, c, beta)
            + _imq(x - a, y - a, c, beta)
        ) / (4 * h**2)
        u += s_x[axis] * grad_y + s_y[axis] * grad_x + mixed
    return u


@pytest.mark.parametrize("c, beta", [(1.0, -0.5), (1.3, -0.3)])
def test_ksd_matches_a_double_loop_with_its_standard_error(c, beta):
    """The U-statistic and Hoeffding's variance from a direct double (and triple) loop over a
    tiny sample with arbitrary scores."""
    rng = np.random.default_rng(0)
    n, d = 6, 3
    x, scores = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    u = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                u[i, j] = _stein_kernel_by_differences(x[i], x[j], scores[i], scores[j], c, beta)
    ksd = u.sum() / (n * (n - 1))
    zeta_2 = np.sum(u**2) / (n * (n - 1)) - ksd**2
    triples = [(i, j, k) for i in range(n) for j in range(n) for k in range(n)
               if len({i, j, k}) == 3]  # fmt: skip
    zeta_1 = np.mean([u[i, j] * u[i, k] for i, j, k in triples]) - ksd**2
    variance = 2 / (n * (n - 1)) * (2 * (n - 2) * max(zeta_1, 0) + zeta_2)

    result = metrics.kernel_stein_discrepancy(x, scores, c=c, beta=beta)
    np.testing.assert_allclose(result.ksd_squared, ksd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.standard_error, math.sqrt(variance), rtol=1e-4)


def test_ksd_blocks_and_callable_scores_agree(monkeypatch):
    x = np.random.default_rng(1).normal(size=(50, 2))
    whole = metrics.kernel_stein_discrepancy(x, -x)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7 * 50 * 2)  # 7-row blocks, one padded
    blocked = metrics.kernel_stein_discrepancy(x, lambda point: -point)
    np.testing.assert_allclose(blocked, whole, rtol=1e-5)


def test_ksd_is_null_on_exact_samples_and_large_on_shrunken_ones():
    """N(0, I_2): exact samples within 4 standard errors of the null mean 0; samples with half
    the variance more than 4 standard errors above 0 (about 10 at n = 1000) and above the exact
    ones."""
    z = np.random.default_rng(2).normal(size=(1000, 2))
    null = metrics.kernel_stein_discrepancy(z, -z)
    assert abs(null.ksd_squared) < 4 * null.standard_error
    shrunk = math.sqrt(0.5) * z
    alternative = metrics.kernel_stein_discrepancy(shrunk, -shrunk)
    assert alternative.ksd_squared > 4 * alternative.standard_error
    assert alternative.ksd_squared - null.ksd_squared > 4 * math.hypot(
        alternative.standard_error, null.standard_error
    )


def test_ksd_standard_error_matches_the_spread_over_repeats():
    """Away from the null the statistic is asymptotically normal with Hoeffding's variance: the
    reported SE matches the standard deviation over 40 independent repeats (relative SE of a
    standard deviation from 40 values: 1 / sqrt(78) = 0.11)."""
    rng = np.random.default_rng(3)
    results = []
    for _ in range(40):
        x = math.sqrt(0.5) * rng.normal(size=(300, 2))
        results.append(metrics.kernel_stein_discrepancy(x, -x))
    values, errors = np.array(results).T
    ratio = values.std(ddof=1) / errors.mean()
    assert abs(ratio - 1.0) < 4 / math.sqrt(2 * 39)


def test_ksd_rejects_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError):
        metrics.kernel_stein_discrepancy(x[:2], x[:2])
    with pytest.raises(ValueError):
        metrics.kernel_stein_discrepancy(x, np.zeros((5, 3)))
    with pytest.raises(ValueError):
        metrics.kernel_stein_discrepancy(x, x, beta=-1.5)


# --- hostile samples and options: refused naming the argument ----------------------------------


def _spoiled(kind):
    """A (12, 2) sample set with one bad row: NaN, +-inf, or complex values."""
    x = np.random.default_rng(20).normal(size=(12, 2))
    if kind == "complex":
        return x + 1j * x  # the imaginary part was dropped with a ComplexWarning
    x[5, 1] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    return x


_GOOD = np.random.default_rng(21).normal(size=(12, 2))

_SAMPLE_CALLS = {
    "sliced_wasserstein": lambda x, y: metrics.sliced_wasserstein(x, y, n_projections=5),
    "max_sliced_wasserstein": lambda x, y: metrics.max_sliced_wasserstein(x, y, n_projections=5),
    "mmd": metrics.mmd,
    "mmd_bandwidth": lambda x, y: metrics.mmd(x, y, bandwidth=1.0),
    "median_bandwidth": metrics.median_bandwidth,
    "energy_distance": metrics.energy_distance,
}


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf", "complex"])
@pytest.mark.parametrize("side", ["x", "y"])
@pytest.mark.parametrize("name", sorted(_SAMPLE_CALLS))
def test_two_sample_metrics_refuse_non_finite_or_complex_samples(name, side, kind):
    """Each gave NaN (or dropped the imaginary part) instead of an error."""
    x, y = (_spoiled(kind), _GOOD) if side == "x" else (_GOOD, _spoiled(kind))
    expected = "row 5" if kind != "complex" else "complex"
    with pytest.raises(ValueError, match=rf"^{side}: .*{expected}"):
        _SAMPLE_CALLS[name](x, y)


@pytest.mark.parametrize("kind", ["nan", "inf", "complex"])
def test_ksd_refuses_non_finite_or_complex_samples_and_scores(kind):
    with pytest.raises(ValueError, match="^samples: "):
        metrics.kernel_stein_discrepancy(_spoiled(kind), -_GOOD)
    with pytest.raises(ValueError, match="^score: "):
        metrics.kernel_stein_discrepancy(_GOOD, _spoiled(kind))
    if kind != "complex":  # a callable's NaN scores are caught after the vmap
        with pytest.raises(ValueError, match="^score: "):
            metrics.kernel_stein_discrepancy(_GOOD, lambda x: x * jnp.nan)


def test_nan_samples_are_not_counted_in_component_zero(mixture):
    """Half-NaN samples read as a total variation of 0.45 with NaN rows assigned to component 0
    (the argmax of a NaN row); now the report and evaluate refuse them, naming the argument."""
    samples = exact_samples(mixture, 50, n=200)
    samples[:100] = np.nan
    with pytest.raises(ValueError, match=r"^samples: 100 row\(s\) contain NaN or inf"):
        metrics.mixture_report(samples, mixture)
    reference = exact_samples(mixture, 51, n=200)
    with pytest.raises(ValueError, match="^samples: 100 row"):
        metrics.evaluate(samples, reference, mixture, n_projections=5)
    with pytest.raises(ValueError, match="^reference: 100 row"):
        metrics.evaluate(reference, samples, mixture, n_projections=5)
    with pytest.raises(ValueError, match="^samples: complex"):
        metrics.mixture_report(samples[100:] + 0j, mixture)


@pytest.mark.parametrize("target", [None, "seed", np.zeros((9, 2))])
def test_a_target_that_is_not_a_mixture_is_refused(mixture, target):
    """``mixture_report(s, None)`` was an AttributeError; ``evaluate`` ignored the target."""
    samples = exact_samples(mixture, 52, n=200)
    with pytest.raises(TypeError, match="^target: expected a scorelab.targets.GaussianMixture"):
        metrics.mixture_report(samples, target)
    if target is not None:  # None means 'no target' for evaluate
        with pytest.raises(TypeError, match="^target: "):
            metrics.evaluate(samples, samples, target, n_projections=5)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda x, y: metrics.mmd(x, y, bandwidth=np.inf), "bandwidth"),  # was 0.0: 'identical'
        (lambda x, y: metrics.mmd(x, y, bandwidth=np.nan), "bandwidth"),
        (lambda x, y: metrics.mmd(x, y, bandwidth="1"), "bandwidth"),
        (lambda x, y: metrics.mmd(x, y, bandwidth=0.0), "bandwidth"),
        (lambda x, y: metrics.mmd(x, y, bandwidth=-1.0), "bandwidth"),
        (lambda x, y: metrics.mmd(x, y, bandwidth=jnp.ones(2)), "bandwidth"),
        (lambda x, y: metrics.median_bandwidth(x, y, max_points=0), "max_points"),
        (lambda x, y: metrics.median_bandwidth(x, y, max_points=1), "max_points"),  # NaN
        (lambda x, y: metrics.median_bandwidth(x, y, max_points=2.5), "max_points"),
        (lambda x, y: metrics.median_bandwidth(x, y, seed=-1), "seed"),
        (lambda x, y: metrics.sliced_wasserstein(x, y, n_projections=0), "n_projections"),
        (lambda x, y: metrics.sliced_wasserstein(x, y, n_projections=2.5), "n_projections"),
        (lambda x, y: metrics.sliced_wasserstein(x, y, p=0), "p"),  # POT's AssertionError
        (lambda x, y: metrics.sliced_wasserstein(x, y, p=np.nan), "p"),
        (lambda x, y: metrics.sliced_wasserstein(x, y, seed=-1), "seed"),
        (lambda x, y: metrics.max_sliced_wasserstein(x, y, n_projections=0), "n_projections"),
        (lambda x, y: metrics.max_sliced_wasserstein(x, y, n_projections=-5), "n_projections"),
        (lambda x, y: metrics.max_sliced_wasserstein(x, y, seed=1.5), "seed"),
        (lambda x, y: metrics.max_sliced_wasserstein(x, y, p=0.5), "p"),
        (lambda x, y: metrics.kernel_stein_discrepancy(x, -x, c=np.inf), "c"),  # was NaN
        (lambda x, y: metrics.kernel_stein_discrepancy(x, -x, c=np.nan), "c"),
        (lambda x, y: metrics.kernel_stein_discrepancy(x, -x, c=0.0), "c"),
        (lambda x, y: metrics.kernel_stein_discrepancy(x, -x, c=1e-30), "c"),
        (lambda x, y: metrics.kernel_stein_discrepancy(x, -x, beta=-1.5), "beta"),
        (lambda x, y: metrics.kernel_stein_discrepancy(x, -x, beta=np.nan), "beta"),
        (lambda x, y: metrics.evaluate(x, y, n_projections=0), "n_projections"),
        (lambda x, y: metrics.evaluate(x, y, seed=-1), "seed"),
        (lambda x, y: metrics.evaluate(x, y, bandwidth=np.inf), "bandwidth"),
    ],
)
def test_metric_options_are_checked_naming_them(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: expected"):
        call(_GOOD, _GOOD[:10])


def test_scalar_options_accept_numpy_and_jax_scalars():
    """A 0-d array is a number: ``bandwidth=jnp.float32(1.3)`` is ``bandwidth=1.3``."""
    x, y = _GOOD, _GOOD[:10] + 0.5
    plain = metrics.mmd(x, y, bandwidth=1.3)
    assert metrics.mmd(x, y, bandwidth=np.float32(1.3)) == pytest.approx(plain, rel=1e-6)
    assert metrics.mmd(x, y, bandwidth=jnp.asarray(1.3)) == pytest.approx(plain, rel=1e-6)
    assert metrics.sliced_wasserstein(x, y, 10, np.int64(3), np.int64(2)) == pytest.approx(
        metrics.sliced_wasserstein(x, y, 10, 3, 2), rel=1e-12
    )


@pytest.mark.parametrize("name", sorted(_SAMPLE_CALLS))
def test_zero_dimensional_samples_are_refused(name):
    """``energy_distance`` on ``(5, 0)`` arrays was a ZeroDivisionError."""
    with pytest.raises(ValueError, match=r"^x: expected shape \(n, d\) with .*d >= 1"):
        _SAMPLE_CALLS[name](np.zeros((5, 0)), np.zeros((5, 0)))


def test_floor_requires_an_integer_number_of_repeats():
    with pytest.raises(ValueError, match="^repeats: expected an integer >= 2"):
        metrics.floor(metrics.mmd, None, jax.random.key(0), 10, repeats=2.5)


# --- float32 range: the pair sums are float32 after a float64 finiteness check -------------------


def _two_sets(mixture):
    return draw(mixture, jax.random.key(0), 50), draw(mixture, jax.random.key(1), 60)


@pytest.mark.parametrize("exponent", [0, 66, -83, -130])
def test_energy_distance_follows_its_scaling_law_beyond_float32(mixture, exponent):
    """E(a x, a y) = a E(x, y): squared distances overflowed float32 at 1e20 (NaN) and
    underflowed at 1e-25 (an exact 0). A power-of-two scale is exact in every float32
    operation, so the law holds to the bit."""
    x, y = _two_sets(mixture)
    a = math.ldexp(1.0, exponent)
    for unbiased in (True, False):
        plain = metrics.energy_distance(x, y, unbiased)
        assert metrics.energy_distance(a * x, a * y, unbiased) == a * plain


@pytest.mark.parametrize("a", [1e20, 1e-25, 3.0, 1e-300])
def test_energy_distance_is_one_homogeneous_at_any_scale(mixture, a):
    x, y = _two_sets(mixture)
    np.testing.assert_allclose(
        metrics.energy_distance(a * x, a * y), a * metrics.energy_distance(x, y), rtol=1e-5
    )


def test_mmd_refuses_samples_beyond_float32_once_divided_by_the_bandwidth(mixture):
    x, y = _two_sets(mixture)
    with pytest.raises(ValueError, match=r"^bandwidth: the samples divided by it reach"):
        metrics.mmd(x * 1e30, y * 1e30, bandwidth=1e-10)
    assert math.isfinite(metrics.mmd(x * 1e30, y * 1e30))  # median bandwidth: in range


@pytest.mark.parametrize(
    "sample_scale, score_scale, c, argument",
    [
        (1e37, 1.0, 1.0, "samples"),  # squared distances overflow: SteinDiscrepancy(nan, nan)
        (1.0, 1e30, 1.0, "score"),  # score products overflow
        (1.0, 1e17, 1.0, "score"),  # the terms are finite, their squares (the error) are not
        (1.0, 1.0, 1e-10, "c"),  # c^(2 beta - 4) overflows at coinciding points
    ],
)
def test_ksd_refuses_terms_beyond_float32(mixture, sample_scale, score_scale, c, argument):
    x = draw(mixture, jax.random.key(0), 50)
    scores = np.asarray(jax.vmap(mixture.score)(jnp.asarray(x, jnp.float32)), np.float64)
    with pytest.raises(ValueError, match=rf"^{argument}: .*float32") as error:
        metrics.kernel_stein_discrepancy(x * sample_scale, scores * score_scale, c=c)
    assert "\n" not in str(error.value)
    result = metrics.kernel_stein_discrepancy(x, scores)
    assert math.isfinite(result.ksd_squared) and math.isfinite(result.standard_error)


@pytest.mark.parametrize("name", ["sliced_wasserstein", "max_sliced_wasserstein"])
def test_sliced_distances_refuse_projections_that_do_not_fit_in_memory(mixture, name):
    """10**10 projections were a MemoryError of 149 GiB from inside POT."""
    x, y = _two_sets(mixture)
    with pytest.raises(ValueError, match=r"^n_projections: needs .* of memory"):
        getattr(metrics, name)(x, y, n_projections=10**13)
    with pytest.raises(ValueError, match=r"^n_projections: needs .* of memory"):
        metrics.evaluate(x, y, n_projections=10**13)


# --- argument checks named by argument ------------------------------------------------------------


def test_energy_distance_refuses_an_unbiased_flag_that_is_not_a_bool():
    x, y = np.random.default_rng(0).normal(size=(2, 5, 2))
    with pytest.raises(TypeError, match=r"^unbiased: expected True or False, got str"):
        metrics.energy_distance(x, y, unbiased="no")
    assert metrics.energy_distance(x, y, unbiased=np.bool_(False)) == metrics.energy_distance(
        x, y, unbiased=False
    )


def _normal_sample(key, n):
    return jax.random.normal(key, (n, 2))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: metrics.floor(metrics.energy_distance, _normal_sample, 0, 20), TypeError,
         r"^key: expected a PRNG key"),
        (lambda: metrics.floor("energy", _normal_sample, jax.random.key(0), 20), TypeError,
         r"^metric_fn: expected a callable"),
        (lambda: metrics.floor(lambda a, b: "x", _normal_sample, jax.random.key(0), 20),
         TypeError, r"^metric_fn: returned str; it must return one real number"),
        (lambda: metrics.floor(metrics.energy_distance, _normal_sample, jax.random.key(0), 0),
         ValueError, r"^n: expected an integer >= 1, got 0"),
        (lambda: metrics.floor(metrics.energy_distance, 3, jax.random.key(0), 20), TypeError,
         r"^sample_fn: expected a callable"),
    ],
    ids=["key-int", "metric-string", "metric-returns-string", "n0", "sample-fn-int"],
)  # fmt: skip
def test_floor_names_the_argument_it_refuses(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_kernel_stein_discrepancy_is_its_u_statistic_summed_by_hand():
    """Three points and their N(0, I) scores: the docstring's u_p(x, y) with the IMQ kernel's
    defaults c = 1, beta = -1/2, averaged over ordered pairs i != j, in float64 NumPy."""
    x = np.array([[0.0, 0.0], [1.0, 0.5], [-0.5, 2.0]])
    s, d, c, beta = -x, 2, 1.0, -0.5

    def u(i, j):
        r = x[i] - x[j]
        b = c**2 + r @ r
        return (
            b**beta * s[i] @ s[j]
            + 2 * beta * b ** (beta - 1) * (s[j] - s[i]) @ r
            - 2 * beta * d * b ** (beta - 1)
            - 4 * beta * (beta - 1) * (r @ r) * b ** (beta - 2)
        )

    expected = np.mean([u(i, j) for i in range(3) for j in range(3) if i != j])
    got = metrics.kernel_stein_discrepancy(x, s).ksd_squared
    np.testing.assert_allclose(got, expected, rtol=1e-5)
