"""Diffusers-convention DDIM / DDPM: grids, exactness on point masses, mixture weights, and
live parity with diffusers' own schedulers (marked ``diffusers``)."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.diffusers import (
    PretrainedError,
    SchedulerConfig,
    ddim_grid,
    ddim_sample,
    ddpm_grid,
    ddpm_sample,
    timesteps,
)
from scorelab.metrics import mixture_report
from scorelab.targets import GaussianMixture, seed_mixture


@pytest.mark.parametrize(
    "spacing, offset, n, expected",
    [
        ("leading", 0, 10, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
        ("leading", 1, 10, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]),
        ("trailing", 0, 10, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
        ("linspace", 0, 10, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
        # 7 does not divide T = 1000: leading steps by T // n = 142 (diffusers' integer ratio),
        # trailing rounds T - k T / n, linspace rounds halves to even (166.5 -> 166, 499.5 -> 500)
        ("leading", 0, 7, [852, 710, 568, 426, 284, 142, 0]),
        ("trailing", 0, 7, [999, 856, 713, 570, 428, 285, 142]),
        ("linspace", 0, 7, [999, 832, 666, 500, 333, 166, 0]),
    ],
)
def test_timesteps_of_each_spacing(spacing, offset, n, expected):
    config = SchedulerConfig(timestep_spacing=spacing, steps_offset=offset)
    np.testing.assert_array_equal(timesteps(config, n), expected)


def test_ddim_previous_step_is_t_minus_T_over_n_whatever_the_spacing():
    # diffusers' convention: trailing 3 steps are 999, 666, 332, yet 666 steps to 666 - 333.
    config = SchedulerConfig(timestep_spacing="trailing")
    grid = ddim_grid(config, 3)
    abar = config.alphas_cumprod()
    np.testing.assert_array_equal(grid.timesteps, [999, 666, 332])
    np.testing.assert_array_equal(grid.alpha_prod_t_prev, [abar[666], abar[333], 1.0])
    unset = ddim_grid(SchedulerConfig(set_alpha_to_one=False), 10)
    assert unset.alpha_prod_t_prev[-1] == abar[0]


def test_ddim_eta_one_noise_is_ddpm_posterior_noise():
    # eta = 1 in Song et al. (2021) eq. 16 is DDPM's posterior variance (Ho et al. 2020 eq. 7)
    # on the same grid; both add nothing on the last step.
    config = SchedulerConfig()
    ddim, ddpm = ddim_grid(config, 50, eta=1.0), ddpm_grid(config, 50)
    np.testing.assert_allclose(ddim.std, ddpm.std, rtol=1e-6, atol=1e-9)
    assert ddim.std[-1] == 0 and ddpm.std[-1] == 0
    np.testing.assert_array_equal(ddim_grid(config, 50, eta=0.5).std, np.float32(0.5) * ddim.std)


def _point_mass_model(x_0, alphas_cumprod, prediction_type):
    """The exact model output for data concentrated at ``x_0``: eps = (x_t - a x_0) / s."""
    abar = jnp.asarray(alphas_cumprod)

    def model_fn(x_t, t):
        alpha_t, sigma_t = jnp.sqrt(abar[t]), jnp.sqrt(1 - abar[t])
        eps = (x_t - alpha_t * x_0) / sigma_t
        if prediction_type == "epsilon":
            return eps
        if prediction_type == "sample":
            return jnp.broadcast_to(x_0, x_t.shape)
        return alpha_t * eps - sigma_t * x_0

    return model_fn


@pytest.mark.parametrize(
    "prediction_type, spacing",
    [("epsilon", "leading"), ("sample", "trailing"), ("v_prediction", "linspace")],
)
def test_exact_model_of_a_point_mass_lands_on_it(prediction_type, spacing, key):
    # Every prediction of x_0 is x_0 itself, and the last step has abar_prev = 1, so DDIM
    # (any eta) and DDPM return x_0 whatever x_T and the noise.
    config = SchedulerConfig(prediction_type=prediction_type, timestep_spacing=spacing)
    x_0 = jnp.array([[[[0.3, -0.7], [0.9, 0.0]]]])
    model_fn = _point_mass_model(x_0, config.alphas_cumprod(), prediction_type)
    key_prior, key_ddim, key_ddpm = jax.random.split(key, 3)
    x_T = jax.random.normal(key_prior, (5, 1, 2, 2))
    for x in (
        ddim_sample(model_fn, x_T, config, 10),
        ddim_sample(model_fn, x_T, config, 10, eta=1.0, key=key_ddim),
        ddpm_sample(model_fn, x_T, config, 10, key=key_ddpm),
    ):
        np.testing.assert_allclose(x, jnp.broadcast_to(x_0, x_T.shape), atol=2e-5)


def test_key_noise_equals_the_same_noise_injected(key):
    config = SchedulerConfig()
    key_prior, key_noise = jax.random.split(key)
    x_T = jax.random.normal(key_prior, (3, 1, 4, 4))
    model_fn = lambda x_t, t: jnp.tanh(x_t) * (t / 1000.0)  # noqa: E731
    noise = jax.vmap(lambda k: jax.random.normal(k, x_T.shape))(jax.random.split(key_noise, 10))
    from_key = ddim_sample(model_fn, x_T, config, 10, eta=1.0, key=key_noise)
    injected = ddim_sample(model_fn, x_T, config, 10, eta=1.0, noise=noise)
    np.testing.assert_allclose(from_key, injected, rtol=0, atol=1e-6)
    assert not np.allclose(from_key, ddim_sample(model_fn, x_T, config, 10))


def _small_mixture():
    """The tutorial's nine weights, modes on {-0.6, 0, 0.6}^2 (inside DDPM's [-1, 1] data
    range, so x0 clipping is on as for images), standard deviation 0.05."""
    seed = seed_mixture()
    covariances = jnp.repeat(jnp.eye(2)[None] * 0.05**2, seed.n_components, axis=0)
    return GaussianMixture(0.06 * seed.means, covariances, seed.weights)


def _analytic_eps(mixture, alphas_cumprod):
    r"""eps(x_t, t) = -sigma_t grad log q_t(x_t): q_t is the mixture under VP noise, exactly."""
    abar = jnp.asarray(alphas_cumprod)

    def eps_fn(x_t, t):
        alpha_t, sigma_t = jnp.sqrt(abar[t]), jnp.sqrt(1 - abar[t])
        return -sigma_t * jax.vmap(mixture.marginal(alpha_t, sigma_t).score)(x_t)

    return eps_fn


def _null_total_variation(weights, n):
    """Mean and sd of the TV of n exact samples' mode fractions (multinomial, 10^5 draws)."""
    weights = np.asarray(weights, np.float64)
    draws = np.random.default_rng(8).multinomial(n, weights, size=100_000) / n
    tv = 0.5 * np.abs(draws - weights).sum(axis=1)
    return tv.mean(), tv.std()


