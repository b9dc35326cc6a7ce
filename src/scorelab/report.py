r"""One report type for every job that measures samples: rows beside their floors, and its text.

``scorelab evaluate``, ``scorelab demo`` and ``scorelab sweep`` all measure samples the same way
(:func:`measure`), compute floors the same way (:func:`floors`: the metric between two
independent exact sample sets of the same size, so a result reads as floor + sampler error +
model error) and print the same table (:func:`format_table`).

Row keys (and floor keys) are one vocabulary:

========== ============================================================================
key        meaning
========== ============================================================================
sw         sliced Wasserstein-2 (:func:`scorelab.metrics.sliced_wasserstein`)
max_sw     max-sliced Wasserstein-2, the tutorial's metric
mmd2       squared MMD, Gaussian kernel with the median bandwidth (unbiased)
tv         total variation of the mixture's mode weights
var_ratio  within-mode variance over the truth (weight-averaged)
near       fraction within 3 standard deviations of a mode
far        fraction farther than 5 standard deviations from every mode
n_empty    modes with no sample
ksd2       squared kernel Stein discrepancy to the target's exact score (IMQ, unbiased: its
           null mean is 0, so read it against ``ksd2_se``); sees within-mode spread that
           sliced Wasserstein misses, and needs no reference samples
ksd2_se    its standard error
fd         Fréchet distance of the digits classifier's features (FID's formula)
kid        KID: unbiased squared MMD of those features, cubic polynomial kernel
kid_se     its jackknife standard error
precision  fraction of samples inside the data's k-NN feature manifold (k = 3)
recall     fraction of data inside the samples' k-NN feature manifold
class_tv   total variation of the predicted class frequencies
top_prob   mean largest class probability
memo       memorisation ratio: median nearest-training-image distance of the samples over
           that of held-out images (pixels; below 1 means copies)
========== ============================================================================

The image rows (:func:`image_evaluation`) have their own floor: the same measures between the
data's held-out split and equal-size subsets of its training split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax import Array
from tqdm.auto import tqdm

from scorelab import metrics
from scorelab._keys import typed_key
from scorelab._validate import (
    check_callable,
    check_instance,
    check_int,
    check_mapping,
    check_sequence,
    is_traced,
    real_number,
)
from scorelab.classifier import DigitsClassifier, classifier_outputs
from scorelab.image_metrics import feature_measure, mean_top_probability, memorisation_ratio
from scorelab.models import ExactScore
from scorelab.targets import GaussianMixture

__all__ = ["Report", "measure", "floors", "format_table", "IMAGE_METRICS", "image_evaluation"]


def measure(
    x,
    reference,
    target: GaussianMixture | None = None,
    *,
    n_projections: int = 1000,
    mmd: bool = True,
    max_sliced: bool = False,
    ksd: bool = False,
) -> dict[str, Any]:
    """Every metric of ``x`` against ``reference`` (and the target's mixture report), as a row.

    Args:
        x: ``(n, d)`` samples.
        reference: ``(m, d)`` samples of the law ``x`` should follow.
        target: the exact mixture, when known: adds ``tv``, ``var_ratio``, ``near``, ``far``,
            ``n_empty``.
        n_projections: directions of the sliced distances (seed 0: every call compares the
            same slices).
        mmd: compute ``mmd2`` (quadratic in ``n``).
        max_sliced: compute ``max_sw``.
        ksd: compute ``ksd2`` and ``ksd2_se`` against the target's exact score (needs
            ``target``; quadratic in ``n``).

    Returns:
        A dict with the keys of the module's table.

    Raises:
        ValueError: for arrays that are not ``(n, d)`` of real numbers or differ in ``d``
            (the metrics' messages, naming ``x`` or ``y``), or ``ksd`` without ``target``.
        TypeError: for a traced ``x`` or ``reference`` (inside ``jit``, ``vmap`` or
            ``grad``): the metrics run on concrete arrays; for ``mmd``, ``max_sliced`` or
            ``ksd`` not ``True`` or ``False``.
    """
    for name, flag in (("mmd", mmd), ("max_sliced", max_sliced), ("ksd", ksd)):
        check_instance(name, flag, bool | np.bool_, "True or False")  # "no" was read as True
    for name, value in (("x", x), ("reference", reference)):
        if is_traced(value):
            raise TypeError(
                f"{name}: a traced array (inside jit, vmap or grad); measure runs on concrete "
                "arrays: call it outside the transformation"
            )
    if ksd and target is None:
        raise ValueError(
            "ksd: needs target (the exact mixture whose score it compares with); pass target "
            "or leave ksd False"
        )
    # Each measure with the names of the values it gives, computed only for finite samples:
    # diverged chains (a sampler outside its stable steps) have no measure, and their row says
    # so with NaN (written as null) instead of ending the sweep or the demo.
    parts: list[tuple[tuple[str, ...], Callable[[], tuple]]] = [
        (("sw",), lambda: (metrics.sliced_wasserstein(x, reference, n_projections),))
    ]
    if max_sliced:
        parts.append(
            (("max_sw",), lambda: (metrics.max_sliced_wasserstein(x, reference, n_projections),))
        )
    if mmd:
        parts.append((("mmd2",), lambda: (metrics.mmd(x, reference),)))
    if target is not None:
        parts.append((("tv", "var_ratio", "near", "far", "n_empty"), lambda: _modes(x, target)))
        if ksd:
            parts.append((("ksd2", "ksd2_se"), lambda: _stein(x, target)))
    finite = is_finite(x)
    row: dict[str, Any] = {}
    for names, compute in parts:
        row.update(zip(names, compute() if finite else [math.nan] * len(names), strict=True))
    return row


def _modes(x, target: GaussianMixture) -> tuple:
    """The mixture report's values of ``x``, in ``measure``'s order."""
    report = metrics.mixture_report(x, target)
    return (
        report.total_variation,
        report.variance_ratio_mean,
        report.near_fraction,
        report.far_fraction,
        report.n_empty,
    )


def _stein(x, target: GaussianMixture) -> tuple:
    """The kernel Stein discrepancy of ``x`` against the target's exact score, and its SE."""
    score = ExactScore(target)
    stein = metrics.kernel_stein_discrepancy(x, lambda point: score(point, 0.0))
    return stein.ksd_squared, stein.standard_error


def is_floor_pair(pair) -> bool:
    """Whether ``pair`` is a floor's ``(mean, sd)``: two real numbers in a list, a tuple or an
    array (not a string of two characters)."""
    return (
        not isinstance(pair, str | bytes)
        and isinstance(pair, Sequence | np.ndarray)
        and len(pair) == 2
        and all(real_number(value) is not None for value in pair)
    )


def is_finite(x) -> bool:
    """Whether every value of the samples ``x`` is finite: what the metrics require, and what
    diverged chains break. Values that are not numbers count as finite here: the metrics
    refuse them with their own message (``x: expected real numbers, got dtype ...``), which a
    NumPy ``isfinite`` error did not give."""
    array = np.asarray(x)
    if array.dtype.kind not in "biufc":
        return True
    return bool(np.isfinite(array).all())


IMAGE_METRICS = ("fd", "kid", "precision", "recall", "class_tv", "top_prob", "memo")
"""The image measures of :func:`image_evaluation`, each with a floor."""


def image_evaluation(
    sets: Sequence,
    train,
    held_out,
    classifier: DigitsClassifier,
    key: Array,
    repeats: int = 5,
    *,
    k: int = 3,
    progress: bool = False,
) -> tuple[list[dict[str, float]], dict[str, tuple[float, float]]]:
    r"""Image measures of each sample set of ``sets`` against training images, and their floors.

    Every measure compares equal sizes :math:`m = \min(n, M)` (``n`` images in every set,
    ``M`` held-out images). Repeat ``r`` (``fold_in(key, r)``) draws, without replacement, a
    training subset :math:`T_r` of :math:`m`, the positions of :math:`m` samples (the same in
    every set, so a set's result does not depend on the others) and a subset :math:`H_r` of the
    held-out images, and measures (:func:`scorelab.image_metrics.feature_measure`)

    - each set: its subset :math:`S_r` against :math:`T_r`;
    - the floor: :math:`H_r` against :math:`T_r` (data the classifier and the model never saw
      against data they did: what a perfect sampler of the data's law scores).

    The floor and the classifier outputs of :math:`T_r` depend on the key and :math:`m` alone:
    they are computed once per repeat for all sets, so measuring sets together gives each the
    numbers it gets alone, bit for bit, at a fraction of the cost.

    With :math:`m = M` (``n >= M``), :math:`H_r` is the whole held-out split every repeat, so
    the floor's spread is that of the training subsets alone, a lower bound on what an
    independent set of :math:`m` images would add.

    The measures of one set, the mean top probability and the memorisation ratio
    (:func:`scorelab.image_metrics.memorisation_ratio`, against the whole training split), have
    as floor their value on a bootstrap resample of :math:`m` held-out images (with
    replacement: without it, :math:`m = M` would give the same set every repeat), whose spread
    is the measure's sampling spread at size :math:`m`.

    Args:
        sets: one or more ``(n, ...)`` image arrays, all of one ``n >= 2 (k + 1)``, shaped as
            the training images.
        train: ``(N, ...)`` training images.
        held_out: ``(M, ...)`` held-out images.
        classifier: the feature extractor.
        key: PRNG key.
        repeats: subsets drawn, ``>= 2``.
        k: neighbourhood of precision and recall.
        progress: show a tqdm bar over the repeats.

    Returns:
        ``(rows, floors)``: per set, in order, the mean over repeats of each of
        :data:`IMAGE_METRICS` and ``kid_se`` (the mean of the repeats' standard errors, that of
        one repeat's estimate); and ``name -> (mean, sd)`` of the floors over repeats.

    Raises:
        ValueError: for no set, sets of different sizes or image shapes, fewer than
            ``2 (k + 1)`` samples or held-out images, fewer training images than the
            :math:`m` compared, ``k < 1`` or ``repeats`` not an integer ``>= 2``.
        TypeError: for ``sets`` given as one array or a mapping (a list of arrays is
            expected), or a ``key`` that is not a PRNG key.
    """
    metrics.check_floor_repeats("repeats", repeats)
    check_int("k", k, 1)
    key = typed_key(key, "key")
    if isinstance(sets, np.ndarray | jax.Array | Mapping | str):
        raise TypeError(
            f"sets: expected a list of sample arrays, got {type(sets).__name__}; wrap one "
            "array as [samples]"
        )
    sets = [np.asarray(a, np.float32) for a in sets]
    train, held_out = (np.asarray(a, np.float32) for a in (train, held_out))
    sizes = sorted({len(a) for a in sets})
    if len(sizes) != 1:
        raise ValueError(
            f"sets: expected sample sets of one size (they share the floor), got sizes {sizes}"
        )
    n = sizes[0]
    if n < 2 * (k + 1):
        raise ValueError(f"samples: need at least {2 * (k + 1)} images, got {n}")
    if len(held_out) < 2 * (k + 1):
        raise ValueError(
            f"held_out: need at least {2 * (k + 1)} held-out images for the floor's k-NN "
            f"measures, got {len(held_out)}"
        )
    m = min(n, len(held_out))
    if len(train) < m:
        raise ValueError(
            f"train: {len(train)} training images; every repeat draws {m} of them (as many as "
            "the samples and held-out images compared): give more training images"
        )
    shapes = {"train": train.shape[1:], "held_out": held_out.shape[1:]}
    shapes.update({f"sets[{i}]": a.shape[1:] for i, a in enumerate(sets)})
    if len(set(shapes.values())) != 1:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"sets, train, held_out: images of different shapes ({described})")
    rows, floor_rows = [[] for _ in sets], []
    for r in tqdm(range(repeats), desc="image measures", unit="repeat", disable=not progress):
        keys = jax.random.split(jax.random.fold_in(key, r), 4)
        pick_train, pick_samples, pick_held, pick_resample = keys
        subset = np.asarray(jax.random.choice(pick_train, len(train), (m,), replace=False))
        reference = classifier_outputs(classifier, train[subset])
        positions = np.asarray(jax.random.permutation(pick_samples, n)[:m])
        for samples, set_rows in zip(sets, rows, strict=True):
            chosen = samples[positions]
            set_rows.append(
                {
                    **feature_measure(classifier_outputs(classifier, chosen), reference, k),
                    "memo": memorisation_ratio(chosen, train, held_out),
                }
            )
        held = held_out[np.asarray(jax.random.permutation(pick_held, len(held_out))[:m])]
        resample = held_out[np.asarray(jax.random.choice(pick_resample, len(held_out), (m,)))]
        floor_rows.append(
            {
                **feature_measure(classifier_outputs(classifier, held), reference, k),
                "top_prob": mean_top_probability(classifier_outputs(classifier, resample)[1]),
                "memo": memorisation_ratio(resample, train, held_out),
            }
        )
    means = [
        {name: float(np.mean([r[name] for r in set_rows])) for name in (*IMAGE_METRICS, "kid_se")}
        for set_rows in rows
    ]
    floor = {
        name: (
            float(np.mean([r[name] for r in floor_rows])),
            float(np.std([r[name] for r in floor_rows], ddof=1)),
        )
        for name in IMAGE_METRICS
    }
    return means, floor


