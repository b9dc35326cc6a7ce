r"""Adapters against the exact score: Tweedie's denoiser, diffusers' epsilon, batched models.

Every check compares with :class:`scorelab.models.ExactScore` of the tutorial's mixture. Float32
tolerances are the rounding of the one ill-conditioned operation in each path, not fitted:

* a component's score is :math:`-(x - \mu) / (c + \sigma^2)`; forming :math:`x - \mu` from
  float32 numbers of size :math:`|x| + |\mu|` costs :math:`\epsilon_{32} (|x| + |\mu|)`, so
  the absolute floor is :math:`\epsilon_{32} (|x| + |\mu|) / (c_{\min} + \sigma^2)`
  (:func:`_score_floor`, with a factor 8 for the handful of roundings around it);
* Tweedie's :math:`(D - x)/\sigma^2` subtracts two numbers of size :math:`|D|`, so its floor
  is :math:`\epsilon_{32} (|D| + |D - x|) / \sigma^2` (:func:`_denoiser_floor`, factor 4).
  Relative to the score this is ~1e-6 for :math:`\sigma \ge 10` but grows as
  :math:`|x| / (\sigma^2 |s|)` below, so no single relative tolerance fits all levels.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.adapters import batched, from_denoiser, from_epsilon
from scorelab.models import ExactScore
from scorelab.noise import vp_alpha_sigma, vp_alphas_cumprod
from scorelab.samplers import ddim, default_sigmas, sample, ve_prior, ve_sigmas_from_vp

EPS32 = float(jnp.finfo(jnp.float32).eps)
SIGMAS = (0.02, 0.1, 0.5, 2.0, 10.0, 80.0)


def _points(mixture, sigma, seed: int, n: int = 256):
    r"""``(n, 2)`` draws from :math:`q_\sigma`, where a sampler evaluates the score."""
    return mixture.ve_marginal(sigma).sample(jax.random.key(seed), n)


def _score_floor(mixture, y, sigma):
    """``(n, 1)`` float32 floor of an exact score at ``y`` (module docstring)."""
    size = jnp.max(jnp.abs(y), axis=1, keepdims=True) + jnp.max(jnp.abs(mixture.means))
    return 8 * EPS32 * size / (jnp.min(mixture.eigenvalues) + sigma**2)


def _denoiser_floor(denoised, y, sigma):
    r"""``(n, 2)`` float32 floor of Tweedie's :math:`(D - x) / \sigma^2` (module docstring)."""
    return 4 * EPS32 * (jnp.abs(denoised) + jnp.abs(denoised - y)) / sigma**2


def _exact_on(mixture, y, sigma):
    return jax.vmap(ExactScore(mixture), (0, None))(y, sigma)


@pytest.fixture(scope="module")
def alphas_cumprod():
    """DDPM's linear betas, ``T = 1000`` (diffusers' ``scheduler.alphas_cumprod``)."""
    return vp_alphas_cumprod("linear", 1000)


@pytest.fixture(scope="module")
def grid(alphas_cumprod):
    r"""The schedule's own VE levels :math:`\sigma_t`, ``(T,)`` ascending."""
    return ve_sigmas_from_vp(*vp_alpha_sigma(alphas_cumprod))


def _exact_eps(mixture, alphas_cumprod):
    r"""The exact :math:`\varepsilon(x_t, t) = -\sigma_t \nabla \log p_t(x_t)` of a VP model.

    Built from the VP marginal (not through scorelab's VE conversion); between integer
    timesteps :math:`\bar\alpha` is linear in ``t``, a continuous schedule other than the
    adapter's (linear ``t`` in :math:`\log\sigma`).
    """
    alphas_cumprod = jnp.asarray(alphas_cumprod)
    timesteps = jnp.arange(alphas_cumprod.shape[0], dtype=jnp.float32)

    def eps_fn(x_t, t):
        alpha_bar = jnp.interp(t, timesteps, alphas_cumprod)
        alpha_t, sigma_t = jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar)
        return -sigma_t * mixture.marginal(alpha_t, sigma_t).score(x_t)

    return eps_fn


# --- from_denoiser ------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", SIGMAS)
def test_from_denoiser_of_the_exact_denoiser_is_the_exact_score(mixture, sigma):
    exact = ExactScore(mixture)
    score_fn = from_denoiser(lambda x, s: x + s**2 * exact(x, s))
    y = _points(mixture, sigma, seed=1)
    want = _exact_on(mixture, y, sigma)
    got = jax.vmap(score_fn, (0, None))(y, jnp.float32(sigma))
    floor = _denoiser_floor(y + sigma**2 * want, y, sigma)
    assert jnp.all(jnp.abs(got - want) <= floor + 1e-6 * jnp.abs(want))


# --- from_epsilon -------------------------------------------------------------------------


