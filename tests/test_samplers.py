"""Samplers: parity with the tutorial, closed forms, and the exact-score oracle.

Statistical tests state their tolerance and where it comes from; seeds are fixed and were not
chosen. The oracle numbers quoted in comments were measured over 8 seeds (4000 samples each) with
the exact score; they are there to show the margin, not to set it.
"""

import _tutorial_reference as tutorial
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.metrics import floor, mixture_report, sliced_wasserstein
from scorelab.models import ExactScore
from scorelab.noise import karras_sigmas
from scorelab.samplers import (
    DEFAULT_SIGMA_MAX,
    SAMPLERS,
    ancestral,
    annealed_langevin,
    build_sampler,
    ddim,
    default_sigmas,
    dpm_2_ancestral,
    dpmpp_sde,
    exact_prior,
    heun,
    inference_process,
    mala,
    restart,
    sample,
    ula,
    ve_ddim_etas,
    ve_prior,
)
from scorelab.targets import gaussian, seed_mixture

N_TUTORIAL = 50  # the tutorial's make_ddim_sampler(50, ...)
N_ORACLE = 4000  # samples per oracle run (issue 2)
N_LEVELS = 100  # levels of the oracle runs (issue 2)


def _run_one(sampler, score_fn, x_init, noise):
    """One chain with injected noise; one compilation serves every sampler of a kind and size."""
    return _run_compiled(sampler.run, score_fn, x_init, noise)


@eqx.filter_jit
def _run_compiled(run, score_fn, x_init, noise):
    # `run` is bound to the sampler, an Equinox module: its grid and numbers are traced.
    return run(jax.random.key(0), score_fn, x_init, True, noise)


def _float32(array) -> np.ndarray:
    """``array`` rounded to float32 and back, so NumPy and JAX start from the same numbers."""
    return np.asarray(array, np.float32).astype(np.float64)


# --- parity with an independent NumPy transcription of the tutorial ----------------------------


@pytest.mark.parametrize("eta", [0.5, 1.0, 3.0])
def test_ddim_noise_stays_below_the_next_level_under_the_tutorials_1e_8(eta):
    """The tutorial clips the noise at sigma_prev - 1e-8: negative below 1e-8, where every eta
    was negative and every chain NaN (``--sigma-min 1e-10``, pass 18, #5), and equal to
    sigma_prev in float32 above 0.1, a negative variance by rounding (NaN for eta > 1). Each
    deviation lies in [0, sigma_prev), the tutorial's within 2e-6 above 1e-8, and DDIM is
    finite."""
    sigmas = karras_sigmas(50, 1e-10, 10.0)
    etas = np.asarray(ve_ddim_etas(sigmas, eta), np.float64)[1:]
    previous = np.asarray(sigmas, np.float64)[:-1]
    assert np.all(etas >= 0) and np.all(etas < previous)
    reference = tutorial.tutorial_ddim_etas(np.asarray(sigmas, np.float64), eta, 0.0)[1:]
    np.testing.assert_allclose(etas[previous > 1e-8], reference[previous > 1e-8], rtol=2e-6)
    target = gaussian(jnp.zeros(2), jnp.eye(2))
    noise = jax.random.normal(jax.random.key(1), (50, 2))
    out = _run_one(ddim(sigmas, eta=eta), target.ve_score, 10.0 * noise[0], noise)
    assert np.all(np.isfinite(np.asarray(out.x))) and np.all(np.isfinite(out.trajectory))