def floors(
    names: Sequence[str],
    sample_fn: Callable,
    key: Array,
    n: int,
    repeats: int = 5,
    *,
    target: GaussianMixture | None = None,
    n_projections: int = 1000,
    progress: bool = False,
) -> dict[str, tuple[float, float]]:
    """The floors of the metrics ``names``: each between two independent exact sets of ``n``.

    Every metric is computed on the same pairs (:func:`scorelab.metrics.floor` with ``key``).

    Args:
        names: keys among ``sw``, ``mmd2``, ``tv`` (``tv`` needs ``target``).
        sample_fn: ``(key, n) -> (n, d)`` exact sampler, e.g. ``target.sample``.
        key: PRNG key.
        n: size of each set (the size of the samples judged).
        repeats: pairs, ``>= 2``.
        target: the mixture whose mode weights ``tv`` measures.
        n_projections: directions of ``sw``.
        progress: show a tqdm bar over each metric's repeats.

    Returns:
        ``name -> (mean, sd)``.

    Raises:
        ValueError: for an unknown name, ``tv`` without a target, ``n < 2`` or ``repeats``
            not an integer ``>= 2``.
        TypeError: for ``names`` given as one string, a ``sample_fn`` that is not callable,
            or a ``key`` that is not a PRNG key.
    """
    check_sequence("names", names, "a list of metric names", f"use [{names!r}]", strict=False)
    check_callable("sample_fn", sample_fn, "sample_fn(key, n) -> samples (e.g. target.sample)")
    key = typed_key(key, "key")
    check_int("n", n, 2)
    metrics.check_floor_repeats("repeats", repeats)
    metric_fns = {
        "sw": lambda x, y: metrics.sliced_wasserstein(x, y, n_projections=n_projections),
        "mmd2": metrics.mmd,
    }
    if target is not None:
        metric_fns["tv"] = lambda x, y: metrics.mixture_report(x, target).total_variation
    unknown = [name for name in names if name not in metric_fns]
    if unknown:
        raise ValueError(f"no floor for {unknown[0]!r}; accepted: {', '.join(metric_fns)}")
    return {
        name: metrics.floor(
            metric_fns[name], sample_fn, key, n, repeats, progress=progress, label=f"{name} floor"
        )
        for name in names
    }


