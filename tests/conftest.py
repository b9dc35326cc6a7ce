"""Shared test configuration: float32 like production, CPU, fixed keys."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

from scorelab.targets import seed_mixture  # noqa: E402


@pytest.fixture(scope="session")
def mixture():
    """The tutorial's nine-component target."""
    return seed_mixture()


@pytest.fixture
def key():
    """A fixed root key; tests split it into named sub-keys."""
    return jax.random.key(0)
