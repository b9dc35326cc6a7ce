"""UniPC, DEIS, iPNDM and Restart: convergence order on the closed-form Gaussian flow, stated
equivalences, Restart against a transcription of its paper's algorithm, and live parity with
diffusers' schedulers (marked ``diffusers``).

The Gaussian target N(mu, s^2 I) has the closed-form probability-flow solution
x(sigma) = mu + (x_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2); the order tests run
in float64 so that rounding stays far below the errors fitted.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sampler_checks import assert_nfe_counts_score_evaluations
from _sampler_checks import flow_solution as _flow_solution
from _sampler_checks import gaussian_score as _gaussian_score
from _sampler_checks import run_with_trajectory as _run

from scorelab.models import ExactScore
from scorelab.samplers import (
    budget_levels,
    default_sigmas,
    deis,
    euler,
    heun,
    ipndm,
    restart,
    sample,
    unipc,
)
from scorelab.samplers._restart import restart_levels
from scorelab.targets import seed_mixture


def _fitted_order(build, ns, spacing=np.geomspace):
    errors, steps = [], []
    with jax.enable_x64(True):
        x_T = jnp.array([30.0, -25.0])
        for n in ns:
            sigmas = spacing(0.05, 20.0, n)
            out = _run(build(sigmas).run, _gaussian_score, x_T)
            assert out.trajectory.dtype == jnp.float64
            exact = _flow_solution(np.asarray(x_T), sigmas[0], sigmas[-1])
            errors.append(np.linalg.norm(np.asarray(out.trajectory[-2]) - exact))
            steps.append(1.0 / (n - 1))
    return np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize(
    "build, order, ns",
    [
        (lambda s: unipc(s, 1, "bh1"), 2, (16, 32, 64, 128)),
        (lambda s: unipc(s, 1, "bh2"), 2, (16, 32, 64, 128)),
        (lambda s: unipc(s, 2, "bh1"), 3, (16, 32, 64, 128)),
        (lambda s: unipc(s, 2, "bh2"), 3, (16, 32, 64, 128)),
        (lambda s: unipc(s, 3, "bh1"), 3, (64, 128, 256, 512)),
        (lambda s: unipc(s, 3, "bh2"), 3, (64, 128, 256, 512)),
        (lambda s: deis(s, 1), 1, (16, 32, 64, 128)),
        (lambda s: deis(s, 2), 2, (16, 32, 64, 128)),
        (lambda s: deis(s, 3), 2, (256, 512, 1024)),
        (lambda s: ipndm(s, 1), 1, (16, 32, 64, 128)),
        (lambda s: ipndm(s, 4), 2, (16, 32, 64, 128)),
    ],
    ids=[
        "unipc1_bh1",
        "unipc1_bh2",
        "unipc2_bh1",
        "unipc2_bh2",
        "unipc3_bh1",
        "unipc3_bh2",
        "deis1",
        "deis2",
        "deis3",
        "ipndm1",
        "ipndm4",
    ],  # fmt: skip
)
def test_convergence_order_on_the_closed_form_flow(build, order, ns):
    """Fitted slope of log-error (at sigma_0, before the common final step to 0) against
    log-step within 0.15 of the global order each docstring states: UniPC min(p + 1, 3), DEIS
    and iPNDM min(p, 2) (warm-up steps cap them; DEIS-3's cap shows past ~100 steps, hence
    its finer grids)."""
    slope = _fitted_order(build, ns)
    assert abs(slope - order) < 0.15, slope


@pytest.mark.parametrize(
    "build",
    [lambda s, p=p: deis(s, p) for p in (1, 2, 3)],
    ids=["deis1", "deis2", "deis3"],
)
def test_the_last_step_is_tweedies_denoiser_at_sigma_0(build):
    """DEIS's step from sigma_0 to 0 is first order whatever its order (iPNDM's is not: it
    keeps IPNDMScheduler's multistep last step, which its diffusers parity test checks):
    Tweedie's denoiser x + sigma_0^2 s(x, sigma_0) of the state at sigma_0. The order tests
    and diffusers' parity read that state (trajectory[-2]), so a higher-order last step,
    extrapolated to a placeholder level, changed every sample returned and no test saw it
    (pass 32)."""
    with jax.enable_x64(True):
        sigmas = np.geomspace(0.05, 20.0, 12)
        out = _run(build(sigmas).run, _gaussian_score, jnp.array([30.0, -25.0]))
        last, sigma_0 = out.trajectory[-2], sigmas[0]
        denoised = last + sigma_0**2 * _gaussian_score(last, sigma_0)
        np.testing.assert_allclose(out.trajectory[-1], denoised, rtol=0, atol=1e-12)
        np.testing.assert_allclose(out.x, denoised, rtol=0, atol=1e-12)


def test_documented_default_options():
    """The defaults the docstrings state (diffusers' solver_order 2 and UniPC's bh2;
    Restart's two restarts) build the samplers that name them."""
    import equinox as eqx

    sigmas = default_sigmas(8)
    assert eqx.tree_equal(deis(sigmas), deis(sigmas, 2))
    assert eqx.tree_equal(unipc(sigmas), unipc(sigmas, 2, "bh2"))
    assert eqx.tree_equal(restart(sigmas), restart(sigmas, n_restarts=2))


@pytest.mark.parametrize("build", [lambda s: deis(s, 1), lambda s: ipndm(s, 1)],
                         ids=["deis1", "ipndm1"])  # fmt: skip
def test_first_order_multistep_is_euler(build):
    with jax.enable_x64(True):
        sigmas = np.geomspace(0.02, 80.0, 12)
        x_T = jnp.array([40.0, -25.0])
        ours = _run(build(sigmas).run, _gaussian_score, x_T)
        by_euler = _run(euler(sigmas).run, _gaussian_score, x_T)
        np.testing.assert_allclose(ours.trajectory, by_euler.trajectory, rtol=0, atol=1e-12)


def test_restart_without_restarts_is_heun():
    with jax.enable_x64(True):
        sigmas = np.geomspace(0.02, 80.0, 12)
        x_T = jnp.array([40.0, -25.0])
        noise = np.zeros((12, 2))
        ours = _run(restart(sigmas, n_restarts=0).run, _gaussian_score, x_T, noise)
        by_heun = _run(heun(sigmas).run, _gaussian_score, x_T)
        np.testing.assert_array_equal(ours.trajectory, by_heun.trajectory)


def _restart_algorithm_1(score_fn, x, sigmas, t_min, t_max, n_restarts, restart_steps, noise):
    """Xu et al. (2023), Alg. 1, transcribed in NumPy (float64): Heun down ``sigmas``
    (descending, ending at 0, Euler on the last step), and at ``t_min`` the Restart loop with
    EDM's rho = 7 steps from ``t_max`` to ``t_min``; ``noise[j]`` is step ``j``'s draw."""

    def solver(x, t, t_next):
        d = -t * score_fn(x, t)
        x_next = x + (t_next - t) * d
        if t_next == 0:
            return x_next
        return x + (t_next - t) * 0.5 * (d - t_next * score_fn(x_next, t_next))

    rows = 0
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        x = solver(x, t, t_next)
        rows += 1
        if t_next == t_min:
            ramp = np.arange(restart_steps + 1) / restart_steps
            lo, hi = t_min ** (1 / 7), t_max ** (1 / 7)
            levels = (hi + ramp * (lo - hi)) ** 7
            for _ in range(n_restarts):
                x = x + np.sqrt(t_max**2 - t_min**2) * noise[rows]
                for s, s_next in zip(levels[:-1], levels[1:]):
                    x = solver(x, s, s_next)
                    rows += 1
    return x


def test_restart_matches_a_transcription_of_algorithm_1():
    sigmas = np.geomspace(0.02, 80.0, 14)
    K, N_R = 3, 4
    score = ExactScore(seed_mixture())
    noise = np.random.default_rng(0).standard_normal((14 + K * N_R, 2))
    x_T = np.array([40.0, -25.0])
    with jax.enable_x64(True):
        sampler = restart(sigmas, 0.1, 1.5, K, N_R)
        ours = _run(sampler.run, score, jnp.asarray(x_T), noise)
        t_min = sigmas[np.argmin(np.abs(np.log(sigmas) - np.log(0.1)))]

        def score_fn(x, t):
            return np.asarray(score(jnp.asarray(x), t))

        expected = _restart_algorithm_1(score_fn, x_T, np.append(sigmas[::-1], 0.0), t_min,
                                        1.5, K, N_R, noise)  # fmt: skip
    assert sampler.nfe == 2 * (14 + K * N_R) - 1
    np.testing.assert_allclose(ours.x, expected, rtol=0, atol=1e-10)
    # The restarts ran: without the jumps the result differs.
    assert (
        np.abs(np.asarray(ours.x) - expected).max()
        < 1e-3
        * np.abs(expected - np.asarray(_run(heun(sigmas).run, score, jnp.asarray(x_T)).x)).max()
    )


def test_restart_levels_span_the_interval():
    levels = np.asarray(restart_levels(0.1, 2.0, 5))
    assert levels.shape == (6,) and np.all(np.diff(levels) < 0)
    np.testing.assert_allclose(levels[[0, -1]], [2.0, 0.1], rtol=1e-6)


@pytest.mark.parametrize(
    "sampler, nfe, n_levels",
    [
        (unipc(default_sigmas(6), 3), 6, 6),
        (deis(default_sigmas(6), 3), 6, 6),
        (ipndm(default_sigmas(6)), 6, 6),
        (restart(default_sigmas(6), n_restarts=2, restart_steps=3), 2 * (6 + 6) - 1, 12),
    ],
    ids=["unipc", "deis", "ipndm", "restart"],
)
def test_nfe_counts_score_evaluations(sampler, nfe, n_levels):
    assert_nfe_counts_score_evaluations(sampler, nfe, n_levels)


def test_restart_budget_counts_its_restarts():
    options = {"n_restarts": 2, "restart_steps": 3}
    levels = budget_levels("restart", 41, options)
    assert levels == 15  # 2 (15 + 6) - 1 = 41
    assert restart(default_sigmas(levels), **options).nfe == 41


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: unipc(default_sigmas(5), 4), "order must be 1, 2 or 3, got 4"),
        (lambda: unipc(default_sigmas(5), solver_type="bh3"), "solver_type must be one of"),
        (lambda: deis(default_sigmas(5), 0), "order must be a positive integer"),
        (lambda: deis(default_sigmas(5), 4), "order must be 1, 2 or 3, got 4"),
        (lambda: ipndm(default_sigmas(5), 5), "max_order must be 1 to 4"),
        (lambda: restart(default_sigmas(5), 0.5, 0.2), "0 < restart_sigma_min < restart_sigma"),
        # an empty interval: no restart could move the chains
        (lambda: restart(default_sigmas(5), 0.5, 0.5), "0 < restart_sigma_min < restart_sigma"),
        (lambda: restart(default_sigmas(5), n_restarts=-1), "n_restarts must be an integer"),
    ],
)
def test_bad_options_are_one_line_errors(call, match):
    with pytest.raises(ValueError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


# --- live parity with diffusers' schedulers ----------------------------------------------------


def _diffusers():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.set_num_threads(1)
    return torch, diffusers


_X_VP = np.random.default_rng(3).standard_normal((64, 2)).astype(np.float32)


def _eps(score, x_vp, sigma):
    r"""The VP model output epsilon at VE level ``sigma``: x_ve = x_vp sqrt(1 + sigma^2) and
    eps = -sigma grad log q_sigma(x_ve) (:mod:`scorelab.samplers._vp`)."""
    x_ve = jnp.asarray(x_vp) * np.sqrt(1.0 + sigma**2)
    return (-sigma * np.asarray(jax.vmap(score, (0, None))(x_ve, np.float32(sigma)))).astype(
        np.float32
    )


def _check_parity(ours, reference):
    # float32 on samples of scale ~10: agreement to 1e-3 absolute
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-3)
    assert np.abs(reference).max() > 1.0


