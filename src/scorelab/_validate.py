"""Argument checks shared by the configs, the training loop and the losses, and the one reader
of configuration dataclasses from mappings (:func:`from_mapping`).

Every check raises ``error`` (``ValueError`` unless a caller passes a subclass such as
:class:`scorelab.config.ConfigError`) with a message that starts with the field's name, so
that a bad value in a TOML file, on the command line or in a library call reads the same.
The type checks of the library's arguments (:func:`check_callable`, :func:`check_mapping`,
:func:`check_sequence`, :func:`check_instance`) raise ``TypeError`` by default, in one form:
``FIELD: expected WHAT, got TYPE[; REMEDY]``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (a message a wrapper quotes in its own one-line
    message), or its class name when it has none."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


@contextlib.contextmanager
def in_file(path, error: type[ValueError] = ValueError, remedy: str | None = None):
    """Name ``path`` in the ``error`` raised inside the block (and add ``remedy``): the errors
    of a file's contents, raised by code that sees only the values (``from_dict`` of a parsed
    record: "demo.n_data: ..." becomes "demo.toml: demo.n_data: ...")."""
    try:
        yield
    except error as caught:
        message = f"{path}: {first_line(caught)}"
        raise error(message if remedy is None else f"{message}; {remedy}") from None


def nesting(value) -> int:
    """How deeply ``value``'s dicts and lists nest (0 for a scalar), without recursion: a
    parsed file checked before code that walks it recursively overflows the stack."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


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
    none = "None or " if optional else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise error(f"{field}: expected {none}an integer >= {minimum}, got {value!r}")
    if value > MAX_INT:  # 8.0 * 10**400 in a size check raised OverflowError: a traceback
        raise error(
            f"{field}: expected {none}an integer from {minimum} to 2**63 - 1, got {_big(value)}"
        )


MAX_INT = 2**63 - 1
"""The largest integer a setting takes (int64's): TOML reads integers of any size, and a size
check's float arithmetic on one past float's range raised ``OverflowError``."""


def _big(value: int) -> str:
    """An integer too large to show whole: its digit count."""
    return f"an integer of {len(str(abs(value)))} digits"


def check_callable(
    field: str, value, signature: str, optional: bool = False, error: type[Exception] = TypeError
) -> None:
    """Raise ``error`` (``TypeError``) unless ``value`` is callable (or ``None`` when
    ``optional``), found when the function is given, not at its first call inside a trace:
    ``FIELD: expected a callable SIGNATURE [or None], got TYPE``."""
    if optional and value is None:
        return
    if not callable(value):
        none = " or None" if optional else ""
        raise error(f"{field}: expected a callable {signature}{none}, got {type(value).__name__}")


def check_instance(
    field: str,
    value,
    kind: type | tuple[type, ...],
    what: str,
    optional: bool = False,
    remedy: str | None = None,
    error: type[Exception] = TypeError,
) -> None:
    """Raise ``error`` (``TypeError``) unless ``value`` is an instance of ``kind`` (or ``None``
    when ``optional``), before an attribute of it fails deep inside:
    ``FIELD: expected [None or ]WHAT, got TYPE[; REMEDY]``."""
    if optional and value is None:
        return
    if not isinstance(value, kind):
        none = "None or " if optional else ""
        end = f"; {remedy}" if remedy else ""
        raise error(f"{field}: expected {none}{what}, got {type(value).__name__}{end}")


def check_mapping(
    field: str,
    value,
    what: str,
    optional: bool = False,
    remedy: str | None = None,
    error: type[Exception] = TypeError,
) -> None:
    """:func:`check_instance` of a :class:`~collections.abc.Mapping`, ``what`` naming the
    mapping expected (``"a dict of metric -> (mean, sd)"``)."""
    check_instance(field, value, Mapping, what, optional, remedy, error)


