"""Where ``scorelab demo images`` spends its time: wall and CPU seconds of each phase.

Runs :func:`scorelab.image_demo.run_image_demo` with its default settings into ``--run`` (a
fresh folder) with timers around the library calls it composes (training, each sampler's
``sample_run``, the evaluation, the figures), and prints per phase the calls, wall seconds
and CPU seconds of this process (all its threads). Compilation is inside each call: a
``sample_run`` compiles its sampler, the first training dispatch the training step.

On a shared machine the wall seconds measure the load; the CPU seconds measure the work
(inflated somewhat under load, when threads wait on each other), and the load average is
printed beside them.

    python benchmarks/image_demo_phases.py --run runs/demo-phases [--quick]
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from _harness import parse_args, table, write

import scorelab.image_demo as demo
from scorelab import viz

PHASES = ("train_run", "sample_run", "evaluate_image_sets", "save_sample_grid")


def main() -> None:
    def extra(parser):
        parser.add_argument("--run", type=Path, required=True, help="a new folder for the run")

    args = parse_args(__doc__.splitlines()[0], repeats=1, extra=extra)
    times: dict[str, list[float]] = {}

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*arguments, **keywords):
            wall, cpu = time.perf_counter(), time.process_time()
            out = fn(*arguments, **keywords)
            entry = times.setdefault(name, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - wall
            entry[2] += time.process_time() - cpu
            return out

        return wrapper

    for name in PHASES:
        setattr(demo, name, timed(name, getattr(demo, name)))
    viz.save_figure = timed("save_figure", viz.save_figure)
    settings = demo.ImageDemoSettings()
    if args.quick:
        settings = demo.ImageDemoSettings.from_dict(
            {
                "budgets": [3],
                "n_samples": 16,
                "floor_repeats": 2,
                "channels": [8, 16],
                "train": {"steps": 4, "warmup_steps": 1, "batch_size": 8, "steps_per_dispatch": 2},
            }
        )
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    args.run.mkdir(parents=True)
    demo.run_image_demo(settings, args.run, progress=False)
    total = [time.perf_counter() - wall, time.process_time() - cpu]
    rows = [[name, *entry] for name, entry in times.items()]
    rows.append(["total (run_image_demo)", 1, *total])
    print(f"load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}")
    print(table(["phase", "calls", "wall s", "CPU s"], rows))
    payload = {
        "quick": args.quick,
        "phases": {
            name: dict(zip(("calls", "wall", "cpu"), e, strict=True)) for name, e in times.items()
        },
        "total": {"wall": total[0], "cpu": total[1]},
        "load_average_before_after": [load_before, os.getloadavg()[0]],
    }
    write("image_demo_phases", payload, args.out)


if __name__ == "__main__":
    main()
