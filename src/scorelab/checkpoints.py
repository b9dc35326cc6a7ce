"""Persistence: orbax checkpoints of a training run, and trained models for later use.

Two formats, for two purposes:

- **run checkpoints** (:func:`open_checkpoints`, :func:`save_checkpoint`,
  :func:`restore_checkpoint`): everything :func:`scorelab.training.train` needs to continue a
  run exactly — parameters, optimiser state, EMA, step, PRNG key, loss history, config — as an
  orbax ``CheckpointManager`` directory. Orbax writes each step to a temporary directory and
  renames it only once complete, so a run killed mid-write leaves the previous checkpoint as the
  latest one. Each checkpoint records the SHA-256 of its arrays and of its metadata, and of
  every file orbax wrote for it (checked before orbax reads any); a restore takes the newest
  checkpoint whose contents match them: orbax itself restores a flipped bit in an array file
  as a silently different value.
- **models** (:func:`save_model`, :func:`load_model`): a trained network alone, as the leaves
  serialised by ``equinox.tree_serialise_leaves`` (``<path>.eqx``) beside a JSON file naming the
  network's class by import path (``module:qualname``), its constructor arguments and the
  SHA-256 of the ``.eqx`` file (``<path>.json``); enough to rebuild the network in another
  process (the CLI's ``sample`` and ``plot``). Both files are written atomically.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import inspect
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from scorelab import models
from scorelab._files import (
    atomic_write,
    file_size_limit,
    free_descriptors,
    jsonable,
    read_json,
    write_json,
)
from scorelab._validate import check_file, check_instance, check_int, first_line, nesting

__all__ = [
    "open_checkpoints",
    "saved_config",
    "save_checkpoint",
    "check_room",
    "restore_checkpoint",
    "save_model",
    "load_model",
    "model_files",
    "tree_sha256",
]

# Older checkpoints are pruned; two spare ones survive a corrupted disk as well as a crash.
_MAX_TO_KEEP = 3

_FILE_DIGESTS = "file_digests.json"
"""Beside a step's orbax folders: the step and the SHA-256 of every file orbax wrote for it,
checked before orbax reads any of them (a truncated file made orbax's readers fail on their
own threads, which printed dozens of tracebacks after the step was found damaged)."""


def open_checkpoints(directory: str | Path) -> ocp.CheckpointManager:
    """Open (creating if needed) the orbax checkpoint directory of a run.

    Saving is synchronous: a checkpoint is complete on disk when :func:`save_checkpoint`
    returns, which is what makes "kill the process, then resume" safe to reason about.
    Unfinished writes of a killed run (orbax's temporary directories) are removed on opening.

    Raises:
        ValueError: ``directory`` is a file, or lies under one (orbax returned a manager and
            logged a ``NotADirectoryError`` from a thread of its own).
    """
    for folder in (Path(directory), *Path(directory).parents):
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"directory: {folder} is a file, not a folder; give a checkpoint folder"
            )
    options = ocp.CheckpointManagerOptions(
        max_to_keep=_MAX_TO_KEEP,
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)
    # orbax removes those on a thread of its own, awaited only by a save: a command that
    # ended soon after opening raced it at interpreter shutdown, and orbax logged the thread's
    # "cannot schedule new futures after interpreter shutdown" with a traceback.
    await_cleanup = getattr(manager, "_maybe_await_cleanup_tmp_directory", None)
    if await_cleanup is not None:  # an orbax without it: the race stays, nothing breaks
        await_cleanup()
    return manager


def tree_sha256(tree: Any) -> str:
    """SHA-256 of the dtypes, shapes and bytes of the array leaves of ``tree``, in tree order:
    which weights a checkpoint holds, or which model a result was measured with.

    A replicated ``jax.Array`` (what training checkpoints) is read from this process's copy, a
    typed PRNG key as its key data; leaves that are not arrays or numbers (a network's
    activation function) are left out, as their bytes would be a memory address.
    """
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if _is_typed_key(leaf):  # its bytes are its key data (NumPy cannot read a key)
            leaf = jax.random.key_data(leaf)
        if isinstance(leaf, jax.Array) and leaf.is_fully_replicated:
            leaf = leaf.addressable_data(0)
        array = np.ascontiguousarray(leaf)
        if array.dtype == object:  # a function or other object: its bytes were its address
            continue
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _is_typed_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _json_sha256(payload: Any) -> str:
    """SHA-256 of the canonical JSON of ``payload`` (sorted keys, no spaces)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


_SAVE_MARGIN = 1 << 20
"""Bytes a checkpoint needs besides its arrays: orbax's metadata, sharding and manifest files
(tens of KiB for a small network), with room to spare; a save that fails half way on a full
disk leaves a temporary folder (removed by :mod:`scorelab.runs`)."""


_SAVE_DESCRIPTORS = 64
"""Files a save may need to open at once: orbax's writer (tensorstore) held up to 18 on a
2-core machine, for a state of 2 arrays as for one of 300; the rest is room for a machine with
more writer threads."""

_NAMED_WRITE_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EMFILE, errno.ENFILE)
"""The OS errors of a failed write that a save raises as an ``OSError`` naming the checkpoint
directory (tensorstore's ``ValueError`` quotes them as ``os_error_code``), for the callers'
remedies."""