def check_sequence(
    field: str,
    value,
    what: str,
    remedy: str | None = None,
    strict: bool = True,
    error: type[Exception] = TypeError,
) -> None:
    """Raise ``error`` (``TypeError``) for a string or bytes given where a list is expected
    (it was iterated character by character) and, when ``strict``, for anything but a
    sequence or an array (a mapping iterated its keys): ``FIELD: expected WHAT, got VALUE[;
    REMEDY]``, a string shown as given, anything else by its type."""
    import numpy as np

    text = isinstance(value, str | bytes)
    if text or (
        strict and (isinstance(value, Mapping) or not isinstance(value, Sequence | np.ndarray))
    ):
        got = repr(value) if text else type(value).__name__
        end = f"; {remedy}" if remedy else ""
        raise error(f"{field}: expected {what}, got {got}{end}")


def check_file(
    path, what: str, error: type[ValueError] = ValueError, remedy: str | None = None
) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is a regular file to read, ``what`` naming
    it in the messages (``"config file"``), ``remedy`` ending them (default: give the path of
    one).

    Raises:
        FileNotFoundError: nothing is at ``path`` (``WHAT not found: PATH``).
        ValueError: ``error``, for a folder or a special file (a device such as ``/dev/null``,
            a pipe, which a reader waits on for ever): both were reported as not found, which
            sent the user looking for a missing file.
    """
    path = Path(path)
    if "\x00" in str(path):  # no file has such a name; the byte was printed raw
        raise error(f"{str(path)!r}: a path with a NUL byte, which no file name holds; correct it")
    if "\n" in str(path) or "\r" in str(path):  # as the command line's: messages are one line
        raise error(
            f"{str(path)!r}: a path with a line break, which no one-line message can name; "
            "rename it"
        )
    if path.is_file():
        return path
    if not path.exists():
        if path.is_symlink():  # "not found" sent the user looking for a file that is there
            raise FileNotFoundError(
                f"{what} not found: {path} is a symbolic link to {os.readlink(path)}, which "
                "leads nowhere (missing, or a loop of links)"
            )
        raise FileNotFoundError(f"{what} not found: {path}")
    kind = "a folder" if path.is_dir() else "a special file (a device or a pipe)"
    raise error(f"{path}: {kind}, not a {what}; {remedy or f'give the path of a {what}'}")


SEED_LIMIT = 2**32
"""Seeds are integers in ``[0, SEED_LIMIT)``: ``jax.random.key`` keeps only a seed's low 32
bits (without ``jax_enable_x64``), so ``key(2**32)`` is ``key(0)`` and a negative or larger seed
would silently repeat a smaller one's draws."""


def check_seed(field: str, value, error: type[ValueError] = ValueError) -> None:
    """Raise unless ``value`` is an integer seed in ``[0, 2**32)`` (:data:`SEED_LIMIT`)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 0 <= value < SEED_LIMIT
    ):
        raise error(f"{field}: expected an integer seed in [0, 2**32 - 1], got {value!r}")


def real_number(value) -> float | None:
    """``value`` as a Python float when it is one real number, NaN and inf included: a
    Python, NumPy or JAX scalar of a float or integer type (not a bool or a string); else
    ``None``."""
    import numpy as np

    if isinstance(value, bool | str | bytes):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if np.ndim(value) == 0 and is_real_dtype(getattr(value, "dtype", object)):
        return float(value)
    return None


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
    if is_traced(value):
        raise error(traced_message(field))
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and isinstance(value, numbers.Integral) and abs(value) > FLOAT32_MAX:
        raise error(f"{field}: expected {accepted}, within float32's range, got {_big(value)}")
    if not (ok and math.isfinite(value) and test(value)):
        none = "None or " if optional else ""
        # inf passes "> 0.02": the message says finite, or it contradicts itself.
        finite = "a finite value, " if ok and not math.isnan(value) and math.isinf(value) else ""
        raise error(f"{field}: expected {none}{finite}{accepted}, got {value!r}")
    check_float32(field, value, error)


FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32: settings enter the compiled functions as float32, where a larger
magnitude is infinite (``1e300`` became ``inf`` with only a cast warning, then NaN)."""


