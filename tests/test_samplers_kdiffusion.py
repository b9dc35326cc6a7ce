"""Live parity with k-diffusion's unmodified ``k_diffusion/sampling.py`` (marked ``diffusers``).

Both sides run in float64 on the exact denoiser of the tutorial's mixture (one JAX function,
called from torch through NumPy), with the same standard normal draws: k-diffusion's through
its ``noise_sampler`` argument, or for the churn of ``sample_euler`` / ``sample_dpm_2`` (which
call ``torch.randn_like`` directly) by replaying torch's generator from the same seed. Agreement
is required to 1e-9 on states of size ~10-80, i.e. rounding.

``k_diffusion/__init__.py`` imports its training stack, so ``sampling.py`` is loaded by file,
unchanged (``benchmarks/_harness.py``'s ``k_diffusion_sampling``, which the likelihood benchmark
shares). ``.ci/run`` installs k-diffusion with ``--no-deps`` plus the two solver libraries it
imports (torchsde, torchdiffeq).
"""

import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.models import ExactScore
from scorelab.noise import karras_sigmas
from scorelab.samplers import (
    ancestral,
    dpm_2,
    dpm_2_ancestral,
    dpm_adaptive,
    dpm_solver,
    dpmpp_2m_sde,
    dpmpp_2s_ancestral,
    dpmpp_3m,
    dpmpp_3m_sde,
    dpmpp_sde,
    euler_churn,
    lms,
    sample,
)
from scorelab.targets import seed_mixture

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from _harness import k_diffusion_sampling  # noqa: E402

pytestmark = pytest.mark.diffusers

LEVELS, CHAINS, TOLERANCE = 12, 5, 1e-9


def _k_sampling():
    """torch (one thread) and k-diffusion's ``sampling`` module, loaded from its files without
    the package's ``__init__`` (``benchmarks/_harness.py``'s ``k_diffusion_sampling``)."""
    torch = pytest.importorskip("torch")
    sampling = k_diffusion_sampling()
    if sampling is None:
        pytest.skip("k-diffusion, torchsde or torchdiffeq is not installed")
    torch.set_num_threads(1)
    return torch, sampling


class _Problem:
    """The grid, the start, the exact score and its denoiser as a torch model, in float64."""

    def __init__(self, torch, seed: int = 0):
        self.torch = torch
        self.sigmas = np.asarray(karras_sigmas(LEVELS, 0.02, 80.0, rho=7.0), np.float64)
        rng = np.random.default_rng(seed)
        self.x_T = 80.0 * rng.standard_normal((CHAINS, 2))
        self.score_fn = ExactScore(seed_mixture())
        denoise = jax.jit(jax.vmap(lambda x, s: x + s**2 * self.score_fn(x, s)))
        self._denoise = denoise

    def model(self, x, sigma):
        out = self._denoise(jnp.asarray(x.numpy()), jnp.asarray(sigma.numpy()))
        return self.torch.from_numpy(np.array(out, np.float64))

    def k_sigmas(self):
        return self.torch.from_numpy(np.append(self.sigmas[::-1], 0.0).copy())

    def k_x(self):
        return self.torch.from_numpy(self.x_T.copy())

    def run(self, sampler, noise=None):
        """scorelab's final states, ``(CHAINS, 2)``; ``noise`` is ``(CHAINS, rows, 2)``."""
        out = eqx.filter_jit(sample)(
            jax.random.key(0), sampler, self.score_fn, jnp.asarray(self.x_T),
            noise=None if noise is None else jnp.asarray(noise),
        )  # fmt: skip
        assert out.x.dtype == jnp.float64
        return np.asarray(out.x)


def _injected(torch, problem, draws_per_step: int, seed: int = 1):
    """Draws for k-diffusion's ``noise_sampler`` (one per call, in call order) and the same
    draws in scorelab's layout, ``(CHAINS, LEVELS * k, 2)`` with the last step's rows unused."""
    rng = np.random.default_rng(seed)
    calls = rng.standard_normal(((LEVELS - 1) * draws_per_step, CHAINS, 2))
    queue = [torch.from_numpy(row.copy()) for row in calls]

    def noise_sampler(sigma, sigma_next):
        return queue.pop(0)

    rows = np.concatenate([calls, np.zeros((draws_per_step, CHAINS, 2))])
    return noise_sampler, np.swapaxes(rows, 0, 1), queue