@pytest.mark.diffusers
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
def test_unipc_matches_diffusers(order, solver_type):
    torch, diffusers = _diffusers()
    score = ExactScore(seed_mixture())
    steps = 10
    scheduler = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=solver_type)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.numpy().astype(np.float64)  # VE levels, descending, then 0
    x, states = torch.from_numpy(_X_VP), []
    for k, t in enumerate(scheduler.timesteps):
        eps = _eps(score, x.numpy(), sigmas[k])
        x = scheduler.step(torch.from_numpy(eps), t, x).prev_sample
        states.append(x.numpy() * np.sqrt(1.0 + sigmas[k + 1] ** 2))  # as VE states
    grid = sigmas[:-1][::-1].astype(np.float32)
    x_T = (_X_VP * np.sqrt(1.0 + sigmas[0] ** 2)).astype(np.float32)
    out = sample(jax.random.key(0), unipc(grid, order, solver_type), score, x_T, True)
    # Every predicted state, the last included; diffusers' bh1 multiplies B(h) = -inf by 0 on
    # the step to sigma = 0 (NaN), so its final sample is compared only for bh2.
    _check_parity(np.asarray(out.trajectory[:, :-1]).swapaxes(0, 1), np.stack(states[:-1]))
    if solver_type == "bh1":
        assert np.all(np.isnan(states[-1]))
    else:
        _check_parity(np.asarray(out.x), states[-1])


