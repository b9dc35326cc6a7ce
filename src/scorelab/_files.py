"""Atomic file writes and the JSON policy, shared by checkpoints and run directories.

A file is written to a temporary file in its own folder, flushed and fsynced, then renamed
over its destination with ``os.replace`` (atomic on POSIX and Windows), and on POSIX the
folder is fsynced so that the rename survives a power cut. A process killed mid-write
therefore leaves the previous file whole; at worst a ``.<name>.<random>.tmp`` file remains
beside it. An output a command found absent when it began (:func:`expect_new`) is never
replaced by the rename: a second command that wrote it meanwhile keeps its file, and this one
is told (two ``scorelab sample --out x.npy`` at once both said they wrote it, and one result
was lost).

JSON has no NaN or infinity: Python's ``json`` writes ``NaN`` and ``Infinity`` literals that
strict parsers (JavaScript, ``jq``) reject. :func:`write_json` writes every non-finite float as
``null`` and then encodes with ``allow_nan=False``, so no such literal can slip through.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import math
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import jax
import numpy as np

from scorelab._validate import check_file

_NEW_OUTPUTS: contextvars.ContextVar[frozenset[Path] | None] = contextvars.ContextVar(
    "new_outputs", default=None
)


_CREATED: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar(
    "created_outputs", default=None
)


@contextlib.contextmanager
def new_outputs(report: str | None = None) -> Iterator[None]:
    """A scope (one command) in which :func:`expect_new` marks outputs; they are forgotten on
    leaving it, so that a later command of the same process may replace them. A scope left by
    an error removes the marked files it created: the command's rerun found them, and refused
    ("exists; pass --overwrite": ``sample --out x.npy --trajectory t.npy`` wrote ``x.npy``, then
    found the disk full for ``t.npy``; ``plot`` failed half way through a new folder). An
    ``OSError`` about ``report``, the name the errors of the command's report stream carry
    (``| head`` gone), keeps them: they were written before the report."""
    token = _NEW_OUTPUTS.set(frozenset())
    created: list[Path] = []
    created_token = _CREATED.set(created)
    try:
        yield
    except BaseException as error:
        if not (isinstance(error, OSError) and report is not None and error.filename == report):
            for path in created:
                path.unlink(missing_ok=True)
        raise
    finally:
        _CREATED.reset(created_token)
        _NEW_OUTPUTS.reset(token)


def expect_new(path: str | os.PathLike) -> None:
    """Within :func:`new_outputs`, have :func:`atomic_write` refuse to replace ``path`` (an
    output checked absent when the command began, as no ``--overwrite`` was given) if another
    process creates it meanwhile; outside such a scope, nothing. A folder found absent or
    empty marks every file written below it (two ``plot --out NEW`` at once both exited 0, and
    the folder held one command's figures)."""
    marked = _NEW_OUTPUTS.get()
    if marked is not None:
        _NEW_OUTPUTS.set(marked | {resolved(path)})


def _put_new(temporary: Path, path: Path) -> None:
    """Rename ``temporary`` to ``path`` unless ``path`` exists, atomically: a hard link fails
    on an existing name, where ``os.replace`` would replace it. A file system without hard
    links is checked first instead (a small window remains there)."""
    created = _CREATED.get()
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    except OSError:  # no hard links on this file system
        if not path.exists():
            os.replace(temporary, path)
            created.append(path)
            return
    else:
        created.append(path)
        temporary.unlink()
        return
    raise FileExistsError(
        errno.EEXIST,
        "another process created it while this command ran, and it was kept (pass "
        "--overwrite to replace it)",
        str(path),
    )


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file atomically: ``write_fn`` fills a temporary file that then replaces ``path``.

    Args:
        path: the destination; its folder is created if needed.
        write_fn: called once with a binary file object open for writing (e.g.
            ``lambda f: numpy.save(f, x)``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``path`` is a special file (a device, a pipe): the rename would replace
            it by a regular file (as root, ``/dev/null`` itself).
        FileExistsError: ``path`` was marked new (:func:`expect_new`) and another process
            created it meanwhile; it is kept.
        OSError: of the disk, naming ``path`` (a short write, which numpy reports without an
            error number, as the full disk it is).
        Exception: whatever ``write_fn`` raises; the temporary file is removed and ``path``
            is unchanged.
    """
    given = Path(path)
    # Through a symbolic link to its target, as a shell's > writes (replacing the link by a
    # file left the target stale); a dangling link's target is created.
    path = resolved(given) if given.is_symlink() else given
    if path.exists() and not path.is_file() and not path.is_dir():  # a folder: the OS refuses
        raise ValueError(
            f"{given}: a special file (a device or a pipe), which writing here would replace; "
            "give the path of a regular file"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open with mode 0o666 lets the umask set the permissions, as a plain open() would.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise naming(error, given) from None
    try:
        try:  # around the close too: it writes what is still buffered, and its error names no file
            with os.fdopen(descriptor, "wb") as handle:
                write_fn(handle)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise _of_the_disk(error, given) from None
        marked = _NEW_OUTPUTS.get()
        try:
            if marked and not marked.isdisjoint({target := resolved(path), *target.parents}):
                _put_new(temporary, path)
            else:
                os.replace(temporary, path)
        except OSError as error:  # a refusal of _put_new too, named as the user gave it
            raise naming(error, given) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # Windows cannot open a folder to fsync it
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return given


def check_writable(path: str | os.PathLike) -> None:
    """Create the folder of the file ``path`` (and its parents) and check that it takes a new
    file, by creating and removing a temporary one: a folder that exists may still take none
    (``/proc``, a read-only mount, no write permission), found before the work, not after it.

    Raises:
        OSError: from the folder's creation or the temporary file, or ``ENOSPC`` for a disk
            without a free block; the callers name the path and the remedy in their own words.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"):
        pass
    # An empty file fits on a full disk: its free blocks are counted too (grid and score-error
    # computed for minutes, then failed to write). Root may use the blocks kept for it.
    if hasattr(os, "statvfs"):
        disk = os.statvfs(path.parent)
        free = disk.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else disk.f_bavail
        if free == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent))


