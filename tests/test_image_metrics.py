"""Image metrics against closed forms, brute force and their floors (scorelab.image_metrics)."""

import numpy as np
import pytest
import scipy.linalg

from scorelab.image_metrics import (
    class_total_variation,
    frechet_distance,
    kernel_inception_distance,
    mean_top_probability,
    memorisation_ratio,
    precision_recall,
)


def _with_moments(rng, n, mean, covariance):
    """n points whose sample mean and (ddof 1) covariance are exactly ``mean``, ``covariance``."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z @ np.linalg.cholesky(covariance).T + mean


def test_frechet_distance_is_the_gaussian_formula():
    """With exact sample moments, FD is the closed form: for commuting (diagonal) covariances
    ||mu_x - mu_y||^2 + sum (sqrt a - sqrt b)^2; in general, parity with scipy's sqrtm."""
    rng = np.random.default_rng(0)
    mean_x, mean_y = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
    x = _with_moments(rng, 50, mean_x, np.diag(a))
    y = _with_moments(rng, 70, mean_y, np.diag(b))
    exact = np.sum((mean_x - mean_y) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(x, y) == pytest.approx(exact, rel=1e-10)

    g = rng.normal(size=(4, 4))
    cov_x, cov_y = g @ g.T + 0.1 * np.eye(4), np.eye(4) + 0.5 * np.ones((4, 4))
    x = _with_moments(rng, 40, np.zeros(4), cov_x)
    y = _with_moments(rng, 40, np.ones(4), cov_y)
    cross = scipy.linalg.sqrtm(cov_x @ cov_y).real
    exact = 4.0 + np.trace(cov_x + cov_y - 2 * cross)
    assert frechet_distance(x, y) == pytest.approx(exact, rel=1e-8)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def _kid_brute(x, y):
    d = x.shape[1]

    def mean_off_diagonal(a, b, same):
        values = [
            (a[i] @ b[j] / d + 1) ** 3
            for i in range(len(a))
            for j in range(len(b))
            if not (same and i == j)
        ]
        return np.mean(values)

    return (
        mean_off_diagonal(x, x, True) + mean_off_diagonal(y, y, True)
        - 2 * mean_off_diagonal(x, y, False)
    )  # fmt: skip


def test_kid_and_its_jackknife_match_brute_force():
    """The estimate equals the double sum of Binkowski et al.'s Eq. 3, and the standard error
    the two-sample jackknife with every leave-one-out value recomputed from scratch."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 3)), rng.normal(0.5, 1.0, size=(7, 3))
    result = kernel_inception_distance(x, y)
    assert result.kid == pytest.approx(_kid_brute(x, y), rel=1e-10)
    without_x = np.array([_kid_brute(np.delete(x, i, 0), y) for i in range(9)])
    without_y = np.array([_kid_brute(x, np.delete(y, j, 0)) for j in range(7)])
    variance = 8 / 9 * np.sum((without_x - without_x.mean()) ** 2) + 6 / 7 * np.sum(
        (without_y - without_y.mean()) ** 2
    )
    assert result.standard_error == pytest.approx(np.sqrt(variance), rel=1e-8)


def test_kid_is_unbiased_under_one_law_and_its_error_is_calibrated_under_two():
    """Two samples of one law: the mean of 200 KIDs is 0 within 4 standard errors of that mean
    (from their spread). Two laws: the jackknife standard error matches the spread of 200 KIDs
    within 4 standard errors of a sample sd (relative sd 1/sqrt(2 * 199) = 0.05)."""
    rng = np.random.default_rng(2)
    null = np.array(
        [kernel_inception_distance(*rng.normal(size=(2, 60, 4))).kid for _ in range(200)]
    )
    assert abs(null.mean()) < 4 * null.std(ddof=1) / np.sqrt(len(null))
    pairs = [
        kernel_inception_distance(rng.normal(size=(200, 4)), rng.normal(0.3, 1.2, size=(200, 4)))
        for _ in range(200)
    ]
    spread = np.std([p.kid for p in pairs], ddof=1)
    ratio = np.mean([p.standard_error for p in pairs]) / spread
    assert abs(ratio - 1) < 4 / np.sqrt(2 * 199), ratio


def test_precision_recall_identical_disjoint_and_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 5))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)
    real, fake, k = rng.normal(size=(25, 2)), rng.normal(0.5, 1.5, size=(20, 2)), 3

    def coverage(support, queries):
        radius = [np.sort(np.linalg.norm(support - s, axis=1))[k] for s in support]
        return np.mean([any(np.linalg.norm(q - s) <= r for s, r in zip(support, radius))
                        for q in queries])  # fmt: skip

    result = precision_recall(real, fake, k)
    assert result.precision == coverage(real, fake) and result.recall == coverage(fake, real)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(real[:3], fake, k=3)


def test_class_total_variation_and_top_probability_closed_forms():
    eye = np.eye(3)
    p = eye[[0, 0, 0, 1]]  # frequencies 3/4, 1/4, 0
    q = eye[[0, 1, 2, 2]]  # 1/4, 1/4, 1/2
    assert class_total_variation(p, q) == pytest.approx(0.5)
    assert class_total_variation(p, p) == 0.0
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert mean_top_probability(probabilities) == pytest.approx(0.65)


def test_memorisation_ratio_is_zero_for_copies_and_one_for_held_out():
    rng = np.random.default_rng(4)
    train, held_out = rng.normal(size=(50, 1, 4, 4)), rng.normal(size=(20, 1, 4, 4))
    assert memorisation_ratio(train[:20], train, held_out) == 0.0
    assert memorisation_ratio(held_out, train, held_out) == 1.0
    assert memorisation_ratio(held_out * 3, train, held_out) > 1.0
