"""MALA leaves its target invariant where ULA at the same step does not.

Chains start from exact samples of a two-component Gaussian mixture and take 30 steps. MALA's
accept test makes the target exactly invariant, so the final states are exact samples: their
mean and variance must match the mixture's within Monte-Carlo standard errors. ULA at the same
step is biased by O(gamma): it inflates a component's variance lambda by about
1 / (1 - gamma / (2 lambda)) in the Gaussian limit, 1.3x to 2x here (measured: MALA's moments
within 1 SE, ULA's variance 6 and 22 SE off).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.models import ExactScore
from scorelab.samplers import mala, sample, ula
from scorelab.targets import GaussianMixture

STEP_SIZE = 0.3
N_STEPS = 30
N_CHAINS = 10_000


@pytest.fixture(scope="module")
def two_modes():
    return GaussianMixture(
        means=[[-1.5, 0.0], [1.5, 0.5]],
        covariances=[np.diag([0.5, 0.3]), np.diag([0.4, 0.6])],
        weights=[0.3, 0.7],
    )


def _moment_errors(x, target):
    """(|mean - truth|, |variance - truth|) per coordinate, in Monte-Carlo standard errors."""
    x = np.asarray(x, np.float64)
    mean = np.asarray(target.mean(), np.float64)
    variance = np.diag(np.asarray(target.covariance(), np.float64))
    centred_squares = (x - mean) ** 2
    se_mean = np.sqrt(variance / x.shape[0])
    se_variance = np.sqrt(centred_squares.var(axis=0) / x.shape[0])
    return (
        np.abs(x.mean(axis=0) - mean) / se_mean,
        np.abs(centred_squares.mean(axis=0) - variance) / se_variance,
    )


@pytest.mark.slow  # about 14 s of a worker: kept out of the default suite's 15 minutes
def test_mala_keeps_the_target_and_ula_does_not(two_modes):
    key_start, key_chain = jax.random.split(jax.random.key(7))
    x_start = two_modes.sample(key_start, N_CHAINS)
    score_fn = ExactScore(two_modes)
    by_mala = sample(key_chain, mala(two_modes.log_prob, STEP_SIZE, N_STEPS), score_fn, x_start)
    by_ula = sample(key_chain, ula(STEP_SIZE, N_STEPS), score_fn, x_start)

    mean_error, variance_error = _moment_errors(by_mala.x, two_modes)
    assert np.all(mean_error < 4) and np.all(variance_error < 4), (mean_error, variance_error)
    # The one-pass evaluation is the same chain: same key, same draws, same accept decisions.
    fused = mala(two_modes.log_prob_and_score, STEP_SIZE, N_STEPS, returns_score=True)
    by_fused = sample(key_chain, fused, score_fn, x_start)
    np.testing.assert_allclose(by_fused.x, by_mala.x, rtol=1e-4, atol=1e-4)
    # Power: the chains moved (they are not the starting samples), and ULA's bias at the same
    # step is far outside the same error bars.
    assert np.mean(np.any(by_mala.x != x_start, axis=1)) > 0.5
    _, ula_variance_error = _moment_errors(by_ula.x, two_modes)
    assert np.max(ula_variance_error) > 10, ula_variance_error


@pytest.mark.parametrize("returns_score", [False, True])
def test_mala_accept_test_matches_a_numpy_transcription(two_modes, returns_score):
    """Three steps with injected draws against the textbook formula in float64."""
    noise = jax.random.normal(jax.random.key(8), (3, 3))
    x_init = jnp.array([0.2, -0.4])
    step_size = 0.8  # large, so that some proposals are rejected
    if returns_score:  # the score comes with the log-density; score_fn must not be called
        sampler = mala(two_modes.log_prob_and_score, step_size, 3, returns_score=True)
        score_fn = lambda x, sigma: jnp.full_like(x, jnp.nan)  # noqa: E731
    else:
        sampler, score_fn = mala(two_modes.log_prob, step_size, 3), ExactScore(two_modes)
    out = sampler.run(jax.random.key(0), score_fn, x_init, True, noise)

    def log_pi(x):
        return float(two_modes.log_prob(jnp.asarray(x, jnp.float32)))

    def grad(x):
        return np.asarray(two_modes.score(jnp.asarray(x, jnp.float32)), np.float64)

    def log_q(y, x):  # log N(y; x + gamma grad(x), 2 gamma I), up to a constant
        return -np.sum((y - x - step_size * grad(x)) ** 2) / (4 * step_size)

    x, accepted = np.asarray(x_init, np.float64), []
    for z_and_w in np.asarray(noise, np.float64):
        y = x + step_size * grad(x) + np.sqrt(2 * step_size) * z_and_w[:2]
        log_ratio = log_pi(y) - log_pi(x) + log_q(x, y) - log_q(y, x)
        u = 0.5 * (1 + jax.scipy.special.erf(z_and_w[2] / np.sqrt(2)))
        accepted.append(bool(np.log(u) < log_ratio))
        x = y if accepted[-1] else x
        np.testing.assert_allclose(out.trajectory[len(accepted) - 1], x, rtol=1e-5, atol=1e-5)
    assert len(set(accepted)) == 2  # both branches exercised


def test_mala_from_a_key_is_mala_on_that_keys_normal_rows(two_modes):
    # The key path reads the accept uniform off normal's own uniforms rather than taking Phi
    # of w: the same chain as injecting row k = jax.random.normal(split(key)[k], (d + 1,)).
    n_steps, step_size = 40, 0.8  # large, so that both accept branches are taken
    sampler = mala(two_modes.log_prob_and_score, step_size, n_steps, returns_score=True)
    x_init = jnp.array([0.2, -0.4])
    for seed in range(4):
        key = jax.random.key(seed)
        rows = jax.vmap(lambda k: jax.random.normal(k, (3,)))(jax.random.split(key, n_steps))
        by_key = sampler.run(key, None, x_init, True)
        by_rows = sampler.run(jax.random.key(99), None, x_init, True, rows)
        np.testing.assert_allclose(by_key.trajectory, by_rows.trajectory, rtol=1e-5, atol=1e-5)
        moved = np.any(np.diff(np.asarray(by_key.trajectory), axis=0) != 0, axis=1)
        assert 0 < moved.sum() < n_steps - 1, moved  # both accept branches exercised


def test_mala_counts_score_evaluations_and_rejects_bad_input(two_modes):
    assert mala(two_modes.log_prob, 0.1, 12).nfe == 13
    with pytest.raises(ValueError, match="step_size"):
        mala(two_modes.log_prob, 0.0, 5)
    with pytest.raises(ValueError, match="n_steps"):
        mala(two_modes.log_prob, 0.1, 0)
    assert mala(two_modes.log_prob_and_score, 0.1, 12, returns_score=True).nfe == 13
    with pytest.raises(ValueError, match="sigma"):
        mala(two_modes.log_prob_and_score, 0.1, 5, sigma=0.5, returns_score=True)


def test_build_sampler_one_pass_mala_is_two_pass_mala_at_a_noise_level(two_modes):
    # What `scorelab sample --sampler mala --sigma s` builds (the noised law's
    # log_prob_and_score, returns_score) against log_prob plus the exact score at s.
    from scorelab.samplers import build_sampler

    sigma, options = 0.5, {"step_size": 0.05, "n_steps": 30, "sigma": 0.5}
    law = two_modes.ve_marginal(sigma)
    x_init = 2.0 * jax.random.normal(jax.random.key(0), (500, 2))
    one_pass = build_sampler(
        "mala", log_density_fn=law.log_prob_and_score, returns_score=True, **options
    )
    two_pass = build_sampler("mala", log_density_fn=law.log_prob, **options)
    score = ExactScore(two_modes)
    key = jax.random.key(1)
    np.testing.assert_allclose(
        sample(key, one_pass, score, x_init).x, sample(key, two_pass, score, x_init).x, atol=1e-5
    )
    with pytest.raises(ValueError, match="takes no log-density"):
        build_sampler("ula", returns_score=True, step_size=0.1, n_steps=3)


@pytest.mark.parametrize("step_size", [0.0, -1e-3])
def test_ula_refuses_a_step_size_that_is_not_positive(step_size):
    """A zero step never moves the chains, a negative one climbs down the density."""
    with pytest.raises(ValueError, match="step_size must be > 0"):
        ula(step_size=step_size)


def test_ula_s_score_level_may_be_zero_and_not_negative():
    """sigma is the score's noise level: 0 (the data's own score) is the closed end of its
    range, and a negative level was sampled, exit 0."""
    ula(sigma=0.0)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        ula(sigma=-0.5)
