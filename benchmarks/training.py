"""Training throughput and fraction of peak: the tutorial's loop against ``training.train``.

The founding tutorial's three objectives at its settings (batch 2048 drawn with replacement
from 10 000 points of its mixture; Adam):

* ``hyvarinen``: exact-trace Hyvarinen loss, MLP ``2 -> 128 -> 512 -> 256 -> 2``, lr 1e-4;
* ``dsm``: denoising score matching at sigma = 1, the same MLP, lr 1e-2;
* ``ncsn``: the multi-noise loss with 2 sigmas per point, the noise-conditional MLP
  ``3 -> 256 -> 512 -> 256 -> 2`` (the tutorial's raw-output parameterisation), lr 1e-2.

Two loops train the *same* network (scorelab's Equinox modules, same initial weights):

(a) ``tutorial``: the tutorial's ``train`` cell transcribed: one jitted step per Python
    iteration, keys pre-split, the loss formatted on the host (a device sync) every step for
    DSM and NCSN and every 100 steps for Hyvarinen (its ``update_tqdm_period``), and its loss
    cells as written (``vmap(jacfwd(...))`` for the trace; NCSN's draws with its key reuse);
(b) ``scorelab``: ``train(...)`` with ``steps_per_dispatch`` = the steps of one measurement.

Each round times the float32 matmul peak (a 2048^3 ``jnp.dot``; 8192^3 on a GPU), then both
loops for every objective; the table gives medians over rounds, the ratio (b)/(a) of steps/s,
and each loop's achieved FLOP/s (FLOPs of one step from XLA's cost analysis of the lowered
step, ``_harness.flops``) as a fraction of the peak of the same rounds. A second table gives
what bounds the DSM step (``ceiling_cases``): the MLP's gradient alone, the same gradient
rewritten for XLA:CPU (``fused_mlp``, with and without its hand-written VJP), and its
matmuls alone in both layouts.

    python benchmarks/training.py [--quick] [--repeats 5] [--objectives hyvarinen,dsm,ncsn]
        [--steps 20] [--batch-size 2048]

``--batch-size`` other than the tutorial's 2048 shows how the fraction of peak grows once the
step has enough work to fill the machine (a GPU needs far more than 2048 points).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _harness import flops, interleaved, matmul_case, median, parse_args, table, timed, write
from jax.sharding import Mesh

from scorelab import models, training
from scorelab.losses import dsm_loss, hyvarinen_loss, ncsn_loss
from scorelab.models import MLP, NoiseConditionalMLP
from scorelab.targets import seed_mixture
from scorelab.training import TrainConfig, make_optimizer, train

BATCH_SIZE = 2048  # the tutorial's; --quick uses 64
LEAKY_SLOPE = 0.01  # jax.nn.leaky_relu's default, the MLP's activation


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    model: eqx.Module
    loss_fn: object  # scorelab's per-example loss
    learning_rate: float
    tqdm_period: int  # the tutorial fetches the loss to the host every this many steps


def objectives(quick: bool = False) -> list[Objective]:
    """The three objectives; ``quick`` shrinks the networks to widths (8, 16, 8) for a smoke run."""
    mlp = MLP(jax.random.key(42), widths=(8, 16, 8) if quick else (128, 512, 256))
    conditional = NoiseConditionalMLP(
        jax.random.key(42), widths=(8, 16, 8) if quick else (256, 512, 256), scale_by_sigma=False
    )
    return [
        Objective("hyvarinen", mlp, hyvarinen_loss, 1e-4, 100),
        Objective("dsm", mlp, functools.partial(dsm_loss, sigma=1.0), 1e-2, 1),
        Objective("ncsn", conditional, functools.partial(ncsn_loss, n_sigmas=2), 1e-2, 1),
    ]


# --- (a) the tutorial's loop and loss cells, on scorelab's networks ---------------------------


def tutorial_loss(name: str, static):
    """The tutorial's batched loss cell for ``name``: ``loss(params, batch, key)``."""

    def hyvarinen(params, data, key):
        net = eqx.combine(params, static)

        def score_twice(x):
            score = net(x)
            return score, score

        jac, score = jax.vmap(jax.jacfwd(score_twice, has_aux=True))(data)
        div = jnp.diagonal(jac, axis1=-2, axis2=-1).sum(axis=-1)
        return (div + 0.5 * (score**2).sum(axis=-1)).mean()

    def denoising(params, data, key, std=1.0):
        net = eqx.combine(params, static)
        eps = jax.random.normal(key, data.shape)
        score = jax.vmap(net)(data + std * eps)
        return ((score + eps / std) ** 2).sum(axis=-1).mean()

    def ncsn(params, data, key, n_time_samples=2):
        net = eqx.combine(params, static)
        key_uniform, _ = jax.random.split(key)  # the tutorial draws eps from `key` itself
        shape = (data.shape[0], n_time_samples, 1)
        stds = jnp.exp(jax.random.normal(key_uniform, shape) * 1.2 - 0.5).clip(0.02, 10.0)
        eps = jax.random.normal(key, (data.shape[0], n_time_samples, 2))
        x_t = data[:, None] + stds * eps
        score = jax.vmap(jax.vmap(net))(x_t, stds[..., 0])
        loss = ((score + eps / stds[None]) ** 2).sum(axis=-1)
        return (stds[..., 0] ** 2 * loss).mean()

    return {"hyvarinen": hyvarinen, "dsm": denoising, "ncsn": ncsn}[name]