def check_room(manager: ocp.CheckpointManager, state: Any) -> None:
    """Check that a save of ``state`` fits: ``OSError`` naming the checkpoint directory
    unless the state's bytes and a margin for orbax's own files (:data:`_SAVE_MARGIN`) fit its
    disk (``ENOSPC``) and the process's file-size limit (``EFBIG``), and the process may open
    :data:`_SAVE_DESCRIPTORS` more files (``EMFILE``).

    :func:`save_checkpoint` checks this before orbax writes (its failed writes left a temporary
    folder and printed dozens of tracebacks from its threads, some after the command had
    ended); a training run checks it before its first step too, so a limit is found before the
    work, not at its end."""
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state) if hasattr(leaf, "nbytes"))
    needed = 1.1 * state_bytes + _SAVE_MARGIN
    directory = Path(manager.directory)
    size_limit = file_size_limit()
    descriptors = free_descriptors()
    if shutil.disk_usage(directory).free < needed:
        code = errno.ENOSPC
    elif size_limit is not None and size_limit < needed:
        code = errno.EFBIG
    elif descriptors is not None and descriptors < _SAVE_DESCRIPTORS:
        code = errno.EMFILE
    else:
        return
    raise OSError(code, os.strerror(code), str(directory))


def _closed_loop_callback(record: Any) -> bool:
    """Whether an unraisable-exception ``record`` is tensorstore's: a write that finished after
    orbax's failed save had closed the event loop waiting on it (tensorstore reports each one
    to :data:`sys.unraisablehook` with no object, a bare traceback per file)."""
    return (
        record.object is None
        and isinstance(record.exc_value, RuntimeError)
        and str(record.exc_value) == "Event loop is closed"
    )


@contextlib.contextmanager
def _orbax_threads_quiet():
    """orbax's threads quiet while it writes or reads: absl's log off (its threads log every
    failure with a traceback: dozens of lines for one full disk, some after the command's own
    message), and tensorstore's late callbacks into a closed event loop dropped
    (:func:`_closed_loop_callback`); the save or restore raises the error itself, which the
    caller names once."""
    logger = logging.getLogger("absl")
    level = logger.level
    hook = sys.unraisablehook

    def unraisable(record):
        if not _closed_loop_callback(record):
            hook(record)

    logger.setLevel(logging.CRITICAL)
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        logger.setLevel(level)
        sys.unraisablehook = hook