N_MIXTURE = 4000


def _mixture_total_variation(key, num_inference_steps, eta):
    mixture, config = _small_mixture(), SchedulerConfig()
    eps_fn = _analytic_eps(mixture, config.alphas_cumprod())
    key_prior, key_chain = jax.random.split(key)
    x_T = jax.random.normal(key_prior, (N_MIXTURE, 2))
    run = jax.jit(lambda x, k: ddim_sample(eps_fn, x, config, num_inference_steps, eta=eta, key=k))
    report = mixture_report(np.asarray(run(x_T, key_chain)), mixture)
    assert report.n_empty == 0
    return report.total_variation, _null_total_variation(mixture.weights, N_MIXTURE)


def test_ddim_with_the_analytic_eps_recovers_the_mixture_weights(key):
    """100 deterministic DDIM steps, exact eps: TV of the mode weights within 4 sd of exact
    samples' TV. Over 10 seeds: TV 0.019 +- 0.002 (mean +- se) against 0.0173 +- 0.0047 (sd)
    for exact samples; a wrong sign, scale or timestep of eps merges or empties modes."""
    tv, (null_mean, null_sd) = _mixture_total_variation(key, 100, eta=0.0)
    assert tv <= null_mean + 4 * null_sd


@pytest.mark.slow
def test_ddim_eta_one_recovers_the_mixture_weights_at_1000_steps(key):
    """eta = 1 at 100 steps over-fills the central mode by 1.3 points (TV 0.028 +- 0.001 over
    10 seeds: discretisation); at 1000 steps it reads 0.018 +- 0.002, the exact-sample level."""
    tv, (null_mean, null_sd) = _mixture_total_variation(key, 1000, eta=1.0)
    assert tv <= null_mean + 4 * null_sd


def test_stochastic_sampling_without_key_or_noise_is_an_error():
    model_fn = lambda x_t, t: x_t  # noqa: E731
    x_T = jnp.zeros((1, 1, 2, 2))
    with pytest.raises(ValueError, match="key or noise"):
        ddim_sample(model_fn, x_T, SchedulerConfig(), 10, eta=1.0)
    with pytest.raises(ValueError, match="noise must have shape"):
        ddim_sample(model_fn, x_T, SchedulerConfig(), 10, eta=1.0, noise=jnp.zeros((9, 1)))


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="prediction_type"):
        SchedulerConfig(prediction_type="score")
    with pytest.raises(ValueError, match="timestep_spacing"):
        SchedulerConfig(timestep_spacing="karras")
    with pytest.raises(ValueError, match="thresholding"):
        SchedulerConfig.from_diffusers({"thresholding": True})
    with pytest.raises(ValueError, match="variance_type"):
        SchedulerConfig.from_diffusers({"variance_type": "learned_range"})
    with pytest.raises(ValueError, match="num_inference_steps"):
        timesteps(SchedulerConfig(), 1001)
    with pytest.raises(ValueError, match="steps_offset"):
        timesteps(SchedulerConfig(steps_offset=1), 1000)