def tutorial_loop(objective: Objective, dataset: jax.Array, batch_size: int):
    """The tutorial's ``train``: returns ``(jitted step, run(n_steps) -> s/step)``."""
    params, static = eqx.partition(objective.model, eqx.is_inexact_array)
    tx = optax.adam(objective.learning_rate)
    loss_and_grad = jax.value_and_grad(tutorial_loss(objective.name, static))

    def loop_fn_(sb_k, net_params, opt_state):
        sb_k_loss, sb_k_batch = jax.random.split(sb_k, 2)
        index = jax.random.randint(sb_k_batch, (batch_size,), 0, dataset.shape[0])
        loss_val, grad = loss_and_grad(net_params, dataset[index], sb_k_loss)
        updates, opt_state = tx.update(grad, opt_state)
        return loss_val, optax.apply_updates(net_params, updates), opt_state

    loop_fn = jax.jit(loop_fn_)
    opt_state = tx.init(params)

    def run(n_steps: int) -> float:
        net_params, state = params, opt_state
        keys = jax.random.split(jax.random.key(0), n_steps)
        start = time.perf_counter()
        losses = []
        for i, sb_k in enumerate(keys):
            loss_val, net_params, state = loop_fn(sb_k, net_params, state)
            if i % objective.tqdm_period == 0:
                f"Loss: {loss_val:.2E}"  # noqa: B018 -- the tutorial's progress-bar sync
            losses.append(loss_val)
        jax.block_until_ready((losses, net_params))
        return (time.perf_counter() - start) / n_steps

    return loop_fn, (jax.random.key(0), params, opt_state), run


# --- (b) scorelab's loop ------------------------------------------------------------------------


def scorelab_loop(objective: Objective, data: np.ndarray, n_steps: int, batch_size: int):
    config = TrainConfig(
        steps=n_steps,
        learning_rate=objective.learning_rate,
        batch_size=batch_size,
        steps_per_dispatch=n_steps,
    )

    def run() -> float:
        model = objective.model
        seconds = timed(
            lambda: train(jax.random.key(0), model, objective.loss_fn, data, config, progress=False)
        )
        return seconds / n_steps

    return config, run