def save_checkpoint(
    manager: ocp.CheckpointManager, step: int, state: Any, metadata: dict[str, Any]
) -> None:
    """Write the array pytree ``state`` and the JSON-serialisable ``metadata`` as ``step``.

    The metadata is stored with two more entries, ``state_sha256`` (:func:`tree_sha256` of
    ``state``) and ``metadata_sha256`` (of the metadata before it), which
    :func:`restore_checkpoint` checks and removes. Non-finite floats in ``metadata`` are
    stored as ``None``.

    Raises:
        ValueError: ``step`` is not an integer ``>= 0``, or not after the newest saved step
            (orbax declined such a save without a word: a float step, or one already saved,
            returned with nothing written).
        TypeError: ``state`` holds a typed PRNG key (save ``jax.random.key_data(key)``),
            ``manager`` is not an orbax ``CheckpointManager`` (:func:`open_checkpoints`), or
            ``metadata`` is not a dict of JSON values.
        OSError: naming the checkpoint directory, before anything is written
            (:func:`check_room`): ``ENOSPC`` when its disk has less room than the state's
            bytes and a margin for orbax's own files (:data:`_SAVE_MARGIN`), ``EFBIG`` when
            the process's file-size limit is below that, ``EMFILE`` when it may open fewer
            than :data:`_SAVE_DESCRIPTORS` more files; or one of
            :data:`_NAMED_WRITE_ERRORS` when orbax's write fails on it all the same.
    """
    _check_manager(manager)
    check_int("step", step, 0)
    check_instance("metadata", metadata, dict, "a dict of JSON values")
    try:
        json.dumps(jsonable(metadata))
    except (TypeError, ValueError) as error:  # json's message named no argument
        raise TypeError(f"metadata: not JSON-serialisable ({error}); give JSON values") from None
    latest = manager.latest_step()
    if latest is not None and step <= latest:
        raise ValueError(
            f"step: {step} is not after the newest checkpoint of {manager.directory}, step "
            f"{latest}; checkpoints are saved at increasing steps"
        )
    if any(_is_typed_key(leaf) for leaf in jax.tree.leaves(state)):
        raise TypeError(
            "state: holds a typed PRNG key, which orbax cannot write; save "
            "jax.random.key_data(key) and rebuild it with jax.random.wrap_key_data"
        )
    check_room(manager, state)  # before hashing the state: a refusal costs nothing
    metadata = jsonable({**metadata, "state_sha256": tree_sha256(state)})
    metadata["metadata_sha256"] = _json_sha256(metadata)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)
    )
    try:
        with _orbax_threads_quiet():
            saved = manager.save(step, args=args)
            manager.wait_until_finished()
    except (ValueError, OSError) as error:  # tensorstore's write errors name the OS's code
        code = re.search(r"os_error_code='(\d+)'", str(error))
        if code is None or int(code.group(1)) not in _NAMED_WRITE_ERRORS:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(manager.directory)) from error
    if not saved:  # orbax's own policy declined the step: say so, never return as if saved
        raise ValueError(f"step: orbax declined to save step {step} in {manager.directory}")
    if jax.process_index() == 0:  # orbax has committed every process's files by now
        folder = _step_folder(manager, step)
        write_json(folder / _FILE_DIGESTS, {"step": step, "files": _file_digests(folder)})


def _step_folder(manager: ocp.CheckpointManager, step: int) -> Path:
    return Path(manager.directory) / str(step)  # orbax's default step names


