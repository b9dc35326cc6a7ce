"""Likelihood: scorelab's probability-flow ODE against k-diffusion's ``log_likelihood``, and its
cost against dimension.

Both compute :math:`\\log q_{\\sigma_{\\min}}(x) = \\log \\mathcal{N}(x_T; 0, \\sigma_{\\max}^2 I)
+ \\int \\nabla\\cdot f`, the same formula (Song et al. 2021, App. D.2), on the *exact* score of
a Gaussian mixture, so both are read against the mixture's closed-form log-density
``target.ve_marginal(sigma_min).log_prob``:

* **scorelab** (:func:`scorelab.likelihood.log_likelihood`): diffrax, in
  :math:`u = \\log\\sigma`, every point its own adaptive steps (``vmap``), the divergence by the
  exact trace (``n_probes="exact"``, ``d`` JVPs per evaluation) or Hutchinson with ``K`` probes;
  JAX float32, jitted (compilation left out of the clock by a first call).
* **k-diffusion** (``log_likelihood`` of ``k_diffusion/sampling.py``, unchanged): torchdiffeq's
  ``dopri5`` in :math:`\\sigma`, one step size for the whole batch (its error norm is over every
  point), the divergence by one Rademacher probe per point (Hutchinson, ``K = 1``), torch
  float32 on the CPU. Its model is an independent torch implementation of the same mixture's
  denoiser :math:`D(x, \\sigma) = x + \\sigma^2 \\nabla \\log q_\\sigma(x)`, the score by
  autograd of ``logsumexp_k log w_k N(x; mu_k, C_k + sigma^2 I)``.

Part 1, the tutorial's 2-D mixture: the mean error against the closed form (with its standard
error over points), the largest error, score evaluations and seconds per point, for each side at
k-diffusion's tolerance (1e-4) and at scorelab's default (1e-5). Part 2, cost against
dimension: the exact trace against Hutchinson with 1, 4 and 16 probes at d = 2 (the tutorial's
mixture), 64 (``digits_mixture``) and 256 (a seeded 10-component mixture), beside k-diffusion
where it runs. Seconds are medians of interleaved rounds (``_harness``); one batch of points
per case.

    python benchmarks/likelihood.py [--quick] [--repeats 3] [--n 200]
"""

from __future__ import annotations

import jax
import numpy as np
from _harness import interleaved, k_diffusion_sampling, median, parse_args, table, timed, write

from scorelab.likelihood import log_likelihood
from scorelab.models import ExactScore
from scorelab.samplers import DEFAULT_SIGMA_MAX, DEFAULT_SIGMA_MIN
from scorelab.targets import GaussianMixture, digits_mixture, seed_mixture


def wide_mixture(dim: int, n_components: int = 10, seed: int = 0) -> GaussianMixture:
    """A seeded mixture in ``dim`` dimensions: means N(0, 4 I), covariances A A^T / d + I / 10."""
    rng = np.random.default_rng(seed)
    means = 2.0 * rng.standard_normal((n_components, dim))
    factors = rng.standard_normal((n_components, dim, dim))
    covariances = factors @ np.swapaxes(factors, 1, 2) / dim + 0.1 * np.eye(dim)
    return GaussianMixture(means, covariances, np.full(n_components, 1.0 / n_components))


def torch_denoiser(torch, target: GaussianMixture, dtype=None):
    """The mixture's denoiser ``D(x (B, d), sigma (B,))`` in torch (``dtype``, float32 by
    default), differentiable in ``x`` (k-diffusion's log-likelihood takes a vector-Jacobian
    product of it)."""
    dtype = dtype or torch.float32
    means = torch.tensor(np.asarray(target.means), dtype=dtype)
    covariances = torch.tensor(np.asarray(target.covariances), dtype=dtype)
    log_weights = torch.log(torch.tensor(np.asarray(target.weights), dtype=dtype))
    eye = torch.eye(means.shape[1], dtype=dtype)

    def model(x, sigma):
        variance = sigma[0] ** 2  # one level per call
        with torch.enable_grad():
            y = x if x.requires_grad else x.detach().requires_grad_()
            law = torch.distributions.MultivariateNormal(means, covariances + variance * eye)
            log_q = torch.logsumexp(log_weights + law.log_prob(y[:, None, :]), dim=1)
            (score,) = torch.autograd.grad(log_q.sum(), y, create_graph=x.requires_grad)
        return x + variance * score

    return model


def errors(log_prob, exact) -> dict[str, float]:
    """Mean error against the closed form, its standard error over points, the largest."""
    error = np.asarray(log_prob, np.float64) - np.asarray(exact, np.float64)
    return {
        "mean_error": float(error.mean()),
        "error_se": float(error.std(ddof=1) / np.sqrt(len(error))),
        "max_abs_error": float(np.abs(error).max()),
    }


def scorelab_case(target, points, **options):
    """A timing case of :func:`log_likelihood` on ``points`` and its result (compiled first)."""
    key, score_fn = jax.random.key(1), ExactScore(target)

    def run():
        return log_likelihood(key, score_fn, points, **options)

    result = jax.block_until_ready(run())
    return (lambda: timed(run) / len(points)), result


