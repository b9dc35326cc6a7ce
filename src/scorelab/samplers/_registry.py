r"""Every sampler by name, generated from the samplers' declared options: what the config, the
CLI, the sweep and the docs build from.

A sampler's options are declared once, as fields of its module (:func:`option`: name, type,
default, one-line help). From them come :data:`SAMPLERS`, :func:`options`,
:func:`sampler_options`, :func:`build_sampler`, :func:`budget_levels` and :func:`label`, so
that a name or a default cannot differ between the library, the configuration, the CLI flags,
the sweep labels and the docs table. Registry names are the constructors' names.
"""

from __future__ import annotations

import functools
import typing
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from scorelab._validate import check_int, check_mapping
from scorelab.samplers._adaptive import dopri5, tsit5
from scorelab.samplers._core import (
    AbstractSampler,
    Option,
    check_option,
    declared_options,
    format_label,
)
from scorelab.samplers._ddim import check_renamed, ddim
from scorelab.samplers._deis import deis, ipndm
from scorelab.samplers._dpm_adaptive import dpm_adaptive
from scorelab.samplers._dpmpp import (
    dpmpp_2m_sde,
    dpmpp_2s_ancestral,
    dpmpp_3m,
    dpmpp_3m_sde,
    dpmpp_sde,
)
from scorelab.samplers._kdpm import dpm_2, dpm_2_ancestral, dpm_solver, euler_churn, lms
from scorelab.samplers._langevin import annealed_langevin, check_score_sigma, mala, ula
from scorelab.samplers._ode import dpmpp_2m, edm, euler, heun
from scorelab.samplers._restart import restart
from scorelab.samplers._sde import ancestral, euler_maruyama, predictor_corrector
from scorelab.samplers._unipc import unipc


class SamplerKind(NamedTuple):
    r"""One registered sampler, generated from its constructor and module class.

    Attributes:
        name: the registry name, the constructor's name (e.g. ``"predictor_corrector"``).
        build: the constructor, ``build(sigmas, **options)`` (ULA and MALA take no grid; MALA
            takes ``log_density_fn`` first).
        options: its declared :class:`Option` records.
        levels: ``levels(nfe, options) -> N``, the largest grid within a budget of ``nfe``
            score evaluations, or ``None`` for a sampler without a grid or an adaptive one.
        uses_grid: whether it walks a sigma grid (all but ULA and MALA).
        needs_log_density: whether it needs :math:`\log p` up to a constant (MALA).
    """

    name: str
    build: Callable[..., AbstractSampler]
    options: tuple[Option, ...]
    levels: Callable[[int, dict[str, Any]], int | None]
    uses_grid: bool
    needs_log_density: bool


def _kind(constructor: Callable[..., AbstractSampler]) -> SamplerKind:
    cls = typing.get_type_hints(constructor)["return"]
    return SamplerKind(
        constructor.__name__,
        constructor,
        declared_options(cls),
        cls.levels,
        cls.uses_grid,
        cls.needs_log_density,
    )


SAMPLERS: dict[str, SamplerKind] = {
    kind.name: kind
    for kind in map(
        _kind,
        (
            ula,
            mala,
            annealed_langevin,
            ddim,
            euler_maruyama,
            ancestral,
            predictor_corrector,
            euler,
            heun,
            edm,
            dpmpp_2m,
            unipc,
            deis,
            ipndm,
            restart,
            tsit5,
            dopri5,
            euler_churn,
            dpm_2,
            dpm_2_ancestral,
            lms,
            dpm_solver,
            dpm_adaptive,
            dpmpp_3m,
            dpmpp_2m_sde,
            dpmpp_3m_sde,
            dpmpp_sde,
            dpmpp_2s_ancestral,
        ),  # fmt: skip
    )
}
"""Every sampler by name: Langevin (``ula``, ``mala``, ``annealed_langevin``), VE-DDIM
(``ddim``), reverse SDE (``euler_maruyama``, ``ancestral``, ``predictor_corrector``),
probability-flow ODE (``euler``, ``heun``, ``edm``, ``dpmpp_2m``, ``unipc``, ``deis``,
``ipndm``, ``restart``), adaptive diffrax solves (``tsit5``, ``dopri5``) and k-diffusion's
family (``euler_churn``, ``dpm_2``, ``dpm_2_ancestral``, ``lms``, ``dpm_solver``,
``dpm_adaptive``, ``dpmpp_3m``, ``dpmpp_2m_sde``, ``dpmpp_3m_sde``, ``dpmpp_sde``,
``dpmpp_2s_ancestral``)."""

RENAMED_SAMPLERS = {"annealed": "annealed_langevin", "pc": "predictor_corrector"}
"""Former registry names and their new spelling."""