@pytest.mark.parametrize("e", [0.0, 0.2, 1.0])
def test_ddim_matches_numpy_transcription_of_tutorial(mixture, e):
    eta_0 = 0.5  # nonzero, so the final step's draw is checked too
    sigmas = karras_sigmas(N_TUTORIAL)  # the tutorial's grid (0.02 to 10, rho 5)
    sigmas_64 = np.asarray(sigmas, np.float64)
    np.testing.assert_allclose(sigmas_64, tutorial.tutorial_sigmas(N_TUTORIAL), rtol=1e-5)
    etas_64 = tutorial.tutorial_ddim_etas(sigmas_64, e, eta_0)
    np.testing.assert_allclose(ve_ddim_etas(sigmas, e, eta_0), etas_64, rtol=1e-5, atol=1e-7)

    score_64 = tutorial.mixture_ve_score(mixture.means, mixture.covariances, mixture.weights)
    sampler = ddim(sigmas, e, eta_0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x_T = _float32(10.0 * rng.standard_normal(2))  # the tutorial's prior N(0, 10^2 I)
        noise = _float32(rng.standard_normal((N_TUTORIAL, 2)))
        expected = tutorial.ddim_sampling(x_T, noise, etas_64, sigmas_64, score_64)
        out = _run_one(sampler, ExactScore(mixture), jnp.asarray(x_T), jnp.asarray(noise))
        # float32 against float64 over 50 steps on states of size ~10: a few ulps per step.
        np.testing.assert_allclose(out.trajectory, expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(out.x, out.trajectory[-1])


@pytest.mark.parametrize("e", [0.0, 0.2, 1.0])
def test_inference_process_matches_numpy_transcription_of_tutorial(mixture, e):
    sigmas = karras_sigmas(100)
    sigmas_64 = np.asarray(sigmas, np.float64)
    rng = np.random.default_rng(1)
    x_0 = _float32(mixture.means[4] + 0.3 * rng.standard_normal(2))
    x_T = _float32(x_0 + 10.0 * rng.standard_normal(2))
    noise = _float32(rng.standard_normal((99, 2)))
    expected = tutorial.inference_process_sampling(
        x_T, noise, x_0, tutorial.tutorial_inference_etas(sigmas_64, e), sigmas_64
    )
    out = inference_process(
        jax.random.key(0), jnp.asarray(x_0), jnp.asarray(x_T), sigmas, ve_ddim_etas(sigmas, e),
        noise=jnp.asarray(noise),
    )  # fmt: skip
    np.testing.assert_allclose(out.trajectory, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.x, out.trajectory[-1])


def test_annealed_langevin_matches_numpy_transcription_of_sequential_ula():
    # The update and the schedule do not depend on which score is used: a closed-form
    # Gaussian score keeps this test cheap.
    mean, variance = np.array([1.0, -1.0]), 0.5

    def score_64(x, sigma):
        return (mean - x) / (variance + sigma**2)

    def score_32(x, sigma):
        return (jnp.asarray(mean, jnp.float32) - x) / (variance + sigma**2)

    sigmas = karras_sigmas(10)
    sigmas_64 = np.asarray(sigmas, np.float64)
    rng = np.random.default_rng(2)
    x_init = _float32(10.0 * rng.standard_normal(2))
    noise = _float32(rng.standard_normal((30, 2)))
    # The tutorial's ratio 1e-4 and stds[::-1]; 3 steps per level.
    expected = tutorial.sequential_ula(x_init, noise, sigmas_64[::-1], 3, score_64, 1e-4)
    sampler = annealed_langevin(sigmas, n_steps_per_level=3, step_ratio=1e-4)
    out = _run_one(sampler, score_32, jnp.asarray(x_init), jnp.asarray(noise))
    np.testing.assert_allclose(out.trajectory, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.0, -1e-4])
def test_annealed_langevin_refuses_a_step_ratio_that_cannot_move_the_chains(ratio):
    """At step_ratio 0 every step is x <- x: the prior came back as samples (pass 32)."""
    with pytest.raises(ValueError, match="step_ratio must be > 0"):
        annealed_langevin(default_sigmas(5), step_ratio=ratio)


def test_annealed_langevin_warns_from_its_bound_on():
    """The warning's bound 2 sigma_min^2 is itself divergent (a = -1: the chains oscillate
    without contracting), so the warning starts there, not past it; just below, none."""
    import warnings

    sigmas = karras_sigmas(10)
    bound = 2 * float(sigmas[0]) ** 2
    with pytest.warns(UserWarning, match="step_ratio"):
        annealed_langevin(sigmas, step_ratio=bound)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        annealed_langevin(sigmas, step_ratio=float(np.nextafter(bound, 0.0)))


def test_annealed_langevin_warns_where_its_step_ratio_diverges():
    """On N(0, c I) with its exact noised score the chain is linear: each step is
    x <- a x + sqrt(2 gamma) z with a = 1 - gamma / (sigma^2 + c), so its variance follows
    v <- a^2 v + 2 gamma exactly. Where sigma^2 dominates c, a = 1 - r / sigma_min^2, hence the
    bound r < 2 sigma_min^2. At r = 3 sigma_min^2 (a = -2 on the top levels) the sampler warns
    and its chains' variance grows by orders of magnitude, as the recursion says; at
    r = sigma_min^2 / 2 (the default's a = 1/2) it does not warn. Both variances match the
    recursion within 5 standard errors (8000 coordinates: se = v sqrt(2 / 8000))."""
    import warnings

    c, n_steps = 0.1, 3
    sigmas = karras_sigmas(10)  # sigma_min 0.02, sigma_max 10
    score = ExactScore(gaussian(jnp.zeros(2), c * jnp.eye(2)))
    x_init = ve_prior(jax.random.key(0), 4000, 2, float(sigmas[-1]))
    bound = 2 * float(sigmas[0]) ** 2
    with pytest.warns(UserWarning, match="step_ratio 0.0012 >= 2 sigma_min"):
        unstable = annealed_langevin(sigmas, n_steps_per_level=n_steps, step_ratio=1.5 * bound)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stable = annealed_langevin(sigmas, n_steps_per_level=n_steps, step_ratio=bound / 4)
    for sampler, ratio in ((unstable, 1.5 * bound), (stable, bound / 4)):
        predicted = float(sigmas[-1]) ** 2
        for sigma in np.asarray(sigmas, np.float64)[::-1]:
            gamma = ratio * (sigma / float(sigmas[0])) ** 2
            for _ in range(n_steps):
                predicted = (1 - gamma / (sigma**2 + c)) ** 2 * predicted + 2 * gamma
        x = np.asarray(sample(jax.random.key(1), sampler, score, x_init).x, np.float64)
        assert abs(np.mean(x**2) / predicted - 1) < 5 * np.sqrt(2 / x.size), (ratio, predicted)
    assert predicted < 1.0  # the stable chains end near the law's scale; the others do not


def test_ula_step_formula():
    step_size, sigma = 0.05, 0.3
    rng = np.random.default_rng(3)
    x_init, noise = _float32(rng.standard_normal(2)), _float32(rng.standard_normal((4, 2)))

    def score_64(x, s):
        return -x / (1.0 + s**2)

    x, expected = x_init, []
    for z in noise:
        x = x + step_size * score_64(x, sigma) + np.sqrt(2 * step_size) * z
        expected.append(x)
    out = _run_one(
        ula(step_size, 4, sigma=sigma), lambda x, s: -x / (1.0 + s**2), jnp.asarray(x_init),
        jnp.asarray(noise),
    )  # fmt: skip
    np.testing.assert_allclose(out.trajectory, np.stack(expected), rtol=0, atol=1e-6)


def test_ddim_with_e0_is_euler_on_the_probability_flow_ode():
    """Docstring claim: x_{k-1} = x_k + (sigma_{k-1} - sigma_k) (-sigma_k s(x_k, sigma_k))."""

    # An identity for any score: a cheap closed-form one (N(m, (1 + sigma^2) I)) will do.
    def score_fn(x, sigma):
        return (jnp.array([1.0, -2.0]) - x) / (1.0 + sigma**2)

    sigmas = karras_sigmas(N_TUTORIAL)
    x_T = jnp.array([7.0, -4.0])
    # With eta = 0 and final_noise = 0 the draws are multiplied by zero.
    out = _run_one(ddim(sigmas, eta=0.0), score_fn, x_T, jnp.ones((N_TUTORIAL, 2)))
    states = jnp.concatenate([x_T[None], out.trajectory])
    sigma_from = sigmas[::-1]
    sigma_to = jnp.concatenate([sigmas[:-1][::-1], jnp.zeros(1)])  # the last step lands on 0
    scores = jax.vmap(score_fn)(states[:-1], sigma_from)
    euler = states[:-1] + (sigma_to - sigma_from)[:, None] * (-sigma_from[:, None] * scores)
    # Both sides in float32 from the same states: equal up to rounding (ulp(8) = 1e-6).
    np.testing.assert_allclose(states[1:], euler, rtol=0, atol=1e-5)


# --- closed forms ------------------------------------------------------------------------------


def test_inference_process_keeps_the_marginals(mixture):
    """Docstring claim: x_k | x_0 ~ N(x_0, sigma_k^2 I) for any eta (Song et al. 2021, Lemma 1)."""
    sigmas = karras_sigmas(100)
    etas = ve_ddim_etas(sigmas, 0.2)  # neither Bayes (e = 1) nor deterministic
    x_0 = mixture.means[2]
    n = 4000
    key_start, key_chain = jax.random.split(jax.random.key(3))
    x_T = x_0 + sigmas[-1] * jax.random.normal(key_start, (n, 2))
    keys = jax.random.split(key_chain, n)
    trajectory = jax.jit(
        jax.vmap(lambda k, x: inference_process(k, x_0, x, sigmas, etas).trajectory)
    )(keys, x_T)
    for level in (98, 50, 0):  # trajectory[j] sits at sigmas[98 - j]
        deviations = np.asarray(trajectory[:, 98 - level] - x_0, np.float64).ravel()
        sigma = float(sigmas[level])
        # 2n iid N(0, sigma^2) values: SE of the mean sigma / sqrt(2n), of the variance
        # sigma^2 sqrt(2 / (2n)); 4 SE each.
        assert abs(deviations.mean()) < 4 * sigma / np.sqrt(2 * n)
        assert abs(deviations.var() - sigma**2) < 4 * sigma**2 * np.sqrt(1.0 / n)


def test_ula_matches_its_exact_stationary_gaussian():
    """ULA on N(m, S) is stationary at N(m, S (I - gamma S^-1 / 2)^-1), exactly."""
    mean = np.array([1.0, -2.0])
    covariance = np.array([[1.0, 0.5], [0.5, 1.0]])  # eigenvalues 0.5 and 1.5
    target = gaussian(mean, covariance)
    step_size, n_steps, n = 0.25, 100, 8000
    stationary = covariance @ np.linalg.inv(np.eye(2) - 0.5 * step_size * np.linalg.inv(covariance))
    key_start, key_chain = jax.random.split(jax.random.key(4))
    # Start from N(m, S): the mean is already stationary, and the covariance error decays as
    # (1 - gamma / 1.5)^(2 n_steps) = 1e-16.
    x = sample(key_chain, ula(step_size, n_steps), ExactScore(target), target.sample(key_start, n))
    x = np.asarray(x.x, np.float64)
    # Chains are independent (fold_in per chain): SE of the mean sqrt(C_ii / n), of a covariance
    # entry sqrt((C_ii C_jj + C_ij^2) / n) for Gaussian data; 4 SE per entry.
    se_mean = np.sqrt(np.diag(stationary) / n)
    se_cov = np.sqrt((np.outer(np.diag(stationary), np.diag(stationary)) + stationary**2) / n)
    assert np.all(np.abs(x.mean(axis=0) - mean) < 4 * se_mean)
    assert np.all(np.abs(np.cov(x, rowvar=False) - stationary) < 4 * se_cov)
    # Power: the naive answer S is more than 8 SE away, so this test tells the two apart.
    assert np.max(np.abs(covariance - stationary) / se_cov) > 8


# --- the driver ----------------------------------------------------------------------------------

_TRACES = []


class _CountingGaussianScore(eqx.Module):
    """Score of N(mean, (variance + sigma^2) I); appends to _TRACES each time it is traced."""

    mean: jax.Array
    variance: jax.Array

    def __call__(self, x, sigma):
        _TRACES.append(None)  # a Python side effect: runs when traced, not when executed
        return (self.mean - x) / (self.variance + sigma**2)


def test_chains_do_not_depend_on_the_batch_and_compile_once():
    key_prior, key_chain = jax.random.split(jax.random.key(5))
    x_init = ve_prior(key_prior, 32, 2, DEFAULT_SIGMA_MAX)
    np.testing.assert_array_equal(ve_prior(key_prior, 8, 2, DEFAULT_SIGMA_MAX), x_init[:8])
    sampler = ddim(default_sigmas(20), eta=1.0, final_noise=0.1)
    score_fn = _CountingGaussianScore(jnp.zeros(2), jnp.asarray(1.0))
    _TRACES.clear()
    out_32 = sample(key_chain, sampler, score_fn, x_init, trajectory=True)
    n_traces = len(_TRACES)
    assert n_traces > 0
    out_8 = sample(key_chain, sampler, score_fn, x_init[:8], trajectory=True)
    assert len(_TRACES) > n_traces  # the counter sees a retrace: 8 chains is a new shape
    # Chain i depends on fold_in(key, i) only; XLA's batching of float32 arithmetic may differ.
    np.testing.assert_allclose(out_8.x, out_32.x[:8], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out_8.trajectory, out_32.trajectory[:8], rtol=1e-6, atol=1e-6)
    assert out_32.trajectory.shape == (32, sampler.nfe, 2)

    # Another key, start, grid, eta, final_noise and score weights, same shapes: all traced
    # leaves of a pytree (sampler and score are Equinox modules), so nothing is traced again.
    n_traces = len(_TRACES)
    other_sampler = ddim(default_sigmas(20, sigma_max=10.0), eta=0.0, final_noise=0.3)
    other_score = _CountingGaussianScore(jnp.ones(2), jnp.asarray(2.0))
    sample(jax.random.key(8), other_sampler, other_score, 2 * x_init, trajectory=True)
    assert len(_TRACES) == n_traces


@pytest.mark.parametrize(
    "sampler, nfe",
    [
        (ula(0.01, 7), 7),
        (annealed_langevin(default_sigmas(10), n_steps_per_level=3), 30),
        (ddim(default_sigmas(10), eta=0.5), 10),
    ],
    ids=["ula", "annealed_langevin", "ddim"],
)
def test_nfe_counts_score_evaluations(sampler, nfe):
    calls = []

    def score_fn(x, sigma):
        jax.debug.callback(lambda: calls.append(None))  # runs at every evaluation
        return -x

    out = sampler.run(jax.random.key(9), score_fn, jnp.ones(2), trajectory=True)
    jax.effects_barrier()
    assert sampler.nfe == nfe == len(calls)
    assert out.trajectory.shape == (nfe, 2)  # one record per step for all three
    np.testing.assert_array_equal(out.trajectory[-1], out.x)


def test_noise_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="noise must have shape"):
        ddim(default_sigmas(10)).run(
            jax.random.key(0), lambda x, s: -x, jnp.ones(2), False, jnp.ones((9, 2))
        )