def scorelab_step_flops(objective: Objective, data: np.ndarray, config: TrainConfig) -> float:
    """FLOPs of one step of ``train``: its dispatch lowered for one step."""
    params, rest = eqx.partition(objective.model, eqx.is_inexact_array)
    frozen, static = eqx.partition(rest, eqx.is_array)
    optimizer = make_optimizer(config)
    state_leaves, state_def = jax.tree.flatten(
        training._TrainState(params, optimizer.init(params), None)
    )
    loss_fn = training._as_pytree(objective.loss_fn)
    lowered = training._dispatch.lower(
        state_leaves,
        frozen,
        jnp.asarray(data),
        None,
        jax.random.key(0),
        jnp.asarray(0),
        jnp.asarray(1),
        structure=training._StaticKey((state_def, static)),
        loss_fn=loss_fn,
        loss_leaf_types=tuple(type(leaf) for leaf in jax.tree.leaves(loss_fn)),
        config=config,
        mesh=Mesh(np.asarray(jax.devices()), ("data",)),
        length=1,
        hflip=False,
        stochastic=False,
    )
    return flops(lowered.lowered)  # equinox.filter_jit wraps jax's Lowered


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _norm_block(eps, weight, bias, gain, shift, h):
    """``leaky_relu(LayerNorm(weight @ h + bias))`` on feature-major ``h`` (features, batch),
    for centred ``weight``/``bias`` (``models._centred``): the LayerNorm's mean is then zero,
    so only its scale is computed. Backward pass written by hand (``_norm_block_bwd``).
    """
    return _norm_block_fwd(eps, weight, bias, gain, shift, h)[0]


def _norm_block_fwd(eps, weight, bias, gain, shift, h):
    pre = weight @ h + bias[:, None]
    rstd = jax.lax.rsqrt(jnp.mean(pre * pre, axis=0) + eps)
    out = jax.nn.leaky_relu(pre * rstd * gain[:, None] + shift[:, None], LEAKY_SLOPE)
    return out, (weight, gain, shift, h, pre, rstd)


def _norm_block_bwd(eps, residuals, g_out):
    weight, gain, shift, h, pre, rstd = residuals
    normed = pre * rstd
    g_lin = jnp.where(normed * gain[:, None] + shift[:, None] > 0, g_out, LEAKY_SLOPE * g_out)
    g_normed = g_lin * gain[:, None]
    g_pre = rstd * (g_normed - normed * jnp.mean(g_normed * normed, axis=0))
    return (
        g_pre @ h.T,
        g_pre.sum(axis=1),
        (g_lin * normed).sum(axis=1),
        g_lin.sum(axis=1),
        weight.T @ g_pre,
    )


_norm_block.defvjp(_norm_block_fwd, _norm_block_bwd)


def fused_mlp(mlp: MLP, x: jax.Array, hand_vjp: bool = True) -> jax.Array:
    """``vmap(mlp)(x)`` rewritten for XLA:CPU: the same function, fewer passes over memory.

    LayerNorm's centring is folded into the weights, as in ``scorelab.models._normed_dense``.
    Two changes go beyond the library's networks, each exact in real arithmetic. The
    activations are feature-major (``(features, batch)``), so every matmul, forward and
    backward, has a layout XLA:CPU runs near its peak, including the weight gradients, which
    contract over the batch. And the backward pass of each LayerNorm + leaky ReLU block is
    written by hand (``_norm_block``); ``hand_vjp=False`` differentiates the same forward pass
    with JAX's autodiff instead, which separates what the layout buys from what the VJP buys.
    Tutorial's leaky ReLU only.
    """
    if mlp.activation != "leaky_relu":
        raise ValueError(f"fused_mlp is written for leaky_relu, got {mlp.activation}")
    h = (x / mlp.input_scale).T
    for layer, norm in zip(mlp.hidden_layers, mlp.norms):
        weight, bias = models._centred(layer)
        args = (norm.eps, weight, bias, norm.weight, norm.bias, h)
        h = _norm_block(*args) if hand_vjp else _norm_block_fwd(*args)[0]
    return (mlp.output_layer.weight @ h + mlp.output_layer.bias[:, None]).T