def _assert_parity(ours, theirs):
    theirs = theirs.numpy()
    assert np.abs(theirs).max() > 1.0  # the samples are not trivially small
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    "build, k_name, k_options, draws",
    [
        (lambda s: dpmpp_3m(s), "sample_dpmpp_3m_sde", {"eta": 0.0}, 0),
        (lambda s: dpmpp_3m_sde(s, eta=1.0, s_noise=0.9), "sample_dpmpp_3m_sde",
         {"eta": 1.0, "s_noise": 0.9}, 1),
        (lambda s: dpmpp_3m_sde(s, eta=0.5), "sample_dpmpp_3m_sde", {"eta": 0.5}, 1),
        (lambda s: dpmpp_2m_sde(s, eta=1.0), "sample_dpmpp_2m_sde", {"eta": 1.0}, 1),
        (lambda s: dpmpp_2m_sde(s, eta=0.7, s_noise=1.1, solver_type="heun"),
         "sample_dpmpp_2m_sde", {"eta": 0.7, "s_noise": 1.1, "solver_type": "heun"}, 1),
        (lambda s: dpmpp_2m_sde(s, eta=0.0, solver_type="heun"), "sample_dpmpp_2m_sde",
         {"eta": 0.0, "solver_type": "heun"}, 1),
        (lambda s: dpmpp_sde(s), "sample_dpmpp_sde", {}, 2),
        (lambda s: dpmpp_sde(s, eta=0.6, s_noise=0.8, r=0.4), "sample_dpmpp_sde",
         {"eta": 0.6, "s_noise": 0.8, "r": 0.4}, 2),
        # eta > 1 clips sigma_up to sigma' on every step: all NaN before (pass 29, #1)
        (lambda s: dpmpp_sde(s, eta=1.5), "sample_dpmpp_sde", {"eta": 1.5}, 2),
        (lambda s: dpmpp_2s_ancestral(s), "sample_dpmpp_2s_ancestral", {}, 1),
        (lambda s: dpmpp_2s_ancestral(s, eta=0.5, s_noise=1.2), "sample_dpmpp_2s_ancestral",
         {"eta": 0.5, "s_noise": 1.2}, 1),
        (lambda s: dpm_2_ancestral(s), "sample_dpm_2_ancestral", {}, 1),
        (lambda s: dpm_2_ancestral(s, eta=0.3, s_noise=0.7), "sample_dpm_2_ancestral",
         {"eta": 0.3, "s_noise": 0.7}, 1),
        (lambda s: ancestral(s, s_noise=0.8), "sample_euler_ancestral", {"s_noise": 0.8}, 1),
        (lambda s: lms(s), "sample_lms", {}, 0),
        (lambda s: lms(s, order=2), "sample_lms", {"order": 2}, 0),
    ],
    ids=["dpmpp_3m", "dpmpp_3m_sde", "dpmpp_3m_sde_eta0.5", "dpmpp_2m_sde", "dpmpp_2m_sde_heun",
         "dpmpp_2m_sde_heun_eta0", "dpmpp_sde", "dpmpp_sde_r0.4", "dpmpp_sde_eta1.5",
         "dpmpp_2s_ancestral",
         "dpmpp_2s_ancestral_eta0.5", "dpm_2_ancestral", "dpm_2_ancestral_eta0.3",
         "ancestral_s_noise", "lms", "lms_order2"],
)  # fmt: skip
def test_matches_k_diffusion_with_injected_noise(build, k_name, k_options, draws):
    with jax.enable_x64(True):
        torch, sampling = _k_sampling()
        problem = _Problem(torch)
        sampler = build(problem.sigmas)
        assert sampler.draws_per_step == draws
        if draws:
            noise_sampler, rows, queue = _injected(torch, problem, draws)
            k_options = {**k_options, "noise_sampler": noise_sampler}
            ours = problem.run(sampler, rows)
        else:
            ours, queue, rows = problem.run(sampler), [], np.zeros((CHAINS, 0, 2))
        theirs = getattr(sampling, k_name)(
            problem.model, problem.k_x(), problem.k_sigmas(), disable=True, **k_options
        )
        # k-diffusion used every draw, in scorelab's order (none where eta = 0: `if eta:`).
        assert len(queue) == (len(rows[0]) - draws if k_options.get("eta") == 0.0 else 0)
        _assert_parity(ours, theirs)


