"""The factory: what a configuration (:mod:`scorelab.config`) describes, built.

The configuration sections describe; these functions build the data, the target, the network,
the loss, the grid, the sampler and its starting points from them. Every job
(:mod:`scorelab.workflows`) and the demo build through here, so a section means the same thing
wherever it is used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.tree_util import Partial

from scorelab import losses, models, precond, samplers
from scorelab._validate import check_memory
from scorelab.config import (
    TARGETS,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    SamplerConfig,
)
from scorelab.data import TOY_DATASETS, load_array
from scorelab.noise import sigma_grid
from scorelab.targets import GaussianMixture

__all__ = [
    "make_target",
    "make_data",
    "data_scale",
    "make_model",
    "make_loss",
    "make_sigmas",
    "make_sampler",
    "make_prior",
]


def make_target(config: DataConfig) -> GaussianMixture | None:
    """The built-in target with an exact score, or ``None`` for data without one."""
    return TARGETS[config.source]() if config.source in TARGETS else None


def make_data(config: DataConfig) -> np.ndarray:
    """The data set as ``float32 (n, d)``: ``n`` draws from ``key(seed)`` for a built-in source.

    Raises:
        FileNotFoundError, DataError: for a file that is missing or not valid data.
    """
    key = jax.random.key(config.seed)
    if config.source in TARGETS or config.source in TOY_DATASETS:
        target = TARGETS[config.source]() if config.source in TARGETS else None
        dim = target.dim if target is not None else 2
        check_memory("data.n", 4.0 * config.n * dim * 4, "draw fewer points", error=ConfigError)
        if target is not None:
            return np.asarray(target.sample(key, config.n))
        return np.asarray(TOY_DATASETS[config.source](key, config.n))
    return load_array(config.source)


def data_scale(data: np.ndarray) -> float:
    """The data's standard deviation over all entries (EDM's ``sigma_data``), 1 for constant
    data (nothing to normalise)."""
    scale = float(np.std(data))
    return scale if scale > 0 else 1.0


def _record(cls: type, kwargs: dict) -> dict:
    """The model record of a wrapped network (:func:`scorelab.checkpoints.save_model`)."""
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "kwargs": kwargs}


def make_model(config: ModelConfig, loss: LossConfig, data: np.ndarray, key: Array | None = None):
    """A fresh network for ``data`` ``(n, d)`` and ``loss``, and its constructor arguments.

    Args:
        config: the model section.
        loss: the loss section (``auto`` resolves for it).
        data: ``(n, d)`` training data; its standard deviation scales the inputs when
            ``normalise_input``.
        key: initialisation key; ``None`` uses ``key(config.seed)``.

    Returns:
        ``(model, kwargs)``: the network and what :func:`scorelab.checkpoints.save_model`
        records to rebuild it.
    """
    key = jax.random.key(config.seed) if key is None else key
    dim = int(data.shape[1])
    scale = data_scale(data) if config.normalise_input else None
    activation = config.resolved_activation(loss)
    if config.preconditioning == "edm":
        network_kwargs = {"dim": dim, "activation": activation}
        kwargs = {
            "network": _record(models.ConditionalMLP, network_kwargs),
            "sigma_data": data_scale(data),
        }
        network = models.ConditionalMLP(key, **network_kwargs)
        return precond.EDMPreconditioned(network, kwargs["sigma_data"]), kwargs
    if config.resolved(loss) == "mlp":
        kwargs = {
            "dim": dim,
            "input_scale": 1.0 if scale is None else scale,
            "activation": activation,
        }
        return models.MLP(key, **kwargs), kwargs
    kwargs = {
        "dim": dim,
        "scale_by_sigma": config.scale_by_sigma,
        "sigma_data": scale,
        "activation": activation,
    }
    return models.NoiseConditionalMLP(key, **kwargs), kwargs


def make_loss(config: LossConfig, sigma_data: float | None = None) -> Partial:
    """The per-example loss ``loss_fn(key, score_fn, x)`` with its hyper-parameters bound.

    Args:
        config: the loss section.
        sigma_data: the data's standard deviation (:func:`data_scale`), which EDM's weighting
            needs; ``None`` for the others.

    Raises:
        ValueError: for EDM's weighting without ``sigma_data``.
    """
    weighting = {}  # the default, NCSN's
    if config.weighting == "edm":
        if sigma_data is None:
            raise ValueError("make_loss: loss.weighting 'edm' needs sigma_data (data_scale)")
        weighting = {"weighting_fn": Partial(losses.edm_weighting, sigma_data=sigma_data)}
    kwargs = {
        "hyvarinen": {},
        "hutchinson": {"n_probes": config.n_probes, "probe": config.probe},
        "sliced": {
            "n_projections": config.n_probes,
            "variance_reduction": config.variance_reduction,
        },
        "dsm": {"sigma": config.sigma},
        "ncsn": {
            "sigma_min": config.sigma_min,
            "sigma_max": config.sigma_max,
            "n_sigmas": config.n_sigmas,
            "sigma_distribution": config.sigma_distribution,
            "p_mean": config.p_mean,
            "p_std": config.p_std,
            **weighting,
        },
    }[config.name]
    return Partial(losses.LOSSES[config.name], **kwargs)


def make_sigmas(config: SamplerConfig) -> Array:
    """The ascending grid ``(n_levels,)`` (:func:`scorelab.noise.sigma_grid`)."""
    return sigma_grid(config.grid, config.n_levels, config.sigma_min, config.sigma_max, config.rho)


def make_sampler(config: SamplerConfig, target: GaussianMixture | None = None):
    """The sampler ``config`` describes (:func:`scorelab.samplers.build_sampler`).

    Args:
        config: the sampler section.
        target: the target whose exact score is sampled, if any; MALA needs its log-density
            (at the option ``sigma``: the VE-noised marginal's), and refuses without it.

    Raises:
        ConfigError: for MALA without a target, or options the sampler rejects.
    """
    options = samplers.sampler_options(config.name, config.options)
    log_density_fn = None
    if samplers.SAMPLERS[config.name].needs_log_density:
        if target is None:
            raise ConfigError(
                f"sampler.name: {config.name!r} needs the target's log-density, which only the "
                f"exact score of a built-in target has (--exact {'/'.join(TARGETS)}), not a "
                "trained model"
            )
        sigma = options.get("sigma", 0.0)
        law = target.ve_marginal(sigma) if sigma > 0 else target
        # One pass for the log-density and the score (MALA's fast path); the score is the same
        # exact score the caller passes to `sample`.
        log_density_fn = law.log_prob_and_score
    try:
        return samplers.build_sampler(
            config.name,
            make_sigmas(config) if config.uses_grid else None,
            log_density_fn=log_density_fn,
            returns_score=log_density_fn is not None,
            **options,
        )
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"sampler.options: {error}") from error


def make_prior(
    config: SamplerConfig, key: Array, n: int, dim: int, target: GaussianMixture | None
) -> Array:
    """Starting points ``(n, dim)``; sample ``i`` depends only on ``fold_in(key, i)``.

    The prior's scale is ``sigma_max`` for a sampler that walks a grid, the tutorial's 10 for
    ULA and MALA.

    Raises:
        ConfigError: for ``prior = "exact"`` without a target.
    """
    sigma = config.sigma_max if config.uses_grid else 10.0
    if config.prior == "exact":
        if target is None:
            raise ConfigError("sampler.prior: 'exact' needs a built-in target with an exact score")
        return samplers.exact_prior(key, target, n, sigma)
    return samplers.ve_prior(key, n, dim, jnp.float32(sigma))
