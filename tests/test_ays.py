"""Align-Your-Steps grids: the bound against its closed form on a Gaussian, the search, saved
grids by name or path, the budget option and the CLI."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab import ays
from scorelab.cli import main
from scorelab.config import ConfigError, SamplerConfig
from scorelab.noise import geometric_sigmas, saved_sigmas, sigma_grid

MEAN = np.array([1.0, -2.0])
VARIANCE = 0.25  # s^2 of the Gaussian target N(MEAN, s^2 I)


def _denoise(x, sigma):
    return MEAN + VARIANCE / (VARIANCE + sigma**2) * (x - MEAN)


def _klub_closed_form(lo, hi):
    r"""For N(mu, s^2 I) in d = 2: with a = s^2 / (s^2 + sigma^2) and b the same at the top,
    Delta D = (a - b)(x_sigma - mu) - b sqrt(top^2 - sigma^2) w, so E|Delta D|^2 = d [(a - b)^2
    (s^2 + sigma^2) + b^2 (top^2 - sigma^2)]; integrated against 1/sigma^3 by the trapezoid
    rule on 20 001 log-spaced points (relative error ~1e-8)."""
    sigma = np.geomspace(lo, hi, 20_001)
    a, b = VARIANCE / (VARIANCE + sigma**2), VARIANCE / (VARIANCE + hi**2)
    expected = 2 * ((a - b) ** 2 * (VARIANCE + sigma**2) + b**2 * (hi**2 - sigma**2))
    return np.trapezoid(expected / sigma**3, sigma)


def test_the_bound_is_unbiased_for_its_closed_form():
    """20 independent estimates of each interval's term: their mean within 4 standard errors
    of the closed form (a biased weighting, e.g. d sigma read as d log sigma, is off by
    orders of many standard errors)."""
    sigmas = jnp.asarray([0.05, 0.3, 1.0, 5.0])
    x_0 = jnp.asarray(MEAN + np.sqrt(VARIANCE) * np.random.default_rng(0).standard_normal((500, 2)))
    estimates = np.stack([
        np.asarray(ays.klub_terms(_denoise, x_0, jax.random.key(i), sigmas, 4)) for i in range(20)
    ])  # fmt: skip
    mean, se = estimates.mean(0), estimates.std(0, ddof=1) / np.sqrt(20)
    exact = np.array([_klub_closed_form(lo, hi) for lo, hi in zip(sigmas[:-1], sigmas[1:])])
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se)
    assert np.all(se < 0.05 * exact)  # power: the test resolves 5% of each term


def test_the_search_lowers_the_bound_and_keeps_the_ends():
    x_0 = jnp.asarray(MEAN + np.sqrt(VARIANCE) * np.random.default_rng(0).standard_normal((200, 2)))
    sigmas, bound, start = ays.optimise_grid(
        _denoise, x_0, jax.random.key(0), 6, 0.02, 80.0, n_candidates=8, n_sweeps=1
    )
    assert sigmas[0] == 0.02 and sigmas[-1] == 80.0 and np.all(np.diff(sigmas) > 0)
    assert bound < start


def test_the_bar_counts_the_bound_and_every_move_and_ends_full(capsys):
    """``grid --levels 100000`` printed nothing for minutes: the starting bound was summed
    interval by interval, op by op, before the bar opened. The bar now counts those intervals
    (at the start and the end) and the moves, and ends full when a sweep moves nothing."""
    x_0 = jnp.asarray(MEAN + np.sqrt(VARIANCE) * np.random.default_rng(0).standard_normal((50, 2)))
    n_levels, n_sweeps = 5, 40  # far more sweeps than needed: the search stops early
    ays.optimise_grid(_denoise, x_0, jax.random.key(0), n_levels, 0.02, 80.0, n_candidates=4,
                      n_sweeps=n_sweeps, progress=True)  # fmt: skip
    total = 2 * (n_levels - 1) + n_sweeps * (n_levels - 2)
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{total}/{total}" in final and final.startswith("ays grid: 100%")


IMAGE_MEAN = np.array([1.0, -2.0, 0.5, 3.0]).reshape(1, 2, 2)  # a 1x2x2 image's mean


def _denoise_image(x, sigma):
    """Tweedie's denoiser of N(IMAGE_MEAN, s^2 I) on one (1, 2, 2) image."""
    return IMAGE_MEAN + VARIANCE / (VARIANCE + sigma**2) * (x - IMAGE_MEAN)