def _per_call(fn, *args, n_calls: int) -> float:
    """Seconds per call of ``fn(*args)`` over ``n_calls`` calls dispatched back to back."""
    return timed(lambda: [fn(*args) for _ in range(n_calls)]) / n_calls


def ceiling_cases(batch_size: int, quick: bool, n_calls: int):
    """What bounds a step: the MLP's gradient alone, rewritten, and its matmuls alone.

    ``network``: gradient of ``sum(vmap(mlp)(x) ** 2)`` (the DSM step without loss, RNG and
    optimiser); ``fused``: the same gradient through :func:`fused_mlp`, the fastest form of the
    network found for XLA:CPU; ``feature-major``: ``fused_mlp``'s layout differentiated by JAX
    instead of its hand-written VJP (both checked equal to ``network`` before timing);
    ``matmuls`` and ``matmuls, feature-major``: the same chain of matmuls with LayerNorm,
    activations and biases removed, batch-major (as ``vmap`` lays them out) and feature-major
    (as ``fused`` does).
    Each case times ``n_calls`` calls back to back, as the loops time their steps (timed one
    call at a time, the network's gradient came out at 33.6 ms, slower than the 21.2 ms DSM
    step of the same run that contains it). Returns ``{name: (case, flops)}``, each case giving
    seconds per call.
    """
    mlp = objectives(quick)[1].model
    params, static = eqx.partition(mlp, eqx.is_inexact_array)
    weights = [layer.weight for layer in (*mlp.hidden_layers, mlp.output_layer)]
    x = jax.random.normal(jax.random.key(3), (batch_size, 2))

    def network(params, x):
        return jnp.sum(jax.vmap(eqx.combine(params, static))(x) ** 2)

    def fused(params, x):
        return jnp.sum(fused_mlp(eqx.combine(params, static), x) ** 2)

    def feature_major(params, x):
        return jnp.sum(fused_mlp(eqx.combine(params, static), x, hand_vjp=False) ** 2)

    def matmuls(weights, x):
        for weight in weights:
            x = x @ weight.T
        return jnp.sum(x**2)

    def matmuls_feature_major(weights, x):
        x = x.T
        for weight in weights:
            x = weight @ x
        return jnp.sum(x**2)

    cases, grads = {}, {}
    for name, fn, arg in (
        ("network", network, params),
        ("feature-major", feature_major, params),
        ("fused", fused, params),
        ("matmuls", matmuls, weights),
        ("matmuls, feature-major", matmuls_feature_major, weights),
    ):
        grad = jax.jit(jax.grad(fn))
        cost = flops(grad.lower(arg, x))
        grads[name] = jax.block_until_ready(grad(arg, x))
        cases[name] = (functools.partial(_per_call, grad, arg, x, n_calls=n_calls), cost)
    for name in ("feature-major", "fused"):
        for got, want in zip(jax.tree.leaves(grads[name]), jax.tree.leaves(grads["network"])):
            scale = float(jnp.max(jnp.abs(want)))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
    return cases


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        extra=lambda parser: (
            parser.add_argument(
                "--objectives", default="hyvarinen,dsm,ncsn", help="comma-separated subset"
            ),
            parser.add_argument("--steps", type=int, default=20, help="steps per measurement"),
            parser.add_argument(
                "--batch-size", type=int, default=BATCH_SIZE, help="points per step"
            ),
        ),
    )
    chosen = args.objectives.split(",")
    n_steps = 2 if args.quick else args.steps
    batch_size = 64 if args.quick else args.batch_size
    data = np.asarray(seed_mixture().sample(jax.random.key(0), 10_000))
    dataset = jnp.asarray(data)
    peak_case, peak_flops = matmul_case(512 if args.quick else None)

    cases, step_flops, first_call = {"matmul": peak_case}, {}, {}
    for objective in [o for o in objectives(args.quick) if o.name in chosen]:
        # First calls (compilation included), then the cost analyses.
        loop_fn, example, run_tutorial = tutorial_loop(objective, dataset, batch_size)
        first_call["tutorial", objective.name] = run_tutorial(1)  # one step
        config, run_scorelab = scorelab_loop(objective, data, n_steps, batch_size)
        first_call["scorelab", objective.name] = run_scorelab() * n_steps  # n_steps steps
        step_flops["tutorial", objective.name] = flops(loop_fn.lower(*example))
        step_flops["scorelab", objective.name] = scorelab_step_flops(objective, data, config)
        cases[f"tutorial {objective.name}"] = functools.partial(run_tutorial, n_steps)
        cases[f"scorelab {objective.name}"] = run_scorelab

    ceilings = ceiling_cases(batch_size, args.quick, n_steps)
    cases.update({f"ceiling {name}": case for name, (case, _) in ceilings.items()})
    samples = interleaved(cases, args.repeats)
    peak = peak_flops / median(samples["matmul"])
    ceiling = {
        name: {
            "ms": 1e3 * median(samples[f"ceiling {name}"]),
            "gflop": cost / 1e9,
            "fraction_of_peak": cost / median(samples[f"ceiling {name}"]) / peak,
        }
        for name, (_, cost) in ceilings.items()
    }
    rows, results = [], []
    for objective in [o for o in objectives(args.quick) if o.name in chosen]:
        t_tut = median(samples[f"tutorial {objective.name}"])
        t_lab = median(samples[f"scorelab {objective.name}"])
        f_tut, f_lab = (
            step_flops["tutorial", objective.name],
            step_flops["scorelab", objective.name],
        )
        result = {
            "objective": objective.name,
            "tutorial_ms_per_step": 1e3 * t_tut,
            "scorelab_ms_per_step": 1e3 * t_lab,
            "speedup_scorelab_over_tutorial": t_tut / t_lab,
            "tutorial_gflop_per_step": f_tut / 1e9,
            "scorelab_gflop_per_step": f_lab / 1e9,
            "tutorial_fraction_of_peak": f_tut / t_tut / peak,
            "scorelab_fraction_of_peak": f_lab / t_lab / peak,
            # First call minus the steady time of the same steps: compilation and set-up.
            "tutorial_compile_s": first_call["tutorial", objective.name] - t_tut,
            "scorelab_compile_s": first_call["scorelab", objective.name] - n_steps * t_lab,
            "samples_s_per_step": {
                "tutorial": samples[f"tutorial {objective.name}"],
                "scorelab": samples[f"scorelab {objective.name}"],
            },
        }
        results.append(result)
        rows.append(
            [
                objective.name,
                result["tutorial_ms_per_step"],
                result["scorelab_ms_per_step"],
                result["speedup_scorelab_over_tutorial"],
                result["tutorial_gflop_per_step"],
                result["scorelab_gflop_per_step"],
                result["tutorial_fraction_of_peak"],
                result["scorelab_fraction_of_peak"],
            ]
        )
    headers = [
        "objective",
        "tutorial ms/step",
        "scorelab ms/step",
        "speed-up (b/a)",
        "tutorial GFLOP/step",
        "scorelab GFLOP/step",
        "tutorial / peak",
        "scorelab / peak",
    ]
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s (median of {args.repeats} rounds)")
    print(table(headers, rows))
    print(
        table(
            ["DSM MLP gradient alone", "ms", "GFLOP", "fraction of peak"],
            [[name, c["ms"], c["gflop"], c["fraction_of_peak"]] for name, c in ceiling.items()],
        )
    )
    write(
        "training",
        {
            "quick": args.quick,
            "repeats": args.repeats,
            "steps_per_measurement": n_steps,
            "batch_size": batch_size,
            "matmul_peak_gflops": peak / 1e9,
            "matmul_samples_s": samples["matmul"],
            "ceilings": ceiling,
            "results": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
