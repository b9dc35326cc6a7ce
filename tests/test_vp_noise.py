"""VP (DDPM) schedules: closed forms, and diffusers' own arrays to the last bit."""

import math
from pathlib import Path

import numpy as np
import pytest

from scorelab.noise import VP_SCHEDULES, vp_alpha_sigma, vp_alphas_cumprod, vp_betas

GOLDEN = Path(__file__).parent / "fixtures" / "vp_schedules"


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_schedules_equal_diffusers_golden_bit_for_bit(schedule):
    # Arrays saved from diffusers' DDIMScheduler by scripts/make_pretrained_fixture.py.
    np.testing.assert_array_equal(vp_betas(schedule), np.load(GOLDEN / f"{schedule}_betas.npy"))
    np.testing.assert_array_equal(
        vp_alphas_cumprod(schedule), np.load(GOLDEN / f"{schedule}_alphas_cumprod.npy")
    )


def test_linear_betas_are_the_float32_rounding_of_the_exact_line():
    # Each float32 beta is within one ulp of the exact line, end points exact (Ho et al. 2020).
    betas = vp_betas("linear", 1000, 1e-4, 0.02)
    exact = np.linspace(np.float32(1e-4), np.float32(0.02), 1000, dtype=np.float64)
    assert betas.dtype == np.float32 and betas.shape == (1000,)
    assert betas[0] == np.float32(1e-4) and betas[-1] == np.float32(0.02)
    assert np.all(np.abs(betas - exact) <= np.spacing(np.float32(0.02)))
    assert np.all(np.diff(betas) > 0)


def test_linear_betas_differ_from_numpy_linspace_in_the_last_bit():
    # The reason for a hand-written linspace: numpy's float64 line rounded to float32 is not
    # torch's float32 kernel, so it would not reproduce diffusers' schedule.
    numpy_betas = np.linspace(1e-4, 0.02, 1000).astype(np.float32)
    assert np.any(vp_betas("linear") != numpy_betas)


def test_scaled_linear_is_the_square_of_a_line_in_sqrt_beta():
    betas = vp_betas("scaled_linear", 1000, 0.00085, 0.012)
    np.testing.assert_allclose(np.sqrt(betas[[0, -1]]), [0.00085**0.5, 0.012**0.5], rtol=1e-6)
    np.testing.assert_allclose(np.diff(np.sqrt(betas.astype(np.float64))).std(), 0, atol=1e-8)


def test_cosine_alphas_cumprod_follow_the_closed_form():
    # Nichol & Dhariwal (2021) eq. 17: abar_t = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2),
    # exactly (up to float32) while no beta hits the 0.999 cap.
    T = 1000
    f = [math.cos(((t / T) + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
    closed = np.array(f[1:]) / f[0]
    abar = vp_alphas_cumprod("squaredcos_cap_v2", T)
    uncapped = vp_betas("cosine", T) < 0.999
    assert not uncapped[-1]  # the last beta is capped
    np.testing.assert_allclose(abar[uncapped], closed[uncapped], rtol=2e-5, atol=1e-9)
    np.testing.assert_array_equal(vp_betas("cosine", T), vp_betas("squaredcos_cap_v2", T))


@pytest.mark.parametrize("schedule", VP_SCHEDULES)
def test_alpha_sigma_are_variance_preserving(schedule):
    alpha_t, sigma_t = vp_alpha_sigma(vp_alphas_cumprod(schedule))
    assert alpha_t.dtype == np.float32
    np.testing.assert_allclose(alpha_t**2 + sigma_t**2, 1.0, atol=1e-6)
    assert np.all(np.diff(alpha_t) < 0) and np.all(np.diff(sigma_t) > 0)


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="VP schedule"):
        vp_betas("sigmoid")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        vp_betas("linear", 0)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        vp_alpha_sigma(np.array([1.5]))


@pytest.mark.diffusers
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize(
    "num_train_timesteps, beta_start, beta_end",
    [(1000, 1e-4, 0.02), (4000, 1e-4, 0.02), (1000, 0.00085, 0.012), (37, 1e-3, 0.2)],
)
def test_schedules_equal_diffusers_bit_for_bit(schedule, num_train_timesteps, beta_start, beta_end):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.set_num_threads(1)
    reference = diffusers.DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=schedule,
    )
    args = (schedule, num_train_timesteps, beta_start, beta_end)
    np.testing.assert_array_equal(vp_betas(*args), reference.betas.numpy())
    np.testing.assert_array_equal(vp_alphas_cumprod(*args), reference.alphas_cumprod.numpy())


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
@pytest.mark.parametrize(
    "beta_start, beta_end, name",
    [
        (-0.5, 0.02, "beta_start"),
        (0.0, 0.02, "beta_start"),
        (float("nan"), 0.02, "beta_start"),
        (1e-4, 1.5, "beta_end"),
        (1e-4, 1.0, "beta_end"),
        (1e-4, float("inf"), "beta_end"),
    ],
)
def test_vp_betas_reject_end_points_outside_zero_one(schedule, beta_start, beta_end, name):
    """beta_start = -0.5 gave alphas_cumprod above 1; beta_end = 1.5 a NaN epsilon loss."""
    with pytest.raises(ValueError, match=f"{name}: expected"):
        vp_alphas_cumprod(schedule, 10, beta_start, beta_end)
    with pytest.raises(ValueError, match=f"{name}: expected"):
        vp_betas(schedule, 10, beta_start, beta_end)


def test_vp_alpha_sigma_rejects_nan_and_complex():
    """NaN failed neither ``< 0`` nor ``> 1``; a complex array was compared on its real part."""
    with pytest.raises(ValueError, match=r"alphas_cumprod: expected entries in \[0, 1\], got nan"):
        vp_alpha_sigma(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="alphas_cumprod: expected entries in"):
        vp_alpha_sigma(np.array([0.5, 1.5]))
    with pytest.raises(TypeError, match="alphas_cumprod: expected real numbers"):
        vp_alpha_sigma(np.array([0.5 + 0j]))


def test_vp_sde_sigma_and_time_reject_negative_concrete_values():
    """``vp_sde_sigma(-1)`` returned 137.7 and ``vp_sde_time(-1)`` the time of sigma = 1; a
    traced value under jit is not checked."""
    import jax
    import jax.numpy as jnp

    from scorelab.noise import vp_sde_sigma, vp_sde_time

    for bad in (-1.0, np.array([0.5, -1e-4]), float("nan")):
        with pytest.raises(ValueError, match="t: expected numbers >= 0"):
            vp_sde_sigma(bad)
        with pytest.raises(ValueError, match="sigma: expected numbers >= 0"):
            vp_sde_time(bad)
    assert float(vp_sde_time(0.0)) == 0.0
    assert np.isfinite(float(jax.jit(vp_sde_sigma)(jnp.float32(0.5))))


def test_sample_ve_noise_takes_a_list():
    """A list x_0 had no ``.shape``."""
    import jax

    from scorelab.noise import sample_ve_noise

    key = jax.random.key(0)
    x_sigma, eps = sample_ve_noise(key, [1.0, 2.0], 1.0)
    want, _ = sample_ve_noise(key, np.array([1.0, 2.0], np.float32), 1.0)
    np.testing.assert_array_equal(x_sigma, want)