SIGMA_LIMIT = 9.2e18
"""The largest noise level whose square, a variance, and its reciprocal, a precision, are
normal float32 numbers (``sigma <= 2**63``, 9.22e18): ``sigma_max = 1e30`` made an infinite
prior and 'diverged' chains blamed on the step size, and above 2**63 a Gaussian score's
Jacobian (about ``1 / sigma**2``) is subnormal, which XLA:CPU flushes to zero: the likelihood's
divergence term vanished there, and ``sigma_max = 1.8e19`` was 0.2 nats off."""


SIGMA_FLOOR = 1.1e-19
"""The smallest positive noise level whose square, a variance, is a normal float32 (``sqrt``
of float32's smallest normal 1.18e-38 is 1.08e-19): ``sigma_min = 1e-300`` became 0 in float32
and was refused as 'sigmas must be finite, positive and strictly ascending', blaming the
sampler's options; ``1e-30`` divided scores by a zero variance."""


def check_sigma(field: str, value, error: type[ValueError] = ValueError) -> None:
    """Raise for a noise level (already checked a finite number ``>= 0``) beyond
    :data:`SIGMA_LIMIT`, or positive and below :data:`SIGMA_FLOOR`."""
    if value > SIGMA_LIMIT:
        raise error(
            f"{field}: {value!r} is beyond 9.2e18, where 1 / sigma**2 (a precision) underflows "
            "float32; give a smaller noise level"
        )
    if 0 < value < SIGMA_FLOOR:
        raise error(
            f"{field}: {value!r} is below 1.1e-19, where its square (a variance) underflows "
            "float32; give a larger noise level"
        )


FLOAT32_TINY = 1.1754943508222875e-38
"""The smallest positive normal float32: below it a setting is subnormal, which XLA:CPU
flushes to zero (a learning rate of 1e-320 trained at rate 0 and said nothing)."""


def check_unique(field: str, values, error: type[ValueError] = ValueError) -> None:
    """Raise if a value of the list ``values`` is given more than once (a repeated seed counted
    one run twice in a mean and its standard error; a repeated sampler or budget gave the same
    rows twice)."""
    values = list(values)
    try:  # linear: list.count made 100 000 values take minutes
        repeated = sorted({repr(v) for v, c in collections.Counter(values).items() if c > 1})
    except TypeError:  # unhashable values (a table in a list): compared pairwise
        repeated = sorted({repr(v) for v in values if values.count(v) > 1})
    if repeated:
        raise error(f"{field}: {', '.join(repeated)} given more than once; list each once")


def check_float32(field: str, value, error: type[ValueError] = ValueError) -> None:
    """Raise unless the finite real ``value`` is representable in float32: magnitude at most
    :data:`FLOAT32_MAX`, and zero or at least :data:`FLOAT32_TINY`."""
    if abs(value) > FLOAT32_MAX:
        raise error(
            f"{field}: {value!r} is beyond float32's range (|x| <= 3.4e38), in which it is "
            "computed; give a smaller number"
        )
    if 0 < abs(value) < FLOAT32_TINY:
        raise error(
            f"{field}: {value!r} is below float32's smallest normal number (1.2e-38), and "
            "is computed as 0; give a larger number (or 0 where 0 is accepted)"
        )