def test_from_epsilon_maps_a_level_to_its_timestep(alphas_cumprod, grid):
    r"""``t`` is ``i`` on the grid's levels, ``i + 1/2`` at log-midpoints, clamped outside.

    An ``eps_fn`` returning ``t`` makes the score :math:`-t/\sigma`.
    """
    score_fn = from_epsilon(lambda x_t, t: jnp.full_like(x_t, t), alphas_cumprod)
    timestep = jax.vmap(lambda s: -s * score_fn(jnp.ones(2), s)[0])
    on_grid = np.arange(grid.shape[0])
    midpoints = jnp.sqrt(grid[:-1] * grid[1:])
    # float32: sigma's relative rounding (~eps) moves t by eps / dlog(sigma), and t * sigma / sigma
    # by eps * t
    spacing = np.min(np.diff(np.log(np.asarray(grid, np.float64))))
    t_tol = 4 * EPS32 * (on_grid + 1 / spacing)
    np.testing.assert_array_less(np.abs(timestep(grid) - on_grid), t_tol)
    np.testing.assert_array_less(np.abs(timestep(midpoints) - (on_grid[:-1] + 0.5)), t_tol[1:])
    clamped = timestep(jnp.array([grid[0] / 2, grid[-1] * 2]))
    np.testing.assert_allclose(clamped, [0.0, grid.shape[0] - 1], rtol=1e-6)


@pytest.mark.parametrize("t", (0, 1, 10, 100, 500, 999))
def test_from_epsilon_is_the_exact_score_on_the_grid(mixture, alphas_cumprod, grid, t):
    score_fn = from_epsilon(_exact_eps(mixture, alphas_cumprod), alphas_cumprod)
    sigma = grid[t]
    y = _points(mixture, sigma, seed=t)
    got = jax.vmap(score_fn, (0, None))(y, sigma)
    want = _exact_on(mixture, y, sigma)
    assert jnp.all(jnp.abs(got - want) <= _score_floor(mixture, y, sigma))


def _chord_bound(alphas_cumprod, t: int) -> float:
    r""":math:`\max|\lambda''| / 8` on ``[t, t + 1]`` for :math:`\lambda = \log\sigma` of the
    exact model's schedule, :math:`\bar\alpha` linear in ``t``: the largest miss of linear
    interpolation (step 1). With :math:`g(a) = \tfrac12 \log((1 - a)/a)`,
    :math:`\lambda'' = g''(a)\, \Delta\bar\alpha^2`, :math:`g''(a) = (1 - 2a) / (2 a^2 (1-a)^2)`.
    """
    a_lo, a_hi = np.asarray(alphas_cumprod[t : t + 2], np.float64)
    a = np.linspace(a_lo, a_hi, 1001)
    second = (1 - 2 * a) / (2 * a**2 * (1 - a) ** 2) * (a_hi - a_lo) ** 2
    return float(np.max(np.abs(second)) / 8)


@pytest.mark.parametrize("t", (0, 1, 3, 10, 30))
def test_from_epsilon_between_levels_errs_by_the_interpolation_error(
    mixture, alphas_cumprod, grid, t
):
    r"""At the log-midpoint of :math:`[\sigma_t, \sigma_{t+1}]` the adapter asks the model for
    ``t + 1/2``, whose own level :math:`\sigma' = \sigma e^\delta` misses by the chord error
    :math:`|\delta| \le \max|\lambda''|/8`. The score is then
    :math:`f(\delta) = e^\delta s((\alpha/\alpha') y, \sigma e^\delta)`
    (:math:`\alpha = (1 + \sigma^2)^{-1/2}`), and the error is its first-order term
    :math:`\delta f'(0)` up to :math:`O(\delta^2)`, i.e. a relative 10% for
    :math:`|\delta| \le 0.04`, plus the float32 floor.
    """
    exact = ExactScore(mixture)
    score_fn = from_epsilon(_exact_eps(mixture, alphas_cumprod), alphas_cumprod)
    lo, hi = np.asarray(grid[t : t + 2], np.float64)
    sigma = np.sqrt(lo * hi)
    a_mid = np.mean(np.asarray(alphas_cumprod[t : t + 2], np.float64))
    delta = 0.5 * np.log((1 - a_mid) / a_mid) - np.log(sigma)
    assert abs(delta) <= _chord_bound(alphas_cumprod, t)

    def f(d, y):
        ratio = jnp.sqrt((1 + sigma**2 * jnp.exp(2 * d)) / (1 + sigma**2))
        return jnp.exp(d) * exact(ratio * y, sigma * jnp.exp(d))

    y = _points(mixture, sigma, seed=t)
    want = _exact_on(mixture, y, sigma)
    slope = jax.vmap(lambda p: jax.jvp(lambda d: f(d, p), (0.0,), (1.0,))[1])(y)
    predicted = jnp.float32(delta) * slope
    got = jax.vmap(score_fn, (0, None))(y, jnp.float32(sigma))
    error = got - want
    tolerance = 0.1 * jnp.abs(predicted) + _score_floor(mixture, y, sigma)
    assert jnp.all(jnp.abs(error - predicted) <= tolerance)
    # and the error is real: well above the floor where delta is not tiny
    if abs(delta) > 1e-3:
        assert jnp.median(jnp.abs(error) / _score_floor(mixture, y, sigma)) > 10


