"""Another process holding a run folder's lock, as a ``train`` writing it would."""

import contextlib
import subprocess
import sys
from pathlib import Path


@contextlib.contextmanager
def held_by_another_process(run_dir: Path):
    """Hold ``run_dir``'s lock from a child process for the ``with`` block."""
    hold = (
        f"import filelock, sys; lock = filelock.FileLock({str(run_dir / '.lock')!r}); "
        "lock.acquire(); print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(  # holds the run's lock until told to stop
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("")
