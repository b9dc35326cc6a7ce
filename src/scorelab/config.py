"""Typed, validated experiment configuration: data, model, loss, sampler (and training).

A configuration is a TOML document with one table per section::

    [data]
    source = "seed_mixture"      # a built-in target, a toy set, or a .npy / .csv path
    [model]
    name = "ncsn_mlp"
    [loss]
    name = "ncsn"
    sigma_max = 80.0
    [train]                      # scorelab.training.TrainConfig
    steps = 2000
    [sampler]
    name = "ddim"
    e = 1.0

:func:`load_config` reads it, :func:`apply_overrides` applies ``section.field=value`` strings
(values parsed as TOML literals), and every section validates itself on construction with a
``ValueError`` whose message starts with ``section.field:`` and names the accepted values.
The CLI is a thin layer over this module.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scorelab import losses, models, samplers
from scorelab._validate import check_choice, check_int, check_real
from scorelab.data import TOY_DATASETS, load_array
from scorelab.noise import GRIDS, sigma_grid
from scorelab.targets import GaussianMixture, seed_mixture
from scorelab.training import TrainConfig

__all__ = [
    "TARGETS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "SamplerConfig",
    "ExperimentConfig",
    "load_config",
    "apply_overrides",
]

TARGETS = {"seed_mixture": seed_mixture}
"""Built-in targets with an exact score, by name."""

MODELS = ("auto", "mlp", "ncsn_mlp")
PRIORS = ("normal", "exact")


class ConfigError(ValueError):
    """An invalid configuration value; the message starts with ``section.field:``."""


def _fail(section: str, field: str, message: str):
    raise ConfigError(f"{section}.{field}: {message}")


def _check_choice(section, field, value, accepted):
    check_choice(f"{section}.{field}", value, accepted, error=ConfigError)


def _check_int(section, field, value, minimum):
    check_int(f"{section}.{field}", value, minimum, error=ConfigError)


def _check_real(section, field, value, accepted: str, test):
    check_real(f"{section}.{field}", value, accepted, test, error=ConfigError)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the training / reference data come from.

    Attributes:
        source: ``"seed_mixture"`` (the tutorial's target, exact score known), a toy set
            (``two_moons``, ``swiss_roll``, ``rings``, ``checkerboard``) or a path to a
            ``.npy`` / ``.csv`` file of shape ``(n, d)``.
        n: number of points drawn from a built-in source (the tutorial uses 10 000).
        seed: seed of the draw (``sample(key(seed), n)``).
    """

    source: str = "seed_mixture"
    n: int = 10_000
    seed: int = 0

    def __post_init__(self):
        _check_int("data", "n", self.n, 1)
        _check_int("data", "seed", self.seed, 0)
        if not self.is_builtin and Path(self.source).suffix.lower() not in (".npy", ".csv"):
            accepted = ", ".join([*TARGETS, *TOY_DATASETS, "a .npy or .csv path"])
            _fail("data", "source", f"unknown source {self.source!r}; accepted: {accepted}")

    @property
    def is_builtin(self) -> bool:
        """Whether ``source`` names a built-in target or toy set (not a file)."""
        return self.source in TARGETS or self.source in TOY_DATASETS

    def target(self) -> GaussianMixture | None:
        """The built-in target with an exact score, or ``None`` for data without one."""
        return TARGETS[self.source]() if self.source in TARGETS else None

    def load(self) -> np.ndarray:
        """The data set as ``float32 (n, d)``; raises FileNotFoundError / DataError for files."""
        key = jax.random.key(self.seed)
        if self.source in TARGETS:
            return np.asarray(TARGETS[self.source]().sample(key, self.n))
        if self.source in TOY_DATASETS:
            return np.asarray(TOY_DATASETS[self.source](key, self.n))
        return load_array(self.source)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The score network.

    Attributes:
        name: ``"mlp"`` (unconditional, for Hyvarinen / sliced / DSM at one sigma),
            ``"ncsn_mlp"`` (noise-conditional, for the NCSN objective), or ``"auto"`` (the
            one the loss needs).
        scale_by_sigma: for ``ncsn_mlp``, divide the output by sigma (Song & Ermon 2020).
        normalise_input: feed the network inputs of unit scale: ``mlp`` divides ``x`` by the
            data's standard deviation (``input_scale``), ``ncsn_mlp`` multiplies it by
            ``1/sqrt(sigma^2 + sigma_data^2)`` with ``sigma_data`` the data's standard
            deviation (EDM's c_in). ``false`` is the tutorial's raw input; see
            :class:`scorelab.models.MLP` for why it matters.
        activation: hidden activation (:data:`scorelab.models.ACTIVATIONS`), or ``"auto"``:
            ``silu`` for the Jacobian-trace losses (Hyvarinen, Hutchinson, sliced), which a
            piecewise-linear network cannot optimise well (see :mod:`scorelab.models`), and the
            tutorial's ``leaky_relu`` otherwise.
        seed: initialisation seed.
    """

    name: str = "auto"
    scale_by_sigma: bool = True
    normalise_input: bool = True
    activation: str = "auto"
    seed: int = 0

    def __post_init__(self):
        _check_choice("model", "name", self.name, MODELS)
        _check_choice("model", "activation", self.activation, ("auto", *models.ACTIVATIONS))
        _check_int("model", "seed", self.seed, 0)

    def build(self, data: np.ndarray, loss: LossConfig):
        """A fresh network for ``data`` of shape ``(n, d)`` and ``loss``, and its constructor
        arguments (what :func:`scorelab.checkpoints.save_model` records)."""
        key = jax.random.key(self.seed)
        dim = int(data.shape[1])
        scale = float(np.std(data)) if self.normalise_input else None
        if scale is not None and not scale > 0:
            scale = 1.0  # constant data: nothing to normalise
        activation = self.resolved_activation(loss)
        if self.resolved(loss) == "mlp":
            kwargs = {
                "dim": dim,
                "input_scale": 1.0 if scale is None else scale,
                "activation": activation,
            }
            return models.MLP(key, **kwargs), kwargs
        kwargs = {
            "dim": dim,
            "scale_by_sigma": self.scale_by_sigma,
            "sigma_data": scale,
            "activation": activation,
        }
        return models.NoiseConditionalMLP(key, **kwargs), kwargs

    def resolved(self, loss: LossConfig) -> str:
        """The network name, with ``auto`` resolved for ``loss``."""
        if self.name != "auto":
            return self.name
        return "ncsn_mlp" if loss.needs_noise_conditional_model else "mlp"

    def resolved_activation(self, loss: LossConfig) -> str:
        """The hidden activation, with ``auto`` resolved for ``loss``."""
        if self.activation != "auto":
            return self.activation
        return "silu" if loss.uses_jacobian_trace else "leaky_relu"


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The training objective and its hyper-parameters (see :mod:`scorelab.losses`).

    Attributes:
        name: ``hyvarinen``, ``hutchinson``, ``sliced``, ``dsm`` or ``ncsn``.
        sigma: DSM noise level (the tutorial's 1.0).
        sigma_min, sigma_max: NCSN noise range.
        n_sigmas: NCSN noise levels per data point (the tutorial's 2).
        sigma_distribution: NCSN sigma draw, ``lognormal`` (the tutorial's) or ``loguniform``.
        n_probes: Hutchinson probes / sliced projections per example.
        probe: Hutchinson probe law, ``rademacher`` or ``gaussian``.
        variance_reduction: sliced score matching's variance-reduced form (SSM-VR).
    """

    name: str = "ncsn"
    sigma: float = 1.0
    sigma_min: float = samplers.DEFAULT_SIGMA_MIN
    sigma_max: float = samplers.DEFAULT_SIGMA_MAX
    n_sigmas: int = 2
    sigma_distribution: str = "lognormal"
    n_probes: int = 1
    probe: str = "rademacher"
    variance_reduction: bool = False

    def __post_init__(self):
        _check_choice("loss", "name", self.name, tuple(losses.LOSSES))
        _check_real("loss", "sigma", self.sigma, "a number > 0", lambda v: v > 0)
        _check_real("loss", "sigma_min", self.sigma_min, "a number > 0", lambda v: v > 0)
        _check_real(
            "loss",
            "sigma_max",
            self.sigma_max,
            f"a number > sigma_min ({self.sigma_min})",
            lambda v: v > self.sigma_min,
        )
        _check_int("loss", "n_sigmas", self.n_sigmas, 1)
        _check_choice(
            "loss", "sigma_distribution", self.sigma_distribution, losses.SIGMA_DISTRIBUTIONS
        )
        _check_int("loss", "n_probes", self.n_probes, 1)
        _check_choice("loss", "probe", self.probe, losses.PROBES)

    @property
    def needs_noise_conditional_model(self) -> bool:
        r"""Whether the loss trains :math:`s_\theta(x, \sigma)` over many sigmas (NCSN)."""
        return self.name == "ncsn"

    @property
    def uses_jacobian_trace(self) -> bool:
        r"""Whether the loss contains :math:`\operatorname{tr} \nabla_x s_\theta(x)` (Hyvarinen,
        Hutchinson, sliced), which needs a smooth hidden activation."""
        return self.name in ("hyvarinen", "hutchinson", "sliced")

    def build(self):
        """The per-example loss ``loss_fn(key, score_fn, x)`` with hyper-parameters bound."""
        fn = losses.LOSSES[self.name]
        kwargs: dict[str, Any] = {
            "hyvarinen": {},
            "hutchinson": {"n_probes": self.n_probes, "probe": self.probe},
            "sliced": {
                "n_projections": self.n_probes,
                "variance_reduction": self.variance_reduction,
            },
            "dsm": {"sigma": self.sigma},
            "ncsn": {
                "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max,
                "n_sigmas": self.n_sigmas,
                "sigma_distribution": self.sigma_distribution,
            },
        }[self.name]
        return functools.partial(fn, **kwargs)


_OPTION = samplers.SAMPLER_OPTIONS  # every sampler option's default, shared with the sweep


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """A sampler, its grid and its hyper-parameters (see :mod:`scorelab.samplers`).

    ``name`` is a key of :data:`scorelab.samplers.SAMPLERS` (the table ``scorelab sweep``
    builds from too); each sampler reads the fields it takes and ignores the others, whose
    defaults are :data:`scorelab.samplers.SAMPLER_OPTIONS`.

    Attributes:
        name: ``ula``, ``mala`` (one noise level), ``annealed`` (annealed Langevin), ``ddim``
            (VE-DDIM), ``euler_maruyama``, ``ancestral``, ``pc`` (reverse SDE), ``euler``,
            ``heun``, ``edm``, ``dpmpp_2m`` (probability-flow ODE), ``tsit5``, ``dopri5``
            (adaptive, diffrax).
        n_levels: number of sigma levels N of the grid (all but ula and mala).
        grid: ``geometric`` (scorelab's default, see :func:`scorelab.samplers.default_sigmas`),
            ``karras`` (the tutorial's, with ``rho``) or ``vp`` (uniform in t for the VP SDE).
        sigma_min, sigma_max, rho: the grid's range and Karras curvature; the tutorial's
            sigma_max is 10, scorelab's default 80 (10 is too small for modes at +-10).
        e: DDIM stochasticity (0 deterministic, 1 ancestral).
        eta_0: DDIM noise of the final step to sigma = 0.
        n_steps: ULA / MALA steps.
        step_size: ULA / MALA step (the tutorial's 1e-2).
        sigma: the noise level ULA / MALA sample at (0 = the data; a DSM model learns
            sigma > 0).
        n_steps_per_level, step_ratio: annealed Langevin.
        n_corrector, snr, step_rule: predictor-corrector's Langevin steps per level, target
            signal-to-noise ratio, and step rule (``sigma`` or Song et al.'s ``snr``).
        s_churn, s_tmin, s_tmax, s_noise: the stochastic EDM sampler's churn.
        rtol, atol, max_steps: the adaptive solvers' tolerances and step limit.
        prior: ``normal`` (x_T ~ N(0, sigma_max^2 I); ULA and MALA start from N(0, 100 I) as
            in the tutorial) or ``exact`` (x_T from the exact q at sigma_max; needs a target).
    """

    name: str = "ddim"
    n_levels: int = 100
    grid: str = "geometric"
    sigma_min: float = samplers.DEFAULT_SIGMA_MIN
    sigma_max: float = samplers.DEFAULT_SIGMA_MAX
    rho: float = 5.0
    e: float = _OPTION["e"]
    eta_0: float = _OPTION["eta_0"]
    n_steps: int = _OPTION["n_steps"]
    step_size: float = _OPTION["step_size"]
    sigma: float = _OPTION["sigma"]
    n_steps_per_level: int = _OPTION["n_steps_per_level"]
    step_ratio: float = _OPTION["step_ratio"]
    n_corrector: int = _OPTION["n_corrector"]
    snr: float = _OPTION["snr"]
    step_rule: str = _OPTION["step_rule"]
    s_churn: float = _OPTION["s_churn"]
    s_tmin: float = _OPTION["s_tmin"]
    s_tmax: float = _OPTION["s_tmax"]
    s_noise: float = _OPTION["s_noise"]
    rtol: float = _OPTION["rtol"]
    atol: float = _OPTION["atol"]
    max_steps: int = _OPTION["max_steps"]
    prior: str = "normal"

    def __post_init__(self):
        positive, non_negative = (
            ("a number > 0", lambda v: v > 0),
            ("a number >= 0", lambda v: v >= 0),
        )
        _check_choice("sampler", "name", self.name, tuple(samplers.SAMPLERS))
        _check_int("sampler", "n_levels", self.n_levels, 2)
        _check_choice("sampler", "grid", self.grid, GRIDS)
        _check_real("sampler", "sigma_min", self.sigma_min, *positive)
        _check_real(
            "sampler",
            "sigma_max",
            self.sigma_max,
            f"a number > sigma_min ({self.sigma_min})",
            lambda v: v > self.sigma_min,
        )
        for field in ("rho", "step_size", "step_ratio", "snr", "rtol", "atol"):
            _check_real("sampler", field, getattr(self, field), *positive)
        for field in ("e", "eta_0", "sigma", "s_churn", "s_tmin", "s_noise"):
            _check_real("sampler", field, getattr(self, field), *non_negative)
        _check_real(
            "sampler",
            "s_tmax",
            self.s_tmax,
            f"a number >= s_tmin ({self.s_tmin})",
            lambda v: v >= self.s_tmin,
        )
        for field in ("n_steps", "n_steps_per_level", "max_steps"):
            _check_int("sampler", field, getattr(self, field), 1)
        _check_int("sampler", "n_corrector", self.n_corrector, 0)
        _check_choice("sampler", "step_rule", self.step_rule, samplers.STEP_RULES)
        _check_choice("sampler", "prior", self.prior, PRIORS)

    @property
    def uses_grid(self) -> bool:
        """Whether the sampler walks a sigma grid (all but ULA and MALA)."""
        return samplers.SAMPLERS[self.name].uses_grid

    def sigmas(self):
        """The ascending grid ``(n_levels,)``."""
        return sigma_grid(self.grid, self.n_levels, self.sigma_min, self.sigma_max, self.rho)

    def build(self, target: GaussianMixture | None = None) -> samplers.Sampler:
        """The :class:`scorelab.samplers.Sampler` this configuration describes.

        Args:
            target: the target whose exact score is sampled, if any; MALA needs its
                log-density (at ``sigma``: the VE-noised marginal's), and refuses without it.
        """
        log_density_fn = None
        if samplers.SAMPLERS[self.name].needs_log_density:
            if target is None:
                _fail(
                    "sampler",
                    "name",
                    f"{self.name!r} needs the target's log-density, which only the exact score "
                    f"of a built-in target has (--exact {'/'.join(TARGETS)}), not a trained model",
                )
            law = target.ve_marginal(self.sigma) if self.sigma > 0 else target
            # One pass for the log-density and the score (MALA's fast path); the score is the
            # same exact score the caller passes to `sample`.
            log_density_fn = law.log_prob_and_score
        options = {field: getattr(self, field) for field in samplers.SAMPLERS[self.name].options}
        sigmas = self.sigmas() if self.uses_grid else None
        return samplers.build_sampler(
            self.name,
            sigmas,
            log_density_fn=log_density_fn,
            returns_score=log_density_fn is not None,
            **options,
        )

    def initial_sigma(self) -> float:
        """The standard deviation of the starting distribution (ULA, MALA: the tutorial's 10)."""
        return self.sigma_max if self.uses_grid else 10.0

    def prior_samples(self, key, n: int, dim: int, target: GaussianMixture | None):
        """Starting points ``(n, dim)``; sample ``i`` depends only on ``fold_in(key, i)``."""
        sigma = self.initial_sigma()
        if self.prior == "exact":
            if target is None:
                _fail("sampler", "prior", "'exact' needs a built-in target with an exact score")
            return samplers.exact_prior(key, target, n, sigma)
        return samplers.ve_prior(key, n, dim, jnp.float32(sigma))


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "sampler": SamplerConfig,
}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """All sections of an experiment."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    sampler: SamplerConfig = SamplerConfig()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from nested mappings, rejecting unknown sections and fields."""
        unknown = sorted(set(values) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; accepted: {list(_SECTIONS)}")
        sections = {}
        for name, section_cls in _SECTIONS.items():
            table = values.get(name, {})
            fields = [f.name for f in dataclasses.fields(section_cls)]
            extra = sorted(set(table) - set(fields))
            if extra:
                raise ConfigError(
                    f"{name}.{extra[0]}: unknown field; accepted: {', '.join(fields)}"
                )
            try:
                sections[name] = section_cls(**table)
            except ConfigError:
                raise
            except ValueError as error:  # TrainConfig's messages start with the field name
                raise ConfigError(f"{name}.{error}") from error
        config = cls(**sections)
        resolved = config.model.resolved(config.loss)
        if config.loss.needs_noise_conditional_model != (resolved == "ncsn_mlp"):
            wanted = "ncsn_mlp" if config.loss.needs_noise_conditional_model else "mlp"
            _fail(
                "model",
                "name",
                f"loss {config.loss.name!r} trains model {wanted!r}, got {config.model.name!r}",
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        """Nested JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}


def load_config(path) -> dict[str, Any]:
    """Read a TOML configuration file into nested dicts (validated by ``from_dict``).

    Args:
        path: a ``.toml`` file with ``[data]``, ``[model]``, ``[loss]``, ``[train]`` and
            ``[sampler]`` tables (each optional).

    Returns:
        ``{section: {field: value}}`` as parsed by ``tomllib``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from error


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides; values are TOML literals, else plain strings.

    Args:
        values: ``{section: {field: value}}``, e.g. from :func:`load_config`.
        overrides: strings such as ``"train.steps=2000"`` or ``"data.source=points.csv"``.

    Returns:
        A new nested dict; ``values`` is not modified.
    """
    result = {section: dict(table) for section, table in values.items()}
    for item in overrides:
        name, sep, raw = item.partition("=")
        section, dot, field = name.strip().partition(".")
        if not sep or not dot or not field:
            raise ConfigError(f"override {item!r}: expected section.field=value")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        result.setdefault(section, {})[field] = value
    return result
