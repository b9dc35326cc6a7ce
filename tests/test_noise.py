"""Sigma grids against the tutorial's own formula and closed forms."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab import _validate
from scorelab.noise import (
    RhoError,
    geometric_sigmas,
    karras_sigmas,
    log_snr_sigmas,
    polyexponential_sigmas,
    sample_ve_noise,
    sigma_grid,
    ve_perturb,
    vp_betas,
    vp_perturb,
    vp_sde_sigma,
    vp_sde_time,
    vp_sigmas,
)
from scorelab.samplers import default_sigmas


def _tutorial_stds(n, std_min=0.02, std_max=10.0, p=5):
    # Transcribed from the tutorial's NCSN cell.
    ramp = np.linspace(1, 0, n)
    return (std_max ** (1 / p) + ramp * (std_min ** (1 / p) - std_max ** (1 / p))) ** p


@pytest.mark.parametrize("n", [2, 4, 100])
def test_karras_grid_is_the_tutorials_ladder(n):
    np.testing.assert_allclose(karras_sigmas(n), _tutorial_stds(n), rtol=2e-6)


def test_karras_grid_end_points_and_monotone():
    sigmas = np.asarray(karras_sigmas(50, 0.002, 80.0, rho=7.0))
    assert sigmas[0] == np.float32(0.002) and sigmas[-1] == np.float32(80.0)
    assert np.all(np.diff(sigmas) > 0)


def test_karras_rho_one_is_uniform_and_large_rho_tends_to_geometric():
    np.testing.assert_allclose(karras_sigmas(5, 1.0, 5.0, rho=1.0), [1, 2, 3, 4, 5], rtol=1e-6)
    np.testing.assert_allclose(
        karras_sigmas(20, 0.02, 10.0, rho=1e4), geometric_sigmas(20, 0.02, 10.0), rtol=1e-3
    )


def test_geometric_grid_has_constant_ratio():
    sigmas = np.asarray(geometric_sigmas(10, 0.01, 100.0), np.float64)
    ratios = sigmas[1:] / sigmas[:-1]
    np.testing.assert_allclose(ratios, 10 ** (4 / 9), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=1), "n >= 2"),
        (dict(n=10, sigma_min=-1.0), "sigma_min must be > 0"),
        (dict(n=10, sigma_min=5.0, sigma_max=1.0), "sigma_min must be < sigma_max"),
        # one level twice is no range: a loss over it would train one noise level
        (dict(n=10, sigma_min=2.0, sigma_max=2.0), "sigma_min must be < sigma_max"),
        (dict(n=10, rho=0.0), "rho must be a finite number > 0"),
    ],
)
def test_grid_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        karras_sigmas(**kwargs)


@pytest.mark.parametrize(
    "build, message",
    [
        # each returned a grid that starts at 0, repeats a level or holds NaN, without an error
        (lambda: geometric_sigmas(10, 1e-50, 1.0), "sigma_min: 1e-50 is below 1.1e-19"),
        (lambda: karras_sigmas(10, 1.0, 1.0000001), "merge or overflow in float32"),
        (lambda: karras_sigmas(10, 0.02, 10.0, rho=float("nan")), "rho must be a finite"),
        (lambda: karras_sigmas(10, 0.02, 10.0, rho=float("inf")), "rho must be a finite"),
        (lambda: karras_sigmas(10, 0.02, 10.0, rho=1e-5), "rho 1e-05: sigma_max"),
        (lambda: vp_sigmas(10, 0.02, 80.0, 0.1, float("inf")), "beta_max: expected"),
        (lambda: vp_sigmas(5, beta_max=1e39), r"beta_max: 1e\+39 is beyond"),  # a NaN internal t
        (lambda: vp_sigmas(5, beta_max="20"), "beta_max: expected"),  # a comparison's error
        (lambda: log_snr_sigmas(10, -2000.0, 0.0), r"log_snr_min: expected a number in \["),
        (lambda: log_snr_sigmas(5, "-3", 3), "log_snr_min: expected"),
        (lambda: log_snr_sigmas(5, np.array([-3.0]), 3), "log_snr_min: expected"),
        (lambda: karras_sigmas(2.0), "an integer n >= 2"),
        (lambda: karras_sigmas(5, "0.1"), "sigma_min: expected a real number"),
        (lambda: sigma_grid(None, 10), "unknown grid None"),
    ],
)
def test_a_grid_builder_refuses_what_would_not_be_a_float32_grid(build, message):
    """The builders promise ascending float32 levels from sigma_min to sigma_max: arguments
    that break the promise are refused, naming them, instead of returned as a broken grid."""
    with pytest.raises((ValueError, TypeError), match=message):
        build()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # beta_min > beta_max gave a level without a word, negative betas NaN, equal ones NaN
        (lambda: vp_sde_sigma(0.5, 20.0, 0.1), "beta_max: expected a number > beta_min"),
        (lambda: vp_sde_sigma(0.5, -30.0, -20.0), "beta_min: expected a number > 0"),
        (lambda: vp_sde_time(1.0, 1.0, 1.0), "beta_max: expected a number > beta_min"),
        # int()'s errors, or True taken as T = 1
        (lambda: vp_betas("linear", float("nan")), "num_train_timesteps: expected an integer"),
        (lambda: vp_betas("linear", float("inf")), "num_train_timesteps: expected an integer"),
        (lambda: vp_betas("linear", None), "num_train_timesteps: expected an integer"),
        (lambda: vp_betas("linear", True), "num_train_timesteps: expected an integer"),
        (lambda: vp_betas("linear", 10**13), "num_train_timesteps: needs"),
    ],
)
def test_vp_parameters_are_checked_naming_them(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_perturbations():
    x_0, eps = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
    np.testing.assert_allclose(ve_perturb(x_0, 2.0, eps), [2.0, 0.0])
    np.testing.assert_allclose(vp_perturb(x_0, 0.64, eps), [0.8 + 0.3, 1.6 - 0.6], rtol=1e-6)


def test_polyexponential_is_k_diffusions_formula_and_geometric_at_rho_1():
    n, sigma_min, sigma_max, rho = 7, 0.02, 80.0, 2.5
    # k-diffusion's get_sigmas_polyexponential, transcribed (descending, before its 0)
    ramp = np.linspace(1.0, 0.0, n) ** rho
    descending = np.exp(ramp * (np.log(sigma_max) - np.log(sigma_min)) + np.log(sigma_min))
    np.testing.assert_allclose(
        polyexponential_sigmas(n, sigma_min, sigma_max, rho), descending[::-1], rtol=2e-6
    )
    np.testing.assert_allclose(
        polyexponential_sigmas(n, sigma_min, sigma_max, 1.0),
        geometric_sigmas(n, sigma_min, sigma_max),
        rtol=2e-6,
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda n: geometric_sigmas(n),
        lambda n: karras_sigmas(n, 0.02, 80.0, 7.0),
        lambda n: vp_sigmas(n),
        lambda n: polyexponential_sigmas(n),
        lambda n: default_sigmas(n),
        lambda n: sigma_grid("geometric", n),
    ],
)
def test_a_grid_of_more_levels_than_jax_indexes_or_memory_holds_is_refused(build, monkeypatch):
    """``default_sigmas(10**12)`` warned of an int64 index truncated to int32, then aborted the
    interpreter (a 4 TB grid): refused, naming ``n``, before anything is allocated."""
    with pytest.raises(ValueError, match=re.escape("n: a sigma grid holds at most 2**31 - 1")):
        build(10**12)
    monkeypatch.setattr(_validate, "available_memory", lambda: 1000)
    with pytest.raises(ValueError, match="n: needs 3.12 KiB of memory, 1e\\+03 B available"):
        build(100)
    build(20)  # 640 bytes


@pytest.mark.parametrize(
    "key, message",
    [
        (0, r"key: expected a PRNG key \(jax.random.key\(seed\)\), got int"),
        (jax.random.split(jax.random.key(0), 3), "key: expected one PRNG key"),
    ],
)
def test_sample_ve_noise_names_a_key_that_is_not_one_prng_key(key, message):
    with pytest.raises(TypeError, match=message):
        sample_ve_noise(key, jnp.ones(2), 1.0)


def test_sample_ve_noise_takes_a_legacy_key():
    key = jax.random.key(3)
    legacy, typed = (sample_ve_noise(k, jnp.ones(2), 2.0) for k in (jax.random.key_data(key), key))
    np.testing.assert_array_equal(legacy[1], typed[1])


@pytest.mark.parametrize("rho", [0.0, float("nan"), 1e-30])
def test_a_refused_rho_is_a_rho_error(rho):
    """Every refusal of a grid's rho is a :class:`RhoError` (a ``ValueError``), so callers
    name their rho field by type."""
    with pytest.raises(RhoError, match=r"^rho"):
        karras_sigmas(10, 0.02, 10.0, rho)
    with pytest.raises(ValueError, match=r"merge") as error:
        karras_sigmas(10, 1.0, 1.0 + 1e-7, 5.0)
    assert not isinstance(error.value, RhoError)


def test_grid_defaults_are_the_documented_ones():
    """``vp_sigmas`` spans EDM's [0.02, 80] by default, and ``sigma_grid("karras", n)`` uses the
    tutorial's rho = 5 on [0.02, 10]: the middle of 3 levels is ((0.02^0.2 + 10^0.2) / 2)^5."""
    from scorelab.noise import sigma_grid, vp_sigmas

    levels = np.asarray(vp_sigmas(8))
    np.testing.assert_allclose([levels[0], levels[-1]], [0.02, 80.0], rtol=1e-5)
    middle = ((0.02**0.2 + 10**0.2) / 2) ** 5
    np.testing.assert_allclose(float(np.asarray(sigma_grid("karras", 3))[1]), middle, rtol=1e-5)


def test_vp_alpha_sigma_takes_both_ends_of_its_range():
    """alpha_bar in [0, 1], ends included: 0 is pure noise (alpha 0, sigma 1), 1 the data."""
    from scorelab.noise import vp_alpha_sigma

    alpha, sigma = vp_alpha_sigma(np.array([0.0, 0.5, 1.0], np.float32))
    np.testing.assert_allclose(alpha, [0.0, np.sqrt(0.5), 1.0], rtol=1e-6)
    np.testing.assert_allclose(sigma, [1.0, np.sqrt(0.5), 0.0], rtol=1e-6)
