"""Multi-process training (scorelab.distributed): joining a job, the local launcher, and a
two-process run equal to the one-process run.

Two processes on the CPU each own one device; the batch of 32 is split 16 + 16 and the
gradient mean is a Gloo all-reduce, so the runs differ from the one-process run only by the
order of a float32 sum. Every launch has a timeout, and a failing process ends the others.
"""

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from test_training import arrays, run

from scorelab import distributed
from scorelab.checkpoints import load_model, open_checkpoints
from scorelab.cli import main
from scorelab.distributed import initialize_distributed, launch_local

TESTS_DIR = Path(__file__).parent
# Each process imports JAX and compiles the step; minutes only on a heavily loaded machine.
TIMEOUT = 300


def test_initialize_distributed_only_on_a_multi_process_launch(monkeypatch):
    calls, preemption = [], []

    def initialize(**kwargs):
        calls.append(kwargs)
        preemption.append(jax.config.jax_enable_preemption_service)

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    # Restored afterwards: initialize_distributed turns XLA's preemption service off.
    previous = jax.config.jax_enable_preemption_service
    for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert not initialize_distributed() and calls == []
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    waited = []
    monkeypatch.setattr(distributed, "_wait_for_coordinator", lambda *args: waited.append(args))
    assert initialize_distributed(join_timeout=7.0)
    assert calls == [{"num_processes": 2, "process_id": 1}]
    assert waited == [("10.0.0.1", 1234, 7.0)]  # process 1 waits for process 0's coordinator
    # Its SIGTERM handler logged "SIGTERM caught" in every process the launcher stopped.
    assert preemption == [False]
    jax.config.update("jax_enable_preemption_service", previous)


@pytest.mark.parametrize(
    "variables, named",
    [
        ({"JAX_COORDINATOR_ADDRESS": "garbage"}, "JAX_COORDINATOR_ADDRESS: expected HOST:PORT"),
        ({"JAX_COORDINATOR_ADDRESS": "h:0"}, "JAX_COORDINATOR_ADDRESS: expected HOST:PORT"),
        ({"JAX_COORDINATOR_ADDRESS": ":1234"}, "JAX_COORDINATOR_ADDRESS: expected HOST:PORT"),
        ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES: expected an integer >= 1"),
        ({"JAX_NUM_PROCESSES": "0"}, "JAX_NUM_PROCESSES: expected an integer >= 1"),
        ({"JAX_PROCESS_ID": "-1"}, "JAX_PROCESS_ID: expected an integer >= 0"),
        ({"JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID: 2 is not below JAX_NUM_PROCESSES"),
    ],
)
def test_malformed_coordinates_are_refused_before_jax_joins(monkeypatch, variables, named):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    base = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "JAX_NUM_PROCESSES": "2"}
    for name, value in {**base, "JAX_PROCESS_ID": "0", **variables}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"^{named}"):
        initialize_distributed()
    assert calls == []


