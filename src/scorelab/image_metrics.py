r"""Image metrics in a classifier's feature space: Fréchet distance, KID, precision and recall.

The measures of image papers (FID, KID, precision/recall) with the Inception network replaced by
the small digits classifier that ships with scorelab (:mod:`scorelab.classifier`): features are
its 64 penultimate activations, class probabilities its softmax. Each function takes plain
arrays, so any feature extractor works. :func:`image_measure` computes them all for one pair of
image sets; :mod:`scorelab.report` adds the floors (held-out data against training data).

The feature statistics are written with NumPy/SciPy: the features are a few hundred to a few
thousand 64-vectors, and no maintained JAX library implements KID's unbiased estimator with a
standard error or the k-NN manifolds of precision and recall.

References:
    Heusel, M. et al. (2017). GANs Trained by a Two Time-Scale Update Rule Converge to a Local
    Nash Equilibrium. https://arxiv.org/abs/1706.08500
    Bińkowski, M., Sutherland, D. J., Arbel, M. & Gretton, A. (2018). Demystifying MMD GANs.
    https://arxiv.org/abs/1801.01401
    Kynkäänniemi, T., Karras, T., Laine, S., Lehtinen, J. & Aila, T. (2019). Improved Precision
    and Recall Metric for Assessing Generative Models. https://arxiv.org/abs/1904.06991
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import spatial

from scorelab._validate import check_memory
from scorelab.classifier import DigitsClassifier, classifier_outputs
from scorelab.metrics import _as_pair, _as_samples

__all__ = [
    "frechet_distance",
    "KernelDistance",
    "kernel_inception_distance",
    "PrecisionRecall",
    "precision_recall",
    "class_total_variation",
    "mean_top_probability",
    "nearest_distances",
    "memorisation_ratio",
    "image_measure",
    "feature_measure",
]


_FLOAT64_MAX = float(np.finfo(np.float64).max)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _check_magnitude(x: np.ndarray, y: np.ndarray, power: int, terms: float) -> None:
    """Raise, naming ``x`` or ``y``, for features whose ``power``-th power, summed over
    ``terms`` products, overflows float64 (FID's ``C_x^{1/2} C_y C_x^{1/2}`` is fourth order,
    KID's squared cubic kernel twelfth): they made inf or NaN with only an overflow warning."""
    limit = (_FLOAT64_MAX / (10.0 * terms)) ** (1.0 / power)
    for name, values in (("x", x), ("y", y)):
        largest = float(np.max(np.abs(values)))
        if largest > limit:
            raise ValueError(
                f"{name}: values as large as {largest:.3g} overflow float64 in this metric "
                f"(beyond {limit:.3g} here); rescale the features"
            )


def frechet_distance(x, y) -> float:
    r"""Fréchet distance between Gaussians fitted to two feature sets (FID's formula).

    .. math::
        d^2 = \lVert \mu_x - \mu_y \rVert^2 + \operatorname{tr}\big(C_x + C_y
            - 2\,(C_x^{1/2} C_y C_x^{1/2})^{1/2}\big),

    the squared 2-Wasserstein distance between :math:`\mathcal{N}(\mu_x, C_x)` and
    :math:`\mathcal{N}(\mu_y, C_y)` (sample means and unbiased covariances). The matrix root is
    taken of the symmetric :math:`C_x^{1/2} C_y C_x^{1/2}` by an eigendecomposition (its
    eigenvalues are those of :math:`C_x C_y`), so no complex parts arise. Biased upwards at
    finite sizes: read it against its floor at the same sizes.

    Args:
        x: ``(n, d)`` features.
        y: ``(m, d)`` features.

    Returns:
        :math:`d^2 \ge 0` (as FID reports it).

    Raises:
        ValueError: for features that are not ``(n, d)``, ``n >= 2``, finite real numbers of
            one ``d`` (NaN was LAPACK's 'eigenvalues did not converge'), naming ``x`` or ``y``.

    References:
        Dowson, D. C. & Landau, B. V. (1982). The Fréchet distance between multivariate normal
        distributions. https://doi.org/10.1016/0047-259X(82)90077-X
        Heusel, M. et al. (2017). https://arxiv.org/abs/1706.08500
    """
    x, y = _as_pair(x, y, 2)
    d = x.shape[1]
    # Covariances, their roots and products: a few d x d float64 matrices.
    check_memory(
        "x", 6 * 8 * d**2, f"d = {d} features need d x d covariances; reduce the feature dimension"
    )
    _check_magnitude(x, y, 4, float(len(x) + len(y)) * d**2)
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root_x = _psd_sqrt(cov_x)
    cross = np.linalg.eigvalsh(root_x @ cov_y @ root_x)
    trace = np.trace(cov_x) + np.trace(cov_y) - 2.0 * np.sqrt(np.clip(cross, 0.0, None)).sum()
    return float(max(np.sum((mean_x - mean_y) ** 2) + trace, 0.0))


class KernelDistance(NamedTuple):
    """KID and its standard error.

    Attributes:
        kid: the unbiased estimate of the squared MMD (may be negative).
        standard_error: its two-sample jackknife standard error.
    """

    kid: float
    standard_error: float


def kernel_inception_distance(x, y) -> KernelDistance:
    r"""KID: the unbiased squared MMD with the cubic polynomial kernel, and a standard error.

    .. math::
        k(a, b) = \big(a^\top b / d + 1\big)^3, \qquad
        \widehat{\mathrm{MMD}}^2_u = \frac{\sum_{i \ne j} k(x_i, x_j)}{n(n-1)}
            + \frac{\sum_{i \ne j} k(y_i, y_j)}{m(m-1)}
            - \frac{2 \sum_{i, j} k(x_i, y_j)}{n m},

    (Bińkowski et al. 2018, Eq. 3 and Sec. 4), whose expectation is 0 when ``x`` and ``y``
    follow one law. The standard error is the two-sample jackknife's (Arvesen 1969),
    :math:`\sqrt{\tfrac{n-1}{n} \sum_i (\theta_{-i} - \bar\theta_x)^2 + \tfrac{m-1}{m} \sum_j
    (\theta_{-j} - \bar\theta_y)^2}`, every leave-one-out value from the kernel matrices' row
    sums. Bińkowski et al. report the spread over random subsets instead; the jackknife uses
    every pair once. It is consistent when the laws differ; under equal laws (a degenerate
    U-statistic) it overstates the spread, so it errs on the side of caution near the floor.

    Args:
        x: ``(n, d)`` features, ``n >= 3``.
        y: ``(m, d)`` features, ``m >= 3``.

    Returns:
        A :class:`KernelDistance`.

    Raises:
        ValueError: for features that are not ``(n, d)`` finite real numbers of one ``d``, or
            fewer than 3 points in a set.

    References:
        Bińkowski, M., Sutherland, D. J., Arbel, M. & Gretton, A. (2018). Demystifying MMD
        GANs. https://arxiv.org/abs/1801.01401
        Arvesen, J. N. (1969). Jackknifing U-statistics. Ann. Math. Statist. 40(6).
        https://doi.org/10.1214/aoms/1177697287
    """
    x, y = _as_pair(x, y, 2)
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    if min(n, m) < 3:
        raise ValueError(f"KID needs at least 3 points per set, got {n} and {m}")
    # Three kernel matrices (n x n, m x m, n x m) and their temporaries.
    check_memory(
        "x",
        2 * 8 * (n + m) ** 2,
        f"{n} and {m} points need n x m kernel matrices; measure fewer points",
    )
    _check_magnitude(x, y, 12, float(n + m) ** 2)
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    np.fill_diagonal(k_xx, 0.0)
    np.fill_diagonal(k_yy, 0.0)
    row_xx, row_yy = k_xx.sum(axis=1), k_yy.sum(axis=1)
    row_xy, col_xy = k_xy.sum(axis=1), k_xy.sum(axis=0)
    s_xx, s_yy, s_xy = row_xx.sum(), row_yy.sum(), row_xy.sum()

    def value(s_xx, s_yy, s_xy, n, m):
        return s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)

    kid = value(s_xx, s_yy, s_xy, n, m)
    without_x = value(s_xx - 2.0 * row_xx, s_yy, s_xy - row_xy, n - 1, m)
    without_y = value(s_xx, s_yy - 2.0 * row_yy, s_xy - col_xy, n, m - 1)
    variance = (n - 1) / n * np.sum((without_x - without_x.mean()) ** 2) + (m - 1) / m * np.sum(
        (without_y - without_y.mean()) ** 2
    )
    return KernelDistance(float(kid), float(np.sqrt(variance)))


