"""Run directories: claiming one, the manifest, JSON outputs, a trained run's model and config.

A run directory written by ``scorelab train`` holds::

    .lock            held by the process writing the run (prepare_run_dir)
    config.json      the ExperimentConfig
    manifest.json    config, seed, package versions, devices, time
    model.json/.eqx  the trained network (scorelab.checkpoints.save_model)
    losses.npy       the loss of every step
    checkpoints/     orbax checkpoints (resume)
    .scorelab-written  the names its jobs wrote, recorded as each finishes

A run directory cannot lose work: :func:`prepare_run_dir` locks it against a second process
and refuses to reuse one that holds a run unless told to resume or overwrite it (an overwrite
refuses files the run did not write: a user's notes, another command's output); every JSON
and model file is written atomically (:func:`atomic_write`), so a killed process leaves the
previous file whole; checkpoints carry checksums, and a resume falls back to the newest intact
one (:func:`scorelab.checkpoints.restore_checkpoint`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import filelock
import jax
import numpy as np

from scorelab._files import (
    atomic_write,
    file_above,
    read_json,
    resolved,
    resolves_into,
    write_json,
)
from scorelab._validate import check_file, check_instance, check_seed, first_line, in_file
from scorelab.checkpoints import load_model, saved_config
from scorelab.config import ConfigError, ExperimentConfig
from scorelab.data import DataError, read_npy
from scorelab.distributed import is_primary, primary_value

__all__ = [
    "RunBusyError",
    "RunExistsError",
    "prepare_run_dir",
    "is_run",
    "has_checkpoints",
    "package_versions",
    "manifest",
    "atomic_write",
    "write_json",
    "read_json",
    "load_run",
    "resumed_config",
    "read_losses",
    "stored_outputs",
    "settle",
    "busy",
    "check_not_busy",
    "busy_run_around",
    "replaced_run",
    "locked",
]

_LOCK = ".lock"
_MANIFEST = "manifest.json"
_REPLACED = ".scorelab-replaced"  # the run an overwrite replaces, until the new one has work
_MOVED = ".moved"  # in _REPLACED once every entry is in it: the new job may begin
_DROPPED = ".scorelab-dropped"  # a replaced run being deleted, out of _REPLACED's way
_WRITTEN = ".scorelab-written"  # the names the run's jobs wrote, a JSON list
_OWN = (_LOCK, _REPLACED, _DROPPED, _WRITTEN)  # the claim's own entries: no part of a run
_DERIVED = ("figures",)  # written into a run by other commands (plot), replaced with it
_ORBAX_TEMPORARY = ".orbax-checkpoint-tmp"  # in the name of a save that never completed


class RunBusyError(ValueError):
    """Another process holds the run directory: it is training or writing into it."""


class RunExistsError(ValueError):
    """The run directory is not empty, and neither resuming nor overwriting it was asked for
    (or, for ``overwrite``, it does not hold a scorelab run)."""


@contextlib.contextmanager
def prepare_run_dir(
    path: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    job: str | None = None,
) -> Iterator[Path]:
    """Claim ``path`` for a run: lock it for this process and check what it holds.

    The lock is an OS file lock on ``<path>/.lock`` (``filelock``), released on leaving the
    ``with`` block or when the process dies, even by ``SIGKILL``. With the lock held:

    - an empty (or new) folder is used, and marked as a run at once by a provisional
      ``manifest.json`` (:func:`manifest` with ``provisional: true``; the job writes the full
      one when it finishes), so that a job killed half way leaves a folder that ``overwrite``
      may clear; a job that fails with nothing else written removes it again;
    - a folder holding a run (:func:`is_run`) is refused unless ``resume`` (the caller
      continues it, e.g. ``train(..., resume=True)``) or ``overwrite``: its contents are moved
      aside (``.scorelab-replaced/``, :func:`replaced_run`) and deleted when the job
      completes. A job that fails (a full disk, an interrupt) before it has written anything
      but its provisional manifest puts them back; one that fails later leaves them aside
      beside its own work until a ``resume`` of it completes (a second ``overwrite`` deletes
      the unfinished run, not the one aside); a job killed outright, even half way through
      the move, is settled the same way by the next claim (or :func:`settle`);
    - any other non-empty folder is refused: ``overwrite`` deletes only a scorelab run, known
      by its manifest, never a folder that merely holds a ``config.json`` (a diffusers model
      does); ``resume`` also takes a folder of ``checkpoints`` without one (a run killed
      before provisional manifests were written).

    Args:
        path: the run directory (``scorelab train --out``); created if missing.
        resume: the caller will continue the run in ``path``.
        overwrite: delete the run in ``path`` and start afresh.
        job: the command writing the run (``"train"``, ``"demo"``, ``"sweep"``), recorded in
            its manifests: a run of another job is refused, never resumed or deleted (a
            ``train --out DEMO --overwrite`` deleted a whole demo).
        inputs: the files the job reads (its configuration, data, a model): ``overwrite``
            refuses to delete a run that holds one of them.

    In a multi-process JAX job (:mod:`scorelab.distributed`), process 0 does all this and
    the others wait for its outcome: they go on with ``path`` (unlocked: they write only what
    all processes write together, such as orbax checkpoints) or raise its refusal too.

    Yields:
        ``path`` as a :class:`~pathlib.Path`, locked until the block exits.

    Raises:
        ValueError: both ``resume`` and ``overwrite``, ``path`` is a file, lies under a file or
            cannot be created (:func:`make_folder`).
        RunBusyError: another process holds the lock.
        RunExistsError: ``path`` is not empty and may not be reused (see above).
    """
    path = Path(path)
    if not is_primary():
        # In a multi-process job process 0 claims the folder; the others go on once it has (an
        # overwrite's deletion done), and share its refusal rather than wait in a collective.
        if not primary_value(False):
            raise ValueError(f"run directory {path}: refused by process 0 (its message says why)")
        yield path
        return
    try:
        lock = _claim(path, resume, overwrite, inputs, job)
    except Exception:
        primary_value(False)
        raise
    primary_value(True)
    try:
        before = _names(path)
        # a resumed run of unknown history (no record): everything in it counts as the run's
        kept = (_written(path) or before) if resume else set()
        yield path
    except BaseException:
        _tidy(path)
        raise
    else:
        _settle_replaced(path, finished=True)
        after = _names(path)
        record = (kept | (after - before)) & after
        if record and is_run(path):
            write_json(path / _WRITTEN, sorted(record))
    finally:
        lock.release()


def _names(path: Path) -> set[str]:
    """The names in the run folder ``path``, the claim's own entries left out."""
    return {entry.name for entry in path.iterdir() if entry.name not in _OWN}