def test_a_coordinator_that_does_not_answer_is_one_line_not_a_hang(monkeypatch):
    """Given a port nothing listens on, process 1 gives up after ``join_timeout`` (JAX's own
    join waited 300 s, then aborted the interpreter with a C++ stack dump)."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    with socket.socket() as unused:  # a port bound, then released: nothing listens on it
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    with pytest.raises(
        ValueError, match=f"^JAX_COORDINATOR_ADDRESS: nothing answered at 127.0.0.1:{port}"
    ):
        initialize_distributed(join_timeout=1.0)
    assert calls == []


def python(body: str) -> list[str]:
    """A ``python -c`` command line with the tests importable."""
    source = f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n" + textwrap.dedent(body)
    return [sys.executable, "-c", source]


def test_launch_local_sets_each_process_coordinates(tmp_path):
    command = python(
        f"""
        import os, pathlib
        names = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
        values = " ".join(os.environ[name] for name in names)
        pathlib.Path({str(tmp_path)!r}, os.environ["JAX_PROCESS_ID"]).write_text(values)
        """
    )
    assert launch_local(command, 3, timeout=60) == 0
    seen = sorted(path.read_text().split() for path in tmp_path.iterdir())
    address = seen[0][0]
    assert address.startswith("127.0.0.1:") and int(address.split(":")[1]) > 0
    assert seen == [[address, "3", "0"], [address, "3", "1"], [address, "3", "2"]]


def test_a_failing_process_ends_the_others_and_its_status_is_returned():
    # Process 1 fails at once; process 0 would wait forever (as in a collective it can never
    # complete) and must be terminated.
    command = python(
        """
        import os, sys, time
        if os.environ["JAX_PROCESS_ID"] == "1":
            sys.exit(3)
        time.sleep(600)
        """
    )
    assert launch_local(command, 2, timeout=60) == 3
    killed = python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert launch_local(killed, 2, timeout=60) == 128 + 9  # as a shell reports SIGKILL
    assert launch_local(python("import time; time.sleep(600)"), 2, timeout=1) == 124


@pytest.mark.parametrize("processes", [0, -1, 1.5, True])
def test_launch_local_refuses_a_bad_process_count(processes):
    with pytest.raises(ValueError, match="processes: must be an integer >= 1"):
        launch_local(["true"], processes)


@pytest.mark.slow  # starts two training processes
def test_two_processes_give_the_one_process_parameters(tmp_path):
    # The reference run of test_training (24 steps, batch 32, EMA, dispatches of 7) in two
    # processes, checkpointed every 5 steps: orbax's checkpoint writes are collective.
    output = tmp_path / "result.npz"
    command = python(
        f"""
        from scorelab.distributed import initialize_distributed, is_primary
        assert initialize_distributed()
        import jax, numpy as np
        from test_training import CONFIG, arrays, replace, run
        assert jax.process_count() == 2 and len(jax.devices()) == 2
        result = run(replace(CONFIG, checkpoint_every=5), out_dir={str(tmp_path / "ck")!r})
        if is_primary():
            np.savez({str(output)!r}, losses=result.losses, *arrays(result.model))
        """
    )
    assert launch_local(command, 2, env={"JAX_PLATFORMS": "cpu"}, timeout=TIMEOUT) == 0
    two = np.load(output)
    reference = run()
    # As test_training's four-device test: the batch mean is summed in another order (a
    # float32 all-reduce of two halves), a rounding difference grown over 24 Adam steps.
    # Measured: max parameter difference 1.2e-7 (1 ulp at |theta| ~ 1), max loss difference
    # 2.4e-7. Tolerance 1e-5, about 100 ulps, far below the 1e-2 one Adam step moves a
    # parameter; a wrong shard (say, both processes using the same half) moves it by that.
    for index, expected in enumerate(arrays(reference.model)):
        np.testing.assert_allclose(two[f"arr_{index}"], expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(two["losses"], reference.losses, rtol=1e-5)
    assert open_checkpoints(tmp_path / "ck").all_steps() == [15, 20, 24]


_TRAIN = [
    "train",
    "--loss",
    "dsm",
    "--steps",
    "12",
    "--batch-size",
    "32",
    "--set",
    "train.steps_per_dispatch=5",
    "--set",
    "train.checkpoint_every=6",
    "--set",
    "train.schedule=constant",
    "--set",
    "data.n=200",
    "--quiet",
]


@pytest.mark.slow
def test_scorelab_train_processes_2_writes_the_one_process_run_directory(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*_TRAIN, "--out", str(one)]) == 0
    # The launcher re-runs this command line in two processes (module scorelab.cli).
    command = [sys.executable, "-m", "scorelab.cli", *_TRAIN, "--out", str(two)]
    assert launch_local(command, 2, env={"JAX_PLATFORMS": "cpu"}, timeout=TIMEOUT) == 0
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert json.loads((two / "config.json").read_text()) == json.loads(
        (one / "config.json").read_text()
    )
    assert json.loads((two / "manifest.json").read_text())["processes"] == 2
    # Tolerances as in test_two_processes_give_the_one_process_parameters.
    for a, b in zip(
        arrays(load_model(two / "model")), arrays(load_model(one / "model")), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(two / "losses.npy"), np.load(one / "losses.npy"), rtol=1e-5)
    assert open_checkpoints(two / "checkpoints").all_steps() == [6, 12]
    # One process resumes the two-process checkpoints (a constant schedule may be extended).
    assert main([*_TRAIN, "--out", str(two), "--resume", "--steps", "18"]) == 0
    # A refusal in process 0 (the run exists) ends process 1, waiting for it, with status 2.
    capsys.readouterr()
    status = main([*_TRAIN, "--out", str(two), "--processes", "2"])
    assert status == 2


def test_processes_must_be_positive(capsys):
    assert main([*_TRAIN, "--processes", "0"]) == 2
    assert "--processes: must be >= 1, got 0" in capsys.readouterr().err


def test_one_line_for_an_interrupted_job(monkeypatch):
    """Ctrl-C of ``train --processes 2`` printed three "interrupted" lines (each process and
    the launcher) and two of XLA's "SIGTERM caught": process 0 alone now says what it kept."""
    import argparse

    from scorelab import cli

    monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    assert cli._speaks_for_the_job(argparse.Namespace())  # one process
    assert not cli._speaks_for_the_job(argparse.Namespace(launcher=True))
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    assert cli._speaks_for_the_job(argparse.Namespace())
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert not cli._speaks_for_the_job(argparse.Namespace())


@pytest.mark.slow  # a fresh interpreter per import
def test_importing_scorelab_starts_no_jax_backend():
    """A default sampler configuration built when scorelab.config was imported ran JAX work,
    which started XLA's backend before `jax.distributed.initialize`: every process of
    `train --processes 2` failed."""
    code = (
        "import jax._src.xla_bridge as bridge\n"
        "import scorelab.cli, scorelab.workflows, scorelab.demo, scorelab.image_demo\n"
        "print(bridge.backends_are_initialized())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
