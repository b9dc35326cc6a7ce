"""Image metrics against closed forms, brute force and their floors (scorelab.image_metrics)."""

import numpy as np
import pytest
import scipy.linalg

from scorelab.image_metrics import (
    class_total_variation,
    feature_measure,
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


def test_precision_recall_radii_are_the_kth_neighbour_on_the_line():
    """Closed forms on the real line, where a radius one neighbour short changes the answer:
    the k = 1 radii of {0, 1, 3} are 1, 1, 2 and cover 0.5 and 2.2 (radius 0, the point
    itself, covers neither); the k = 2 radii of {0, 1, 3, 7} are 3, 2, 3, 6, so 7 covers 11.5
    (4.5 away; its first neighbour's 4 would not) and not 13.5 (6.5 away)."""
    assert precision_recall([[0.0], [1.0], [3.0]], [[0.5], [2.2]], k=1) == (1.0, 1.0)
    # on the radius itself is inside (Eq. 1's <=): 5 is 2 from 3, whose radius is 2
    assert precision_recall([[0.0], [1.0], [3.0]], [[5.0], [0.0]], k=1) == (1.0, 1.0)
    real = [[0.0], [1.0], [3.0], [7.0]]
    assert precision_recall(real, [[11.5], [0.2], [0.4]], k=2) == (1.0, 1.0)
    assert precision_recall(real, [[13.5], [0.2], [0.4]], k=2) == (2 / 3, 1.0)


def test_feature_measure_judges_the_set_against_the_reference():
    """Precision is the judged set's points inside the reference's manifold, recall the
    reference's inside the judged set's (a swap gave each the other's value): ten copies of
    reference points are all inside (precision 1) and cover few of the forty reference points
    (recall below 1)."""
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(40, 3))
    copies = reference[:10]
    probabilities = np.full((40, 2), 0.5)
    measured = feature_measure((copies, probabilities[:10]), (reference, probabilities))
    expected = precision_recall(reference, copies)
    assert expected.precision == 1.0 and expected.recall < 1.0
    assert (measured["precision"], measured["recall"]) == expected
    # the judged set's confidence, not the reference's: one-hot against uniform rows
    one_hot = np.eye(2)[np.arange(10) % 2]
    assert feature_measure((copies, one_hot), (reference, probabilities))["top_prob"] == 1.0


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


# --- hostile features, probabilities and image sets: refused naming the argument ---------------


def _with_nan(a, row=2):
    a = np.array(a, np.float64)
    a[row, 0] = np.nan
    return a


_FEATURES = np.random.default_rng(5).normal(size=(8, 3))


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda a, b: frechet_distance(a, b), "x"),  # was LAPACK's 'did not converge'
        (lambda a, b: frechet_distance(b, a), "y"),
        (lambda a, b: kernel_inception_distance(a, b), "x"),  # was NaN
        (lambda a, b: kernel_inception_distance(b, a), "y"),
        (lambda a, b: precision_recall(a, b), "real"),
        (lambda a, b: precision_recall(b, a), "generated"),
        (lambda a, b: class_total_variation(a, b), "probabilities_x"),  # NaN rows -> class 0
        (lambda a, b: class_total_variation(b, a), "probabilities_y"),
        (lambda a, b: mean_top_probability(a), "probabilities"),
    ],
)
@pytest.mark.parametrize("spoil", ["nan", "inf", "complex"])
def test_feature_metrics_refuse_non_finite_or_complex_features(call, argument, spoil):
    bad = {
        "nan": _with_nan(_FEATURES),
        "inf": np.where(np.arange(8)[:, None] == 2, np.inf, _FEATURES),
        "complex": _FEATURES + 1j,
    }[spoil]
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        call(bad, _FEATURES)


def test_class_total_variation_of_nan_probabilities_is_refused_not_075():
    q = np.eye(3)[[0, 1, 2, 2]]
    with pytest.raises(ValueError, match=r"^probabilities_x: 10 row\(s\) contain NaN or inf"):
        class_total_variation(np.full((10, 3), np.nan), q)