@pytest.mark.parametrize(
    "build, k_name, options",
    [
        (euler_churn, "sample_euler", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0,
                                       "s_noise": 1.003}),
        (euler_churn, "sample_euler", {}),
        (dpm_2, "sample_dpm_2", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0,
                                 "s_noise": 1.003}),
        (dpm_2, "sample_dpm_2", {}),
    ],
    ids=["euler_churn", "euler", "dpm_2_churn", "dpm_2"],
)  # fmt: skip
def test_churn_samplers_match_k_diffusion_with_replayed_torch_draws(build, k_name, options):
    """``sample_euler`` and ``sample_dpm_2`` draw ``torch.randn_like(x)`` at every step (churn
    or not); replaying torch's generator from the same seed gives scorelab the same rows."""
    with jax.enable_x64(True):
        torch, sampling = _k_sampling()
        problem = _Problem(torch)
        x = problem.k_x()
        torch.manual_seed(3)
        rows = np.stack([torch.randn_like(x).numpy() for _ in range(LEVELS)], axis=1)
        ours = problem.run(build(problem.sigmas, **options), rows)
        torch.manual_seed(3)
        theirs = getattr(sampling, k_name)(
            problem.model, x, problem.k_sigmas(), disable=True, **options
        )
        _assert_parity(ours, theirs)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_matches_k_diffusion_steps(order):
    """k-diffusion's ``DPMSolver.dpm_solver_{1,2,3}_step`` (the steps of ``sample_dpm_fast``)
    walked down the same grid, then the denoiser at the lowest level."""
    with jax.enable_x64(True):
        torch, sampling = _k_sampling()
        problem = _Problem(torch)
        solver = sampling.DPMSolver(problem.model)
        step = getattr(solver, f"dpm_solver_{order}_step")
        x = problem.k_x()
        sigmas = torch.from_numpy(problem.sigmas[::-1].copy())
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            x, _ = step(x, solver.t(sigma), solver.t(sigma_next))
        theirs = problem.model(x, sigmas[-1] * x.new_ones([CHAINS]))
        _assert_parity(problem.run(dpm_solver(problem.sigmas, order=order)), theirs)


@pytest.mark.parametrize(
    "options",
    [{}, {"order": 2}, {"rtol": 0.01, "atol": 0.001, "pcoeff": 0.2, "icoeff": 0.6,
                        "dcoeff": 0.1, "h_init": 0.1}],
    ids=["order3", "order2", "pid"],
)  # fmt: skip
def test_dpm_adaptive_matches_k_diffusion_chain_by_chain(options):
    """``sample_dpm_adaptive(return_info=True)`` on one chain at a time (it takes one error norm
    over its whole batch; scorelab's chains control their own steps): the state at sigma_0
    and the evaluations (scorelab's, less its final denoiser). k-diffusion builds its lambda
    end points with torch's default dtype, set to float64 here."""
    with jax.enable_x64(True):
        torch, sampling = _k_sampling()
        problem = _Problem(torch)
        out = eqx.filter_jit(sample)(
            jax.random.key(0), dpm_adaptive(problem.sigmas, **options), problem.score_fn,
            jnp.asarray(problem.x_T), trajectory=True,
        )  # fmt: skip
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            theirs = []
            for chain in range(CHAINS):
                x, info = sampling.sample_dpm_adaptive(
                    problem.model, problem.k_x()[chain : chain + 1], problem.sigmas[0],
                    problem.sigmas[-1], disable=True, return_info=True, **options,
                )  # fmt: skip
                theirs.append(x[0])
                assert int(out.nfe[chain]) == info["nfe"] + 1
                assert int(out.info.n_accept[chain]) == info["n_accept"]
                assert int(out.info.n_reject[chain]) == info["n_reject"]
        finally:
            torch.set_default_dtype(default)
        _assert_parity(np.asarray(out.trajectory[:, 0]), torch.stack(theirs))