# --- batched ------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", SIGMAS)
def test_batched_of_the_vmapped_exact_score_is_the_exact_score(mixture, sigma):
    # jax.vmap over both arguments: a sigma without its leading axis of 1 would fail here
    score_fn = batched(jax.vmap(ExactScore(mixture)))
    y = _points(mixture, sigma, seed=2)
    got = jax.vmap(score_fn, (0, None))(y, sigma)
    np.testing.assert_allclose(got, _exact_on(mixture, y, sigma), rtol=1e-6, atol=0)


# --- through the sampler ------------------------------------------------------------------


def _ddim_pair(mixture, score_fn, sigmas, key):
    """``(adapter's samples, exact score's samples)`` of stochastic DDIM, same key and start."""
    key_prior, key_sampler = jax.random.split(key)
    x_init = ve_prior(key_prior, 128, 2, sigmas[-1])
    sampler = ddim(sigmas, eta=1.0)
    got = sample(key_sampler, sampler, score_fn, x_init).x
    return got, sample(key_sampler, sampler, ExactScore(mixture), x_init).x


def _ddim_floor(sigmas):
    """Samples lie within ``|x| <= 12``; each of the ``N`` steps rounds a few times (4)."""
    return sigmas.shape[0] * 4 * EPS32 * 12


@pytest.mark.slow  # samples with each adapter
def test_from_denoiser_and_batched_sample_as_the_exact_score(mixture, key):
    exact = ExactScore(mixture)
    sigmas = default_sigmas(30)
    for score_fn in (
        from_denoiser(lambda x, s: x + s**2 * exact(x, s)),
        batched(jax.vmap(exact)),
    ):
        got, want = _ddim_pair(mixture, score_fn, sigmas, key)
        np.testing.assert_allclose(got, want, rtol=0, atol=_ddim_floor(sigmas))


def test_from_epsilon_samples_as_the_exact_score_on_the_grid(mixture, alphas_cumprod, grid, key):
    score_fn = from_epsilon(_exact_eps(mixture, alphas_cumprod), alphas_cumprod)
    sigmas = grid[np.linspace(0, grid.shape[0] - 1, 30).round().astype(int)]
    got, want = _ddim_pair(mixture, score_fn, sigmas, key)
    np.testing.assert_allclose(got, want, rtol=0, atol=_ddim_floor(sigmas))


@pytest.mark.parametrize(
    "alphas_cumprod", ([0.9, 0.95, 0.5], [1.0, 0.5, 0.1], [0.9, 0.5, 0.0], [[0.9, 0.5]])
)
def test_from_epsilon_refuses_a_schedule_that_is_not_decreasing_inside_0_1(alphas_cumprod):
    with pytest.raises(ValueError, match="alphas_cumprod"):
        from_epsilon(lambda x_t, t: x_t, np.asarray(alphas_cumprod, np.float32))


# --- compiled once --------------------------------------------------------------------------

_TRACES = []


class _Scale(eqx.Module):
    """``weight * x`` for any convention's ``(x, sigma or t)``; counts its traces."""

    weight: jax.Array

    def __call__(self, x, level):
        _TRACES.append(None)  # a Python side effect: runs when traced, not when executed
        return self.weight * x


@pytest.mark.parametrize(
    "adapt",
    (
        lambda model, schedule: from_denoiser(model),
        lambda model, schedule: from_epsilon(model, vp_alphas_cumprod(schedule, 100)),
        lambda model, schedule: batched(model),
    ),
    ids=("from_denoiser", "from_epsilon", "batched"),
)
def test_new_weights_or_a_new_schedule_do_not_recompile(adapt):
    """The wrapped module's weights and the schedule are traced leaves of the adapter."""
    sampler, x_init = ddim(default_sigmas(5)), jnp.ones((3, 2))
    first = sample(jax.random.key(0), sampler, adapt(_Scale(jnp.float32(0.5)), "linear"), x_init)
    n_traces = len(_TRACES)
    assert n_traces > 0
    second = adapt(_Scale(jnp.float32(0.25)), "scaled_linear")
    assert np.any(sample(jax.random.key(0), sampler, second, x_init).x != first.x)
    assert len(_TRACES) == n_traces  # nothing was traced again, so nothing recompiled


def test_batched_scores_an_integer_example_as_floats():
    # sigma was cast to x's dtype: 0.5 became 0 for an integer x
    score = batched(lambda x, sigma: -x / (1.0 + sigma[:, None] ** 2))
    np.testing.assert_allclose(score(jnp.array([1, 2]), 0.5), [-0.8, -1.6], rtol=1e-6)


def test_batched_names_more_than_one_noise_level():
    """Several levels for one example gave reshape's "cannot reshape array of shape (3,)"."""
    score = batched(lambda x, sigma: -x / (1.0 + sigma[:, None] ** 2))
    with pytest.raises(ValueError, match=r"sigma: expected one noise level .* shape \(3,\)"):
        score(jnp.ones(2), jnp.ones(3))
