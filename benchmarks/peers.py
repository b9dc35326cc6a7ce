"""Peers: scorelab's VP DDIM against diffusers' DDIMScheduler, its MALA against blackjax's.

**DDIM.** The same schedule (DDPM linear betas, T = 1000, 50 "leading" steps,
``set_alpha_to_one``, no clipping) and the same analytic epsilon, the exact VP epsilon of the
tutorial's 9-mode mixture,

    eps(x_t, t) = -sqrt(1 - abar_t) grad log q_t(x_t),
    q_t = sum_k w_k N(sqrt(abar_t) mu_k, abar_t C_k + (1 - abar_t) I),

run (a) by ``diffusers.DDIMScheduler.step`` in a torch loop, the epsilon in torch, on the CPU
with 1 and with 2 threads (on the GPU instead, where JAX and torch both see one), and (b) by
``scorelab.diffusers.ddim_sample`` (one ``lax.scan``, jitted; XLA uses every core), the
epsilon from ``scorelab.targets``. Rows for
``eta = 0`` (deterministic: the two final samples are compared, ``max |diff|``) and
``eta = 1``.

**MALA.** ``scorelab.samplers.mala`` under ``scorelab.samplers.sample`` against
``blackjax.mala`` stepped by ``lax.scan`` and ``vmap``-ped over the same chains, on the exact
log-density and score of the mixture, step size 1e-2. Each takes the log-density and the score
of a proposal from one pass: blackjax by ``jax.value_and_grad`` of ``log_prob``, scorelab by the
mixture's closed-form ``log_prob_and_score`` (``mala(..., returns_score=True)``).

Times are medians of interleaved rounds; the speed-up is peer time / scorelab time.

    python benchmarks/peers.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from _harness import interleaved, median, parse_args, table, timed, torch_device, write
from diffusers import DDIMScheduler

from scorelab.diffusers import SchedulerConfig, ddim_sample
from scorelab.models import ExactScore
from scorelab.samplers import mala, sample
from scorelab.targets import seed_mixture

CONFIG = SchedulerConfig(clip_sample=False)  # diffusers' defaults, no clipping


# --- DDIM --------------------------------------------------------------------------------------


def jax_ddim(target, n_steps: int, eta: float):
    alphas_cumprod = jnp.asarray(CONFIG.alphas_cumprod())

    def eps_fn(x_t, t):
        alpha_bar = alphas_cumprod[t]
        score = jax.vmap(target.vp_marginal(alpha_bar).score)(x_t)
        return -jnp.sqrt(1.0 - alpha_bar) * score

    @jax.jit
    def run(x_T, key):
        return ddim_sample(eps_fn, x_T, CONFIG, n_steps, eta=eta, key=key)

    return run


def torch_eps_fn(target, device: str):
    """The same exact epsilon in torch (float32): responsibilities by log-sum-exp."""
    means = torch.from_numpy(np.array(target.means, np.float32)).to(device)
    covariances = torch.from_numpy(np.array(target.covariances, np.float32)).to(device)
    log_weights = torch.from_numpy(np.log(np.array(target.weights, np.float32))).to(device)
    eye = torch.eye(means.shape[1], device=device)

    def eps_fn(x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        covariance = alpha_bar * covariances + (1 - alpha_bar) * eye
        precision, log_det = torch.linalg.inv(covariance), torch.logdet(covariance)
        diff = alpha_bar.sqrt() * means[None] - x_t[:, None]  # (n, K, d)
        pulls = torch.einsum("kij,nkj->nki", precision, diff)
        logits = log_weights - 0.5 * (diff * pulls).sum(-1) - 0.5 * log_det
        score = (torch.softmax(logits, dim=-1)[..., None] * pulls).sum(1)
        return -(1 - alpha_bar).sqrt() * score

    return eps_fn


def torch_ddim(target, n_steps: int, eta: float, device: str):
    scheduler = DDIMScheduler(
        num_train_timesteps=CONFIG.num_train_timesteps,
        beta_start=CONFIG.beta_start,
        beta_end=CONFIG.beta_end,
        beta_schedule=CONFIG.beta_schedule,
        clip_sample=False,
        set_alpha_to_one=True,
    )
    scheduler.set_timesteps(n_steps, device=device)
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    eps_fn = torch_eps_fn(target, device)

    def run(x_T: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device).manual_seed(0)
        x = x_T.to(device)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                eps = eps_fn(x, alphas_cumprod[t])
                x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
        return x.cpu()  # waits for the device

    return run


def torch_case(run, x_T: torch.Tensor, threads: int | None):
    """Time ``run(x_T)``; on the CPU with ``threads`` torch threads (``None``: the GPU)."""

    def case() -> float:
        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            start = time.perf_counter()
            run(x_T)
            return time.perf_counter() - start
        finally:
            torch.set_num_threads(previous)

    return case


def torch_peers(device: str) -> dict[str, int | None]:
    """The torch cases: 1 and 2 CPU threads, or the GPU."""
    if device == "cuda":
        return {f"diffusers {torch.cuda.get_device_name()}": None}
    return {"diffusers 1 thread": 1, "diffusers 2 threads": 2}


def ddim_rows(target, n_chains: int, n_steps: int, repeats: int) -> list[dict]:
    x_T = np.asarray(jax.random.normal(jax.random.key(0), (n_chains, 2)), np.float32)
    rows = []
    device = torch_device()
    peers = torch_peers(device)
    for eta in (0.0, 1.0):
        run_jax = jax_ddim(target, n_steps, eta)
        run_torch = torch_ddim(target, n_steps, eta, device)
        key, x_T_jax, x_T_torch = jax.random.key(1), jnp.asarray(x_T), torch.from_numpy(x_T)
        first = timed(lambda: run_jax(x_T_jax, key))  # noqa: B023
        max_diff = float(
            np.max(np.abs(np.asarray(run_jax(x_T_jax, key)) - run_torch(x_T_torch).numpy()))
        )
        cases = {"scorelab": functools.partial(timed, functools.partial(run_jax, x_T_jax, key))}
        cases.update({peer: torch_case(run_torch, x_T_torch, n) for peer, n in peers.items()})
        samples = interleaved(cases, repeats)
        t_lab = median(samples["scorelab"])
        for peer in peers:
            t_peer = median(samples[peer])
            rows.append(
                {
                    "comparison": f"DDIM eta={eta:g}",
                    "peer": peer,
                    "chains": n_chains,
                    "steps": n_steps,
                    "scorelab_s": t_lab,
                    "peer_s": t_peer,
                    "speedup": t_peer / t_lab,
                    "scorelab_compile_s": first - t_lab,
                    "max_abs_diff": max_diff if eta == 0 else None,
                    "samples_s": {"scorelab": samples["scorelab"], "peer": samples[peer]},
                }
            )
    return rows


# --- MALA --------------------------------------------------------------------------------------


def mala_rows(target, n_chains: int, n_steps: int, repeats: int) -> list[dict]:
    import blackjax

    step_size = 1e-2
    x_init = 3.0 * jax.random.normal(jax.random.key(0), (n_chains, 2))
    key = jax.random.key(1)
    sampler = mala(target.log_prob_and_score, step_size, n_steps, returns_score=True)
    score = ExactScore(target)

    kernel = blackjax.mala(target.log_prob, step_size)

    @jax.jit
    def run_blackjax(key, x_init):
        def chain(key, x):
            def body(state, step_key):
                state, info = kernel.step(step_key, state)
                return state, None

            state, _ = jax.lax.scan(body, kernel.init(x), jax.random.split(key, n_steps))
            return state.position

        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x_init.shape[0]))
        return jax.vmap(chain)(keys, x_init)

    def run_scorelab():
        return sample(key, sampler, score, x_init).x

    first_lab, first_peer = timed(run_scorelab), timed(lambda: run_blackjax(key, x_init))
    cases = {
        "scorelab": functools.partial(timed, run_scorelab),
        "blackjax": functools.partial(timed, lambda: run_blackjax(key, x_init)),
    }
    samples = interleaved(cases, repeats)
    t_lab, t_peer = median(samples["scorelab"]), median(samples["blackjax"])
    return [
        {
            "comparison": "MALA",
            "peer": f"blackjax {blackjax.__version__}",
            "chains": n_chains,
            "steps": n_steps,
            "scorelab_s": t_lab,
            "peer_s": t_peer,
            "speedup": t_peer / t_lab,
            "scorelab_compile_s": first_lab - t_lab,
            "peer_compile_s": first_peer - t_peer,
            "max_abs_diff": None,
            "samples_s": samples,
        }
    ]


def main():
    args = parse_args(__doc__.splitlines()[0], repeats=3)
    target = seed_mixture()
    chain_counts = [100] if args.quick else [10_000, 100_000]
    n_steps = 5 if args.quick else 50
    results = []
    for n_chains in chain_counts:
        results += ddim_rows(target, n_chains, n_steps, args.repeats)
        results += mala_rows(target, n_chains, 10 * n_steps, args.repeats)
    headers = [
        "comparison",
        "peer",
        "chains",
        "steps",
        "scorelab s",
        "peer s",
        "speed-up (peer / scorelab)",
        "max abs diff",
    ]
    rows = [
        [
            r["comparison"],
            r["peer"],
            r["chains"],
            r["steps"],
            r["scorelab_s"],
            r["peer_s"],
            r["speedup"],
            "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}",
        ]
        for r in results
    ]
    print(table(headers, rows))
    write("peers", {"quick": args.quick, "repeats": args.repeats, "results": results}, args.out)


if __name__ == "__main__":
    main()
