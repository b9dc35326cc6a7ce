"""Data: loading and validating a user's data set, and the 2-D toy sets.

Everything here yields samples, ``float32`` arrays of shape ``(n, d)``, and nothing knows its
score; the distributions with an exact score (the oracles) are :mod:`scorelab.targets`.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = [
    "DataError",
    "validate_data",
    "load_array",
    "two_moons",
    "swiss_roll",
    "rings",
    "checkerboard",
    "TOY_DATASETS",
    "DIGITS_HELD_OUT",
    "DIGITS_SIZES",
    "digits",
]


# --- 2-D toy sets without exact scores -------------------------------------------------------


def _per_example(sample_one):
    """``sample(key, n) -> (n, d)`` drawing example ``i`` by ``sample_one(fold_in(key, i))``,
    so that a data set does not depend on how many examples are drawn."""

    @functools.partial(jax.jit, static_argnums=1)
    def sample(key: Array, n: int) -> Array:
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
        return jax.vmap(sample_one)(keys)

    sample.__doc__ = sample_one.__doc__
    return sample


@_per_example
def two_moons(key: Array) -> Array:
    """Two interleaved half-circles, Gaussian jitter 0.1; ``(n, 2)`` in about [-1, 2]x[-1, 1.5]."""
    key_side, key_angle, key_noise = jax.random.split(key, 3)
    upper = jax.random.bernoulli(key_side)
    angle = jax.random.uniform(key_angle, maxval=math.pi)
    point = jnp.where(
        upper,
        jnp.stack([jnp.cos(angle), jnp.sin(angle)]),
        jnp.stack([1.0 - jnp.cos(angle), 0.5 - jnp.sin(angle)]),
    )
    return point + 0.1 * jax.random.normal(key_noise, (2,))


@_per_example
def swiss_roll(key: Array) -> Array:
    """Swiss roll ``t (cos t, sin t) / 3``, ``t ~ U(1.5 pi, 4.5 pi)``, jitter 0.25; ``(n, 2)``."""
    key_t, key_noise = jax.random.split(key)
    t = jax.random.uniform(key_t, minval=1.5 * math.pi, maxval=4.5 * math.pi)
    return t * jnp.stack([jnp.cos(t), jnp.sin(t)]) / 3.0 + 0.25 * jax.random.normal(key_noise, (2,))


@_per_example
def rings(key: Array) -> Array:
    """Three concentric rings of radii 2, 4 and 6 (equal mass), radial jitter 0.1; ``(n, 2)``."""
    key_ring, key_angle, key_noise = jax.random.split(key, 3)
    radius = 2.0 * (1 + jax.random.randint(key_ring, (), 0, 3))
    angle = jax.random.uniform(key_angle, maxval=2 * math.pi)
    radius = radius + 0.1 * jax.random.normal(key_noise)
    return radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])


@_per_example
def checkerboard(key: Array) -> Array:
    """Uniform on the 8 dark squares (side 2) of a 4x4 checkerboard over [-4, 4]^2; ``(n, 2)``."""
    key_cell, key_offset = jax.random.split(key)
    cell = jax.random.randint(key_cell, (), 0, 8)
    row = cell // 2
    column = 2 * (cell % 2) + row % 2  # dark squares: row + column even
    offset = jax.random.uniform(key_offset, (2,), maxval=2.0)
    return jnp.stack([-4.0 + 2.0 * column, -4.0 + 2.0 * row]) + offset


TOY_DATASETS = {
    "two_moons": two_moons,
    "swiss_roll": swiss_roll,
    "rings": rings,
    "checkerboard": checkerboard,
}
"""Built-in 2-D toy samplers without exact scores, by name: ``name -> sample(key, n)``."""


# --- user data ---------------------------------------------------------------------------------


class DataError(ValueError):
    """Raised for data that cannot be used: wrong rank, no rows, NaN or infinite values."""


def validate_data(data, name: str = "data") -> np.ndarray:
    """Check a data array and return it as ``float32`` of shape ``(n, d)``.

    A 1-D array is rejected rather than guessed at (one point of ``d`` dims, or ``n`` points of
    one dim?); reshape it explicitly. Values must be real and finite, finite after the cast to
    ``float32``, and small enough that their squares are (``|x| <= 1e18``): larger data would
    train on overflowed statistics; rescale it.

    Args:
        data: array-like of shape ``(n, d)``, ``n, d >= 1``, finite real numbers.
        name: what to call the data in error messages (e.g. its file name).

    Raises:
        DataError: naming ``name``, what is wrong and the first row concerned.
    """
    array = np.asarray(data)
    if array.ndim != 2:
        raise DataError(
            f"{name}: expected a 2-D array of shape (n_samples, dim), got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{name}: no data (shape {array.shape}); need at least one row and column")
    if np.iscomplexobj(array):
        raise DataError(
            f"{name}: complex values; give real data (real and imaginary parts as columns)"
        )
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{name}: expected numbers, got dtype {array.dtype}")
    _check_rows(name, np.isfinite(array), "contain NaN or inf")
    with np.errstate(over="ignore"):
        single = array.astype(np.float32)
    _check_rows(name, np.isfinite(single), "overflow float32 (|x| > 3.4e38); rescale the data")
    _check_rows(
        name,
        np.abs(single) <= _MAX_ABS,
        f"hold values beyond {_MAX_ABS:.0e}, whose squares overflow float32; rescale the data",
    )
    return single


_MAX_ABS = 1e18
"""The largest magnitude :func:`validate_data` accepts: its square (1e36) stays below float32's
3.4e38, so means, variances and distances of the data are finite."""


def _check_rows(name: str, ok: np.ndarray, problem: str) -> None:
    """Raise ``DataError`` naming how many rows fail ``ok`` (elementwise) and the first one."""
    bad_rows = np.flatnonzero(~ok.all(axis=1))
    if bad_rows.size:
        raise DataError(f"{name}: {bad_rows.size} row(s) {problem} (first at row {bad_rows[0]})")


def load_array(path) -> np.ndarray:
    """Load a user's data set from ``.npy`` or ``.csv`` (comma-separated, optional header row).

    A CSV's first row is a header when none of its cells is a number (``nan`` and ``inf`` are
    numbers: a first row of NaN is refused as NaN, not dropped); every other row must hold the
    same number of comma-separated numbers.

    Args:
        path: a ``.npy`` file (``numpy.save``) or a ``.csv`` file, one point per row.

    Returns:
        ``float32`` array of shape ``(n, d)``.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: unsupported extension, unreadable or unparsable contents (naming the row,
            column and separator for a CSV), wrong rank, no rows, values that are not finite
            real numbers (:func:`validate_data`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataError(
                f"{path}: not a readable .npy array ({message}); write it with numpy.save"
            ) from error
        if not isinstance(array, np.ndarray):
            raise DataError(
                f"{path}: holds several arrays (an .npz archive); save one with numpy.save"
            )
    elif suffix == ".csv":
        array = _read_csv(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; accepted: .npy, .csv")
    return validate_data(array, name=str(path))


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path: Path) -> np.ndarray:
    """The numbers of a comma-separated file, ``(n, d)`` float64; see :func:`load_array`."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text file; a .csv holds comma-separated numbers") from error
    reader = csv.reader(io.StringIO(text))
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if rows and all(_number(cell) is None for cell in rows[0][1]):
        rows = rows[1:]  # a header
    if not rows:
        raise DataError(f"{path}: no data rows; a .csv holds one point per row")
    width = len(rows[0][1])
    values = np.empty((len(rows), width))
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"{path}: line {line} has {len(row)} comma-separated values, the first row {width}"
            )
        for j, cell in enumerate(row):
            value = _number(cell)
            if value is None:
                other = next((sep for sep in (";", "\t", " ") if sep in cell.strip()), None)
                hint = (
                    f"; the separator must be ',' (this file seems to use {other!r})"
                    if other
                    else ""
                )
                raise DataError(
                    f"{path}: line {line}, column {j + 1}: {cell.strip()!r} is not a number{hint}"
                )
            values[i, j] = value
    return values


# --- built-in image data: scikit-learn's handwritten digits ------------------------------------

DIGITS_HELD_OUT = 360
"""Size of the fixed held-out split of :func:`digits` (20% of the 1797 images)."""

DIGITS_SIZES = (8, 16)
"""Image sizes :func:`digits` offers: the original 8x8, and 16x16 resized from it."""


def digits(split: str = "train", *, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    r"""scikit-learn's 1797 handwritten digits as images in [-1, 1], with their labels.

    The data ship inside scikit-learn (``sklearn.datasets.load_digits``; no download): grey
    8x8 images with 17 levels (0-16), scaled as ``pixel / 8 - 1``, the convention of
    :func:`scorelab.targets.digits_mixture`. The split is fixed: a permutation of the 1797
    indices by ``numpy.random.default_rng(0)``; its first :data:`DIGITS_HELD_OUT` (360) images
    are ``"test"``, the other 1437 ``"train"``; ``"all"`` is every image in the file's order.

    ``size=16`` resizes each image to 16x16 with Pillow's bicubic filter on the float image
    (mode ``"F"``), then clips to [-1, 1] (bicubic overshoots at sharp edges).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        size: 8 or 16 (:data:`DIGITS_SIZES`).

    Returns:
        ``(images, labels)``: ``float32`` of shape ``(n, 1, size, size)`` (NCHW) and ``int64``
        class labels 0-9 of shape ``(n,)``.

    Raises:
        ValueError: an unknown ``split`` or ``size``.
    """
    from scorelab._validate import check_choice

    check_choice("split", split, ("train", "test", "all"))
    check_choice("size", size, DIGITS_SIZES)
    images, labels = _digits_all(size)
    if split == "all":
        return images.copy(), labels.copy()
    order = np.random.default_rng(0).permutation(len(labels))
    chosen = order[:DIGITS_HELD_OUT] if split == "test" else order[DIGITS_HELD_OUT:]
    return images[chosen], labels[chosen]


@functools.cache
def _digits_all(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 8.0 - 1.0).astype(np.float32)
    if size != 8:
        from PIL import Image

        images = np.stack(
            [
                np.asarray(
                    Image.fromarray(image, mode="F").resize(
                        (size, size), Image.Resampling.BICUBIC
                    )
                )
                for image in images
            ]
        )
        images = np.clip(images, -1.0, 1.0).astype(np.float32)
    return images[:, None], bunch.target.astype(np.int64)
