"""Argument checks shared by the configs, the training loop and the losses.

Every check raises ``error`` (``ValueError`` unless a caller passes a subclass such as
:class:`scorelab.config.ConfigError`) with a message that starts with the field's name, so
that a bad value in a TOML file, on the command line or in a library call reads the same.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable


def check_choice(field: str, value, accepted, error: type[ValueError] = ValueError) -> None:
    """Raise unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise error(f"{field}: unknown value {value!r}; accepted: {', '.join(map(str, accepted))}")


def check_int(
    field: str, value, minimum: int, optional: bool = False, error: type[ValueError] = ValueError
) -> None:
    """Raise unless ``value`` is an integer ``>= minimum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        none = "None or " if optional else ""
        raise error(f"{field}: expected {none}an integer >= {minimum}, got {value!r}")


def check_real(
    field: str,
    value,
    accepted: str,
    test: Callable[[float], bool],
    optional: bool = False,
    error: type[ValueError] = ValueError,
) -> None:
    """Raise unless ``value`` is a finite real number passing ``test`` (described by ``accepted``,
    e.g. ``"a number > 0"``), or ``None`` when ``optional``."""
    if optional and value is None:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and test(value)):
        none = "None or " if optional else ""
        raise error(f"{field}: expected {none}{accepted}, got {value!r}")
