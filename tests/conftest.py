"""Shared test configuration: float32 like production, CPU, fixed keys, one compilation cache
per test worker."""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

from scorelab.targets import seed_mixture  # noqa: E402


def _worker_cache_dir() -> Path:
    """This process's compilation cache: one directory per pytest-xdist worker of one run."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"pid{os.getpid()}")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return Path(tempfile.gettempdir()) / f"scorelab-tests-{run}-{worker}"


# Many tests build the same XLA program in a fresh closure (a U-Net's training step, a sampler
# on the mixture), which jit's in-memory cache cannot see; JAX's persistent cache is keyed by
# the program itself, so each distinct program compiles once per worker. One directory per
# worker, because JAX writes an entry in place (no lock without eviction), so a second process
# could read it half-written; subprocesses (console-script tests) do not inherit it. The
# executables are the same either way: no result changes. A user's own JAX_COMPILATION_CACHE_DIR
# wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    jax.config.update("jax_compilation_cache_dir", str(_worker_cache_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_sessionfinish(session):
    """Remove this worker's compilation cache."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        shutil.rmtree(_worker_cache_dir(), ignore_errors=True)


@pytest.fixture(scope="session")
def mixture():
    """The tutorial's nine-component target."""
    return seed_mixture()


@pytest.fixture
def key():
    """A fixed root key; tests split it into named sub-keys."""
    return jax.random.key(0)
