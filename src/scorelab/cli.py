"""The ``scorelab`` command: train, sample, evaluate, plot, demo, sweep, likelihood,
score-error, pretrained.

A thin layer: it parses arguments into a :class:`scorelab.config.ExperimentConfig` (a TOML
file, then ``--set section.field=value`` overrides, then the named flags), dispatches to
:mod:`scorelab.workflows` (or the demo, the sweep, the pretrained loader) and prints. The
sampler flags are generated from the samplers' own option declarations
(:func:`scorelab.samplers.options`).

One error boundary (:func:`main`): every failure a user can cause (a bad value, a missing or
damaged file, a permission, a full disk, a diverged run, too little memory) ends as one line
``scorelab <command>: error: ...`` naming the input and what to do, exit status 2; anything
else is a bug: its traceback, a line asking for a report, exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

from scorelab._signals import held_signals
from scorelab._validate import address_space_limit, first_line, typed

__all__ = ["main"]

# Named flags: flag -> (section.field, type, help).
_TRAIN_FLAGS = {
    "--data": (
        "data.source",
        str,
        "built-in target/toy set/digits, a .npy/.csv/.npz file or an image folder",
    ),
    "--loss": ("loss.name", str, "hyvarinen, hutchinson, sliced, dsm, ncsn or vp_epsilon"),
    "--model": ("model.name", str, "auto, mlp, ncsn_mlp or unet"),
    "--steps": ("train.steps", int, "optimiser steps"),
    "--batch-size": ("train.batch_size", int, "examples per step"),
    "--lr": ("train.learning_rate", float, "learning rate"),
    "--seed": ("train.seed", int, "training seed"),
}
_GRID_FLAGS = {
    "--sampler": ("sampler.name", str, "sampler name (listed below)"),
    "--levels": ("sampler.n_levels", int, "number of sigma levels N"),
    "--nfe": (
        "sampler.nfe",
        int,
        "a budget of score evaluations: the largest grid within it, "
        "from the sampler's cost per step (replaces --levels; with --guidance a score costs "
        "two network evaluations)",
    ),
    "--grid": (
        "sampler.grid",
        str,
        "geometric (default), karras (the tutorial's), vp, polyexponential, ays:NAME or a .json "
        "grid file (scorelab grid)",
    ),
    "--sigma-min": ("sampler.sigma_min", float, "smallest sigma of the grid"),
    "--sigma-max": ("sampler.sigma_max", float, "largest sigma of the grid (tutorial: 10)"),
    "--rho": ("sampler.rho", float, "Karras grid curvature or polyexponential exponent"),
    "--prior": ("sampler.prior", str, "normal, exact or moments (N(m, C + sigma_max^2 I))"),
}
_SCORE_ERROR_FLAGS = {
    flag: _GRID_FLAGS[flag]
    for flag in ("--levels", "--grid", "--sigma-min", "--sigma-max", "--rho")
}
# Flags of earlier versions, and what replaced them.
_RENAMED_FLAGS = {
    "--e": "--eta",
    "--eta0": "--final-noise",
    "--steps-per-level": "--n-steps-per-level",
}


@functools.cache
def _sampler_flags() -> dict:
    """Every sampler option as a flag ``--name-with-dashes`` -> ``sampler.options.name``,
    generated from the samplers' declarations (type, help, which samplers take it). Built only
    for the commands that take them: it imports the samplers, hence JAX (about 3 s), which
    ``scorelab --help`` and the other commands' usage errors need not wait for."""
    from scorelab import samplers

    declared: dict[str, tuple] = {}
    users: dict[str, dict[str, dict[str, list[str]]]] = {}  # option -> help -> default -> names
    for name in samplers.SAMPLERS:
        for option in samplers.options(name):
            declared.setdefault(option.name, option)
            helps = users.setdefault(option.name, {}).setdefault(option.help, {})
            helps.setdefault(repr(option.default), []).append(name)
    flags = {}
    for option_name, option in declared.items():
        flag = "--" + option_name.replace("_", "-")
        # Samplers sharing an option may default it differently (edm's s_churn is 40, k-diffusion
        # samplers' 0), or mean another thing by it (unipc's solver_type bh1/bh2, dpmpp_2m_sde's
        # midpoint/heun: only the first was said, pass 24): each meaning is given with its
        # samplers and their defaults.
        meanings = []
        for text, groups in users[option_name].items():
            separator = "; " if len(groups) == 1 else ": "
            takers = "; ".join(
                f"{', '.join(names)}{separator}default {d}" for d, names in groups.items()
            )
            meanings.append(f"{text} ({takers})")
        help_text = "; ".join(meanings)
        kind = option.type if option.type in (int, float, str) else str
        flags[flag] = (f"sampler.options.{option_name}", kind, help_text)
    return flags


