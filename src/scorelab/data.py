"""Data: loading and validating a user's data set, images, and the 2-D toy sets.

Everything here yields samples, ``float32`` arrays of shape ``(n, d)`` (points) or
``(n, C, H, W)`` (images, NCHW like diffusers, values in [-1, 1]), and nothing knows its
score; the distributions with an exact score (the oracles) are :mod:`scorelab.targets`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import math
import numbers
import reprlib
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import (
    check_choice,
    check_file,
    check_int,
    check_memory,
    first_line,
    is_real_dtype,
)

__all__ = [
    "DataError",
    "validate_data",
    "load_array",
    "read_npy",
    "IMAGE_LAYOUTS",
    "PIXEL_RANGES",
    "IMAGE_SOURCES",
    "MAX_CLASSES",
    "ImageData",
    "is_image_file",
    "npy_header",
    "image_shape",
    "load_images",
    "held_out_split",
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


_BYTES_PER_TOY_EXAMPLE = 64.0


def _per_example(sample_one):
    """``sample(key, n) -> (n, d)`` drawing example ``i`` by ``sample_one(fold_in(key, i))``,
    so that a data set does not depend on how many examples are drawn; ``n`` is checked (an
    integer ``>= 0``: ``2.5`` drew 3 rows, ``-3`` none) before the compiled draw."""

    @functools.partial(jax.jit, static_argnums=1)
    def draw(key: Array, n: int) -> Array:
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
        return jax.vmap(sample_one)(keys)

    def sample(key: Array, n: int) -> Array:
        check_int("n", n, 0)
        # Each example's key and point, and a few more of its floats while it is drawn:
        # n = 10**12 aborted the interpreter inside XLA.
        check_memory("n", _BYTES_PER_TOY_EXAMPLE * n, "draw fewer points")
        return draw(typed_key(key), int(n))

    sample.__name__ = sample.__qualname__ = sample_one.__name__
    sample.__doc__ = (
        f"{sample_one.__doc__}\n\n    Raises:\n        ValueError: ``n`` is not an integer >= 0, "
        "or more points than fit in memory.\n        TypeError: ``key`` is not a PRNG key.\n"
    )
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


def validate_data(data, name: str = "data", *, any_shape: bool = False) -> np.ndarray:
    """Check a data array and return it as ``float32`` of shape ``(n, d)`` (or ``(n, *S)``).

    A 1-D array is rejected rather than guessed at (one point of ``d`` dims, or ``n`` points of
    one dim?); reshape it explicitly. Values must be real and finite, finite after the cast to
    ``float32``, and small enough that their squares are (``|x| <= 1e18``): larger data would
    train on overflowed statistics; rescale it.

    Args:
        data: array-like of shape ``(n, d)``, ``n, d >= 1``, finite real numbers; with
            ``any_shape``, ``(n, *S)`` of examples of any shape ``S`` (an image ``(C, H, W)``).
        name: what to call the data in error messages (e.g. its file name).
        any_shape: accept examples of any rank >= 1, not only vectors.

    Raises:
        DataError: naming ``name``, what is wrong and the first row concerned.
    """
    try:
        array = np.asarray(data)
    except ValueError:  # NumPy's "inhomogeneous shape after 1 dimensions"
        raise DataError(
            f"{name}: rows of different lengths; give an array of one shape (n, d)"
        ) from None
    if array.ndim != 2 and not (any_shape and array.ndim > 2):
        if array.ndim > 4:  # neither points nor images: say both shapes accepted
            raise DataError(
                f"{name}: expected points of shape (n, d) or images of shape {_IMAGE_SHAPES}, "
                f"got {array.ndim}-D shape {array.shape}; save the data in one of these shapes"
            )
        images = (
            f"; images {_IMAGE_SHAPES} are read by scorelab.data.load_images"
            if array.ndim > 2
            else ""
        )
        raise DataError(
            f"{name}: expected a 2-D array of shape (n_samples, dim), got shape "
            f"{array.shape}{images}"
        )
    if 0 in array.shape:
        raise DataError(f"{name}: no data (shape {array.shape}); need at least one row and column")
    if np.iscomplexobj(array):
        raise DataError(
            f"{name}: complex values; give real data (real and imaginary parts as columns)"
        )
    if (
        array.dtype == np.bool_
        or array.dtype.kind == "m"  # timedelta64, a subtype of numpy's integers
        or not is_real_dtype(array.dtype)
    ):
        raise DataError(
            f"{name}: expected numbers, got dtype {array.dtype}; convert them to floats "
            "(array.astype(float))"
        )
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


def _bad_rows(ok: np.ndarray) -> np.ndarray:
    """The indices of the rows (first-axis entries) of which ``ok`` is not all true."""
    return np.flatnonzero(~ok.reshape(len(ok), -1).all(axis=1))


def _check_rows(name: str, ok: np.ndarray, problem: str) -> None:
    """Raise ``DataError`` naming how many rows fail ``ok`` (elementwise) and the first one."""
    bad_rows = _bad_rows(ok)
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
        DataError: a folder or a special file, an unsupported extension, unreadable or
            unparsable contents (naming the row, column and separator for a CSV), wrong rank,
            no rows, values that are not finite real numbers (:func:`validate_data`).
    """
    path = check_file(path, "data file", DataError)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = read_npy(path)
    elif suffix == ".csv":
        array = _read_csv(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; accepted: .npy, .csv")
    return validate_data(array, name=str(path))


def read_npy(path) -> np.ndarray:
    """The array of an ``.npy`` file as stored: any rank and dtype, unchecked and unscaled
    (:func:`load_array` checks it as points; samples of images are read with this).

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: a folder or a special file, or not an ``.npy`` array numpy reads without
            pickles (an ``.npz`` archive, text, objects), naming the file and the remedy.
    """
    path = check_file(path, "data file", DataError)
    with open(path, "rb") as handle:
        if handle.read(4) == b"PK\x03\x04":  # a zip: numpy.savez's archive
            raise DataError(
                f"{path}: holds several arrays (an .npz archive); save one with numpy.save"
            )
        handle.seek(0)
        return _read_npy_stream(handle, path, path.stat().st_size, "use a smaller array")


def _number(cell: str) -> float | None:
    if "_" in cell:  # float() reads "1_000" as 1000, a number no CSV writer spells so
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path: Path) -> np.ndarray:
    """The numbers of a comma-separated file, ``(n, d)`` float64; see :func:`load_array`."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's CSV UTF-8)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text file; a .csv holds comma-separated numbers") from error
    # strict: an unterminated quote is an error ("unexpected end of data"), where the lenient
    # reader took the rest of the file as one cell and reported "no data rows"
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as error:  # "field larger than field limit (131072)"
        raise DataError(
            f"{path}: not a readable .csv, line {reader.line_num} ({first_line(error)}); a .csv "
            "holds comma-separated numbers, one point per row"
        ) from error
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
            shown = reprlib.repr(cell.strip())  # a cell may hold 131072 characters
            if value is not None and math.isinf(value) and "inf" not in cell.lower():
                raise DataError(
                    f"{path}: line {line}, column {j + 1}: {shown} overflows float64 (largest "
                    "1.8e308); rescale the data"
                )
            if value is None:
                other = next((sep for sep in (";", "\t", " ") if sep in cell.strip()), None)
                hint = (
                    f"; the separator must be ',' (this file seems to use {other!r})"
                    if other
                    else ""
                )
                raise DataError(
                    f"{path}: line {line}, column {j + 1}: {shown} is not a number{hint}"
                )
            values[i, j] = value
    return values


# --- image data -------------------------------------------------------------------------------

IMAGE_LAYOUTS = ("auto", "NHWC", "NCHW")
"""Layouts of a rank-4 image array; ``auto`` infers it from a channel axis of size 1, 3 or 4."""

PIXEL_RANGES = ("auto", "0-255", "0-1", "-1-1")
"""Value ranges of stored pixels, mapped linearly onto [-1, 1]; see :func:`load_images`."""

IMAGE_SOURCES = {"digits": 8, "digits16": 16}
"""Built-in image sets by name -> image size: scikit-learn's digits (:func:`digits`)."""

