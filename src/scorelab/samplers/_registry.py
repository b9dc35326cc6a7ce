r"""Every sampler by name, with its options and defaults: what the config, the CLI and the sweep
build samplers from.

One table serves :class:`scorelab.config.SamplerConfig` (``scorelab sample``) and
:mod:`scorelab.sweep` (``scorelab sweep``), so that a name or a default cannot differ between
them. An option has the same meaning and default in every sampler that takes it
(:data:`SAMPLER_OPTIONS`); :func:`build_sampler` checks the name and the options and calls the
constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from scorelab.samplers._adaptive import adaptive
from scorelab.samplers._core import Sampler
from scorelab.samplers._ddim import ddim
from scorelab.samplers._langevin import DEFAULT_STEP_RATIO, annealed_langevin, mala, ula
from scorelab.samplers._ode import dpmpp_2m, edm, euler, heun
from scorelab.samplers._sde import DEFAULT_SNR, ancestral, euler_maruyama, predictor_corrector

SAMPLER_OPTIONS: dict[str, Any] = {
    "e": 1.0,
    "eta_0": 0.0,
    "n_steps_per_level": 5,
    "step_ratio": DEFAULT_STEP_RATIO,
    "n_corrector": 1,
    "snr": DEFAULT_SNR,
    # The concentrated form of Song et al.'s rule: their per-chain rule is pathological in
    # 2-D (see predictor_corrector); "snr" selects it.
    "step_rule": "sigma",
    "s_churn": 40.0,
    "s_tmin": 0.05,
    "s_tmax": 50.0,
    "s_noise": 1.003,
    "rtol": 1e-3,
    "atol": 1e-3,
    "max_steps": 4096,
    "n_steps": 1000,
    "step_size": 1e-2,
    "sigma": 0.0,
}
"""Every sampler option and its default: the constructors' own, except ``step_rule`` (above);
ULA's and MALA's step and length are the tutorial's."""


class SamplerSpec(NamedTuple):
    r"""How to build one named sampler.

    Attributes:
        options: the option names it takes (keys of :data:`SAMPLER_OPTIONS`).
        build: ``build(sigmas, log_density_fn, options) -> Sampler``.
        levels: ``(nfe budget, options) -> N``, the largest grid within the budget; ``None`` for
            a sampler without a grid or an adaptive one, which takes no budget.
        uses_grid: whether it walks a sigma grid (all but ULA and MALA).
        needs_log_density: whether it needs :math:`\log p` up to a constant (MALA).
    """

    options: tuple[str, ...]
    build: Callable[..., Sampler]
    levels: Callable[[int, dict], int] | None
    uses_grid: bool = True
    needs_log_density: bool = False


def _per_level(cost: Callable[[dict], int]):
    return lambda nfe, o: nfe // cost(o)


_ONE = _per_level(lambda o: 1)


def _heun_levels(nfe: int, o: dict) -> int:
    return (nfe + 1) // 2  # 2N - 1 evaluations


def _adaptive(solver: str) -> SamplerSpec:
    return SamplerSpec(
        ("rtol", "atol", "max_steps"),
        lambda s, f, o: adaptive(s, solver, o["rtol"], o["atol"], o["max_steps"]),
        None,
    )


SAMPLERS: dict[str, SamplerSpec] = {
    "ula": SamplerSpec(
        ("step_size", "n_steps", "sigma"),
        lambda s, f, o: ula(o["step_size"], o["n_steps"], o["sigma"]),
        None,
        uses_grid=False,
    ),
    "mala": SamplerSpec(
        ("step_size", "n_steps", "sigma"),
        lambda s, f, o: mala(
            f,
            o["step_size"],
            o["n_steps"],
            0.0 if o["returns_score"] else o["sigma"],
            returns_score=o["returns_score"],
        ),
        None,
        uses_grid=False,
        needs_log_density=True,
    ),
    "annealed": SamplerSpec(
        ("n_steps_per_level", "step_ratio"),
        lambda s, f, o: annealed_langevin(s, o["n_steps_per_level"], o["step_ratio"]),
        _per_level(lambda o: o["n_steps_per_level"]),
    ),
    "ddim": SamplerSpec(("e", "eta_0"), lambda s, f, o: ddim(s, e=o["e"], eta_0=o["eta_0"]), _ONE),
    "euler_maruyama": SamplerSpec((), lambda s, f, o: euler_maruyama(s), _ONE),
    "ancestral": SamplerSpec((), lambda s, f, o: ancestral(s), _ONE),
    "pc": SamplerSpec(
        ("n_corrector", "snr", "step_rule"),
        lambda s, f, o: predictor_corrector(s, o["n_corrector"], o["snr"], o["step_rule"]),
        _per_level(lambda o: o["n_corrector"] + 1),
    ),
    "euler": SamplerSpec((), lambda s, f, o: euler(s), _ONE),
    "heun": SamplerSpec((), lambda s, f, o: heun(s), _heun_levels),
    "edm": SamplerSpec(
        ("s_churn", "s_tmin", "s_tmax", "s_noise"),
        lambda s, f, o: edm(s, o["s_churn"], o["s_tmin"], o["s_tmax"], o["s_noise"]),
        _heun_levels,
    ),
    "dpmpp_2m": SamplerSpec((), lambda s, f, o: dpmpp_2m(s), _ONE),
    "tsit5": _adaptive("tsit5"),
    "dopri5": _adaptive("dopri5"),
}
"""Every sampler by name: Langevin (``ula``, ``mala``, ``annealed``), VE-DDIM (``ddim``),
reverse SDE (``euler_maruyama``, ``ancestral``, ``pc``), probability-flow ODE (``euler``,
``heun``, ``edm``, ``dpmpp_2m``) and adaptive diffrax solves (``tsit5``, ``dopri5``)."""