def _written(path: Path) -> set[str] | None:
    """The names the jobs of the run in ``path`` wrote, as they recorded them when they
    finished; ``None`` when none did (a run written before they were recorded, or never
    finished)."""
    try:
        names = read_json(path / _WRITTEN)
    except (OSError, ValueError):
        return None
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        return None
    return set(names)


RUN_FILES = ("model.eqx", "model.json", "losses.npy", "config.json", "manifest.json")
"""The files a training run writes into its folder when it ends (besides ``checkpoints/``)."""


def _own(path: Path) -> set[str] | None:
    """The names that are the run's own in the run folder ``path``: :data:`RUN_FILES` and the
    names its jobs recorded writing (:func:`_written`), ``None`` without a record. The one
    answer to both questions: which entries an ``--overwrite`` may delete (these and
    :data:`_DERIVED`) and which no command's output may replace (these less
    :data:`_DERIVED`, which other commands write)."""
    written = _written(path)
    return None if written is None else {*RUN_FILES, *written}


def inside(item: Path, folder: Path) -> bool:
    """Whether ``item`` lies in ``folder`` (or is it), as written or with links resolved."""
    written = Path(os.path.abspath(item)).is_relative_to(os.path.abspath(folder))
    return written or resolves_into(item, folder)


def owning_run(path: str | os.PathLike, read: Path | None = None) -> Path | None:
    """The run directory of which ``path`` is a file (one of :data:`RUN_FILES` or of the names
    its jobs recorded writing, a demo's ``demo.json`` or a sweep's ``sweep.json``; or its
    ``checkpoints/`` or anything under it), as written or with links resolved, or ``None``: a
    place no command's output may take, whichever run the command reads (``evaluate --json
    RUN/config.json --overwrite`` replaced a run's configuration with metrics).

    ``read``, the run the command reads, counts as a run even when damaged (no manifest).
    """
    for candidate in (Path(path), resolved(path)):
        own = (_own(candidate.parent) or set(RUN_FILES)) - set(_DERIVED)
        if candidate.name in own and _holds_run(candidate.parent, read):
            return candidate.parent
        for folder in (candidate, *candidate.parents):
            if folder.name == "checkpoints" and _holds_run(folder.parent, read):
                return folder.parent
    return None


def enclosing_run(path: str | os.PathLike, read: Path | None = None) -> Path | None:
    """The run directory ``path`` lies in (below it, at any depth), as written or with links
    resolved, or ``None``; ``read`` counts as a run as in :func:`owning_run`. A folder written
    there (an exported pipeline) would go with the run's ``--overwrite``."""
    for candidate in (Path(path), resolved(path)):
        run = next((f for f in candidate.parents if _holds_run(f, read)), None)
        if run is not None:
            return run
    return None


