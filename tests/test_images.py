"""Images end to end: loading arrays and folders, every listed error as one CLI line with exit
status 2, samplers on image-shaped states against a Gaussian's closed form, and a tiny
train -> sample -> grid -> plot -> resume on the built-in digits."""

import json
import os
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from scorelab import samplers
from scorelab.cli import main
from scorelab.data import DataError, held_out_split, is_image_file, load_images

_RNG = np.random.default_rng(0)
_UINT8 = _RNG.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)  # NHWC, H != W catches swaps
_EXPECTED = _UINT8.transpose(0, 3, 1, 2) / 127.5 - 1.0  # NCHW in [-1, 1]


# --- loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stored, layout",
    [
        (_UINT8, "auto"),  # NHWC inferred: only the last axis has size 1, 3 or 4
        (_UINT8.transpose(0, 3, 1, 2), "auto"),  # NCHW inferred
        (_UINT8.transpose(0, 3, 1, 2), "NCHW"),  # stated
        (_UINT8.astype(np.float32) / 255.0, "auto"),  # float in [0, 1]: 2x - 1
        (_UINT8.astype(np.float64) / 127.5 - 1.0, "NHWC"),  # float in [-1, 1]: unchanged
    ],
)
def test_npy_images_in_either_layout_and_dtype_load_as_nchw_in_signed_unit_range(
    tmp_path, stored, layout
):
    np.save(tmp_path / "x.npy", stored)
    assert is_image_file(tmp_path / "x.npy")
    loaded = load_images(tmp_path / "x.npy", layout=layout)
    assert loaded.images.dtype == np.float32 and loaded.labels is None
    np.testing.assert_allclose(loaded.images, _EXPECTED, atol=1e-6)
    assert ("inferred" in loaded.description) == (layout == "auto")


def test_grey_rank_3_and_the_npz_key_with_labels(tmp_path):
    grey = _UINT8[..., 0]
    np.save(tmp_path / "grey.npy", grey)
    np.testing.assert_allclose(
        load_images(tmp_path / "grey.npy").images, grey[:, None] / 127.5 - 1.0, atol=1e-6
    )
    labels = np.array([3, 1, 4, 1, 5])
    np.savez(tmp_path / "set.npz", train=_UINT8, extra=_UINT8[:2], y=labels)
    loaded = load_images(tmp_path / "set.npz", array="train", labels="y")
    np.testing.assert_allclose(loaded.images, _EXPECTED, atol=1e-6)
    np.testing.assert_array_equal(loaded.labels, labels)
    np.savez(tmp_path / "one.npz", images=_UINT8, y=labels)  # the only array besides labels
    np.testing.assert_allclose(
        load_images(tmp_path / "one.npz", labels="y").images, _EXPECTED, atol=1e-6
    )
    np.save(tmp_path / "points.npy", np.zeros((4, 2)))
    assert not is_image_file(tmp_path / "points.npy")


def test_a_folder_with_class_sub_folders_gives_labels_in_sorted_name_order(tmp_path):
    for folder, rows in [("cat", [0, 1, 2]), ("bird", [3, 4])]:
        (tmp_path / "set" / folder).mkdir(parents=True)
        for row in rows:
            Image.fromarray(_UINT8[row]).save(tmp_path / "set" / folder / f"{row}.png")
    (tmp_path / "set" / ".DS_Store").write_text("hidden files are skipped")
    loaded = load_images(tmp_path / "set")
    np.testing.assert_array_equal(loaded.labels, [0, 0, 1, 1, 1])  # bird < cat
    np.testing.assert_allclose(loaded.images, _EXPECTED[[3, 4, 0, 1, 2]], atol=1e-6)
    assert "2 class sub-folders (bird, cat)" in loaded.description


