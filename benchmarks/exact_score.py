"""The exact score of a Gaussian mixture: the closed form against autodiff of a log-density.

The tutorial's nine-mode mixture (:func:`scorelab.targets.seed_mixture`), its score at
``--points`` points under ``vmap`` (one jitted call), three ways:

* ``closed``: :meth:`GaussianMixture.score`, the closed form (one whitening per component and
  one set of exponentials);
* ``grad_log_prob``: ``jax.grad`` of scorelab's own :meth:`GaussianMixture.log_prob`;
* ``grad_numpyro``: ``jax.grad`` of numpyro's ``MixtureSameFamily.log_prob``
  (:attr:`GaussianMixture.distribution`), what the tutorial differentiates.

Also the same three inside a 100-step ``lax.scan`` of Euler steps (a sampler's loop). Each
gradient is checked against the closed form before timing. Medians of interleaved rounds;
the ratios are each case over ``closed``.

    python benchmarks/exact_score.py [--quick] [--repeats 5] [--points 100000]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from _harness import interleaved, median, parse_args, table, timed, write

from scorelab.targets import seed_mixture

STEPS = 100


def score_functions(target) -> dict:
    """The three per-point score functions ``x -> grad log q(x)``."""
    distribution = target.distribution
    return {
        "closed": target.score,
        "grad_log_prob": jax.grad(target.log_prob),
        "grad_numpyro": jax.grad(lambda x: distribution.log_prob(x)),
    }


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        extra=lambda p: p.add_argument("--points", type=int, default=100_000),
    )
    n = 1000 if args.quick else args.points
    target = seed_mixture()
    x = 10.0 * jax.random.normal(jax.random.key(0), (n, 2))
    functions = score_functions(target)
    reference = jax.vmap(functions["closed"])(x)
    cases = {}
    for name, fn in functions.items():
        once = jax.jit(jax.vmap(fn))
        error = float(jnp.max(jnp.abs(once(x) - reference)) / jnp.max(jnp.abs(reference)))
        print(f"{name}: largest difference from the closed form {error:.2e} (relative)")

        def euler(x, fn=fn):
            def step(x, _):
                return x + 1e-3 * jax.vmap(fn)(x), None

            return jax.lax.scan(step, x, None, length=STEPS)[0]

        loop = jax.jit(euler)
        timed(functools.partial(once, x))
        timed(functools.partial(loop, x))
        cases["score", name] = functools.partial(timed, functools.partial(once, x))
        cases[f"{STEPS} Euler steps", name] = functools.partial(timed, functools.partial(loop, x))
    samples = interleaved(cases, args.repeats)
    rows, results = [], []
    for (work, name), values in samples.items():
        t = median(values)
        ratio = t / median(samples[work, "closed"])
        rows.append([work, name, 1e3 * t, ratio])
        results.append(
            {"work": work, "case": name, "ms": 1e3 * t, "over_closed": ratio, "samples_s": values}
        )
    print(table(["work", "case", "ms", "time / closed form's"], rows))
    payload = {"quick": args.quick, "repeats": args.repeats, "points": n, "results": results}
    write("exact_score", payload, args.out)


if __name__ == "__main__":
    main()