def _holds_run(folder: Path, read: Path | None) -> bool:
    """Whether ``folder`` holds a run (:func:`is_run`), or one whose manifest is lost (its
    ``config.json`` beside a saved model or ``checkpoints/``: ``evaluate --json
    RUN/config.json --overwrite`` replaced such a run's configuration), or is ``read``, the
    run a command reads, which counts even when damaged."""
    same = read is not None and inside(folder, read) and inside(read, folder)
    lost = (folder / "config.json").is_file() and (
        (folder / "model.json").is_file() or (folder / "checkpoints").is_dir()
    )
    return same or lost or is_run(folder)


def _unclaim(path: Path) -> None:
    """After a job failed, or was killed before it wrote anything (the kernel's out-of-memory
    killer, SIGKILL, a power cut: found by the next claim): leave the folder empty again if it
    holds nothing but the provisional manifest (and training's still empty ``checkpoints/``),
    so that the same command, corrected, may use it without ``--overwrite``. A checkpoint save
    that never completed (orbax's temporary folder, left by a full disk) is removed first: it
    holds no step and keeps the disk full."""
    entries = {entry.name: entry for entry in path.iterdir() if entry.name not in _OWN}
    checkpoints = entries.pop("checkpoints", None)
    if checkpoints is not None and checkpoints.is_dir() and not checkpoints.is_symlink():
        for step in checkpoints.iterdir():
            if _ORBAX_TEMPORARY in step.name and step.is_dir() and not step.is_symlink():
                shutil.rmtree(step, ignore_errors=True)
    if list(entries) != [_MANIFEST]:
        return
    if checkpoints is not None and (
        checkpoints.is_symlink() or not checkpoints.is_dir() or any(checkpoints.iterdir())
    ):
        return
    with contextlib.suppress(OSError, ValueError):
        record = read_json(path / _MANIFEST)  # a user's file of that name may be anything
        if isinstance(record, dict) and record.get("provisional") is True and is_run(path):
            (path / _MANIFEST).unlink()
            if checkpoints is not None:
                checkpoints.rmdir()


def _set_aside(path: Path, entries: list[Path]) -> None:
    """Move a replaced run's ``entries`` into ``path/.scorelab-replaced``, marked complete
    (``.moved``) once all are there: a move cut short has no mark, and is undone."""
    aside = path / _REPLACED
    aside.mkdir()
    record = [path / _WRITTEN] if (path / _WRITTEN).exists() else []  # it goes with its run
    for entry in [*entries, *record]:
        os.rename(entry, aside / entry.name)
    (aside / _MOVED).touch()


def _settle_replaced(path: Path, finished: bool = False) -> None:
    """The run an overwrite moved aside, put back when ``path`` holds no work of the new run
    (:func:`_holds_work`: the replacing job failed before writing anything) or the move (or a
    restore) was cut short, kept aside while the new run holds work but has not ``finished``
    (an interrupted ``demo --overwrite`` had deleted the old demo), and deleted once it has;
    each step leaves a state the next call settles the same way (a kill at any point loses
    nothing)."""
    dropped = path / _DROPPED
    if dropped.is_dir() and not dropped.is_symlink():
        _delete_dropped(dropped)
    aside = path / _REPLACED
    if not aside.is_dir() or aside.is_symlink():
        return
    complete = (aside / _MOVED).is_file()
    if complete and finished:  # the new run is complete
        _drop(path, aside)
        return
    if complete and _holds_work(path, aside):  # unfinished, kept (and the old run aside)
        return
    (aside / _MOVED).unlink(missing_ok=True)  # a restore cut short is finished next time
    for entry in aside.iterdir():
        os.rename(entry, path / entry.name)
    aside.rmdir()


def _replacing_names(aside: Path) -> set[str]:
    """The names the job replacing the run moved to ``aside`` writes: that run's own
    (:func:`_own`; the same job, a claim refuses another) and its checkpoints."""
    return (_own(aside) or set(RUN_FILES)) | {"checkpoints"}


def _holds_work(path: Path, aside: Path) -> bool:
    """Whether the run folder ``path`` holds work of the job replacing the run in ``aside``:
    an entry of the names it writes (:func:`_replacing_names`) other than its provisional
    manifest and an empty ``checkpoints/``. A user's file written into the folder meanwhile
    (``sample --out RUN/mine.npy``) is none: it kept the old run aside, which the next
    ``--overwrite`` deleted with the file."""
    names = _replacing_names(aside) - {_MANIFEST}
    for entry in path.iterdir():
        if entry.name not in names:
            continue
        empty = entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir())
        if not (entry.name == "checkpoints" and empty):
            return True
    return False


def _drop(path: Path, *entries: Path) -> None:
    """Delete ``entries`` of the run folder ``path``: moved into ``path/.scorelab-dropped``
    first, out of the way at once (a half-deleted run is never taken for a whole one), which
    the next claim deletes if a kill cuts this short."""
    dropped = path / _DROPPED
    dropped.mkdir(exist_ok=True)
    # a folder of its own: an earlier drop's files that could not be deleted may hold the names
    batch = Path(tempfile.mkdtemp(dir=dropped))
    for entry in entries:
        os.rename(entry, batch / entry.name)
    _delete_dropped(dropped)