def _images(n):
    """``n`` draws of N(IMAGE_MEAN, s^2 I), shape (n, 1, 2, 2)."""
    z = np.random.default_rng(0).standard_normal((n, *IMAGE_MEAN.shape))
    return jnp.asarray(IMAGE_MEAN + np.sqrt(VARIANCE) * z, jnp.float32)


def test_the_bound_on_images_is_the_bound_on_their_flattened_pixels():
    """The bound is a squared norm over all of an example's axes: on (m, C, H, W) images it is
    the bound on the same (m, C*H*W) vectors with the same random numbers (images were an
    internal 'too many values to unpack' error)."""
    sigmas = jnp.asarray([0.05, 0.3, 1.0, 5.0])
    images = _images(300)
    flat_mean = IMAGE_MEAN.reshape(-1)

    def denoise_flat(x, sigma):
        return flat_mean + VARIANCE / (VARIANCE + sigma**2) * (x - flat_mean)

    key = jax.random.key(3)
    on_images = ays.klub_terms(_denoise_image, images, key, sigmas, 4)
    on_vectors = ays.klub_terms(denoise_flat, images.reshape(300, -1), key, sigmas, 4)
    assert on_images.shape == (3,) and np.all(np.asarray(on_images) > 0)
    np.testing.assert_allclose(on_images, on_vectors, rtol=1e-5)


def test_the_search_on_images_gives_a_valid_grid_that_lowers_the_bound():
    images = _images(100)
    sigmas, bound, start = ays.optimise_grid(
        _denoise_image, images, jax.random.key(0), 5, 0.02, 80.0, n_candidates=8, n_sweeps=1
    )
    assert sigmas.shape == (5,) and np.all(np.isfinite(sigmas))
    assert sigmas[0] == 0.02 and sigmas[-1] == 80.0 and np.all(np.diff(sigmas) > 0)
    assert np.isfinite(bound) and bound < start


def test_a_saved_grid_is_reused_by_path_and_interpolated_log_linearly(tmp_path):
    """A saved geometric grid interpolated log-linearly to any size is the geometric grid of
    that size (the interpolation's closed form)."""
    path = tmp_path / "g.json"
    saved = np.asarray(geometric_sigmas(7, 0.02, 80.0), np.float64)
    ays.save_grid(path, saved, bound=1.0, bound_geometric=1.0, about={"data": "test"})
    assert json.loads(path.read_text())["kind"] == "ays"
    np.testing.assert_array_equal(sigma_grid(str(path), 7, 0.02, 80.0), saved.astype(np.float32))
    np.testing.assert_allclose(
        sigma_grid(str(path), 12, 0.02, 80.0), geometric_sigmas(12, 0.02, 80.0), rtol=2e-6
    )
    with pytest.raises(ValueError, match=r"spans \[0.02, 80\]; set sigma_min = 0.02") as error:
        saved_sigmas(str(path), 7, 0.002, 80.0)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "grid, match",
    [("ays:nope", "no such bundled grid"), ("missing.json", "existing .json grid file")],
)
def test_an_unknown_saved_grid_is_a_config_error(grid, match):
    with pytest.raises(ConfigError, match=match):
        SamplerConfig(grid=grid)


def test_the_bundled_grid_has_its_range():
    sigmas = np.asarray(sigma_grid("ays:seed_mixture_10", 10, 0.002, 80.0))
    assert sigmas.shape == (10,) and np.all(np.diff(sigmas) > 0)
    np.testing.assert_allclose(sigmas[[0, -1]], [0.002, 80.0], rtol=1e-6)


def test_a_budget_sets_the_levels_from_the_samplers_cost():
    assert SamplerConfig(name="heun", nfe=10).n_levels == 5  # 2N - 1 <= 10
    assert SamplerConfig(name="unipc", nfe=10).n_levels == 10
    message = "a budget of 2 evaluations is too small for heun, whose smallest grid"
    with pytest.raises(ConfigError, match=message):
        SamplerConfig(name="heun", nfe=2)
    with pytest.raises(ConfigError, match="no fixed grid to size by a budget"):
        SamplerConfig(name="tsit5", nfe=10)