def test_descending_grid_is_rejected():
    with pytest.raises(ValueError, match="ascending"):
        ddim(default_sigmas(10)[::-1])


# --- the exact-score oracle ----------------------------------------------------------------------

# Reference values at 4000 samples, 10 seeds (mean +- sd of one run): exact samples have a mode
# TV of 0.016 +- 0.004 (multinomial noise), a variance ratio of 1 +- 1/sqrt(4000) = 0.016
# (chi^2_2 / 2 has variance 1) and a sliced-Wasserstein floor of 0.66 +- 0.12.
ORACLE_SAMPLERS = {
    # Measured with the exact score, default grid (TV; variance ratio; SW / floor):
    "ddim_e0": lambda sigmas: ddim(sigmas, eta=0.0),  # 0.026 +- 0.008; 1.05 +- 0.02; 1.13
    "ddim_e1": lambda sigmas: ddim(sigmas, eta=1.0),  # 0.022 +- 0.007; 0.92 +- 0.01; 1.12
    "annealed_langevin": annealed_langevin,  # 0.022 +- 0.004; 1.05 +- 0.02; 1.06
}


def _oracle_runs(mixture, sampler, repeats, seed):
    """``repeats`` independent runs of 4000 chains from N(0, 80^2 I) with the exact score."""
    for r in range(repeats):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), r), 3)
        key_prior, key_chain, key_exact = keys
        x_T = ve_prior(key_prior, N_ORACLE, 2, DEFAULT_SIGMA_MAX)
        yield sample(key_chain, sampler, ExactScore(mixture), x_T).x, key_exact