def test_image_shape_reads_the_shape_load_images_gives_from_headers_alone(tmp_path, monkeypatch):
    """:func:`scorelab.data.image_shape` is ``load_images(...).images.shape[1:]`` for every
    layout, key and folder, with nothing decoded (the array readers fail if called)."""
    import scorelab.data as data

    labels = np.arange(5)
    np.save(tmp_path / "nhwc.npy", _UINT8)
    np.save(tmp_path / "nchw.npy", _UINT8.transpose(0, 3, 1, 2))
    np.save(tmp_path / "grey.npy", _UINT8[..., 0])
    square = np.concatenate([_UINT8[:, :3, :3], _UINT8[:, :3, :3, :1]], axis=3)  # (5, 3, 3, 4)
    np.save(tmp_path / "square.npy", square)  # axes 1 and 3 both channel sizes: stated
    np.savez(tmp_path / "set.npz", train=_UINT8, extra=_UINT8[:2], y=labels)
    np.savez(tmp_path / "one.npz", images=_UINT8.transpose(0, 3, 1, 2), y=labels)
    (tmp_path / "folder" / "a").mkdir(parents=True)
    (tmp_path / "folder" / "b").mkdir()
    for row in range(3):
        rgba = Image.fromarray(_UINT8[row]).convert("RGBA")
        rgba.save(tmp_path / "folder" / "ab"[row % 2] / f"{row}.png")
    os.mkfifo(tmp_path / "pipe.npz")
    os.mkfifo(tmp_path / "pipe.npy")
    cases = [
        ("nhwc.npy", {}),
        ("nchw.npy", {}),
        ("nchw.npy", {"layout": "NCHW"}),
        ("grey.npy", {}),
        ("square.npy", {"layout": "NHWC"}),
        ("square.npy", {"layout": "NCHW"}),
        ("set.npz", {"array": "train", "labels": "y"}),
        ("one.npz", {"labels": "y"}),
        ("folder", {}),
    ]
    expected = [load_images(tmp_path / name, **kwargs).images.shape[1:] for name, kwargs in cases]
    assert expected[-1] == (4, 6, 7) and expected[4:6] == [(4, 3, 3), (3, 3, 4)]
    for name in ("_read_npy_stream", "_read_folder"):
        monkeypatch.setattr(data, name, lambda *a, **k: pytest.fail("pixels were read"))
    for (name, kwargs), shape in zip(cases, expected):
        assert data.image_shape(tmp_path / name, **kwargs) == shape, (name, kwargs)
    for name, kwargs, words in [
        ("square.npy", {}, "state data.layout"),
        ("set.npz", {"labels": "y"}, "holds 2 arrays (train, extra)"),
        ("set.npz", {"array": "test"}, "no array 'test'; keys: train, extra, y"),
        ("grey.npy", {"layout": "NHWC"}, "has no channel axis"),
        ("missing.npy", {}, "data file not found"),
        ("pipe.npz", {}, "pipe.npz: a special file (a device or a pipe)"),
        ("pipe.npy", {}, "pipe.npy: a special file (a device or a pipe)"),
        ("folder", {"labels": "y"}, "a folder's labels are its sub-folders"),
        ("nhwc.npy", {"array": "x"}, "an .npy holds one array"),
    ]:
        error = FileNotFoundError if name == "missing.npy" else DataError
        with pytest.raises(error, match=re.escape(words)):
            data.image_shape(tmp_path / name, **kwargs)


def test_the_held_out_split_is_fixed_by_seed_and_disjoint():
    train, test = held_out_split(50, 10, seed=3)
    again_train, again_test = held_out_split(50, 10, seed=3)
    np.testing.assert_array_equal(test, again_test)
    np.testing.assert_array_equal(train, again_train)
    assert sorted([*train, *test]) == list(range(50)) and len(test) == 10
    assert not np.array_equal(held_out_split(50, 10, seed=4)[1], test)