@pytest.mark.slow  # optimises a grid, then samples
def test_grid_cli_writes_a_grid_that_sample_uses(tmp_path, capsys):
    grid = tmp_path / "grid.json"
    common = ["--exact", "seed_mixture", "--levels", "4"]
    assert main(["grid", *common, "--n", "50", "--sweeps", "1", "--candidates", "4",
                 "--out", str(grid)]) == 0  # fmt: skip
    out = tmp_path / "x.npy"
    assert main(["sample", *common, "--grid", str(grid), "--sampler", "unipc", "--n", "20",
                 "--out", str(out)]) == 0  # fmt: skip
    assert np.load(out).shape == (20, 2)
    assert main(["sample", "--exact", "seed_mixture", "--sampler", "heun", "--nfe", "2",
                 "--out", str(out), "--overwrite"]) == 2  # fmt: skip
    assert "too small for heun" in capsys.readouterr().err


# Hostile inputs: one-line refusals naming the argument, before work.
_X0 = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
_SMALL = {"n_inner": 1, "n_candidates": 2, "n_sweeps": 1}


def _tweedie(x, sigma):
    return x - sigma**2 * x / (1 + sigma**2)


@pytest.mark.parametrize(
    "sigmas, bounds, about, error, name",
    [
        ([0.1, 1.0, 10.0], (1.0, 2.0), {"sigmas": [5], "bound": 9}, ValueError, "about"),
        ([0.1, 1.0, 10.0], (1.0, 2.0), {"kind": "ld3"}, ValueError, "about"),
        ([0.1, 1.0, 10.0], (1.0, 2.0), ["data"], TypeError, "about"),
        ([10.0, 1.0, 0.1], (1.0, 2.0), {}, ValueError, "sigmas"),  # descending
        ([0.1, np.nan, 10.0], (1.0, 2.0), {}, ValueError, "sigmas"),  # NaN (was null)
        ([], (1.0, 2.0), {}, ValueError, "sigmas"),  # empty
        ([0.1, 10.0], (1.0, 2.0), {}, ValueError, "sigmas"),  # an optimised grid has >= 3
        ([0.0, 1.0, 10.0], (1.0, 2.0), {}, ValueError, "sigmas"),
        ([0.1, 1.0, 1e39], (1.0, 2.0), {}, ValueError, "sigmas"),  # beyond float32
        (["a", "b", "c"], (1.0, 2.0), {}, ValueError, "sigmas"),
        ([0.1, 1.0, 10.0], (np.nan, 2.0), {}, ValueError, "bound"),
        ([0.1, 1.0, 10.0], (1.0, np.inf), {}, ValueError, "bound_geometric"),
        ([0.1, 1.0, 10.0], ("1", 2.0), {}, TypeError, "bound"),
    ],
)
def test_save_grid_refuses_what_it_would_write_wrong(tmp_path, sigmas, bounds, about, error, name):
    path = tmp_path / "g.json"
    with pytest.raises(error, match=f"^{re.escape(name)}: ") as raised:
        ays.save_grid(path, sigmas, bound=bounds[0], bound_geometric=bounds[1], about=about)
    assert "\n" not in str(raised.value) and not path.exists()


def test_save_grid_refuses_a_name_no_grid_reader_takes(tmp_path):
    """A grid saved as ``g.txt`` was written, then refused by sigma_grid (pass 19A)."""
    with pytest.raises(ValueError, match=r"g.txt: a saved grid is a .json file"):
        ays.save_grid(tmp_path / "g.txt", [0.1, 1.0, 10.0], bound=1.0, bound_geometric=2.0,
                      about={})  # fmt: skip
    assert not (tmp_path / "g.txt").exists()


def test_save_grid_names_the_reserved_keys_of_about(tmp_path):
    with pytest.raises(ValueError, match=re.escape("about: keys ['bound', 'sigmas'] are reserved")):
        ays.save_grid(tmp_path / "g.json", [0.1, 1.0, 10.0], bound=1.0, bound_geometric=2.0,
                      about={"sigmas": [5], "bound": 9})  # fmt: skip