def k_diffusion_case(torch, sampling, target, points, tolerance):
    """A timing case of k-diffusion's ``log_likelihood`` on ``points`` and its result."""
    model = torch_denoiser(torch, target)
    x = torch.tensor(np.asarray(points), dtype=torch.float32)
    sigma_min, sigma_max = DEFAULT_SIGMA_MIN, DEFAULT_SIGMA_MAX

    def run():
        torch.manual_seed(0)  # its Rademacher probes
        return sampling.log_likelihood(
            model, x, sigma_min, sigma_max, atol=tolerance, rtol=tolerance
        )

    log_prob, info = run()
    return (lambda: timed(run) / len(points)), (log_prob.numpy(), info["fevals"])


def part_one(torch, sampling, n: int, repeats: int) -> list[dict]:
    """scorelab and k-diffusion on the 2-D mixture, against its closed form."""
    target = seed_mixture()
    points = target.sample(jax.random.key(0), n)
    exact = target.ve_marginal(DEFAULT_SIGMA_MIN).log_prob(points)
    cases, results = {}, {}
    for tolerance in (1e-4, 1e-5):
        for name, options in (
            ("scorelab, exact trace, tsit5", {"n_probes": "exact"}),
            ("scorelab, exact trace, dopri5", {"n_probes": "exact", "solver": "dopri5"}),
            ("scorelab, 1 Rademacher probe, dopri5", {"n_probes": 1, "solver": "dopri5"}),
        ):
            label = f"{name}, tol {tolerance:g}"
            cases[label], out = scorelab_case(
                target, points, rtol=tolerance, atol=tolerance, **options
            )
            results[label] = (np.asarray(out.log_prob), float(np.mean(out.nfe)))
        if sampling is not None:
            label = f"k-diffusion, 1 Rademacher probe, dopri5, tol {tolerance:g}"
            cases[label], results[label] = k_diffusion_case(
                torch, sampling, target, points, tolerance
            )
    seconds = interleaved(cases, repeats)
    rows = []
    for label, (log_prob, nfe) in results.items():
        rows.append(
            {
                "case": label,
                **errors(log_prob, exact),
                "nfe_per_point": nfe,
                "seconds_per_point": median(seconds[label]),
            }
        )
    return rows


def part_two(torch, sampling, n: int, dims: tuple[int, ...], repeats: int) -> list[dict]:
    """Score evaluations and seconds per point against dimension and probes."""
    targets = {2: seed_mixture, 64: digits_mixture, 256: lambda: wide_mixture(256)}
    rows = []
    for dim in dims:
        target = targets[dim]()
        points = target.sample(jax.random.key(0), n)
        exact = target.ve_marginal(DEFAULT_SIGMA_MIN).log_prob(points)
        cases, results = {}, {}
        for probes in ("exact", 1, 4, 16):
            label = f"scorelab, {probes} probes" if probes != "exact" else "scorelab, exact trace"
            cases[label], out = scorelab_case(target, points, n_probes=probes)
            results[label] = (np.asarray(out.log_prob), float(np.mean(out.nfe)))
        if sampling is not None:
            label = "k-diffusion, 1 probe"
            cases[label], results[label] = k_diffusion_case(torch, sampling, target, points, 1e-5)
        seconds = interleaved(cases, repeats)
        for label, (log_prob, nfe) in results.items():
            rows.append(
                {
                    "dim": dim,
                    "case": label,
                    **errors(log_prob, exact),
                    "nfe_per_point": nfe,
                    "seconds_per_point": median(seconds[label]),
                }
            )
    return rows


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        repeats=3,
        extra=lambda parser: parser.add_argument("--n", type=int, default=None, help="points"),
    )
    n = args.n or (8 if args.quick else 200)
    dims = (2, 64) if args.quick else (2, 64, 256)
    sampling = k_diffusion_sampling()
    torch = None
    if sampling is not None:
        import torch

        torch.set_num_threads(1)  # XLA's CPU client also runs each point's solve on one core
    else:
        print(
            "k-diffusion (with torch, torchsde, torchdiffeq) not installed: its rows are left out"
        )
    first = part_one(torch, sampling, n, args.repeats)
    headers = ["case", "mean error", "se", "max |error|", "NFE / point", "s / point"]
    keys = ["case", "mean_error", "error_se", "max_abs_error", "nfe_per_point", "seconds_per_point"]
    print(f"\n2-D mixture, {n} points, error = log-likelihood - exact log q_sigma_min (nats)\n")
    print(table(headers, [[row[k] for k in keys] for row in first]))
    second = part_two(torch, sampling, min(n, 32) if not args.quick else n, dims, args.repeats)
    print("\ncost against dimension, tolerance 1e-5\n")
    print(table(["d", *headers], [[row["dim"], *(row[k] for k in keys)] for row in second]))
    write(
        "likelihood",
        {
            "quick": args.quick,
            "n": n,
            "sigma_min": DEFAULT_SIGMA_MIN,
            "sigma_max": DEFAULT_SIGMA_MAX,
            "results": {"mixture_2d": first, "dimension": second},
        },
        args.out,
    )


if __name__ == "__main__":
    main()