def _write_bad(tmp_path, case):
    """A data source of ``case`` and the words its one-line error must contain."""
    path = tmp_path / case
    if case == "mixed_sizes":
        path.mkdir()
        Image.fromarray(_UINT8[0]).save(path / "a.png")
        Image.fromarray(_UINT8[1, :5]).save(path / "b.png")
        return path, "resize the images to one size"
    if case == "non_image":
        path.mkdir()
        Image.fromarray(_UINT8[0]).save(path / "a.png")
        (path / "notes.txt").write_text("not an image")
        return path, "not an image file"
    if case == "broken_png":
        path.mkdir()
        (path / "a.png").write_bytes(b"not a png at all")
        return path, "not a readable PNG or JPEG"
    if case == "damaged_png":  # a flipped pixel byte: Pillow's "broken data stream"
        path.mkdir()
        Image.fromarray(_UINT8[0]).save(path / "b.png")
        data = bytearray((path / "b.png").read_bytes())
        data[data.find(b"IDAT") + 8] ^= 0xFF
        (path / "a.png").write_bytes(bytes(data))  # the first: its header read for the size
        return path, "a.png: not a readable PNG or JPEG image"
    if case == "text_chunk_bomb":  # Pillow refuses text inflating past its limit, naming no file
        from PIL import PngImagePlugin

        path.mkdir()
        info = PngImagePlugin.PngInfo()
        info.add_text("notes", "a" * (2 * PngImagePlugin.MAX_TEXT_CHUNK), zip=True)
        Image.fromarray(_UINT8[0]).save(path / "a.png", pnginfo=info)
        return path, "a.png: not a readable PNG or JPEG image (Decompressed data too large"
    if case == "control_character_name":  # a line break split every message naming it
        (path / "a\nb").mkdir(parents=True)
        Image.fromarray(_UINT8[0]).save(path / "a\nb" / "0.png")
        return path, "'a\\nb' has a control character"
    if case == "empty":
        path.mkdir()
        return path, "empty folder"
    if case == "disguised_gif":  # read by its suffix, a GIF (or a LAB TIFF) trained
        path.mkdir()
        Image.fromarray(_UINT8[0]).save(path / "a.png")
        Image.fromarray(_UINT8[1]).save(path / "z.png", format="GIF")
        return path, "z.png: GIF format, not a still PNG or JPEG"
    if case == "animation":  # an animated PNG trained as its first frame
        path.mkdir()
        Image.fromarray(_UINT8[0]).save(path / "a.png")
        frames = [Image.fromarray(_UINT8[i]) for i in (1, 2)]
        frames[0].save(path / "z.png", save_all=True, append_images=frames[1:])
        return path, "z.png: an animation of 2 frames"
    if case == "fifo":  # Pillow's open() of a fifo waited for a writer for ever
        path.mkdir()
        Image.fromarray(_UINT8[0]).save(path / "a.png")
        os.mkfifo(path / "z.png")
        return path, "z.png: a special file (a device or a pipe), not a PNG or JPEG image"
    if case in ("pipe_npz", "pipe_npy"):  # a pipe named .npz blocked the reader for ever
        path = path.with_suffix(f".{case[-3:]}")
        os.mkfifo(path)
        return path, "a special file (a device or a pipe), not a data file"
    if case == "wrong_rank":
        np.savez(path.with_suffix(".npz"), images=np.zeros((2, 3, 4, 4, 4)))
        return path.with_suffix(".npz"), "expected images of shape"
    if case == "nan":
        images = _UINT8.astype(np.float32) / 255.0
        images[2, 1, 1, 0] = np.nan
        np.save(path.with_suffix(".npy"), images)
        return path.with_suffix(".npy"), "1 image(s) hold NaN (first at image 2)"
    if case == "labels_length":
        np.savez(path.with_suffix(".npz"), x=_UINT8, y=np.arange(4))
        return path.with_suffix(".npz"), "4 labels for 5 images"
    if case == "labels_uint64":  # 2**64 - 1 wrapped to -1, then "expected integers >= 0"
        labels = np.array([0, 1, 2, 3, 2**64 - 1], np.uint64)
        np.savez(path.with_suffix(".npz"), x=_UINT8, y=labels)
        return path.with_suffix(".npz"), "npz[y]: labels must be class indices below 1000000"
    if case == "no_labels_key":  # it ended "keys: " with nothing after it
        np.savez(path.with_suffix(".npz"))
        return path.with_suffix(".npz"), "no labels key 'y'; keys: none"
    if case == "ambiguous":
        np.save(path.with_suffix(".npy"), np.zeros((2, 3, 4, 3), np.uint8))
        return path.with_suffix(".npy"), "state data.layout"
    if case == "several_arrays":
        np.savez(path.with_suffix(".npz"), a=_UINT8, b=_UINT8)
        return path.with_suffix(".npz"), "save the one to read in a file of its own"
    if case == "no_arrays":
        np.savez(path.with_suffix(".npz"))
        return path.with_suffix(".npz"), "holds no images; save them with numpy.savez"
    if case == "out_of_range":
        np.save(path.with_suffix(".npy"), _UINT8.astype(np.float32) * 2.0)
        return path.with_suffix(".npy"), "none of the ranges data.pixel_range accepts"
    if case == "huge_header":
        path = path.with_suffix(".npy")
        shape = (10**5, 3, 1024, 1024)  # 315 GB declared, and held (a sparse file)
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(
                handle, {"descr": "|u1", "fortran_order": False, "shape": shape}
            )
            handle.truncate(handle.tell() + np.prod(shape))
        return path, "of memory"
    if case == "truncated":
        np.save(path.with_suffix(".npy"), _UINT8)
        data = path.with_suffix(".npy").read_bytes()
        path.with_suffix(".npy").write_bytes(data[: len(data) // 2])
        return path.with_suffix(".npy"), "truncated: its header declares shape (5, 6, 7, 3)"
    raise AssertionError(case)


_BAD_CASES = [
    "mixed_sizes",
    "non_image",
    "broken_png",
    "damaged_png",
    "text_chunk_bomb",
    "control_character_name",
    "empty",
    "fifo",
    "pipe_npz",
    "pipe_npy",
    "disguised_gif",
    "animation",
    "wrong_rank",
    "nan",
    "labels_length",
    "labels_uint64",
    "no_labels_key",
    "ambiguous",
    "several_arrays",
    "no_arrays",
    "out_of_range",
    "huge_header",
    "truncated",
]


_LABELLED_CASES = ("labels_length", "labels_uint64", "no_labels_key")


@pytest.mark.parametrize("case", _BAD_CASES)
def test_bad_image_data_is_one_line_and_exit_status_2(tmp_path, capsys, case):
    source, words = _write_bad(tmp_path, case)
    with pytest.raises(DataError, match=re.escape(words)):
        load_images(source, labels="y" if case in _LABELLED_CASES else None)
    flags = ["--set", 'data.labels="y"'] if case in _LABELLED_CASES else []
    argv = ["train", "--data", str(source), "--steps", "1", "--out", str(tmp_path / "run"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scorelab train: error: ") and words in err
    assert not (tmp_path / "run").exists()


def test_image_fields_on_points_and_hflip_on_points_are_refused(tmp_path, capsys):
    np.save(tmp_path / "points.npy", np.zeros((10, 2), np.float32))
    cases = [
        (tmp_path / "points.npy", 'data.layout="NHWC"', "data.layout: applies to images"),
        (tmp_path / "points.npy", "data.hflip=true", "data.hflip: applies to images"),
        ("digits", 'data.pixel_range="0-1"', "data.pixel_range: applies to image files"),
        ("digits", "data.held_out=0.5", "data.held_out: digits has a fixed held-out split"),
    ]
    for source, setting, words in cases:
        argv = ["train", "--data", str(source), "--set", setting, "--steps", "1"]
        assert main([*argv, "--out", str(tmp_path / "run")]) == 2
        assert words in capsys.readouterr().err
    from scorelab.training import TrainConfig, train

    with pytest.raises(DataError, match="data.hflip: flips images"):
        train(jax.random.key(0), None, None, np.zeros((4, 2)), TrainConfig(steps=1), hflip=True)


@pytest.mark.parametrize(
    ("source", "setting", "words"),
    [
        ("three.npy", "data.held_out=0.1", "the held-out part of 3 images"),
        ("three.npy", "data.held_out=0.9", "the training part of 3 images"),
        ("digits", "data.n=64", "data.n: the number of points drawn"),
        ("three.npy", "data.n=64", "data.n: the number of points drawn"),
        ("points.npy", "data.n=64", "data.n: the number of points drawn"),
        ("digits", "data.seed=3", "data.seed: seeds a built-in target's draw"),
        ("three.npy", "data.seed=3", "data.seed: seeds a built-in target's draw"),
        ("points.npy", "data.seed=3", "data.seed: seeds a built-in target's draw"),
        ("seed_mixture", "data.hflip=true", "data.hflip: applies to images; seed_mixture"),
        ("two_moons", "data.held_out=0.5", "data.held_out: applies to images; two_moons"),
        ("digits_mixture", "data.layout=NHWC", "data.layout: applies to images"),
        ("folder", "data.layout=NCHW", "data.layout: applies to an array file; "),
    ],
)
def test_data_fields_that_would_be_ignored_or_leave_a_part_empty_are_refused(
    source, setting, words, tmp_path, capsys
):
    """held_out = 0.1 of 3 images rounded to none held out, and ``data.n`` on a data set that
    is used whole, ``data.seed`` on one used whole without a held-out split, or an image
    field on a built-in target or toy set, or a layout for a folder, was ignored: each
    trained, exit 0, on other data than asked for."""
    np.save(tmp_path / "three.npy", np.zeros((3, 1, 8, 8), np.uint8))
    np.save(tmp_path / "points.npy", np.zeros((10, 2), np.float32))
    (tmp_path / "folder").mkdir()  # a layout was ignored: image files have their own
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "folder" / f"{i}.png")
    path = str(tmp_path / source) if source in ("three.npy", "points.npy", "folder") else source
    out = tmp_path / "run"
    assert main(["train", "--data", path, "--set", setting, "--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()


class _Probe(eqx.Module):
    """A "model" whose one SGD step on ``loss = sum(w * x)`` at rate 1 records the batch mean:
    ``w_1 = w_0 - mean(x)``."""

    w: jax.Array


def _batch_mean_after_one_step(data, hflip):
    from scorelab.training import TrainConfig, train

    config = TrainConfig(steps=1, optimizer="sgd", learning_rate=1.0, batch_size=None)
    model = _Probe(jnp.zeros(data.shape[1:]))
    result = train(
        jax.random.key(0),
        model,
        lambda key, m, x: jnp.sum(m.w * x),
        data,
        config,
        hflip=hflip,
        progress=False,
    )
    return -np.asarray(result.model.w, np.float64)


def test_hflip_mirrors_each_example_with_probability_one_half_and_only_when_asked():
    """2000 copies of the image [0, 1] (1 x 1 x 2): the batch mean's right pixel is the
    fraction left unflipped, 1/2 within 4 standard errors sqrt(1/4 / 2000); without hflip the
    batch is the data, and data symmetric under the mirror give the same step either way."""
    n = 2000
    image = np.array([[[0.0, 1.0]]], np.float32)
    data = np.repeat(image[None], n, axis=0)
    unflipped = _batch_mean_after_one_step(data, hflip=True)[0, 0, 1]
    assert abs(unflipped - 0.5) < 4 * np.sqrt(0.25 / n)
    # float32's mean of 2000 ones is 1 to a rounding error
    np.testing.assert_allclose(_batch_mean_after_one_step(data, hflip=False), image, rtol=1e-6)
    symmetric = np.repeat(np.array([[[0.25, 0.25]]], np.float32)[None], n, axis=0)
    np.testing.assert_array_equal(
        _batch_mean_after_one_step(symmetric, hflip=True),
        _batch_mean_after_one_step(symmetric, hflip=False),
    )


# --- samplers on image states --------------------------------------------------------------------

_SHAPE = (1, 8, 8)
_MEAN = jnp.asarray(np.random.default_rng(1).uniform(-0.5, 0.5, _SHAPE), jnp.float32)
_VARIANCE = jnp.asarray(np.random.default_rng(2).uniform(0.25, 1.0, _SHAPE), jnp.float32)


def _gaussian_score(x, sigma):
    r"""The exact VE score of :math:`\mathcal N(m, \operatorname{diag} v)` in 64 dimensions:
    :math:`-(x - m) / (v + \sigma^2)`, on a state of shape ``(1, 8, 8)`` or ``(64,)``."""
    return -(x - _MEAN.reshape(x.shape)) / (_VARIANCE.reshape(x.shape) + sigma**2)


def _gaussian_log_density(x):
    return -0.5 * jnp.sum((x - _MEAN.reshape(x.shape)) ** 2 / _VARIANCE.reshape(x.shape))


def _image_sampler(name, n_levels, **options):
    log_density_fn = _gaussian_log_density if name == "mala" else None
    return samplers.build_sampler(
        name, samplers.default_sigmas(n_levels), log_density_fn=log_density_fn, **options
    )


_FAST = ("euler", "heun", "dpmpp_2m")  # compile in about a second; the rest are `slow`


@pytest.mark.parametrize(
    "name",
    [
        name if name in _FAST else pytest.param(name, marks=pytest.mark.slow)
        for name in samplers.SAMPLERS
    ],
)
def test_every_sampler_on_image_states_matches_the_gaussian_and_the_vector_run(name):
    """Each sampler on 500 chains of shape (1, 8, 8) with the exact score of a diagonal
    Gaussian in 64 dimensions reaches its law: each pixel's mean within 4.5 standard errors
    :math:`\\sqrt{v_i / n}`, the variances' mean ratio to :math:`v_i` within 4 standard errors
    :math:`\\sqrt{2 / (64 n)}`, and no correlation between pixels (``n`` times the sum of the
    2016 squared sample correlations, a chi-square with 2016 degrees of freedom under
    independence, within 4 of its standard deviations). The run on the same chains flattened
    to (64,) gives the same numbers up to float32 rounding: image states compile with XLA:CPU's
    own convolutions (``scorelab._xla_cpu``) and vectors with XLA's defaults, two programs whose
    fusions round differently. A fixed grid keeps them within 64 float32 ulps of the largest
    sample; an adaptive solver's step-size controller sees the rounding in its error estimate
    and may choose other steps, so there the two agree within the controller's own tolerance
    ``atol + rtol |x|``. A state indexed wrongly would differ by O(1).

    1000 levels keep the first-order samplers' discretisation bias (DDIM's variance ratio is
    0.92 at 100 levels, error ~1/N) below one standard error; ULA's law is its stationary
    :math:`v (1 - \\gamma / (2 v))^{-1}` (step 0.01), exact for MALA.
    """
    n, d = 500, 64
    # dpm_adaptive's defaults are k-diffusion's (rtol 0.05), an error budget of the size of the
    # standard errors here: the shape check asks it for the accuracy the fixed grids have.
    tight = {"rtol": 1e-4, "atol": 1e-4} if name == "dpm_adaptive" else {}
    sampler = _image_sampler(name, 1000, **tight)
    key_prior, key_chain = jax.random.split(jax.random.key(5))
    sigma = float(sampler.sigmas[-1]) if sampler.uses_grid else 10.0
    x_init = samplers.ve_prior(key_prior, n, _SHAPE, sigma)
    out = samplers.sample(key_chain, sampler, _gaussian_score, x_init)
    assert out.x.shape == (n, *_SHAPE)
    x = np.asarray(out.x, np.float64).reshape(n, d)
    mean, variance = np.asarray(_MEAN).reshape(d), np.asarray(_VARIANCE, np.float64).reshape(d)
    if name == "ula":
        variance = variance / (1.0 - 0.01 / (2.0 * variance))
    assert np.all(np.abs(x.mean(0) - mean) < 4.5 * np.sqrt(variance / n))
    ratio = x.var(0, ddof=1) / variance
    assert abs(ratio.mean() - 1.0) < 4.0 * np.sqrt(2.0 / (d * n))
    correlations = np.corrcoef(x, rowvar=False)[np.triu_indices(d, 1)]
    pairs = correlations.size
    assert abs(n * np.sum(correlations**2) - pairs) < 4.0 * np.sqrt(2.0 * pairs)
    flat = samplers.sample(key_chain, sampler, _gaussian_score, x_init.reshape(n, d))
    image = np.asarray(out.x).reshape(n, d)
    if hasattr(sampler, "rtol"):
        rtol, atol = float(sampler.rtol), float(sampler.atol)
    else:
        rtol, atol = 0.0, 64 * float(np.spacing(np.float32(np.abs(x).max())))
    np.testing.assert_allclose(np.asarray(flat.x), image, rtol, atol)


def test_the_priors_take_any_shape_and_agree_with_the_vector_draw():
    key = jax.random.key(3)
    image = samplers.ve_prior(key, 4, _SHAPE, 2.0)
    assert image.shape == (4, *_SHAPE)
    np.testing.assert_array_equal(image.reshape(4, 64), samplers.ve_prior(key, 4, 64, 2.0))
    np.testing.assert_allclose(
        samplers.vp_prior(key, 4, _SHAPE, 2.0), np.sqrt(5.0) / 2.0 * image, rtol=1e-6
    )


def test_training_images_with_the_auto_model_notes_the_flat_mlp_and_the_unet(tmp_path):
    """``train --data images.npy`` trained an MLP over the flattened pixels without a word of
    the U-Net: a note names the MLP and the settings of a U-Net that trains on that loss; a
    stated model, or points, get none."""
    from scorelab.cli import _flat_image_model_note
    from scorelab.config import ExperimentConfig

    np.save(tmp_path / "rgb.npy", np.zeros((4, 8, 8, 3), np.uint8))
    np.save(tmp_path / "points.npy", np.zeros((10, 2), np.float32))
    for source, loss, model in (("digits", "ncsn", "ncsn_mlp"), ("rgb.npy", "dsm", "mlp")):
        data = {"source": str(tmp_path / source) if source.endswith(".npy") else source}
        note = _flat_image_model_note(
            ExperimentConfig.from_dict({"data": data, "loss": {"name": loss}})
        )
        assert note.startswith(f"note: model.name auto is {model}, an MLP that sees each image")
        assert "model.name=unet with model.preconditioning=edm or loss.name=vp_epsilon" in note
    unet = {"name": "unet", "preconditioning": "edm"}
    for values in (
        {"data": {"source": "digits"}, "model": unet},
        {"data": {"source": "digits"}, "model": {"name": "ncsn_mlp"}},
        {"data": {"source": str(tmp_path / "points.npy")}},
        {"data": {"source": "digits_mixture"}},
    ):
        assert _flat_image_model_note(ExperimentConfig.from_dict(values)) is None


# --- end to end on the built-in digits -----------------------------------------------------------


_TRAIN = ["train", "--data", "digits", "--steps", "4", "--batch-size", "8", "--quiet"]
_TRAIN += ["--set", "train.steps_per_dispatch=2", "--set", "sampler.n_levels=4"]
_TRAIN += ["--set", "data.hflip=true", "--set", "train.schedule='constant'"]


def _train_and_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*_TRAIN, "--out", str(run)]) == 0
    assert "data: digits: 1437 images of 1x8x8" in capsys.readouterr().out
    samples, grid = tmp_path / "s.npy", tmp_path / "grid.png"
    argv = ["sample", "--run", str(run), "--n", "6", "--batch", "4", "--out", str(samples)]
    assert main([*argv, "--grid-png", str(grid)]) == 0
    return run, samples, grid


@pytest.mark.slow  # about 28 s of a worker: kept out of the default suite's 15 minutes
def test_train_sample_and_grid_on_digits(tmp_path, capsys):
    """The default MLP trains on 8x8 digits and samples them in chunks; the grid holds each
    sample's pixels, round(255 clip(x/2 + 1/2)), magnified 4x, below a caption strip."""
    from scorelab.diffusers import to_images

    _, samples, grid = _train_and_sample(tmp_path, capsys)
    x = np.load(samples)
    assert x.shape == (6, 1, 8, 8) and np.isfinite(x).all()
    tiles = to_images(x).repeat(4, axis=1).repeat(4, axis=2)[..., 0]
    expected = np.zeros((2 * 32, 3 * 32), np.uint8)  # ceil(sqrt(6)) = 3 columns, 2 rows
    for i, tile in enumerate(tiles):
        row, column = divmod(i, 3)
        expected[row * 32 : (row + 1) * 32, column * 32 : (column + 1) * 32] = tile
    with Image.open(grid) as picture:
        pixels = np.asarray(picture)
    assert pixels.ndim == 2 and pixels.shape[0] > 2 * 32
    np.testing.assert_array_equal(pixels[-2 * 32 :, : 3 * 32], expected)


@pytest.mark.slow
def test_plot_evaluate_and_resume_an_image_run(tmp_path, capsys):
    run, samples, _ = _train_and_sample(tmp_path, capsys)
    assert main(["plot", str(run)]) == 0
    assert (run / "figures" / "samples.png").is_file()
    from scorelab.data import digits

    np.save(tmp_path / "held_out.npy", digits("test")[0])  # float NCHW in [-1, 1]
    argv = ["evaluate", str(samples), "--data", str(tmp_path / "held_out.npy")]
    assert main([*argv, "--floor-repeats", "2"]) == 0
    more = [*_TRAIN[:3], "--steps", "6", *_TRAIN[5:]]
    assert main([*more, "--out", str(run), "--resume"]) == 0
    assert np.load(run / "losses.npy").shape == (6,)
    flipped = [item.replace("data.hflip=true", "data.hflip=false") for item in more]
    assert main([*flipped, "--out", str(run), "--resume"]) == 2
    assert "data.hflip: True -> False" in capsys.readouterr().err


def test_a_photo_is_read_as_shown_its_exif_orientation_applied(tmp_path):
    """A JPEG stored 16x8 with EXIF orientation 6 shows 8x16, turned a quarter clockwise; it
    was read as stored (and beside an upright 8x16 image refused as of another size)."""
    stored = np.arange(8 * 16, dtype=np.uint8).reshape(8, 16) * 2
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "turned.png", exif=exif)
    Image.fromarray(np.rot90(stored, k=-1)).save(tmp_path / "upright.png")
    data = load_images(tmp_path)
    assert data.images.shape == (2, 1, 16, 8)
    np.testing.assert_array_equal(data.images[0], data.images[1])  # both as shown
    np.testing.assert_allclose((data.images[1, 0] + 1) * 127.5, np.rot90(stored, k=-1), atol=1e-4)


def test_images_of_any_channel_count_have_a_grid_and_a_one_step_loss_a_curve(tmp_path):
    """A run trained on 2-channel data was refused its grid by plot and sample --grid-png, and
    a one-step run's loss curve warned of equal x limits (warnings fail the tests)."""
    from scorelab.viz import loss_curves
    from scorelab.workflows import save_sample_grid

    samples = np.stack([-np.ones((3, 8, 8)), np.ones((3, 8, 8))], axis=1)  # channels -1, 1
    with Image.open(save_sample_grid(samples, tmp_path / "g.png", label="s")) as image:
        picture = np.asarray(image.convert("L"))
    # each image a strip of its channels, black (-1) beside white (+1)
    assert picture.min() == 0 and picture.max() == 255
    loss_curves({"loss": np.array([1.0])})


def test_a_link_loop_among_the_images_is_named_as_one(tmp_path):
    """A link to itself was "PNG or JPEG image not found", sending the user looking for a file
    that is there (pass 20A)."""
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(_UINT8[0]).save(folder / "a.png")
    (folder / "z.png").symlink_to("z.png")
    with pytest.raises(FileNotFoundError, match=r"z.png is a symbolic link to z.png, which leads"):
        load_images(folder)


def test_evaluate_reads_an_image_file_with_the_layout_and_range_it_is_given(tmp_path, capsys):
    """evaluate told to "state data.layout" had no way to (pass 25, #1), and read a run's
    [0, 1] floats stated as [-1, 1] through auto's 2x - 1, unsaid: perfect samples scored
    far above the floor (#2). It takes --layout and --pixel-range, and says how it read."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 8, 8, 2), dtype=np.uint8)
    np.save(tmp_path / "nhwc.npy", pixels)
    np.save(tmp_path / "s.npy", pixels.transpose(0, 3, 1, 2) / 127.5 - 1)
    argv = ["evaluate", str(tmp_path / "s.npy"), "--data", str(tmp_path / "nhwc.npy"), "--quiet"]
    assert main(argv) == 2
    assert "(scorelab evaluate: --layout)" in capsys.readouterr().err
    assert main([*argv, "--layout", "NHWC"]) == 0
    out = capsys.readouterr().out
    assert "data: " in out and "layout NHWC (stated)" in out
    unit = rng.uniform(0, 1, (200, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "unit.npy", unit)
    np.save(tmp_path / "same.npy", unit)
    argv = ["evaluate", str(tmp_path / "same.npy"), "--data", str(tmp_path / "unit.npy")]
    json_out = tmp_path / "m.json"
    assert main([*argv, "--pixel-range=-1-1", "--quiet", "--json", str(json_out)]) == 0
    assert json.loads(json_out.read_text())["rows"][0]["sw"] < 1e-6  # the data themselves
    assert main([*argv, "--quiet", "--json", str(json_out), "--overwrite"]) == 0  # auto: 2x - 1
    row = json.loads(json_out.read_text())["rows"][0]
    assert row["sw"] > 5 * row["sw_floor"]
    assert main(["evaluate", str(tmp_path / "same.npy"), "--target", "seed_mixture",
                 "--layout", "NHWC"]) == 2  # fmt: skip
    assert "layout: applies to an image file given as data" in capsys.readouterr().err


def test_evaluate_refuses_a_layout_for_a_folder_of_images(tmp_path):
    """A layout stated for a folder was ignored (image files have their own), exit 0."""
    from scorelab.config import ConfigError
    from scorelab.workflows import evaluate_samples

    (tmp_path / "folder").mkdir()
    Image.fromarray(_UINT8[0]).save(tmp_path / "folder" / "0.png")
    words = "layout: applies to an array file given as data; "
    with pytest.raises(ConfigError, match=re.escape(words)):
        evaluate_samples(_EXPECTED, data=str(tmp_path / "folder"), layout="NHWC")


@pytest.mark.parametrize("name", ["digits", "seed_mixture"])
def test_likelihood_names_a_built_in_data_set_given_as_points(name, tmp_path, monkeypatch):
    """``--points digits`` (and evaluate's samples ``digits``) was "data file not found:
    digits; check the path and the disk"."""
    from scorelab.config import ConfigError
    from scorelab.workflows import _likelihood_points

    monkeypatch.chdir(tmp_path)
    words = f"{name}: a built-in data set, not a file; save the array with numpy.save"
    with pytest.raises(ConfigError, match=re.escape(words)) as raised:
        _likelihood_points(name, (64,), (1, 8, 8))
    assert ("digits('test')" in str(raised.value)) == (name == "digits")
    (tmp_path / name).mkdir()  # a folder of that name is read as one
    with pytest.raises(DataError, match="empty folder"):
        _likelihood_points(name, (64,), (1, 8, 8))
    (tmp_path / "notes.txt").write_text("1,2")  # any other name is a file, as before
    with pytest.raises(DataError, match=r"^notes.txt: unsupported file type '.txt'"):
        _likelihood_points("notes.txt", (64,), (1, 8, 8))


def test_likelihood_reads_an_image_runs_own_uint8_file_as_its_training_images(tmp_path):
    """The uint8 file a run trained on was refused by likelihood ("values in [4, 255]"),
    which train and evaluate read (pass 25, #3); float files stay the model's space."""
    from scorelab.config import DataConfig
    from scorelab.workflows import _likelihood_points

    pixels = np.random.default_rng(0).integers(0, 256, (6, 2, 2), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", pixels)
    config = DataConfig(source=str(tmp_path / "grey.npy"))
    read = _likelihood_points(tmp_path / "grey.npy", (1, 2, 2), (1, 2, 2), config)
    np.testing.assert_allclose(read[:, 0], pixels / 127.5 - 1, atol=1e-6)
    np.save(tmp_path / "model_space.npy", read)
    again = _likelihood_points(tmp_path / "model_space.npy", (1, 2, 2), (1, 2, 2), config)
    np.testing.assert_array_equal(again, read)


def test_evaluate_reads_the_images_of_an_npz_of_several_arrays_by_array(tmp_path, capsys):
    """A run's own .npz of images and labels was refused as a reference ("name it with
    data.array (--set data.array=KEY)", which evaluate does not take): --array names the key,
    as data.array does for train, and is refused where nothing reads it. likelihood reads the
    run's own .npz with its data.array."""
    from scorelab.config import DataConfig
    from scorelab.workflows import _likelihood_points

    pixels = np.random.default_rng(2).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "own.npz", x_train=pixels, y_train=np.arange(40) % 2)
    samples = (pixels.transpose(0, 3, 1, 2) / 127.5 - 1).astype(np.float32)
    np.save(tmp_path / "s.npy", samples)
    argv = ["evaluate", str(tmp_path / "s.npy"), "--data", str(tmp_path / "own.npz"), "--quiet"]
    argv += ["--floor-repeats", "2"]
    assert main(argv) == 2
    assert "scorelab evaluate and likelihood: --array KEY" in capsys.readouterr().err
    json_out = tmp_path / "m.json"
    assert main([*argv, "--array", "x_train", "--json", str(json_out)]) == 0
    assert json.loads(json_out.read_text())["rows"][0]["sw"] < 1e-6  # the data themselves
    assert main([*argv, "--array", "nope"]) == 2
    assert "no array 'nope'; keys: x_train, y_train" in capsys.readouterr().err
    target = ["evaluate", str(tmp_path / "s.npy"), "--target", "seed_mixture", "--array", "x"]
    assert main(target) == 2
    assert "--array: applies to an image file given as data" in capsys.readouterr().err
    config = DataConfig(source=str(tmp_path / "own.npz"), array="x_train", labels="y_train")
    read = _likelihood_points(tmp_path / "own.npz", (1, 8, 8), (1, 8, 8), config)
    np.testing.assert_allclose(read, samples, atol=1e-6)


def test_likelihood_reads_the_images_of_another_npz_of_several_arrays_by_array(tmp_path, capsys):
    """Points in an .npz of several arrays other than the run's own file had no key to name
    them (the message offered evaluate's --array): likelihood takes --array too, for an image
    run and for the 64-d digits_mixture alike, and refuses it beside points that are no .npz."""
    from scorelab.config import ConfigError, DataConfig, ExperimentConfig
    from scorelab.workflows import _likelihood_points, likelihood_points

    pixels = np.random.default_rng(3).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "other.npz", x=pixels, y=np.arange(6) % 2)
    images = (pixels / 127.5 - 1).astype(np.float32)
    run_data = DataConfig(source=str(tmp_path / "train.npy"), layout="NCHW")
    for data in (run_data, None):  # an image run's points; the exact score's points
        with pytest.raises(DataError, match="likelihood: --array KEY"):
            _likelihood_points(tmp_path / "other.npz", (1, 8, 8), (1, 8, 8), data)
        read = _likelihood_points(tmp_path / "other.npz", (1, 8, 8), (1, 8, 8), data, "x")
        np.testing.assert_allclose(read, images, atol=1e-6)
    np.save(tmp_path / "p.npy", images)
    config = ExperimentConfig.from_dict({"data": {"source": "digits_mixture"}})
    with pytest.raises(ConfigError, match="^array: the images' key in an .npz given as points"):
        likelihood_points(config, None, tmp_path / "p.npy", array="x")
    argv = ["likelihood", "--exact", "digits_mixture", "--points", str(tmp_path / "p.npy")]
    assert main([*argv, "--array", "x"]) == 2
    assert "--array: the images' key in an .npz given as points" in capsys.readouterr().err


def test_likelihood_reads_image_points_once_with_the_runs_layout(tmp_path, monkeypatch):
    """An integer file is read once, by load_images (it was read as stored, then again), and
    an .npz is read with the run's stated layout (it was read with ``auto``, which refuses a
    3x3x3 image as ambiguous where the run states NHWC)."""
    import scorelab.workflows as workflows
    from scorelab.config import DataConfig

    reads = []
    for name in ("load_images", "read_npy", "load_array"):
        original = getattr(workflows, name)
        monkeypatch.setattr(
            workflows, name, lambda *a, _f=original, _n=name, **k: reads.append(_n) or _f(*a, **k)
        )
    pixels = np.random.default_rng(1).integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)  # NHWC
    np.save(tmp_path / "rgb.npy", pixels)
    np.savez(tmp_path / "rgb.npz", array=pixels)
    config = DataConfig(source=str(tmp_path / "rgb.npy"), layout="NHWC")
    expected = pixels.transpose(0, 3, 1, 2) / 127.5 - 1
    for file in ("rgb.npy", "rgb.npz"):
        reads.clear()
        read = workflows._likelihood_points(tmp_path / file, (3, 3, 3), (3, 3, 3), config)
        np.testing.assert_allclose(read, expected, atol=1e-6)
        assert reads == ["load_images"], (file, reads)


# --- pinned by mutation pass 34 --------------------------------------------------------------


def test_floats_reaching_one_exactly_stated_as_0_255_are_refused(tmp_path):
    """[0, 1] images include 1.0 itself: stated as 0-255 they would be read almost black."""
    pixels = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    pixels[0, 0, 0] = 1.0
    np.save(tmp_path / "x.npy", pixels)
    with pytest.raises(DataError, match=r"inside \[0, 1\], but data.pixel_range states 0-255"):
        load_images(tmp_path / "x.npy", pixel_range="0-255")


def test_negative_labels_are_refused(tmp_path):
    np.savez(tmp_path / "set.npz", images=_UINT8[:3], y=np.array([0, -1, 2]))
    with pytest.raises(DataError, match="labels must be >= 0, got -1"):
        load_images(tmp_path / "set.npz", labels="y")


def test_digits_hands_out_copies_and_digits16_is_the_bicubic_resize():
    """A caller's edit of its arrays does not reach later calls (they are cached); the 16x16
    images are Pillow's bicubic resize of the 8x8 ones in float ("F"), clipped to [-1, 1]."""
    from sklearn.datasets import load_digits

    from scorelab.data import digits

    images, labels = digits("all")
    images[:] = 0.0
    labels[:] = 0
    again, again_labels = digits("all")
    assert again.std() > 0 and again_labels.max() == 9
    small = (load_digits().images / 8.0 - 1.0).astype(np.float32)
    resize = Image.Resampling.BICUBIC
    big = np.stack([np.asarray(Image.fromarray(image).resize((16, 16), resize)) for image in small])
    np.testing.assert_allclose(digits("all", size=16)[0][:, 0], np.clip(big, -1, 1), atol=1e-6)