# Annealed Langevin (500 exact-score evaluations per chain, ~15 s of CPU per run) is checked
# against the same bounds by the slow test below.
@pytest.mark.parametrize("name", ["ddim_e0", "ddim_e1"])
def test_oracle_mode_weights_and_spread(mixture, name):
    """Default settings, exact score, 4000 samples: TV <= 0.04, within-mode variance 0.85-1.2x.

    The bounds are issue 2's; both are checked on the mean over 3 runs, because one run's TV
    has an sd of up to 0.008 (ORACLE_SAMPLERS), which would leave e = 0 (mean 0.026) only
    1.8 sd from the bound; over 3 runs every measured mean sits >= 3 sd inside both bounds.
    The remaining systematic errors are discretisation at 100 levels: they vanish at 400.
    """
    sampler = ORACLE_SAMPLERS[name](default_sigmas(N_LEVELS))
    reports = [mixture_report(x, mixture) for x, _ in _oracle_runs(mixture, sampler, 3, 10)]
    assert all(report.n_empty == 0 for report in reports)
    assert np.mean([report.total_variation for report in reports]) <= 0.04
    assert 0.85 <= np.mean([report.variance_ratio_mean for report in reports]) <= 1.2


def test_tutorial_prior_mismatch_is_reproduced(mixture):
    """The tutorial's sigma_max = 10 with x_T ~ N(0, 100 I): wrong mode weights, whatever the score.

    Measured over 10 seeds: TV 0.132 +- 0.007 for e = 0 (issue 2: about 0.13), against
    0.016 +- 0.004 for exact samples, so 0.08 is 16 sd above the exact value and 7 sd below
    the measured one. Starting the same grid from the exact q_10 removes it (TV 0.018 +- 0.005,
    5 sd below 0.04): the mismatch is the prior's, not the grid's.
    """
    sigmas = karras_sigmas(N_LEVELS)  # the tutorial's grid
    sampler, score_fn = ddim(sigmas, eta=0.0), ExactScore(mixture)
    key_prior, key_chain = jax.random.split(jax.random.key(12))
    x_gaussian = ve_prior(key_prior, N_ORACLE, 2, float(sigmas[-1]))
    mismatched = mixture_report(sample(key_chain, sampler, score_fn, x_gaussian).x, mixture)
    assert mismatched.total_variation > 0.08
    x_exact = exact_prior(key_prior, mixture, N_ORACLE, sigmas[-1])
    matched = mixture_report(sample(key_chain, sampler, score_fn, x_exact).x, mixture)
    assert matched.total_variation <= 0.04