_COLUMNS = (
    ("method", "method", "{}"),
    ("nfe", "NFE", "{}"),
    ("sw", "SW", "{:.3f}"),
    ("sw_exact", "SW exact", "{:.3f}"),
    ("sw_floor", "SW floor", "{:.3f}"),
    ("tv", "TV", "{:.3f}"),
    ("tv_exact", "TV exact", "{:.3f}"),
    ("var_ratio", "var ratio", "{:.2f}"),
    ("near", "near", "{:.3f}"),
    ("mmd2", "MMD^2", "{:.2e}"),
    ("ksd2", "KSD^2", "{:.2e}"),
    ("ksd2_se", "KSD^2 se", "{:.1e}"),
    ("fd", "FD", "{:.3g}"),
    ("kid", "KID", "{:.2e}"),
    ("kid_se", "KID se", "{:.1e}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("class_tv", "class TV", "{:.3f}"),
    ("top_prob", "top prob", "{:.3f}"),
    ("memo", "memo", "{:.3f}"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of result rows; columns absent from every row are left out.

    Args:
        rows: dicts with any of the keys ``method``, ``nfe``, ``sw``, ``sw_exact``,
            ``sw_floor``, ``tv``, ``tv_exact``, ``var_ratio``, ``near``, ``mmd2``; a missing or
            NaN value shows as ``-``.

    Returns:
        The table, a header line, a rule and one line per row.

    Raises:
        TypeError: for ``rows`` that is not a list of dicts, or a value of a numeric column
            that is not a real number (naming the row and the column).
    """
    check_sequence("rows", rows, "a list of dicts")
    for i, row in enumerate(rows):
        check_mapping(f"rows[{i}]", row, "a dict of column -> value")
    columns = [c for c in _COLUMNS if any(r.get(c[0]) is not None for r in rows)]

    def cell(i, row, name, fmt):
        value = row.get(name)
        if value is None:
            return "-"
        if fmt == "{}":  # a label (method) or a count (nfe): shown as given
            return fmt.format(value)
        number = real_number(value)
        if number is None:
            raise TypeError(f"rows[{i}][{name!r}]: expected a real number, got {value!r}")
        return "-" if math.isnan(number) else fmt.format(number)

    table = [[title for _, title, _ in columns]]
    table += [[cell(i, row, name, fmt) for name, _, fmt in columns] for i, row in enumerate(rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)) for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


class Report(NamedTuple):
    """Rows of metrics, the floors they are read against, and notes; what every job prints.

    Attributes:
        rows: one dict per result (keys of the module's table, plus ``method``, ``nfe`` and
            any job-specific fields).
        floors: metric -> ``(mean, sd)`` between two exact sample sets of the rows' size.
        notes: lines printed under the table (held-out losses, hints).
    """

    rows: list[dict[str, Any]]
    floors: dict[str, tuple[float, float]]
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        """The table, then one line per floor (``floor sw: mean +- sd``), then the notes.

        Raises:
            TypeError: for rows :func:`format_table` refuses, a floor that is not a
                ``(mean, sd)`` pair of real numbers, or notes that are not a list of strings.
        """
        self._check()
        lines = [format_table(self.rows), ""]
        lines += [
            f"floor {name}: {real_number(mean):.4g} +- {real_number(sd):.2g}"
            for name, (mean, sd) in self.floors.items()
        ]
        return "\n".join([*lines, *self.notes])

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: ``{"rows", "floors", "notes"}``.

        Raises:
            TypeError: as :meth:`text`, for floors or notes of the wrong type.
        """
        self._check()
        return {"rows": self.rows, "floors": self.floors, "notes": list(self.notes)}

    def _check(self) -> None:
        """Refuse floors that are not ``name -> (mean, sd)`` and notes that are not a list of
        strings (a bare string was printed one character a line)."""
        check_mapping("floors", self.floors, "a dict of metric -> (mean, sd)")
        for name, pair in self.floors.items():
            if not is_floor_pair(pair):
                raise TypeError(f"floors[{name!r}]: expected a (mean, sd) pair, got {pair!r}")
        check_sequence("notes", self.notes, "a list of lines", "wrap one line as [line]")
        for i, note in enumerate(self.notes):
            if not isinstance(note, str):
                raise TypeError(f"notes[{i}]: expected a string, got {note!r}")
