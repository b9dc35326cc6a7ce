"""Persistence: orbax checkpoints of a training run, and trained models for later use.

Two formats, for two purposes:

- **run checkpoints** (:func:`open_checkpoints`, :func:`save_checkpoint`,
  :func:`restore_checkpoint`): everything :func:`scorelab.training.train` needs to continue a
  run exactly — parameters, optimiser state, EMA, step, PRNG key, loss history, config — as an
  orbax ``CheckpointManager`` directory. Orbax writes each step to a temporary directory and
  renames it only once complete, so a run killed mid-write leaves the previous checkpoint as the
  latest one.
- **models** (:func:`save_model`, :func:`load_model`): a trained network alone, as the leaves
  serialised by ``equinox.tree_serialise_leaves`` (``<path>.eqx``) beside a JSON file naming the
  :mod:`scorelab.models` class and its constructor arguments (``<path>.json``); enough to rebuild
  the network in another process (the CLI's ``sample`` and ``plot``).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import orbax.checkpoint as ocp

from scorelab import models

__all__ = [
    "open_checkpoints",
    "save_checkpoint",
    "restore_checkpoint",
    "save_model",
    "load_model",
]

# Older checkpoints are pruned; two spare ones survive a corrupted disk as well as a crash.
_MAX_TO_KEEP = 3


def open_checkpoints(directory: str | Path) -> ocp.CheckpointManager:
    """Open (creating if needed) the orbax checkpoint directory of a run.

    Saving is synchronous: a checkpoint is complete on disk when :func:`save_checkpoint`
    returns, which is what makes "kill the process, then resume" safe to reason about.
    Unfinished writes of a killed run (orbax's temporary directories) are removed on opening.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=_MAX_TO_KEEP,
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save_checkpoint(
    manager: ocp.CheckpointManager, step: int, state: Any, metadata: dict[str, Any]
) -> None:
    """Write the array pytree ``state`` and the JSON-serialisable ``metadata`` as ``step``."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)
    )
    manager.save(step, args=args)
    manager.wait_until_finished()


def restore_checkpoint(
    manager: ocp.CheckpointManager, like: Any
) -> tuple[int, Any, dict[str, Any]] | None:
    """Restore the latest complete checkpoint, or ``None`` if there is none.

    Args:
        manager: from :func:`open_checkpoints`.
        like: a pytree with the structure, dtypes and shardings of the saved ``state`` (the
            freshly initialised state of the same run); arrays are restored onto its shardings.

    Returns:
        ``(step, state, metadata)``.
    """
    step = manager.latest_step()
    if step is None:
        return None
    args = ocp.args.Composite(state=ocp.args.StandardRestore(like), metadata=ocp.args.JsonRestore())
    restored = manager.restore(step, args=args)
    return step, restored.state, restored.metadata


def _model_class(name: str) -> type[eqx.Module]:
    cls = getattr(models, name, None)
    classes = [n for n in models.__all__ if isinstance(getattr(models, n), type)]
    accepted = [n for n in classes if "key" in inspect.signature(getattr(models, n)).parameters]
    if name not in accepted or cls is None:
        raise ValueError(f"model class {name!r} cannot be saved/loaded; accepted: {accepted}")
    return cls


def _signature(tree: Any) -> tuple:
    """Tree structure (static fields included) and the shapes and dtypes of the array leaves."""
    leaves = [(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape")]
    return jax.tree.structure(tree), leaves


def save_model(path: str | Path, model: eqx.Module, **constructor_kwargs: Any) -> None:
    """Save a :mod:`scorelab.models` network so :func:`load_model` can rebuild it.

    Writes ``<path>.eqx`` (the leaves, ``equinox.tree_serialise_leaves``) and ``<path>.json``
    (``{"class": ..., "kwargs": ...}``); ``path``'s own suffix, if any, is replaced.

    Args:
        path: file stem, e.g. ``runs/demo/model``.
        model: a network of a class in :mod:`scorelab.models` built from a key.
        **constructor_kwargs: the JSON-serialisable arguments it was built with, other than
            ``key`` (e.g. ``dim=2, widths=(16, 16)``).

    Raises:
        ValueError: if the class is not a keyed :mod:`scorelab.models` network, or the
            arguments do not rebuild a network of the same structure and shapes.
    """
    path = Path(path)
    cls = _model_class(type(model).__name__)
    skeleton = eqx.filter_eval_shape(cls, jax.random.key(0), **constructor_kwargs)
    if _signature(skeleton) != _signature(model):
        raise ValueError(
            f"{cls.__name__}(**{constructor_kwargs}) does not rebuild the model being saved; "
            "pass the constructor arguments it was built with"
        )
    spec = {"class": cls.__name__, "kwargs": constructor_kwargs}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(spec, indent=2) + "\n")
    eqx.tree_serialise_leaves(path.with_suffix(".eqx"), model)


def load_model(path: str | Path) -> eqx.Module:
    """Rebuild a network saved by :func:`save_model` from ``<path>.json`` and ``<path>.eqx``.

    Args:
        path: the path given to :func:`save_model`, without suffix.

    Returns:
        The :mod:`scorelab.models` network with its saved weights.

    Raises:
        FileNotFoundError: if either file is missing.
        ValueError: if the JSON names an unknown class.
    """
    path = Path(path)
    for file in (path.with_suffix(".json"), path.with_suffix(".eqx")):
        if not file.is_file():
            raise FileNotFoundError(f"saved model file not found: {file}")
    spec = json.loads(path.with_suffix(".json").read_text())
    cls = _model_class(spec["class"])
    # Only the pytree structure is needed to deserialise into, so the initialisation is traced,
    # not run (a large network would otherwise be initialised just to be overwritten).
    skeleton = eqx.filter_eval_shape(cls, jax.random.key(0), **spec["kwargs"])
    return eqx.tree_deserialise_leaves(path.with_suffix(".eqx"), skeleton)