def saved_config(directory: str | Path) -> Any:
    """The run configuration that the newest step in the checkpoint folder ``directory``
    records (its metadata's ``config``, ``{section: {field: value}}`` as written), read without
    orbax and without its checksums (a resume checks those), or ``None`` where none can be
    read: what ``train --resume`` of a run cut short (no ``config.json`` yet) starts from."""
    steps = [int(p.name) for p in Path(directory).glob("*") if p.name.isdigit() and p.is_dir()]
    if not steps:
        return None
    try:
        record = read_json(Path(directory) / str(max(steps)) / "metadata" / "metadata")
    except (OSError, ValueError):
        return None
    return record.get("config") if isinstance(record, dict) else None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _file_digests(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under ``folder`` (but the digests' own), by relative path."""
    return {
        path.relative_to(folder).as_posix(): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != _FILE_DIGESTS
    }


def _odd_entry(folder: Path) -> str | None:
    """Why an entry under the step ``folder`` is none that orbax writes, or ``None``: a pipe,
    device or socket (orbax's reader waited on a pipe forever), or a symbolic link that leads
    out of the step or to nothing. Looked for without following links or reading any file,
    in a step with :data:`_FILE_DIGESTS` or without."""
    inside = Path(os.path.realpath(folder))
    for root, folders, files in os.walk(folder):  # does not descend into linked folders
        for name in sorted([*folders, *files]):
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            # realpath, unlike Path.resolve, returns for a loop of links (then no regular file)
            if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(inside):
                return f"{relative} is a link out of the step"
            if not (path.is_file() or path.is_dir()):  # follows a link inside the step
                return f"{relative} is not a regular file"
    return None


def _file_damage(manager: ocp.CheckpointManager, step: int) -> tuple[str | None, Any]:
    """``(why, recorded_step)``: why ``step``'s files are not the ones :func:`save_checkpoint`
    wrote, or ``None`` (an entry no save writes, :func:`_odd_entry`, or files that differ from
    :data:`_FILE_DIGESTS`), and the step the digests record (another one for a folder renamed
    or copied from another run under a new number; the caller weighs it once the arrays are
    read). A step without the digests (saved before them, or cut short just before writing
    them) is otherwise left to orbax's reading and the array checksum."""
    folder = _step_folder(manager, step)
    odd = _odd_entry(folder)
    if odd is not None:
        return odd, None
    if not (folder / _FILE_DIGESTS).exists():
        return None, None
    try:  # an OSError (no permission to read it) is raised, naming the file: no damage
        recorded_step, files = _read_digests(folder)
    except (ValueError, KeyError, TypeError) as error:
        return f"unreadable file digests ({type(error).__name__})", None
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():  # missing, or a pipe that orbax would wait on
            return f"file {name} missing", recorded_step
        if _sha256(path) != digest:
            return f"file {name} changed", recorded_step
    return None, recorded_step


def _read_digests(folder: Path) -> tuple[Any, dict[str, str]]:
    """The step and the file digests that ``folder``'s :data:`_FILE_DIGESTS` records; raises
    ``ValueError``, ``KeyError`` or ``TypeError`` for a record that is not one, ``OSError``
    for one that cannot be read (permissions)."""
    record = read_json(check_file(folder / _FILE_DIGESTS, "file digest record"))
    return record["step"], dict(record["files"])


def _restore_intact(
    manager: ocp.CheckpointManager, step: int, like: Callable[[dict[str, Any]], Any]
) -> tuple[Any, dict[str, Any]] | str:
    """``(state, metadata)`` of ``step`` if it matches its checksums, else why not."""
    damage, recorded_step = _file_damage(manager, step)
    if damage is not None:
        return damage
    # A damaged file can make orbax or tensorstore raise almost anything (ValueError,
    # OSError, JSON and decompression errors): any error reading a step marks it damaged.
    try:
        metadata = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
        metadata = dict(metadata.metadata)
    except Exception as error:
        return f"unreadable metadata ({type(error).__name__})"
    recorded = metadata.pop("metadata_sha256", None)
    if recorded is None:
        return "no checksum recorded"
    if recorded != _json_sha256(metadata):
        return "metadata checksum mismatch"
    state_sha256 = metadata.pop("state_sha256")
    target = like(metadata)  # outside the try: a ValueError here is the caller's refusal
    # Another run's arrays are not damage: refused before orbax reads them. Its failed read
    # left tensorstore's reads calling back into a closed event loop, reported as unraisable
    # exceptions after the restore had returned (a flaky test under pytest).
    _check_saved_shapes(manager, step, target)
    try:
        with _orbax_threads_quiet():
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            )
    except Exception as error:
        return f"unreadable arrays ({type(error).__name__})"
    if recorded_step not in (None, step):  # this run's arrays, but another step's: damage
        return f"holds step {recorded_step}"
    if tree_sha256(restored.state) != state_sha256:
        return "array checksum mismatch"
    return restored.state, metadata


def _check_saved_shapes(manager: ocp.CheckpointManager, step: int, like: Any) -> None:
    """Refuse ``step`` when its arrays, as its readable metadata records them, have other
    shapes than ``like``'s: a run continued with a wider network, not a damaged step (it was
    deleted as one). Silent when the metadata cannot be read: that is damage."""
    # The handler's own reader: the manager's item_metadata knows the state's handler only
    # once a restore has run (before one, it returned None for every item).
    handler = ocp.StandardCheckpointHandler()
    try:
        saved = jax.tree.leaves(handler.metadata(_step_folder(manager, step) / "state").tree)
        saved_shapes = sorted(tuple(leaf.shape) for leaf in saved)
    except Exception:  # noqa: BLE001 - unreadable metadata: the step is damaged
        return
    finally:
        handler.close()
    shapes = sorted(tuple(np.shape(leaf)) for leaf in jax.tree.leaves(like))
    if saved_shapes != shapes:
        raise ValueError(
            f"{manager.directory}: step {step} holds arrays of other shapes than like's (a "
            "checkpoint of another model or run); restore it with the state it was saved "
            "from, or choose another folder"
        )


def _check_no_linked_steps(manager: ocp.CheckpointManager) -> None:
    """Refuse a step folder that is a symbolic link: not a checkpoint of the run, and deleting
    it as a damaged step failed on ``Cannot call rmtree on a symbolic link`` (a link is never
    followed, nor its target deleted)."""
    for step in manager.all_steps():
        folder = _step_folder(manager, step)
        if folder.is_symlink():
            raise ValueError(
                f"{folder}: a symbolic link, not a checkpoint step; remove the link (its "
                "target is left alone) and resume again"
            )


def _describe(damaged: dict[int, str]) -> str:
    return "; ".join(f"step {step}: {reason}" for step, reason in damaged.items())


def _check_manager(manager) -> None:
    """``TypeError`` unless ``manager`` is an orbax checkpoint manager: a path failed on
    ``'str' object has no attribute 'latest_step'``."""
    check_instance(
        "manager",
        manager,
        ocp.CheckpointManager,
        "an orbax CheckpointManager",
        remedy="open the folder with open_checkpoints(path)",
    )


def restore_checkpoint(
    manager: ocp.CheckpointManager, like: Callable[[dict[str, Any]], Any]
) -> tuple[int, Any, dict[str, Any]] | None:
    """Restore the newest intact checkpoint, or ``None`` if there is none.

    Steps are tried from the newest: a step is intact when its metadata and arrays match the
    checksums :func:`save_checkpoint` recorded. Damaged steps newer than the one restored are
    deleted (so that the resumed run can write those steps again), with a warning naming them
    and the step used.

    Args:
        manager: from :func:`open_checkpoints`.
        like: ``like(metadata)`` returns a pytree with the structure, dtypes and shardings of
            the saved ``state`` (the freshly initialised state of the same run); arrays are
            restored onto its shardings. Called with a step's verified metadata before its
            arrays are read, so it may also refuse the checkpoint by raising.

    Returns:
        ``(step, state, metadata)``, ``metadata`` as given to :func:`save_checkpoint`.

    Raises:
        ValueError: there are checkpoints, but none is intact; a step folder is a symbolic
            link; a step that cannot be restored into ``like`` holds arrays of other shapes,
            under its own number or another (not damage: nothing is deleted); or what
            ``like`` raises.
        TypeError: ``manager`` is not an orbax ``CheckpointManager`` (:func:`open_checkpoints`).
    """
    _check_manager(manager)
    _check_no_linked_steps(manager)
    damaged: dict[int, str] = {}  # step -> why it is not intact
    for step in sorted(manager.all_steps(), reverse=True):
        restored = _restore_intact(manager, step, like)
        if not isinstance(restored, str):
            break
        damaged[step] = restored
    else:
        if damaged:
            raise ValueError(
                f"{manager.directory}: no intact checkpoint ({_describe(damaged)}); delete the "
                "folder to start the run afresh"
            )
        return None
    if damaged:
        for damaged_step in damaged:
            manager.delete(damaged_step)
        warnings.warn(
            f"{manager.directory}: deleted damaged checkpoint(s) ({_describe(damaged)}); "
            f"resuming from step {step}, the newest intact one",
            stacklevel=2,
        )
    state, metadata = restored
    return step, state, metadata


def _model_class(name: str) -> type[eqx.Module]:
    """The class ``name`` recorded by :func:`save_model`: ``module:qualname``, or a bare
    :mod:`scorelab.models` name (files written before import paths were recorded)."""
    if not isinstance(name, str):  # an edited record: `"class": 3` was an AttributeError
        raise ValueError(f"model class {name!r} is not a 'module:Class' name")
    module_name, _, qualname = name.rpartition(":")
    try:
        cls = importlib.import_module(module_name or models.__name__)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"model class {name!r} cannot be imported ({error}); make the module that defines "
            "it importable (installed, or on PYTHONPATH)"
        ) from error
    if not (isinstance(cls, type) and issubclass(cls, eqx.Module)):
        raise ValueError(
            f"model class {name!r} is not an equinox.Module; the file was not written by save_model"
        )
    return cls