def _name(text: str) -> str:
    """A path or hub-id argument, as given: an empty one (an unset shell variable) would be the
    current folder, which a run or an ``--overwrite`` would then write into (or ``pretrained``
    read as a pipeline), nor one with a line break (messages are one line: ``sample --out
    $'a\\nb.npy'`` said only "error: a")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    if "\n" in text or "\r" in text:  # every message about it would be cut at the break
        raise argparse.ArgumentTypeError(
            f"{text!r}: a path with a line break, which no one-line message can name; rename it"
        )
    return text


def _float(text: str) -> float:
    """A real-number argument, as ``float`` reads it, but a literal that is not zero and
    rounds to zero (``1e-400``) is refused: it was used as 0 and shown as ``0.0``."""
    value = float(text)  # argparse names a ValueError "invalid float value"
    mantissa = text.strip().lower().partition("e")[0]
    if value == 0.0 and any(digit in mantissa for digit in "123456789"):
        raise argparse.ArgumentTypeError(
            f"{text}: below the smallest double (about 5e-324), read as 0; give 0 or a larger "
            "number"
        )
    return value


_float.__name__ = "float"  # argparse's messages name a type by it: "invalid float value"


def _path(text: str) -> Path:
    """A path argument, not empty (:func:`_name`)."""
    return Path(_name(text))


class _UsageError(Exception):
    """A command line argparse cannot parse: ``(prog, message)``."""


_NEGATIVE_NUMBER = re.compile(
    r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE
)
"""A value beginning with ``-`` that is a number (``-1e5``, ``-inf``): argparse's own test
takes only ``-5`` and ``-0.5``, and read ``--lr -inf`` as a flag missing its value."""


class _DefaultsShown:
    """An argparse formatter's mixin: an option's help ends with its default, where it has one
    and the help does not already say it (``sample --out`` wrote ``samples.npy`` unsaid, and
    two commands of the docs collided on it, pass 24)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is None
            or isinstance(default, bool)
            or default in ([], argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


class _HelpFormatter(_DefaultsShown, argparse.HelpFormatter):
    """argparse's formatter, with defaults shown (:class:`_DefaultsShown`)."""


class _RawDescriptionFormatter(_DefaultsShown, argparse.RawDescriptionHelpFormatter):
    """argparse's formatter for a description laid out by hand, with defaults shown."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its error as one line (no usage block), exit status 2,
    negative numbers in any spelling float() reads taken as values, and defaults shown in
    the help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER  # argparse's attribute, since 2.7

    def error(self, message):
        raise _UsageError(self.prog, message)

    def parse_args(self, args=None, namespace=None):
        """argparse's, with arguments no parser took reported by the command they followed
        (argparse's own top-level check said ``scorelab: error: unrecognized arguments`` and
        pointed at ``scorelab --help``)."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(namespace, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            raise _UsageError(prog, f"unrecognized arguments: {' '.join(extras)}")
        return namespace


class _Renamed(argparse.Action):
    """A flag of an earlier version: a one-line error naming its new spelling."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed {_RENAMED_FLAGS[option_string]}")


def _add_config_flags(parser: argparse.ArgumentParser, flags: dict) -> None:
    parser.add_argument("--config", type=_path, help="TOML configuration file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one configuration value (repeatable)",
    )
    for flag, (target, kind, help_text) in flags.items():
        parse = _float if kind is float else kind
        parser.add_argument(flag, type=parse, dest=target, default=None, help=help_text)


def _experiment(args, flags: dict, base: dict | None = None, job: str | None = None):
    from scorelab.config import (
        ConfigError,
        ExperimentConfig,
        SigmaRangeError,
        apply_overrides,
        load_config,
        put,
    )

    values = {section: dict(table) for section, table in (base or {}).items()}
    given: set[str] = set()  # the fields this command line gives, by any of its three means
    origins: dict[str, str] = {}  # field or section -> the file or flag that gave it
    if args.config is not None:
        loaded = load_config(args.config)
        for section, table in loaded.items():
            if not isinstance(table, dict):  # every section is a table ([train] ...)
                raise ConfigError(
                    f"{args.config}: {section} = {table!r}: expected a table of fields "
                    f"([{section}] and its fields below it)"
                )
            given.update(f"{section}.{name}" for name in table)
            origins.update({f"{section}.{name}": str(args.config) for name in table})
            origins.setdefault(f"[{section}]", str(args.config))  # a section of its own
            if isinstance(values.get(section), dict):
                values[section].update(table)
            else:
                values[section] = table
    values = apply_overrides(values, args.overrides)
    overridden = [item.partition("=")[0].strip() for item in args.overrides]
    given.update(overridden)
    origins.update({name: "--set" for name in overridden})
    for name in overridden:
        origins.setdefault(f"[{name.partition('.')[0]}]", "--set")
    for flag, (target, _, _) in flags.items():
        value = getattr(args, target)
        if value is None:
            continue
        given.add(target)
        source = origins.get(target)
        origins[target] = flag
        previous = put(values, target.split("."), value, f"{target} ({flag})")
        if source not in (None, "--set") and previous is not None:
            # the file's value went unchecked: the same file failed without the flag
            try:
                typed(type(value), previous, target, error=ConfigError)
            except ConfigError as wrong:
                raise ConfigError(
                    f"{source}: {wrong} ({flag} replaces it in this run; correct the file)"
                ) from None
        # The flag wins: a --set of the field, of a table holding it, or of a field inside it
        # (train.steps.x) went unread (not even checked) if it gave another value.
        if previous not in (None, value) and any(
            target == name or target.startswith(f"{name}.") or name.startswith(f"{target}.")
            for name in overridden
        ):
            raise ConfigError(
                f"{target}: --set gives {previous!r}, {flag} gives {value!r}; give it once"
            )
    try:
        _another_sampler(values, given, base)
        _flat_over_saved(values, given)
        _one_grid_size(values, given)
        return ExperimentConfig.from_dict(values)
    except ConfigError as error:
        if isinstance(error, SigmaRangeError):  # a range broken by the end that was given
            low, high = (f"{error.section}.{end}" for end in ("sigma_min", "sigma_max"))
            if low in given and high not in given:
                error = ConfigError(
                    f"{low}: expected a number < sigma_max ({error.sigma_max}, not given "
                    f"here: set it too), got {error.sigma_min}"
                ).with_traceback(error.__traceback__)
        if job is not None:  # a field the job ignores is named first, not what it broke
            from scorelab.workflows import check_read

            for name in sorted(given):
                if origins.get(name, "").startswith("--"):
                    try:
                        check_read(job, name)
                    except ConfigError as unread:
                        raise ConfigError(_sourced(str(unread), origins)) from error
        raise ConfigError(_sourced(str(error), origins)) from error


def _sourced(message: str, origins: dict[str, str]) -> str:
    """A configuration error ``message`` that starts with a field, prefixed by the source
    that gave the field (or the table holding it): a ``--config`` file's path, or ``--set``.
    A value from a file was blamed on the flag for its field, which the user never passed
    (``--steps (train.steps): expected an integer``); a flag's own value is left to
    :func:`_by_flag`, and a value from no source (a default, a run's saved configuration) as
    it is."""
    field = message.partition(": ")[0]
    parts = field.split(".")
    # A message about a whole section (an unknown one) by the section's own source.
    names = [f"[{parts[0]}]"] if len(parts) == 1 else []
    found = (origins.get(name) for name in [*_prefixes(field), *names])
    origin = next((origin for origin in found if origin is not None), None)
    if origin is None:  # a table whose fields one source gave: `--set sampler.options.eta.x=1`
        inner = {source for name, source in origins.items() if name.startswith(f"{field}.")}
        origin = inner.pop() if len(inner) == 1 else None
    if origin == "--set":
        return f"--set {message}"
    if origin is not None:
        return message if origin.startswith("--") else f"{origin}: {message}"
    return message


def _prefixes(field: str) -> list[str]:
    """``a.b.c``, ``a.b``, ``a``: the field and the tables holding it, innermost first."""
    parts = field.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


def _another_sampler(values: dict, given: set[str], base: dict | None) -> None:
    """A sampler named now over a run saved with another: the run's options were the other
    sampler's (``--sampler euler`` on a DDIM run failed on ``eta``, an option of neither the
    command line nor the new sampler), and its budget one an adaptive sampler cannot take
    (``--nfe`` was blamed, never given). Both are dropped unless given now; the grid stays."""
    from scorelab import samplers

    sampler, saved = values.get("sampler"), (base or {}).get("sampler")
    if "sampler.name" not in given or not isinstance(sampler, dict) or not isinstance(saved, dict):
        return
    name = sampler.get("name")
    if name == saved.get("name"):
        return
    options = sampler.get("options")
    if "sampler.options" not in given and isinstance(options, dict):
        sampler["options"] = {
            option: value
            for option, value in options.items()
            if f"sampler.options.{option}" in given
        }
    budget = sampler.get("nfe")
    if "sampler.nfe" not in given and budget and isinstance(name, str):
        if name in samplers.SAMPLERS and samplers.budget_levels(name, 1) is None:
            sampler["nfe"] = 0


def _flat_over_saved(values: dict, given: set[str]) -> None:
    """A sampler option given now in the flat spelling of earlier versions (``sampler.eta``)
    replaces the run's saved ``sampler.options.eta``, as ``--eta`` does: the two were refused
    as one option given twice, though the user gave it once."""
    sampler = values.get("sampler")
    options = sampler.get("options") if isinstance(sampler, dict) else None
    if not isinstance(options, dict) or "sampler.options" in given:
        return
    for name in [name for name in options if f"sampler.{name}" in given]:
        if f"sampler.options.{name}" not in given:
            del options[name]


def _one_grid_size(values: dict, given: set[str]) -> None:
    """A grid is sized by levels or by a budget (``sampler.nfe`` replaces ``sampler.n_levels``):
    both given is a contradiction, and levels given over a run's saved budget replace it. Both
    went unread before: ``--levels 5 --nfe 10`` sampled 10 evaluations' grid, and ``--levels 5``
    on a run trained with ``nfe = 20`` sampled that run's budget. A saved grid given without
    either is sized by its own levels, and spans its own range unless one is given (a run's
    saved range was refused as a mismatch)."""
    from scorelab.config import ConfigError
    from scorelab.noise import is_saved_grid

    sampler = values.get("sampler")
    no_budget = isinstance(sampler, dict) and type(sampler.get("nfe")) is int and not sampler["nfe"]
    if {"sampler.n_levels", "sampler.nfe"} <= given and not no_budget:  # 0: none, the default
        raise ConfigError(
            "sampler.nfe: a budget sizes the grid, and sampler.n_levels (--levels) was given "
            "too; give one of them"
        )
    if not isinstance(sampler, dict):
        return
    grid = sampler.get("grid")
    # A saved grid given now brings its own levels (config.ExperimentConfig.from_dict), not
    # those of the run it samples.
    own_levels = (
        "sampler.grid" in given
        and isinstance(grid, str)
        and is_saved_grid(grid)
        and not {"sampler.n_levels", "sampler.nfe"} & given
    )
    if own_levels:
        sampler.pop("n_levels", None)
    if "sampler.grid" in given and isinstance(grid, str) and is_saved_grid(grid):
        for field in ("sigma_min", "sigma_max"):  # its own range, not the run's
            if f"sampler.{field}" not in given:
                sampler.pop(field, None)
    if ("sampler.n_levels" in given or own_levels) and sampler.get("nfe"):
        sampler["nfe"] = 0  # a saved budget, replaced by the levels asked for


def _source(args, flags: dict, job: str | None = None):
    """``(config, model)`` of ``--run DIR`` (its saved configuration and network) or ``--exact
    TARGET`` (the target's exact score: model ``None``), with ``--config``, ``--set`` and
    ``flags`` applied on top; a setting the job (default: the command) does not read is
    refused (:func:`scorelab.workflows.check_reads`)."""
    from scorelab.config import TARGETS, ExperimentConfig
    from scorelab.runs import load_run
    from scorelab.workflows import check_reads

    if (args.run is None) == (args.exact is None):
        raise ValueError("give exactly one of --run DIR (a trained model) or --exact TARGET")
    if args.exact is not None and args.exact not in TARGETS:
        raise ValueError(
            f"--exact: no exact score for {args.exact!r}; accepted: {', '.join(TARGETS)}"
        )
    if args.run is not None:
        saved, model = load_run(args.run)
        return _run_experiment(args, flags, saved, job), model
    exact = {"data": {"source": args.exact}}
    config = _experiment(args, flags, exact, job or args.command)
    check_reads(job or args.command, config, ExperimentConfig.from_dict(exact))
    return config, None


def _run_experiment(args, flags: dict, saved, job: str | None = None):
    """A run's saved configuration with ``--config``, ``--set`` and ``flags`` on top, of which
    only ``[sampler]`` may differ, and only what the command reads of it: the data, model, loss
    and training made the saved network, and another value there would describe a model the
    run does not hold."""
    from scorelab.config import ConfigError
    from scorelab.workflows import check_reads

    config = _experiment(args, flags, saved.to_dict(), job or args.command)
    for name in config.changed_fields(saved):
        section, field = name.split(".", 1)
        if section != "sampler":
            value, changed = (getattr(getattr(c, section), field) for c in (saved, config))
            raise ConfigError(
                f"{name}: the run {args.run} was trained with {value!r}; only the sampler's "
                f"settings may change when sampling a run (got {changed!r}): train a new run "
                f"for another {section}"
            )
    if not config.sampler.nfe:  # a saved budget cleared (levels given instead) is no setting
        saved = dataclasses.replace(saved, sampler=dataclasses.replace(saved.sampler, nfe=0))
    check_reads(job or args.command, config, saved)
    return config


def _not_a_run_file(path: Path, run: Path | None = None) -> None:
    """Refuse an output ``path`` that is a file of a run (:func:`scorelab.runs.owning_run`):
    of the run ``run`` the command reads (``sample --run RUN --out RUN/losses.npy
    --overwrite`` replaced the run's loss history) or of any other (``export --diffusers
    RUN/checkpoints/p`` wrote a pipeline among a run's checkpoints), nor a path in a run that
    another process writes (:func:`scorelab.runs.busy_run_around`)."""
    from scorelab.runs import busy_run_around, inside, owning_run

    held = busy_run_around(path)
    if held is not None:  # the job would record the file as its work, and --overwrite drop it
        raise ValueError(
            f"{path}: inside the run {held}, which another process is writing (training or "
            "replacing it); write the output elsewhere, or wait for it to finish"
        )
    owner = owning_run(path, run)
    if owner is not None:
        reads = run is not None and inside(owner, run) and inside(run, owner)
        which = ", which this command reads" if reads else ""
        raise ValueError(
            f"{path}: a file of the run {owner}{which}; write the output to another name"
        )


# The files a command reads (argparse destinations): an output may be none of them.
_INPUTS = {
    "config": "--config",
    "samples": "the samples file",
    "data": "--data",
    "points": "--points",
    "init_noise": "--init-noise",
    "step_noise": "--step-noise",
    "settings": "--settings",
    "grid": "--grid",  # a saved grid file (grid --method ld3 --grid G.json --out G.json)
    "sampler.grid": "--grid",
}


def _output(args, path: Path, suffix: str) -> Path:
    """``path``, an output of the command ``args`` runs, checked before any work: never a file
    of a run (:func:`_not_a_run_file`) nor a file the command reads (``pretrained --init-noise
    x.npy --save-array x.npy --overwrite`` replaced the user's noise with the samples), the
    right suffix, a folder that takes a new file (created if missing), and no file there unless
    ``--overwrite``."""
    _not_a_run_file(path, getattr(args, "run", None))
    if path.suffix != suffix:
        raise ValueError(
            f"{path}: the output must be a {suffix} file (give a name ending {suffix})"
        )
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a file name ending {suffix}")
    for dest, name in _INPUTS.items():
        given = getattr(args, dest, None)
        if isinstance(given, str | Path) and path.exists() and Path(given).exists():
            if os.path.samefile(path, given):
                raise ValueError(
                    f"{path}: the same file as {name}, which this command reads; give the "
                    "output another name"
                )
    if path.exists() and not args.overwrite:
        raise ValueError(f"{path}: exists; pass --overwrite to replace it, or choose another name")
    # imports JAX: not before the command
    from scorelab._files import check_writable, expect_new, file_above

    if not args.overwrite:  # nor if another process writes it meanwhile (both said "written")
        expect_new(path)

    if (parent := file_above(path)) is not None:  # was "cannot write in its folder (File exists)"
        raise ValueError(f"{path}: a file inside the file {parent}; choose another path")
    try:  # found now, not after the work (evaluate wrote its metrics, then failed)
        check_writable(path)
    except OSError as error:
        raise ValueError(
            f"{path}: cannot write in its folder ({error.strerror or error}); choose another path"
        ) from error
    return path


def _cmd_train(args) -> int:
    import os

    from scorelab.distributed import initialize_distributed, is_primary, launch_local

    if args.processes is not None and "JAX_COORDINATOR_ADDRESS" not in os.environ:
        from scorelab._validate import check_memory

        if args.processes < 1:
            raise ValueError(f"--processes: must be >= 1, got {args.processes}")
        # Each process is a Python interpreter with JAX loaded: about 512 MiB before any data.
        check_memory("--processes", args.processes * 2.0**29, "start fewer processes")
        # The launcher checks the configuration once (one error line, not one per process),
        # then runs the same command line in each process, which joins the job below.
        config = _experiment(args, _TRAIN_FLAGS, _resumed_config(args))
        batch = config.train.batch_size
        if batch is not None and batch % args.processes:  # refused once, before any start
            raise ValueError(
                f"--batch-size (train.batch_size): {batch} is not divisible by --processes "
                f"{args.processes}, over which the batch is sharded; choose a multiple of "
                f"{args.processes}"
            )
        args.launcher = True  # its processes report an interrupt (_speaks_for_the_job)
        return launch_local([sys.executable, "-m", "scorelab.cli", *args.argv], args.processes)
    if args.processes is not None and os.environ.get("JAX_NUM_PROCESSES") != str(args.processes):
        raise ValueError(
            f"--processes {args.processes}: this process was launched into a job of "
            f"JAX_NUM_PROCESSES={os.environ.get('JAX_NUM_PROCESSES')} processes; drop "
            "--processes when launching the processes yourself"
        )
    from scorelab.workflows import train_run

    initialize_distributed()  # a no-op in one process; joins the job when launched as several
    config = _experiment(args, _TRAIN_FLAGS, _resumed_config(args))
    note = _flat_image_model_note(config)
    if note is not None and is_primary():
        print(note)
    train_run(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        log=lambda line: print(f"data: {line}"),
        inputs=() if args.config is None else (args.config,),
    )
    if not is_primary():
        return 0
    print(f"trained model written to {args.out}")
    return 0


def _flat_image_model_note(config) -> str | None:
    """The note for images trained by ``model.name = "auto"``, an MLP over the flattened
    pixels (``train --data images.npy`` trained one without a word of the U-Net); ``None``
    otherwise."""
    if config.model.name != "auto" or not config.data.is_images:
        return None
    return (
        f"note: model.name auto is {config.model.resolved(config.loss)}, an MLP that sees each "
        "image as one vector of its pixels; a convolutional U-Net is model.name=unet with "
        "model.preconditioning=edm or loss.name=vp_epsilon (docs: Train and sample on images)"
    )


def _resumed_config(args) -> dict | None:
    """The configuration ``train --resume`` starts from, which the command line's file and
    flags then change (:func:`scorelab.runs.resumed_config`); ``None`` without ``--resume``."""
    from scorelab.runs import resumed_config

    return resumed_config(args.out) if args.resume else None


def _cmd_sample(args) -> int:
    import numpy as np

    from scorelab.noise import saved_grid_origin
    from scorelab.runs import atomic_write
    from scorelab.workflows import sample_run, save_sample_grid

    config, model = _source(args, {**_GRID_FLAGS, **_sampler_flags()})
    out = _output(args, args.out, ".npy")
    if args.trajectory is not None:
        _output(args, args.trajectory, ".npy")
        from scorelab._files import resolved  # imports JAX: not before the command runs

        if resolved(args.trajectory) == resolved(out):
            raise ValueError(
                f"--trajectory {args.trajectory}: the same file as --out; give it another name"
            )
        if config.sampler.name == "dpm_adaptive":  # its (2, *S) read as a trajectory: pass 23
            raise ValueError(
                "--trajectory: dpm_adaptive chooses its steps per chain and keeps only its last "
                "two states, not a path from the prior; use tsit5 or dopri5 (their states at "
                "the grid's levels), or drop --trajectory"
            )
    image_shape = config.data.target_image_shape  # flat points that are images
    if args.grid_png is not None:
        _output(args, args.grid_png, ".png")
        if image_shape is None and not config.data.is_images:
            raise ValueError(
                f"--grid-png: samples of {config.data.source} are points (n, d), not images; "
                "drop --grid-png (scorelab plot draws a run's 2-D samples)"
            )
    trajectory = args.trajectory is not None
    result = sample_run(
        config,
        model,
        args.n,
        args.seed,
        trajectory=trajectory,
        batch=args.batch,
        classes=args.classes,
        guidance=args.guidance,
    )
    nfe = f"NFE {result.nfe}"
    if result.nfe_per_chain is not None:
        low, high = int(result.nfe_per_chain.min()), int(result.nfe_per_chain.max())
        nfe = f"NFE {result.nfe:.1f} per chain on average, {low}-{high}"
    if args.guidance:
        nfe += " (guided: two network evaluations per score)"
    if args.grid_png is not None:
        source = args.run.name if args.run is not None else args.exact
        label = f"{source}: {config.sampler.name}, {nfe}, seed {args.seed}"
        if args.guidance:
            label += f", guidance {args.guidance:g}"
        images = result.x if image_shape is None else result.x.reshape(-1, *image_shape)
        save_sample_grid(images, args.grid_png, label=label, labels=result.labels)
    atomic_write(out, lambda handle: np.save(handle, result.x))
    if args.trajectory is not None:
        atomic_write(args.trajectory, lambda handle: np.save(handle, result.trajectory))
    count = f"{len(result.x)} samples"
    if result.labels is not None:
        classes = ", ".join(map(str, dict.fromkeys(result.labels.tolist())))
        count += f" ({args.n} per class, classes {classes} in turn)"
    print(f"{count} ({config.sampler.name}, {nfe}) written to {out}")
    learned, made_for = saved_grid_origin(config.sampler.grid)  # None for a grid by name
    if learned not in (None, config.sampler.name):  # allowed, and said: it was silent
        print(
            f"note: the grid {config.sampler.grid} was learned for {learned} (ld3), and sampled "
            f"here with {config.sampler.name}"
        )
    if made_for not in (None, config.data.source):  # the same: pass 23, #2
        print(
            f"note: the grid {config.sampler.grid} was made for {made_for} data, and sampled "
            f"here on {config.data.source}"
        )
    beyond = config.levels_beyond_training() if model is not None else None
    if beyond is not None:  # allowed (the docs show it), and said: it was silent, pass 23
        print(f"note: {beyond}")
    low, high = float(result.x.min()), float(result.x.max())
    if (image_shape is not None or config.data.is_images) and max(-low, high) > 2:
        # Written unclipped (k-diffusion's samplers, the library's, do not clip); said, as
        # likelihood and evaluate then refuse them: ±700 after a few training steps was silent.
        print(
            f"note: the samples' values lie in [{low:.4g}, {high:.4g}], far beyond the images' "
            "[-1, 1] (an undertrained model?); a grid (--grid-png) clips them, and evaluate and "
            "likelihood take images in [-1, 1]: train longer, or clip them with "
            "np.clip(x, -1, 1)"
        )
    if args.grid_png is not None:
        print(f"grid written to {args.grid_png}")
    if model is not None and config.loss.name == "dsm":
        sigma = f"{config.loss.sigma:g}"
        print(
            f"the model learned the data noised at sigma {sigma}: compare with that law by "
            f"`scorelab evaluate {out} --sigma {sigma} --target/--data ...`"
        )
    return 0


def _cmd_evaluate(args) -> int:
    from scorelab._files import same_file
    from scorelab.runs import write_json
    from scorelab.workflows import evaluate_samples

    if args.json is not None:
        _output(args, args.json, ".json")
    if args.data is not None and same_file(args.samples, args.data):  # distances of about 0
        print(f"note: {args.samples} is measured against itself (--data names the same file)")
    report = evaluate_samples(
        args.samples,
        target=args.target,
        data=None if args.data is None else str(args.data),
        floor_repeats=args.floor_repeats,
        sigma=args.sigma,
        progress=not args.quiet,
        layout=args.layout,
        pixel_range=args.pixel_range,
        array=args.array,
        log=print,
    )
    print(report.text())
    if args.json is not None:
        write_json(args.json, report.to_dict())
        print(f"metrics written to {args.json}")
    return 0


def _cmd_plot(args) -> int:
    from scorelab.demo import plot_demo
    from scorelab.image_demo import is_image_demo, plot_image_demo
    from scorelab.workflows import plot_run

    out = args.out if args.out is not None else args.run / "figures"
    _not_a_run_file(out, args.run)
    if out.exists() and not out.is_dir():  # was 'File exists; choose another path'
        raise ValueError(f"--out {out}: a file, not a folder; give a folder for the figures")
    if out.is_symlink() and not out.exists():  # 'cannot create the folder (File exists)'
        raise ValueError(
            f"--out {out}: a symbolic link to {os.readlink(out)}, which does not exist; create "
            "that folder or choose another"
        )
    from scorelab._files import expect_new, resolved, resolves_into
    from scorelab.runs import inside, locked

    # RUN/figures holds the run's own figures, redrawn from the run (the same seed, the same
    # figures); any other folder may hold a user's files of the same names, RUN/figures as a
    # link out of the run too (plot replaced a user's figures there).
    own = args.out is None and resolves_into(out, args.run)
    if not own and out.is_dir() and any(out.iterdir()) and not args.overwrite:
        where = f"--out {out}" if args.out is not None else f"{out} (a link to {resolved(out)})"
        raise ValueError(
            f"{where}: a folder that is not empty; pass --overwrite to replace figures "
            "there, or choose a new folder"
        )
    if not own and not args.overwrite:  # absent or empty: nor another's figures
        expect_new(out)

    # Into the run itself (RUN/figures): not while another job trains or replaces it.
    within = inside(out, args.run) and args.run.is_dir()
    with locked(args.run) if within else contextlib.nullcontext():
        if is_image_demo(args.run):
            written = plot_image_demo(args.run, out)
        elif (args.run / "demo.json").is_file():
            written = plot_demo(args.run, out)
        else:
            written = plot_run(args.run, out)
    for path in written:
        print(path)
    return 0


def _cmd_export(args) -> int:
    from scorelab.diffusers import export_pipeline
    from scorelab.runs import enclosing_run, load_run

    _not_a_run_file(args.diffusers, args.run)
    run = enclosing_run(args.diffusers, args.run)
    if run is not None:  # `train --out RUN --overwrite` would delete the pipeline
        raise ValueError(
            f"--diffusers {args.diffusers}: inside the run {run}, whose replacement "
            "(--overwrite) would delete it; choose a folder outside any run"
        )
    _, model = load_run(args.run)
    print(export_pipeline(model, args.diffusers))  # a VPEpsilonUNet, or refused
    classes = dict(model.network.unet.config).get("num_class_embeds")
    if classes is not None:  # a folder DDIMPipeline loads, then cannot run, said nothing
        print(
            f"note: a class-conditional U-Net ({classes} class embeddings): diffusers' "
            "UNet2DModel loads it and takes class_labels, but DDIMPipeline and scorelab "
            "pretrained pass no class; sample the run with scorelab sample --run RUN --class K"
        )
    return 0


def _demo_dir(args, default: str) -> Path:
    """``--out/--name``: the demo's run directory, ``--name`` a plain folder name (a path
    there could name ``--out`` itself or a folder above it, which ``--overwrite`` empties)."""
    name = default if args.name is None else args.name
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"--name {name!r}: give a plain folder name (no path), e.g. my-demo")
    return Path(args.out) / name


def _settings_file(path: Path, from_dict, **options):
    """``from_dict`` of the TOML file ``path`` (``demo --settings``), its errors naming the
    file: they named the field alone (``demo.n_data: ...``), unlike ``train --config``'s."""
    from scorelab._validate import in_file
    from scorelab.config import load_config

    values = load_config(path)
    with in_file(path):
        return from_dict(values, **options)


def _cmd_demo(args) -> int:
    from scorelab.demo import DemoSettings, run_demo
    from scorelab.runs import prepare_run_dir

    if args.which == "images":
        return _image_demo(args)
    settings = DemoSettings.full() if args.full else DemoSettings()
    if args.settings is not None:
        settings = _settings_file(args.settings, DemoSettings.from_dict, base=settings)
    out = _demo_dir(args, "demo")
    inputs = () if args.settings is None else (args.settings,)
    with prepare_run_dir(
        out, resume=args.resume, overwrite=args.overwrite, inputs=inputs, job="demo"
    ):
        run_demo(settings, out, progress=not args.quiet, resume=args.resume)
    return 0


def _image_demo(args) -> int:
    from scorelab.image_demo import ImageDemoSettings, run_image_demo
    from scorelab.report import Report
    from scorelab.runs import prepare_run_dir

    if args.full:
        raise ValueError("--full: the image demo has one setting; use --settings FILE.toml")
    settings = ImageDemoSettings()
    if args.settings is not None:
        settings = _settings_file(args.settings, ImageDemoSettings.from_dict)
    out = _demo_dir(args, "demo-images")
    inputs = () if args.settings is None else (args.settings,)
    with prepare_run_dir(
        out, resume=args.resume, overwrite=args.overwrite, inputs=inputs, job="demo images"
    ):
        results = run_image_demo(settings, out, progress=not args.quiet, resume=args.resume)
    print(Report(results["rows"], results["floors"]).text())
    print(f"\nwrote {out} in {results['seconds']:.0f} s")
    return 0


def _cmd_likelihood(args) -> int:
    import numpy as np

    from scorelab.runs import write_json
    from scorelab.workflows import likelihood_points

    config, model = _source(args, {})
    if args.json is not None:
        _output(args, args.json, ".json")
    n_probes = args.n_probes
    if n_probes not in ("auto", "exact"):
        if not n_probes.isdigit() or int(n_probes) < 1:
            raise ValueError(
                f"--n-probes: expected auto, exact or an integer >= 1, got {n_probes!r}"
            )
        n_probes = int(n_probes)
    result = likelihood_points(
        config,
        model,
        args.points,
        seed=args.seed,
        bin_width=args.bin_width,
        array=args.array,
        n_probes=n_probes,
        probe=args.probe,
        rtol=args.rtol,
        atol=args.atol,
    )
    se = result["standard_error"]
    line = f"log-density {result['mean']:.4f} nats" + (f" +- {se:.2g}" if se else "")
    if "bits_per_dim" in result:
        line += f", {result['mean_bits_per_dim']:.4f} bits/dim"
    print(f"{line} over {len(result['log_prob'])} points ({result['nfe']} score evaluations)")
    if "exact_log_prob" in result:
        print(f"closed form at sigma_min: {float(np.mean(result['exact_log_prob'])):.4f} nats")
    if args.json is not None:
        write_json(args.json, result)
        print(f"written to {args.json}")
    return 0


def _cmd_score_error(args) -> int:
    from scorelab import viz
    from scorelab.runs import load_run, write_json
    from scorelab.workflows import score_error_run

    if args.json is not None:
        _output(args, args.json, ".json")
    if args.plot is not None:
        _output(args, args.plot, ".png")
    saved, model = load_run(args.run)
    config = _run_experiment(args, _SCORE_ERROR_FLAGS, saved)
    profile = score_error_run(config, model, n=args.n, seed=args.seed)
    print(f"relative score error of {args.run} ({profile.n} exact samples per level)")
    print("sigma       E|s_model - s|^2 / E|s|^2   se")
    for sigma, error, se in zip(profile.sigmas, profile.relative_error, profile.standard_error):
        print(f"{sigma:<11.4g} {error:<26.4g} {se:.2g}")
    if args.json is not None:
        write_json(args.json, {"run": str(args.run), **profile.to_dict()})
        print(f"written to {args.json}")
    if args.plot is not None:
        figure = viz.score_error_profile({args.run.name: profile[:3]})
        print(f"figure written to {viz.save_figure(figure, args.plot)}")
    return 0


def _comma_list(kind, example: str = "3 or 3,7"):
    def parse(text: str) -> tuple:
        items = [item.strip() for item in text.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(f"{text!r}: an empty item; write e.g. {example}")
        try:
            return tuple(kind(item) for item in items)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from error

    return parse


# Sweep flags: flag -> (SweepSettings field, type, help); type bool is a switch.
_SWEEP_FLAGS = {
    "--target": ("target", str, "built-in target with an exact score"),
    "--samplers": (
        "samplers",
        _comma_list(str, "euler or euler,heun"),
        "comma list, e.g. euler,heun,dpmpp_2m,edm",
    ),
    "--nfe": ("nfe", _comma_list(int), "comma list of NFE budgets"),
    "--tolerances": (
        "tolerances",
        _comma_list(_float, "1e-3 or 1e-2,1e-3"),
        "rtol = atol of tsit5/dopri5 rows",
    ),
    "--n": ("n_samples", int, "samples per run"),
    "--seeds": ("seeds", _comma_list(int), "comma list of seeds"),
    "--grid": ("grid", str, "karras, geometric, vp, polyexponential, ays:NAME or a .json grid"),
    "--sigma-min": ("sigma_min", float, "smallest sigma of the grid"),
    "--sigma-max": ("sigma_max", float, "largest sigma (the prior's scale)"),
    "--rho": ("rho", float, "Karras grid curvature or polyexponential exponent"),
    "--prior": ("prior", str, "normal, moments (N(m, C + sigma_max^2 I)) or exact (q_sigma_max)"),
    "--image-metrics": ("image_metrics", bool, "classifier metrics (image targets)"),
}


def _cmd_sweep(args) -> int:
    from scorelab.config import ConfigError
    from scorelab.sweep import run_sweep, sweep_settings

    flags = {field: getattr(args, f"sweep_{field}") for field, _, _ in _SWEEP_FLAGS.values()}
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        settings = sweep_settings(args.config, given)
    except ValueError as error:
        # A value of the file, named as written there (it was named by its flag, not given).
        field = str(error).partition(": ")[0].removeprefix("sweep.")
        if args.config is not None and field in flags and field not in given:
            raise ConfigError(f"{args.config}: {error}") from None
        raise
    report, written = run_sweep(
        settings,
        args.out,
        run=args.run,
        inputs=[path for path in (args.config, args.run) if path is not None],
        resume=args.resume,
        overwrite=args.overwrite,
        progress=None if args.quiet else print,
    )
    print(report.text())
    for path in written:
        print(path)
    return 0


def _cmd_grid(args) -> int:
    if args.method == "ld3":
        return _cmd_grid_ld3(args)
    from scorelab.ays import save_grid
    from scorelab.workflows import grid_run

    config, model = _source(args, {**_GRID_FLAGS, **_sampler_flags()})
    out = _output(args, args.out, ".json")
    sigmas, bound, start, about = grid_run(
        config,
        model,
        args.n,
        args.seed,
        n_inner=4 if args.inner is None else args.inner,
        n_candidates=args.candidates,
        n_sweeps=args.sweeps,
        progress=not args.quiet,
    )
    save_grid(out, sigmas, bound=bound, bound_geometric=start, about=about)
    print(f"{len(sigmas)} levels, bound {bound:.4g} (geometric {start:.4g}) written to {out}")
    print(f"use it with --grid {out} (sigma_min {sigmas[0]:g}, sigma_max {sigmas[-1]:g})")
    return 0


def _cmd_grid_ld3(args) -> int:
    from scorelab.ld3 import save_learned_grid
    from scorelab.workflows import LD3_JOB, ld3_grid_run

    if args.inner is not None:
        raise ValueError("--inner: only --method ays draws sigmas inside intervals; leave it out")
    config, model = _source(args, {**_GRID_FLAGS, **_sampler_flags()}, LD3_JOB)
    out = _output(args, args.out, ".json")
    sigmas, error, start, about = ld3_grid_run(
        config, model, args.n, args.seed, n_candidates=args.candidates, n_sweeps=args.sweeps,
        progress=not args.quiet,
    )  # fmt: skip
    save_learned_grid(out, sigmas, error=error, error_start=start, about=about)
    print(
        f"{len(sigmas)} levels for {about['sampler']}, mean squared error {error:.4g} against "
        f"the converged ODE (start {start:.4g}) written to {out}"
    )
    print(
        f"use it with --sampler {config.sampler.name} --grid {out} (sigma_min {sigmas[0]:g}, "
        f"sigma_max {sigmas[-1]:g})"
    )
    return 0


def _cmd_pretrained(args) -> int:
    from scorelab.diffusers import run

    _output(args, args.output, ".png")
    if args.save_array is not None:
        _output(args, args.save_array, ".npy")
    scheduler = {
        "timestep_spacing": args.spacing,
        "steps_offset": args.steps_offset,
        "clip_sample": args.clip,
        "clip_sample_range": args.clip_range,
        "prediction_type": args.prediction_type,
        "set_alpha_to_one": args.set_alpha_to_one,
    }
    try:
        run(
            args.path,
            args.output,
            backend=args.backend,
            seed=args.seed,
            num_inference_steps=args.steps,
            eta=args.eta,
            n=args.n,
            use_clipped_model_output=args.use_clipped_model_output,
            init_noise=args.init_noise,
            step_noise=args.step_noise,
            save_array=args.save_array,
            scheduler=scheduler,
            overwrite=args.overwrite,  # the outputs were checked above, with the flag's words
        )
    except ValueError as error:  # name the flag the user gave, not the library's parameter
        name = str(error).split(" ", 1)[0]
        flag = _PRETRAINED_FLAGS.get(name)
        if flag is None or getattr(args, flag[2:].replace("-", "_")) is None:
            raise  # not an option, or a value the pipeline's own configuration gave
        raise ValueError(f"{flag}: {error}") from error
    print(args.output)
    return 0


# The library parameter behind each `pretrained` flag whose range `run` checks.
_PRETRAINED_FLAGS = {
    "num_inference_steps": "--steps",
    "eta": "--eta",
    "clip_sample_range": "--clip-range",
    "steps_offset": "--steps-offset",
}


def _add_pretrained(commands) -> None:
    pretrained = commands.add_parser(
        "pretrained", help="DDIM-sample a pretrained diffusers DDPM pipeline, natively in JAX"
    )
    pretrained.add_argument(
        "path", type=_name, help="pipeline/model folder, or a hub id in the HF cache"
    )
    pretrained.add_argument("--steps", type=int, default=50, help="DDIM steps")
    pretrained.add_argument("--eta", type=_float, default=0.0, help="DDIM eta (0 deterministic)")
    pretrained.add_argument("--seed", type=int, default=0, help="sampling seed")
    pretrained.add_argument(
        "--n", type=int, help="number of images (default 1, or the --init-noise file's)"
    )
    pretrained.add_argument("-o", "--output", type=_path, default=Path("grid.png"), help="PNG")
    pretrained.add_argument("--init-noise", type=_path, help="x_T .npy, NCHW like diffusers")
    pretrained.add_argument("--step-noise", type=_path, help="step noise .npy (steps, N, C, H, W)")
    pretrained.add_argument("--save-array", type=_path, help="model-space samples to this .npy")
    pretrained.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    pretrained.add_argument("--spacing", choices=["leading", "trailing", "linspace"])
    pretrained.add_argument("--steps-offset", type=int, help="offset of leading timesteps")
    pretrained.add_argument(
        "--clip", action=argparse.BooleanOptionalAction, help="clip predicted x0 (--no-clip)"
    )
    pretrained.add_argument("--clip-range", type=_float, help="x0 clipping bound")
    pretrained.add_argument("--prediction-type", choices=["epsilon", "sample", "v_prediction"])
    pretrained.add_argument(
        "--set-alpha-to-one", action=argparse.BooleanOptionalAction, help="final alpha_bar = 1"
    )
    pretrained.add_argument(
        "--use-clipped-model-output", action="store_true", help="eps from the clipped x0"
    )
    pretrained.add_argument(
        "--backend", choices=["jax", "diffusers"], default="jax", help="diffusers: comparison"
    )
    pretrained.set_defaults(handler=_cmd_pretrained)


def _sampler_epilog() -> str:
    from scorelab import samplers

    lines = ["samplers and their options (--set sampler.options.NAME=VALUE or the flags above):"]
    for name in samplers.SAMPLERS:
        names = ", ".join(option.name for option in samplers.options(name)) or "none"
        lines.append(f"  {name}: {names}")
    return "\n".join(lines)


def _version() -> str:
    """The installed scorelab's version (``unknown`` for a source tree never installed)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("scorelab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``sample`` and ``grid`` get their sampler flags and epilogue
    only when ``argv``'s command is one of them (or ``argv`` is ``None``): generating them
    imports JAX, which other commands' ``--help`` and usage errors need not wait for."""
    command = None if argv is None else next((a for a in argv if not a.startswith("-")), None)
    with_samplers = argv is None or command in ("sample", "grid")
    sampler_flags = _sampler_flags() if with_samplers else {}
    parser = _Parser(prog="scorelab", description="Score-based generative modelling in JAX.")
    parser.add_argument("--version", action="version", version=f"scorelab {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a score model")
    _add_config_flags(train, _TRAIN_FLAGS)
    train.add_argument("--out", type=_path, default=Path("runs/train"), help="run directory")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint (the run's own options are the start: give "
        "only what changes, e.g. --steps)",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="data-parallel over N processes on this machine (jax.distributed; see the "
        "scale-out how-to)",
    )
    train.set_defaults(handler=_cmd_train)

    sample = commands.add_parser(
        "sample",
        help="sample with a trained or exact score",
        epilog=_sampler_epilog() if with_samplers else None,
        formatter_class=_RawDescriptionFormatter,
    )
    source = sample.add_mutually_exclusive_group()
    source.add_argument("--run", type=_path, help="run directory of scorelab train")
    source.add_argument("--exact", metavar="TARGET", help="use the exact score of a target")
    _add_config_flags(sample, {**_GRID_FLAGS, **sampler_flags})
    for old in _RENAMED_FLAGS:
        sample.add_argument(old, action=_Renamed, help=argparse.SUPPRESS)
    sample.add_argument("--n", type=int, default=2000, help="number of samples")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed")
    sample.add_argument(
        "--batch",
        type=int,
        default=65536,
        help="chains per chunk (the same samples, to float rounding with a network)",
    )
    sample.add_argument("--out", type=_path, default=Path("samples.npy"), help="output .npy")
    sample.add_argument("--trajectory", type=_path, help="also save trajectories to this .npy")
    sample.add_argument("--grid-png", type=_path, help="also write image samples as a PNG grid")
    sample.add_argument(
        "--class",
        dest="classes",
        type=_comma_list(int),
        help="classes of a class-conditional model, e.g. 3 or 0,5 (default: every class of its "
        "training images); --n each",
    )
    sample.add_argument(
        "--guidance",
        type=_float,
        default=0.0,
        help="classifier-free guidance weight w >= 0 (a model trained with loss.label_dropout)",
    )
    sample.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    sample.set_defaults(handler=_cmd_sample)

    evaluate = commands.add_parser("evaluate", help="metrics of a samples file, with the floor")
    evaluate.add_argument(
        "samples", type=_path, help=".npy or .csv samples (n, d), or images (n, C, H, W)"
    )
    reference = evaluate.add_mutually_exclusive_group(required=True)
    reference.add_argument("--target", help="a built-in target (exact reference and floor)")
    reference.add_argument(
        "--data",
        type=_path,
        help="reference data .npy/.csv, images (.npy/.npz/folder), a toy set (two_moons, ...: "
        "fresh draws), or 'digits'/'digits16': image metrics (classifier features) of "
        "(n, 1, 8, 8) or (n, 64) images against the digits, floors from the held-out split",
    )
    evaluate.add_argument(
        "--sigma",
        type=_float,
        default=0.0,
        help="compare with the reference noised at this sigma (a DSM model's samples)",
    )
    evaluate.add_argument(
        "--layout",
        default="auto",
        help="an image file's layout: auto, NHWC or NCHW (as the run's data.layout)",
    )
    evaluate.add_argument(
        "--pixel-range",
        default="auto",
        help="an image file's pixel range: auto, 0-255, 0-1 or -1-1 (as the run's "
        "data.pixel_range)",
    )
    evaluate.add_argument(
        "--array",
        metavar="KEY",
        help="the images' key in an .npz of several arrays (as the run's data.array)",
    )
    evaluate.add_argument("--floor-repeats", type=int, default=5, help="repeats of the floor")
    evaluate.add_argument("--json", type=_path, help="write the metrics as JSON")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(handler=_cmd_evaluate)

    plot = commands.add_parser("plot", help="figures and animations of a run")
    plot.add_argument("run", type=_path, help="run directory (scorelab train or demo)")
    plot.add_argument(
        "--out", type=_path, help="figure directory (default RUN/figures, redrawn in place)"
    )
    plot.add_argument(
        "--overwrite", action="store_true", help="replace figures in a non-empty --out folder"
    )
    plot.set_defaults(handler=_cmd_plot)

    export = commands.add_parser("export", help="a trained VP U-Net run as a diffusers pipeline")
    export.add_argument("run", type=_path, help="run directory (scorelab train, model.name=unet)")
    export.add_argument(
        "--diffusers", type=_path, required=True, help="new DDIMPipeline folder (never overwritten)"
    )
    export.set_defaults(handler=_cmd_export)

    demo = commands.add_parser(
        "demo", help="the founding tutorial end to end (or: demo images, a digits U-Net)"
    )
    demo.add_argument(
        "which",
        nargs="?",
        choices=("mixture", "images"),
        default="mixture",
        help="mixture: the tutorial's 2-D mixture (default); images: a U-Net on the digits",
    )
    demo.add_argument("--full", action="store_true", help="mixture: the tutorial's settings")
    demo.add_argument("--name", help="run name (runs/<name>; default demo or demo-images)")
    demo.add_argument("--out", type=_path, default=Path("runs"), help="parent directory of the run")
    demo.add_argument("--settings", type=_path, help="TOML file overriding demo settings")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing demo run")
    demo.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted demo: its models train on from their checkpoints",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_cmd_demo)

    sweep = commands.add_parser("sweep", help="the sampler map: quality against NFE, with floors")
    sweep.add_argument("--config", type=_path, help="TOML file with a [sweep] table")
    for flag, (field, kind, help_text) in _SWEEP_FLAGS.items():
        # A switch (bool) is --flag / --no-flag; absent, the TOML's value or the default holds.
        if kind is bool:
            parse = {"action": argparse.BooleanOptionalAction}
        else:
            parse = {"type": _float if kind is float else kind}
        sweep.add_argument(flag, dest=f"sweep_{field}", default=None, help=help_text, **parse)
    sweep.add_argument(
        "--run",
        type=_path,
        help="also sample a trained model: run directory or saved model (runs/demo/models/ncsn)",
    )
    sweep.add_argument("--out", type=_path, default=Path("runs/sweep"), help="output directory")
    sweep.add_argument("--overwrite", action="store_true", help="replace an existing output")
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep in --out (its rows so far are kept as it runs)",
    )
    sweep.add_argument("--quiet", action="store_true", help="no line per run")
    sweep.set_defaults(handler=_cmd_sweep)

    grid = commands.add_parser(
        "grid",
        help="an optimised grid, saved as JSON: Align-Your-Steps (minimise the discretisation "
        "bound) or ld3 (one ODE sampler's error against the converged ODE)",
    )
    source = grid.add_mutually_exclusive_group()
    source.add_argument("--run", type=_path, help="run directory of scorelab train")
    source.add_argument("--exact", metavar="TARGET", help="use the exact score of a target")
    grid.add_argument(
        "--method",
        choices=("ays", "ld3"),
        default="ays",
        help="ays: the bound, between --sigma-min and --sigma-max; ld3: the grid of --sampler "
        "(its --grid is the start) closest to the converged ODE from its prior's starts",
    )
    _add_config_flags(grid, {**_GRID_FLAGS, **sampler_flags})
    grid.add_argument("--n", type=int, default=1000, help="data points (ays) or starts (ld3)")
    grid.add_argument("--seed", type=int, default=0, help="seed of the draws")
    grid.add_argument(
        "--inner", type=int, default=None, help="ays: sigma draws per interval and point (4)"
    )
    grid.add_argument("--candidates", type=int, default=16, help="positions tried per level")
    grid.add_argument("--sweeps", type=int, default=3, help="coordinate-descent sweeps")
    grid.add_argument("--out", type=_path, default=Path("grid.json"), help="output .json")
    grid.add_argument("--overwrite", action="store_true", help="replace an existing output")
    grid.add_argument("--quiet", action="store_true", help="no progress bar")
    grid.set_defaults(handler=_cmd_grid)

    likelihood = commands.add_parser(
        "likelihood", help="log-density of points by the probability-flow ODE"
    )
    source = likelihood.add_mutually_exclusive_group()
    source.add_argument("--run", type=_path, help="run directory of scorelab train")
    source.add_argument("--exact", metavar="TARGET", help="the exact score of a target")
    _add_config_flags(likelihood, {})
    likelihood.add_argument(
        "--points", type=_path, required=True, help=".npy/.csv points (n, d), or images"
    )
    likelihood.add_argument(
        "--array",
        metavar="KEY",
        help="the images' key in an .npz of several arrays (default: the run's data.array "
        "for the run's own file)",
    )
    likelihood.add_argument(
        "--n-probes", default="auto", help="auto, exact (Jacobian trace) or K Hutchinson probes"
    )
    likelihood.add_argument("--probe", default="rademacher", help="rademacher or gaussian")
    likelihood.add_argument("--bin-width", type=_float, help="quantisation step: bits per dim")
    likelihood.add_argument("--rtol", type=_float, default=1e-5, help="ODE relative tolerance")
    likelihood.add_argument("--atol", type=_float, default=1e-5, help="ODE absolute tolerance")
    likelihood.add_argument("--seed", type=int, default=0, help="seed of probes, dequantisation")
    likelihood.add_argument("--json", type=_path, help="write per-point results as JSON")
    likelihood.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    likelihood.set_defaults(handler=_cmd_likelihood)

    score_error = commands.add_parser(
        "score-error", help="a trained model's relative score error per noise level"
    )
    score_error.add_argument(
        "--run", type=_path, required=True, help="run directory of scorelab train (exact target)"
    )
    _add_config_flags(score_error, _SCORE_ERROR_FLAGS)
    score_error.add_argument("--n", type=int, default=2000, help="exact samples per level")
    score_error.add_argument("--seed", type=int, default=0, help="seed of the exact samples")
    score_error.add_argument("--json", type=_path, help="write the profile as JSON")
    score_error.add_argument("--plot", type=_path, help="write the log-log figure (.png)")
    score_error.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    score_error.set_defaults(handler=_cmd_score_error)

    _add_pretrained(commands)
    return parser


# What to ask for less of when a command runs out of memory.
_SMALLER = {
    "train": "a smaller --batch-size, smaller images or a smaller network",
    "sample": "fewer samples (--n) or a smaller --batch",
    "likelihood": "fewer --points or fewer probes (--n-probes)",
}


def _user_error(error: BaseException, command: str = "", resumable: bool = False) -> str | None:
    """The one-line message for a failure the user can fix, or ``None`` for a bug;
    ``resumable``: the command may be continued with ``--resume`` (``train`` without
    ``--overwrite``: after a refused overwrite, ``--resume`` continued the run it was to
    replace)."""
    import jax

    from scorelab.training import NonFiniteLossError

    if isinstance(error, ValueError | NonFiniteLossError):  # every input check raises these
        return first_line(error)
    if isinstance(error, OverflowError):  # a number past float's range that no check named
        return f"{first_line(error)}: a number given is too large; give a smaller one"
    if isinstance(error, FloatingPointError):  # JAX_DEBUG_NANS stops at the first NaN
        return (
            f"{first_line(error)} (JAX_DEBUG_NANS is set); unset it for scorelab's own check "
            "of non-finite values, which names the step and the remedy"
        )
    if isinstance(error, OSError):
        # A rename (an atomic write's last step) names its destination second: the user's path.
        filename = error.filename2 or error.filename
        where = f"{filename}: " if filename else ""
        remedy = {
            errno.ENOENT: "check the path",
            errno.EACCES: "check its permissions or choose another path",
            errno.EPERM: "check its permissions or choose another path",
            errno.EROFS: "the file system is read-only: choose another path",
            errno.ENOSPC: "the disk is full: free some space and rerun"
            + (" (--resume continues a run from its checkpoint)" if resumable else ""),
            errno.EISDIR: "give a file, not a folder",
            errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EEXIST: "choose another path",  # not every command has --overwrite
            errno.EMFILE: "the process may open too few files: raise its limit (ulimit -n)",
            errno.ENFILE: "the system has too many open files: close some programs and rerun",
            errno.EFBIG: "the file is larger than the process may write: raise its file-size "
            "limit (ulimit -f)",
        }.get(error.errno, "check the path and the disk")
        return f"{where}{error.strerror or error}; {remedy}"
    if _backend_failed(error):  # JAX_PLATFORMS names a platform this machine lacks
        platforms = os.environ.get("JAX_PLATFORMS")
        where = f" (JAX_PLATFORMS={platforms})" if platforms else ""
        reason = "no backend for it" if isinstance(error, AssertionError) else first_line(error)
        return (
            f"JAX cannot start its backend{where}: {reason}; unset JAX_PLATFORMS or set it to a "
            "platform this machine has (cpu)"
        )
    out_of_memory = ("RESOURCE_EXHAUSTED", "Out of memory allocating")  # a GPU's, XLA:CPU's
    if isinstance(error, MemoryError) or (
        isinstance(error, jax.errors.JaxRuntimeError)
        and any(words in str(error) for words in out_of_memory)
    ):
        smaller = _SMALLER.get(command, "smaller sizes (samples, points, steps)")
        return f"out of memory: ask for {smaller}"
    return None


def _by_flag(message: str, parser: argparse.ArgumentParser, command: str) -> str:
    """``message`` with the field it starts with named by the command's flag for it.

    The library's checks name a value by its field (``sample.n``, ``floor_repeats``,
    ``sampler.options.n_steps``), which a user of the command line never typed: the flag is put
    first, and a configuration field (one ``--set`` or a TOML file can give as well) is kept
    beside it, ``--n-steps (sampler.options.n_steps): ...``. A field named ``COMMAND.FIELD``
    after the command itself (``sample.n``) is its ``--field``.
    """
    field, separator, rest = message.partition(": ")
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {
        # A flag's long spelling; a --x/--no-x pair's first (--image-metrics, not --no-...)
        action.dest: next(
            (o for o in action.option_strings if o.startswith("--")), action.option_strings[0]
        )
        for action in subcommands.choices[command]._actions
        if action.option_strings and action.dest != "help"
    }
    # A sweep's settings are sweep_FIELD on the command line, sweep.FIELD in the library; a
    # search's (grid's ays or ld3) are ld3.FIELD there, --FIELD here.
    section, _, name = field.partition(".")
    searched = name if section in ("ays", "ld3") else field
    own = field.removeprefix(f"{command.replace('-', '_')}.")  # score_error.seed: --seed
    for dest in (field, own, field.replace(".", "_"), searched):
        if separator and dest in flags:
            named = f"{flags[dest]} ({field})" if dest == field and "." in field else flags[dest]
            return f"{named}{separator}{rest}"
    return message


def _check_xla_flags() -> None:
    """Refuse an ``XLA_FLAGS`` that XLA cannot parse, before JAX starts in this process.

    XLA reads the variable when the backend starts and aborts the interpreter on an unknown
    flag or a bad value (``F... Unknown flag in XLA_FLAGS: --bogus``, exit 1), which no Python
    code can catch: the backend is started once in a child process instead, only when the
    variable is set, and its refusal becomes one line. Another failure of the child (e.g.
    ``JAX_PLATFORMS``) is left to this process, which names it.
    """
    flags = os.environ.get("XLA_FLAGS", "").strip()
    if not flags:
        return
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if probe.returncode == 0:
        return
    logged = [line.split("] ", 1)[1] for line in probe.stderr.splitlines() if "] " in line]
    reasons = [line for line in logged if "XLA_FLAGS" in line or "interpret value" in line]
    if reasons or any("Flag parsing failed" in line for line in logged):
        reason = reasons[0] if reasons else "flag parsing failed"
        raise ValueError(
            f"XLA_FLAGS={flags!r}: XLA refuses it ({reason}); unset XLA_FLAGS or correct it"
        )


_ADDRESS_SPACE_WARNING = 4 * 2**30
"""An address-space limit (``ulimit -v``) below which a command warns before JAX starts."""


def _address_space_warning(command: str) -> str | None:
    """The warning for an address-space limit (``ulimit -v``) under
    :data:`_ADDRESS_SPACE_WARNING`, or ``None``.

    XLA's CPU runtime reserves address space well beyond the memory it uses (its threads'
    stacks, its allocator's arenas); under a low limit a command ended in a segmentation fault
    or ``std::bad_alloc`` abort that no Python code can catch, without a word of the limit
    (docs: benchmarks, "Under an address-space limit"). The same command may fit, so this
    warns, not refuses.
    """
    limit = address_space_limit()
    if limit is None or limit >= _ADDRESS_SPACE_WARNING:
        return None
    return (
        f"scorelab {command}: warning: ulimit -v limits this process to {limit / 2**30:.3g} GiB "
        "of address space; JAX's runtime reserves more than it uses, and under a few GiB may "
        "end in a segmentation fault instead of an error: raise the limit (ulimit -v unlimited) "
        "if it does"
    )


def _jax_environment_refused() -> str | None:
    """One line naming a JAX environment variable that importing JAX refuses
    (``JAX_TRACEBACK_FILTERING=garbage``, ``JAX_ENABLE_X64=maybe``), or ``None``: the import
    raised a ``ValueError`` with a traceback before any command began. Only when a ``JAX_*``
    variable is set: otherwise other commands' ``--help`` need not wait for JAX."""
    if not any(name.startswith("JAX_") for name in os.environ):
        return None
    try:
        with held_signals():  # an interrupt cut short, jax stayed half-initialised
            import jax  # noqa: F401 - it reads its environment on import
    except ValueError as error:
        text = first_line(error)
        named = re.search(r"for JAX flag (\w+)|for environment '(\w+)'", text)
        if named is None:
            return f"importing JAX failed ({text}); check the JAX_* environment variables"
        variable = (named.group(1) or named.group(2)).upper()
        value = os.environ.get(variable)
        return f"{variable}={value!r}: JAX refuses it ({text}); unset {variable} or correct it"
    return None


def _matplotlib_config() -> None:
    """Give matplotlib a temporary configuration folder, quietly, where its default one cannot
    be made (an unwritable or missing ``HOME``, as in a container run as another user): it made
    one itself, and said so in two lines on every command's stderr. Removed at exit, as
    matplotlib removes its own."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    folder = os.path.join(base, "matplotlib")
    try:
        os.makedirs(folder, exist_ok=True)
        writable = os.access(folder, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        import atexit
        import shutil
        import tempfile

        temporary = tempfile.mkdtemp(prefix="scorelab-matplotlib-")
        atexit.register(shutil.rmtree, temporary, ignore_errors=True)
        os.environ["MPLCONFIGDIR"] = temporary


def _check_mpl_backend() -> None:
    """Refuse an ``MPLBACKEND`` that matplotlib does not know, naming the variable: importing
    matplotlib raised ``Key backend: 'nonsense' is not a valid value ...``, which named neither
    the variable nor a remedy. scorelab draws on Agg canvases whatever the variable says."""
    backend = os.environ.get("MPLBACKEND")
    if not backend:
        return
    try:
        import matplotlib  # noqa: F401 - it validates the variable on import
    except ValueError:
        raise ValueError(
            f"MPLBACKEND={backend!r}: not a matplotlib backend; unset MPLBACKEND or set it to agg"
        ) from None


def _backend_failed(error: BaseException) -> bool:
    """Whether ``error`` is JAX failing to start its backend: a ``RuntimeError`` naming it, or
    (a platform without its plugin, e.g. ``JAX_PLATFORMS=cuda`` on a CPU machine) a bare
    ``AssertionError`` from jax, after which the backend still does not start."""
    import jax

    if isinstance(error, RuntimeError) and "Unable to initialize backend" in str(error):
        return True
    if type(error) is not AssertionError:
        return False
    try:
        jax.devices()
    except Exception:
        return True
    return False


def _warning_printer(command: str):
    """A ``warnings.showwarning`` printing ``scorelab COMMAND: warning: MESSAGE``, one line on
    stderr, like the errors (Python's default adds the file, line and source of the call)."""

    def show(message, category, filename, lineno, file=None, line=None):
        stream = sys.stderr if file is None else file
        print(f"scorelab {command}: warning: {first_line(message)}", file=stream)

    return show


def _pinned_numerics(command: str):
    """The command line computes with :data:`scorelab._jax_settings.PINNED` (float32,
    partitionable threefry keys, JAX's standard promotion), whatever the environment
    (``JAX_ENABLE_X64``, ``JAX_DEFAULT_PRNG_IMPL``, ...) or a Python caller says: its runs are
    float32 networks, its range checks are float32's, and one command and seed give the same
    numbers in every environment. Under x64 a run was an internal error (a float64 loss beside
    a float32 one in the training step); other key implementations drew other samples for one
    seed; ``JAX_NUMPY_RANK_PROMOTION=raise`` failed inside scorelab's own broadcasting. A note
    names what is ignored; a Python caller's settings return afterwards. The Python API
    honours them (the samplers and ``ExactScore`` compute in float64 under x64)."""
    with held_signals():  # an interrupt cut short, jax stayed half-initialised
        from scorelab import _jax_settings  # imports jax, which reads the environment
    ignored = _jax_settings.overridden()
    if ignored:
        print(
            f"scorelab {command}: note: the command line computes in float32 with "
            f"threefry2x32 keys and JAX's standard promotion; {', '.join(ignored)} ignored here "
            "(the Python API honours them)",
            file=sys.stderr,
        )
    return _jax_settings.applied(_jax_settings.PINNED)


_REPEAT_GRACE_S = 5.0
"""Seconds after an interrupt during which another Ctrl-C or SIGTERM is ignored, so the first
one's cleanup (training's checkpoint, the run folder given back) is not cut short."""


@contextlib.contextmanager
def _interruptible(received: list):
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler's time limit, ``kill``, ``timeout``) interrupt
    the command alike, so training keeps its finished steps as a checkpoint (Python's default
    ends the process at once on SIGTERM); each signal is appended to ``received``.

    * A repeat within :data:`_REPEAT_GRACE_S` of the interrupt is only recorded: a double
      Ctrl-C let the first one's cleanup be cut short (a half-claimed run folder, tracebacks).
    * An interrupt raised where Python cannot deliver it (a garbage-collection callback of
      XLA's prints "Exception ignored" and the job went on to exit 0) is raised again at once.
    * SIGINT keeps an inherited "ignore" (a background job's).

    Yields ``closing()``, which the caller calls once it handles the interrupt or an error:
    from then on every signal is only recorded, so the one line and the exit are not cut short.
    The caller's handlers return afterwards; off the main thread, where Python cannot install
    one, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    raised = []  # when each KeyboardInterrupt was raised
    swallowed = []
    closing = []

    def interrupt(signum, frame):
        received.append(signum)
        if closing:
            return
        now = time.monotonic()
        if raised and now - raised[-1] < _REPEAT_GRACE_S and not swallowed:
            return
        swallowed.clear()
        raised.append(now)
        raise KeyboardInterrupt

    hook = sys.unraisablehook

    def unraisable(record):
        if isinstance(record.exc_value, KeyboardInterrupt) and received:
            # Ours, lost in a callback: send it again from another thread, so that it lands
            # once this hook has returned (raised in here, it would be lost again).
            swallowed.append(True)
            threading.Timer(0.05, os.kill, (os.getpid(), received[-1])).start()
        else:
            hook(record)

    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signals.append(signal.SIGINT)
    previous = {number: signal.signal(number, interrupt) for number in signals}
    sys.unraisablehook = unraisable
    try:
        yield lambda: closing.append(True)
    finally:
        sys.unraisablehook = hook
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _quiet_absl():
    """absl's and asyncio's log lines (orbax's: a removed unfinished checkpoint, a damaged one's
    metadata it could not parse, futures of a save cut short) stay off the command's stderr,
    which holds one line per outcome: what orbax cannot do reaches scorelab as an exception,
    which names the checkpoint and the remedy (a damaged checkpoint printed 64 lines of
    TensorStore errors before scorelab's one warning). The callers' levels return afterwards."""
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(max(level, logging.CRITICAL))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _speaks_for_the_job(args) -> bool:
    """Whether this process prints the line of an interrupted job: process 0 of a
    multi-process job says what it kept; the other processes, and the launcher of ``train
    --processes`` (whose processes got the terminal's Ctrl-C, or its SIGTERM), stay silent.
    Each printed its own line before, three for one Ctrl-C of two processes."""
    return not getattr(args, "launcher", False) and os.environ.get("JAX_PROCESS_ID", "0") == "0"


def _interrupted(args, error: KeyboardInterrupt) -> str:
    """The line for an interrupted command: what it kept (the interrupt's message: training's
    checkpoint, a sweep's rows), and how to continue it."""
    line = f"interrupted: {error}" if str(error) else "interrupted"
    # training's TrainingInterrupted, without importing training (an interrupt may have cut
    # the command short before it was imported)
    kept = getattr(error, "last_checkpoint", None) is not None
    if (args.command == "train" and kept) or args.command == "demo":
        line += "; rerun it with --resume (the same settings, without --overwrite) to continue"
    out = getattr(args, "out", None) if getattr(args, "overwrite", False) else None
    runs = sys.modules.get("scorelab.runs")  # imported if the command claimed its run
    if out is not None and runs is not None:
        aside = runs.replaced_run(out)
        if aside is not None:
            line += f"; the run it replaces is kept in {aside} until this one completes"
    return line


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scorelab`` command: parse ``argv``, run the subcommand.

    Subcommands: ``train``, ``sample``, ``evaluate``, ``plot``, ``export``, ``demo``,
    ``sweep``, ``grid``, ``score-error``, ``likelihood`` and ``pretrained`` (``scorelab COMMAND
    --help`` lists each one's flags). A failure the user can fix (a ``ValueError`` from any
    input check, a missing, unreadable or unwritable file, a full disk, a diverged training
    run, too little memory) is printed as one line,
    ``scorelab COMMAND: error: MESSAGE``, on stderr, with exit status 2; any other exception is
    a bug: its traceback and a line asking for a report, exit status 1. From a shell,
    ``scorelab sample --exact seed_mixture --n 500``; from Python,
    ``main(["sample", "--exact", "seed_mixture", "--n", "500"])``.

    Args:
        argv: the arguments after the program name, as a list of strings; ``None`` reads
            ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 after a user error, 1 after a bug, 130 when
        interrupted (Ctrl-C), 143 when terminated (SIGTERM). An interrupted ``train`` first
        checkpoints the steps it finished, which ``--resume`` continues.

    Raises:
        SystemExit: from argparse, status 0 for ``--help``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if sys.stderr is None:  # closed (2>&-): progress bars and messages go nowhere, as asked
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the process's own stream
    refused = _jax_environment_refused()
    if refused is not None:  # before the parser: it imports the samplers, and they JAX
        print(f"scorelab: error: {refused}", file=sys.stderr)
        return 2
    parser = _parser(argv)
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        prog, message = error.args
        print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
        return 2
    args.argv = argv  # what a launcher (train --processes) passes on to its processes
    received = []  # the signals that interrupted the command, if any
    with _interruptible(received) as closing, _quiet_absl():  # first: imports can be cut short
        try:
            _check_xla_flags()  # before this process starts XLA: its refusal is an abort
            limited = _address_space_warning(args.command)  # before a crash it cannot report
            if limited is not None:
                print(limited, file=sys.stderr)
            _matplotlib_config()  # before matplotlib's import, which looks for it
            _check_mpl_backend()
            from scorelab._files import new_outputs  # imports JAX: not before the check

            with (
                warnings.catch_warnings(),
                _pinned_numerics(args.command),
                new_outputs(report=_STDOUT),
                _named_stdout(),
            ):
                warnings.showwarning = _warning_printer(args.command)  # the caller's, restored
                # scorelab's own warnings are shown, not raised, whatever the caller's filters
                # (a short run's EMA warning under `-W error` ended a trained run as a bug)
                warnings.filterwarnings("default", module=r"scorelab(\.|$)")
                return args.handler(args)
        except KeyboardInterrupt as error:
            closing()
            if _speaks_for_the_job(args):
                print(f"scorelab {args.command}: {_interrupted(args, error)}", file=sys.stderr)
            return 128 + (received[0] if received else signal.SIGINT)
        except Exception as error:  # the one boundary: a user's error, or a bug to report
            closing()
            if received:  # an interrupt turned into another error (an import cut short)
                print(f"scorelab {args.command}: interrupted", file=sys.stderr)
                return 128 + received[0]
            if _reader_gone(error):
                return 128 + signal.SIGPIPE
            resumable = args.command == "train" and not getattr(args, "overwrite", False)
            message = _user_error(error, args.command, resumable)
            if message is None:
                traceback.print_exc()
                print(
                    f"scorelab {args.command}: internal error (a bug in scorelab); please "
                    "report it with the command line and the traceback above",
                    file=sys.stderr,
                )
                return 1
            if not isinstance(error, OSError):  # an OSError's message starts with its path
                message = _by_flag(message, parser, args.command)
            if len(message) > _LONGEST:  # tensorstore's quoted its whole spec: 2 KB in a line
                message = f"{message[: _LONGEST - 500]} [...] {message[-400:]}"
            print(f"scorelab {args.command}: error: {message}", file=sys.stderr)
            return 2


_LONGEST = 1500
"""The longest error message printed whole: a longer one keeps its start (what failed) and its
end (the remedy), its middle cut out; a path may be 4096 bytes, and such a message is longer."""


_STDOUT = "standard output"


class _NamedStdout:
    """``sys.stdout``, whose write failures name it: a reader that closed the pipe (``|
    head``) or ``> /dev/full`` raised errors without a file name, reported as "Broken pipe;
    check the path and the disk" or "the disk is full" about no file."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def _named(self, call, *args):
        try:
            return call(*args)
        except OSError as error:
            if error.filename is not None or error.errno is None:
                raise
            raise type(error)(error.errno, error.strerror, _STDOUT) from None

    def write(self, text):
        return self._named(self._stream.write, text)

    def flush(self):
        return self._named(self._stream.flush)


@contextlib.contextmanager
def _named_stdout():
    """Within, ``sys.stdout`` is a :class:`_NamedStdout` of itself; the caller's returns.

    A closed standard output (``scorelab ... >&-``: Python's ``sys.stdout`` is ``None``) stays
    ``None``, so that ``print`` drops the text as Python's own does and the command still writes
    its files."""
    stream = sys.stdout
    sys.stdout = stream if stream is None else _NamedStdout(stream)
    try:
        yield
    finally:
        sys.stdout = stream


def _reader_gone(error: BaseException) -> bool:
    """Whether ``error`` is stdout's reader gone (``scorelab evaluate ... | head -3``): the
    command ends quietly, as a pipeline's writer does, with stdout pointed at the null device
    so that the interpreter's last flush does not fail once more (Python's documented
    remedy)."""
    if not (isinstance(error, BrokenPipeError) and error.filename == _STDOUT):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a stream without a descriptor (a caller's): replace it
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the process's own stream
    finally:
        os.close(devnull)
    return True


def console() -> None:
    """The ``scorelab`` executable: :func:`main` on ``sys.argv``, then exit with its status.

    After an interrupt (status 128 + the signal) the process ends at once, once the output is
    flushed: the command has already released what it held (locks, the run folder, training's
    checkpoint), and Python's own shutdown then raced XLA's threads still computing (a
    segmentation fault after "interrupted") or printed tracebacks of exit callbacks cut short
    by a second Ctrl-C.
    """
    status = main()
    if status >= 128:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):  # closed or gone
                stream.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    console()