@pytest.mark.parametrize(
    "written, read",
    [(None, "fixed_small"), ("fixed_small_log", "fixed_small"), ("fixed_large_log", "fixed_large")],
)
def test_from_diffusers_reads_other_spellings_of_the_two_variances(written, read):
    """A DPMSolverMultistepScheduler's file (variance_type null) was refused, though DDIM
    never reads the field (pass 28, #3); the _log spellings are the same variances."""
    assert SchedulerConfig.from_diffusers({"variance_type": written}).variance_type == read
    with pytest.raises(ValueError, match="variance_type 'learned' is not supported"):
        SchedulerConfig.from_diffusers({"variance_type": "learned"})


@pytest.mark.parametrize("eta", [1.5, 1.0000001, 10.0])
def test_ddim_refuses_an_eta_above_one_where_its_noise_exceeds_the_step_s_variance(eta):
    """ddim_grid / ddim_sample took eta 1.5 and clamped the negative variance term to numbers
    of neither DDIM nor diffusers (NaN there); sample() already refused it (pass 28, #4)."""
    with pytest.raises(PretrainedError, match=r"^eta must be a number in \[0, 1\], got "):
        ddim_grid(SchedulerConfig(), 5, eta)
    with pytest.raises(PretrainedError, match=r"^eta must be a number in \[0, 1\]"):
        ddim_sample(lambda x, t: x, jnp.zeros((1, 1, 2, 2)), SchedulerConfig(), 5, eta=eta,
                    key=jax.random.key(0))  # fmt: skip
    assert np.all(np.isfinite(ddim_grid(SchedulerConfig(), 5, 1.0).std))  # 1 is DDPM's


def test_ddim_options_are_diffusers_spelling():
    """scorelab's cosine alias is written as diffusers' squaredcos_cap_v2, which alone it
    knows (an exported cosine run did not load in DDIMPipeline, pass 28, #1)."""
    options = SchedulerConfig(beta_schedule="cosine").ddim_options()
    assert options["beta_schedule"] == "squaredcos_cap_v2" and "variance_type" not in options
    same = SchedulerConfig.from_diffusers(options)
    np.testing.assert_array_equal(
        same.alphas_cumprod(), SchedulerConfig(beta_schedule="cosine").alphas_cumprod()
    )


def test_from_diffusers_reads_a_ddpm_scheduler_config():
    # The form of the google/ddpm-* hub repos' scheduler_config.json (a DDPMScheduler, 0.1.1).
    config = SchedulerConfig.from_diffusers(
        {
            "_class_name": "DDPMScheduler",
            "_diffusers_version": "0.1.1",
            "beta_end": 0.02,
            "beta_schedule": "linear",
            "beta_start": 0.0001,
            "clip_sample": True,
            "num_train_timesteps": 1000,
            "trained_betas": None,
            "variance_type": "fixed_small",
        }
    )
    assert config == SchedulerConfig()


# --- live parity with diffusers ------------------------------------------------------------

SHAPE, STEPS = (2, 3, 4, 4), 10


def _parity_inputs():
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((STEPS, *SHAPE)).astype(np.float32)
    return x_T, noise


def _model(xp, x, t):
    # A smooth, timestep-dependent stand-in for a network, the same float32 ops in torch and JAX.
    return xp.tanh(1.7 * x * (0.5 + t / 1000.0))


def _assert_close_to_scale(actual, expected):
    # float32 rounding differences, amplified by 1/sqrt(abar) ~ 160 at t = 999 when unclipped.
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def _diffusers():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.set_num_threads(1)
    return torch, diffusers


@pytest.mark.diffusers
@pytest.mark.parametrize(
    "spacing, eta, clip, prediction_type",
    itertools.product(
        ["leading", "trailing", "linspace"],
        [0.0, 0.5, 1.0],
        [True, False],
        ["epsilon", "sample", "v_prediction"],
    ),
)
def test_ddim_matches_diffusers(spacing, eta, clip, prediction_type):
    torch, diffusers = _diffusers()
    options = dict(
        timestep_spacing=spacing,
        clip_sample=clip,
        prediction_type=prediction_type,
        clip_sample_range=0.8,
    )
    _check_ddim(torch, diffusers, options, eta, use_clipped_model_output=False)