MAX_CLASSES = 10**6
"""The most classes a class-conditional model takes (``model.num_classes``; diffusers'
``UNet2DModel`` bounds ``num_class_embeds`` so): labels must lie in ``[0, MAX_CLASSES)``."""

_IMAGE_SHAPES = "(n, H, W), (n, C, H, W) or (n, H, W, C)"

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CHANNEL_SIZES = (1, 3, 4)


class ImageData(NamedTuple):
    """Images ready for scorelab, their labels, and what was done to them.

    Attributes:
        images: ``float32`` ``(n, C, H, W)`` in [-1, 1].
        labels: ``int64`` ``(n,)`` class labels, or ``None``.
        description: one line for the user: the source, the shape, the layout and how it was
            decided, and the scaling rule applied.
    """

    images: np.ndarray
    labels: np.ndarray | None
    description: str


def is_image_file(path) -> bool:
    """Whether ``path`` is image data for :func:`load_images`: a folder, an ``.npz``, or an
    ``.npy`` whose header declares rank 3 or 4 (a rank-2 ``.npy`` holds points ``(n, d)``).

    Raises:
        DataError: for an ``.npy`` whose header cannot be read.
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".npz":
        return True
    if path.suffix.lower() != ".npy" or not path.is_file():
        return False
    shape, _ = npy_header(path)
    return len(shape) in (3, 4)


def npy_header(path) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` that an ``.npy`` file's header declares, reading nothing else.

    Raises:
        DataError: for a header that cannot be read, or declares an impossible shape.
    """
    with open(check_file(path, ".npy file", DataError), "rb") as handle:
        return _npy_header(handle, path)


