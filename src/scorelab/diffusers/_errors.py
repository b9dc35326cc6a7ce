"""The one error type of the diffusers wing."""

from __future__ import annotations

__all__ = ["PretrainedError"]


class PretrainedError(ValueError):
    """A pipeline file, configuration field, tensor or sampling option that scorelab refuses.

    Its message is one line naming the input (file, field or tensor) and the remedy; the
    ``scorelab`` command prints it and exits with status 2, as for any ``ValueError``.
    """