_KLUB_CASES = [
    ({"sigmas": jnp.array([10.0, 1.0, 0.1])}, ValueError, "sigmas"),  # descending: NaN
    ({"sigmas": jnp.array([-1.0, 1.0])}, ValueError, "sigmas"),
    ({"sigmas": jnp.array([0.1])}, ValueError, "sigmas"),  # was ZeroDivisionError
    ({"sigmas": ["a", "b"]}, TypeError, "sigmas"),
    ({"n_inner": 0}, ValueError, "n_inner"),  # was ZeroDivisionError
    ({"n_inner": -1}, ValueError, "n_inner"),  # was an MLIRError
    ({"key": 0}, TypeError, "key"),
    ({"x_0": np.full((4, 2), np.nan, np.float32)}, ValueError, "x_0"),
    ({"x_0": np.zeros((0, 2), np.float32)}, ValueError, "x_0"),
    ({"x_0": np.array([["a", "b"]])}, TypeError, "x_0"),
    ({"denoise_fn": lambda x, s: x[:1]}, ValueError, "denoise_fn"),  # was broadcast
    ({"denoise_fn": lambda x, s: x * jnp.nan}, ValueError, "denoise_fn"),
    ({"denoise_fn": None}, TypeError, "denoise_fn"),
]


@pytest.mark.parametrize("change, error, name", _KLUB_CASES)
def test_klub_terms_refuses_bad_arguments_naming_them(change, error, name):
    arguments = {"denoise_fn": _tweedie, "x_0": _X0, "key": jax.random.key(0),
                 "sigmas": jnp.array([0.1, 1.0, 10.0]), "n_inner": 2, **change}  # fmt: skip
    with pytest.raises(error, match=f"^{re.escape(name)}: ") as raised:
        ays.klub_terms(**arguments)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "change, error, name",
    [
        ({"x_0": np.full((4, 2), np.nan, np.float32)}, ValueError, "x_0"),  # was a NaN bound
        ({"x_0": np.zeros((0, 2), np.float32)}, ValueError, "x_0"),  # was ZeroDivisionError
        ({"denoise_fn": lambda x, s: x * jnp.nan}, ValueError, "denoise_fn"),
        ({"denoise_fn": lambda x, s: x[:1]}, ValueError, "denoise_fn"),
        ({"key": 0}, TypeError, "key"),
        ({"n_levels": "3"}, TypeError, "n_levels"),
        ({"n_levels": 3.0}, TypeError, "n_levels"),
    ],
)
def test_optimise_grid_refuses_bad_arguments_naming_them(change, error, name):
    arguments = {"denoise_fn": _tweedie, "x_0": _X0, "key": jax.random.key(0), "n_levels": 3,
                 "sigma_min": 0.01, "sigma_max": 10.0, **_SMALL, **change}  # fmt: skip
    with pytest.raises(error, match=f"^{re.escape(name)}: ") as raised:
        ays.optimise_grid(**arguments)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "x_0", [np.ones((4, 2), int), _X0.astype(np.float64), _X0.tolist()], ids=["int", "f64", "list"]
)
def test_optimise_grid_casts_int_float64_and_list_data_to_float32(x_0):
    """Int and float64 data gave JAX's 'not available, will be truncated' UserWarning (an
    error under pytest) and int data would truncate the grid; lists were an AttributeError."""
    sigmas, bound, start = ays.optimise_grid(_tweedie, x_0, jax.random.key(0), 3, 0.01, 10.0,
                                             **_SMALL)  # fmt: skip
    expected = ays.optimise_grid(_tweedie, np.asarray(x_0, np.float32), jax.random.key(0), 3,
                                 0.01, 10.0, **_SMALL)  # fmt: skip
    np.testing.assert_array_equal(sigmas, expected[0])
    assert (bound, start) == expected[1:] and np.isfinite(bound)


def test_a_legacy_key_gives_the_typed_keys_bound():
    sigmas = jnp.array([0.1, 1.0, 10.0])
    legacy = ays.klub_terms(_tweedie, _X0, jax.random.PRNGKey(0), sigmas, 2)
    typed = ays.klub_terms(_tweedie, _X0, jax.random.key(0), sigmas, 2)
    np.testing.assert_array_equal(legacy, typed)


def test_klub_terms_beyond_the_memory_are_refused():
    """``klub_terms(n_inner=10**12)`` tried 64 TB, where :func:`ays.optimise_grid` checked
    the same draws (pass 19A, #5)."""
    x_0 = np.zeros((4, 2), np.float32)
    sigmas = np.array([0.1, 1.0, 10.0], np.float32)
    with pytest.raises(ValueError, match=r"^n_inner: needs .* of memory"):
        ays.klub_terms(_denoise, x_0, jax.random.key(0), sigmas, 10**12)
