"""Jacobian-trace layouts: why scorelab's trace losses apply their probes one at a time.

The gradient of the batch-mean Hyvarinen loss (exact trace, ``d = 2``) and Hutchinson loss
(4 Rademacher probes) at batch 2048 on the tutorial's MLP (128-512-256), three ways:

* ``jacfwd``: the tutorial's ``vmap(jacfwd(score))`` and the diagonal of the full Jacobian;
* ``vmapped``: ``jax.linearize`` once per example and the probes ``vmap``-ped through the
  linear map (scorelab before this benchmark): under the batch ``vmap`` the tangents are
  ``(batch, n, width)`` arrays;
* ``unrolled``: ``jax.linearize`` once and one product per probe, each a ``(batch, width)``
  array;
* ``scorelab``: :func:`scorelab.losses.hyvarinen_loss` / ``hutchinson_loss`` as they are (the
  layout they choose for this backend).

All three do the same FLOPs (XLA's cost analysis, printed); the table gives ms per gradient,
medians of interleaved rounds, and each layout's speed-up over ``vmapped``.

    python benchmarks/trace_layout.py [--quick] [--repeats 5]
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from _harness import flops, interleaved, median, parse_args, table, timed, write

from scorelab.losses import hutchinson_loss, hyvarinen_loss
from scorelab.models import MLP

N_PROBES = 4
LAYOUTS = ("jacfwd", "vmapped", "unrolled", "scorelab")


def vmapped_forms(score_fn, x, probes):
    score, score_jvp = jax.linearize(score_fn, x)
    return score, jnp.einsum("kd,kd->k", probes, jax.vmap(score_jvp)(probes))


def per_example_losses(layout: str, objective: str):
    """``loss(key, net, x)`` of one example for ``objective`` in ``layout``."""
    if layout == "scorelab":  # scorelab.losses as they are
        if objective == "hyvarinen":
            return hyvarinen_loss
        return functools.partial(hutchinson_loss, n_probes=N_PROBES)

    def loss(key, net, x):
        if objective == "hyvarinen":
            probes = jnp.eye(x.shape[0], dtype=x.dtype)
        else:
            probes = jax.random.rademacher(key, (N_PROBES, x.shape[0]), x.dtype)
        if layout == "jacfwd":

            def score_twice(y):
                score = net(y, None)
                return score, score

            jacobian, score = jax.jacfwd(score_twice, has_aux=True)(x)
            forms = jnp.einsum("kd,de,ke->k", probes, jacobian, probes)
        elif layout == "unrolled":
            score, score_jvp = jax.linearize(lambda y: net(y, None), x)
            forms = jnp.stack([jnp.dot(v, score_jvp(v)) for v in probes])
        else:
            score, forms = vmapped_forms(lambda y: net(y, None), x, probes)
        return jnp.mean(forms) * (x.shape[0] if objective == "hyvarinen" else 1) + 0.5 * jnp.dot(
            score, score
        )

    return loss


def gradient(layout: str, objective: str, model, x):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    loss = per_example_losses(layout, objective)

    def batch_loss(params, x):
        net = eqx.combine(params, static)
        keys = jax.random.split(jax.random.key(0), x.shape[0])
        return jnp.mean(jax.vmap(lambda k, y: loss(k, net, y))(keys, x))

    grad = jax.jit(jax.grad(batch_loss))
    return grad, params


def main():
    args = parse_args(__doc__.splitlines()[0])
    batch, widths = (64, (8, 16, 8)) if args.quick else (2048, (128, 512, 256))
    model = MLP(jax.random.key(0), widths=widths)
    x = 3.0 * jax.random.normal(jax.random.key(1), (batch, 2))
    cases, cost = {}, {}
    for objective in ("hyvarinen", "hutchinson"):
        for layout in LAYOUTS:
            grad, params = gradient(layout, objective, model, x)
            cost[objective, layout] = flops(grad.lower(params, x))
            first = timed(functools.partial(grad, params, x))
            print(f"{objective} {layout}: first call {first:.1f} s", flush=True)
            cases[objective, layout] = functools.partial(timed, functools.partial(grad, params, x))
    samples = interleaved(cases, args.repeats)
    rows, results = [], []
    for (objective, layout), values in samples.items():
        t = median(values)
        speedup = median(samples[objective, "vmapped"]) / t
        gflop = cost[objective, layout] / 1e9
        rows.append([objective, layout, 1e3 * t, gflop, speedup])
        results.append(
            {
                "objective": objective,
                "layout": layout,
                "ms_per_gradient": 1e3 * t,
                "gflop": gflop,
                "speedup_over_vmapped": speedup,
                "samples_s": values,
            }
        )
    print(table(["objective", "layout", "ms / gradient", "GFLOP", "speed-up vs vmapped"], rows))
    payload = {"quick": args.quick, "repeats": args.repeats, "batch": batch, "results": results}
    write("trace_layout", payload, args.out)


if __name__ == "__main__":
    main()
