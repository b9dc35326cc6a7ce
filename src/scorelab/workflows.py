"""The jobs as library functions: train a run, sample, evaluate with the floor, plot.

Each function takes a validated :class:`scorelab.config.ExperimentConfig` (or paths) and does
one job by composing :mod:`scorelab.builders` and the maths core; ``scorelab.cli`` only parses
arguments and calls these, and :mod:`scorelab.demo` is composed of the same steps.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import numbers
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from scorelab import _jax_settings, ays, builders, ld3, metrics, samplers, viz
from scorelab._files import jsonable, same_file
from scorelab._signals import held_signals
from scorelab._validate import (
    available_memory,
    check_callable,
    check_instance,
    check_int,
    check_mapping,
    check_memory,
    check_real,
    check_seed,
    check_sigma,
    first_line,
    is_real_dtype,
)
from scorelab.checkpoints import save_model
from scorelab.classifier import load_digits_classifier
from scorelab.config import (
    TARGET_IMAGE_SHAPES,
    TARGETS,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    is_builtin_source,
)
from scorelab.data import (
    IMAGE_SOURCES,
    TOY_DATASETS,
    DataError,
    digits,
    is_image_file,
    load_array,
    load_images,
    npy_header,
    read_npy,
    validate_data,
)
from scorelab.distributed import is_primary
from scorelab.models import MLP, ExactScore, NoiseConditionalMLP
from scorelab.noise import check_rho_shapes
from scorelab.precond import EDMPreconditioned
from scorelab.report import Report, floors, image_evaluation, measure
from scorelab.runs import (
    RUN_FILES,
    atomic_write,
    check_not_busy,
    has_checkpoints,
    load_run,
    make_folder,
    manifest,
    model_data_mismatch,
    prepare_run_dir,
    read_losses,
    settle,
    write_json,
)
from scorelab.score_error import ScoreErrorProfile, score_error_profile
from scorelab.targets import GaussianMixture
from scorelab.training import TrainResult, train

__all__ = [
    "JOB_READS",
    "GRID_FIELDS",
    "check_reads",
    "check_read",
    "SampleResult",
    "train_run",
    "score_model",
    "sample_run",
    "evaluate_samples",
    "evaluate_images",
    "evaluate_image_sets",
    "likelihood_points",
    "save_sample_grid",
    "score_error_run",
    "plot_run",
]


JOB_READS: dict[str, tuple[str, ...]] = {
    "train": ("data", "model", "loss", "train", "sampler"),  # the sampler: the run's default
    "sample": ("data.source", "sampler"),
    "grid": ("data.source", "sampler.n_levels", "sampler.sigma_min", "sampler.sigma_max"),
    "grid --method ld3": ("data.source", "sampler"),
    "likelihood": ("data.source", "sampler.sigma_min", "sampler.sigma_max"),
    "score-error": (
        "data.source",
        *(f"sampler.{field}" for field in ("n_levels", "grid", "sigma_min", "sigma_max", "rho")),
    ),
}
"""What each job (``scorelab`` command) reads of its configuration: sections, or
``section.field`` (``sampler`` covers its options). ``grid`` (Align-Your-Steps) and
``likelihood`` read the sampler's range, ``grid --method ld3`` the whole sampler (its grid is
the start, its prior draws the starts), ``score-error`` its grid
(:func:`scorelab.builders.make_sigmas`); of these four, only ``grid --method ld3`` samples."""


GRID_FIELDS = tuple(
    f"sampler.{field}" for field in ("n_levels", "nfe", "grid", "sigma_min", "sigma_max", "rho")
)
"""The sampler section's fields that describe its grid of noise levels."""


def _interruptibly(fn, *args, poll_s: float = 0.05, **kwargs):
    """``fn(*args, **kwargs)``, computed, run in a daemon thread that this one waits for in
    short sleeps, so that Ctrl-C and SIGTERM interrupt a long computation at once.

    Python handles signals in the main thread between bytecodes; a sampler's jitted call
    returns only when XLA is done (the call, not a later wait, takes the time), so Ctrl-C went
    unanswered for minutes. Interrupted, the thread computes on until the process ends
    (the command line ends it at once).
    """
    box = {}
    settings = _jax_settings.current()  # this thread's: the command line's are contexts

    def target():
        try:
            with _jax_settings.applied(settings):
                box["value"] = jax.block_until_ready(fn(*args, **kwargs))
        except BaseException as error:  # re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _reads(job: str, name: str) -> bool:
    """Whether ``job`` reads the field ``name`` (``section.field``) of its configuration."""
    return any(name == read or name.startswith(f"{read}.") for read in JOB_READS[job])


def check_reads(job: str, config: ExperimentConfig, base: ExperimentConfig) -> None:
    """Refuse a setting ``job`` would ignore: a field of ``config`` that differs from ``base``'s
    (what the job starts from: a run's configuration, or the defaults beside an exact target)
    and that ``job`` does not read (:data:`JOB_READS`).

    A job that samples with a sampler of one noise level (``ula``, ``mala``: ``uses_grid``
    false) reads none of the grid's fields (:data:`GRID_FIELDS`): ``sample --sampler ula
    --levels 5`` ran ULA's 1000 steps and said nothing.

    Raises:
        ConfigError: naming the first such field and the jobs, or samplers, that read it.
        ValueError: for a ``job`` that is not a key of :data:`JOB_READS`.
        TypeError: for a ``config`` or ``base`` that is not an ``ExperimentConfig``.
    """
    if not isinstance(job, str) or job not in JOB_READS:
        raise ValueError(f"job: unknown {job!r}; accepted: {', '.join(JOB_READS)}")
    _check_config(config)
    check_instance("base", base, ExperimentConfig, "an ExperimentConfig")
    changed = config.changed_fields(base)
    # A saved grid brings its levels and range: a refusal names the grid the user gave, not
    # the --levels it set (`--sampler ula --grid ays:NAME` was told to leave --levels out).
    if "sampler.grid" in changed:
        changed.remove("sampler.grid")
        changed.insert(0, "sampler.grid")
    for name in changed:
        check_read(job, name)
        if name in GRID_FIELDS and _reads(job, "sampler.name") and not config.sampler.uses_grid:
            raise ConfigError(
                f"{name}: sampler {config.sampler.name!r} samples at one noise level "
                "(sampler.options.sigma), not on a grid; leave it out"
            )
        if name == "sampler.rho":
            check_rho_shapes(name, config.sampler.grid, ConfigError)


def check_read(job: str, name: str) -> None:
    """Refuse the field ``name`` (``section.field``) unless ``job`` reads it; the message
    names the jobs that do.

    Raises:
        ConfigError: ``name: scorelab JOB does not read it (read by scorelab ...); leave it
            out``.
    """
    if not _reads(job, name):
        readers = ", ".join(other for other in JOB_READS if _reads(other, name))
        raise ConfigError(
            f"{name}: scorelab {job} does not read it (read by scorelab {readers}); leave it out"
        )


def _check_config(config) -> None:
    """Refuse a ``config`` that is not an :class:`~scorelab.config.ExperimentConfig` (a dict
    or ``None`` failed deep inside with an AttributeError)."""
    check_instance(
        "config",
        config,
        ExperimentConfig,
        "an ExperimentConfig (ExperimentConfig.from_dict(...) of a dict)",
    )