def _import_path(cls: type) -> str:
    """``module:qualname`` of ``cls``, checked to import ``cls`` itself in another process."""
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        where = "in __main__" if cls.__module__ == "__main__" else "inside a function"
        raise ValueError(
            f"model class {cls.__qualname__} is defined {where}, so load_model could not import "
            "it; define it at the top level of an importable module (a .py file on PYTHONPATH) "
            "and import it from there"
        )
    path = f"{cls.__module__}:{cls.__qualname__}"
    if _model_class(path) is not cls:
        raise ValueError(
            f"model class {path} imports another class than the model's (was its module "
            "reloaded?); save it from a fresh interpreter"
        )
    return path


def _is_record(value: Any) -> bool:
    """Whether a constructor argument is a nested model record ``{"class": ..., "kwargs": ...}``
    (a wrapper's network, e.g. :class:`scorelab.precond.EDMPreconditioned`'s)."""
    return isinstance(value, dict) and set(value) == {"class", "kwargs"}


_RECORD_NESTING = 16
"""The most model records a saved model's record may nest (a wrapper's network is one level):
300 wrappers deep built, then overflowed the stack when traced (a ``RecursionError``)."""


def _build(cls: type[eqx.Module], kwargs: dict[str, Any]) -> eqx.Module:
    """``cls(key=..., **kwargs)`` (``key`` only if the constructor takes one), each nested model
    record among ``kwargs`` built first the same way."""
    kwargs = {
        name: _build(_model_class(value["class"]), dict(value["kwargs"]))
        if _is_record(value)
        else value
        for name, value in kwargs.items()
    }
    if "key" in inspect.signature(cls).parameters:
        kwargs = {"key": jax.random.key(0), **kwargs}
    return cls(**kwargs)