def from_mapping(cls, values, section: str, *, base=None, error: type[ValueError] = ValueError):
    """An instance of the frozen dataclass ``cls`` from a mapping, with strict types.

    The one way every configuration dataclass (an experiment's sections, the training, demo and
    sweep settings) is read from TOML, JSON or ``--set`` overrides. Fields not in ``values``
    keep ``base``'s values (the class defaults when ``base`` is ``None``). Values must have the
    field's declared type: a boolean is ``true``/``false`` (never the string ``"false"``), an
    integer field takes integers, a float field integers or floats, a string field strings, a
    ``tuple[X, ...]`` field a list of ``X``; ``None`` only where the field allows it; a field
    whose type is itself a dataclass takes a table, read the same way on top of ``base``'s
    value. The dataclass's own ``__post_init__`` then checks ranges.

    Args:
        cls: a dataclass type.
        values: field name -> value.
        section: the name errors start with (``"train"`` gives ``"train.steps: ..."``).
        base: an instance of ``cls`` whose values the missing fields keep.
        error: the exception raised (a ``ValueError`` subclass).

    Returns:
        The instance.

    Raises:
        error: for a non-mapping, an unknown field (naming the accepted ones), a value of the
            wrong type, or a value ``__post_init__`` rejects; the message starts with
            ``section.field:``.
    """
    if not isinstance(values, Mapping):
        raise error(f"{section}: expected a table of fields, got {type(values).__name__}")
    names = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(map(str, set(values) - set(names)))
    if unknown:
        field = unknown[0] if unknown[0].isidentifier() else repr(unknown[0])
        message = f"{section}.{field}: unknown field; accepted: {', '.join(names)}"
        if field == section and isinstance(values[field], Mapping):  # a [demo] table
            message += f" (at the top level of the file, not in a [{section}] table)"
        raise error(message)
    hints = typing.get_type_hints(cls)
    changes = {}
    for name, value in values.items():
        current = getattr(base, name) if base is not None else None
        changes[name] = typed(hints[name], value, f"{section}.{name}", current, error)
    try:
        if base is not None:
            return dataclasses.replace(base, **changes)
        return cls(**changes)
    except ValueError as problem:  # a range check of __post_init__, prefixed with the section
        message = str(problem)
        if not message.startswith((f"{section}.", f"{section}:")):
            message = f"{section}.{message}"
        # A field kept from the base (the demo's warmup_steps = 200 under a user's steps = 3)
        # was blamed as if given: say whose value it is.
        field = message.partition(": ")[0].removeprefix(f"{section}.")
        if base is not None and field in hints and field not in values:
            message += f" ({section}.{field} = {getattr(base, field)!r} is the default: set it too)"
        if isinstance(problem, error):  # its own kind, with what it carries (a range's ends)
            problem.args = (message,)
            raise
        raise error(message) from problem


def check_fields(settings, section: str) -> None:
    """Check every field of the frozen settings dataclass ``settings`` against its declared
    type, as :func:`from_mapping` reads a file's (the same conversions:
    a list becomes a tuple, an integer a float where a float is declared), so that settings
    built directly (a notebook's ``SweepSettings(samplers="euler")``) are refused with the
    field's name, not iterated letter by letter or failed on deep inside. A field whose type
    is a dataclass (a :class:`scorelab.training.TrainConfig`) takes an instance of it.

    Raises:
        ValueError: naming ``section.field`` and the type expected.
    """
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        name, value, hint = (
            f"{section}.{field.name}",
            getattr(settings, field.name),
            hints[field.name],
        )
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise ValueError(
                    f"{name}: expected a {hint.__name__} (a table of its fields in a file or "
                    f"from_dict), got {type(value).__name__}"
                )
            continue
        object.__setattr__(settings, field.name, typed(hint, value, name))