SW_REPEATS = 10


def _sliced_wasserstein(x, y):
    # 250 directions: the floor's spread comes from the samples (mode weights), not from the
    # directions, and POT's cost grows with their number (4 s of CPU per call at 1000).
    return sliced_wasserstein(x, y, n_projections=250)


@pytest.fixture(scope="module")
def sliced_wasserstein_floor(mixture):
    return floor(_sliced_wasserstein, mixture.sample, jax.random.key(13), N_ORACLE, SW_REPEATS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ORACLE_SAMPLERS)
def test_oracle_sliced_wasserstein_within_1_5_floor(mixture, sliced_wasserstein_floor, name):
    """Mean over 10 runs of SW(sampler, fresh exact set) <= 1.5 x the floor (10 exact pairs).

    One SW value between 4000-sample sets is noisy (floor 0.66 +- 0.12 sd: mode-weight noise
    moves mass over distances of 10), so one run cannot test a 1.5x bound; over 10 runs the
    sd of each mean is <= 0.05, and the measured sampler means (0.70-0.75) sit >= 3 combined
    sd below 1.5 x 0.66. The same 10 runs check the bounds of
    test_oracle_mode_weights_and_spread (mean TV >= 5 sd below 0.04).
    """
    sampler = ORACLE_SAMPLERS[name](default_sigmas(N_LEVELS))
    values, reports = [], []
    for x, key_exact in _oracle_runs(mixture, sampler, SW_REPEATS, 14):
        values.append(_sliced_wasserstein(x, mixture.sample(key_exact, N_ORACLE)))
        reports.append(mixture_report(x, mixture))
    floor_mean, _ = sliced_wasserstein_floor
    assert np.mean(values) <= 1.5 * floor_mean
    assert all(report.n_empty == 0 for report in reports)
    assert np.mean([report.total_variation for report in reports]) <= 0.04
    assert 0.85 <= np.mean([report.variance_ratio_mean for report in reports]) <= 1.2