@pytest.mark.diffusers
@pytest.mark.parametrize(
    "use_clipped, offset, alpha_to_one, schedule",
    [
        (True, 0, True, "linear"),
        (True, 1, False, "linear"),
        (False, 1, True, "scaled_linear"),
        (False, 0, False, "squaredcos_cap_v2"),
    ],
)
def test_ddim_options_match_diffusers(use_clipped, offset, alpha_to_one, schedule):
    torch, diffusers = _diffusers()
    options = dict(steps_offset=offset, set_alpha_to_one=alpha_to_one, beta_schedule=schedule)
    _check_ddim(torch, diffusers, options, 1.0, use_clipped_model_output=use_clipped)


def _check_ddim(torch, diffusers, options, eta, use_clipped_model_output):
    x_T, noise = _parity_inputs()
    reference = diffusers.DDIMScheduler(**options)
    reference.set_timesteps(STEPS)
    x = torch.from_numpy(x_T)
    for i, t in enumerate(reference.timesteps):
        x = reference.step(
            _model(torch, x, t),
            t,
            x,
            eta=eta,
            use_clipped_model_output=use_clipped_model_output,
            variance_noise=torch.from_numpy(noise[i]),
        ).prev_sample
    config = SchedulerConfig(**options)
    np.testing.assert_array_equal(timesteps(config, STEPS), reference.timesteps.numpy())
    ours = ddim_sample(
        lambda x_t, t: _model(jnp, x_t, t),
        jnp.asarray(x_T),
        config,
        STEPS,
        eta=eta,
        use_clipped_model_output=use_clipped_model_output,
        noise=noise if eta > 0 else None,  # eta 0 adds none: refused as ignored
    )
    _assert_close_to_scale(ours, x.numpy())


@pytest.mark.diffusers
@pytest.mark.parametrize(
    "spacing, prediction_type, variance_type",
    itertools.product(
        ["leading", "trailing", "linspace"],
        ["epsilon", "sample", "v_prediction"],
        # None (another scheduler's file) and fixed_small_log are the posterior variance read
        # otherwise: they were refused (pass 28, #3)
        ["fixed_small", "fixed_large", "fixed_small_log", None],
    ),
)
def test_ddpm_matches_diffusers(spacing, prediction_type, variance_type):
    torch, diffusers = _diffusers()
    x_T, _ = _parity_inputs()
    options = dict(
        timestep_spacing=spacing, prediction_type=prediction_type, variance_type=variance_type
    )
    reference = diffusers.DDPMScheduler(**options)
    reference.set_timesteps(STEPS)
    x, noise = torch.from_numpy(x_T), []
    for i, t in enumerate(reference.timesteps):
        # DDPMScheduler draws its noise itself: replay the draw from a generator seeded alike.
        noise.append(torch.randn(SHAPE, generator=torch.Generator().manual_seed(i)).numpy())
        generator = torch.Generator().manual_seed(i)
        x = reference.step(_model(torch, x, t), t, x, generator=generator).prev_sample
    ours = ddpm_sample(
        lambda x_t, t: _model(jnp, x_t, t),
        jnp.asarray(x_T),
        SchedulerConfig.from_diffusers(options),
        STEPS,
        noise=np.stack(noise),
    )
    _assert_close_to_scale(ours, x.numpy())


def test_steps_offset_bounds_only_the_leading_spacing_that_adds_it():
    # diffusers ignores steps_offset outside leading spacing (T = 3, offset 3, trailing: 2, 1, 0);
    # scorelab refused the configuration as if the offset were added (pass 12, #2).
    for spacing in ("trailing", "linspace"):
        config = SchedulerConfig(num_train_timesteps=3, steps_offset=3, timestep_spacing=spacing)
        np.testing.assert_array_equal(timesteps(config, 3), [2, 1, 0])
    with pytest.raises(
        PretrainedError, match=re.escape("steps_offset must be an integer in [0, 3)")
    ):
        SchedulerConfig(num_train_timesteps=3, steps_offset=3, timestep_spacing="leading")
    with pytest.raises(PretrainedError, match=re.escape("in [0, 2**31)")):
        SchedulerConfig(steps_offset=2**40, timestep_spacing="trailing")


@pytest.mark.parametrize("sampler", [ddim_sample, ddpm_sample])
def test_a_start_with_nan_is_refused(sampler):
    """``ddim_sample`` from a NaN ``x_T`` returned NaN samples without a word, where NaN
    ``noise`` was refused (pass 19A, #14)."""
    x_T = jnp.full((2, 1, 2, 2), jnp.nan)
    with pytest.raises(PretrainedError, match=r"^x_T holds NaN or inf values"):
        sampler(lambda x, t: x, x_T, SchedulerConfig(), 5, key=jax.random.key(0))