def _kind_of(name: str) -> SamplerKind:
    if not isinstance(name, str):  # a list was "unhashable type: 'list'"
        raise ValueError(
            f"unknown sampler {name!r}: expected a sampler's name (a string); accepted: "
            f"{', '.join(SAMPLERS)}"
        )
    if name in RENAMED_SAMPLERS:
        raise ValueError(f"sampler {name!r} is now called {RENAMED_SAMPLERS[name]!r}")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def options(name: str) -> tuple[Option, ...]:
    """The declared options of sampler ``name``: name, type, default, one-line help, choices.

    The one source the configuration table, the CLI flags, the sweep labels and the docs
    table are generated from, e.g. ``options("ddim")`` is ``(Option("eta", float, 1.0, ...),
    Option("final_noise", float, 0.0, ...))``.

    Args:
        name: a key of :data:`SAMPLERS`.

    Returns:
        A tuple of :class:`Option`, in the constructor's order (empty for samplers without
        options, e.g. ``euler``).

    Raises:
        ValueError: for an unknown name (naming the new spelling of a former one).
    """
    return _kind_of(name).options


def sampler_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options of sampler ``name``: its declared defaults updated by ``options``.

    Args:
        name: a key of :data:`SAMPLERS`.
        options: option name -> value, a subset of the sampler's options; ``None`` for the
            defaults.

    Returns:
        A new dict with every option the sampler takes, e.g. ``sampler_options("ddim")`` is
        ``{"eta": 1.0, "final_noise": 0.0}``.

    The values are taken as they are (the configuration checks them against their declared
    types, naming its own fields); :func:`build_sampler`, :func:`budget_levels` and
    :func:`label` check them.

    Raises:
        ValueError: for an unknown sampler (or a name that is not a string) or an option it
            does not take, naming the accepted ones, or the new spelling of a former name
            (``e``, ``eta_0``, ``annealed``, ``pc``).
        TypeError: for ``options`` that is not a mapping (``None`` is the defaults).
    """
    declared = _kind_of(name).options
    if options is not None:  # ["eta"] was dict()'s error
        check_mapping("options", options, "a dict of option name -> value")
    given = dict(options or {})
    check_renamed(given)
    accepted = [o.name for o in declared]
    unknown = sorted((o for o in given if o not in accepted), key=str)
    if unknown:
        names = ", ".join(accepted) or "none"
        raise ValueError(f"sampler {name!r}: unknown option {unknown[0]!r}; accepted: {names}")
    return {**{o.name: o.default for o in declared}, **given}


_PROBE_GRID = np.array([0.02, 80.0], np.float32)
"""The grid the integer options are checked on without one (:func:`_checked_options`): a
constructor's range checks do not depend on its grid."""


