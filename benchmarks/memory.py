"""Peak resident memory of training and of sampling 10^6 chains, each in its own process.

Every workload runs in a fresh subprocess (``python benchmarks/memory.py --child NAME``)
that reports its ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the peak resident set of
that process (compiled code and the Python/JAX runtime included). ``baseline`` imports
scorelab and runs one tiny jitted function: subtract it to see what a workload adds. The
``arrays`` column is a lower bound for comparison: the largest single activation the
workload must hold (``n x 512`` float32 for the networks; the chains' state for the exact
score). On a GPU the process's peak RSS is host memory only; the ``device peak`` column is
then the device allocator's ``peak_bytes_in_use`` (``jax.Device.memory_stats``; run with
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` or not, the allocator counts what is in use).

* ``train <objective>``: ``scorelab.training.train``, 10 steps at the tutorial's settings
  (batch 2048; see ``training.py``);
* ``sample <sampler> <score>``: ``scorelab.samplers.sample`` on 10^6 chains (3 steps with the
  network, 10 with the exact score; see ``sampling.py``).

    python benchmarks/memory.py [--quick]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from _harness import device_peak_mib, parse_args, table, write

HERE = Path(__file__).parent
MIB = 2**20
HEADERS = ["workload", "peak RSS MiB", "over baseline MiB", "device peak MiB", "arrays MiB"]


def workloads(quick: bool) -> dict[str, float]:
    """Name -> the lower bound on live arrays, in MiB."""
    n_chains = 1_000 if quick else 1_000_000
    width = 16 if quick else 512
    batch = 64 if quick else 2048
    return {
        "baseline": 0.0,
        "train hyvarinen": 3 * batch * width * 4 / MIB,  # primal + 2 tangents of one layer
        "train dsm": batch * width * 4 / MIB,
        "train ncsn": 2 * batch * width * 4 / MIB,
        "sample ddim exact": n_chains * 2 * 4 / MIB,
        "sample ddim learned": n_chains * width * 4 / MIB,
        "sample ula learned": n_chains * width * 4 / MIB,
    }


def child(name: str, quick: bool) -> None:
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from scorelab.samplers import sample, ve_prior
    from scorelab.targets import seed_mixture
    from scorelab.training import TrainConfig, train

    kind, _, rest = name.partition(" ")
    if kind == "baseline":
        jax.block_until_ready(jax.jit(lambda x: x + 1)(jnp.ones(3)))
    elif kind == "train":
        from training import objectives

        objective = next(o for o in objectives(quick) if o.name == rest)
        data = np.asarray(seed_mixture().sample(jax.random.key(0), 10_000))
        config = TrainConfig(
            steps=10,
            learning_rate=objective.learning_rate,
            batch_size=64 if quick else 2048,
            steps_per_dispatch=10,
        )
        train(jax.random.key(0), objective.model, objective.loss_fn, data, config, progress=False)
    else:
        from sampling import samplers, scores

        sampler_name, score_name = rest.split()
        n_chains = 1_000 if quick else 1_000_000
        n_steps = 3 if score_name == "learned" else 10
        sampler, _ = samplers(n_steps)[sampler_name]
        score_fn = scores(sampler_name, quick)[score_name]
        x_init = ve_prior(jax.random.key(1), n_chains, 2, 80.0)
        run = functools.partial(sample, jax.random.key(2), sampler, score_fn, x_init)
        jax.block_until_ready(run().x)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"maxrss_mib": peak_kib / 1024, "device_peak_mib": device_peak_mib()}))


def main():
    if "--child" in sys.argv:
        index = sys.argv.index("--child")
        child(sys.argv[index + 1], "--quick" in sys.argv)
        return
    args = parse_args(__doc__.splitlines()[0], repeats=1)
    results, rows = [], []
    baseline = None
    for name, arrays_mib in workloads(args.quick).items():
        command = [sys.executable, str(Path(__file__)), "--child", name]
        if args.quick:
            command.append("--quick")
        done = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{done.stderr[-2000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        peak, device_peak = report["maxrss_mib"], report["device_peak_mib"]
        baseline = peak if baseline is None else baseline
        results.append(
            {
                "workload": name,
                "peak_rss_mib": peak,
                "over_baseline_mib": peak - baseline,
                "device_peak_mib": device_peak,
                "largest_array_mib": arrays_mib,
            }
        )
        device_cell = "-" if device_peak is None else device_peak
        rows.append([name, peak, peak - baseline, device_cell, arrays_mib])
        print(table(HEADERS, rows[-1:]).splitlines()[-1], flush=True)
    print(table(HEADERS, rows))
    write("memory", {"quick": args.quick, "results": results}, args.out)


if __name__ == "__main__":
    main()