@pytest.mark.diffusers
@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_matches_diffusers(order):
    """diffusers' DEIS ends at the level of timestep 0 (not 0): that level is the last of our
    grid, and our state there (before the final step to 0) is compared. 20 steps: diffusers
    lowers the last orders only below 15."""
    torch, diffusers = _diffusers()
    score = ExactScore(seed_mixture())
    scheduler = diffusers.DEISMultistepScheduler(solver_order=order)
    scheduler.set_timesteps(20)
    sigmas = scheduler.sigmas.numpy().astype(np.float64)  # VE levels, descending, > 0
    x = torch.from_numpy(_X_VP)
    for k, t in enumerate(scheduler.timesteps):
        x = scheduler.step(torch.from_numpy(_eps(score, x.numpy(), sigmas[k])), t, x).prev_sample
    reference = x.numpy() * np.sqrt(1.0 + sigmas[-1] ** 2)
    grid = sigmas[::-1].astype(np.float32)
    x_T = (_X_VP * np.sqrt(1.0 + sigmas[0] ** 2)).astype(np.float32)
    out = sample(jax.random.key(0), deis(grid, order), score, x_T, True)
    _check_parity(np.asarray(out.trajectory[:, -2]), reference)


@pytest.mark.diffusers
def test_ipndm_matches_diffusers():
    """diffusers' IPNDMScheduler runs its own trigonometric schedule, starting at infinite
    noise; its update (``step``, unchanged) is run here on our grid by setting its
    ``betas`` (the VP sigma) and ``alphas`` to the VP pair of each VE level, and fed the
    v-prediction whose ``ets`` is the epsilon."""
    torch, diffusers = _diffusers()
    score = ExactScore(seed_mixture())
    grid = default_sigmas(10)
    levels = np.append(np.asarray(grid, np.float64)[::-1], 0.0)
    scheduler = diffusers.IPNDMScheduler()
    scheduler.set_timesteps(10)
    alpha = 1.0 / np.sqrt(1.0 + levels**2)
    scheduler.betas = torch.from_numpy((levels * alpha).astype(np.float32))
    scheduler.alphas = torch.from_numpy(alpha.astype(np.float32))
    x = torch.from_numpy(_X_VP)
    for k, t in enumerate(scheduler.timesteps):
        eps = _eps(score, x.numpy(), levels[k])
        v = (eps - levels[k] * alpha[k] * x.numpy()) / alpha[k]  # ets = sigma x + alpha v = eps
        x = scheduler.step(torch.from_numpy(v.astype(np.float32)), t, x).prev_sample
    x_T = (_X_VP / alpha[0]).astype(np.float32)
    out = sample(jax.random.key(0), ipndm(grid), score, x_T)
    _check_parity(np.asarray(out.x), x.numpy())
