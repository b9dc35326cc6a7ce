"""Sigma grids against the tutorial's own formula and closed forms."""

import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.noise import geometric_sigmas, karras_sigmas, ve_perturb, vp_perturb


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
        (dict(n=10, rho=0.0), "rho must be > 0"),
    ],
)
def test_grid_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        karras_sigmas(**kwargs)


def test_perturbations():
    x_0, eps = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
    np.testing.assert_allclose(ve_perturb(x_0, 2.0, eps), [2.0, 0.0])
    np.testing.assert_allclose(vp_perturb(x_0, 0.64, eps), [0.8 + 0.3, 1.6 - 0.6], rtol=1e-6)


def test_polyexponential_is_k_diffusions_formula_and_geometric_at_rho_1():
    from scorelab.noise import geometric_sigmas, polyexponential_sigmas

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