def _delete_dropped(dropped: Path) -> None:
    """Delete ``dropped``, a replaced run's files out of the way; what cannot be deleted (a
    file in another user's folder) is left, with a warning naming the folder: the new run is
    whole, and a later claim tries again. A failure here ended a finished ``--overwrite`` as an
    error and refused every later claim of the folder (pass 22, #2)."""
    shutil.rmtree(dropped, ignore_errors=True)
    if dropped.exists():
        warnings.warn(
            f"{dropped}: the replaced run's files could not all be deleted (no permission to "
            "delete some); the run is whole: delete that folder yourself",
            stacklevel=2,
        )


def replaced_run(path: str | os.PathLike) -> Path | None:
    """The folder in the run directory ``path`` where the run an ``overwrite`` replaces waits
    until the new run finishes (:func:`prepare_run_dir`), or ``None`` when none waits."""
    aside = Path(path) / _REPLACED
    return aside if (aside / _MOVED).is_file() and not aside.is_symlink() else None


def _tidy(path: Path) -> None:
    """With the lock held: what a failed or killed job left, cleared (:func:`_unclaim`), and
    a run it was replacing put back or dropped (:func:`_settle_replaced`)."""
    _unclaim(path)
    _settle_replaced(path)


def _run_lock(path: Path) -> filelock.FileLock:
    """The run lock of ``path``, an OS file lock on ``path/.lock``: one object for the folder in
    this process, however it is spelled (links resolved), whose ``is_locked`` says whether this
    process holds it."""
    return filelock.FileLock(resolved(path) / _LOCK, is_singleton=True, thread_local=False)