class PrecisionRecall(NamedTuple):
    """Improved precision and recall.

    Attributes:
        precision: fraction of generated points inside the real k-NN manifold.
        recall: fraction of real points inside the generated k-NN manifold.
    """

    precision: float
    recall: float


def _manifold_coverage(support: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Fraction of ``queries`` within the k-NN radius of some point of ``support``."""
    radii = spatial.cKDTree(support).query(support, k=k + 1)[0][:, k]  # k+1: itself first
    distances = spatial.distance.cdist(queries, support)
    return float(np.mean((distances <= radii[None, :]).any(axis=1)))


def precision_recall(real, generated, k: int = 3) -> PrecisionRecall:
    r"""Improved precision and recall of Kynkäänniemi et al. (2019), k-NN manifolds.

    .. math::
        \mathrm{precision} = \frac{1}{m} \sum_j f(\phi_{g,j}, \Phi_r), \qquad
        \mathrm{recall} = \frac{1}{n} \sum_i f(\phi_{r,i}, \Phi_g), \qquad
        f(\phi, \Phi) = 1\big[\exists \phi' \in \Phi: \lVert \phi - \phi' \rVert
            \le \lVert \phi' - \mathrm{NN}_k(\phi', \Phi) \rVert\big],

    with :math:`\mathrm{NN}_k` the k-th nearest neighbour in the set, itself excluded (Eq. 1-3).

    Args:
        real: ``(n, d)`` features of real images, ``n > k``.
        generated: ``(m, d)`` features of generated images, ``m > k``.
        k: the neighbourhood size (the paper's default 3).

    Returns:
        A :class:`PrecisionRecall`; both are 1 for identical sets.

    Raises:
        ValueError: for features that are not ``(n, d)`` finite real numbers of one ``d``, or
            a ``k`` that is not an integer ``>= 1`` below both set sizes.

    References:
        Kynkäänniemi, T., Karras, T., Laine, S., Lehtinen, J. & Aila, T. (2019). Improved
        Precision and Recall Metric for Assessing Generative Models.
        https://arxiv.org/abs/1904.06991
    """
    real, generated = _as_pair(real, generated, 2, ("real", "generated"))
    if isinstance(k, bool) or int(k) != k or k < 1 or min(len(real), len(generated)) <= k:
        raise ValueError(f"k must be an integer >= 1 below both set sizes, got {k!r}")
    return PrecisionRecall(
        _manifold_coverage(real, generated, int(k)), _manifold_coverage(generated, real, int(k))
    )


def class_total_variation(probabilities_x, probabilities_y) -> float:
    r"""Total variation between the predicted class frequencies of two sets.

    .. math::
        \mathrm{TV} = \tfrac12 \sum_c |\hat p_c - \hat q_c|, \qquad
        \hat p_c = \tfrac1n \#\{i : \arg\max_k p_{ik} = c\}.

    Args:
        probabilities_x: ``(n, K)`` class probabilities (or logits) of one set.
        probabilities_y: ``(m, K)`` of the other.

    Returns:
        TV in [0, 1].

    Raises:
        ValueError: for arrays that are not ``(n, K)``, ``n >= 2``, finite real numbers of one
            ``K``: the argmax of a NaN row is 0, which counted it in class 0.
    """
    probabilities_x, probabilities_y = _as_pair(
        probabilities_x, probabilities_y, 2, ("probabilities_x", "probabilities_y")
    )
    classes = probabilities_x.shape[1]
    p = np.bincount(probabilities_x.argmax(axis=1), minlength=classes) / len(probabilities_x)
    q = np.bincount(probabilities_y.argmax(axis=1), minlength=classes) / len(probabilities_y)
    return float(0.5 * np.abs(p - q).sum())


def mean_top_probability(probabilities) -> float:
    r"""Mean of the classifier's largest class probability, :math:`\frac1n \sum_i \max_c p_{ic}`.

    How recognisable the images are (the confidence half of the Inception score).

    Args:
        probabilities: ``(n, K)`` class probabilities.

    Returns:
        A number in [1/K, 1].

    Raises:
        ValueError: ``probabilities`` is not ``(n, K)``, ``n >= 2``, of finite real numbers,
            or a row is not a probability vector: entries in [0, 1] summing to 1 to within
            :data:`_PROBABILITY_TOLERANCE` (logits, or probabilities scaled, gave a number
            outside [1/K, 1]).

    References:
        Salimans, T. et al. (2016). Improved Techniques for Training GANs.
        https://arxiv.org/abs/1606.03498
    """
    probabilities = _as_samples(probabilities, "probabilities", 2)
    tolerance = _PROBABILITY_TOLERANCE
    outside = (probabilities < -tolerance) | (probabilities > 1.0 + tolerance)
    bad = np.flatnonzero(
        outside.any(axis=1) | (np.abs(probabilities.sum(axis=1) - 1.0) > tolerance)
    )
    if bad.size:
        raise ValueError(
            f"probabilities: {bad.size} row(s) are not probability vectors (entries in [0, 1] "
            f"summing to 1; first at row {bad[0]}, sum {probabilities[bad[0]].sum():.6g}); give "
            "the classifier's softmax, not its logits"
        )
    return float(probabilities.max(axis=1).mean())


_PROBABILITY_TOLERANCE = 1e-3
"""How far a row of :func:`mean_top_probability` may be from a probability vector (entries
in [0, 1], sum 1): room for float32 or float16 rounding of a softmax, none for logits."""


def _as_images(images, name: str) -> np.ndarray:
    """``images`` ``(n, ...)`` as float64 rows ``(n, pixels)``, ``n >= 1``, checked as
    samples (:func:`scorelab.metrics._as_samples`: finite real numbers), naming ``name``."""
    shape = np.shape(images)
    if len(shape) < 1 or shape[0] < 1 or 0 in shape:
        raise ValueError(f"{name}: no images (shape {shape}); expected (n, ...) with n >= 1")
    pixels = int(np.prod(shape[1:], dtype=np.int64))
    return _as_samples(np.reshape(images, (shape[0], pixels)), name)


def _same_pixels(images: np.ndarray, train: np.ndarray, name: str) -> None:
    if images.shape[1] != train.shape[1]:
        raise ValueError(
            f"{name}: images of {images.shape[1]} pixels, the training images (train) of "
            f"{train.shape[1]}"
        )


def nearest_distances(images, train) -> np.ndarray:
    r"""Euclidean pixel distance of each image to its nearest training image.

    Args:
        images: ``(n, ...)`` images.
        train: ``(N, ...)`` training images of the same shape.

    Returns:
        ``(n,)`` distances :math:`\min_j \lVert x_i - t_j \rVert_2`.

    Raises:
        ValueError: ``images`` or ``train`` holds no image, NaN, inf or complex values, or
            the two differ in pixel count, naming the argument.
    """
    images, train = _as_images(images, "images"), _as_images(train, "train")
    _same_pixels(images, train, "images")
    return spatial.cKDTree(train).query(images, k=1)[0]


def memorisation_ratio(images, train, held_out) -> float:
    r"""Median nearest-training-image distance of ``images`` over that of held-out images.

    .. math::
        r = \frac{\operatorname{median}_i \min_j \lVert x_i - t_j \rVert}
                 {\operatorname{median}_i \min_j \lVert h_i - t_j \rVert},

    in pixel space. A model that copies its training images has :math:`r \ll 1`; fresh draws
    from the data's law have :math:`r \approx 1` (its floor).

    Args:
        images: ``(n, ...)`` images judged.
        train: ``(N, ...)`` the training images.
        held_out: ``(M, ...)`` images of the data's law not in ``train``.

    Returns:
        :math:`r > 0`.

    Raises:
        ValueError: an argument holds no image, NaN, inf or complex values, the pixel counts
            differ, or the held-out images' median distance is 0 (they copy training images,
            so no ratio is defined), naming the argument.

    References:
        Meehan, C., Chaudhuri, K. & Dasgupta, S. (2020). A Non-Parametric Test to Detect
        Data-Copying in Generative Models. https://arxiv.org/abs/2004.05675
    """
    train = _as_images(train, "train")
    images, held_out = _as_images(images, "images"), _as_images(held_out, "held_out")
    _same_pixels(images, train, "images")
    _same_pixels(held_out, train, "held_out")
    tree = spatial.cKDTree(train)  # one tree for both sets
    denominator = np.median(tree.query(held_out, k=1)[0])
    if denominator == 0.0:
        raise ValueError(
            "held_out: half or more of the held-out images are in train (median distance 0), "
            "so the ratio is undefined; hold out images that are not in the training set"
        )
    return float(np.median(tree.query(images, k=1)[0]) / denominator)


def image_measure(x, y, classifier: DigitsClassifier, k: int = 3) -> dict[str, float]:
    """Every classifier metric of the images ``x`` against the reference images ``y``, as a row.

    Args:
        x: ``(n, 1, 8, 8)`` (or any shape :func:`scorelab.classifier.to_classifier_input`
            takes) images judged.
        y: reference images, same kind.
        classifier: the feature extractor (:func:`scorelab.classifier.load_digits_classifier`).
        k: neighbourhood of precision and recall.

    Returns:
        :func:`feature_measure` of the two sets' classifier outputs.
    """
    if not isinstance(classifier, DigitsClassifier):
        raise TypeError(
            f"classifier: expected a DigitsClassifier (scorelab.classifier."
            f"load_digits_classifier()), got {type(classifier).__name__}"
        )
    return feature_measure(classifier_outputs(classifier, x), classifier_outputs(classifier, y), k)


def feature_measure(
    outputs_x: tuple[np.ndarray, np.ndarray], outputs_y: tuple[np.ndarray, np.ndarray], k: int = 3
) -> dict[str, float]:
    """Every classifier metric of one set against a reference set, from their classifier outputs.

    The half of :func:`image_measure` after the classifier, so that a caller measuring many
    sets against one reference classifies the reference once.

    Args:
        outputs_x: ``(features (n, f), probabilities (n, K))`` of the images judged
            (:func:`scorelab.classifier.classifier_outputs`).
        outputs_y: the same of the reference images, ``(m, f)`` and ``(m, K)``.
        k: neighbourhood of precision and recall.

    Returns:
        ``fd``, ``kid``, ``kid_se``, ``precision``, ``recall``, ``class_tv`` and ``top_prob`` (of
        ``x``).
    """
    for name, outputs in (("outputs_x", outputs_x), ("outputs_y", outputs_y)):
        if not isinstance(outputs, tuple | list) or len(outputs) != 2:
            raise TypeError(
                f"{name}: expected the pair (features, probabilities) from "
                f"scorelab.classifier.classifier_outputs, got {type(outputs).__name__}"
                + (f" of length {len(outputs)}" if isinstance(outputs, tuple | list) else "")
            )
    (features_x, probabilities_x), (features_y, probabilities_y) = outputs_x, outputs_y
    kid = kernel_inception_distance(features_x, features_y)
    quality = precision_recall(features_y, features_x, k)
    return {
        "fd": frechet_distance(features_x, features_y),
        "kid": kid.kid,
        "kid_se": kid.standard_error,
        "precision": quality.precision,
        "recall": quality.recall,
        "class_tv": class_total_variation(probabilities_x, probabilities_y),
        "top_prob": mean_top_probability(probabilities_x),
    }
