"""Reverse-SDE samplers and the VP conversion: stated equivalences, step for step.

Each claim is checked against a second, independent implementation with the same injected
draws: VE-DDIM (scorelab.samplers.ddim), a NumPy transcription of Song et al.'s
predictor-corrector code, and the diffusers-convention VP samplers of scorelab.diffusers,
which work in x_t on integer timesteps and share no code with the VE samplers.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sampler_checks import assert_nfe_counts_score_evaluations

from scorelab import diffusers
from scorelab.models import ExactScore
from scorelab.noise import vp_alpha_sigma
from scorelab.samplers import (
    DEFAULT_SIGMA_MAX,
    ancestral,
    ddim,
    default_sigmas,
    euler,
    euler_maruyama,
    predictor_corrector,
    sample,
    ve_prior,
    ve_score_from_vp,
    ve_sigmas_from_vp,
    vp_state,
)


@eqx.filter_jit
def _run(run, score_fn, x_init, noise=None):
    return run(jax.random.key(0), score_fn, x_init, True, noise)


def test_ancestral_equals_ddim_e1_step_for_step(mixture):
    """Docstring claim: the VE ancestral step is the e = 1 DDIM step written another way."""
    sigmas = default_sigmas(30)
    noise = jax.random.normal(jax.random.key(1), (30, 2))
    x_T = jnp.array([60.0, -30.0])
    by_ancestral = _run(ancestral(sigmas).run, ExactScore(mixture), x_T, noise)
    by_ddim = _run(ddim(sigmas, eta=1.0).run, ExactScore(mixture), x_T, noise)
    # float32 on states up to ~60 through different algebra: a few ulps of 60 per step.
    np.testing.assert_allclose(by_ancestral.trajectory, by_ddim.trajectory, rtol=0, atol=1e-4)


def test_predictor_corrector_matches_song_et_al_pc_sampler(mixture):
    """Corrector then predictor on every level (Song et al.'s released ``pc_sampler`` with the
    ``ReverseDiffusionPredictor`` and ``LangevinCorrector`` for VE), NumPy float64, norms per
    chain; and no corrector steps is Euler-Maruyama exactly."""
    sigmas = default_sigmas(10)
    n_corrector, snr = 2, 0.16
    noise = jax.random.normal(jax.random.key(2), (30, 2))
    x_T = jnp.array([50.0, 70.0])
    out = _run(
        predictor_corrector(sigmas, n_corrector, snr, step_rule="snr").run,
        ExactScore(mixture),
        x_T,
        noise,
    )

    score_32 = eqx.filter_jit(ExactScore(mixture))

    def score(x, sigma):
        return np.asarray(score_32(jnp.asarray(x, jnp.float32), sigma), np.float64)

    levels = np.append(np.asarray(sigmas, np.float64)[::-1], 0.0)
    draws = np.asarray(noise, np.float64).reshape(10, 3, 2)
    x = np.asarray(x_T, np.float64)
    for i in range(10):
        sigma, sigma_next = levels[i], levels[i + 1]
        for m in range(n_corrector):  # LangevinCorrector.update_fn
            grad, z = score(x, sigma), draws[i, m]
            step_size = (snr * np.linalg.norm(z) / np.linalg.norm(grad)) ** 2 * 2
            x = x + step_size * grad + np.sqrt(2 * step_size) * z
        # ReverseDiffusionPredictor for VE: f = 0, G = sqrt(sigma^2 - sigma_next^2); the last
        # step returns x_mean (noise removal).
        x_mean = x + (sigma**2 - sigma_next**2) * score(x, sigma)
        x = x_mean if i == 9 else x_mean + np.sqrt(sigma**2 - sigma_next**2) * draws[i, 2]
        np.testing.assert_allclose(out.trajectory[i], x, rtol=1e-5, atol=1e-4)

    no_corrector = _run(predictor_corrector(sigmas, 0).run, ExactScore(mixture), x_T, noise[:10])
    by_em = _run(euler_maruyama(sigmas).run, ExactScore(mixture), x_T, noise[:10])
    np.testing.assert_array_equal(no_corrector.trajectory, by_em.trajectory)


# --- VP through the conversion, against the diffusers-convention samplers ----------------------

VP_CONFIG = diffusers.SchedulerConfig(clip_sample=False)  # DDPM's linear schedule, T = 1000
VP_STEPS = 20


def _vp_problem(mixture):
    """The exact VP eps-model of the mixture, the VE levels of the DDIM timesteps, a start."""
    alphas_cumprod = VP_CONFIG.alphas_cumprod()

    alphas_cumprod_jax = jnp.asarray(alphas_cumprod)

    def eps_model(x_t, t):  # the epsilon-prediction a VP network would make, exactly
        alpha_bar = alphas_cumprod_jax[t]
        alpha_t, sigma_t = jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar)
        return -sigma_t * mixture.marginal(alpha_t, sigma_t).score(x_t)

    def vp_score(x_t, alpha_t, sigma_t):  # the same model through the conversion's interface
        return mixture.marginal(alpha_t, sigma_t).score(x_t)

    steps = diffusers.timesteps(VP_CONFIG, VP_STEPS)[::-1]  # ascending: 0, 50, ..., 950
    sigmas = ve_sigmas_from_vp(*vp_alpha_sigma(alphas_cumprod[steps]))
    x_T = jnp.array([0.8, -1.3])  # VP prior scale: N(0, I)
    return eps_model, ve_score_from_vp(vp_score), sigmas, x_T


@pytest.mark.parametrize("vp_sampler", ["ddim_eta1", "ddpm"])
def test_vp_ddim_eta1_and_ddpm_equal_ancestral_through_the_conversion(mixture, vp_sampler):
    """VP-DDIM with eta = 1 and DDPM's ancestral sampler (diffusers conventions, x_t-space) are
    the VE ancestral sampler in y = x_t / alpha_t on sigma = sigma_t / alpha_t, same draws.

    The step noise maps as y's noise = x_t's noise / alpha_prev, and alpha_prev's noise scale
    there is exactly the ancestral one: the same standard normal rows drive both."""
    eps_model, score_fn, sigmas, x_T = _vp_problem(mixture)
    noise = jax.random.normal(jax.random.key(3), (VP_STEPS, 2))
    if vp_sampler == "ddim_eta1":
        x_vp = diffusers.ddim_sample(eps_model, x_T, VP_CONFIG, VP_STEPS, eta=1.0, noise=noise)
    else:
        x_vp = diffusers.ddpm_sample(eps_model, x_T, VP_CONFIG, VP_STEPS, noise=noise)
    y_T = x_T / vp_state(1.0, sigmas[-1])  # x_T / alpha_T
    out = _run(ancestral(sigmas).run, score_fn, y_T, noise)
    # The chain ends at sigma = 0, where y = x_0; float32 through two algebras over 20 steps.
    np.testing.assert_allclose(out.x, x_vp, rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(out.x)) and np.linalg.norm(out.x - x_T) > 1.0  # it moved


def test_vp_ddim_eta0_equals_euler_through_the_conversion(mixture):
    """Deterministic VP-DDIM is Euler on the VE probability-flow ODE of y (Karras et al. 2022,
    Sec. 4)."""
    eps_model, score_fn, sigmas, x_T = _vp_problem(mixture)
    x_vp = diffusers.ddim_sample(eps_model, x_T, VP_CONFIG, VP_STEPS, eta=0.0)
    y_T = x_T / vp_state(1.0, sigmas[-1])
    out = _run(euler(sigmas).run, score_fn, y_T)
    np.testing.assert_allclose(out.x, x_vp, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "sampler, nfe",
    [(euler_maruyama(default_sigmas(6)), 6), (ancestral(default_sigmas(6)), 6),
     (predictor_corrector(default_sigmas(6), n_corrector=2), 18)],
    ids=["euler_maruyama", "ancestral", "pc"],
)  # fmt: skip
def test_nfe_counts_score_evaluations(sampler, nfe):
    assert_nfe_counts_score_evaluations(sampler, nfe, n_levels=6)


def test_stochastic_chains_do_not_depend_on_the_batch(mixture):
    sampler = predictor_corrector(default_sigmas(15), n_corrector=1)
    x_init = ve_prior(jax.random.key(4), 24, 2, DEFAULT_SIGMA_MAX)
    out_24 = sample(jax.random.key(5), sampler, ExactScore(mixture), x_init)
    out_6 = sample(jax.random.key(5), sampler, ExactScore(mixture), x_init[:6])
    np.testing.assert_allclose(out_6.x, out_24.x[:6], rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="n_corrector"):
        predictor_corrector(default_sigmas(5), n_corrector=-1)
    with pytest.raises(ValueError, match="snr"):
        predictor_corrector(default_sigmas(5), snr=0.0)
    with pytest.raises(ValueError, match="ascending"):
        ancestral(default_sigmas(5)[::-1])