def _try_lock(path: Path) -> filelock.FileLock | None:
    """The run lock of ``path`` (:func:`_run_lock`), acquired, or ``None`` when another process
    holds it, or this one does (a second hold of a run fails as another process's would)."""
    lock = _run_lock(path)
    if lock.is_locked:
        return None
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return None
    return lock


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of the run in ``path`` (the one :func:`prepare_run_dir` takes) while
    writing into it, e.g. its figures: ``plot`` wrote them into a run that a failing
    ``--overwrite`` was replacing, which then took them for the new run's work.

    Raises:
        RunBusyError: another process holds the run (training it, or replacing it).
        ValueError: the folder cannot be written (read-only), naming ``plot --out``.
    """
    path = Path(path)
    try:
        lock = _try_lock(path)
    except OSError as error:  # named the lock file, an internal name, and no other way
        raise ValueError(
            f"{path}: cannot write into the run folder ({error.strerror or error}); write the "
            "figures elsewhere (plot --out DIR)"
        ) from None
    if lock is None:
        raise _busy_error(path)
    try:
        yield path
    finally:
        lock.release()


def busy(path: str | os.PathLike) -> bool:
    """Whether another process holds the run in ``path`` (training it, or replacing it): its
    lock taken, and released at once, by this one fails. ``False`` for a folder never claimed
    (no lock file), held by this process itself (a second lock of it fails too), or that this
    process cannot lock (read-only): the other checks name those."""
    if not (Path(path) / _LOCK).is_file():  # never claimed: no lock file made in a stranger's
        return False
    if _run_lock(Path(path)).is_locked:  # this process's own (plot reads the run it locked)
        return False
    try:
        lock = _try_lock(Path(path))
    except OSError:
        return False
    if lock:
        lock.release()
    return lock is None


def busy_run_around(path: str | os.PathLike) -> Path | None:
    """The folder above ``path`` (as written or with links resolved) that another process
    holds as a run (:func:`busy`), or ``None``. A file written there while that job runs
    would be recorded as the job's work when it finishes, and deleted with the run by its next
    ``--overwrite``."""
    for candidate in (Path(os.path.abspath(path)), resolved(path)):
        held = next((folder for folder in candidate.parents if busy(folder)), None)
        if held is not None:
            return held
    return None


def check_not_busy(path: str | os.PathLike) -> None:
    """Raise :class:`RunBusyError` when another process holds the run in ``path``
    (:func:`busy`): a run that is being written has no configuration or checkpoint yet, and
    ``train --resume`` said "no checkpoint ... replace the run with --overwrite instead"."""
    if busy(path):
        raise _busy_error(path)


def _busy_error(path) -> RunBusyError:
    return RunBusyError(
        f"run directory {path} is in use by another process (training or replacing it); "
        "wait for it to finish"
    )


def settle(path: str | os.PathLike) -> None:
    """Finish what a job killed while replacing the run in ``path`` left (see
    :func:`prepare_run_dir`): put the old run back, or delete it when the new one holds work.
    Nothing when another process holds the folder, or there is nothing to settle; a claim
    does this itself, this is for a check made before one (``train --resume`` looks for
    checkpoints first)."""
    path = Path(path)
    if not (path / _REPLACED).is_dir() and not (path / _DROPPED).is_dir():
        return
    lock = _try_lock(path)
    if lock is None:
        return
    try:
        _tidy(path)
    finally:
        lock.release()


def _claim(
    path: Path, resume: bool, overwrite: bool, inputs: Sequence = (), job: str | None = None
) -> filelock.FileLock:
    """:func:`prepare_run_dir`'s checks; the lock, acquired, when they pass."""
    if resume and overwrite:
        raise ValueError(f"{path}: resume and overwrite exclude each other; choose one")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a run directory; choose another output path")
    make_folder(path, "choose another output path")
    fresh = not (path / _LOCK).exists()  # a stranger's folder gets no lock file left in it
    foreign = False
    lock = _try_lock(path)
    if lock is None:
        raise RunBusyError(
            f"run directory {path} is in use by another process; wait for it to finish, or "
            "choose another output path"
        )
    try:
        # The lock is ours: a provisional manifest alone is a dead job's, and a run it was
        # replacing is put back.
        _tidy(path)
        entries = [entry for entry in path.iterdir() if entry.name not in _OWN]
        # A checkpoints folder, even empty, marks a run killed before its manifest, not a
        # stranger's folder (whether it has steps to resume is train_run's check).
        resumable_run = resume and (path / "checkpoints").is_dir()
        if entries and not (is_run(path) or resumable_run):
            foreign = True  # no claim of this folder can pass: its lock file can go
            raise RunExistsError(
                f"{path} is not empty and holds no scorelab run (no scorelab {_MANIFEST}); "
                "choose an empty or new output path"
            )
        theirs = _job(path) if entries else None
        if job is not None and theirs is not None and theirs != job:
            raise RunExistsError(
                f"{path} holds a scorelab {theirs} run, not a {job} run; choose another output "
                "path (this command neither resumes nor replaces it)"
            )
        if entries and not (resume or overwrite):
            raise RunExistsError(
                f"{path} already holds a run; resume it (--resume), replace it (--overwrite), "
                "or choose another output path"
            )
        if entries and resume:  # a run file linked out of the run: its target rewritten
            linked = [
                entry
                for entry in entries
                if entry.name in (*RUN_FILES, "checkpoints")
                and entry.is_symlink()
                and not resolves_into(entry, path)
            ]
            if linked:
                raise RunExistsError(
                    f"{linked[0]}: a link to {resolved(linked[0])}, outside the run, which "
                    "--resume would write through; put the file itself in the run, or choose "
                    "another output path"
                )
        if entries and overwrite:
            # `train --data RUN/points.npy --out RUN --overwrite` deleted the data it had just
            # read (and a --config file kept in the run, a --run model swept into itself).
            for item in inputs:
                if inside(Path(item), path):
                    raise RunExistsError(
                        f"{path}: --overwrite would delete {item}, which this command reads; "
                        "move it out of the run directory, or choose another output path"
                    )
            # `sample --out RUN/mine.npy` or a user's notes went with the run without a word.
            own = _own(path)
            aside = replaced_run(path)
            if own is None and aside is not None:  # an unfinished replacement: no record yet
                own = _replacing_names(aside)
            if own is not None:
                foreign = sorted(e.name for e in entries if e.name not in {*own, *_DERIVED})
                if foreign:
                    more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
                    them = "it" if len(foreign) == 1 else "them"
                    raise RunExistsError(
                        f"{path}: --overwrite would delete {', '.join(foreign[:3])}{more}, "
                        f"which the run did not write; move {them} "
                        "out of the run directory, or choose another output path"
                    )
            if aside is None:
                _set_aside(path, entries)  # kept until the new run ends (_settle_replaced)
            else:  # an unfinished replacement, itself replaced: the run it replaced waits on
                (path / _WRITTEN).unlink(missing_ok=True)
                _drop(path, *entries)
        if not entries:  # a record a job that never finished left: no run's
            (path / _WRITTEN).unlink(missing_ok=True)
        if not entries or overwrite:
            write_json(path / _MANIFEST, manifest(None, provisional=True, job=job))
    except BaseException:
        try:  # a full disk for the provisional manifest: the replaced run is put back
            _tidy(path)
        finally:
            lock.release()
            if fresh and foreign:
                (path / _LOCK).unlink(missing_ok=True)
        raise
    return lock