def typed(hint, value, field: str, current=None, error: type[ValueError] = ValueError):
    """``value`` checked against the type ``hint`` (and, for floats, tuples and nested
    dataclasses, converted), as :func:`from_mapping` reads every field; raises ``error``
    naming ``field``."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in arguments if a is not type(None)]
        # TOML has no null: "none" spells None where the field takes no string (ema_decay,
        # batch_size), whose messages offer None ("expected None or ...").
        if value is None or (
            inner in (int, float) and isinstance(value, str) and value.lower() == "none"
        ):
            return None
        hint = inner
        return typed(hint, value, field, current, error)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, field, base=current, error=error)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise error(f"{field}: expected a list, got {value!r}")
        return tuple(typed(arguments[0], item, field, None, error) for item in value)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise error(f"{field}: expected a table, got {value!r}")
        return dict(value)
    expected = {
        bool: ("true or false", lambda v: isinstance(v, bool)),
        int: ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
        float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
        str: ("a string", lambda v: isinstance(v, str)),
    }
    if hint in expected:
        accepted, test = expected[hint]
        if not test(value):
            # A path or name that reads as a TOML number or boolean (a folder called inf):
            # quoted, it is a string.
            spelled = str(value).lower() if isinstance(value, bool) else str(value)
            quoted = hint is str and not isinstance(value, dict | list)
            quote = f' (quote it: "{spelled}")' if quoted else ""
            raise error(f"{field}: expected {accepted}, got {value!r}{quote}")
        big = MAX_INT if hint is int else FLOAT32_MAX
        if isinstance(value, numbers.Integral) and hint in (int, float) and abs(value) > big:
            # float(10**400) raised OverflowError, a traceback; int64 holds no more
            bound = "int64's range (at most 2**63 - 1)" if hint is int else "float32's range"
            raise error(f"{field}: expected {accepted} within {bound}, got {_big(value)}")
        return float(value) if hint is float else value
    return value


def available_memory() -> int:
    """Bytes of memory this process can expect to allocate: the host's available memory
    (``MemAvailable`` on Linux, else its physical memory), or less under an address-space limit
    (``ulimit -v``: the limit less the process's size; the host's memory was counted, and the
    allocation ended in a crash)."""
    host = _proc_kib("/proc/meminfo", "MemAvailable:")
    if host is None:
        host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = address_space_limit()
    size = _proc_kib("/proc/self/status", "VmSize:")
    if limit is None or size is None:
        return host
    return max(0, min(host, limit - size))


def address_space_limit() -> int | None:
    """The bytes of this process's address-space limit (``ulimit -v``, the soft
    ``RLIMIT_AS``), or ``None`` for none (or a system without POSIX resource limits)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def _proc_kib(path: str, key: str) -> int | None:
    """The bytes of the ``key: N kB`` line of the Linux ``/proc`` file ``path``, or ``None``."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(field: str, n_bytes: float, remedy: str, error: type[ValueError] = ValueError):
    """Raise ``error`` before allocating ``n_bytes`` when that exceeds the available memory,
    naming ``field``, both sizes and ``remedy``."""
    available = available_memory()
    if n_bytes > 1e300:  # an exact integer past float's range: no size to show
        raise error(f"{field}: needs more memory than any machine has; {remedy}")
    if n_bytes > available:
        raise error(
            f"{field}: needs {_bytes(n_bytes)} of memory, {_bytes(available)} available; {remedy}"
        )


def _bytes(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    power = 0
    while n >= 1024 and power < len(units) - 1:
        n, power = n / 1024, power + 1
    return f"{n:.3g} {units[power]}"


def is_traced(value) -> bool:
    """Whether ``value`` is traced (inside ``jit``, ``vmap`` or ``grad``), so its values are
    unknown until run: checks by value apply to concrete values only, and a compiled step pays
    nothing for them."""
    import jax

    return isinstance(value, jax.core.Tracer)


def traced_message(field: str) -> str:
    """The one message for a setting that must be concrete but was given traced (it sets a
    shape, a check or a host-side computation): build the object outside the transformation
    and pass it in, as a leaf of an ``equinox.filter_jit`` argument where it is an array."""
    return (
        f"{field}: a traced value (inside jit, vmap or grad), where a concrete one is needed; "
        "build this outside the transformation and pass the result in (equinox.filter_jit "
        "traces its array leaves)"
    )


def is_real_dtype(dtype) -> bool:
    """Whether ``dtype`` holds real numbers: any float (``bfloat16`` and the other
    ``ml_dtypes`` floats included: NumPy files them under kind ``"V"``) or integer, not a
    boolean, a complex number, a string or an object."""
    import jax.numpy as jnp

    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        return False
    return bool(jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))


def all_finite(values) -> bool | None:
    """Whether every entry of the real array ``values`` is finite, computed where it lives (no
    copy to the host) even while a caller is traced under ``jit``; ``None`` when ``values``
    is itself traced (its values are unknown until run)."""
    import jax
    import jax.numpy as jnp

    if is_traced(values):
        return None
    with jax.ensure_compile_time_eval():  # eager even inside a trace, on concrete values
        return bool(jnp.all(jnp.isfinite(values)))
