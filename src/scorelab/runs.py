"""Run directories: the manifest, JSON outputs, and a trained run's model and configuration.

A run directory written by ``scorelab train`` holds::

    config.json      the ExperimentConfig
    manifest.json    config, seed, package versions, devices, time
    model.json/.eqx  the trained network (scorelab.checkpoints.save_model)
    losses.npy       the loss of every step
    checkpoints/     orbax checkpoints (resume)
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scorelab.checkpoints import load_model
from scorelab.config import ExperimentConfig

__all__ = ["package_versions", "manifest", "write_json", "read_json", "load_run"]

_PACKAGES = (
    "scorelab",
    "jax",
    "jaxlib",
    "equinox",
    "optax",
    "numpyro",
    "orbax-checkpoint",
    "diffrax",
    "pot",
    "numpy",
    "matplotlib",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of scorelab and the packages its results depend on."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def manifest(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The record that makes a run's outputs reproducible: config, versions, devices, time.

    Args:
        config: the run's configuration (JSON-serialisable); its seeds are part of it.
        **extra: more JSON-serialisable fields (grids, NFE, command line).
    """
    return {
        "config": config,
        "versions": package_versions(),
        "devices": [str(device) for device in jax.devices()],
        "platform": platform.platform(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def _default(value):
    if isinstance(value, np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_json(path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (arrays become lists; NaN becomes null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, default=_default, allow_nan=True)
    path.write_text(text.replace("NaN", "null") + "\n")
    return path


def read_json(path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text())


def load_run(run_dir) -> tuple[ExperimentConfig, Any]:
    """The configuration and trained model of a run directory written by ``scorelab train``.

    Args:
        run_dir: the ``--out`` folder of ``scorelab train`` (``config.json``, ``model.json``,
            ``model.eqx``).

    Returns:
        ``(config, model)``: the :class:`scorelab.config.ExperimentConfig` and the network.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"not a scorelab run directory (no config.json): {run_dir}")
    config = ExperimentConfig.from_dict(read_json(config_path))
    return config, load_model(run_dir / "model")
