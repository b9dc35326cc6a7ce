"""Learned grids (scorelab.ld3) on a Gaussian, whose probability-flow ODE and Euler's solve of it
are both closed forms, and the moment-matched VE prior."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab import ld3, samplers
from scorelab.models import ExactScore
from scorelab.noise import GRIDS_DIR, geometric_sigmas, read_saved_grid, sigma_grid
from scorelab.targets import gaussian

MEAN = np.array([1.0, -2.0])
VARIANCE = 0.25  # s^2 of the target N(MEAN, s^2 I)
SIGMA_MAX = 20.0


def _starts(seed, n):
    return samplers.ve_prior(jax.random.key(seed), n, 2, SIGMA_MAX)


def _teacher(x_T):
    """The ODE's exact solution: x_0 - m = (x_T - m) s / sqrt(s^2 + sigma_max^2)."""
    return MEAN + (x_T - MEAN) * np.sqrt(VARIANCE / (VARIANCE + SIGMA_MAX**2))


def _euler_gain(sigmas):
    """Euler on the Gaussian is linear: x_out - m = a (x_T - m), with a = s^2 / (s^2 +
    sigma_0^2) prod_k (1 + (sigma_{k-1} - sigma_k) sigma_k / (s^2 + sigma_k^2))."""
    sigmas = np.asarray(sigmas, np.float64)
    steps = 1 + np.diff(sigmas)[::-1] * -sigmas[1:][::-1] / (VARIANCE + sigmas[1:][::-1] ** 2)
    return np.prod(steps) * VARIANCE / (VARIANCE + sigmas[0] ** 2)


def test_global_error_is_the_closed_form_of_euler_on_a_gaussian():
    """Per chain, (a - a*)^2 |x_T - m|^2 with a Euler's gain and a* the ODE's."""
    score_fn = ExactScore(gaussian(MEAN, VARIANCE * np.eye(2)))
    sigmas = geometric_sigmas(6, 0.05, SIGMA_MAX)
    x_T = _starts(0, 64)
    error = ld3.global_error(samplers.euler(sigmas), score_fn, x_T, _teacher(x_T))
    exact_gain = np.sqrt(VARIANCE / (VARIANCE + SIGMA_MAX**2))
    expected = (_euler_gain(sigmas) - exact_gain) ** 2 * np.sum((x_T - MEAN) ** 2, axis=-1)
    np.testing.assert_allclose(error, expected, rtol=1e-3)


def test_the_search_lowers_its_error_on_training_and_held_out_starts():
    """On a Gaussian every chain's error is (a - a*)^2 |x_T - m|^2 (above), so the learned
    grid's error relative to the start's is the same ratio on any starts: held-out starts
    drop exactly as the training starts (float32 rounding aside)."""
    score_fn = ExactScore(gaussian(MEAN, VARIANCE * np.eye(2)))
    start = samplers.euler(geometric_sigmas(6, 0.05, SIGMA_MAX))
    x_T, held_out = _starts(1, 200), _starts(2, 200)
    sigmas, error, error_start = ld3.learn_grid(
        start, score_fn, x_T, _teacher(x_T), n_candidates=8, n_sweeps=2
    )
    assert sigmas[-1] == pytest.approx(SIGMA_MAX) and np.all(np.diff(sigmas) > 0)
    assert error < error_start
    before, after = (
        float(jnp.mean(ld3.global_error(s, score_fn, held_out, _teacher(held_out))))
        for s in (start, ld3.on_grid(start, sigmas))
    )
    np.testing.assert_allclose(after / before, error / error_start, rtol=1e-3)


def test_a_learned_grid_is_reused_by_path(tmp_path):
    path = tmp_path / "learned.json"
    sigmas = np.array([0.03, 0.4, 2.0, 7.0, SIGMA_MAX])
    ld3.save_learned_grid(path, sigmas, error=0.1, error_start=0.2, about={"sampler": "euler"})
    record = json.loads(path.read_text())
    assert record["kind"] == "ld3" and record["sampler"] == "euler"
    np.testing.assert_array_equal(
        sigma_grid(str(path), 5, 0.03, SIGMA_MAX), sigmas.astype(np.float32)
    )


@pytest.mark.parametrize(
    "name",
    ["ld3_seed_mixture_unipc2_10", "ld3_seed_mixture_ipndm_10", "ld3_seed_mixture_dpmpp2m_10"],
)
def test_a_bundled_learned_grid_loads_by_name(name):
    saved = read_saved_grid(f"ays:{name}")
    record = json.loads((GRIDS_DIR / f"{name}.json").read_text())
    assert record["kind"] == "ld3" and saved.size == 10 and saved[-1] == 80.0
    np.testing.assert_array_equal(
        sigma_grid(f"ays:{name}", 10, saved[0], saved[-1]), saved.astype(np.float32)
    )


@pytest.mark.parametrize("sampler", [samplers.euler_maruyama, samplers.ancestral])
def test_a_stochastic_sampler_is_refused_in_one_line(sampler):
    x_T = _starts(0, 4)
    with pytest.raises(ValueError, match="needs a deterministic sampler") as error:
        ld3.learn_grid(sampler(geometric_sigmas(5, 0.05, SIGMA_MAX)), None, x_T, x_T)
    assert "\n" not in str(error.value)


def test_the_moment_prior_has_the_mean_and_covariance_of_q_sigma():
    """N(m, C + sigma^2 I): sample mean and covariance within 4 standard errors of the closed
    form (covariance entry (i, j) has variance (S_ii S_jj + S_ij^2) / n for a Gaussian)."""
    n, sigma = 40_000, 3.0
    mean, covariance = np.array([1.5, -0.5]), np.array([[30.0, 12.0], [12.0, 20.0]])
    x = np.asarray(samplers.ve_prior(jax.random.key(0), n, 2, sigma, mean, covariance), np.float64)
    total = covariance + sigma**2 * np.eye(2)
    se_mean = np.sqrt(np.diag(total) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 4 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(total), np.diag(total)) + total**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - total), 4 * se_cov)


def test_the_moment_prior_with_zero_moments_is_the_standard_prior():
    """Same standard normals: m = 0, C = 0 gives sigma z (to float32 rounding); the default
    draws are unchanged by the new arguments."""
    key = jax.random.key(5)
    standard = samplers.ve_prior(key, 16, (1, 2, 2), 4.0)
    moments = samplers.ve_prior(key, 16, (1, 2, 2), 4.0, jnp.zeros((1, 2, 2)), jnp.zeros((4, 4)))
    np.testing.assert_allclose(moments, standard, rtol=1e-6)
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (1, 2, 2)))(jnp.arange(16))
    np.testing.assert_array_equal(standard, 4.0 * z)