def _skeleton(cls: type[eqx.Module], kwargs: dict[str, Any]) -> eqx.Module:
    """The structure of :func:`_build`'s network, traced, not run: a large network is not
    initialised just to be overwritten."""
    return eqx.filter_eval_shape(lambda: _build(cls, kwargs))


def _largest_leaves(skeleton: eqx.Module) -> int:
    """An upper bound on the bytes of ``skeleton``'s serialised leaves: 8 bytes an array
    element (the widest float it may be saved in) and 4 KiB a leaf for ``np.save``'s header
    (128 bytes for any shape a network has)."""
    leaves = jax.tree.leaves(skeleton)
    elements = sum(math.prod(leaf.shape) for leaf in leaves if _is_array(leaf))
    return 8 * elements + 4096 * len(leaves)


def _deserialise(leaves: bytes, skeleton: eqx.Module) -> eqx.Module:
    """The network from its serialised leaves, each array in the float width it was saved in.

    The skeleton's floats have JAX's default width, float64 under ``jax_enable_x64``: a
    network saved in float32 (every run ``scorelab`` trains without x64) was refused there as
    'changed dtype from float64 in `like` to float32 on disk'. One pass reads the leaves and
    their saved dtypes (as JAX canonicalises them: float64 is float32 without x64), and is the
    network when every dtype is the skeleton's; otherwise a second pass loads the floats in
    their saved widths, and its own check refuses any other difference, as before.
    """
    saved = []

    def read(handle, leaf):
        if not _is_array(leaf):
            return eqx.default_deserialise_filter_spec(handle, leaf)
        array = np.load(handle)
        saved.append(jax.dtypes.canonicalize_dtype(array.dtype))
        return jnp.asarray(array, leaf.dtype)  # the pass's own check wants the skeleton's

    loaded = eqx.tree_deserialise_leaves(io.BytesIO(leaves), skeleton, filter_spec=read)
    arrays = [leaf for leaf in jax.tree.leaves(skeleton) if _is_array(leaf)]
    if all(leaf.dtype == dtype for leaf, dtype in zip(arrays, saved, strict=True)):
        return loaded  # every dtype as in the skeleton: the first pass is the network
    widths = iter(saved)

    def as_saved(leaf):
        if not _is_array(leaf):
            return leaf
        dtype = next(widths)
        if jnp.issubdtype(leaf.dtype, jnp.floating) and jnp.issubdtype(dtype, jnp.floating):
            return jax.ShapeDtypeStruct(leaf.shape, dtype)
        return leaf

    like = jax.tree.map(as_saved, skeleton)
    return eqx.tree_deserialise_leaves(io.BytesIO(leaves), like)


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | jax.ShapeDtypeStruct)