def make_folder(path: str | os.PathLike, remedy: str) -> Path:
    """Create the folder ``path`` (and its parents) unless it exists.

    Raises:
        ValueError: ending with ``remedy``, for a path that is a file, a link to nothing, lies
            under a file, or cannot be created (no permission, a read-only or virtual file
            system such as ``/proc``), instead of the OSError naming none of this.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder; {remedy}")
    if path.is_symlink() and not path.exists():  # was "cannot create the folder (File exists)"
        raise ValueError(
            f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; {remedy}"
        )
    if (parent := file_above(path)) is not None:
        raise ValueError(f"{path}: a folder inside the file {parent}; {remedy}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"{path}: cannot create the folder ({error.strerror or error}); {remedy}"
        ) from None
    return path


def check_output_folder(path: str | os.PathLike, job: str, outputs: Sequence[str]) -> None:
    """Refuse, before any work, a folder for the outputs of ``job`` (``"demo"``) that holds
    something else: a scorelab run of another job (a training run's manifest and model were
    replaced, its folder mixed with the demo's files), or files that are neither a run nor
    ``job``'s ``outputs`` (names it writes). A folder of ``job``'s own (rerun or resumed), an
    empty or a new one passes. The command line claims the folder first
    (:func:`prepare_run_dir`), whose provisional manifest names ``job``.

    Raises:
        ValueError: for a path that is a file.
        RunExistsError: for a folder that holds another job's run or foreign files.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder; choose another output path")
    if not path.is_dir():
        return
    entries = [entry.name for entry in path.iterdir() if entry.name not in _OWN]
    if is_run(path):
        theirs = _job(path)
        if theirs != job:
            raise RunExistsError(
                f"{path} holds a scorelab {theirs or 'training'} run, not a {job} run; choose "
                "another output path"
            )
        return
    foreign = sorted(set(entries) - set(outputs) - {_MANIFEST})
    if foreign:
        raise RunExistsError(
            f"{path} is not empty ({foreign[0]}) and holds no scorelab {job} run; choose an "
            "empty or new output path"
        )


def demo_settings(run_dir: str | os.PathLike, settings_class: type, job: str = "demo"):
    """The settings of a demo's output folder, ``settings_class.from_dict`` of its
    ``demo.json``, or an error naming what ``run_dir`` is instead.

    Raises:
        ValueError: for a training run (naming :func:`scorelab.workflows.plot_run`), a
            folder without ``demo.json``, or a ``demo.json`` that holds no such settings
            (naming it).
        FileNotFoundError: for a path where nothing is.
    """
    run_dir = Path(run_dir)
    path = run_dir / "demo.json"
    if path.is_file():
        record = read_json(path)  # its errors name the file already
        with in_file(path, remedy=f"restore the file or run the {job} again"):
            return settings_class.from_dict(record)  # "demo: expected a table of fields, ..."
    job = f"{'an' if job[:1] in 'aeiou' else 'a'} {job}"
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir}: no such folder; give the output folder of {job}")
    if (run_dir / "config.json").is_file():
        raise ValueError(
            f"{run_dir}: not the output of {job} (no demo.json); it is a training run: plot it "
            "with scorelab.workflows.plot_run (scorelab plot)"
        )
    raise ValueError(f"{run_dir}: not the output of {job} (no demo.json); give the folder it wrote")


def _job(path: Path) -> str | None:
    """The job recorded in the manifest of the run in ``path`` (``None``: none recorded, as in
    runs written before jobs were, or no readable manifest)."""
    try:
        record = read_json(path / _MANIFEST)
    except (OSError, ValueError):
        return None
    return record.get("job") if isinstance(record, dict) else None


def has_checkpoints(path: str | os.PathLike) -> bool:
    """Whether the run directory ``path`` holds training checkpoints, which a resumed
    :func:`scorelab.workflows.train_run` continues (an interrupted run's, or a finished one's):
    a step folder in its ``checkpoints`` folder. An empty one was enough, and a finished run
    whose steps were deleted was trained again from step 0 over its model."""
    folder = Path(path) / "checkpoints"
    return folder.is_dir() and any(
        entry.name.isdigit() and entry.is_dir() for entry in folder.iterdir()
    )


def is_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a scorelab run: a ``manifest.json`` that is a JSON object whose
    ``versions`` name scorelab (:func:`manifest`)."""
    try:
        record = read_json(Path(path) / _MANIFEST)
    except (OSError, ValueError):
        return False
    versions = record.get("versions") if isinstance(record, dict) else None
    return isinstance(versions, dict) and "scorelab" in versions


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


def _commit() -> str | None:
    """The git commit of scorelab's source, when it runs from a checkout (``-dirty`` if edited)."""
    source = Path(__file__).resolve().parent
    try:
        described = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return described.stdout.strip() or None if described.returncode == 0 else None


def _cpu() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def named_key(seed: int, name: str) -> jax.Array:
    """A key named for what it draws: ``fold_in(key(seed), crc32(name))``.

    The demos derive every draw (data, initialisation, each sampler's chains) this way, so adding
    or removing one draw leaves the others' numbers unchanged. The whole name is hashed: names
    that differ anywhere get different keys (up to CRC-32 collisions, which the demos' own name
    sets are tested against).

    Raises:
        ValueError: for a seed that is not an integer in ``[0, 2**32 - 1]`` (``key`` keeps
            only a seed's low 32 bits: ``2**32`` drew seed 0's numbers).
        TypeError: for a ``name`` that is not a string.
    """
    check_seed("seed", seed)
    check_instance("name", name, str, "a string naming the draw")
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()))


