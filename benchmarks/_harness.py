"""What every benchmark shares: arguments, interleaved timing, the matmul peak, the machine, output.

The machines these run on are shared and their load changes from second to second, so no
benchmark compares numbers taken at different times: every case of a benchmark is timed in
turn inside one round, the rounds are repeated, and the reported figure of each case is its
median over rounds. Ratios between cases of the same round are what the benchmarks claim.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

RESULTS_DIR = Path(__file__).parent / "results"


def parse_args(
    description: str, repeats: int = 5, extra: Callable[[argparse.ArgumentParser], None] = None
) -> argparse.Namespace:
    """``--quick`` (a smoke run: tiny sizes, one round), ``--repeats``, ``--out``; ``extra``
    adds a benchmark's own flags."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one round")
    parser.add_argument("--repeats", type=int, default=None, help=f"rounds (default {repeats})")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/)")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else repeats
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of ``fn()``, its outputs waited for (``jax.block_until_ready``)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def interleaved(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every case once per round, in order, for ``repeats`` rounds.

    Each case returns its own measurement (seconds per unit of work), so that it can leave
    its set-up out of the clock. Returns every case's measurements, one per round.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            samples[name].append(case())
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def on_accelerator() -> bool:
    """Whether JAX's default device is a GPU/TPU (the benchmarks then size their peaks for it)."""
    return jax.default_backend() != "cpu"


def matmul_case(n: int | None = None) -> tuple[Callable[[], float], float]:
    """A timing case for one float32 ``(n, n) @ (n, n)`` and its FLOP count ``2 n^3``.

    The best-case dense throughput of this machine under XLA: the denominator of every
    fraction-of-peak figure. ``n`` defaults to 2048 on a CPU and 8192 on an accelerator,
    where a 2048^3 product lasts well under a millisecond and measures launch latency.
    XLA's default precision applies (on an NVIDIA GPU that is TF32 for float32 matmuls), the
    same as for the workloads divided by it.
    """
    if n is None:
        n = 8192 if on_accelerator() else 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))

    def case() -> float:
        return min(timed(lambda: dot(a, b)) for _ in range(3))

    return case, 2.0 * n**3


def flops(lowered) -> float:
    """FLOPs of a lowered XLA computation (``jax.jit(f).lower(...)``) from its cost analysis.

    The analysis of the program as lowered, before the backend optimises it, so the same
    count on every machine (a loop body counts once). The compiled program's analysis is not
    used: on a GPU it leaves out the matmuls handed to cuBLAS (an H200 reported 1.44 GFLOP for
    a gradient the CPU and the lowered program both count as ~2.5).
    """
    analysis = lowered.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per computation
        analysis = analysis[0]
    if not analysis or "flops" not in analysis:  # jax 0.11 on CUDA gave none for some programs
        return float("nan")
    return float(analysis["flops"])


def machine() -> dict:
    """The machine a result was measured on: CPU model, cores, load, versions."""
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Thread(s) per core", "L2 cache", "L3 cache"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def device_peak_mib() -> float | None:
    """Peak bytes the default device's allocator held, in MiB; ``None`` where it keeps no
    statistics (the CPU backend: read the process's peak RSS there instead)."""
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**20


def torch_device() -> str:
    """``"cuda"`` where torch sees a GPU, else ``"cpu"``: peers run on the device scorelab does."""
    import torch

    return "cuda" if torch.cuda.is_available() and on_accelerator() else "cpu"


def torch_threads(spec: str) -> list[int | None]:
    """The torch cases to time from a ``--threads`` value such as ``"1,2"``: those CPU thread
    counts, or ``[None]`` (one case on CUDA) where :func:`torch_device` is ``"cuda"``."""
    if torch_device() == "cuda":
        return [None]
    return [int(t) for t in spec.split(",")]


def torch_label(n_threads: int | None) -> str:
    """A torch case's label: ``tN`` for N CPU threads, ``cuda`` for the GPU."""
    return "cuda" if n_threads is None else f"t{n_threads}"


def use_torch_threads(n_threads: int | None) -> None:
    """Set torch's CPU thread count for a case (nothing to set for a CUDA case)."""
    import torch

    if n_threads is not None:
        torch.set_num_threads(n_threads)


def torch_sync(value):
    """``value`` once torch's queued GPU work is done (``timed`` waits for JAX's only)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return value


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (pastes into docs/benchmarks.md as it is)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
        return str(value)

    lines = [headers, ["---"] * len(headers), *[[cell(v) for v in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def write(name: str, payload: dict, out: Path | None) -> Path:
    """Write ``payload`` with the machine description as JSON; return the path."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2))
    print(f"wrote {path}")
    return path


def k_diffusion_sampling() -> types.ModuleType | None:
    """k-diffusion's ``sampling.py``, unchanged, or ``None`` where k-diffusion, torch,
    torchsde or torchdiffeq is missing.

    ``k_diffusion/__init__.py`` imports its training stack (wandb, clean-fid, torchvision,
    scikit-image, ...), so ``sampling.py`` and ``utils.py`` are loaded by file as a private
    package; only the image transforms ``utils.py`` imports at its top (no sampler uses them)
    are stood in for when torchvision is absent. ``.ci/run`` installs k-diffusion with
    ``--no-deps`` plus the two solver libraries it imports.
    """
    name = "_k_diffusion_sampling_only"
    if name + ".sampling" in sys.modules:
        return sys.modules[name + ".sampling"]
    needed = ("torch", "torchsde", "torchdiffeq", "k_diffusion")
    if any(importlib.util.find_spec(module) is None for module in needed):
        return None
    package = types.ModuleType(name)
    package.__path__ = list(importlib.util.find_spec("k_diffusion").submodule_search_locations)
    sys.modules[name] = package
    stubs = {}
    if importlib.util.find_spec("torchvision") is None:
        transforms = types.ModuleType("torchvision.transforms")
        transforms.functional = types.ModuleType("torchvision.transforms.functional")
        stubs = {"torchvision": types.ModuleType("torchvision"),
                 "torchvision.transforms": transforms,
                 "torchvision.transforms.functional": transforms.functional}  # fmt: skip
        stubs["torchvision"].transforms = transforms
        sys.modules.update(stubs)
    try:
        return importlib.import_module(name + ".sampling")
    finally:
        for stub in stubs:
            sys.modules.pop(stub)
