"""Probability-flow ODE samplers: convergence order, stated equivalences, independent parity.

The Gaussian target N(mu, s^2 I) has a closed-form probability-flow solution under VE noise,
x(sigma) = mu + (x_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2), so the error of a
solver is known exactly; the order tests run in float64 so that rounding stays far below it.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sampler_checks import assert_nfe_counts_score_evaluations
from _sampler_checks import flow_solution as _flow_solution
from _sampler_checks import gaussian_score as _gaussian_score
from _sampler_checks import run_with_trajectory as _run

from scorelab.models import ExactScore
from scorelab.noise import karras_sigmas
from scorelab.samplers import (
    DEFAULT_SIGMA_MAX,
    adaptive,
    ddim,
    default_sigmas,
    dpmpp_2m,
    edm,
    edm_gammas,
    euler,
    heun,
    sample,
    ve_prior,
)


@pytest.mark.parametrize(
    "build, order",
    [(euler, 1), (lambda sigmas: ddim(sigmas, eta=0.0), 1), (heun, 2), (dpmpp_2m, 2)],
    ids=["euler", "ddim_e0", "heun", "dpmpp_2m"],
)
def test_convergence_order_on_the_closed_form_flow(build, order):
    """Fitted slope of log-error against log-step: order within 0.3 (measured: Euler 0.98,
    DDIM eta=0 0.98, Heun 2.04, DPM-Solver++(2M) 1.94).

    The error is taken at sigma_0 (the trajectory's second-to-last record): the final step to
    sigma = 0 is the same first-order denoising step for every solver, and its error does not
    shrink with the grid's step.
    """
    errors, steps = [], []
    with jax.enable_x64(True):
        x_T = jnp.array([30.0, -25.0])
        for n in (16, 32, 64, 128):
            sigmas = np.geomspace(0.05, 20.0, n)  # float64: check_sigmas keeps it under x64
            out = _run(build(sigmas).run, _gaussian_score, x_T)
            assert out.trajectory.dtype == jnp.float64
            exact = _flow_solution(np.asarray(x_T), sigmas[0], sigmas[-1])
            errors.append(np.linalg.norm(np.asarray(out.trajectory[-2]) - exact))
            steps.append(np.log(sigmas[-1] / sigmas[0]) / (n - 1))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.3, slope


@pytest.mark.parametrize(
    "build",
    [euler, lambda sigmas: ddim(sigmas, eta=0.0), heun, dpmpp_2m],
    ids=["euler", "ddim_e0", "heun", "dpmpp_2m"],
)
def test_the_last_step_is_tweedies_denoiser_at_sigma_0(build):
    """The order tests read the state at sigma_0 because the final step to 0 is the same
    first-order step for every solver: Tweedie's denoiser x + sigma_0^2 s(x, sigma_0), checked
    here (pass 32: DEIS's last step could change unseen)."""
    with jax.enable_x64(True):
        sigmas = np.geomspace(0.05, 20.0, 12)
        out = _run(build(sigmas).run, _gaussian_score, jnp.array([30.0, -25.0]))
        last, sigma_0 = out.trajectory[-2], sigmas[0]
        denoised = last + sigma_0**2 * _gaussian_score(last, sigma_0)
        np.testing.assert_allclose(out.x, denoised, rtol=0, atol=1e-12)


def test_edm_churn_is_s_churn_over_n_within_its_levels():
    """EDM Alg. 2's gamma_i = min(S_churn / N, sqrt 2 - 1) on s_tmin <= sigma_i <= s_tmax,
    both ends included, N the number of levels (k-diffusion's len(sigmas) - 1, its grid ending
    at 0). Every other test churned so hard that the cap hid N (pass 32)."""
    sigmas = default_sigmas(50)
    np.testing.assert_allclose(edm_gammas(sigmas, 5.0), 0.1, rtol=1e-6)  # 5 / 50, below the cap
    capped = edm_gammas(sigmas, 40.0)
    np.testing.assert_allclose(capped, np.sqrt(2) - 1, rtol=1e-6)
    levels = np.asarray(sigmas)
    low, high = float(levels[10]), float(levels[20])
    inside = np.asarray(edm_gammas(sigmas, 5.0, low, high))[::-1] > 0  # gammas run top down
    np.testing.assert_array_equal(np.flatnonzero(inside), np.arange(10, 21))
    one = np.asarray(edm_gammas(sigmas, 5.0, low, low))[::-1]  # one level churns
    np.testing.assert_array_equal(np.flatnonzero(one), [10])


def test_euler_equals_ddim_e0_step_for_step(mixture):
    """Docstring claim (Karras et al. 2022, Sec. 4): VE-DDIM with e = 0 is Euler in sigma."""
    sigmas = default_sigmas(40)
    x_T = jnp.array([35.0, -12.0])
    score_fn = ExactScore(mixture)
    by_euler = _run(euler(sigmas).run, score_fn, x_T)
    by_ddim = _run(ddim(sigmas, eta=0.0).run, score_fn, x_T, jnp.zeros((40, 2)))
    # Two float32 orders of the same arithmetic on states of size ~10: a few ulps.
    np.testing.assert_allclose(by_euler.trajectory, by_ddim.trajectory, rtol=0, atol=1e-5)


def test_heun_is_edm_without_churn_and_edm_matches_karras_algorithm_2(mixture):
    sigmas = karras_sigmas(12, 0.002, 80.0, rho=7.0)
    score_fn = ExactScore(mixture)
    x_T = jnp.array([40.0, 25.0])
    noise = jax.random.normal(jax.random.key(1), (12, 2))
    no_churn = _run(edm(sigmas, s_churn=0.0).run, score_fn, x_T, noise)
    np.testing.assert_array_equal(no_churn.x, _run(heun(sigmas).run, score_fn, x_T).x)

    # Karras et al. (2022), Alg. 2, transcribed in float64 NumPy with the same draws.
    s_churn, s_tmin, s_tmax, s_noise = 30.0, 0.05, 50.0, 1.003
    out = _run(edm(sigmas, s_churn, s_tmin, s_tmax, s_noise).run, score_fn, x_T, noise)
    t = np.append(np.asarray(sigmas, np.float64)[::-1], 0.0)
    n_steps = 12

    score_32 = eqx.filter_jit(score_fn)

    def denoise(x, sigma):
        return x + sigma**2 * np.asarray(score_32(jnp.asarray(x, jnp.float32), sigma))

    x = np.asarray(x_T, np.float64)
    for i in range(n_steps):
        gamma = min(s_churn / n_steps, np.sqrt(2) - 1) if s_tmin <= t[i] <= s_tmax else 0.0
        t_hat = t[i] + gamma * t[i]
        x_hat = x + np.sqrt(t_hat**2 - t[i] ** 2) * s_noise * np.asarray(noise[i], np.float64)
        d = (x_hat - denoise(x_hat, t_hat)) / t_hat
        x = x_hat + (t[i + 1] - t_hat) * d
        if t[i + 1] != 0:
            d_prime = (x - denoise(x, t[i + 1])) / t[i + 1]
            x = x_hat + (t[i + 1] - t_hat) * (0.5 * d + 0.5 * d_prime)
        np.testing.assert_allclose(out.trajectory[i], x, rtol=0, atol=2e-4)
    gammas = np.asarray(edm_gammas(sigmas, s_churn, s_tmin, s_tmax))
    assert 0 < (gammas > 0).sum() < n_steps  # the test covers churned and plain steps


def test_dpmpp_2m_matches_k_diffusion(mixture):
    """A NumPy transcription of k-diffusion's ``sample_dpmpp_2m`` (float64) on the same grid."""
    sigmas = karras_sigmas(15, 0.002, 80.0, rho=7.0)
    score_fn = ExactScore(mixture)
    x_T = jnp.array([-50.0, 20.0])
    out = _run(dpmpp_2m(sigmas).run, score_fn, x_T)

    sigmas_kd = np.append(np.asarray(sigmas, np.float64)[::-1], 0.0)  # k-diffusion's layout
    score_32 = eqx.filter_jit(score_fn)
    x, old_denoised = np.asarray(x_T, np.float64), None
    for i in range(len(sigmas_kd) - 1):
        sigma = sigmas_kd[i]
        denoised = x + sigma**2 * np.asarray(score_32(jnp.asarray(x, jnp.float32), sigma))
        t, t_next = -np.log(sigma), -np.log(sigmas_kd[i + 1]) if sigmas_kd[i + 1] > 0 else np.inf
        h = t_next - t
        if old_denoised is None or sigmas_kd[i + 1] == 0:
            x = (sigmas_kd[i + 1] / sigma) * x - np.expm1(-h) * denoised
        else:
            r = (t - (-np.log(sigmas_kd[i - 1]))) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas_kd[i + 1] / sigma) * x - np.expm1(-h) * denoised_d
        old_denoised = denoised
        np.testing.assert_allclose(out.trajectory[i], x, rtol=0, atol=1e-4)


@pytest.mark.slow  # adaptive solves at several tolerances
def test_adaptive_counts_every_evaluation_and_meets_its_tolerance():
    """NFE from diffrax's statistics equals a counter inside the score; tighter tolerances cost
    more evaluations and land closer to the closed-form solution."""
    calls = []

    def counting_score(x, sigma):
        jax.debug.callback(lambda: calls.append(None))
        return _gaussian_score(x, sigma)

    sigmas = np.geomspace(0.05, 20.0, 8)
    errors, nfes = [], []
    with jax.enable_x64(True):
        x_T = jnp.array([30.0, -25.0])
        exact = _flow_solution(np.asarray(x_T), sigmas[0], sigmas[-1])
        for solver, tolerance in [("tsit5", 1e-3), ("tsit5", 1e-7), ("dopri5", 1e-7)]:
            calls.clear()
            sampler = adaptive(sigmas, solver, rtol=tolerance, atol=tolerance)
            out = sampler.run(jax.random.key(0), counting_score, x_T, trajectory=True)
            jax.effects_barrier()
            assert sampler.nfe is None and int(out.nfe) == len(calls)
            # trajectory[-2] is the dense-output state at sigma_0; the solve ends there.
            errors.append(np.linalg.norm(np.asarray(out.trajectory[-2]) - exact))
            nfes.append(int(out.nfe))
            assert out.trajectory.shape == (8, 2)
    assert errors[1] < 1e-4 < errors[0] or errors[1] < errors[0] / 100
    assert nfes[1] > nfes[0]
    assert errors[2] < 1e-4


@pytest.mark.slow  # about 11 s of a worker: kept out of the default suite's 15 minutes
def test_adaptive_nfe_is_per_chain_under_the_driver(mixture):
    sampler = adaptive(default_sigmas(10), "tsit5", rtol=1e-3, atol=1e-3)
    x_T = ve_prior(jax.random.key(2), 16, 2, DEFAULT_SIGMA_MAX)
    out = sample(jax.random.key(3), sampler, ExactScore(mixture), x_T)
    alone = sample(jax.random.key(3), sampler, ExactScore(mixture), x_T[:4])
    assert out.nfe.shape == (16,) and np.all(out.nfe >= 6 + 2)
    np.testing.assert_array_equal(out.nfe[:4], alone.nfe)  # a chain's cost is its own
    np.testing.assert_allclose(out.x[:4], alone.x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "sampler, nfe",
    [(euler(default_sigmas(7)), 7), (heun(default_sigmas(7)), 13), (edm(default_sigmas(7)), 13),
     (dpmpp_2m(default_sigmas(7)), 7)],
    ids=["euler", "heun", "edm", "dpmpp_2m"],
)  # fmt: skip
def test_nfe_counts_score_evaluations(sampler, nfe):
    assert_nfe_counts_score_evaluations(sampler, nfe, n_levels=7)


def test_deterministic_samplers_draw_nothing():
    with pytest.raises(ValueError, match=r"noise must have shape \(0, 2\)"):
        heun(default_sigmas(5)).run(jax.random.key(0), lambda x, s: -x, jnp.ones(2), False,
                                    jnp.ones((5, 2)))  # fmt: skip
    with pytest.raises(ValueError, match="unknown solver"):
        adaptive(default_sigmas(5), "rk4")
    with pytest.raises(ValueError, match="s_churn"):
        edm(default_sigmas(5), s_churn=-1.0)


@pytest.mark.parametrize("rtol, atol", [(1e-3, 0.0), (0.0, 1e-3), (1.0, 1e-3)])
def test_adaptive_solvers_refuse_tolerances_outside_their_ranges(rtol, atol):
    """atol = 0 leaves a step near x = 0 no error it can meet; rtol in (0, 1)."""
    with pytest.raises(ValueError, match="need 0 < rtol < 1 and atol > 0"):
        adaptive(default_sigmas(4), rtol=rtol, atol=atol)