@pytest.mark.parametrize(
    "probabilities",
    [
        np.full((4, 3), 1 / 3) * 10,  # read 3.33, documented range [1/K, 1]
        -np.full((4, 3), 1 / 3),  # read -0.33
        np.array([[2.0, -1.0, 0.0], [1.0, 0.0, 0.0]]),  # sums to 1, entries outside [0, 1]
        np.array([[0.5, 0.4, 0.0], [1.0, 0.0, 0.0]]),  # sums to 0.9
        np.random.default_rng(6).normal(size=(5, 10)),  # logits
    ],
)
def test_mean_top_probability_requires_probability_rows(probabilities):
    with pytest.raises(ValueError, match=r"^probabilities: .* not probability vectors"):
        mean_top_probability(probabilities)


def test_mean_top_probability_accepts_a_float32_softmax():
    import jax

    logits = np.random.default_rng(7).normal(scale=5.0, size=(200, 10)).astype(np.float32)
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
    expected = np.mean(np.max(probabilities.astype(np.float64), axis=1))
    assert mean_top_probability(probabilities) == pytest.approx(expected, rel=1e-12)
    assert 0.1 <= mean_top_probability(probabilities) <= 1.0


def test_nearest_distances_and_memorisation_refuse_empty_or_bad_image_sets():
    from scorelab.image_metrics import nearest_distances

    rng = np.random.default_rng(8)
    images, train, held_out = (rng.normal(size=(k, 1, 4, 4)) for k in (6, 10, 5))
    with pytest.raises(ValueError, match=r"^train: no images \(shape \(0, 1, 4, 4\)\)"):
        nearest_distances(images, train[:0])  # was numpy's 'cannot reshape array of size 0'
    with pytest.raises(ValueError, match="^images: no images"):
        nearest_distances(images[:0], train)
    with pytest.raises(ValueError, match="^train: no images"):
        memorisation_ratio(images, train[:0], held_out)
    with pytest.raises(ValueError, match="^held_out: no images"):
        memorisation_ratio(images, train, held_out[:0])
    with pytest.raises(ValueError, match=r"^images: 1 row\(s\) contain NaN"):
        memorisation_ratio(_with_nan(images.reshape(6, -1)).reshape(images.shape), train, held_out)
    with pytest.raises(ValueError, match="^train: complex"):
        nearest_distances(images, train + 1j)
    with pytest.raises(ValueError, match="^held_out: images of 8 pixels"):
        memorisation_ratio(images, train, held_out[:, :, :2])
    # held-out images copied from the training set: a median distance of 0, no ratio (was inf)
    with pytest.raises(ValueError, match="^held_out: .*median distance 0"):
        memorisation_ratio(images, train, train[:5])
    np.testing.assert_allclose(
        nearest_distances(images, train),
        np.min(np.linalg.norm(images.reshape(6, 1, -1) - train.reshape(1, 10, -1), axis=2), 1),
    )


# --- hostile input: overflow, terabyte allocations, bad classifier outputs ---------------------

_X = np.random.default_rng(0).normal(size=(20, 4))
_Y = np.random.default_rng(1).normal(size=(25, 4))


@pytest.mark.parametrize(
    ("metric", "x", "y", "argument"),
    [
        (frechet_distance, _X * 1e160, _Y, "x"),
        (frechet_distance, _X, _Y * 1e160, "y"),
        (kernel_inception_distance, _X * 1e120, _Y * 1e120, "x"),
        (frechet_distance, np.zeros((2, 10**6)), np.zeros((2, 10**6)), "x"),
        (kernel_inception_distance, np.zeros((10**6, 2)), np.zeros((10**6, 2)), "x"),
    ],
    ids=["fd-overflow-x", "fd-overflow-y", "kid-overflow", "fd-terabyte", "kid-terabyte"],
)
def test_metrics_refuse_overflow_and_huge_allocations(metric, x, y, argument):
    with pytest.raises(ValueError, match=f"^{argument}: "):
        metric(x, y)


def test_large_finite_features_are_still_measured():
    assert np.isfinite(frechet_distance(_X * 1e50, _Y * 1e50))
    assert np.isfinite(kernel_inception_distance(_X * 1e10, _Y * 1e10).kid)


def test_measures_refuse_a_missing_classifier_and_bad_outputs():
    from scorelab.image_metrics import feature_measure, image_measure

    images = np.zeros((8, 1, 8, 8))
    with pytest.raises(TypeError, match="^classifier: expected a DigitsClassifier"):
        image_measure(images, images, None)
    with pytest.raises(TypeError, match=r"^outputs_x: expected the pair \(features, prob"):
        feature_measure(np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(TypeError, match="^outputs_y: "):
        feature_measure((np.zeros((3, 4)), np.zeros((3, 10))), None)