def manifest(config: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """The record that makes a run's outputs reproducible and comparable.

    The configuration (seeds included), the package versions, scorelab's commit, the command
    line, the devices (of every process) and the number of processes, the CPU model and core
    count, the platform and the time; callers add the wall time and what else they measured.
    Numbers that depend on the machine (timings, and float results where the CPU's vector
    units change the rounding) are read with it.

    Args:
        config: the run's configuration (JSON-serialisable); its seeds are part of it. ``None``
            in the provisional manifest :func:`prepare_run_dir` writes.
        **extra: more JSON-serialisable fields (grids, NFE, ``wall_seconds``).
    """
    return {
        "config": config,
        "versions": package_versions(),
        "commit": _commit(),
        "command": sys.argv,
        "devices": [str(device) for device in jax.devices()],
        "processes": jax.process_count(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def load_run(run_dir) -> tuple[ExperimentConfig, Any]:
    """The configuration and trained model of a run directory written by ``scorelab train``.

    Args:
        run_dir: the ``--out`` folder of ``scorelab train`` (``config.json``, ``model.json``,
            ``model.eqx``).

    Returns:
        ``(config, model)``: the :class:`scorelab.config.ExperimentConfig` and the network.

    The two records must describe one network: every constructor argument ``model.json``
    holds that names a ``[model]`` or ``[loss]`` field of ``config.json`` has that field's
    value, and the model's input (``image_shape``, or ``dim`` for the MLPs) is the shape of
    one example of the configured data. Otherwise a hand-edited or mixed-up ``config.json``
    would be sampled silently, e.g. a U-Net trained on 8x8 images run on 16x16 states.

    Raises:
        FileNotFoundError: naming the missing file.
        ConfigError: ``config.json`` is not a valid configuration, or it and ``model.json``
            disagree, naming the file and the field.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        settle(run_dir)  # a replacement killed outright: the run it was replacing comes back
    if not config_path.exists():
        raise _not_a_run(run_dir)
    check_file(config_path, "run configuration", ConfigError, "restore it or train again")
    record = read_json(config_path)
    with in_file(config_path, ConfigError, "restore the file or train again"):  # edited, foreign
        config = ExperimentConfig.from_dict(record)
    model = load_model(run_dir / "model")
    _check_record(run_dir, config, read_json(run_dir / "model.json"))
    return config, model


def resumed_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The configuration a resume of the run ``run_dir`` continues: its ``config.json`` (a
    finished run's), else the one its newest checkpoint records
    (:func:`scorelab.checkpoints.saved_config`: a run cut short writes ``config.json`` at its
    end), so that ``train --out R --resume`` continues R and ``--steps 2000`` extends it (it
    was refused, listing every field R's own command line had set: pass 23, #7). ``None``
    without either, or for a record that is not ``{section: {field: value}}``, which the
    resume's own checks then name."""
    path = Path(run_dir) / "config.json"
    try:
        record = read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        record = None
    tables = lambda r: isinstance(r, dict) and all(isinstance(v, dict) for v in r.values())  # noqa: E731
    if not tables(record):  # the checkpoints are read only then
        record = saved_config(Path(run_dir) / "checkpoints")
    return record if tables(record) else None


def _not_a_run(run_dir: Path) -> Exception:
    """The error for a folder without ``config.json``: the outputs of ``scorelab sweep`` and
    ``scorelab demo`` are named as such (a demo's trained models are runs of their own)."""
    if busy(run_dir):  # training, not yet written: "check the path and the disk"
        return _busy_error(run_dir)
    if (run_dir / "sweep.json").is_file():
        return ValueError(
            f"{run_dir}: a sampler map (sweep.json), not a training run; its figure is "
            f"{run_dir / 'sampler_map.png'}, and a run is the --out of scorelab train"
        )
    models = run_dir / "models"
    runs = (
        sorted(p for p in models.iterdir() if (p / "config.json").is_file())
        if models.is_dir()
        else []
    )
    if runs:
        return ValueError(
            f"{run_dir}: a demo's output, not a training run; its trained models are runs: "
            + ", ".join(str(p) for p in runs)
        )
    if any((run_dir / name).exists() for name in ("model.json", "model.eqx")):
        # A trained model without its configuration was called an unfinished run.
        return ConfigError(
            f"{run_dir / 'config.json'}: missing beside the run's trained model; restore it "
            '(manifest.json keeps a copy under "config") or train again'
        )
    if has_checkpoints(run_dir):  # "check the path and the disk" sent users to a good run
        return ValueError(
            f"{run_dir}: an unfinished training run (checkpoints, no model yet); finish it with "
            "scorelab train --resume (its settings, --out this folder)"
        )
    return FileNotFoundError(f"not a scorelab run directory (no config.json): {run_dir}")


def read_losses(run_dir) -> np.ndarray:
    """The loss history ``losses.npy`` of a run directory: one number per training step.

    Raises:
        DataError: naming the file and the remedy, when it is missing, damaged, or anything
            but a non-empty 1-D array of numbers.
    """
    path = Path(run_dir) / "losses.npy"
    remedy = "restore it, or rerun the training with --resume (it writes the history again)"
    if not path.exists():  # read_npy said "data file not found ... check the path and the disk"
        raise DataError(f"{path}: the run's loss history is missing; {remedy}")
    check_file(path, "loss history", DataError, remedy)  # a folder or a pipe, with the fix
    try:
        history = read_npy(path)
    except DataError as error:  # a damaged file: read_npy names what is wrong, not the fix
        raise DataError(f"{first_line(error)}; {remedy}") from None
    if history.ndim != 1 or history.size == 0 or history.dtype.kind not in "iuf":
        raise DataError(
            f"{path}: not a loss history (a 1-D array of numbers, one per step), got "
            f"{history.dtype} of shape {history.shape}; restore it or train the run again"
        )
    if not np.isfinite(history).any():  # training stops at a non-finite loss: damage
        raise DataError(f"{path}: holds no finite loss (damaged); {remedy}")
    return history


@contextlib.contextmanager
def stored_outputs(run_dir: str | os.PathLike, job: str) -> Iterator[None]:
    """Name the output folder ``run_dir`` of ``job`` as damaged when what its stored files
    (``metrics.json``, ``samples.npz``) hold is not what ``job`` wrote: a missing key or
    array, a value of another type (``plot`` said "internal error (a bug in scorelab)")."""
    try:
        yield
    except (KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{run_dir}: its metrics.json or samples.npz is not what {job} wrote "
            f"({type(error).__name__}: {first_line(error)}); the folder is damaged: run "
            f"{job} again (--overwrite)"
        ) from error


def _record_arguments(record: dict) -> Iterator[tuple[str, Any]]:
    """The constructor arguments of a :func:`scorelab.checkpoints.save_model` record, nested
    records (a preconditioned network's ``network``) included."""
    for name, value in record["kwargs"].items():
        if isinstance(value, dict) and "class" in value and "kwargs" in value:
            yield from _record_arguments(value)
        else:
            yield name, value


def _plain(value):
    """A recorded value as JSON reads it back: a tuple is a list."""
    return list(value) if isinstance(value, tuple | list) else value


def _check_record(run_dir: Path, config: ExperimentConfig, record: dict) -> None:
    """:func:`load_run`'s agreement of ``config.json`` with ``model.json``."""

    def disagree(field, configured, saved):
        return ConfigError(
            f"{run_dir}: config.json has {field} = {configured!r} but the saved model was built "
            f"with {saved!r}; the files come from different runs or were edited: restore "
            "config.json or train again"
        )

    arguments = dict(_record_arguments(record))
    for section in (config.model, config.loss):
        names = {field.name for field in dataclasses.fields(section)}
        for name in names & arguments.keys():
            configured = getattr(section, name)
            if configured != "auto" and _plain(configured) != _plain(arguments[name]):
                prefix = "model" if section is config.model else "loss"
                raise disagree(f"{prefix}.{name}", configured, arguments[name])
    mismatch = model_data_mismatch(config, record["kwargs"])
    if mismatch is not None:
        configured, saved = mismatch
        raise ConfigError(
            f"{run_dir}: config.json's data ({config.data.source}) has examples of shape "
            f"{configured} but the saved model takes {saved}; the files come from different "
            "runs or were edited: restore config.json or train again"
        )


def model_data_mismatch(config: ExperimentConfig, kwargs: dict) -> tuple[Any, Any] | None:
    """``(configured, taken)`` when a network built with the constructor arguments ``kwargs``
    (:func:`scorelab.builders.make_model`'s, as ``model.json`` records them) takes examples of
    another shape than ``config.data``'s (``image_shape``, or ``dim`` for the MLPs, which
    flatten an example), else ``None``: :func:`load_run` refuses such a run, and
    :func:`scorelab.workflows.train_run` refuses, before training, data that would make one.
    Data that cannot be read (moved or damaged) are not compared: the commands that read them
    say so."""
    from scorelab import builders

    arguments = dict(_record_arguments({"kwargs": kwargs}))
    if "image_shape" not in arguments and "dim" not in arguments:
        return None
    try:
        example = builders.example_shape(config.data)
    except (OSError, ValueError):  # data moved or damaged: the commands that read it say so
        return None
    saved = _plain(arguments.get("image_shape", arguments.get("dim")))
    configured = list(example) if "image_shape" in arguments else int(np.prod(example))
    return None if saved == configured else (configured, saved)