def _signature(tree: Any) -> tuple:
    """Tree structure (static fields included) and the shapes and dtypes of the array leaves."""
    leaves = [(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape")]
    return jax.tree.structure(tree), leaves


def model_files(path: str | Path) -> tuple[Path, Path]:
    """The ``(leaves, record)`` files of a model saved at ``path``: ``<path>.eqx`` and
    ``<path>.json``; a ``path`` ending in ``.eqx`` or ``.json`` names the same pair. Any other
    suffix is part of the name: ``model.v1`` and ``model.v2`` were both ``model.eqx``, and the
    second save overwrote the first."""
    path = Path(path)
    if path.suffix in (".eqx", ".json"):
        return path.with_suffix(".eqx"), path.with_suffix(".json")
    return path.with_name(f"{path.name}.eqx"), path.with_name(f"{path.name}.json")


def save_model(path: str | Path, model: eqx.Module, **constructor_kwargs: Any) -> None:
    """Save an Equinox network so :func:`load_model` can rebuild it in another process.

    Writes ``<path>.eqx`` (the leaves, ``equinox.tree_serialise_leaves``), then ``<path>.json``
    (``{"class": "module:qualname", "kwargs": ..., "eqx_sha256": ...}``), each atomically;
    (:func:`model_files`: a suffix other than those is kept, ``model.v1`` writes
    ``model.v1.eqx``). A process killed between the two writes leaves a
    pair that :func:`load_model` refuses by the checksum, never a silently mixed model.

    Args:
        path: file stem, e.g. ``runs/demo/model``.
        model: an instance of an ``equinox.Module`` class defined at the top level of an
            importable module (:mod:`scorelab.models` or the user's own), rebuilt as
            ``cls(key=..., **constructor_kwargs)`` (without ``key`` if the constructor takes
            none).
        **constructor_kwargs: the JSON-serialisable arguments it was built with, other than
            ``key`` (e.g. ``dim=2, widths=(16, 16)``); a network passed to a wrapper is given
            as its own record ``{"class": "module:qualname", "kwargs": {...}}``, built first
            (e.g. ``network={"class": "scorelab.models:ConditionalMLP", "kwargs": {"dim": 2}},
            sigma_data=5.0`` for :class:`scorelab.precond.EDMPreconditioned`).

    Raises:
        TypeError: ``model`` is not an ``equinox.Module`` (a function, a dict of arrays).
        ValueError: the class is defined in ``__main__`` or inside a function (another process
            could not import it), the arguments hold ``key`` or a value JSON cannot hold, or,
            as read back from JSON, they do not rebuild a network of the same structure and
            shapes.
    """
    if not isinstance(model, eqx.Module):
        raise TypeError(
            f"model: expected an equinox.Module instance, got {type(model).__name__}; wrap "
            "a function or a table of arrays in an eqx.Module to save it"
        )
    if "key" in constructor_kwargs:
        raise ValueError(
            "key: not saved with the model (load_model builds it from key(0), then loads the "
            "saved weights); drop key from the arguments"
        )
    try:  # checked as load_model reads them back: tuples as lists, arrays as lists
        kwargs = json.loads(json.dumps(jsonable(constructor_kwargs), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"constructor_kwargs: not JSON-serialisable ({first_line(error)}); pass numbers, "
            "strings, lists, or a nested network's record {'class': ..., 'kwargs': ...}"
        ) from None
    leaves_file, record_file = model_files(path)
    cls = type(model)
    class_path = _import_path(cls)
    if _signature(_skeleton(cls, kwargs)) != _signature(model):
        raise ValueError(
            f"{cls.__name__}(**{constructor_kwargs}) does not rebuild the model being saved; "
            "pass the constructor arguments it was built with"
        )
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    leaves = buffer.getvalue()
    atomic_write(leaves_file, lambda handle: handle.write(leaves))
    spec = {
        "class": class_path,
        "kwargs": kwargs,
        "eqx_sha256": hashlib.sha256(leaves).hexdigest(),
    }
    write_json(record_file, spec)


def load_model(path: str | Path) -> eqx.Module:
    """Rebuild a network saved by :func:`save_model` from ``<path>.json`` and ``<path>.eqx``.

    Loading imports the module named in the JSON file, as unpickling would: load only files
    you trust.

    Args:
        path: the path given to :func:`save_model` (:func:`model_files`).

    Returns:
        The network, of the saved class, with its saved weights.

    Raises:
        FileNotFoundError: if either file is missing.
        ValueError: either is a folder or another special file, the JSON file is not a model
            record, the class cannot be imported or is not an ``equinox.Module``, the ``.eqx``
            file does not match the checksum in the JSON file, or its arrays do not fit the
            model the JSON file describes.
    """
    leaves_file, record_file = model_files(path)
    for file in (record_file, leaves_file):
        check_file(file, "saved model file", remedy="restore the file")
    try:
        spec = read_json(record_file)
        cls, kwargs = _model_class(spec["class"]), dict(spec["kwargs"])
    except (ValueError, KeyError, TypeError) as error:  # not JSON, or not a model record
        raise ValueError(
            f"{record_file}: not a model record written by save_model "
            f"({type(error).__name__}: {error}); save the model again"
        ) from error
    if nesting(spec) > 2 * _RECORD_NESTING + 1:  # a record and its kwargs, then a list
        raise ValueError(
            f"{record_file}: nests more than {_RECORD_NESTING} model records (wrappers of "
            "wrappers); restore the file or save the model again"
        )
    jax.devices()  # JAX's backend started here: its errors are not the files' (JAX_PLATFORMS)
    try:
        skeleton = _skeleton(cls, kwargs)
    except (ValueError, TypeError) as error:  # a constructor argument its class refuses
        raise ValueError(
            f"{record_file}: its arguments build no {spec['class']} "
            f"({first_line(error)}); restore the file or save the model again"
        ) from error
    size = leaves_file.stat().st_size  # read whole before the checksum: /dev/zero, 20 GB
    if size > _largest_leaves(skeleton):
        raise ValueError(
            f"{leaves_file}: {size} bytes, more than the {spec['class']} described in "
            f"{record_file.name} can hold (damaged, or another model's file); restore it or "
            "save the model again"
        )
    leaves = leaves_file.read_bytes()
    digest = hashlib.sha256(leaves).hexdigest()
    if spec.get("eqx_sha256", digest) != digest:  # files from before checksums have none
        raise ValueError(
            f"{leaves_file} does not match the checksum in "
            f"{record_file.name} (damaged, or an interrupted save); save the "
            "model again"
        )
    try:
        return _deserialise(leaves, skeleton)
    except (RuntimeError, ValueError, TypeError, EOFError) as error:
        message = first_line(error)
        raise ValueError(
            f"{leaves_file} does not fit the model {spec['class']} described in "
            f"{record_file.name} ({message}); the files do not belong together: "
            "save the model again"
        ) from error
