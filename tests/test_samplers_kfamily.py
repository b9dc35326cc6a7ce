"""The k-diffusion family: convergence order on the closed-form flow, stated equivalences, NFE,
budgets, and the Brownian-tree noise's law (live parity: ``test_samplers_kdiffusion.py``).

The Gaussian target N(mu, s^2 I) has the closed-form probability-flow solution
x(sigma) = mu + (x_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2); the order tests run in
float64 and read the error at sigma_0 (the trajectory's second-to-last record), before the
common first-order step to sigma = 0.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sampler_checks import assert_nfe_counts_score_evaluations
from _sampler_checks import flow_solution as _flow_solution
from _sampler_checks import gaussian_score as _gaussian_score

from scorelab.samplers import (
    SAMPLERS,
    brownian_increment,
    budget_levels,
    build_sampler,
    default_sigmas,
    dpm_2,
    dpm_2_ancestral,
    dpm_adaptive,
    dpm_solver,
    dpmpp_2m,
    dpmpp_2m_sde,
    dpmpp_2s_ancestral,
    dpmpp_3m,
    dpmpp_3m_sde,
    dpmpp_sde,
    euler,
    euler_churn,
    lms,
    sample,
)

SIGMA_MIN, SIGMA_MAX = 0.05, 20.0
NEW = ["euler_churn", "dpm_2", "dpm_2_ancestral", "lms", "dpm_solver", "dpmpp_3m",
       "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde", "dpmpp_2s_ancestral"]  # fmt: skip


@eqx.filter_jit
def _run(sampler, score_fn, x_init, noise=None):
    return sampler.run(jax.random.key(0), score_fn, x_init, True, noise)


def _zero_noise(sampler, shape=(2,)):
    return jnp.zeros(sampler.noise_shape(shape)) if sampler.draws_per_step else None


@pytest.mark.parametrize(
    "build, order, levels",
    [
        (lambda s: dpm_solver(s, order=1), 1, (32, 64, 128)),
        (lambda s: dpm_solver(s, order=2), 2, (32, 64, 128)),
        (lambda s: dpm_solver(s, order=3), 3, (32, 64, 128)),
        (dpm_2, 2, (32, 64, 128)),
        (lambda s: dpmpp_sde(s, eta=0.0), 2, (32, 64, 128)),
        (lambda s: dpmpp_2m_sde(s, eta=0.0, solver_type="heun"), 2, (32, 64, 128)),
        (lms, 4, (64, 128, 256)),
        (dpmpp_3m, 2, (32, 64, 128)),
    ],
    ids=["dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpm_2", "dpmpp_sde_eta0",
         "dpmpp_2m_sde_heun_eta0", "lms", "dpmpp_3m"],
)  # fmt: skip
def test_convergence_order_on_the_closed_form_flow(build, order, levels):
    """Fitted slope of log-error against log-step within 0.15 of the order.

    The multistep solvers start with lower-order steps; for LMS two tiny starting steps
    (``h^2.5`` in log-sigma, so that their local errors are ``O(h^5)``) isolate the order of
    the multistep formula. DPM-Solver++(3M) is asserted at order 2: its third-order term (as
    written by Lu et al.'s reference code and k-diffusion, which it matches to 1e-9) weights
    the second difference of D by half the Taylor coefficient, so its local error is
    ``O(h^3)`` (see :func:`scorelab.samplers.dpmpp_3m`)."""
    errors, steps = [], []
    with jax.enable_x64(True):
        x_T = jnp.array([30.0, -25.0])
        for n in levels:
            h = np.log(SIGMA_MAX / SIGMA_MIN) / (n - 1)
            sigmas = np.geomspace(SIGMA_MIN, SIGMA_MAX, n)
            if order == 4:  # LMS: the starting steps
                sigmas = np.append(sigmas, SIGMA_MAX * np.exp(h**2.5 * np.arange(1, 4)))
            sampler = build(sigmas)
            out = _run(sampler, _gaussian_score, x_T, _zero_noise(sampler))
            assert out.trajectory.dtype == jnp.float64
            exact = _flow_solution(np.asarray(x_T), sigmas[0], sigmas[-1])
            errors.append(np.linalg.norm(np.asarray(out.trajectory[-2]) - exact))
            steps.append(h)
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.15, slope


def test_dpmpp_3m_third_difference_term_is_half_the_taylor_one():
    """The docstring's claim, on one step from exact history: the (3M) update's local error is
    O(h^3) (a correct third-order term would make it O(h^4))."""

    def denoised(lam):  # any smooth D(lambda)
        return np.sin(2.0 * lam) + lam**3 / 5.0

    def exact(x, lam, h):  # e^{-h} x + int_0^h e^{-(h - u)} D(lam + u) du, Gauss-Legendre
        nodes, weights = np.polynomial.legendre.leggauss(20)
        u = 0.5 * h * (nodes + 1.0)
        return np.exp(-h) * x + 0.5 * h * np.sum(weights * np.exp(-(h - u)) * denoised(lam + u))

    local = []
    with jax.enable_x64(True):
        for h in (0.02, 0.01, 0.005):
            lam = 0.3
            state = dpmpp_3m_state(denoised(lam - h), denoised(lam - 2 * h), h)
            score = lambda x, sigma, lam=lam: (denoised(lam) - x) / sigma**2  # noqa: E731
            x_next = _one_3m_step(score, state, np.exp(-lam), np.exp(-lam - h))
            local.append(abs(x_next - exact(1.0, lam, h)))
    slopes = np.diff(np.log(local)) / np.log(0.5)
    assert np.all(np.abs(slopes - 3.0) < 0.15), slopes


def dpmpp_3m_state(denoised_1, denoised_2, h):
    from scorelab.samplers import DPMpp3MState

    return DPMpp3MState(jnp.array(1.0), jnp.array(denoised_1), jnp.array(denoised_2),
                        jnp.array(h), jnp.array(h))  # fmt: skip


def _one_3m_step(score_fn, state, sigma, sigma_next):
    sampler = dpmpp_3m(np.array([sigma_next, sigma]))
    inputs = ((jnp.array(sigma), jnp.array(sigma_next), jnp.array(2)), None)
    return float(sampler.step(score_fn, state, inputs)[0].x)


@pytest.mark.parametrize(
    "stochastic, deterministic, exact",
    [
        (lambda s: dpmpp_3m_sde(s, eta=0.0), dpmpp_3m, True),
        (lambda s: euler_churn(s, s_churn=0.0), euler, True),
        (lambda s: dpmpp_2m_sde(s, eta=0.0), dpmpp_2m, False),
        (lambda s: dpmpp_2s_ancestral(s, eta=0.0), lambda s: dpmpp_sde(s, eta=0.0), False),
        (lambda s: dpm_2_ancestral(s, eta=0.0), dpm_2, False),
    ],
    ids=["3m_sde_eta0_is_3m", "euler_churn0_is_euler", "2m_sde_eta0_is_2m",
         "2s_ancestral_eta0_is_dpmpp_sde_eta0", "dpm_2_ancestral_eta0_is_dpm_2"],
)  # fmt: skip
def test_stated_equivalences(stochastic, deterministic, exact):
    """The docstrings' claims: without noise each stochastic sampler is the named deterministic
    one, bit for bit where the arithmetic is the same, else to float64 rounding."""
    sigmas = np.geomspace(0.02, 80.0, 15)
    with jax.enable_x64(True):
        x_T = jnp.array([35.0, -12.0])
        one, two = stochastic(sigmas), deterministic(sigmas)
        noise = jax.random.normal(jax.random.key(5), one.noise_shape((2,)))  # multiplied by 0
        a = _run(one, _gaussian_score, x_T, noise).trajectory
        b = _run(two, _gaussian_score, x_T, _zero_noise(two)).trajectory
    if exact:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "sampler, nfe",
    [(euler_churn(default_sigmas(7), s_churn=5.0), 7), (dpm_2(default_sigmas(7)), 13),
     (dpm_2_ancestral(default_sigmas(7)), 13), (lms(default_sigmas(7)), 7),
     (dpm_solver(default_sigmas(7)), 19), (dpm_solver(default_sigmas(7), order=2), 13),
     (dpmpp_3m(default_sigmas(7)), 7), (dpmpp_2m_sde(default_sigmas(7)), 7),
     (dpmpp_3m_sde(default_sigmas(7)), 7), (dpmpp_sde(default_sigmas(7)), 13),
     (dpmpp_2s_ancestral(default_sigmas(7)), 13)],
    ids=["euler_churn", "dpm_2", "dpm_2_ancestral", "lms", "dpm_solver_3", "dpm_solver_2",
         "dpmpp_3m", "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde",
         "dpmpp_2s_ancestral"],
)  # fmt: skip
def test_nfe_counts_score_evaluations(sampler, nfe):
    assert_nfe_counts_score_evaluations(sampler, nfe, n_levels=7)


def test_dpm_adaptive_counts_every_evaluation_and_meets_its_tolerance():
    """Each chain's NFE (``order`` per attempt, plus the denoiser) equals a counter inside the
    score; a tighter tolerance costs more evaluations and lands closer to the closed-form
    flow; no budget applies to a data-dependent cost."""
    calls = []

    def counting_score(x, sigma):
        jax.debug.callback(lambda: calls.append(None))
        return _gaussian_score(x, sigma)

    sigmas = np.geomspace(SIGMA_MIN, SIGMA_MAX, 8)
    errors, nfes = [], []
    with jax.enable_x64(True):
        x_T = jnp.array([30.0, -25.0])
        exact = _flow_solution(np.asarray(x_T), sigmas[0], sigmas[-1])
        for order, rtol in [(3, 1e-2), (3, 1e-5), (2, 1e-5)]:
            calls.clear()
            sampler = dpm_adaptive(sigmas, order=order, rtol=rtol, atol=rtol)
            out = sampler.run(jax.random.key(0), counting_score, x_T, trajectory=True)
            jax.effects_barrier()
            assert sampler.nfe is None and int(out.nfe) == len(calls)
            assert int(out.nfe) == order * int(out.info.n_accept + out.info.n_reject) + 1
            assert out.trajectory.shape == (2, 2)
            errors.append(np.linalg.norm(np.asarray(out.trajectory[0]) - exact))
            nfes.append(int(out.nfe))
    assert nfes[1] > nfes[0] and errors[1] < errors[0] / 100
    assert errors[2] < 1e-3
    assert budget_levels("dpm_adaptive", 20) is None


@pytest.mark.parametrize("name", NEW)
def test_budget_levels_is_the_largest_grid_within_the_budget(name):
    """``budget_levels`` from each sampler's declared cost: the grid it picks fits the budget
    and one more level would not."""
    options = {"order": 2} if name == "dpm_solver" else {}
    for budget in (7, 10, 20):
        n = budget_levels(name, budget, options)
        assert build_sampler(name, default_sigmas(n), **options).nfe <= budget
        assert build_sampler(name, default_sigmas(n + 1), **options).nfe > budget


def test_registered_with_their_options():
    assert {*NEW, "dpm_adaptive"} <= set(SAMPLERS)
    names = {name: [o.name for o in SAMPLERS[name].options] for name in NEW}
    assert names["dpmpp_2m_sde"] == ["noise_sampler", "eta", "s_noise", "solver_type"]
    assert names["euler_churn"] == names["dpm_2"] == ["s_churn", "s_tmin", "s_tmax", "s_noise"]
    assert names["dpm_solver"] == names["lms"] == ["order"] and names["dpmpp_3m"] == []
    assert "s_noise" in [o.name for o in SAMPLERS["ancestral"].options]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda s: dpmpp_3m_sde(s, eta=-1.0), "eta must be >= 0"),
        (lambda s: dpmpp_2s_ancestral(s, eta=1.5), "eta must be >= 0 and <= 1.0"),
        (lambda s: dpmpp_2m_sde(s, solver_type="rk4"), "unknown solver_type"),
        (lambda s: dpmpp_sde(s, noise_sampler="sobol"), "unknown noise_sampler"),
        (lambda s: dpmpp_sde(s, r=0.0), r"r must be in \(0, 1\]"),
        (lambda s: dpm_2(s, s_noise=-1.0), "s_noise must be >= 0"),
        (lambda s: euler_churn(s, s_churn=-1.0), "s_churn"),
        (lambda s: lms(s, order=5), "order must be 1, 2, 3 or 4"),
        (lambda s: dpm_solver(s, order=4), "order must be 1, 2 or 3"),
        (lambda s: dpm_adaptive(s, order=1), "order must be 2 or 3"),
        (lambda s: dpm_adaptive(s, rtol=0.0), "need 0 < rtol < 1"),
        (lambda s: dpm_adaptive(s, rtol=1.0), "need 0 < rtol < 1"),
        (lambda s: dpm_adaptive(s, icoeff=-5.0), "icoeff must be > 0"),
        (lambda s: dpm_adaptive(s, accept_safety=1.5), "accept_safety must be in"),
    ],
)
def test_bad_options_name_the_input(build, message):
    with pytest.raises(ValueError, match=message):
        build(default_sigmas(5))


@pytest.mark.parametrize(
    "build",
    [
        lambda s: dpmpp_sde(s, r=1.0),  # r in (0, 1]: the stage at the step's end
        lambda s: dpm_adaptive(s, accept_safety=1.0),  # in (0, 1]: accept at the tolerance
        lambda s: euler_churn(s, s_churn=1.0, s_tmin=0.5, s_tmax=0.5),  # churn on one level
    ],
    ids=["dpmpp_sde_r1", "dpm_adaptive_safety1", "euler_churn_one_level"],
)
def test_the_closed_ends_of_documented_ranges_are_accepted(build):
    """Each docstring's range is closed at these ends; refusing them went unseen (pass 32)."""
    assert callable(build(default_sigmas(5)).run)


# --- Brownian-tree noise ------------------------------------------------------------------------


def _increment(key, a, b, low=0.02, high=80.0):
    return brownian_increment(key, low, high, a, b, (2,), jnp.float32)


def test_brownian_increments_belong_to_one_path():
    """W(c) - W(a) = (W(b) - W(a)) + (W(c) - W(b)) for one key (additivity), the same on any
    grid sharing the segment, and another key gives another path."""
    key = jax.random.key(3)
    a, b, c = 0.7, 2.3, 9.1
    whole = _increment(key, c, a) * np.sqrt(c - a)
    parts = _increment(key, c, b) * np.sqrt(c - b) + _increment(key, b, a) * np.sqrt(b - a)
    np.testing.assert_allclose(whole, parts, rtol=0, atol=1e-5)
    assert np.all(np.abs(_increment(jax.random.key(4), c, a) * np.sqrt(c - a) - whole) > 1e-3)

    # Two grids with the same ends, sharing the segment [2.3, 9.1], see the same increment.
    coarse = dpmpp_2m_sde(np.array([0.02, 2.3, 9.1, 80.0]), noise_sampler="brownian")
    fine = dpmpp_2m_sde(np.array([0.02, 0.5, 2.3, 9.1, 30.0, 80.0]), noise_sampler="brownian")
    x = jnp.zeros(2)
    draws = [s.draw_from_key(s.step_keys(key)[1, 0], (9.1, 2.3), x) for s in (coarse, fine)]
    np.testing.assert_array_equal(draws[0], draws[1])


def test_brownian_increments_have_the_law_of_brownian_motion():
    """Standardised increments are N(0, 1) and overlapping ones (DPM++ SDE's two draws, over
    [sigma_s, sigma] and [sigma_next, sigma]) correlate as sqrt((sigma - sigma_s) /
    (sigma - sigma_next)); tolerances are 4 standard errors over 4000 paths x 2 coordinates."""
    sigma, sigma_s, sigma_next = 5.0, 3.0, 1.0
    keys = jax.random.split(jax.random.key(11), 4000)
    first = jax.vmap(lambda k: _increment(k, sigma, sigma_s))(keys).ravel()
    second = jax.vmap(lambda k: _increment(k, sigma, sigma_next))(keys).ravel()
    n = first.size
    for z in (first, second):
        assert abs(float(z.mean())) < 4.0 / np.sqrt(n)
        assert abs(float(z.var()) - 1.0) < 4.0 * np.sqrt(2.0 / n)
    correlation = float(np.corrcoef(first, second)[0, 1])
    expected = np.sqrt((sigma - sigma_s) / (sigma - sigma_next))
    assert abs(correlation - expected) < 4.0 * (1.0 - expected**2) / np.sqrt(n)


@pytest.mark.slow
def test_brownian_sde_solutions_converge_as_the_grid_is_refined():
    """With one Brownian path per chain, DPM-Solver++(2M) SDE on nested grids converges to one
    solution (strong convergence): the RMS gap between successive grids shrinks, and is far
    below the gap with fresh draws, which see different noise on every grid (measured over 64
    chains: 0.049, 0.028 against 0.78). Same key, same starts, the exact Gaussian score."""
    x_T = np.random.default_rng(0).standard_normal((64, 2)) * 20.0

    def final(noise_sampler, n):
        sampler = dpmpp_2m_sde(np.geomspace(0.05, 20.0, n), noise_sampler=noise_sampler)
        out = sample(jax.random.key(1), sampler, _gaussian_score, jnp.asarray(x_T), trajectory=True)
        return np.asarray(out.trajectory[:, -2])

    def gap(a, b):
        return np.sqrt(np.mean(np.sum((a - b) ** 2, axis=-1)))

    with jax.enable_x64(True):
        tree = [final("brownian", n) for n in (17, 33, 65)]
        fresh = [final("gaussian", n) for n in (33, 65)]
    assert gap(tree[2], tree[1]) < gap(tree[1], tree[0]) < 0.1 * gap(fresh[1], fresh[0])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"pcoeff": float("nan")}, "pcoeff: expected"),
        ({"pcoeff": float("inf")}, "pcoeff: expected"),
        ({"pcoeff": -1.0}, "pcoeff: expected a number >= 0, got -1.0"),
        ({"dcoeff": float("nan")}, "dcoeff: expected"),
        ({"dcoeff": float("-inf")}, "dcoeff: expected"),
        ({"dcoeff": -1.0}, "dcoeff: expected a number >= 0, got -1.0"),
        ({"h_init": float("inf")}, "h_init: expected"),
        ({"icoeff": float("inf")}, "icoeff: expected"),
    ],
)
def test_dpm_adaptive_rejects_bad_controller_options_at_construction(options, message):
    """These were accepted, and sampling then failed with 'raise max_steps', the wrong remedy."""
    with pytest.raises(ValueError, match=message):
        dpm_adaptive(default_sigmas(5), **options)
    dpm_adaptive(default_sigmas(5), pcoeff=0.3, icoeff=0.3, dcoeff=0.1)  # a PID controller