def test_ddim_names_the_negative_option_not_both():
    """A negative final_noise was reported as 'eta and final_noise must be >= 0', and the CLI
    blamed --eta (pass 16, #12)."""
    from scorelab.samplers import ddim

    sigmas = [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"^final_noise must be >= 0, got final_noise=-1"):
        ddim(sigmas, final_noise=-1.0)
    with pytest.raises(ValueError, match=r"^eta must be >= 0, got eta=-0.5"):
        ddim(sigmas, eta=-0.5)


# --- argument checks: MALA's log-density, sample's flags and callback ---------------------------


def _mixture_and_score():
    target = seed_mixture()
    return target, ExactScore(target)


def test_mala_refuses_a_log_density_fn_that_is_not_callable():
    with pytest.raises(TypeError, match=r"^log_density_fn: expected a callable"):
        mala(3)
    with pytest.raises(TypeError, match=r"^log_density_fn: expected a callable"):
        build_sampler("mala", log_density_fn=3, n_steps=2)


def test_mala_refuses_a_log_density_that_is_not_one_scalar_per_state():
    # The score passed as the log-density ran, and every chain stayed where it started.
    target, score = _mixture_and_score()
    x_init = jnp.ones((2, 2))
    for log_density_fn in (target.score, lambda x: x):
        with pytest.raises(ValueError, match=r"^log_density_fn: returned a log-density of shape"):
            sample(jax.random.key(0), mala(log_density_fn, n_steps=2), score, x_init)
    with pytest.raises(TypeError, match=r"^log_density_fn: returned a log-density of str"):
        sample(jax.random.key(0), mala(lambda x: "a", n_steps=2), score, x_init)


