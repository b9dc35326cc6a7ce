"""Live parity of scorelab's ODE likelihood with k-diffusion's ``log_likelihood`` (marked
``diffusers``: that CI step has torch and k-diffusion).

k-diffusion's ``log_likelihood`` (``k_diffusion/sampling.py``, unchanged) integrates the same
probability-flow ODE in sigma with torchdiffeq's dopri5, but estimates the divergence with one
Rademacher probe ``v`` per point, so one run is not comparable point by point with scorelab's
exact trace. In two dimensions two runs are: with ``R = diag(1, -1)``, the run on the mirrored
mixture at the mirrored points with the same torch seed draws the same ``v`` and so probes the
original problem with ``R v`` (its Jacobian there is ``R J R``), and

    (v^T J v + v^T R J R v) / 2 = J_11 + J_22 = tr J     (v_i^2 = 1),

the exact trace. The mean of the two runs is then k-diffusion's exact-trace log-likelihood,
which scorelab's (``n_probes="exact"``, dopri5 in log sigma, float64) must equal point by
point up to the two solvers' errors. k-diffusion's model is an independent torch implementation
of the mixture's denoiser (``benchmarks/likelihood.py``), not scorelab's score.
"""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from scorelab.likelihood import log_likelihood
from scorelab.models import ExactScore
from scorelab.targets import GaussianMixture, seed_mixture

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from _harness import k_diffusion_sampling  # noqa: E402
from likelihood import torch_denoiser  # noqa: E402

pytestmark = pytest.mark.diffusers

SIGMA_MIN, SIGMA_MAX, N_POINTS = 0.02, 80.0, 16
SOLVER_TOLERANCE = 1e-9
"""rtol = atol of both solvers. Each integrates log-densities of size ~10 over ~500 steps, so
its global error is at most about steps x tol x (1 + |y|) ~ 1e-5."""
AGREEMENT = 2e-5
"""The two solvers' global error bounds added."""


def _mirrored(target: GaussianMixture) -> GaussianMixture:
    """The mixture reflected by ``R = diag(1, -1)``: means ``R mu_k``, covariances
    ``R C_k R``."""
    r = np.array([1.0, -1.0])
    covariances = np.asarray(target.covariances) * r[:, None] * r[None, :]
    return GaussianMixture(np.asarray(target.means) * r, covariances, np.asarray(target.weights))


def test_exact_trace_likelihood_equals_k_diffusion_point_by_point():
    torch = pytest.importorskip("torch")
    sampling = k_diffusion_sampling()
    if sampling is None:
        pytest.skip("k-diffusion, torchsde or torchdiffeq is not installed")
    torch.set_num_threads(1)
    with jax.enable_x64(True):
        target = seed_mixture()
        points = np.asarray(target.sample(jax.random.key(3), N_POINTS), np.float64)
        ours = log_likelihood(
            jax.random.key(0),
            ExactScore(target),
            points,
            n_probes="exact",
            solver="dopri5",
            sigma_min=SIGMA_MIN,
            sigma_max=SIGMA_MAX,
            rtol=SOLVER_TOLERANCE,
            atol=SOLVER_TOLERANCE,
        )
        closed_form = np.asarray(target.ve_marginal(SIGMA_MIN).log_prob(points))
    runs = []
    for law, x in ((target, points), (_mirrored(target), points * np.array([1.0, -1.0]))):
        torch.manual_seed(0)  # the same Rademacher probes in both runs
        log_prob, _ = sampling.log_likelihood(
            torch_denoiser(torch, law, torch.float64),
            torch.from_numpy(x.copy()),
            SIGMA_MIN,
            SIGMA_MAX,
            atol=SOLVER_TOLERANCE,
            rtol=SOLVER_TOLERANCE,
        )
        runs.append(log_prob.numpy())
    theirs = (runs[0] + runs[1]) / 2
    # The single runs carry the probe's off-diagonal term: they must differ from the trace.
    assert np.abs(runs[0] - theirs).max() > 100 * AGREEMENT
    np.testing.assert_allclose(np.asarray(ours.log_prob), theirs, rtol=0, atol=AGREEMENT)
    # Both are the ODE's density of q_sigma_min, a few 1e-2 from its closed form at most (the
    # prior N(0, sigma_max^2 I) in place of q_sigma_max; tests/test_likelihood.py bounds it).
    assert np.abs(theirs - closed_form).max() < 0.05
