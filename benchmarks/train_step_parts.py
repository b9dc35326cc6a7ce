"""What scorelab's training step adds to the bare DSM step: per-example keys, guard, ``cond``.

``scorelab.training.train`` runs each step with three features the tutorial's loop does not
have: one PRNG key per example (``fold_in(loss_key, b)``, so that results do not depend on
batch size or device count), the non-finite guard (``isfinite`` of the loss and gradient norm,
then a ``where`` over the state) and a ``lax.cond`` that skips unused scan slots. This
benchmark times, in one process and interleaved rounds, ``steps`` DSM steps of the tutorial's
MLP at batch 2048 in one jitted ``lax.scan``, with each feature removed in turn:

``all three`` (scorelab's step), ``no per-example keys`` (one ``normal`` draw of the batch,
as the tutorial), ``no guard``, ``no cond``, ``none`` (the bare step).

Each case returns seconds per step; the table gives medians and each case's speed-up over
``all three``. (``benchmarks/training.py`` times ``train`` itself against a transcription of
the tutorial's loop.)

    python benchmarks/train_step_parts.py [--quick] [--repeats 7] [--steps 20]
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from _harness import interleaved, median, parse_args, table, timed, write

from scorelab.losses import dsm_loss
from scorelab.models import MLP
from scorelab.targets import seed_mixture


def scanned_steps(model, data, batch: int, n_steps: int, keys: bool, guard: bool, cond: bool):
    """``run(state, key)``: ``n_steps`` DSM steps (sigma 1, Adam 1e-2) in one ``lax.scan``."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.adam(1e-2)
    loss_fn = functools.partial(dsm_loss, sigma=1.0)

    def batch_loss(p, step_key):
        batch_key, loss_key = jax.random.split(step_key)
        x_0 = data[jax.random.randint(batch_key, (batch,), 0, data.shape[0])]
        net = eqx.combine(p, static)
        if keys:
            example_keys = jax.vmap(lambda b: jax.random.fold_in(loss_key, b))(jnp.arange(batch))
            return jnp.mean(jax.vmap(lambda k, x: loss_fn(k, net, x))(example_keys, x_0))
        eps = jax.random.normal(loss_key, x_0.shape)
        return jnp.mean(jnp.sum((jax.vmap(net)(x_0 + eps) + eps) ** 2, axis=-1))

    def update(state, step_key):
        p, opt_state = state
        loss, grads = jax.value_and_grad(batch_loss)(p, step_key)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        new = (optax.apply_updates(p, updates), opt_state)
        finite = jnp.array(True)
        if guard:
            finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
            new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
        return new, loss, finite

    def skip(state, step_key):
        return state, jnp.float32(jnp.nan), jnp.array(True)

    @jax.jit
    def run(state, key):
        def body(carry, i):
            state, bad = carry
            step_key = jax.random.fold_in(key, i)
            if cond:
                state, loss, finite = jax.lax.cond(i < n_steps, update, skip, state, step_key)
            else:
                state, loss, finite = update(state, step_key)
            return (state, jnp.where(finite, bad, i)), loss

        return jax.lax.scan(body, (state, jnp.array(-1)), jnp.arange(n_steps))

    return run, (params, optimizer.init(params))


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        repeats=7,
        extra=lambda parser: parser.add_argument("--steps", type=int, default=20),
    )
    n_steps = 2 if args.quick else args.steps
    batch = 64 if args.quick else 2048
    model = MLP(jax.random.key(42), widths=(8, 16, 8) if args.quick else (128, 512, 256))
    data = seed_mixture().sample(jax.random.key(0), 10_000)
    names = {
        (True, True, True): "all three",
        (False, True, True): "no per-example keys",
        (True, False, True): "no guard",
        (True, True, False): "no cond",
        (False, False, False): "none",
    }
    cases = {}
    for flags, name in names.items():
        run, state = scanned_steps(model, data, batch, n_steps, *flags)
        jax.block_until_ready(run(state, jax.random.key(1)))  # compile
        step = functools.partial(timed, functools.partial(run, state, jax.random.key(1)))
        cases[name] = lambda step=step: step() / n_steps
    samples = interleaved(cases, args.repeats)
    base = median(samples["all three"])
    rows = [[name, 1e3 * median(v), base / median(v)] for name, v in samples.items()]
    print(table(["case", "ms / step", "speed-up vs all three"], rows))
    results = [
        {"case": name, "ms_per_step": ms, "speedup_vs_all_three": s, "samples_s": samples[name]}
        for name, ms, s in rows
    ]
    payload = {"quick": args.quick, "repeats": args.repeats, "batch": batch, "steps": n_steps}
    write("train_step_parts", {**payload, "results": results}, args.out)


if __name__ == "__main__":
    main()