def _check_flag(name: str, value) -> None:
    """Refuse a flag that is not ``True`` or ``False`` (the string ``"no"`` is truthy)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name}: expected True or False, got {value!r}")


def train_run(
    config: ExperimentConfig,
    out_dir,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: np.ndarray | None = None,
    init_key: jax.Array | None = None,
    train_key: jax.Array | None = None,
    log: Callable[[str], None] | None = None,
    inputs: tuple = (),
    **manifest_extra: Any,
) -> TrainResult:
    """Train the model ``config`` describes and write a run directory (see :mod:`scorelab.runs`).

    ``scorelab train`` calls it with the defaults; the demo passes its own data and named keys,
    and its runs are ordinary run directories all the same.

    The run directory is locked for the whole run (:func:`scorelab.runs.prepare_run_dir`): a
    second process refuses it, and a run already there is continued only with ``resume`` (the
    whole configuration must match, ``train.steps`` may grow) or replaced only with
    ``overwrite``. Every file is written atomically.

    In a multi-process JAX job (:mod:`scorelab.distributed`; ``scorelab train --processes``)
    every process calls this with the same arguments: all train (the batch is sharded over
    every process's devices) and write the orbax checkpoints together; process 0 alone locks
    the run directory and writes the model, losses, configuration and manifest, so the run
    directory is that of a one-process run. The others return the same result.

    Args:
        config: the experiment.
        out_dir: the run directory.
        resume: continue from the newest intact checkpoint.
        overwrite: replace a run already in ``out_dir``.
        progress: show a progress bar.
        data: ``(n, d)`` points or ``(n, C, H, W)`` images; ``None`` builds them from
            ``config.data``.
        init_key, train_key: the network's initialisation key and the training key; ``None``
            uses ``key(config.model.seed)`` and ``key(config.train.seed)``.
        log: receives one line describing image data as loaded (shape, layout, scaling).
        **manifest_extra: more JSON-serialisable fields for ``manifest.json``.

    Returns:
        The :class:`scorelab.training.TrainResult`; the model written is its EMA model where
        the run keeps one, else the last iterate.

    Raises:
        TypeError: for a ``config`` that is not an ``ExperimentConfig``, ``data`` that is not
            an array, or a ``manifest_extra`` value that is not JSON-serialisable (naming it),
            all before the run directory is claimed.
        ConfigError: for settings training would ignore, ``resume`` without a checkpoint, or
            ``data`` whose examples have another shape than ``config.data``'s (a run that
            :func:`scorelab.runs.load_run` would refuse), before training.
        scorelab.data.DataError: for ``data`` that is not a finite ``(n, *S)`` array, before
            the run directory is claimed.

    Warns:
        UserWarning: when ``config.train.ema_decay ** steps`` exceeds 0.05 (without
            ``ema_debias``): the run was shorter than its average, and the saved model keeps
            that share of its initial weights; and, before training, for points ``(n, d)``
            with ``n < max(d, 2)`` (a single point, or an array saved column-wise).
    """
    started = time.perf_counter()
    _check_config(config)
    for field, value in manifest_extra.items():
        try:
            json.dumps(jsonable(value), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{field}: a manifest field must be JSON-serialisable (numbers, strings, lists, "
                f"dicts, arrays), got {type(value).__name__} ({error})"
            ) from None
    if data is not None:
        if not isinstance(data, np.ndarray | jax.Array):
            raise TypeError(
                f"data: expected an array (n, d) or (n, C, H, W), got {type(data).__name__}; "
                "convert it with np.asarray"
            )
        validate_data(data, "data", any_shape=True)  # before the run directory is claimed
    builders.check_fields_read(config)
    check_trained_sampler(config)
    if resume:
        check_not_busy(out_dir)  # a run being written has no checkpoint yet
        settle(out_dir)  # a replacement killed half way: the run it replaced is back
    if resume and not has_checkpoints(out_dir):
        taken = Path(out_dir).is_dir() and any(Path(out_dir).iterdir())
        remedy = "replace the run with --overwrite instead" if taken else "drop --resume"
        raise ConfigError(f"--resume: no checkpoint in {out_dir} to continue; {remedy}")
    labels = None
    given_data = data is not None
    if data is None and config.data.is_images:
        images = builders.make_image_data(config.data)
        data, labels = images.images, images.labels
        if log is not None:
            log(images.description)
    elif data is None:
        data = builders.make_data(config.data)
    num_classes = config.model.num_classes
    if num_classes is not None:
        _check_labels(labels, num_classes)
    elif config.data.labels is not None and labels is not None:
        # read, then dropped: the run came out unconditional and --class refused it
        classes = f"model.num_classes = {int(np.max(labels)) + 1}"
        if (config.model.resolved(config.loss), config.model.preconditioning) != ("unet", "none"):
            # num_classes alone was refused in turn: only the VP U-Net takes it (pass 24)
            classes = f'model.name = "unet", loss.name = "vp_epsilon" and {classes}'
        raise ConfigError(
            f"data.labels: the labels are read but the model is not class-conditional; set "
            f"{classes} (the labels go up to {int(np.max(labels))}), or leave data.labels out"
        )
    else:
        labels = None  # an unconditional model trains on the images alone
    model, model_kwargs = builders.make_model(config.model, config.loss, data, init_key)
    if given_data:
        mismatch = model_data_mismatch(config, model_kwargs)
        if mismatch is not None:
            configured, taken = mismatch
            raise ConfigError(
                f"data: examples of shape {taken} (as the model takes them), but config.data "
                f"({config.data.source}) has examples of shape {configured}, and the run "
                "records config.data: load_run would refuse it; give data of that shape, or a "
                "config whose data.source describes them"
            )
    _warn_few_examples(data)
    source = Path(config.data.source)
    inputs = (*inputs, source) if source.exists() else tuple(inputs)
    # In a multi-process job every process trains and joins in the collective checkpoint
    # writes; process 0 alone holds the run directory and writes the rest.
    with prepare_run_dir(
        out_dir, resume=resume, overwrite=overwrite, inputs=inputs, job="train"
    ) as out_dir:
        _check_run_outputs(out_dir)
        result = train(
            jax.random.key(config.train.seed) if train_key is None else train_key,
            model,
            builders.make_loss(config.loss, builders.data_scale(data), num_classes),
            data,
            config.train,
            out_dir=out_dir / "checkpoints",
            resume=resume,
            progress=progress,
            label=f"train {out_dir.name}",
            # The sampler does not enter training: a run resumed with another one (checked
            # above) trains on, and its config.json records the new one.
            run_config={k: v for k, v in config.to_dict().items() if k != "sampler"},
            run_defaults=config.field_defaults(),
            hflip=config.data.hflip,
            labels=labels,
        )
        if not is_primary():
            return result
        trained = result.ema_model if result.ema_model is not None else result.model
        record = manifest(
            config.to_dict(),
            data_shape=list(data.shape),
            wall_seconds=time.perf_counter() - started,
            job="train",
            **manifest_extra,
        )
        # Whole or not at all: an interrupt between these files left a model without its
        # config.json, which sample then called damaged (pass 18B, #2); it comes after them.
        with held_signals():
            save_model(out_dir / "model", trained, **model_kwargs)
            atomic_write(out_dir / "losses.npy", lambda handle: np.save(handle, result.losses))
            write_json(out_dir / "config.json", config.to_dict())
            write_json(out_dir / "manifest.json", record)
    _warn_short_average(config.train)
    return result


def _warn_few_examples(data) -> None:
    """Warn, before training, about points with fewer rows than columns (or one row): a
    ``(2, 500)`` array of 500 points saved column-wise trained as 2 points of 500 dimensions,
    and a single point trained as one, both with exit 0. Images are not judged: a few images
    of many pixels are a legitimate (small) data set."""
    if data.ndim != 2:
        return
    n, dim = data.shape
    if n < max(dim, 2):
        warnings.warn(
            f"data: {n} example(s) of {dim} dimensions, fewer examples than dimensions: the "
            "model can learn little beyond these points; each row is one example, so if each "
            "column is one, transpose the array (array.T)",
            stacklevel=3,
        )


def _warn_short_average(train_config) -> None:
    """Warn when the run was shorter than its EMA's average: the saved model, the average,
    then keeps more than 5% of the untrained initial weights (30 steps at ``ema_decay`` 0.999
    keep 97%, and the run said only that it was written)."""
    decay, steps = train_config.ema_decay, train_config.steps
    initial = 0.0 if decay is None or train_config.ema_debias else decay**steps
    if initial > 0.05:
        warnings.warn(
            f"train.ema_decay {decay:g} averages over about {1 / (1 - decay):.0f} steps, this "
            f"run took {steps}: the saved (averaged) model keeps {initial:.0%} of the initial "
            "weights; train longer, lower train.ema_decay or set train.ema_debias = true",
            stacklevel=3,
        )


def _check_run_outputs(out_dir: Path) -> None:
    """Refuse, before training, a run folder where a file the run writes at its end is taken
    by something that is not a file (a folder of that name, say): the run would train, then
    fail to write."""
    for name in RUN_FILES:
        path = out_dir / name
        if path.exists() and not path.is_file():
            raise ConfigError(
                f"run directory {out_dir}: {name} is not a file, and the run writes it when it "
                "ends; move it away or choose another --out"
            )


def _check_labels(labels, num_classes: int) -> None:
    """Refuse a class-conditional run whose data have no labels, or labels past its classes."""
    if labels is None:
        raise ConfigError(
            "model.num_classes: the data have no class labels; give them (an .npz labels key "
            "with data.labels, or one sub-folder per class) or remove model.num_classes"
        )
    top, distinct = int(np.max(labels)), len(np.unique(labels))
    if top >= num_classes:
        # Sparse labels (3, 7, 100): num_classes 101 trained 98 classes without an example,
        # and sampling drew them all by default (pass 25, #4 and #5).
        renumber = (
            f"renumber the {distinct} distinct labels 0..{distinct - 1} and set num_classes = "
            f"{distinct}, or "
            if distinct <= top
            else ""
        )
        raise ConfigError(
            f"model.num_classes: the data's labels go up to {top}; {renumber}set "
            f"num_classes >= {top + 1}"
        )


def _check_sampler_serves(config: ExperimentConfig, conditional: bool | None) -> None:
    """Refuse a configured sampler that cannot sample a model that is ``conditional`` (a
    noise-conditional network), or not (the score of one law), or of unknown kind (``None``, a
    user's own network): a sampler walking a sigma grid would query the score of one law at
    every level; ULA or MALA at sigma 0 would ask a noise-conditional network for a level it
    never learned."""
    if conditional is False and config.sampler.uses_grid:
        trained = f"loss {config.loss.name!r}"
        if config.loss.name == "dsm":
            trained += f" at sigma {config.loss.sigma:g}"
        raise ConfigError(
            f"sampler.name: {config.sampler.name!r} walks a sigma grid and needs a "
            f"noise-conditional model (trained with --loss ncsn); this model is "
            f"unconditional ({trained}), the score of one distribution: sample it with ULA "
            "(--sampler ula; sampler.name = 'ula')"
        )
    sigma = config.sampler.options.get("sigma", 0.0)
    if conditional and not config.sampler.uses_grid and sigma <= 0:
        raise ConfigError(
            f"sampler.options.sigma: a noise-conditional model needs sigma > 0 for "
            f"{config.sampler.name}, got {sigma}"
        )


def check_trained_sampler(config: ExperimentConfig) -> None:
    """Refuse, before training, a ``[sampler]`` that the trained model could not be sampled
    with: the run saves it, and ``scorelab sample --run`` samples with it (these were trained,
    saved, then refused by every ``sample --run``).

    Raises:
        ConfigError: for a grid sampler and a loss of one law, ULA at sigma 0 and a
            noise-conditional loss, MALA (it needs an exact log-density), or the ``exact``
            prior on data without an exact score.
    """
    # The configuration built the sampler (its options and grid); a trained model has no
    # log-density for MALA.
    builders.check_log_density(config.sampler, None)
    _check_sampler_serves(config, config.loss.needs_noise_conditional_model)
    builders.check_prior(config.sampler.prior, builders.make_target(config.data))


def score_model(config: ExperimentConfig, model, target: GaussianMixture | None):
    """The score to sample with: ``model``, or the exact score of ``target`` (the configured
    one, :func:`scorelab.builders.make_target`).

    Raises:
        ConfigError: for no model and no target; for a bundled network that cannot serve the
            configured sampler: an unconditional :class:`scorelab.models.MLP` (Hyvarinen,
            Hutchinson, sliced, DSM) under a sampler that walks a sigma grid, which would query
            the score of one distribution at every level; or a noise-conditional network under
            ULA at sigma 0.
    """
    from scorelab.diffusers import VPEpsilonUNet

    if model is not None:
        # First: MALA's own refusal, not a remedy of its options that leads to it (pass 24).
        builders.check_log_density(config.sampler, None)
        conditional = None  # a network of the user's own
        if isinstance(model, MLP):
            conditional = False
        elif isinstance(model, NoiseConditionalMLP | EDMPreconditioned | VPEpsilonUNet):
            conditional = True
        _check_sampler_serves(config, conditional)
        return model
    return _exact_score(config, target)


def _exact_score(config: ExperimentConfig, target: GaussianMixture | None) -> ExactScore:
    """The exact score of ``target``, or a ``data.source`` error for data without one."""
    if target is None:
        raise ConfigError(
            f"data.source: no exact score for {config.data.source!r}; "
            f"accepted for --exact: {', '.join(TARGETS)}"
        )
    return ExactScore(target)


def _check_model_on(model, shape: tuple[int, ...], dtype) -> None:
    """Refuse a ``model`` that fails on one point of the data's ``shape`` or returns another
    shape (a model of another dimension failed inside JAX's broadcasting): traced once on
    shapes (:func:`jax.eval_shape`), nothing is computed.

    Raises:
        ConfigError: naming ``model``, the point's shape and what went wrong.
    """
    point = jax.ShapeDtypeStruct(tuple(shape), dtype)
    try:
        out = jax.eval_shape(model, point, jax.ShapeDtypeStruct((), dtype))
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"model: fails on one point of the data, of shape {point.shape} ({first_line(error)}); "
            "give a model of the data's dimension"
        ) from None
    if getattr(out, "shape", None) != point.shape:
        got = getattr(out, "shape", type(out).__name__)
        raise ConfigError(
            f"model: returned shape {got} for one point of the data, of shape {point.shape}; "
            "it must return the score of one point, of its shape (a model of the data's "
            "dimension)"
        )


def _score_at_every_level(config: ExperimentConfig, model, target, need: str):
    """``model``, or the exact score of ``target``, for a job (``need``) that queries the score
    at every noise level: a ``model`` error for an unconditional network (the score of one
    law)."""
    if isinstance(model, MLP):
        raise ConfigError(
            f"model: the run holds an unconditional model (loss {config.loss.name!r}), the "
            f"score of one law; {need} needs the score at every noise level (a model trained "
            "with --loss ncsn)"
        )
    return model if model is not None else _exact_score(config, target)


class SampleResult(NamedTuple):
    """Samples, optional trajectories, and the score evaluations they cost.

    Attributes:
        x: samples ``(n, *S)``: points ``(n, d)`` or images ``(n, C, H, W)``.
        trajectory: ``(n, n_records, *S)``, or ``None`` when not asked for.
        nfe: network evaluations per chain: the sampler's score evaluations, twice over under
            classifier-free guidance (a conditional and an unconditional prediction each); for
            an adaptive solver, whose chains differ, the mean over chains.
        nfe_per_chain: each chain's own count ``(n,)`` for an adaptive solver, else ``None``.
        labels: the class of each sample ``(n,)`` of a class-conditional model, else ``None``.
    """

    x: np.ndarray
    trajectory: np.ndarray | None
    nfe: float
    nfe_per_chain: np.ndarray | None = None
    labels: np.ndarray | None = None


def sample_run(
    config: ExperimentConfig,
    model,
    n: int,
    seed: int,
    *,
    trajectory: bool = False,
    batch: int = 65536,
    classes: list[int] | None = None,
    guidance: float = 0.0,
) -> SampleResult:
    """Draw ``n`` samples with the configured sampler, from ``model`` or the exact score.

    The key ``key(seed)`` is split into a prior key and a sampler key; chain ``i`` depends only
    on index ``i`` of each, so the first ``m`` samples do not depend on ``n``, and the chains
    run ``batch`` at a time (fewer when a stochastic sampler's noise keys for that many would
    take more than half the available memory) with the same result whatever the batch is (bit
    for bit with the exact score; to float rounding with a network, whose matrix products XLA
    blocks by the chunk's size, and so for the first ``m`` of ``n`` samples; an adaptive
    solver's step controller may turn that rounding into other steps, and ``dpm_adaptive``'s
    does so with the exact score too). The memory the samples (and trajectories) need is checked
    before anything is allocated.

    A class-conditional model (:class:`scorelab.diffusers.ClassConditioned`) draws ``n``
    samples of each class of ``classes`` (default: every class of its training images, read
    from the run's data), class after class; class ``y``'s chains use the key
    ``fold_in(key(seed), y)`` as above, so they do not depend on which other classes were
    asked for. A class without a training image is sampled with a ``UserWarning``.

    Raises:
        TypeError: for a ``config`` that is not an ``ExperimentConfig`` or a ``trajectory``
            that is not ``True`` or ``False``.
        ConfigError: for ``n`` or ``batch`` not a positive integer (Python or NumPy), more
            memory than available, a sampler the model cannot serve, or ``classes``/
            ``guidance`` the model cannot take (an unconditional model, a class out of range,
            guidance without a null label).
        ValueError: when chains end non-finite (diverged), naming the sampler and the remedy.
    """
    _check_config(config)
    for name, value in (("sample.n", n), ("sample.batch", batch)):
        check_int(name, value, 1, error=ConfigError)
    n, batch = int(n), int(batch)
    check_seed("sample.seed", seed, error=ConfigError)
    _check_flag("trajectory", trajectory)
    trajectory = bool(trajectory)
    target = builders.make_target(config.data)
    score_fn = score_model(config, model, target)
    state = _state_data(config, target)
    return _sample(
        config, model, target, score_fn, state, n, seed, trajectory, batch, classes, guidance
    )


def _sample(
    config, model, target, score_fn, state, n, seed, trajectory, batch, classes, guidance
) -> SampleResult:
    """:func:`sample_run` once its arguments are checked, with the score ``score_fn`` and the
    state data ``state`` (:func:`_state_data`'s) already read: :func:`plot_run` reads the data
    for its figures, and sampled from a second read."""
    shape, data, labels = state
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        if classes is not None or guidance:
            flag = "--class" if classes is not None else "--guidance"
            what = (
                "an exact score has no classes"
                if model is None
                else "the model is not class-conditional (no num_classes)"
            )
            raise ConfigError(f"{flag}: {what}")
        draws = [(jax.random.key(seed), score_fn)]
        (result,) = _draw(config, model, target, shape, data, draws, n, trajectory, batch)
        return result
    from scorelab.diffusers import ClassConditioned

    trained = _trained_classes(labels, num_classes)
    classes = trained if classes is None else list(classes)
    if len(set(classes)) != len(classes):
        raise ConfigError(f"--class: {classes} names a class twice; give each once")
    unseen = sorted(set(classes) - set(trained))
    if unseen and all(isinstance(y, int | np.integer) and 0 <= y < num_classes for y in unseen):
        warnings.warn(
            f"--class: the run's training images hold no example of class "
            f"{', '.join(map(str, unseen))} (they hold {_listed(trained)}): its samples are the "
            "network's guess",
            UserWarning,
            stacklevel=2,
        )
    check_memory(  # all classes' samples together; each class's chains are checked as drawn
        "sample.n",
        4.0 * n * len(classes) * int(np.prod(shape)) * 2,
        "ask for fewer samples (--n) or classes (--class)",
        error=ConfigError,
    )
    try:  # each class checked (ClassConditioned) before it becomes a key: fold_in takes uint32
        conditioned = [ClassConditioned(score_fn, y, guidance) for y in classes]
    except ValueError as error:
        raise ConfigError(str(error)) from None
    draws = [
        (jax.random.fold_in(jax.random.key(seed), y), score)
        for y, score in zip(classes, conditioned, strict=True)
    ]
    # The guided score is (1 + w) s(x | y) - w s(x): a large w overflows float32.
    cause = f"try a smaller --guidance (w = {guidance:g})" if guidance else ""
    parts = _draw(config, model, target, shape, data, draws, n, trajectory, batch, cause)
    per_chain = [p.nfe_per_chain for p in parts]
    evaluations = conditioned[0].network_evaluations  # the same guidance for every class
    return SampleResult(
        np.concatenate([p.x for p in parts]),
        None if not trajectory else np.concatenate([p.trajectory for p in parts]),
        evaluations
        * (parts[0].nfe if per_chain[0] is None else float(np.mean([p.nfe for p in parts]))),
        None if per_chain[0] is None else evaluations * np.concatenate(per_chain),
        np.repeat(np.asarray(classes, np.int64), n),
    )


def _trained_classes(labels: np.ndarray | None, num_classes: int) -> list[int]:
    """The classes of a class-conditional run's training ``labels``, in order (all
    ``num_classes`` without them): what sampling draws by default (every class drew classes
    without a training example, up to a million of them, pass 25, #4 and #5)."""
    if labels is None:
        return list(range(num_classes))
    return [int(y) for y in np.unique(labels)]


def _listed(values: list, most: int = 10) -> str:
    """``values`` as a comma list, its middle elided past ``most``."""
    if len(values) <= most:
        return ", ".join(map(str, values))
    return f"{', '.join(map(str, values[:5]))}, ..., {', '.join(map(str, values[-3:]))}"


def _state_data(
    config: ExperimentConfig, target: GaussianMixture | None
) -> tuple[tuple[int, ...], np.ndarray | None, np.ndarray | None]:
    """One sample's shape, and the training data and labels without a target: the target's
    ``(d,)`` and ``None`` twice, or the shape of one example, the data and their labels (or
    ``None``), read once for that shape, the prior (:func:`scorelab.builders.make_prior`: the
    data's moments, or its spread) and the classes a class-conditional run was trained on."""
    if target is not None:
        return (target.dim,), None, None
    if config.data.is_images:
        images = builders.make_image_data(config.data)
        return images.images.shape[1:], images.images, images.labels
    data = builders.make_data(config.data)
    return data.shape[1:], data, None


def _draw(
    config, model, target, shape, data, draws, n, trajectory, batch, cause: str = ""
) -> list[SampleResult]:
    """``n`` chains of the configured sampler for each ``(key, score_fn)`` of ``draws``
    (:func:`sample_run`), on states of ``shape``; the sampler is built once. ``data``: the
    training data without a target (:func:`_state_data`), for the prior.

    A warning raised in building the sampler (a step beyond its stability bound) is the
    reason of a divergence: it is the error's remedy when chains end non-finite (one line, not
    a warning and an error), and is issued again otherwise. ``cause`` is a likelier reason,
    named first (a large guidance weight).
    """
    dim = int(np.prod(shape))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # MALA's log-density is the exact target's: only when sampling its exact score.
        sampler = builders.make_sampler(config.sampler, target if model is None else None)
    # The per-step schedule holds a few floats a step (n_steps, n_restarts and the like set it).
    check_memory(
        f"sampler: {sampler.n_steps} steps of {sampler.name}",
        256.0 * sampler.n_steps,
        "take fewer steps (sampler.n_levels or the options that multiply them)",
        error=ConfigError,
    )
    # Each chain splits its key into one per draw before its scan (8 bytes each, and twice
    # that with XLA's temporaries and the draws): a long stochastic sampler runs fewer chains at
    # once (the same numbers whatever the batch).
    keys = 2.0 * sampler.n_steps * sampler.draws_per_step * (8 + 4 * dim)
    if keys:
        check_memory(
            f"sampler: {sampler.n_steps} steps of {sampler.name} (one chain's noise)",
            keys,
            "take fewer steps (sampler.n_levels or the options that multiply them)",
            error=ConfigError,
        )
        batch = max(1, min(batch, int(available_memory() / 2 / keys)))
    records = sampler.n_steps + 1 if trajectory else 0
    check_memory(
        "sample.n",
        4.0 * n * dim * (3 + records),
        "ask for fewer samples (--n)" + (" or no --trajectory" if trajectory else ""),
        error=ConfigError,
    )
    remedy = "; ".join(str(warning.message) for warning in caught) or (
        "take smaller steps (a smaller step size or step ratio, or more levels) and check the "
        "score model"
    )
    remedy = f"{cause}; or {remedy}" if cause else remedy
    results = []
    for key, score_fn in draws:
        key_prior, key_sampler = jax.random.split(key)
        x_init = builders.make_prior(config.sampler, key_prior, n, tuple(shape), target, data)
        chunks = [
            _interruptibly(
                samplers.sample,
                key_sampler,
                sampler,
                score_fn,
                x_init[start : start + batch],
                trajectory,
                first_chain=start,
            )
            for start in range(0, n, batch)
        ]
        out = jax.tree.map(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *chunks)
        finite = np.isfinite(np.asarray(out.x)).all(axis=tuple(range(1, out.x.ndim)))
        if not finite.all():
            raise ValueError(
                f"sampler: {int((~finite).sum())} of {n} chains of {sampler.name} ended "
                f"non-finite (the chains diverged): {remedy}"
            )
        traj = None if out.trajectory is None else np.asarray(out.trajectory)
        if sampler.nfe is not None:
            results.append(SampleResult(np.asarray(out.x), traj, sampler.nfe))
        else:
            per_chain = np.asarray(out.nfe)
            results.append(
                SampleResult(np.asarray(out.x), traj, float(np.mean(per_chain)), per_chain)
            )
    for warning in caught:
        warnings.warn(warning.message, stacklevel=3)
    return results


def grid_run(
    config: ExperimentConfig,
    model,
    n: int,
    seed: int,
    *,
    n_inner: int = 4,
    n_candidates: int = 16,
    n_sweeps: int = 3,
    progress: bool = True,
) -> tuple[np.ndarray, float, float, dict[str, Any]]:
    """An Align-Your-Steps grid for the configured data and score (:mod:`scorelab.ays`):
    ``config.sampler.n_levels`` levels between its ``sigma_min`` and ``sigma_max``; with
    ``progress``, a bar over the search's level moves.

    The data are ``n`` exact samples of the target (``--exact``) or the first ``n`` training
    points of a run's data; the denoiser is Tweedie's of the exact or the trained score.

    Returns:
        ``(sigmas, bound, bound_geometric, about)``: the ascending grid, its bound, the
        geometric grid's, and how it was made (for :func:`scorelab.ays.save_grid`).

    Raises:
        TypeError: for a ``config`` that is not an ``ExperimentConfig``, or a ``model`` that
            is neither callable nor ``None``.
        ConfigError: for ``n`` not a positive integer, fewer than 3 levels, or a model that
            cannot serve a grid.
    """
    _check_config(config)
    if config.sampler.n_levels < 3:  # named by its field (and flag), before any data are drawn
        raise ConfigError(
            f"sampler.n_levels: an optimised grid needs at least 3 levels, got "
            f"{config.sampler.n_levels}"
        )
    check_int("grid.n", n, 1, error=ConfigError)
    n = int(n)
    check_seed("grid.seed", seed, error=ConfigError)
    target = builders.make_target(config.data)
    check_callable("model", model, "score model(x, sigma)", optional=True)
    score_fn = _score_at_every_level(config, model, target, "an Align-Your-Steps grid")
    if target is not None:
        check_memory("grid.n", 4.0 * n * target.dim, "use fewer data points (--n)", ConfigError)
    key_data, key_bound = jax.random.split(jax.random.key(seed))
    if target is not None:
        x_0 = target.sample(key_data, n)
    else:
        x_0 = jax.numpy.asarray(builders.make_data(config.data)[:n])
    if model is not None:  # before the search, not inside its first trace
        _check_model_on(model, x_0.shape[1:], x_0.dtype)
    grid = config.sampler
    sigmas, bound, start = ays.optimise_grid(
        lambda x, sigma: x + sigma**2 * score_fn(x, sigma),
        x_0,
        key_bound,
        grid.n_levels,
        grid.sigma_min,
        grid.sigma_max,
        n_inner=n_inner,
        n_candidates=n_candidates,
        n_sweeps=n_sweeps,
        progress=progress,
    )
    about = {
        "data": config.data.source,
        "score": "exact" if model is None else "model",
        "n_data": int(x_0.shape[0]),
        "seed": seed,
        "n_inner": n_inner,
        "n_candidates": n_candidates,
        "n_sweeps": n_sweeps,
    }
    return sigmas, bound, start, about


LD3_JOB = "grid --method ld3"
"""The job name of :func:`ld3_grid_run` in :data:`JOB_READS`."""


def ld3_grid_run(
    config: ExperimentConfig,
    model,
    n: int,
    seed: int,
    *,
    n_candidates: int = 16,
    n_sweeps: int = 3,
    progress: bool = True,
) -> tuple[np.ndarray, float, float, dict[str, Any]]:
    """A learned grid for the configured sampler, data and score (:mod:`scorelab.ld3`): the
    configured grid is the start, ``n`` starts from the configured prior (key ``key(seed)``) are
    solved by the sampler and by the converged ODE (:func:`scorelab.ld3.teacher`); with
    ``progress``, a bar over the search's sampler passes.

    Returns:
        ``(sigmas, error, error_start, about)``: the ascending grid, its mean squared error
        against the converged ODE on the starts, the start grid's, and how it was made (for
        :func:`scorelab.ld3.save_learned_grid`).

    Raises:
        TypeError: for a ``config`` that is not an ``ExperimentConfig``.
        ConfigError: for ``n`` not a positive integer, more memory than available, a model
            that cannot serve a grid, or a sampler that is not a deterministic fixed-grid one.
    """
    _check_config(config)
    check_int("grid.n", n, 1, error=ConfigError)
    n = int(n)
    check_seed("grid.seed", seed, error=ConfigError)
    ld3.check_search(n_candidates, n_sweeps, error=ConfigError)  # before the teacher's solve
    target = builders.make_target(config.data)
    score_fn = _score_at_every_level(config, model, target, "a learned grid")
    shape, data, _ = _state_data(config, target)
    # The starts, both solves' outputs and a multistep solver's few denoised states.
    check_memory("grid.n", 4.0 * n * int(np.prod(shape)) * 8, "use fewer starts (--n)", ConfigError)
    sampler = builders.make_sampler(config.sampler)
    if not config.sampler.uses_grid or sampler.nfe is None or sampler.draws_per_step:
        raise ConfigError(
            f"sampler.name: a learned grid needs a deterministic sampler on a fixed grid (an ODE "
            f"solver such as unipc, dpmpp_2m, ipndm or heun), got {sampler.name}"
        )
    x_T = builders.make_prior(config.sampler, jax.random.key(seed), n, shape, target, data)
    teacher = ld3.teacher(config.sampler.sigma_max)
    x_teacher = samplers.sample(jax.random.key(seed), teacher, score_fn, x_T).x
    sigmas, error, start = ld3.learn_grid(
        sampler, score_fn, x_T, x_teacher, n_candidates=n_candidates, n_sweeps=n_sweeps,
        progress=progress,
    )  # fmt: skip
    about = {
        "sampler": sampler.name,
        "start": f"{config.sampler.grid} {config.sampler.sigma_min:g}-{config.sampler.sigma_max:g}",
        "prior": config.sampler.prior,
        "data": config.data.source,
        "score": "exact" if model is None else "model",
        "n_starts": n,
        "seed": seed,
        "teacher": f"heun, {ld3.TEACHER_LEVELS} Karras levels (rho 7) from 0.002",
        "n_candidates": n_candidates,
        "n_sweeps": n_sweeps,
    }
    return sigmas, error, start, about


def evaluate_samples(
    samples,
    *,
    target: str | None = None,
    data=None,
    floor_repeats: int = 5,
    seed: int = 0,
    label: str = "samples",
    sigma: float = 0.0,
    progress: bool = True,
    layout: str = "auto",
    pixel_range: str = "auto",
    array: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Report:
    r"""Metrics of ``samples`` (an array or a .npy/.csv path) against a target or data, with
    the floors at the same sample size.

    Images are compared as vectors of their ``C * H * W`` pixels: samples ``(n, C, H, W)`` as
    stored (model space), reference images as :func:`scorelab.data.load_images` reads them.

    With a built-in ``target``, the reference is ``n`` fresh exact samples and the floor is
    the metric between two independent exact sets of size ``n``; ``data`` naming a toy set
    (``two_moons``, ...) is read the same way, with draws of the toy set. With ``data`` (an
    array or a path), the reference is the data and the floor is the metric between two independent
    sets of ``n`` draws (with replacement) from the data's empirical law. ``data`` naming a
    built-in image set (``digits``, ``digits16``) is measured by :func:`evaluate_images`: its
    classifier's metrics and their floors, in its report (``sigma``, ``layout``,
    ``pixel_range`` and ``array`` do not apply there and are refused).

    With ``sigma > 0`` the reference law is the noised one,
    :math:`q_\sigma = q * \mathcal{N}(0, \sigma^2 I)`: the target's exact VE marginal, or the
    data plus fresh Gaussian noise. That is the law a DSM model trained at ``sigma`` learns,
    so its samples are judged against it, not against the data.

    ``progress`` shows a bar over each floor's repeats. An image file of ``data`` is read with
    ``layout``, ``pixel_range`` and, for an ``.npz`` of several arrays, the key ``array``
    (:func:`scorelab.data.load_images`: state those of the run's ``data`` section where the
    defaults would take another), and ``log`` is told how (its ``data:`` line, as training's).

    Returns:
        A :class:`scorelab.report.Report` with one row (every metric of
        :func:`scorelab.report.measure`, ``n`` and ``sw_floor``) and the floors of ``sw`` (and
        ``tv`` with a target); :func:`evaluate_images`'s report for ``digits``/``digits16``.

    Raises:
        ConfigError: for both ``target`` and ``data`` or neither, an unknown target, a
            negative ``sigma``, fewer than 2 reference points or a dimension that differs from
            the reference's; ``sigma``, ``layout``, ``pixel_range`` or ``array`` beside
            built-in images, or ``layout``, ``pixel_range`` or ``array`` without an image file.
    """
    if target is not None and data is not None:
        raise ConfigError(
            "target and data: give one reference, not both (data was ignored beside target)"
        )
    if target is None and data is None:
        raise ConfigError(
            f"target, data: no reference; give target ({', '.join(TARGETS)}) or data (an "
            "array, a path or a toy set)"
        )
    check_seed("evaluate.seed", seed, error=ConfigError)
    _check_floor_repeats(floor_repeats)
    check_real("sigma", sigma, "a number >= 0", lambda v: v >= 0, error=ConfigError)
    # The digits themselves are measured by their classifier (evaluate_images), which reads
    # no noise level, and, like any reference that is not an image file, no layout, pixel
    # range or key: one check of each (the command line repeated them in its own copy).
    digits_data = isinstance(data, str) and data in IMAGE_SOURCES and not Path(data).exists()
    if digits_data and sigma != 0:
        raise ConfigError("sigma: image metrics compare with the digits themselves; leave it out")
    image_file = isinstance(data, str | Path) and Path(data).exists() and is_image_file(data)
    for field, value in (("layout", layout), ("pixel_range", pixel_range), ("array", array)):
        if value not in ("auto", None) and not image_file:  # read by nothing else: refused
            raise ConfigError(f"{field}: applies to an image file given as data; leave it out")
    if layout != "auto" and image_file and Path(data).is_dir():  # was ignored: image files
        raise ConfigError(
            f"layout: applies to an array file given as data; {data} is a folder, whose images "
            "are read as image files: leave it out"
        )
    if digits_data:
        return evaluate_images(
            samples,
            data=data,
            floor_repeats=floor_repeats,
            seed=seed,
            label=label,
            progress=progress,
        )
    check_sigma("sigma", sigma, ConfigError)
    name = str(samples) if isinstance(samples, str | Path) else "samples"
    read = _read(samples, raw=True)  # as stored: model space (scorelab sample writes it)
    integers = np.issubdtype(np.asarray(read).dtype, np.integer)
    samples = validate_data(read, name, any_shape=True)
    n = samples.shape[0]
    if n < _MIN_EVALUATED:
        # The kernel Stein discrepancy and the MMD's unbiased estimate need them: fewer were
        # refused deep inside a metric, naming neither the file nor the remedy.
        raise DataError(
            f"{name}: {n} sample(s); the metrics need at least {_MIN_EVALUATED}: draw more "
            "(scorelab sample --n)"
        )
    key_reference, key_floor = jax.random.split(jax.random.key(seed))
    if target is not None:
        if target not in TARGETS:
            raise ConfigError(f"target: unknown {target!r}; accepted: {', '.join(TARGETS)}")
        mixture = TARGETS[target]()
        if sigma > 0:
            mixture = mixture.ve_marginal(sigma)
        reference = np.asarray(mixture.sample(key_reference, n))
        sample_fn = mixture.sample
        image_shape = TARGET_IMAGE_SHAPES.get(target)
    elif isinstance(data, str) and data in TOY_DATASETS and not Path(data).exists():
        mixture = None
        sample_fn = _noised(TOY_DATASETS[data], sigma)  # fresh draws, as a target's samples
        reference = sample_fn(key_reference, n)
        image_shape = None
    else:
        mixture = None
        if isinstance(data, str) and not Path(data).exists():
            if data in TARGETS:
                raise ConfigError(f"data: {data!r} has an exact score: use --target {data}")
        data_name = str(data) if isinstance(data, str | Path) else "data"
        read = _read(data, raw=False, layout=layout, pixel_range=pixel_range, array=array, log=log)
        points = validate_data(read, data_name, any_shape=True)
        # Image data are read (n, C, H, W) in [-1, 1] whatever their file's layout and range.
        image_shape = points.shape[1:] if points.ndim > 2 else None
        points = points.reshape(len(points), -1)
        if points.shape[0] < 2:
            raise ConfigError("data: need at least 2 reference points for a floor")

        def resample(key, size):  # iid draws from the empirical law of the data
            return points[np.asarray(jax.random.choice(key, points.shape[0], (size,)))]

        sample_fn = _noised(resample, sigma)
        reference = points if sigma == 0 else sample_fn(key_reference, points.shape[0])

    size = int(np.prod(samples.shape[1:]))
    _check_point_shape(name, samples.shape, image_shape, size, reference.shape[1])
    if image_shape is not None and integers:  # raw pixels against data read in [-1, 1]
        raise ConfigError(
            f"{name}: integer pixels; the samples are compared in model space, [-1, 1] as "
            "scorelab sample writes them: scale 8-bit images by x / 127.5 - 1"
        )
    samples = samples.reshape(n, -1)
    if samples.shape[1] != reference.shape[1]:
        raise ConfigError(
            f"samples: dimension {samples.shape[1]} does not match the reference's "
            f"{reference.shape[1]}"
        )
    row = measure(samples, reference, mixture, max_sliced=True, ksd=mixture is not None)
    names = ("sw", "tv") if mixture is not None else ("sw",)
    floor = floors(names, sample_fn, key_floor, n, floor_repeats, target=mixture, progress=progress)
    row = {"method": label, "n": n, **row, "sw_floor": floor["sw"][0]}
    return Report([row], floor)


_MIN_EVALUATED = 3
"""The fewest samples :func:`evaluate_samples` measures (the kernel Stein discrepancy's)."""


def _check_floor_repeats(floor_repeats) -> None:
    """Refuse a repeat count of the floor below 2 (no spread) or beyond
    :data:`scorelab.metrics.MAX_FLOOR_REPEATS` (``--floor-repeats 10**11`` ran for hours)."""
    metrics.check_floor_repeats("floor_repeats", floor_repeats, ConfigError)


def _noised(draw_fn: Callable, sigma: float) -> Callable:
    r"""``sample_fn(key, size)``: ``draw_fn(key_draw, size)`` plus :math:`\sigma\,\mathcal{N}(0, I)`
    noise from ``key_noise`` (the two split from ``key``), the law a DSM model trained at
    ``sigma`` learns; ``sigma = 0`` returns the draws unchanged."""

    def sample_fn(key, size):
        key_draw, key_noise = jax.random.split(key)
        drawn = np.asarray(draw_fn(key_draw, size))
        if sigma == 0:
            return drawn
        return drawn + sigma * np.asarray(jax.random.normal(key_noise, drawn.shape))

    return sample_fn


IMAGE_RANGE_TOLERANCE = 4.0
"""How far beyond [-1, 1] :func:`evaluate_images` accepts pixel values before refusing them.
Wide on purpose: ``digits_mixture``'s pixels have standard deviations up to 0.81, so its exact
samples reach |x| of about 3; the check is there to catch images saved in [0, 255]."""


def _digit_images(samples, tolerance: float) -> np.ndarray:
    """``samples`` (an array or a .npy/.csv path) checked as n digit images, clipped to [-1, 1]."""
    name = str(samples) if isinstance(samples, str | Path) else "samples"
    array = _read(samples, raw=True)
    shapes = {(1, 8, 8), (64,), (1, 16, 16), (256,)}
    if array.ndim not in (2, 4) or tuple(array.shape[1:]) not in shapes:
        raise DataError(
            f"{name}: expected digit images of shape (n, 1, 8, 8) or (n, 64) (or 16x16: "
            f"(n, 1, 16, 16), (n, 256)), got {array.shape}"
        )
    if array.shape[0] == 0:
        raise DataError(f"{name}: no images (shape {array.shape})")
    if not is_real_dtype(array.dtype):
        raise DataError(f"{name}: expected real numbers, got dtype {array.dtype}")
    flat = array.reshape(len(array), -1).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad.size:
        raise DataError(f"{name}: {bad.size} image(s) contain NaN or inf (first at {bad[0]})")
    bad = np.flatnonzero((np.abs(flat) > 1.0 + tolerance).any(axis=1))
    if bad.size:
        raise DataError(
            f"{name}: {bad.size} image(s) hold values beyond [-1, 1] by more than {tolerance} "
            f"(first at {bad[0]}); scale images to [-1, 1] (x / 127.5 - 1 from [0, 255]) or, "
            "for a sampler's output, sample with more levels"
        )
    size = 8 if flat.shape[1] == 64 else 16
    return np.clip(flat, -1.0, 1.0).astype(np.float32).reshape(len(flat), 1, size, size)


def evaluate_images(
    samples,
    *,
    data: str = "digits",
    floor_repeats: int = 5,
    seed: int = 0,
    label: str = "samples",
    range_tolerance: float = IMAGE_RANGE_TOLERANCE,
    progress: bool = True,
) -> Report:
    """Classifier metrics of digit images against the digits, with their floors.

    :func:`evaluate_image_sets` of the one set ``{label: samples}``.

    Args:
        samples: ``(n, 1, 8, 8)`` or ``(n, 64)`` images in [-1, 1] (or 16x16), an array or a
            ``.npy`` / ``.csv`` path.
        data, floor_repeats, seed, range_tolerance, progress: as
            :func:`evaluate_image_sets`.
        label: the row's ``method``.

    Returns:
        A :class:`scorelab.report.Report` with one row and its floors.

    Raises:
        ConfigError, DataError: as :func:`evaluate_image_sets` (``range_tolerance`` and
            ``data`` included).
    """
    return evaluate_image_sets(
        {label: samples},
        data=data,
        floor_repeats=floor_repeats,
        seed=seed,
        range_tolerance=range_tolerance,
        progress=progress,
    )


def evaluate_image_sets(
    sets: dict[str, Any],
    *,
    data: str = "digits",
    floor_repeats: int = 5,
    seed: int = 0,
    range_tolerance: float = IMAGE_RANGE_TOLERANCE,
    progress: bool = True,
) -> Report:
    """Classifier metrics of several sets of digit images against the digits, beside one floor.

    Each set is checked (shape, finite values, range), clipped to [-1, 1] as image pipelines
    do before saving, and measured by :func:`scorelab.report.image_evaluation` against
    ``digits("train")`` with the shipped classifier; the floor is the held-out split
    ``digits("test")`` measured the same way. The floor is computed once for all the sets, and
    each row is the one :func:`evaluate_images` gives its set alone, bit for bit. 16x16
    samples are compared with ``digits(size=16)`` (the classifier sees them pooled to 8x8).

    Args:
        sets: row label -> ``(n, 1, 8, 8)`` or ``(n, 64)`` images in [-1, 1] (or 16x16), an
            array or a ``.npy`` / ``.csv`` path; every set of one size and shape.
        data: ``"digits"`` (8x8 or 16x16 samples) or ``"digits16"`` (16x16 only).
        floor_repeats: subsets drawn, ``>= 2``.
        seed: the subsets' seed.
        range_tolerance: how far beyond [-1, 1] a value may lie (:data:`IMAGE_RANGE_TOLERANCE`).
        progress: show a bar over the repeats.

    Returns:
        A :class:`scorelab.report.Report` with a row per set, in order (``method`` its label,
        ``n`` and the keys of :data:`scorelab.report.IMAGE_METRICS` and ``kid_se``), and
        their floors.

    Raises:
        ConfigError: for another ``data``, ``floor_repeats < 2``, or a ``range_tolerance``
            that is not a finite number ``>= 0``.
        TypeError: for ``sets`` that is not a mapping of label -> images.
        DataError: for no set; for images of a wrong shape, none, NaN or infinite values,
            values beyond the tolerance, or fewer than 8 images; for sets of different sizes.
    """
    if not isinstance(data, str) or data not in IMAGE_SOURCES:
        raise ConfigError(
            f"data: image metrics know only {', '.join(map(repr, IMAGE_SOURCES))}, got {data!r}"
        )
    check_seed("evaluate.seed", seed, error=ConfigError)
    _check_floor_repeats(floor_repeats)
    check_real(
        "range_tolerance", range_tolerance, "a number >= 0", lambda v: v >= 0, error=ConfigError
    )
    check_mapping("sets", sets, "a dict of row label -> images", remedy="e.g. {'samples': images}")
    if not sets:
        raise DataError("samples: no sample set to evaluate")
    images = {label: _digit_images(samples, range_tolerance) for label, samples in sets.items()}
    shapes = {array.shape for array in images.values()}
    if len(shapes) != 1:
        raise DataError(
            f"samples: the sets share one floor and must have one shape, got {sorted(shapes)}"
        )
    n, _, size, _ = shapes.pop()
    if n < 8:
        raise DataError(f"samples: need at least 8 images for the k-NN metrics, got {n}")
    if data != "digits" and size != IMAGE_SOURCES[data]:
        raise DataError(
            f"samples: {size}x{size} images; {data!r} holds {IMAGE_SOURCES[data]}x"
            f"{IMAGE_SOURCES[data]} (or evaluate against 'digits', which takes both sizes)"
        )
    train, _ = digits("train", size=size)
    held_out, _ = digits("test", size=size)
    rows, floor = image_evaluation(
        list(images.values()),
        train,
        held_out,
        load_digits_classifier(),
        jax.random.key(seed),
        floor_repeats,
        progress=progress,
    )
    labelled = [{"method": label, "n": n, **row} for label, row in zip(images, rows, strict=True)]
    return Report(labelled, floor)


def _read(
    source,
    *,
    raw: bool,
    layout: str = "auto",
    pixel_range: str = "auto",
    array: str | None = None,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """The one reader of samples and data sets: ``source`` itself if it is an array, else the
    file or folder it names.

    ``raw`` reads an ``.npy`` as stored, of any rank and unscaled
    (:func:`scorelab.data.read_npy`: samples written by ``scorelab sample``, in model space).
    Other image data (:func:`scorelab.data.is_image_file`) is read by
    :func:`scorelab.data.load_images` with ``layout``, ``pixel_range`` and ``array``, scaled
    to [-1, 1] (the rule taken passed to ``log``); points by :func:`scorelab.data.load_array`.

    Raises:
        FileNotFoundError: for a missing file.
        DataError: for a file that cannot be read.
        ConfigError: for the name of a built-in data set, which is no file.
    """
    if not isinstance(source, str | Path):
        return np.asarray(source)
    if is_builtin_source(str(source)) and not Path(source).exists():
        # samples or points named as a built-in set: "data file not found: digits"
        hint = " (the digits' held-out images: scorelab.data.digits('test')[0])"
        raise ConfigError(
            f"{source}: a built-in data set, not a file; save the array with numpy.save and "
            f"give the .npy{hint if str(source) in IMAGE_SOURCES else ''}"
        )
    if raw and Path(source).suffix.lower() == ".npy":
        return read_npy(source)
    if not is_image_file(source):
        return load_array(source)
    images = load_images(source, layout=layout, pixel_range=pixel_range, array=array)
    if log is not None:  # the layout and the mapping taken, as train says them
        log(f"data: {images.description}")
    return images.images


def _check_point_shape(
    name: str,
    shape: tuple[int, ...],
    image_shape: tuple[int, ...] | None,
    size: int,
    reference_dim: int | None = None,
) -> None:
    """Refuse an array of rank above 2 unless one example is ``image_shape`` (axes of size 1
    aside: ``(n, 8, 8)`` is ``(n, 1, 8, 8)``). ``(50, 2, 1)`` was flattened to 2-D points, and
    ``(n, 8, 8, 3)`` images reshaped, not transposed, to ``(n, 3, 8, 8)``, without a word.
    ``reference_dim``, the dimension of a points reference, says whether reshaping to rows
    would do (it would not for images against 2-D points)."""
    if len(shape) <= 2:
        return
    if image_shape is None and reference_dim is not None and reference_dim != size:
        # "save them as rows" only led to "dimension 64 does not match the reference's 2"
        raise ConfigError(
            f"{name}: images of shape {shape}, but the reference holds {reference_dim}-D "
            "points; measure images against image data (data 'digits' or an image file) or a "
            "target of images (digits_mixture), or give (n, "
            f"{reference_dim}) samples"
        )
    if image_shape is None:
        raise ConfigError(
            f"{name}: points of shape {shape}; these are points (n, {size}), not images: "
            f"reshape them to rows (n, {size})"
        )

    def squeezed(axes):
        return tuple(a for a in axes if a != 1)

    if squeezed(shape[1:]) != squeezed(image_shape):
        expected = ", ".join(map(str, image_shape))
        raise ConfigError(
            f"{name}: images of shape {shape}; expected (n, {expected}) or flat rows (n, "
            f"{int(np.prod(image_shape))}); an (n, H, W, C) array needs transposing to "
            "(n, C, H, W)"
        )


def score_error_run(
    config: ExperimentConfig, model, *, n: int = 2000, seed: int = 0
) -> ScoreErrorProfile:
    r"""The relative score error of a trained noise-conditional model at each level of the
    configured sampler's grid (:func:`scorelab.score_error.score_error_profile`), against the
    exact score of the run's target, with exact samples of :math:`q_\sigma` drawn from
    ``key(seed)``.

    Raises:
        ConfigError: for no model (``None``: the exact score, measured against itself), a run
            whose data has no exact score (not a built-in target), or an unconditional model
            (the score of one law, not of every noise level).
        TypeError: for a ``config`` that is not an ``ExperimentConfig``.
    """
    _check_config(config)
    if model is None:
        raise ConfigError(
            "model: score_error_run needs a trained model; None is the exact score itself, "
            "whose error is zero"
        )
    check_seed("score_error.seed", seed, error=ConfigError)
    target = builders.make_target(config.data)
    if target is None:
        raise ConfigError(
            f"data.source: {config.data.source!r} has no exact score to compare with; the "
            f"score error needs a run trained on a built-in target ({', '.join(TARGETS)})"
        )
    score_fn = _score_at_every_level(config, model, target, "the score error per noise level")
    sigmas = builders.make_sigmas(config.sampler)
    return score_error_profile(jax.random.key(seed), score_fn, target, sigmas, n)


def likelihood_points(
    config: ExperimentConfig,
    model,
    points,
    *,
    seed: int = 0,
    bin_width: float | None = None,
    array: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    r"""Log-densities of ``points`` under the probability-flow ODE of ``model`` or the exact score.

    The ODE runs over the configured sampler's range (``sampler.sigma_min`` to ``sigma_max``:
    a trained run's own, unless the ``sigma_min`` or ``sigma_max`` options replace them), so
    the density is that of :math:`q_{\sigma_{\min}}`; with the exact
    score of a target, ``exact_log_prob`` gives the target's closed form at that level beside
    it. With ``bin_width``, the points are dequantised and bits per dimension reported
    (:func:`scorelab.likelihood.dequantised_bits_per_dim`).

    Args:
        config: the experiment (the run's, or one naming the target).
        model: the trained model, or ``None`` for the exact score.
        points: ``(n, d)`` points, or for an image model ``(n, C, H, W)`` (or flat ``(n,
            C*H*W)``) in [-1, 1]; or a ``.npy``/``.csv`` path to them.
        seed: seed of the probes (and the dequantisation).
        bin_width: the quantisation step of the data, for bits per dimension.
        array: the key of the images when ``points`` is an ``.npz`` of several arrays; by
            default its only array, or the run's ``data.array`` for the run's own file.
        **options: options of :func:`scorelab.likelihood.ode_log_likelihood` (``n_probes``,
            ``probe``, ``solver``, ``rtol``, ``atol``, ``max_steps``; ``sigma_min`` and
            ``sigma_max`` replace the configured range, and the result reports the range
            used).

    Returns:
        JSON-ready: ``log_prob`` per point (nats), ``mean`` and ``standard_error`` over points,
        ``nfe`` (score evaluations, in all), ``sigma_min``, ``sigma_max`` (the range the ODE
        ran over), and ``exact_log_prob`` (at that ``sigma_min``) or ``bits_per_dim`` (with
        its mean) where they apply.

    Raises:
        TypeError: for a ``config`` that is not an ``ExperimentConfig``, or an option
            :func:`scorelab.likelihood.ode_log_likelihood` does not take (naming the accepted
            ones).
        ConfigError: for points of another shape than the model's, images outside [-1, 1], an
            unconditional single-level MLP, a class-conditional model, or ``array`` beside
            points that are not an ``.npz`` path.
        DataError: for points that are not finite real numbers.
    """
    from scorelab import likelihood

    _check_config(config)
    accepted = [
        name
        for name, parameter in inspect.signature(likelihood.ode_log_likelihood).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for name in options:
        if name not in accepted:
            raise TypeError(
                f"likelihood_points: unknown option {name!r}; accepted: {', '.join(accepted)}"
            )
    n_probes = options.get("n_probes")
    if isinstance(n_probes, numbers.Integral) and not isinstance(n_probes, bool):
        options["n_probes"] = int(n_probes)  # a NumPy integer was traced, then refused
    check_seed("likelihood.seed", seed, error=ConfigError)
    if array is not None and not (
        isinstance(points, str | Path) and Path(points).suffix.lower() == ".npz"
    ):  # read by nothing else
        raise ConfigError("array: the images' key in an .npz given as points; leave it out")
    if config.model.num_classes is not None and model is not None:
        raise ConfigError(
            "--run: a class-conditional model; its likelihood needs a class per point, which "
            "scorelab likelihood does not take: use an unconditional run"
        )
    target = builders.make_target(config.data)
    shape = builders.example_shape(config.data)  # from headers: the data are not read
    points = _likelihood_points(
        points,
        shape,
        shape if len(shape) > 1 else config.data.target_image_shape,
        config.data if len(shape) > 1 else None,
        array,
    )
    score_fn = _score_at_every_level(config, model, target, "the probability-flow ODE")
    options = {
        "sigma_min": config.sampler.sigma_min,
        "sigma_max": config.sampler.sigma_max,
        **options,
    }
    sigma_min, sigma_max = options["sigma_min"], options["sigma_max"]  # the range solved over
    key = jax.random.key(seed)
    if bin_width is None:
        output = _interruptibly(likelihood.log_likelihood, key, score_fn, points, **options)
    else:
        bpd, output = _interruptibly(
            likelihood.dequantised_bits_per_dim, key, score_fn, points, bin_width=bin_width,
            **options,
        )  # fmt: skip
    log_prob = np.asarray(output.log_prob, np.float64)
    result = {
        "log_prob": log_prob,
        "mean": float(log_prob.mean()),
        "standard_error": float(log_prob.std(ddof=1) / np.sqrt(len(log_prob)))
        if len(log_prob) > 1
        else None,
        "nfe": int(np.sum(output.nfe)),
        "sigma_min": sigma_min,
        "sigma_max": sigma_max,
    }
    if model is None and bin_width is None:
        result["exact_log_prob"] = np.asarray(target.ve_marginal(sigma_min).log_prob(points))
    if bin_width is not None:
        result["bits_per_dim"] = np.asarray(bpd)
        result["mean_bits_per_dim"] = float(np.mean(bpd))
    return result


def _likelihood_points(
    points,
    shape: tuple[int, ...],
    image_shape: tuple[int, ...] | None = None,
    data: DataConfig | None = None,
    key: str | None = None,
) -> np.ndarray:
    """``points`` (an array, or a ``.npy``/``.csv`` path) checked against one example's
    ``shape`` and returned as ``float32 (n, *shape)``: flat rows, or images of ``image_shape``
    (:func:`_check_point_shape`: 8x8 images for the 64-d ``digits_mixture``, flat rows for a
    U-Net); an image model's values must lie in the data's [-1, 1].

    An image file of integer pixels (or an ``.npz`` or a folder), for an image run's ``data``
    section, is read as its training images are (:func:`scorelab.data.load_images` with its
    layout and pixel range, and its ``array`` key when it is the run's own file): the run's
    own uint8 file was refused ("values in [4, 255]"), which train and evaluate read (pass 25,
    #3). Float ``.npy`` files are the model's space, as ``scorelab sample`` writes. ``key``
    names the images of an ``.npz`` of several arrays (``likelihood_points``' ``array``)."""
    name = str(points) if isinstance(points, str | Path) else "points"
    if (
        data is not None
        and isinstance(points, str | Path)
        and is_image_file(points)
        and (
            Path(points).suffix.lower() != ".npy"  # .npz or a folder: image data as such
            or np.issubdtype(npy_header(points)[1], np.integer)
        )
    ):
        if key is None and same_file(points, data.source):  # the run's own .npz
            key = data.array
        read = load_images(
            points, layout=data.layout, pixel_range=data.pixel_range, array=key
        ).images
    else:
        read = _read(points, raw=True, array=key)
    array = validate_data(read, name, any_shape=True)
    size = int(np.prod(shape))
    _check_point_shape(name, array.shape, image_shape, size)
    if int(np.prod(array.shape[1:])) != size:
        flat = f" or (n, {size})" if len(shape) > 1 else ""
        raise ConfigError(
            f"{name}: points of shape {array.shape}; the model's are (n, "
            f"{', '.join(map(str, shape))}){flat}"
        )
    array = array.reshape(len(array), *shape)
    if len(shape) == 3 and np.abs(array).max() > 1:
        raise ConfigError(
            f"{name}: values in [{array.min():g}, {array.max():g}]; the model's images are "
            "scaled to [-1, 1] (pixel / 127.5 - 1 for 8-bit images)"
        )
    return array


def save_sample_grid(
    samples, path, *, label: str | None = None, labels: np.ndarray | None = None
) -> Path:
    """Write image samples ``(n, C, H, W)`` in [-1, 1] as one labelled PNG grid, atomically.

    Pixels are ``round(255 clip(x / 2 + 1/2, 0, 1))`` (diffusers' conversion,
    :func:`scorelab.diffusers.to_images`); each image is magnified until its shorter side is
    at least 32 pixels, and images of another channel count than 1, 3 or 4 are drawn as their
    channels side by side (:func:`scorelab.viz.save_image_grid`).

    Args:
        samples: ``(n, C, H, W)``.
        path: the ``.png`` file.
        label: the caption above the grid.
        labels: ``(n,)`` classes of samples drawn class after class, as many of each
            (:func:`sample_run`): one row per class, labelled ``class y``; or ``None``.

    Raises:
        ConfigError: for samples that are not images (or have no image or an empty side);
            ``labels`` that are not ``(n,)`` classes grouped class after class, as many of
            each; or a ``path`` that is a folder or does not end in ``.png``; all before
            anything is drawn.
    """
    from scorelab.diffusers import to_images

    samples = np.asarray(samples)
    if samples.ndim != 4:
        raise ConfigError(f"grid: samples of shape {samples.shape} are not images (n, C, H, W)")
    if 0 in samples.shape:
        raise ConfigError(
            f"samples: shape {samples.shape} has an empty axis; the grid needs at least one "
            "image of at least one pixel"
        )
    n, _, height, width = samples.shape
    if Path(path).is_dir():
        raise ConfigError(f"path: {path} is a folder; give the .png file to write")
    if Path(path).suffix.lower() != ".png":
        raise ConfigError(f"path: {path}: the grid is written as PNG; give a file name ending .png")
    if labels is not None:
        classes = _grouped_classes(labels, n)
    # The shorter side: by the height alone, a 64x2 image stayed 2 pixels wide.
    grid = {"scale": max(1, -(-32 // min(height, width))), "label": label}
    images = to_images(samples)
    if labels is not None:
        grid.update(ncols=len(samples) // len(classes), row_labels=[f"class {y}" for y in classes])
    return atomic_write(path, lambda handle: viz.save_image_grid(images, handle, **grid))


def _grouped_classes(labels, n: int) -> list:
    """The classes of ``labels``, in order, when they are ``(n,)`` and grouped class after
    class with as many samples of each (:func:`sample_run`'s order), one grid row per class;
    else a ``ConfigError`` naming ``labels`` (rows were labelled with one class and held
    samples of others)."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ConfigError(
            f"labels: expected one class per sample, shape ({n},), got shape {labels.shape}"
        )
    classes = list(dict.fromkeys(labels.tolist()))  # in order of appearance
    per_class = n // len(classes)
    blocks = labels.reshape(len(classes), per_class) if per_class * len(classes) == n else None
    if blocks is None or not (blocks == blocks[:, :1]).all():
        raise ConfigError(
            "labels: the grid draws one row per class, so the samples must come class after "
            "class, as many of each (as sample_run draws them); sort them by class first"
        )
    return classes


def plot_run(run_dir, out_dir=None) -> list[Path]:
    """The figures of a training run: loss curve, and the score field and samples (2-D points)
    or a grid of 64 samples (images; a class-conditional run's are 8 of each of the first 8
    classes it was trained on, a labelled row per class). Points of another dimension get the
    loss curve alone, with a ``UserWarning`` (the other figures are planar).

    Args:
        run_dir: a run directory of ``scorelab train`` (or one of the demo's models).
        out_dir: the figure folder; ``None`` for ``run_dir/figures``.

    Returns:
        The paths written.

    Raises:
        ValueError: for an ``out_dir`` that is a file, lies under one or cannot be created
            (:func:`scorelab.runs.make_folder`), before the run is read.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "figures"
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir: {out_dir} is a file; give a folder for the figures")
    config, model = load_run(run_dir)
    target = builders.make_target(config.data)
    # The data (a target's draws too) for the figures, read once: also what the samples start
    # from without a target (a target's state is its dimension, read from nothing).
    shape, data, labels = state = _state_data(config, None)
    if target is not None:
        state = _state_data(config, target)

    def draw(n, classes=None):  # sample_run's (seed 0, one chunk) on the state read above
        score_fn = score_model(config, model, target)
        return _sample(config, model, target, score_fn, state, n, 0, False, n, classes, 0.0)

    make_folder(out_dir, "give another folder for the figures (out_dir)")
    written = []
    losses = {config.loss.name: read_losses(run_dir)}
    written.append(viz.save_figure(viz.loss_curves(losses), out_dir / "loss.png"))
    if len(shape) == 1 and shape[0] != 2:  # the loss curve only (it refused even that, pass 25)
        warnings.warn(
            f"plot: the run's data is {shape[0]}-dimensional and the score field and samples "
            "figures are planar: only loss.png is drawn; sample it with `scorelab sample "
            "--run` and evaluate with `scorelab evaluate`",
            UserWarning,
            stacklevel=2,
        )
        return written
    if data.ndim == 4:
        num_classes = getattr(model, "num_classes", None)  # 64 of every class were drawn
        if num_classes is None:
            result = draw(64)
        else:  # 8 of each of the first 8 classes trained
            result = draw(8, _trained_classes(labels, num_classes)[:8])
        label = f"{run_dir.name}: {config.sampler.name}, NFE {result.nfe:g}"
        written.append(
            save_sample_grid(result.x, out_dir / "samples.png", label=label, labels=result.labels)
        )
        return written
    sigma = config.sampler.options.get("sigma", 0.0) or config.loss.sigma
    field = viz.mesh_score(model, sigma=sigma)
    written.append(viz.save_figure(viz.score_field(field, data), out_dir / "score_field.png"))
    if isinstance(model, MLP) and config.sampler.uses_grid:
        # A run of an older scorelab keeps the default grid sampler, which an unconditional
        # model cannot serve (a new run's unconditional loss defaults to ULA).
        config = dataclasses.replace(
            config, sampler=dataclasses.replace(config.sampler, name="ula", options={}, nfe=0)
        )
    result = draw(1000)
    figure = viz.ddim_samples(
        {f"{config.loss.name} model": result.x},
        data,
        key_name=None,
        title=f"{config.sampler.name} samples",
    )
    written.append(viz.save_figure(figure, out_dir / "samples.png"))
    return written
