"""Sampling throughput: chain-steps/s of ULA, annealed Langevin and DDIM against one forward pass.

For each sampler, score (the exact mixture score, or an untrained network of the tutorial's
size: weights do not change the cost) and number of chains, ``scorelab.samplers.sample`` is
timed beside the *reference*: one jitted evaluation of the same score over the same batch of
chains, ``jax.vmap(score_fn)(x, sigma)``. A sampler step costs one score evaluation plus its
update and its noise draw, so ``time per step / reference`` is the sampler's overhead over the
bare network (the issue's target: <= 1.5). Compile time (first call minus a steady call) is
reported separately.

* ``ula``: ``ula(1e-2, n_steps)`` at sigma 0; learned score: ``MLP`` (128-512-256);
* ``annealed``: ``annealed_langevin(default_sigmas(n_steps // 5), 5)`` (1 step per level
  when ``n_steps`` is not a multiple of 5); learned score:
  ``NoiseConditionalMLP`` (256-512-256);
* ``ddim``: ``ddim(default_sigmas(n_steps), eta=1)``; the same network.

    python benchmarks/sampling.py [--quick] [--repeats 3] [--max-chains 1000000]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from _harness import interleaved, median, parse_args, table, timed, write

from scorelab.models import MLP, ExactScore, NoiseConditionalMLP
from scorelab.samplers import annealed_langevin, ddim, default_sigmas, sample, ula, ve_prior
from scorelab.targets import seed_mixture

HEADERS = [
    "sampler",
    "score",
    "chains",
    "nfe",
    "chain-steps/s",
    "ms/step",
    "forward ms",
    "step / forward",
    "compile s",
]


def samplers(n_steps: int):
    """``name -> (sampler, sigma the reference evaluates at)``, each of ``n_steps`` steps."""
    n_levels, per_level = (n_steps // 5, 5) if n_steps % 5 == 0 else (n_steps, 1)
    return {
        "ula": (ula(1e-2, n_steps), 0.0),
        "annealed": (annealed_langevin(default_sigmas(n_levels), per_level), 1.0),
        "ddim": (ddim(default_sigmas(n_steps), eta=1.0), 1.0),
    }


def scores(sampler_name: str, quick: bool):
    widths = (8, 16, 8) if quick else None
    key = jax.random.key(0)
    if sampler_name == "ula":
        learned = MLP(key, widths=widths) if quick else MLP(key)
    else:
        learned = NoiseConditionalMLP(key, widths=widths) if quick else NoiseConditionalMLP(key)
    return {"exact": ExactScore(seed_mixture()), "learned": learned}


def measure(sampler, sigma: float, score_fn, n_chains: int, repeats: int) -> dict:
    x_init = ve_prior(jax.random.key(1), n_chains, 2, 80.0)
    key = jax.random.key(2)
    forward = jax.jit(jax.vmap(score_fn, in_axes=(0, None)))
    sigma = jnp.float32(sigma)

    def run_sampler():
        return sample(key, sampler, score_fn, x_init).x

    def run_forward():
        return forward(x_init, sigma)

    first_sampler, first_forward = timed(run_sampler), timed(run_forward)
    samples = interleaved(
        {"sampler": lambda: timed(run_sampler), "forward": lambda: timed(run_forward)}, repeats
    )
    t_sampler, t_forward = median(samples["sampler"]), median(samples["forward"])
    return {
        "chain_steps_per_s": n_chains * sampler.nfe / t_sampler,
        "ms_per_step": 1e3 * t_sampler / sampler.nfe,
        "forward_ms": 1e3 * t_forward,
        "step_over_forward": t_sampler / sampler.nfe / t_forward,
        "sampler_compile_s": max(first_sampler - t_sampler, 0.0),
        "forward_compile_s": max(first_forward - t_forward, 0.0),
        "samples_s": samples,
    }


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        repeats=3,
        extra=lambda parser: parser.add_argument("--max-chains", type=int, default=1_000_000),
    )
    counts = (10_000, 100_000, 1_000_000)
    chain_counts = [100] if args.quick else [n for n in counts if n <= args.max_chains]
    results, rows = [], []
    for n_chains in chain_counts:
        # 10 steps; 3 at 10^6 chains, where one learned step is ~0.5 TFLOP.
        n_steps = 3 if args.quick or n_chains >= 1_000_000 else 10
        repeats = min(args.repeats, 2) if n_chains >= 1_000_000 else args.repeats
        for sampler_name, (sampler, sigma) in samplers(n_steps).items():
            for score_name, score_fn in scores(sampler_name, args.quick).items():
                result = {
                    "sampler": sampler_name,
                    "score": score_name,
                    "chains": n_chains,
                    "nfe": sampler.nfe,
                    # Two rounds at 10^6 chains (minutes each on two cores).
                    **measure(sampler, sigma, score_fn, n_chains, repeats),
                }
                results.append(result)
                rows.append(
                    [
                        sampler_name,
                        score_name,
                        n_chains,
                        sampler.nfe,
                        result["chain_steps_per_s"],
                        result["ms_per_step"],
                        result["forward_ms"],
                        result["step_over_forward"],
                        result["sampler_compile_s"],
                    ]
                )
                print(table(HEADERS, rows[-1:]).splitlines()[-1], flush=True)
    print(table(HEADERS, rows))
    write("sampling", {"quick": args.quick, "repeats": args.repeats, "results": results}, args.out)


if __name__ == "__main__":
    main()