def test_mala_with_returns_score_needs_a_pair_of_log_density_and_score():
    target, _ = _mixture_and_score()
    x_init = jnp.ones((2, 2))
    only_log_prob = mala(target.log_prob, n_steps=2, returns_score=True)
    with pytest.raises(TypeError, match=r"^log_density_fn: returned .* with returns_score=True"):
        sample(jax.random.key(0), only_log_prob, None, x_init)
    scalar_score = mala(lambda x: (target.log_prob(x), 1.0), n_steps=2, returns_score=True)
    with pytest.raises(ValueError, match=r"^log_density_fn: returned a score of shape \(\)"):
        sample(jax.random.key(0), scalar_score, None, x_init)
    # The right pair samples as log_prob with the exact score does (same draws).
    pair = mala(target.log_prob_and_score, n_steps=20, returns_score=True)
    two = mala(target.log_prob, n_steps=20)
    np.testing.assert_allclose(
        sample(jax.random.key(0), pair, None, x_init).x,
        sample(jax.random.key(0), two, ExactScore(target), x_init).x,
        rtol=1e-5,
    )


def test_mala_refuses_returns_score_that_is_not_a_bool():
    target, _ = _mixture_and_score()
    with pytest.raises(TypeError, match=r"^returns_score: expected True or False, got str"):
        mala(target.log_prob, returns_score="no")
    with pytest.raises(TypeError, match=r"^returns_score: expected True or False, got str"):
        build_sampler("mala", log_density_fn=target.log_prob, returns_score="no")


def test_sample_refuses_a_trajectory_flag_that_is_not_a_bool():
    _, score = _mixture_and_score()
    sampler = ddim(default_sigmas(4))
    with pytest.raises(TypeError, match=r"^trajectory: expected True or False, got str"):
        sample(jax.random.key(0), sampler, score, jnp.ones((2, 2)), trajectory="no")


def test_sample_refuses_a_callback_of_another_arity():
    # It failed on the host inside the compiled run, as "INTERNAL: CpuCallback error".
    _, score = _mixture_and_score()
    sampler = ddim(default_sigmas(4))
    with pytest.raises(TypeError, match=r"^callback: cannot be called as callback\(step, x\)"):
        sample(jax.random.key(0), sampler, score, jnp.ones((2, 2)), callback=lambda step: None)
    calls = []
    sample(jax.random.key(0), sampler, score, jnp.ones((1, 2)), callback=lambda *a: calls.append(a))
    assert len(calls) == 4