def image_shape(
    path, *, layout: str = "auto", array: str | None = None, labels: str | None = None
) -> tuple[int, int, int]:
    """``(C, H, W)``: the shape of one image that :func:`load_images` reads from ``path`` with
    these arguments, from the array's header or the first image file's (a folder is listed,
    one file is opened); no pixels are decoded, and the arguments and headers alone are
    checked.

    Raises:
        FileNotFoundError, DataError: as :func:`load_images`, for what the headers show.
    """
    path = _checked_source(path, layout, array, labels)
    if path.is_dir():
        files, _, _ = _folder_files(path)
        image, (width, height) = _open_image(files[0])
        with image:
            return len(_channel_mode(image, files[0])), height, width
    if _array_suffix(path) == ".npz":
        with _open_npz(path) as archive:
            name = _images_key(path, archive, array, labels)
            with _member(archive, path, name) as member:
                shape, _ = _npy_header(member, f"{path}[{name}]")
    else:
        shape, _ = npy_header(path)
    decided, _ = _layout(shape, layout, path)
    if decided == "grey":
        return 1, *shape[1:]
    return (shape[3], shape[1], shape[2]) if decided == "NHWC" else tuple(shape[1:])


def held_out_split(n: int, n_held_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed split of ``range(n)``: ``(train, held_out)`` index arrays.

    The held-out indices are the first ``n_held_out`` of ``numpy.random.default_rng(seed)``'s
    permutation of ``range(n)``, the training indices the rest (in that order). Either part
    may be empty (``n_held_out`` 0 or ``n``); a caller that needs both refuses that itself.

    Raises:
        ValueError: ``n`` or ``seed`` is not an integer ``>= 0``, or ``n_held_out`` is not an
            integer in ``[0, n]`` (``-1`` held out ``n - 1`` rows, ``n + 3`` left the
            training part silently empty), or ``n`` rows do not fit in memory.
    """
    check_int("n", n, 0)
    check_int("n_held_out", n_held_out, 0)
    check_int("seed", seed, 0)
    if n_held_out > n:
        raise ValueError(f"n_held_out: expected at most n = {n} rows, got {n_held_out}")
    check_memory("n", 8.0 * n, "split fewer rows")  # the int64 permutation
    order = np.random.default_rng(seed).permutation(n)
    return order[n_held_out:], order[:n_held_out]


def load_images(
    path,
    *,
    layout: str = "auto",
    pixel_range: str = "auto",
    array: str | None = None,
    labels: str | None = None,
) -> ImageData:
    r"""Load images from an ``.npy``/``.npz`` array or a folder of PNG/JPEG files, in [-1, 1].

    * **Arrays** ``(n, H, W, C)`` or ``(n, C, H, W)`` (``layout``; ``auto`` takes the axis of
      size 1, 3 or 4 as the channels and refuses a shape where both or neither qualify), or
      ``(n, H, W)`` grey. An ``.npz`` holds the images under the key ``array`` (or as its only
      array besides ``labels``) and optional integer labels under the key ``labels``.
    * **A folder** of ``.png``/``.jpg``/``.jpeg`` files (read by Pillow; names starting with
      ``.`` are skipped), or of sub-folders, one per class: then the labels are the classes'
      indices in sorted name order. Grey images give one channel, colour images three, images
      with transparency four; all must share size and channel count.

    Pixels are mapped linearly onto [-1, 1] from ``pixel_range``: ``0-255`` (integers, and
    every uint8 array or image file: :math:`x / 127.5 - 1`), ``0-1`` (:math:`2x - 1`) or
    ``-1-1`` (unchanged). ``auto`` takes ``0-255`` for integers (which must lie in it: 16-bit
    or negative integers are refused), and for floats the first of
    ``0-1``, ``-1-1``, ``0-255`` that holds every value; the rule taken is in the description.

    Sizes are checked against the available memory from the array headers (or the first
    image's) before anything is decoded.

    Args:
        path: an ``.npy`` or ``.npz`` file, or a folder.
        layout: one of :data:`IMAGE_LAYOUTS`.
        pixel_range: one of :data:`PIXEL_RANGES`.
        array: the ``.npz`` key of the images.
        labels: the ``.npz`` key of the labels, ``(n,)`` integers in ``[0, MAX_CLASSES)``.

    Returns:
        :class:`ImageData` with ``images`` ``(n, C, H, W)`` float32.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: one line naming the file and the remedy: an unreadable file, a missing or
            ambiguous key, the wrong rank, an ambiguous layout, NaN or infinite values, values
            outside the stated range, labels of the wrong length or type or not below
            :data:`MAX_CLASSES`, an empty folder, non-image files, folders inside a class
            folder, images of mixed sizes or channel counts, or more memory than available.
    """
    check_choice("data.pixel_range", pixel_range, PIXEL_RANGES, error=DataError)
    path = _checked_source(path, layout, array, labels)
    if path.is_dir():
        pixels, label_values, how = _read_folder(path)
        pixels, layout_used = pixels.transpose(0, 3, 1, 2), "image files"
    else:
        pixels, label_values, how = _read_arrays(path, array, labels)
        pixels, layout_used = _as_nchw(pixels, layout, path)
    pixels, rule = _to_signed_unit(pixels, pixel_range, path)
    if label_values is not None and len(label_values) != len(pixels):
        raise DataError(
            f"{path}: {len(label_values)} labels for {len(pixels)} images; give one per image"
        )
    n, channels, height, width = pixels.shape
    description = (
        f"{path}: {n} image{'s' if n != 1 else ''} of {channels}x{height}x{width} (C x H x W), "
        f"{layout_used}, {rule}{how}"
    )
    return ImageData(pixels, label_values, description)


def _npy_header(handle, name) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from an open ``.npy`` stream's header, reading nothing else."""
    try:
        version = np.lib.format.read_magic(handle)
        read = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read is None:
            raise ValueError(f"format version {version}; save it with numpy.save")
        shape, _, dtype = read(handle)
    except (ValueError, EOFError, OSError, SyntaxError) as error:
        message = first_line(error)  # numpy's may quote the whole header: cut it short
        message = message if len(message) <= 200 else f"{message[:200]}..."
        raise DataError(f"{name}: not a readable .npy array ({message})") from error
    # numpy takes (True, 2) and (2**70, 0) here, then fails reading the data ("an integer is
    # required", "Python int too large to convert to C long")
    if not all(type(size) is int and 0 <= size < 2**63 for size in shape):
        raise DataError(
            f"{name}: not a readable .npy array (its header declares shape "
            f"{reprlib.repr(shape)}); write "
            "it again with numpy.save"
        )
    return shape, dtype


def _read_npy_stream(handle, name, stored: int, remedy: str) -> np.ndarray:
    """The array of an ``.npy`` stream of ``stored`` bytes (a file, or a member of an ``.npz``),
    its header checked before numpy allocates it: a damaged or hostile header declaring 10**10
    rows was an 'out of memory' naming neither the file nor its shape, a truncated file
    numpy's 'cannot reshape'.

    Raises:
        DataError: naming ``name``: an unreadable header, data shorter than the header declares,
            a size beyond the available memory (with ``remedy``), or objects (pickles).
    """
    shape, dtype = _npy_header(handle, name)
    if not dtype.hasobject:  # numpy refuses objects (pickles) below, naming them
        declared = math.prod(shape) * dtype.itemsize
        held = stored - handle.tell()
        if declared > held >= 0 and all(size >= 0 for size in shape):
            raise DataError(
                f"{name}: truncated: its header declares shape {tuple(shape)} ({declared} bytes "
                f"of data) but the file holds {held}; write it again with numpy.save"
            )
        _check_size(name, shape, dtype, remedy)
    handle.seek(0)
    try:
        return np.lib.format.read_array(handle, allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise DataError(
            f"{name}: not a readable .npy array ({first_line(error)}); write it with numpy.save"
        ) from error


_FEWER = "use fewer or smaller images"


def _check_size(name, shape, dtype, remedy: str = _FEWER) -> None:
    """Refuse, before allocating, an array whose stored form and float32 copy (twice: the
    split) exceed the available memory."""
    count = float(np.prod(shape, dtype=np.float64))
    check_memory(
        f"data ({name}, shape {tuple(shape)})", count * (dtype.itemsize + 8), remedy, DataError
    )


def _checked_source(path, layout: str, array: str | None, labels: str | None) -> Path:
    """``path`` as a :class:`~pathlib.Path` of a folder or a regular file, with a known
    ``layout`` and no ``.npz`` keys for a folder or an ``.npy``, which have none."""
    check_choice("data.layout", layout, IMAGE_LAYOUTS, error=DataError)
    path = Path(path)
    if not path.is_dir():  # a pipe named .npz blocked the reader for ever
        check_file(path, "data file", DataError, "give an .npy or .npz file, or a folder")
    if array is None and labels is None:
        return path
    if path.is_dir():
        raise DataError(
            f"{path}: data.array and data.labels name .npz keys; a folder's labels are its "
            "sub-folders"
        )
    if path.suffix.lower() == ".npy":
        raise DataError(
            f"{path}: data.array and data.labels name keys of an .npz; an .npy holds one "
            "array (save images and labels with numpy.savez)"
        )
    return path


def _read_arrays(path: Path, key: str | None, labels_key: str | None):
    """``(pixels, labels, description suffix)`` of an ``.npy`` or ``.npz`` file."""
    if _array_suffix(path) == ".npy":
        with open(path, "rb") as handle:
            return _read_npy_stream(handle, path, path.stat().st_size, _FEWER), None, ""
    with _open_npz(path) as archive:
        key = _images_key(path, archive, key, labels_key)

        def read(name):
            with _member(archive, path, name) as handle:
                stored = archive.getinfo(f"{name}.npy").file_size
                return _read_npy_stream(handle, f"{path}[{name}]", stored, _FEWER)

        pixels = read(key)
        if labels_key is None:
            return pixels, None, ""
        label_values = read(labels_key)
    if label_values.ndim != 1 or not np.issubdtype(label_values.dtype, np.integer):
        raise DataError(
            f"{path}[{labels_key}]: labels must be integers of shape (n,), got "
            f"{label_values.dtype} of shape {label_values.shape}"
        )
    if label_values.size and label_values.min() < 0:
        raise DataError(f"{path}[{labels_key}]: labels must be >= 0, got {label_values.min()}")
    # Compared before any cast: uint64 2**64 - 1 wrapped to -1 in int64. A label of 2**40
    # loaded, and then 'set num_classes >= 2**40 + 1' was refused as above the cap.
    if label_values.size and label_values.max() >= MAX_CLASSES:
        raise DataError(
            f"{path}[{labels_key}]: labels must be class indices below {MAX_CLASSES} (the most "
            f"classes model.num_classes takes), got {label_values.max()}; renumber the K "
            "classes 0..K-1"
        )
    return (
        pixels,
        label_values.astype(np.int64),
        f", labels {labels_key!r} ({_count(label_values)})",
    )


def _array_suffix(path: Path) -> str:
    """``.npy`` or ``.npz``: the kind of image array file ``path`` is, by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: unsupported file type {suffix!r}; accepted: .npy, .npz, a folder")
    return suffix


def _open_npz(path: Path) -> zipfile.ZipFile:
    """The ``.npz`` archive at ``path``, open, or one line naming it."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from error


@contextlib.contextmanager
def _member(archive: zipfile.ZipFile, path: Path, name: str):
    """The ``.npz`` member ``name``, open; zipfile's own errors (a bad CRC, an encrypted member,
    an unknown compression method) become one line naming it."""
    try:
        with archive.open(f"{name}.npy") as handle:
            yield handle
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error) as error:
        raise DataError(
            f"{path}[{name}]: not a readable .npz member ({first_line(error)}); write "
            "the archive again with numpy.savez"
        ) from error


def _images_key(path: Path, archive: zipfile.ZipFile, key: str | None, labels_key: str | None):
    """The key of the images in the ``.npz`` ``archive``: ``key``, or its only array besides
    ``labels_key``; either key missing, or no or several candidates, is refused."""
    names = [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
    if labels_key is not None and labels_key not in names:
        raise DataError(f"{path}: no labels key {labels_key!r}; keys: {', '.join(names) or 'none'}")
    if key is not None:
        if key not in names:
            raise DataError(f"{path}: no array {key!r}; keys: {', '.join(names) or 'none'}")
        return key
    candidates = [name for name in names if name != labels_key]
    if not candidates:  # "holds 0 arrays (none); name the images with data.array"
        raise DataError(f"{path}: holds no images; save them with numpy.savez")
    if len(candidates) != 1:
        raise DataError(
            f"{path}: holds {len(candidates)} arrays ({', '.join(candidates)}); save "
            "the one to read in a file of its own (numpy.save), or name it (scorelab train: "
            "--set data.array=KEY; scorelab evaluate and likelihood: --array KEY)"
        )
    return candidates[0]


def _count(labels: np.ndarray) -> str:
    """How many classes ``labels`` hold, for the description: ``10 classes, 0..9``, or, when
    some indices are unused, the distinct labels and the ``model.num_classes`` they need."""
    if not labels.size:
        return "no labels"
    distinct, top = len(np.unique(labels)), int(labels.max())
    if distinct == top + 1:
        return f"{distinct} classes, 0..{top}"
    return f"{distinct} distinct labels in 0..{top}: model.num_classes must be at least {top + 1}"


def _as_nchw(pixels: np.ndarray, layout: str, name) -> tuple[np.ndarray, str]:
    """``(pixels (n, C, H, W), the layout used and how it was decided)``."""
    layout, said = _layout(pixels.shape, layout, name)
    if layout == "grey":
        return pixels[:, None], said
    return (pixels.transpose(0, 3, 1, 2) if layout == "NHWC" else pixels), said


def _layout(shape: tuple[int, ...], layout: str, name) -> tuple[str, str]:
    """``(grey, NHWC or NCHW, and how it was said)`` for an image array of ``shape``: the
    stated ``layout``, or the one ``auto`` infers (:func:`load_images`)."""
    if len(shape) == 3:
        if layout != "auto":
            raise DataError(
                f"{name}: shape {shape} has no channel axis, so layout {layout!r} does not apply; "
                "a rank-3 array is grey (n, H, W): leave data.layout = 'auto'"
            )
        return "grey", "grey (n, H, W)"
    if len(shape) != 4:
        points = (  # an .npz of points was read as images: say where points go
            "; points (n, d) are read from a .npy (numpy.save) or .csv file"
            if len(shape) == 2 and str(name).lower().endswith(".npz")
            else ""
        )
        raise DataError(
            f"{name}: expected images of shape {_IMAGE_SHAPES}, got shape {shape}{points}"
        )
    how = "stated"
    if layout == "auto":
        last, first = shape[3] in _CHANNEL_SIZES, shape[1] in _CHANNEL_SIZES
        if last == first:
            raise DataError(
                f"{name}: cannot tell the channel axis of shape {shape}; state data.layout = "
                "'NHWC' or 'NCHW' (scorelab evaluate: --layout)"
            )
        layout, how = ("NHWC" if last else "NCHW"), "inferred: the channel axis has size 1, 3 or 4"
    return layout, f"layout {layout} ({how})"


def _to_signed_unit(pixels: np.ndarray, pixel_range: str, name) -> tuple[np.ndarray, str]:
    """``(float32 pixels in [-1, 1], the rule applied)``; see :func:`load_images`."""
    if pixels.shape[0] == 0 or 0 in pixels.shape:
        raise DataError(f"{name}: no images (shape {pixels.shape})")
    if pixels.dtype == np.bool_ or not (
        np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)
    ):
        raise DataError(
            f"{name}: expected integer or float pixels, got dtype {pixels.dtype}; convert them "
            "to uint8 in [0, 255] or to floats"
        )
    if np.issubdtype(pixels.dtype, np.floating):  # before the cast: 1e300 is finite there
        _check_finite_images(pixels, name)
    low, high = float(pixels.min()), float(pixels.max())
    ranges = {"0-255": (0.0, 255.0), "0-1": (0.0, 1.0), "-1-1": (-1.0, 1.0)}
    if pixel_range == "auto":
        if np.issubdtype(pixels.dtype, np.integer):
            # Not 'outside data.pixel_range 0-255; state the range they use': the range was
            # not stated, and no accepted range holds 16-bit or negative integers.
            if not _within(low, high, *ranges["0-255"]):
                raise DataError(
                    f"{name}: {pixels.dtype} pixel values span [{low:g}, {high:g}], but integer "
                    "pixels must lie in [0, 255]; convert them to uint8, or to floats in [0, 1] "
                    "or [-1, 1]"
                )
            pixel_range = "0-255"
        else:
            fitting = [r for r in ("0-1", "-1-1", "0-255") if _within(low, high, *ranges[r])]
            if not fitting:  # no stated range holds them either
                raise DataError(
                    f"{name}: pixel values span [{low:g}, {high:g}], none of the ranges "
                    "data.pixel_range accepts ([0, 1], [-1, 1], [0, 255]); rescale them into one"
                )
            pixel_range = fitting[0]
    lower, upper = ranges[pixel_range]
    if pixel_range == "0-255" and pixels.dtype.kind == "f" and high <= 1.0:
        # Float pixels within [0, 1] stated 0-255 became images within 0.008 of -1 (black).
        raise DataError(
            f"{name}: float pixel values span [{low:g}, {high:g}], inside [0, 1], but "
            "data.pixel_range states 0-255, which maps them all to within 0.008 of -1; set "
            "data.pixel_range to 0-1 (or auto), or scale them to [0, 255]"
        )
    if not _within(low, high, lower, upper):
        raise DataError(
            f"{name}: pixel values span [{low:g}, {high:g}], outside the stated data.pixel_range "
            f"{pixel_range!r}; rescale them into [{lower:g}, {upper:g}], or set data.pixel_range "
            "to the range they use (0-255, 0-1 or -1-1) or to auto"
        )
    values = (pixels.astype(np.float32) - lower) * np.float32(2.0 / (upper - lower)) - 1.0
    rule = {"0-255": "x / 127.5 - 1", "0-1": "2x - 1", "-1-1": "x"}[pixel_range]
    return values, f"{pixels.dtype} in [{lower:g}, {upper:g}] mapped to [-1, 1] by {rule}"


def _within(low: float, high: float, lower: float, upper: float) -> bool:
    return lower <= low and high <= upper


def _check_finite_images(pixels: np.ndarray, name) -> None:
    """Refuse float images ``(n, ...)`` holding NaN or inf, naming the first such image (not
    'row': points' words), float16's overflow past 65504, and a remedy."""
    bad = _bad_rows(np.isfinite(pixels))
    if not bad.size:
        return
    nan, inf = bool(np.isnan(pixels).any()), bool(np.isinf(pixels).any())
    what = "NaN or inf" if nan and inf else ("NaN" if nan else "inf")
    if inf and pixels.dtype == np.float16:
        remedy = (
            "float16 overflow? float16 holds at most 65504: scale the pixels into [0, 1] or "
            "[-1, 1] before the cast to float16, or save them as float32"
        )
    else:
        remedy = "replace or drop those images"
    raise DataError(f"{name}: {bad.size} image(s) hold {what} (first at image {bad[0]}); {remedy}")


def _read_folder(path: Path):
    """``(pixels (n, H, W, C) uint8, labels or None, description suffix)`` of an image folder."""
    from PIL import ImageOps

    files, label_values, how = _folder_files(path)
    first, size = _open_image(files[0])
    with first:  # the header only: size and mode
        mode = _channel_mode(first, files[0])
    channels = len(mode)
    _check_size(path, (len(files), size[1], size[0], channels), np.dtype(np.uint8))
    pixels = np.empty((len(files), size[1], size[0], channels), np.uint8)
    for i, file in enumerate(files):
        image, shown = _open_image(file)
        with image:
            if shown != size:
                raise DataError(
                    f"{file}: {shown[0]}x{shown[1]} pixels as shown (EXIF orientation applied), "
                    f"but {files[0].name} is {size[0]}x{size[1]}; resize the images to one size"
                )
            this_mode = _channel_mode(image, file)
            if this_mode != mode:
                raise DataError(
                    f"{file}: {len(this_mode)} channel(s), but {files[0].name} has {channels}; "
                    "convert the images to one mode (grey, RGB or RGBA)"
                )
            try:  # as every viewer shows it: a camera's EXIF orientation turned the pixels
                upright = ImageOps.exif_transpose(image).convert(mode)
                pixels[i] = np.asarray(upright).reshape(size[1], size[0], channels)
            except (OSError, ValueError, SyntaxError) as error:
                raise DataError(
                    f"{file}: not a readable image ({first_line(error)}); replace it or remove "
                    "it from the folder"
                ) from error
    return pixels, label_values, how


def _folder_files(path: Path):
    """``(the image files in reading order, labels or None, description suffix)`` of an image
    folder, its names checked (:func:`load_images`); no file is opened."""
    entries = sorted(entry for entry in path.iterdir() if not entry.name.startswith("."))
    for entry in entries:
        _check_plain_name(entry)
    classes = [entry for entry in entries if entry.is_dir()]
    # Files beside sub-folders are named first: a run directory (config.json, checkpoints/)
    # was said to hold 'both image files and sub-folders'.
    _check_image_names([entry for entry in entries if not entry.is_dir()])
    if classes and len(classes) != len(entries):
        raise DataError(
            f"{path}: holds both image files and sub-folders; put every image in a class "
            "sub-folder, or none"
        )
    if classes:
        files, labels = [], []
        for index, folder in enumerate(classes):
            inside = sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
            if not inside:
                raise DataError(f"{folder}: empty class folder; add images or remove it")
            nested = next((entry for entry in inside if entry.is_dir()), None)
            if nested is not None:  # was 'not an image file'
                raise DataError(
                    f"{nested}: a folder inside the class folder {folder.name}: only one level "
                    "of class sub-folders is read; move its images into a class folder of "
                    "their own, or remove it"
                )
            files += inside
            labels += [index] * len(inside)
        label_values = np.asarray(labels, np.int64)
        how = (  # the indices are the sorted names' places: said, as --class takes them
            f", labels 0..{len(classes) - 1} from {len(classes)} class sub-folders ("
            + ", ".join(c.name for c in classes[:8])
            + (", ..." if len(classes) > 8 else "")
            + ") in sorted name order"
        )
    else:
        files, label_values, how = entries, None, ""
    if not files:
        raise DataError(f"{path}: empty folder; it must hold PNG or JPEG images")
    _check_image_names(files)
    return files, label_values, how


def _open_image(file):
    """``(image, its (W, H) as shown)``, the header read and checked, the pixels not."""
    from PIL import Image

    # A fifo blocked Pillow's open() for ever.
    check_file(file, "PNG or JPEG image", DataError, "keep only image files in the folder")
    image = None
    try:
        with warnings.catch_warnings():  # the sizes are checked here, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
            # The suffix is not the format: a GIF, TIFF or WebP named .png was read (a LAB
            # TIFF in wrong colours), and an animation as its first frame, without a word.
            frames = getattr(image, "n_frames", 1) if image.format != "MPO" else 1
            # EXIF and text chunks are read here: a damaged one, or one inflating past
            # Pillow's limit, was a message naming no file.
            shown = _shown_size(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        if image is not None:
            image.close()
        raise DataError(
            f"{file}: not a readable PNG or JPEG image ({first_line(error)}); replace it or "
            "remove it from the folder"
        ) from error
    if image.format not in _IMAGE_FORMATS or frames > 1:
        what = f"{image.format} format" if frames == 1 else f"an animation of {frames} frames"
        image.close()
        raise DataError(
            f"{file}: {what}, not a still PNG or JPEG; convert it, or remove it from the folder"
        )
    return image, shown


_IMAGE_FORMATS = ("PNG", "JPEG", "MPO")  # MPO: a camera's JPEG with a preview frame
_ORIENTATION = 0x0112  # the EXIF tag; its values 5-8 turn the image a quarter


def _shown_size(image) -> tuple[int, int]:
    """``(W, H)`` of ``image`` as viewers show it, its EXIF orientation applied (header only)."""
    width, height = image.size
    quarter = image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
    return (height, width) if quarter else (width, height)


def _check_plain_name(entry: Path) -> None:
    """Refuse an image or class folder whose name holds a control character: a line break or
    an escape split or coloured every message naming it (and the data's description)."""
    if any(ord(char) < 32 or ord(char) == 127 for char in entry.name):
        raise DataError(
            f"{entry.parent}: {entry.name!r} has a control character (a line break, an escape) "
            "in its name; rename it"
        )


def _check_image_names(files) -> None:
    """Refuse the first of ``files`` that is not an image file by its name: a folder, or a
    suffix other than :data:`_IMAGE_SUFFIXES`, or a name with a control character."""
    for file in files:
        _check_plain_name(file)
        if file.is_dir() or file.suffix.lower() not in _IMAGE_SUFFIXES:
            raise DataError(
                f"{file}: not an image file (accepted: {', '.join(_IMAGE_SUFFIXES)}); remove it "
                "from the folder, or give a folder that holds only images"
            )


def _channel_mode(image, file) -> str:
    """The Pillow mode an image is read in: ``L`` (grey), ``RGB``, or ``RGBA`` (transparency)."""
    if image.mode in ("I", "I;16", "I;16B", "F"):
        raise DataError(
            f"{file}: {image.mode} pixels (16-bit or float); save the images with 8 bits per "
            "channel"
        )
    if image.mode in ("1", "L"):
        return "L"
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return "RGBA"
    return "RGB"


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
        ValueError: an unknown ``split``, or a ``size`` that is not the integer 8 or 16
            (``16.0`` too).
    """
    check_choice("split", split, ("train", "test", "all"))
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):  # 16.0 == 16
        accepted = ", ".join(map(str, DIGITS_SIZES))
        raise ValueError(f"size: expected an integer, one of {accepted}; got {size!r}")
    check_choice("size", size, DIGITS_SIZES)
    images, labels = _digits_all(size)
    if split == "all":
        return images.copy(), labels.copy()
    train, test = held_out_split(len(labels), DIGITS_HELD_OUT, seed=0)
    chosen = test if split == "test" else train
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
                    Image.fromarray(image, mode="F").resize((size, size), Image.Resampling.BICUBIC)
                )
                for image in images
            ]
        )
        images = np.clip(images, -1.0, 1.0).astype(np.float32)
    return images[:, None], bunch.target.astype(np.int64)