@pytest.mark.parametrize("value", ["2", "two", 2.0, 0, -1, True, None])
def test_check_positive_int_refuses_strings_and_floats_and_quotes_them(value):
    """``'2'`` was reported as 'got 2', reading as a valid integer; ``2.0`` was accepted and a
    string other than digits raised Python's own int() message."""
    from scorelab.samplers._core import check_positive_int

    with pytest.raises(ValueError, match=f"^n_steps must be a positive integer, got {value!r}$"):
        check_positive_int("n_steps", value)
    assert check_positive_int("n_steps", np.int64(7)) == 7
    assert type(check_positive_int("n_steps", np.int64(7))) is int
    with pytest.raises(ValueError, match="max_steps must be a positive integer, got 0"):
        dpm_adaptive(default_sigmas(5), max_steps=0)


# --- pinned by closed forms (mutation pass 33) ---------------------------------------------------


def test_ancestral_step_is_k_diffusion_s_split():
    """get_ancestral_step: sigma_up = eta sqrt(s'^2 (s^2 - s'^2) / s^2), sigma_down =
    sqrt(s'^2 - sigma_up^2); from 2 to 1: (1/2, sqrt(3/4)) at eta 1, (sqrt(13/16), sqrt(3/16))
    at eta 1/2. A sigma where the formula has sigma^2 passed every sampler test."""
    from scorelab.samplers import ancestral_step

    np.testing.assert_allclose(ancestral_step(2.0, 1.0, 1.0), [0.5, np.sqrt(0.75)], rtol=1e-6)
    expected = [np.sqrt(1 - 0.1875), np.sqrt(0.1875)]
    np.testing.assert_allclose(ancestral_step(2.0, 1.0, 0.5), expected, rtol=1e-6)