def sampler_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options of sampler ``name``: its defaults (:data:`SAMPLER_OPTIONS`) updated by
    ``options``.

    Args:
        name: a key of :data:`SAMPLERS`.
        options: option name -> value, a subset of the sampler's
            :attr:`SamplerSpec.options`; ``None`` for the defaults.

    Returns:
        A new dict with every option the sampler takes, e.g. ``sampler_options("ddim")`` is
        ``{"e": 1.0, "eta_0": 0.0}``.

    Raises:
        ValueError: for an unknown sampler or an option it does not take, naming the accepted.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}")
    accepted = SAMPLERS[name].options
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        names = ", ".join(accepted) or "none"
        raise ValueError(f"sampler {name!r}: unknown option {unknown[0]!r}; accepted: {names}")
    return {**{k: SAMPLER_OPTIONS[k] for k in accepted}, **(options or {})}


def build_sampler(
    name: str,
    sigmas=None,
    *,
    log_density_fn: Callable | None = None,
    returns_score: bool = False,
    **options,
) -> Sampler:
    r"""The sampler ``name`` on the ascending grid ``sigmas`` with ``options``.

    E.g. ``build_sampler("pc", karras_sigmas(50), n_corrector=2)`` or
    ``build_sampler("mala", log_density_fn=target.log_prob, step_size=0.05, n_steps=500)``.

    Args:
        name: a key of :data:`SAMPLERS`.
        sigmas: ``(N,)`` ascending grid; ignored (may be ``None``) for ``ula`` and ``mala``.
        log_density_fn: ``log p(x)`` up to a constant for one ``x`` ``(d,)``; MALA only.
        returns_score: ``log_density_fn(x)`` returns ``(log p(x), score)`` from one pass, e.g.
            ``target.ve_marginal(sigma).log_prob_and_score`` (MALA's fast path, see
            :func:`scorelab.samplers.mala`; ``sigma`` is then already in the function).
        **options: keys of :data:`SAMPLER_OPTIONS` the sampler takes; the rest are defaults.

    Returns:
        A :class:`Sampler`.

    Raises:
        ValueError: for an unknown name or option, a missing grid, or MALA without
            ``log_density_fn``.
    """
    chosen = sampler_options(name, options)
    spec = SAMPLERS[name]
    if spec.uses_grid and sigmas is None:
        raise ValueError(f"sampler {name!r} needs a sigma grid")
    if spec.needs_log_density and log_density_fn is None:
        raise ValueError(f"sampler {name!r} needs the target's log-density (log_density_fn)")
    if spec.needs_log_density:
        chosen = {**chosen, "returns_score": returns_score}
    elif returns_score:
        raise ValueError(f"sampler {name!r} takes no log-density (returns_score)")
    return spec.build(sigmas, log_density_fn, chosen)


def budget_levels(name: str, nfe: int, options: dict[str, Any] | None = None) -> int | None:
    """The largest grid size ``N`` whose NFE fits the budget ``nfe``.

    ``N = nfe`` for samplers with one evaluation per level, ``(nfe + 1) // 2`` for ``heun``
    and ``edm`` (``2N - 1``), ``nfe // (M + 1)`` for ``pc`` and ``nfe // k`` for
    ``annealed`` with ``k`` steps per level. The result may be below 2 (too small a budget
    for any grid); callers skip it.

    Args:
        name: a key of :data:`SAMPLERS`.
        nfe: the budget of score evaluations per chain, a positive integer.
        options: the sampler's options, as :func:`sampler_options`.

    Returns:
        ``N`` as an int, or ``None`` for samplers without a grid (``ula``, ``mala``) or with
        an adaptive one (``tsit5``, ``dopri5``).

    Raises:
        KeyError: for an unknown ``name``.
        ValueError: for an option the sampler does not take (:func:`sampler_options`).
    """
    spec = SAMPLERS[name]
    if spec.levels is None:
        return None
    return spec.levels(nfe, sampler_options(name, options))