def _checked_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`sampler_options`, every value checked against its declared type
    (:func:`check_option`: ``eta = "x"`` and ``eta = nan`` were labelled) and the integer
    options, which size the grid and the steps, against the constructor's own range checks
    (``n_steps_per_level = 0`` and ``order = 0`` were a ``ZeroDivisionError``, ``n_restarts =
    -5`` bought 20 levels). The ranges of the numbers (a negative ``eta``) are left to
    :func:`build_sampler`, which names the sampler in a sweep."""
    chosen = sampler_options(name, options)
    declared = {o.name: o for o in _kind_of(name).options}
    for option, value in chosen.items():
        check_option(declared[option], value)
    counts = {k: v for k, v in chosen.items() if declared[k].type is int}
    if counts:
        _probe(name, tuple(sorted(counts.items())))
    return chosen


@functools.lru_cache(maxsize=256)
def _probe(name: str, counts: tuple[tuple[str, int], ...]) -> None:
    """Build sampler ``name`` with the integer options ``counts`` (the rest their defaults) on
    :data:`_PROBE_GRID`, which runs the constructor's checks of them; once per sampler and
    values (a caller that looks for the smallest budget asks :func:`budget_levels` hundreds of
    times). The grid's own warnings are not the caller's."""
    kind, chosen = SAMPLERS[name], dict(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind.needs_log_density:
            kind.build(lambda x: 0.0, **chosen)
        elif kind.uses_grid:
            kind.build(_PROBE_GRID, **chosen)
        else:
            kind.build(**chosen)


def build_sampler(
    name: str,
    sigmas=None,
    *,
    log_density_fn: Callable | None = None,
    returns_score: bool = False,
    **options,
) -> AbstractSampler:
    r"""The sampler ``name`` on the ascending grid ``sigmas`` with ``options``.

    E.g. ``build_sampler("predictor_corrector", karras_sigmas(50), n_corrector=2)`` or
    ``build_sampler("mala", log_density_fn=target.log_prob, step_size=0.05, n_steps=500)``.

    Args:
        name: a key of :data:`SAMPLERS`.
        sigmas: ``(N,)`` ascending grid; ignored (may be ``None``) for ``ula`` and ``mala``.
        log_density_fn: ``log p(x)`` up to a constant for one ``x``; MALA only.
        returns_score: ``log_density_fn(x)`` returns ``(log p(x), score)`` from one pass, e.g.
            ``target.ve_marginal(sigma).log_prob_and_score`` (MALA's fast path, see
            :func:`scorelab.samplers.mala`; ``sigma`` is then already in the function, and the
            ``sigma`` option is not passed on).
        **options: the sampler's options (:func:`options`); the rest are defaults.

    Returns:
        The sampler, an :class:`AbstractSampler`.

    Raises:
        ValueError: for an unknown name or option (one line naming the new spelling of a
            former one), a missing grid, MALA without ``log_density_fn``, a ``log_density_fn``
            for a sampler that takes none (it was silently dropped), or an option's value out
            of its range (the constructor's message).
        TypeError: for an option's value of another type than declared (:func:`check_option`).
    """
    kind = _kind_of(name)
    chosen = sampler_options(name, options)
    if kind.uses_grid and sigmas is None:
        raise ValueError(f"sampler {name!r} needs a sigma grid")
    if kind.needs_log_density and log_density_fn is None:
        raise ValueError(f"sampler {name!r} needs the target's log-density (log_density_fn)")
    if kind.needs_log_density:
        if returns_score:
            check_score_sigma(chosen.get("sigma", 0.0))  # before it is replaced
            chosen["sigma"] = 0.0  # the noise level is in log_density_fn already
        return kind.build(log_density_fn, **chosen, returns_score=returns_score)
    if returns_score:
        raise ValueError(f"sampler {name!r} takes no log-density (returns_score)")
    if log_density_fn is not None:
        raise ValueError(
            f"sampler {name!r} takes no log-density (log_density_fn); only "
            f"{', '.join(n for n, k in SAMPLERS.items() if k.needs_log_density)} does, leave it out"
        )
    return kind.build(**chosen) if not kind.uses_grid else kind.build(sigmas, **chosen)


def budget_levels(name: str, nfe: int, options: dict[str, Any] | None = None) -> int | None:
    """The largest grid size ``N`` whose NFE fits the budget ``nfe``.

    Each sampler declares its own cost (its class's ``levels``): ``N = nfe`` for one
    evaluation per level, ``(nfe + 1) // 2`` for ``heun`` and ``edm`` (``2N - 1``),
    ``nfe // (M + 1)`` for ``predictor_corrector`` and ``nfe // k`` for ``annealed_langevin``
    with ``k`` steps per level. The result may be below 2, down to 0 (too small a budget for
    any grid); callers skip it.

    Args:
        name: a key of :data:`SAMPLERS`.
        nfe: the budget of score evaluations per chain, a positive integer.
        options: the sampler's options, as :func:`sampler_options`.

    Returns:
        ``N`` as an int, or ``None`` for samplers without a grid (``ula``, ``mala``) or with
        an adaptive one (``tsit5``, ``dopri5``).

    Raises:
        ValueError: for an unknown ``name``, an option the sampler does not take, a value
            not finite in float32, an integer option out of the constructor's range
            (``n_steps_per_level = 0`` was a ``ZeroDivisionError``), or an ``nfe`` that is
            not a positive integer (-5 returned -5 levels).
        TypeError: as :func:`build_sampler`, for an option's value of another type, or
            ``options`` that is not a mapping.
    """
    check_int("nfe", nfe, 1)
    levels = _kind_of(name).levels(nfe, _checked_options(name, options))
    # Restart's restarts cost more than a small budget holds: no grid, not a negative count.
    return levels if levels is None else max(levels, 0)


def label(name: str, options: dict[str, Any] | None = None) -> str:
    """A short label for tables, plots and sweeps: ``name(option=value, ...)``.

    Shows the sampler's main knobs (DDIM's ``eta``, predictor-corrector's ``n_corrector``,
    EDM's ``s_churn``, annealed Langevin's ``n_steps_per_level``, ULA's and MALA's
    ``step_size``, the adaptive solvers' tolerances) and every option away from its default;
    the same text as the built sampler's ``name``, e.g. ``label("ddim")`` is
    ``"ddim(eta=1.0)"`` and ``label("euler")`` is ``"euler"``.

    Args:
        name: a key of :data:`SAMPLERS`.
        options: the sampler's options, a subset; the rest are defaults.

    Returns:
        The label, a string.

    Raises:
        ValueError: as :func:`budget_levels`, for an unknown sampler or option, a value not
            finite in float32 (``eta = nan`` was labelled ``ddim(eta=nan)``) or an integer
            option out of range.
        TypeError: as :func:`budget_levels`.
    """
    kind = _kind_of(name)
    cls = typing.get_type_hints(kind.build)["return"]
    return format_label(name, cls, _checked_options(name, options))