def test_dpmpp_sde_s_intermediate_level_follows_r():
    """One eta = 0 step of DPM-Solver++(2S) with r = 1 from sigma 2 to 1 on N(0, I) data
    (denoiser x / (1 + sigma^2)), by hand: the intermediate level is sigma_s = 1 (lambda moved
    by r h), x_2 = 0.6 x, D_2 = 0.3 x, the blend D_d = 0.25 x and x' = 0.625 x. Only r = 1/2,
    where an r ignored gives the same level, was tried."""
    sampler = dpmpp_sde(default_sigmas(4), eta=0.0, r=1.0)
    x = jnp.array([1.0, -2.0])
    inputs = ((jnp.float32(2.0), jnp.float32(1.0), None), lambda i, level: jnp.zeros_like(x))
    out, _ = sampler.step(lambda x, s: -x / (1.0 + s**2), x, inputs)
    np.testing.assert_allclose(out, 0.625 * x, rtol=1e-5)


def test_dpm_adaptive_reaches_the_end_of_its_interval_and_keeps_k_diffusion_s_defaults():
    """From lambda 0 to 0.055 with h_init 0.05, the first accepted attempt stops 0.005 short
    of the end, more than k-diffusion's slack of 1e-5 forgives: a second step must reach
    sigma_next. The controller's defaults are k-diffusion's rtol 0.05 and atol 0.0078."""
    from scorelab.samplers._dpm_adaptive import DPMAdaptiveState

    sampler = dpm_adaptive(default_sigmas(4), h_init=0.05)
    assert (sampler.rtol, sampler.atol) == (0.05, 0.0078)
    levels = (jnp.float32(1.0), jnp.float32(np.exp(-0.055)))
    score = lambda x, s: -x / (1.0 + s**2)  # noqa: E731
    _, info = sampler.step(score, DPMAdaptiveState(jnp.array([1.0, -2.0])), (levels, None))
    assert int(info.n_accept) == 2, info


def test_brownian_increments_over_adjacent_short_intervals_are_independent():
    """W(1.005) - W(1) and W(1.01) - W(1.005): independent by the law of Brownian motion,
    within 4 standard errors (1 / sqrt(4000)) of zero correlation. The tree's search
    tolerance, coarse next to these intervals, gave both increments one node's noise."""
    key = jax.random.key(0)

    def increment(a, b):
        return np.asarray(brownian_increment(key, 1.0, 10.0, a, b, (4000,), jnp.float32))

    first, second = increment(1.0, 1.005), increment(1.005, 1.01)
    assert abs(np.corrcoef(first, second)[0, 1]) < 4.0 / np.sqrt(4000)


def test_s_noise_of_zero_is_accepted_and_a_negative_one_refused():
    """s_noise in [0, inf): 0 turns the step noise off (the closed end of the range)."""
    dpmpp_2m_sde(default_sigmas(4), s_noise=0.0)
    with pytest.raises(ValueError, match="s_noise must be >= 0"):
        dpmpp_2m_sde(default_sigmas(4), s_noise=-0.1)
