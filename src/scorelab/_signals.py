"""Ctrl-C and SIGTERM held off a step that must not be cut short.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. Inside ``import
jax`` that leaves jax half-initialised (and numpy's C import prints its own traceback); inside a
checkpoint save it leaves the checkpointer's threads writing into a folder the retry removes.
:func:`held_signals` blocks both signals for the calling thread while its block runs; one that
arrives meanwhile is delivered, and raised, as soon as the block ends.
"""

from __future__ import annotations

import contextlib
import signal

__all__ = ["held_signals"]

_HELD = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def held_signals():
    """Block SIGINT and SIGTERM for the calling thread until the block ends; a signal that
    arrived meanwhile is then handled as usual. Where threads cannot mask signals (Windows), it
    does nothing."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
