"""Checks shared by the sampler test modules."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def assert_nfe_counts_score_evaluations(sampler, nfe: int, n_levels: int) -> None:
    """``sampler.nfe`` equals ``nfe`` and the number of score calls one chain makes (counted by
    a host callback inside the score), and the trajectory has one row per level ending at ``x``."""
    calls = []

    def score_fn(x, sigma):
        jax.debug.callback(lambda: calls.append(None))
        return -x / (1.0 + sigma**2)

    out = sampler.run(jax.random.key(9), score_fn, jnp.ones(2), trajectory=True)
    jax.effects_barrier()
    assert sampler.nfe == nfe == len(calls)
    assert out.trajectory.shape == (n_levels, 2)
    np.testing.assert_array_equal(out.trajectory[-1], out.x)


# --- the golden file: every sampler's numbers, pinned ------------------------------------------

GOLDEN_LEVELS = 12  # default_sigmas(12)
GOLDEN_CHAINS = 3
GOLDEN_CASES = {
    # label: (registry name, options); every registry sampler at its defaults, plus variants.
    "ula": ("ula", {"n_steps": 20}),
    "mala": ("mala", {"n_steps": 20, "step_size": 0.05}),
    "annealed_langevin": ("annealed_langevin", {}),
    "ddim": ("ddim", {}),
    "ddim_eta0": ("ddim", {"eta": 0.0}),
    "ddim_eta0.5_final0.1": ("ddim", {"eta": 0.5, "final_noise": 0.1}),
    "euler_maruyama": ("euler_maruyama", {}),
    "ancestral": ("ancestral", {}),
    "predictor_corrector": ("predictor_corrector", {}),
    "predictor_corrector_snr": ("predictor_corrector", {"step_rule": "snr", "n_corrector": 2}),
    "euler": ("euler", {}),
    "heun": ("heun", {}),
    "edm": ("edm", {}),
    "dpmpp_2m": ("dpmpp_2m", {}),
    "tsit5": ("tsit5", {}),
    "dopri5": ("dopri5", {}),
}
"""The sampler runs pinned by ``tests/fixtures/sampler_golden.npz``
(``tests/fixtures/make_sampler_golden.py`` writes it)."""


def golden_sampler(label: str, sigmas):
    """The sampler of golden case ``label`` on ``sigmas``, with the seed mixture's log-density
    for MALA."""
    from scorelab.samplers import build_sampler
    from scorelab.targets import seed_mixture

    name, options = GOLDEN_CASES[label]
    log_density_fn = seed_mixture().log_prob if name == "mala" else None
    return build_sampler(name, sigmas, log_density_fn=log_density_fn, **options)


# --- the closed-form Gaussian flow: N(MEAN, VARIANCE I) noised to sigma, and its ODE solution --

MEAN = np.array([1.0, -2.0])
VARIANCE = 0.25  # s^2


def gaussian_score(x, sigma):
    """The exact score of ``N(MEAN, (VARIANCE + sigma^2) I)``."""
    return (MEAN - x) / (VARIANCE + sigma**2)


def flow_solution(x_T, sigma, sigma_T):
    """The probability-flow ODE's exact solution from ``x_T`` at ``sigma_T`` to ``sigma``."""
    return MEAN + (x_T - MEAN) * np.sqrt(VARIANCE + sigma**2) / np.sqrt(VARIANCE + sigma_T**2)


@eqx.filter_jit
def run_with_trajectory(run, score_fn, x_init, noise=None):
    """``run(key(0), score_fn, x_init, trajectory=True, noise)``, compiled."""
    return run(jax.random.key(0), score_fn, x_init, True, noise)
