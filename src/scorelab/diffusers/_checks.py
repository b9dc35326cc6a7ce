"""The diffusers wing's error type, and the checks of what it reads: JSON files, numbers."""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

from scorelab._validate import check_file

__all__ = ["PretrainedError", "read_json", "is_int", "is_number"]


class PretrainedError(ValueError):
    """A pipeline file, configuration field, tensor or sampling option that scorelab refuses.

    Its message is one line naming the input (file, field or tensor) and the remedy; the
    ``scorelab`` command prints it and exits with status 2, as for any ``ValueError``.
    """


_MAX_JSON_BYTES = 1 << 20
"""A diffusers config is a few hundred bytes; anything past 1 MiB is not one."""


def read_json(file: Path) -> dict:
    """The JSON object in ``file``, a pipeline's ``config.json`` or ``scheduler_config.json``.

    Args:
        file: the path of the file.

    Returns:
        The parsed object, a ``dict``.

    Raises:
        PretrainedError: naming ``file``, if it cannot be read, exceeds 1 MiB, is not UTF-8
            JSON, or holds something other than an object (a list, a number).
    """
    remedy = "fix the file or download the pipeline again"
    if file.exists():  # a folder or a pipe is named as such (reading a pipe waits for ever)
        check_file(file, "JSON file", PretrainedError, "download the pipeline again")
    try:
        if file.stat().st_size > _MAX_JSON_BYTES:
            raise PretrainedError(f"{file}: larger than 1 MiB, not a diffusers config; {remedy}")
        value = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise PretrainedError(
            f"{file}: cannot be read ({type(error).__name__}); {remedy}"
        ) from None
    except RecursionError:
        raise PretrainedError(f"{file}: not valid JSON (nested too deeply); {remedy}") from None
    except ValueError as error:  # not JSON, an integer of thousands of digits
        reason = str(error).split(";")[0]  # the digits' limit suggests a Python call
        raise PretrainedError(f"{file}: not valid JSON ({reason}); {remedy}") from None
    if not isinstance(value, dict):
        raise PretrainedError(
            f"{file}: must hold a JSON object, got a {type(value).__name__}; {remedy}"
        )
    return value


def is_int(value) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """Whether ``value`` is a finite real number (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
