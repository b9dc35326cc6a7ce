"""Sigma grids of the sampler map: the VP SDE's uniform-in-t grid and the log-SNR grid."""

import numpy as np
import pytest
from scipy import integrate

from scorelab.noise import (
    VP_BETA_MAX,
    VP_BETA_MIN,
    log_snr_sigmas,
    sigma_grid,
    vp_sde_sigma,
    vp_sde_time,
    vp_sigmas,
)


def _vp_sde_sigma_by_quadrature(t):
    """sigma_t / alpha_t with alpha_t = exp(-1/2 int_0^t beta), integrated numerically."""
    integral, _ = integrate.quad(lambda s: VP_BETA_MIN + s * (VP_BETA_MAX - VP_BETA_MIN), 0, t)
    alpha_t = np.exp(-0.5 * integral)
    return np.sqrt(1.0 - alpha_t**2) / alpha_t


def test_vp_sde_sigma_matches_the_integrated_sde_and_inverts():
    t = np.array([1e-3, 0.1, 0.5, 1.0])
    expected = [_vp_sde_sigma_by_quadrature(v) for v in t]
    np.testing.assert_allclose(vp_sde_sigma(t), expected, rtol=1e-5)
    np.testing.assert_allclose(vp_sde_time(vp_sde_sigma(t)), t, rtol=1e-5)
    # Song et al.'s t in [1e-3, 1] spans these levels (the docstrings quote them).
    np.testing.assert_allclose(vp_sde_sigma(np.array([1e-3, 1.0])), [0.01049, 152.17], rtol=1e-3)


def test_vp_grid_is_uniform_in_time_with_pinned_end_points():
    sigmas = vp_sigmas(9, 0.02, 80.0)
    assert sigmas.shape == (9,) and sigmas[0] == np.float32(0.02) and sigmas[-1] == 80.0
    steps = np.diff(np.asarray(vp_sde_time(np.asarray(sigmas, np.float64))))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-4)
    np.testing.assert_array_equal(sigma_grid("vp", 9, 0.02, 80.0), sigmas)


def test_log_snr_grid_is_uniform_in_log_snr():
    sigmas = np.asarray(log_snr_sigmas(7, -8.0, 10.0), np.float64)
    log_snr = -2.0 * np.log(sigmas)  # log(alpha_t^2 / sigma_t^2) of the VP level
    np.testing.assert_allclose(log_snr, np.linspace(10.0, -8.0, 7), atol=1e-5)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: vp_sigmas(5, 0.02, 80.0, beta_min=2.0, beta_max=1.0), "beta_min"),
        (lambda: vp_sigmas(1), "n >= 2"),
        (lambda: log_snr_sigmas(5, 3.0, -3.0), "log_snr_min"),
    ],
)
def test_bad_grid_arguments_are_rejected(build, match):
    with pytest.raises(ValueError, match=match):
        build()