def resolved(path: str | os.PathLike) -> Path:
    """``path`` with its symbolic links resolved (``Path.resolve``), which need not exist.

    Raises:
        ValueError: naming ``path``, for a symbolic link loop (Python 3.11 raised a bare
            ``RuntimeError``, later versions an ``OSError``).
    """
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as error:
        raise ValueError(
            f"{path}: a symbolic link loop (or a link that cannot be followed); remove it or "
            "choose another path"
        ) from error


def file_above(path: str | os.PathLike) -> Path | None:
    """The nearest existing entry above ``path`` when it is not a folder (a file, or a link to
    one: ``path`` would lie inside a file, which ``mkdir`` reports as "File exists" or "Not a
    directory"), else ``None``."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def resolves_into(item: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``item`` lies in ``folder`` (or is it) once both have their links resolved:
    a file a command reads through, or writes through, a link."""
    return resolved(item).is_relative_to(resolved(folder))


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two paths name one existing file (or folder)."""
    try:
        return Path(first).samefile(second)
    except OSError:  # either missing (a built-in name), or unreadable: checked where read
        return False


def naming(error: OSError, path: Path) -> OSError:
    """``error`` about ``path``, the file or folder the user asked for, rather than the
    temporary one beside it that was opened or renamed (:func:`atomic_write`, the staging folder
    of :func:`scorelab.diffusers.export_pipeline`)."""
    return type(error)(error.errno, error.strerror, str(path))


def file_size_limit() -> int | None:
    """The process's file-size limit in bytes (``ulimit -f``), or ``None`` where none is set."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def free_descriptors() -> int | None:
    """How many more files the process may open under its limit (``ulimit -n``), or ``None``
    where no limit is set or the open ones cannot be counted (no ``/proc/self/fd``)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own descriptor
    except OSError:
        return None
    return None if soft == resource.RLIM_INFINITY else soft - open_now


def _of_the_disk(error: OSError, path: Path) -> OSError:
    """An ``OSError`` raised while writing ``path``'s temporary file, about ``path``: numpy's
    short write (``20000 requested and 12256 written``) has no error number, and is a full
    disk (or a quota), or the process's file-size limit (``ulimit -f``) where one is set."""
    if error.errno is None and "requested and" in str(error):
        code = errno.EFBIG if file_size_limit() is not None else errno.ENOSPC
        return OSError(code, f"{os.strerror(code)} ({error})", str(path))
    if error.errno is not None and not error.filename:
        return naming(error, path)
    return error


def jsonable(value: Any) -> Any:
    """``value`` with arrays as lists, NumPy scalars as Python numbers, tuples as lists and
    every NaN or infinite float as ``None``; other values are returned as they are."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray | jax.Array):
        return jsonable(np.asarray(value).tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically (:func:`atomic_write`).

    Arrays become (nested) lists and NaN or infinite numbers ``null`` (:func:`jsonable`).

    Args:
        path: the destination file.
        payload: dicts, lists, tuples, strings, numbers, booleans, ``None``, NumPy or JAX
            arrays and scalars.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``payload`` holds another type, or a key that is not a string, number,
            boolean or ``None``, naming ``path`` (the file is not written).
    """
    try:
        text = json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:  # json named neither the file nor the remedy
        raise TypeError(
            f"{path}: cannot be written as JSON ({error}); give numbers, strings, lists and dicts"
        ) from None
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file (written by :func:`write_json`; ``null`` stays ``None``).

    Raises:
        OSError: the file cannot be read (missing, permissions).
        ValueError: the file is not JSON text (damaged or truncated), or not a regular file
            (a folder; a pipe or a device, which a read waited on, or filled the memory from,
            for ever), naming it.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, pipe or device, as check_file says
        check_file(path, "JSON file", remedy="restore the file or write it again")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is dropped
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise ValueError(
            f"{path}: not readable JSON ({error}); the file is damaged: restore it or write "
            "it again"
        ) from error