# --- wide steps: no NaN where the ancestral split or a restart interval is degenerate ----------


def _standard_normal_score():
    return ExactScore(gaussian(jnp.zeros(2), jnp.eye(2)))  # q_sigma = N(0, (1 + sigma^2) I)


@pytest.mark.parametrize(
    # annealed Langevin's default step ratio diverges at sigma_min 0.02, and says so
    "name",
    [n for n, kind in SAMPLERS.items() if kind.uses_grid and n != "annealed_langevin"],
)
def test_every_grid_sampler_is_finite_on_one_wide_step(name):
    """On a 2-level grid (an NFE budget of 3-4) dpmpp_sde, dpmpp_2s_ancestral and
    dpm_2_ancestral returned NaN in every chain, k-diffusion finite samples (pass 29, #1-2):
    the ancestral level sqrt(sigma'^2 - sigma_up^2) rounded below 0 when compiled, and DPM-2
    took its midpoint at sigma_down = 0."""
    sampler = build_sampler(name, default_sigmas(2))  # 0.02 and 80: a step 4000x wide
    x = jnp.full((8, 2), 3.0)
    out = eqx.filter_jit(sample)(jax.random.key(0), sampler, _standard_normal_score(), x)
    assert np.all(np.isfinite(np.asarray(out.x)))


@pytest.mark.parametrize("eta", [1.05, 1.5, 3.0])
def test_dpmpp_sde_above_eta_one_is_finite(eta):
    """It accepts eta > 1, where sigma_up is clipped to sigma' on every step: all NaN."""
    sampler = dpmpp_sde(np.geomspace(0.05, 40.0, 6), eta=eta)
    x = jnp.full((8, 2), 3.0)
    out = eqx.filter_jit(sample)(jax.random.key(0), sampler, _standard_normal_score(), x)
    assert np.all(np.isfinite(np.asarray(out.x)))


def test_dpm_2_ancestral_to_a_zero_ancestral_level_is_the_euler_ancestral_step():
    """Where sigma_down is 0 (here sigma'^2/sigma = 5e-8 rounds so), k-diffusion's DPM-2
    ancestral takes Euler's step: so does scorelab's (its midpoint is then sigma itself),
    the numbers of ``ancestral`` (Euler's step to sigma'^2/sigma) with the same draws."""
    grid = karras_sigmas(2, 0.002, 80.0)  # [0.002, 80]
    x = 80.0 * jax.random.normal(jax.random.key(1), (8, 2))
    noise = jax.random.normal(jax.random.key(2), (8, 2, 2))
    runs = [
        eqx.filter_jit(sample)(jax.random.key(0), s, _standard_normal_score(), x, noise=noise).x
        for s in (dpm_2_ancestral(grid), ancestral(grid))
    ]
    assert np.all(np.isfinite(np.asarray(runs[0])))
    # the same step in another order of operations: rounding of states of scale 80 (x_T)
    np.testing.assert_allclose(runs[0], runs[1], rtol=0, atol=8 * np.finfo(np.float32).eps * 80)


def test_a_restart_interval_clamped_to_no_width_is_finite_and_restarts_nothing():
    """``restart_sigma_max`` below the level its ``restart_sigma_min`` snaps to clamps the
    interval to no width; its first level (t^(1/7))^7 rounded below t, and the jump took the
    root of a negative number: NaN (pass 29, #3). With no width there is nothing to restart:
    the samples are Heun's on the grid, to rounding."""
    grid = np.geomspace(0.01, 50.0, 7)
    x = 50.0 * jax.random.normal(jax.random.key(1), (8, 2))
    level = float(np.float32(grid[2]))  # the interval lies just below the level it snaps to
    sampler = restart(grid, 0.98 * level, 0.99 * level, 1, 2)
    restarted = eqx.filter_jit(sample)(jax.random.key(0), sampler, _standard_normal_score(), x).x
    plain = eqx.filter_jit(sample)(jax.random.key(0), heun(grid), _standard_normal_score(), x).x
    assert np.all(np.isfinite(np.asarray(restarted)))
    np.testing.assert_allclose(restarted, plain, rtol=0, atol=1e-5 * float(jnp.abs(plain).max()))
