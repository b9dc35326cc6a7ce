"""Several processes, one training run: join a ``jax.distributed`` job, or start one locally.

JAX runs one program per process; ``jax.distributed.initialize`` connects them through a
coordinator (process 0's address), after which ``jax.devices()`` lists every process's devices
and :func:`scorelab.training.train`'s one-dimensional mesh spans them all: each process
computes the loss of its slice of the batch, and the gradient mean is an all-reduce (Gloo on
the CPU, NCCL on GPUs). Every process runs the same command on the same data; process 0 owns
the run directory (:func:`is_primary`).

Two entry points:

- :func:`initialize_distributed` joins a job launched by someone else (a cluster's launcher,
  or the environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``);
- :func:`launch_local` starts such a job on this machine: ``n`` copies of a command with those
  variables set and a free port on 127.0.0.1, ended together (``scorelab train --processes``).

Written here rather than taken from a library: JAX ships the joining half
(``jax.distributed``) but no launcher, and a cluster's own launchers (``srun``, ``mpirun``,
``torchrun``) are not installed on a workstation.

References:
    JAX documentation (2024). Distributed arrays and automatic parallelization; Multi-process
    environments. https://docs.jax.dev/en/latest/multi_process.html
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["initialize_distributed", "is_primary", "primary_value", "launch_local"]

# Seconds a process is given to exit after SIGTERM before it is killed.
_GRACE_SECONDS = 10.0


def initialize_distributed(join_timeout: float = 300.0) -> bool:
    """Join a multi-process JAX job when launched as one; a no-op otherwise.

    Must run before anything else touches JAX (the CLI calls it first). A multi-process launch
    is recognised by ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``, or a cluster JAX detects such as Slurm), or by an ``srun`` job step or
    ``mpirun`` launch of more than one task (``SLURM_STEP_NUM_TASKS``,
    ``OMPI_COMM_WORLD_SIZE``), whose coordinates ``jax.distributed.initialize`` detects itself.
    (An ``salloc`` shell running plain ``python`` is one process and is left alone.)

    The variables are checked first, and a process other than 0 waits for the coordinator to
    answer before joining: given a wrong address, JAX's own join waited five minutes and then
    aborted the interpreter with a C++ stack dump; here it ends in one line naming the variable.

    Args:
        join_timeout: seconds a process other than 0 waits for the coordinator to answer
            (JAX's own ``initialization_timeout`` by default).

    Returns:
        whether ``jax.distributed.initialize`` was called.

    Raises:
        ValueError: for a malformed ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` or
            ``JAX_PROCESS_ID``, or a coordinator that does not answer within ``join_timeout``.
    """
    environ = os.environ
    if "JAX_COORDINATOR_ADDRESS" in environ:
        host, port, num_processes, process_id = _coordinates(environ)
        if process_id:
            _wait_for_coordinator(host, port, join_timeout)
        try:
            _join(num_processes=num_processes, process_id=process_id)
        except ValueError as error:  # e.g. "Number of processes must be defined."
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS: {error} Set JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                "beside it, or let scorelab train --processes N launch the job"
            ) from None
        return True
    tasks = max(
        int(environ.get(name, "1")) for name in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE")
    )
    if tasks > 1:
        _join()
        return True
    return False


def _join(**coordinates) -> None:
    """``jax.distributed.initialize(**coordinates)`` without XLA's preemption service.

    Its notifier takes SIGTERM for a sync point scorelab never asks for: it logged "SIGTERM
    caught" in every process when the launcher stopped them on Ctrl-C, and scorelab's own
    handling (a checkpoint, one line) is what a stopped process runs.
    """
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(**coordinates)


def _coordinates(environ) -> tuple[str, int, int | None, int | None]:
    """The coordinator's host and port, and the optional process count and id, checked."""
    address = environ["JAX_COORDINATOR_ADDRESS"]
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"JAX_COORDINATOR_ADDRESS: expected HOST:PORT with a port in 1-65535, e.g. "
            f"10.0.0.1:1234, got {address!r}"
        )

    def optional_int(name: str, minimum: int) -> int | None:
        if name not in environ:
            return None
        text = environ[name].strip()
        if not text.isdigit() or int(text) < minimum:
            raise ValueError(f"{name}: expected an integer >= {minimum}, got {environ[name]!r}")
        return int(text)

    num_processes = optional_int("JAX_NUM_PROCESSES", 1)
    process_id = optional_int("JAX_PROCESS_ID", 0)
    if None not in (num_processes, process_id) and process_id >= num_processes:
        raise ValueError(
            f"JAX_PROCESS_ID: {process_id} is not below JAX_NUM_PROCESSES ({num_processes}); "
            f"number the processes 0 to {num_processes - 1}"
        )
    return host.removeprefix("[").removesuffix("]"), int(port), num_processes, process_id


def _wait_for_coordinator(host: str, port: int, timeout: float) -> None:
    """Return once ``host:port`` accepts a connection; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ValueError(
                    f"JAX_COORDINATOR_ADDRESS: nothing answered at {host}:{port} within "
                    f"{timeout:g} s ({error.strerror or error}); start process 0 there, or "
                    "correct the address"
                ) from None
        time.sleep(0.5)


def is_primary() -> bool:
    """Whether this is process 0, the one that writes a run's files (always so in one process)."""
    return jax.process_index() == 0


def primary_value(flag: bool) -> bool:
    """Process 0's ``flag``, in every process: how process 0 shares a decision with the rest.

    A collective (``multihost_utils.broadcast_one_to_all``): every process of the job must
    call it, in the same order. In one process, ``flag`` itself.
    """
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def _free_port() -> int:
    # The port is free when returned; the coordinator binds it a moment later (a race with
    # another program that is harmless in practice and reported as a connection error).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every running process, then SIGKILL those still running after the grace time."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch_local(
    command: Sequence[str],
    processes: int,
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> int:
    """Run ``command`` as a ``processes``-process JAX job on this machine; its exit status.

    Process ``i`` runs ``command`` with ``JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>``,
    ``JAX_NUM_PROCESSES=processes`` and ``JAX_PROCESS_ID=i`` added to the environment, so a
    program that calls :func:`initialize_distributed` first joins the job. The processes share
    this terminal (only process 0 shows a progress bar). They end together: when one exits
    with a non-zero status, the others (which would wait for it forever in the next
    collective) are terminated, and its status is returned; so is 124 after ``timeout``.

    Args:
        command: the program and its arguments, e.g. ``[sys.executable, "-m", "scorelab.cli",
            "train", ...]``.
        processes: the number of processes, >= 1.
        env: variables added to this process's environment for every process.
        timeout: seconds after which every process is terminated; ``None`` waits forever.

    Returns:
        0 when every process succeeded; else the exit status of a process that failed (the
        lowest-numbered one found failed; ``128 + k`` for one killed by signal ``k``, as a
        shell reports it), or 124 on timeout.
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes: must be an integer >= 1, got {processes!r}")
    base = {**os.environ, **(env or {})}
    base.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES=str(processes)
    )
    started = []
    try:
        for index in range(processes):
            started.append(
                subprocess.Popen(list(command), env={**base, "JAX_PROCESS_ID": str(index)})
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            statuses = [process.poll() for process in started]
            failed = [status for status in statuses if status not in (None, 0)]
            if failed:  # a process killed by signal k reports -k; a shell says 128 + k
                return failed[0] if failed[0] > 0 else 128 - failed[0]
            if all(status == 0 for status in statuses):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                return 124
            time.sleep(0.1)
    finally:
        _stop(started)
