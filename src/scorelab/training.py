r"""Training: minimise a per-example score-matching loss with optax, K steps per dispatch.

Each step :math:`i` draws a mini-batch :math:`\{x^{(b)}\}_{b<B}` by index from the data set
(with replacement, as in the founding tutorial) and takes one optimiser step on

.. math::
    \mathcal{L}_i(\theta) = \frac1B \sum_{b<B} \ell\big(k_{i,b},\, s_\theta,\, x^{(b)}\big),

where :math:`\ell` is a per-example loss of :mod:`scorelab.losses` and :math:`k_{i,b}` a key
used once. All randomness of step :math:`i` comes from ``fold_in(key, i)``, so a run's result
does not depend on how many steps are fused into one dispatch, on where it was checkpointed
and resumed, or (up to float rounding of the batch mean) on how many devices share the batch.

The hot loop is one jitted function running ``steps_per_dispatch`` steps with ``lax.scan``;
the host touches the device once per dispatch, to fetch that dispatch's losses. The batch is
sharded over a 1-D mesh of all devices (data parallelism), parameters and optimiser state are
replicated. In several processes, call
:func:`scorelab.distributed.initialize_distributed` first.

References:
    Kingma, D. P. & Ba, J. (2015). Adam: A Method for Stochastic Optimization.
    https://arxiv.org/abs/1412.6980
    Loshchilov, I. & Hutter, F. (2019). Decoupled Weight Decay Regularization.
    https://arxiv.org/abs/1711.05101
    Polyak, B. T. & Juditsky, A. B. (1992). Acceleration of Stochastic Approximation by
    Averaging. SIAM J. Control Optim. 30(4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.tree_util import Partial
from tqdm.auto import tqdm

from scorelab import __version__, checkpoints
from scorelab._files import jsonable
from scorelab._keys import typed_key
from scorelab._signals import held_signals
from scorelab._validate import (
    check_callable,
    check_choice,
    check_instance,
    check_int,
    check_mapping,
    check_memory,
    check_real,
    check_seed,
    from_mapping,
)
from scorelab.data import DataError, validate_data

__all__ = [
    "TrainConfig",
    "TrainResult",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "make_optimizer",
    "train",
    "trainable",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
# Fields that change only how a run is executed, not its result: they may differ on resume.
_EXECUTION_FIELDS = ("steps_per_dispatch", "checkpoint_every", "log_every")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    r"""Hyper-parameters of a training run; validated on construction.

    Attributes:
        steps: number of optimiser steps, >= 1.
        learning_rate: peak step size :math:`\eta > 0`.
        optimizer: ``"adam"`` (default; Kingma & Ba 2015), ``"adamw"`` (Adam with decoupled
            weight decay, Loshchilov & Hutter 2019) or ``"sgd"``.
        schedule: learning rate over steps: ``"constant"``; ``"cosine"``,
            :math:`\eta_i = \tfrac{\eta}{2}(1 + \cos(\pi i / \text{steps}))`; or
            ``"warmup_cosine"``, linear from 0 to :math:`\eta` over ``warmup_steps``, then cosine
            to 0.
        warmup_steps: length of the warm-up of ``"warmup_cosine"``, in ``[1, steps)``; must be
            0 for the other schedules.
        grad_clip: ``None`` or the maximum global gradient norm :math:`c`; gradients are scaled
            by :math:`\min(1, c / \lVert g \rVert_2)` before the optimiser.
        weight_decay: :math:`\lambda \ge 0`. With ``"adamw"``, decoupled decay
            :math:`\theta \leftarrow \theta - \eta_i \lambda \theta`; with ``"sgd"``, an L2 term
            :math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2`; with ``"adam"`` it must be 0 (L2
            inside Adam is what AdamW fixes; choose ``"adamw"``).
        batch_size: examples per step, drawn with replacement; ``None`` uses the full data set
            every step. Must be divisible by the number of devices.
        steps_per_dispatch: steps fused into one jitted ``lax.scan`` (:math:`K`); more means
            less host overhead and a coarser progress bar, never a different result.
        unroll: run each dispatch's steps as straight-line code, with no loop or conditional
            in the program, at every ``steps_per_dispatch`` (1 included). Inside a loop or
            conditional body XLA:CPU leaves the convolutions of a network's backward pass on its
            generic emitter, far slower than at the top level (``benchmarks/loop_convolutions.py``,
            ``benchmarks/unroll.py``; results in ``docs/benchmarks.md``), so convolutional
            networks (the U-Net) train with ``unroll`` on and a short ``steps_per_dispatch``;
            compilation then grows with ``steps_per_dispatch``. The same run's numbers may
            differ from the rolled loop's (or another ``steps_per_dispatch``'s) in the last
            bits (XLA fuses across steps); with one step per dispatch they are the same. A
            parameter whose true gradient is 0 (a bias a one-channel group norm removes) gets
            rounding noise for a gradient, which Adam turns into steps of about the learning
            rate: it can differ by that much, with no effect on the network's output.
        ema_decay: ``None`` or :math:`\beta \in (0, 1)`: keep the exponential moving average
            :math:`\bar\theta_i = \beta\bar\theta_{i-1} + (1-\beta)\theta_i`,
            :math:`\bar\theta_0 = \theta_0` (Polyak averaging with exponential weights).
        ema_debias: with ``ema_decay``, average the iterates only, not the initial weights:
            :math:`\bar\theta_t = \sum_{i=1}^t (1-\beta)\beta^{t-i}\theta_i / (1-\beta^t)`,
            Adam's bias correction of an average started at zero (``optax.ema``'s ``debias``),
            computed as the update above with the decay
            :math:`\beta_t = \beta(1-\beta^{t-1})/(1-\beta^t)` at step :math:`t` (so
            :math:`\bar\theta_1 = \theta_1`). Without it a run shorter than the average's
            :math:`1/(1-\beta)` steps keeps a share :math:`\beta^t` of its untrained
            initial weights.
        checkpoint_every: ``None`` (checkpoint only at the end) or a period in steps; used
            when ``train`` has an ``out_dir``.
        seed: root seed of the run (the CLI builds ``train``'s key as
            ``jax.random.key(seed)``), >= 0.
        log_every: the progress bar shows the mean loss of the last ``log_every`` steps, >= 1.
    """

    steps: int = 1000
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None
    weight_decay: float = 0.0
    batch_size: int | None = None
    steps_per_dispatch: int = 100
    unroll: bool = False
    ema_decay: float | None = None
    ema_debias: bool = False
    checkpoint_every: int | None = None
    seed: int = 0
    log_every: int = 100

    def __post_init__(self):
        check_int("steps", self.steps, 1)
        # The run keeps every step's loss (float32, and its checkpointed copy): 10**20 steps
        # was numpy's 'Maximum allowed dimension exceeded', 10**12 an 'out of memory' naming
        # the batch size.
        check_memory("steps", 8.0 * self.steps, "train fewer steps")
        check_real("learning_rate", self.learning_rate, "a number > 0", lambda v: v > 0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("warmup_steps", self.warmup_steps, 0)
        if self.schedule == "warmup_cosine" and not 1 <= self.warmup_steps < self.steps:
            raise ValueError(
                f"warmup_steps: schedule 'warmup_cosine' needs 1 <= warmup_steps < steps "
                f"({self.steps}), got {self.warmup_steps}"
            )
        if self.schedule != "warmup_cosine" and self.warmup_steps != 0:
            raise ValueError(
                f"warmup_steps: only used by schedule 'warmup_cosine', must be 0 with "
                f"{self.schedule!r}, got {self.warmup_steps}"
            )
        check_real("grad_clip", self.grad_clip, "a number > 0", lambda v: v > 0, optional=True)
        check_real("weight_decay", self.weight_decay, "a number >= 0", lambda v: v >= 0)
        if self.optimizer == "adam" and self.weight_decay != 0:
            raise ValueError(
                "weight_decay: must be 0 with optimizer 'adam'; use optimizer 'adamw' for "
                "(decoupled) weight decay"
            )
        check_int("batch_size", self.batch_size, 1, optional=True)
        if self.batch_size is not None:
            # An example's few floats at least (its step's full size is checked by train, from
            # the network): a batch of 10**14 was found only when its run began to train.
            check_memory("batch_size", 64.0 * self.batch_size, "use a smaller batch size")
        check_int("steps_per_dispatch", self.steps_per_dispatch, 1)
        if not isinstance(self.unroll, bool):
            raise ValueError(f"unroll: expected true or false, got {self.unroll!r}")
        check_real(  # 1 - 1e-10 is 1 in float32: an average that never moved from the start
            "ema_decay",
            self.ema_decay,
            "a number in (0, 1), below 1 in float32 (at most 0.99999994)",
            lambda v: 0 < v < 1 and np.float32(v) < 1,
            optional=True,
        )
        if not isinstance(self.ema_debias, bool):
            raise ValueError(f"ema_debias: expected true or false, got {self.ema_debias!r}")
        if self.ema_debias and self.ema_decay is None:
            raise ValueError(
                "ema_debias: true corrects a moving average, and ema_decay is none; set "
                "ema_decay, or leave ema_debias false"
            )
        check_int("checkpoint_every", self.checkpoint_every, 1, optional=True)
        check_seed("seed", self.seed)
        check_int("log_every", self.log_every, 1)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (a TOML table, a checkpoint's JSON) with strict types, as
        every configuration section is read (:func:`scorelab._validate.from_mapping`: an
        unknown key or a value of another type is refused by name; an integer given to a
        float field becomes a float).

        Raises:
            TypeError: for a non-mapping.
            ValueError: for an unknown field or a bad value, starting ``train.FIELD:``.
        """
        check_mapping("train", values, "a table of fields ({name: value})")
        return from_mapping(cls, values, "train")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


class TrainResult(NamedTuple):
    """What :func:`train` returns.

    Attributes:
        model: the trained model (same class and structure as the one given).
        ema_model: the model with EMA parameters, or ``None`` if ``config.ema_decay`` is None.
        losses: ``(steps,)`` float32, the mini-batch loss of every step, before its update.
        config: the configuration the run used.
        start_step: the step training (re)started from: 0, or the checkpoint resumed.
    """

    model: eqx.Module
    ema_model: eqx.Module | None
    losses: np.ndarray
    config: TrainConfig
    start_step: int


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss or gradient; raised with the step and what to try.

    Attributes:
        step: index of the step whose loss or gradient was not finite (its update was not
            applied and nothing after it was checkpointed).
        losses: ``(step,)`` the finite losses before it.
        last_checkpoint: step of the last checkpoint on disk, or ``None``.
    """

    def __init__(self, step: int, loss: float, losses: np.ndarray, last_checkpoint: int | None):
        self.step = step
        self.losses = losses
        self.last_checkpoint = last_checkpoint
        kept = (
            f"the last good checkpoint (step {last_checkpoint}) is kept"
            if last_checkpoint is not None
            else "no checkpoint was written"
        )
        super().__init__(
            f"non-finite loss or gradient at step {step} (loss {loss}); training stopped and "
            f"{kept}. Try a lower learning_rate, gradient clipping (grad_clip, e.g. 1.0), or a "
            "warm-up schedule ('warmup_cosine')."
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C, or SIGTERM on the command line); the finished steps
    were checkpointed where the run has an ``out_dir``, and ``resume=True`` continues them.

    Attributes:
        step: the steps finished.
        steps: the steps the run was to train.
        last_checkpoint: step of the last checkpoint on disk, or ``None``.
    """

    def __init__(self, step: int, steps: int, last_checkpoint: int | None):
        self.step, self.steps, self.last_checkpoint = step, steps, last_checkpoint
        kept = (
            f"the checkpoint of step {last_checkpoint} is kept"
            if last_checkpoint is not None
            else "no checkpoint was written"
        )
        super().__init__(f"training stopped after {step} of {steps} steps; {kept}")


class _TrainState(NamedTuple):
    params: Any  # the inexact-array leaves of the model (eqx.partition), None elsewhere
    opt_state: optax.OptState
    ema_params: Any  # like params, or None without EMA


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax transformation of ``config``: optional clipping, then the optimiser.

    ``optax.clip_by_global_norm`` (when ``grad_clip`` is set), then ``optax.adam``,
    ``optax.adamw`` or ``optax.sgd`` (with ``optax.add_decayed_weights`` for L2 decay) at the
    schedule's learning rate; see :class:`TrainConfig` for the formulas.

    Args:
        config: the run's :class:`TrainConfig`.
    """
    check_instance("config", config, TrainConfig, "a scorelab.training.TrainConfig")
    if config.schedule == "constant":
        learning_rate = config.learning_rate
    elif config.schedule == "cosine":
        learning_rate = optax.cosine_decay_schedule(config.learning_rate, config.steps)
    else:
        learning_rate = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, config.warmup_steps, config.steps
        )
    if config.optimizer == "adam":
        optimizer = optax.adam(learning_rate)
    elif config.optimizer == "adamw":
        optimizer = optax.adamw(learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = optax.chain(
            optax.add_decayed_weights(config.weight_decay), optax.sgd(learning_rate)
        )
    if config.grad_clip is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optimizer)


def _fingerprint(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def _as_pytree(loss_fn: Callable) -> Callable:
    """``loss_fn`` as a :class:`jax.tree_util.Partial` when it is a ``functools.partial``.

    Its bound arguments then become pytree leaves, which ``equinox.filter_jit`` traces when
    they are arrays and compares by value otherwise: a fresh ``functools.partial(dsm_loss,
    sigma=1.0)`` per call (how losses are written) reuses the compiled step, whereas one
    object compared by identity it recompiled, every call.
    """
    if isinstance(loss_fn, functools.partial) and not isinstance(loss_fn, Partial):
        return Partial(loss_fn.func, *loss_fn.args, **loss_fn.keywords)
    return loss_fn


def _scalar(value):
    """``value``, a loss's value for one example, if it is a scalar; checked as the step is
    traced (its shape only), so it costs the compiled step nothing."""
    if jnp.shape(value) != ():
        raise ValueError(
            f"loss_fn: must return a scalar per example, got shape {jnp.shape(value)}; reduce "
            "it inside the loss (e.g. its sum or mean)"
        )
    return value


def _check_loss_fn(loss_fn: Any, labelled: bool) -> None:
    """Refuse a ``loss_fn`` that is not callable, or whose signature cannot take the arguments
    :func:`train` gives it (``key, score_fn, x`` and, with ``labels``, ``label``): both were
    found only inside the step's trace, as Python's own errors naming neither."""
    signature = "loss_fn(key, score_fn, x, label)" if labelled else "loss_fn(key, score_fn, x)"
    check_callable("loss_fn", loss_fn, f"{signature} -> scalar")
    try:
        parameters = inspect.signature(loss_fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): the call will tell
        return

    def takes(n: int) -> bool:
        try:
            parameters.bind(*range(n))
        except TypeError:
            return False
        return True

    if labelled and not takes(4):
        if takes(3):
            raise TypeError(
                "labels: given, but loss_fn takes no label (loss_fn(key, score_fn, x)); pass a "
                "class-conditional loss_fn(key, score_fn, x, label) or drop labels"
            )
        raise TypeError(f"loss_fn: cannot be called as {signature}; give a loss of that form")
    if not labelled and not takes(3):
        hint = " (a class-conditional loss: pass labels too)" if takes(4) else ""
        raise TypeError(f"loss_fn: cannot be called as {signature}{hint}; give a loss of that form")


def _check_flag(name: str, value: Any) -> bool:
    """``value`` as a ``bool`` if it is one (a NumPy bool too); a string ``"false"`` or a
    number was read by its truthiness."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _describe(value: Any) -> Any:
    """A JSON description of a loss or one of its bound hyper-parameters, equal for equal
    losses in any process: a function by its module and qualified name, a partial by its
    function and bound arguments, an array by its shape, dtype and SHA-256, a number or string
    as itself; anything else by its type only (its ``repr`` may hold a memory address)."""
    if isinstance(value, functools.partial):
        return {
            "function": _describe(value.func),
            "args": [_describe(arg) for arg in value.args],
            "keywords": {name: _describe(arg) for name, arg in sorted(value.keywords.items())},
        }
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | bool | numbers.Number):
        return jsonable(str(value) if isinstance(value, complex) else value)
    if isinstance(value, list | tuple):
        return [_describe(item) for item in value]
    if isinstance(value, np.ndarray | jax.Array):
        try:
            value = np.asarray(value)
        except Exception:  # a key array, or one not held by this process: its type only
            return f"{type(value).__module__}.{type(value).__qualname__} object"
        return {
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "sha256": _fingerprint(value),
        }
    if inspect.isfunction(value) or inspect.isbuiltin(value) or isinstance(value, type):
        return f"{getattr(value, '__module__', None)}.{value.__qualname__}"
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__} object"


def _loss_identity(loss_fn: Callable) -> Any:
    """:func:`_describe` of ``loss_fn`` as it reads back from a checkpoint's JSON metadata."""
    return json.loads(json.dumps(_describe(loss_fn)))


class _StaticKey:
    """A static pytree (the model's non-array part with the state's structure) flattened and
    hashed once per :func:`train` call.

    ``equinox.filter_jit`` flattens and hashes its static arguments on every call; for a U-Net
    that walk is a fixed host cost of each dispatch, paid while the device waits. Passed as
    one leaf, it is hashed once here, and a dispatch's cache lookup finds it by identity.
    Equal keys (the same structure and leaves of the same type and value, how ``filter_jit``
    compares them) share a compilation across calls.
    """

    def __init__(self, tree: Any):
        self.tree = tree
        leaves, treedef = jax.tree.flatten(tree)
        self._key = (treedef, tuple((type(leaf), leaf) for leaf in leaves))
        self._hash = hash(self._key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _StaticKey) and (self is other or self._key == other._key)


def _tree_bytes(tree) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def _check_step_memory(
    params, rest, loss_fn, data, labels, batch: int, n_devices: int, stochastic: bool
):
    """Refuse, before anything is placed or compiled, a training step that cannot fit in the
    host's memory (on a CPU an allocation past it is not refused: the kernel kills the
    process). Its size: the values the loss's gradient keeps from the forward pass (the
    residuals of :func:`jax.vjp`, found abstractly by :func:`jax.eval_shape`: per example, as
    the difference between batches of two and one, plus what does not grow with the batch),
    the data on every device, and the parameters four times (values, gradient, two moments).
    An estimate, not a bound: XLA may keep less (recomputing cheap values) or more (its
    temporaries), so it is meant for the runs that miss by far (a 20000x20000 image), where a
    host would otherwise kill the process. ``params`` and ``rest`` are the model's trained
    leaves and the rest, as :func:`train` partitions it."""
    leaves, structure = jax.tree.flatten((params, rest, loss_fn))
    described = tuple((x.shape, str(x.dtype)) if eqx.is_array(x) else x for x in leaves)
    key = (structure, described, data.shape[1:], str(data.dtype), labels is None, stochastic)
    try:
        measured = _STEP_MEMORY.get(key)
    except TypeError:  # an unhashable leaf: measure each time
        key, measured = None, None
    if measured is None:
        try:
            measured = _kept_bytes(params, rest, loss_fn, data, labels, stochastic)
        except ValueError as error:  # the loss refused one of its own settings, traced
            if str(error).partition(":")[0] in getattr(loss_fn, "keywords", {}):
                raise ValueError(f"loss.{error}") from None  # the field that sets it
            raise
        if key is not None:
            if len(_STEP_MEMORY) >= 256:  # a long session of many models: start afresh
                _STEP_MEMORY.clear()
            _STEP_MEMORY[key] = measured
    per_example, fixed = measured
    need = (
        per_example * batch + fixed * n_devices + data.nbytes * n_devices + 4 * _tree_bytes(params)
    )
    examples = f"{batch} examples of shape {tuple(data.shape[1:])}"
    cost = f"{per_example / 2**20:.3g} MiB each in a training step"
    field, remedy = f"train.batch_size ({examples}, {cost})", "use a smaller batch_size"
    # A loss drawing many noise levels or probes per example costs that many times more: the
    # batch (of 1, say) was blamed for 10**8 levels an example. The larger factor is named.
    keywords = getattr(loss_fn, "keywords", {})
    draws = [(name, keywords[name]) for name in ("n_sigmas", "n_probes") if name in keywords]
    if draws and draws[0][1] > batch:
        name, count = draws[0]
        field = f"loss.{name} ({count} draws for each of {examples}, {cost})"
        remedy = f"give fewer {name}, or use a smaller batch_size"
    check_memory(field, need, f"{remedy}, smaller images or a smaller network")


_STEP_MEMORY: dict = {}
""":func:`_check_step_memory`'s measurements by model and loss structure, leaf shapes and
example shape: a run again (a resume, the next run of a sweep) is not traced again."""


def _kept_bytes(params, rest, loss_fn, data, labels, stochastic) -> tuple[int, int]:
    """``(bytes per example, bytes independent of the batch)`` of the residuals of the mean
    loss's :func:`jax.vjp` over a batch, found abstractly for batches of one and two."""

    def kept(b: int) -> int:
        def residuals(params, xs, ys):
            def mean_loss(p):
                network = eqx.combine(p, rest)

                def one(k, x, y):
                    m = functools.partial(network, key=k) if stochastic else network
                    return _scalar(loss_fn(k, m, x) if y is None else loss_fn(k, m, x, y))

                keys = jax.random.split(jax.random.key(0), b)
                return jnp.mean(jax.vmap(one)(keys, xs, ys))

            return jax.vjp(mean_loss, params)[1]

        xs = jax.ShapeDtypeStruct((b, *data.shape[1:]), data.dtype)
        ys = None if labels is None else jax.ShapeDtypeStruct((b,), jnp.int32)
        return _tree_bytes(jax.eval_shape(residuals, params, xs, ys))

    one, two = kept(1), kept(2)
    return max(two - one, 0), max(2 * one - two, 0)


@eqx.filter_jit
def _initial_state(params: Any, *, config: TrainConfig, sharding: NamedSharding) -> _TrainState:
    """The state before step 0 (optimiser state, EMA copy) placed with ``sharding``, as one
    compiled program per configuration: run eagerly, optax's ``init`` dispatches one
    zero-fill per parameter array and moment, a fixed host cost of every :func:`train`
    call."""
    ema_params = None if config.ema_decay is None else params
    state = _TrainState(params, make_optimizer(config).init(params), ema_params)
    return jax.lax.with_sharding_constraint(state, sharding)


@eqx.filter_jit
def _dispatch(
    state_leaves: list[Array],
    frozen: Any,
    data: Array,
    labels: Array | None,
    key: Array,
    start: Array,
    n_active: Array,
    *,
    structure: _StaticKey,
    loss_fn: Callable,
    loss_leaf_types: tuple[type, ...],
    config: TrainConfig,
    mesh: Mesh,
    length: int,
    hflip: bool,
    stochastic: bool,
) -> tuple[list[Array], Array, Array]:
    """:func:`_steps` compiled, on the state's leaves: ``structure.tree`` is ``(state
    treedef, static model part)``. The state travels as a flat list so that a dispatch's host
    work is a list of arrays in and out, not a walk of the model's modules."""
    state_def, static = structure.tree
    state, losses, bad = _steps(
        jax.tree.unflatten(state_def, state_leaves), frozen, data, labels, key, start, n_active,
        static=static, loss_fn=loss_fn, config=config, mesh=mesh, length=length, hflip=hflip,
        stochastic=stochastic,
    )  # fmt: skip
    return jax.tree.leaves(state), losses, bad


def _steps(
    state: _TrainState,
    frozen: Any,
    data: Array,
    labels: Array | None,
    key: Array,
    start: Array,
    n_active: Array,
    *,
    static: Any,
    loss_fn: Callable,
    config: TrainConfig,
    mesh: Mesh,
    length: int,
    hflip: bool,
    stochastic: bool,
) -> tuple[_TrainState, Array, Array]:
    """Run steps ``start, ..., start + n_active - 1``; return ``(state, losses, bad)``.

    :func:`_dispatch` compiles it: it traces the array arguments (``start`` and ``n_active``
    are scalar arrays) and keys the compilation on the others. ``lax.scan`` runs over
    ``length`` slots (those past ``n_active`` do nothing), so one compilation serves every
    dispatch of a run, and every run with the same ``static`` model part, ``loss_fn`` (see
    :func:`_as_pytree`) and ``config`` (``train`` passes it with the execution-only fields
    reset). ``loss_leaf_types`` (of :func:`_dispatch`) only keys the compilation: static
    leaves are compared by ``==``, and ``1 == 1.0``, so without their types an int
    hyper-parameter would run the float one's trace. ``losses`` is ``(length,)``, NaN in
    unused slots; ``bad`` is the first step with a non-finite loss or gradient, or -1, and
    from that step on the state is left as it was. With ``hflip`` the batch key is split into
    an index key and a flip key (see :func:`train`); without it, it draws the indices as it
    always has. ``labels`` ``(n,)`` (or ``None``) are drawn with the same indices as the
    examples and passed to the loss; with ``stochastic`` the loss key is split into a loss key
    and a dropout key (see :func:`train`).
    """
    optimizer = make_optimizer(config)
    replicated = NamedSharding(mesh, P())
    batch_sharded = NamedSharding(mesh, P("data"))

    def batch_loss(params, step_key):
        batch_key, loss_key = jax.random.split(step_key)
        if hflip:
            batch_key, flip_key = jax.random.split(batch_key)
        if config.batch_size is None:
            x_0, y = data, labels
        else:
            indices = jax.random.randint(batch_key, (config.batch_size,), 0, data.shape[0])
            x_0 = data[indices]
            y = None if labels is None else labels[indices]
        if hflip:  # mirror each image (N, C, H, W) along W with probability 1/2
            flip = jax.random.bernoulli(flip_key, shape=(x_0.shape[0], 1, 1, 1))
            x_0 = jnp.where(flip, x_0[..., ::-1], x_0)
        # Data parallelism: each device computes the loss of its slice of the batch; the mean
        # below becomes an all-reduce, and so does the gradient.
        x_0, y = jax.lax.with_sharding_constraint((x_0, y), batch_sharded)
        if stochastic:
            loss_key, dropout_key = jax.random.split(loss_key)
        examples = jnp.arange(x_0.shape[0])
        example_keys = jax.vmap(lambda b: jax.random.fold_in(loss_key, b))(examples)
        example_keys = jax.lax.with_sharding_constraint(example_keys, batch_sharded)
        score_fn = eqx.combine(params, frozen, static)

        def example_loss(b, k, x, label):
            model = score_fn
            if stochastic:  # the network's own randomness (dropout) for example b
                model = functools.partial(score_fn, key=jax.random.fold_in(dropout_key, b))
            value = loss_fn(k, model, x) if label is None else loss_fn(k, model, x, label)
            return _scalar(value)

        return jnp.mean(jax.vmap(example_loss)(examples, example_keys, x_0, y))

    def update(state, step_key, step):
        loss, grads = jax.value_and_grad(batch_loss)(state.params, step_key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = (
            None
            if config.ema_decay is None
            else optax.incremental_update(
                params, state.ema_params, 1.0 - _ema_decay_at(config, step)
            )
        )
        new_state = jax.lax.with_sharding_constraint(
            _TrainState(params, opt_state, ema_params), replicated
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        return new_state, loss, finite

    def skip(state, step_key, step):
        loss = jax.eval_shape(update, state, step_key, step)[1]  # float64 under x64
        return state, jnp.full((), jnp.nan, loss.dtype), jnp.array(True)

    def body(carry, slot):
        state, bad = carry
        step = start + slot
        active = (slot < n_active) & (bad < 0)
        step_key = jax.random.fold_in(key, step)
        if config.unroll:
            # No conditional either: XLA:CPU's slow path covers its branches too. The update
            # runs on every slot and an inactive slot keeps the state.
            new_state, loss, finite = update(state, step_key, step)
            state = jax.tree.map(lambda n, o: jnp.where(active, n, o), new_state, state)
            loss, finite = jnp.where(active, loss, jnp.nan), finite | ~active
        else:
            state, loss, finite = jax.lax.cond(active, update, skip, state, step_key, step)
        bad = jnp.where(finite, bad, step)
        return (state, bad), loss

    (state, bad), losses = _run_slots(body, (state, jnp.array(-1)), length, config.unroll)
    return state, losses, bad


def _ema_decay_at(config: TrainConfig, step) -> Array | float:
    r"""The moving average's decay at (0-based) ``step``: ``config.ema_decay``, or with
    ``config.ema_debias`` the bias-corrected :math:`\beta(1-\beta^{t-1})/(1-\beta^t)` at
    :math:`t = ` ``step + 1``, 0 at the first step. The powers are taken as
    ``expm1(t * log1p(-(1 - beta)))``: ``1 - beta**t`` in float32 keeps no digit of a decay as
    close to 1 as 0.99999994."""
    if not config.ema_debias:
        return config.ema_decay
    log_decay = math.log1p(-(1.0 - config.ema_decay))  # on the host, in float64
    t = jnp.asarray(step, jnp.float32) + 1.0
    return config.ema_decay * jnp.expm1((t - 1.0) * log_decay) / jnp.expm1(t * log_decay)


def trainable(model) -> Any:
    """The filter of ``model``'s trained leaves, for ``eqx.partition``: its floating-point
    arrays, less those under a field named in the ``frozen_fields`` (a tuple of field names)
    of a module that declares it (a Fourier embedding's frequencies,
    :attr:`scorelab.diffusers.UNet2D.frozen_fields`), as torch leaves out a parameter with
    ``requires_grad=False``: no gradient, no weight decay, no part in the clipped norm."""

    def trained(path, leaf) -> bool:
        if not eqx.is_inexact_array(leaf):
            return False
        node = model
        for entry in path:
            if isinstance(entry, jax.tree_util.GetAttrKey):
                if entry.name in getattr(node, "frozen_fields", ()):
                    return False
                node = getattr(node, entry.name)
            elif isinstance(entry, jax.tree_util.SequenceKey | jax.tree_util.DictKey):
                node = node[entry.idx if hasattr(entry, "idx") else entry.key]
            else:  # a container flattened without names: nothing below declares fields
                return True
        return True

    return jax.tree_util.tree_map_with_path(trained, model)


def _run_slots(body: Callable, carry: Any, length: int, unroll: bool) -> tuple[Any, Array]:
    """``lax.scan(body, carry, jnp.arange(length))``; with ``unroll``, the same ``length`` calls
    of ``body`` as straight-line code, outputs stacked alike.

    Written out rather than ``lax.scan(..., unroll=True)``, which for ``length == 1`` reads
    ``unroll=1``, i.e. *no* unrolling, and emits a one-trip ``while`` loop: the whole loop
    penalty of ``TrainConfig.unroll``. JAX's transpose rules emit the convolutions of a
    network's backward pass with non-canonical dimension labels (``b01f_01oi`` input
    gradients, ``f01b_i01o`` weight gradients); XLA:CPU rewrites them into the canonical
    ``b01f_01io`` its fast libraries (YNNPACK, Eigen) run at the top level of a program, but
    not inside a loop body, where they run on its generic emitter
    (``benchmarks/loop_convolutions.py`` shows the labels and times).
    """
    if not unroll:
        return jax.lax.scan(body, carry, jnp.arange(length))
    outputs = []
    for slot in range(length):
        carry, output = body(carry, jnp.asarray(slot))
        outputs.append(output)
    return carry, jnp.stack(outputs)


def train(
    key: Array,
    model: eqx.Module,
    loss_fn: Callable,
    data,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    label: str | None = None,
    run_config: dict[str, Any] | None = None,
    run_defaults: dict[str, Any] | None = None,
    hflip: bool = False,
    labels=None,
) -> TrainResult:
    r"""Train ``model`` on ``data`` by minimising the mean of a per-example loss.

    The trained leaves are :func:`trainable`'s: the model's floating-point arrays, less the
    fields a module lists in its ``frozen_fields``. Step :math:`i` (``0 <= i < steps``) uses
    the key ``fold_in(key, i)``, split into a batch key (indices ``randint(0, n)`` of shape
    ``(batch_size,)``) and a loss key, from which example :math:`b` of the batch gets
    ``fold_in(loss_key, b)``; it records the mean loss and applies one update of
    :func:`make_optimizer` (and the EMA update if configured).

    With ``hflip`` (images), the batch key is first split into an index key and a flip key;
    example :math:`b` is mirrored left-right, :math:`x_{c,h,w} \mapsto x_{c,h,W-1-w}`, where
    ``bernoulli(flip_key, 1/2)[b]`` is true: a training augmentation for data whose law is
    symmetric under the mirror (not for digits or text). It depends on the step's key only, so
    the result is as reproducible as without it; without it, nothing changes.

    A model with randomness of its own in training (dropout: a ``dropout`` attribute > 0) is
    called with ``key=`` there: the step's loss key is first split into a loss key and a
    dropout key, and example :math:`b` gets ``fold_in(dropout_key, b)``, as reproducible and as
    independent of the batch size as the rest. Evaluation calls it without a key (no dropout).

    With ``labels`` (a class-conditional model), example :math:`b`'s label is drawn with it
    (the same index) and the loss is called as ``loss_fn(key, score_fn, x, label)``.

    Args:
        key: root PRNG key (typed, ``jax.random.key``, or legacy ``PRNGKey``).
        model: Equinox module; the initial score model ``score_fn(x, sigma)``. Its
            inexact-array leaves are trained; on resume only its structure is used.
        loss_fn: per-example loss ``loss_fn(key, score_fn, x) -> scalar`` with ``x`` of shape
            ``(d,)`` (a :mod:`scorelab.losses` function with its hyper-parameters bound by
            ``functools.partial``).
        data: ``(n, *S)`` training set of finite numbers, ``(n, d)`` points or
            ``(n, C, H, W)`` images, copied to every device.
        config: the run's :class:`TrainConfig`.
        out_dir: directory for orbax checkpoints (every ``config.checkpoint_every`` steps and
            at the end); ``None`` writes nothing.
        resume: continue from the newest intact checkpoint in ``out_dir`` (start afresh if
            there is none; a damaged newer one is deleted with a warning, see
            :func:`scorelab.checkpoints.restore_checkpoint`). The run must have the same key,
            data and configuration (``run_config`` and ``config``) up to the execution-only
            fields ``steps_per_dispatch``, ``checkpoint_every`` and ``log_every``, and
            ``steps``, which a ``"constant"`` schedule may extend; it then ends with the same
            parameters as an uninterrupted run.
        progress: show a tqdm bar with step, mean loss and steps/s.
        label: the progress bar's description (e.g. the run's name).
        run_config: the rest of the run's configuration as nested JSON-serialisable dicts
            (e.g. ``ExperimentConfig.to_dict()``: data, model, loss), recorded in every
            checkpoint and compared field by field on resume; its ``"train"`` entry is
            ``config``.
        run_defaults: the declared default of every field of ``run_config``, nested the same
            way (e.g. ``config.field_defaults()``): on resume, a field that a checkpoint of an
            older scorelab does not record is taken at its default.
        hflip: mirror each example of ``(n, C, H, W)`` images with probability 1/2 per step.
        labels: ``(n,)`` integer classes of the examples for a class-conditional loss, or
            ``None``.

    Returns:
        a :class:`TrainResult`.

    Raises:
        NonFiniteLossError: a loss or gradient was NaN/inf; the bad update is not applied and
            not checkpointed.
        TrainingInterrupted: a ``KeyboardInterrupt`` arrived; with ``out_dir`` the steps
            finished by then are checkpointed first (one process only), so ``resume``
            continues them.
        ValueError: batch size not divisible by the device count; ``resume`` without
            ``out_dir``; existing checkpoints without ``resume``; a resume that does not match
            the checkpointed run (naming the fields that differ); checkpoints of which
            none is intact.
        scorelab.data.DataError: ``data`` is not a finite ``(n, *S)`` array, ``hflip`` on
            data that are not images ``(n, C, H, W)``, or ``labels`` that are not ``n``
            integers >= 0.
    """
    check_instance(
        "config",
        config,
        TrainConfig,
        "a scorelab.training.TrainConfig (TrainConfig.from_dict(...) for a mapping)",
    )
    resume = _check_flag("resume", resume)
    progress = _check_flag("progress", progress)
    hflip = _check_flag("hflip", hflip)
    for name, value in (("run_config", run_config), ("run_defaults", run_defaults)):
        check_mapping(name, value, "a dict of sections", optional=True)
    data = validate_data(data, any_shape=True)
    if hflip and data.ndim != 4:
        raise DataError(
            f"data.hflip: flips images (n, C, H, W), but the data have shape {data.shape}"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != data.shape[:1] or labels.dtype.kind not in "iu" or labels.min() < 0:
            raise DataError(
                f"labels: expected {data.shape[0]} integers >= 0 (one per example), got "
                f"{labels.dtype} of shape {labels.shape}"
            )
        # The labels go to the device as int32: a larger class wrapped round to another one.
        if labels.max() > np.iinfo(np.int32).max:
            raise DataError(
                f"labels: classes must be < 2**31, got {labels.max()}; number the classes "
                "0, 1, ... (e.g. with np.unique(labels, return_inverse=True))"
            )
        num_classes = getattr(model, "num_classes", None)
        if isinstance(num_classes, int) and not isinstance(num_classes, bool):
            if labels.max() >= num_classes:  # an embedding lookup clamps it, without a word
                raise DataError(
                    f"labels: classes must be < the model's num_classes ({num_classes}), got "
                    f"{labels.max()}; give the model enough classes or relabel the data"
                )
        labels = labels.astype(np.int32)
    _check_loss_fn(loss_fn, labels is not None)
    key = typed_key(key)
    loss_fn = _as_pytree(loss_fn)
    devices = jax.devices()
    batch = data.shape[0] if config.batch_size is None else config.batch_size
    if batch % len(devices) != 0:
        what = "batch_size" if config.batch_size is not None else "batch_size=None (all n rows)"
        raise ValueError(
            f"batch_size: {what} = {batch} is not divisible by the {len(devices)} devices the "
            f"batch is sharded over; choose a multiple of {len(devices)}"
        )
    if resume and out_dir is None:
        raise ValueError("resume=True needs the out_dir of the run to resume")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        # Found by orbax's writer thread, as a logged traceback and an error naming neither.
        raise ValueError(
            f"out_dir: {out_dir} exists and is not a folder; give a folder for the checkpoints"
        )

    mesh = Mesh(np.asarray(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    # Floating-point arrays are trained, but for the fields a module declares frozen; other
    # arrays (integer buffers, frozen ones) are passed along unchanged; the rest
    # (hyper-parameters, functions) is static and keys the compilation.
    params, rest = eqx.partition(model, trainable(model))
    if not jax.tree.leaves(params):  # a plain function "trained" to itself, without a word
        raise TypeError(
            "model: expected an equinox Module with trainable (floating-point) arrays, got "
            f"{type(model).__name__}"
        )
    frozen, static = eqx.partition(rest, eqx.is_array)
    stochastic = getattr(model, "dropout", 0) > 0
    if devices[0].platform == "cpu":  # an accelerator refuses an allocation; a host kills
        _check_step_memory(params, rest, loss_fn, data, labels, batch, len(devices), stochastic)
    params, frozen, device_data, device_labels = jax.device_put(
        (params, frozen, data, labels), replicated
    )
    # The execution-only fields do not enter the computation: reset them so that runs
    # differing only there share one compilation.
    program_config = dataclasses.replace(
        config, steps_per_dispatch=1, checkpoint_every=None, seed=0, log_every=1
    )
    state = _initial_state(params, config=program_config, sharding=replicated)
    losses = np.full(config.steps, np.nan, dtype=np.float32)
    defaults = {**(run_defaults or {}), "train": field_defaults(TrainConfig)}
    metadata = {
        "config": jsonable({**(run_config or {}), "train": config.to_dict()}),
        "key_impl": str(jax.random.key_impl(key)),
        "key_data": np.asarray(jax.random.key_data(key)).tolist(),
        "data_shape": list(data.shape),
        "data_sha256": _fingerprint(data),
        "hflip": hflip,
        "labels_sha256": None if labels is None else _fingerprint(labels),
        "loss": _loss_identity(loss_fn),
        "scorelab_version": __version__,
    }

    start_step = 0
    manager = None if out_dir is None else checkpoints.open_checkpoints(out_dir)
    # Closed at the end, whatever happens: an open manager's threads outlived the command and,
    # on a loaded machine, logged 'cannot schedule new futures after interpreter shutdown'.
    try:
        last_checkpoint = None if manager is None else manager.latest_step()
        if last_checkpoint is not None and not resume:
            raise ValueError(
                f"out_dir {out_dir} already holds checkpoints (latest: step {last_checkpoint}); "
                "pass resume=True to continue that run, or choose a new out_dir"
            )

        def checkpointed(state, losses):
            # Everything a resumed run needs besides the metadata, data and model structure.
            return {"train_state": state, "losses": losses}

        def like(saved_metadata):
            _check_resumable(saved_metadata, metadata, defaults)
            return checkpointed(state, np.zeros(saved_metadata["step"], np.float32))

        if last_checkpoint is not None:
            start_step, saved, _ = checkpoints.restore_checkpoint(manager, like)
            state, losses[:start_step] = saved["train_state"], saved["losses"]
            last_checkpoint = start_step  # newer damaged checkpoints were deleted
        if manager is not None:  # a limit found before the work, not at its first save
            checkpoints.check_room(manager, checkpointed(state, losses))

        state_leaves, state_def = jax.tree.flatten(state)
        dispatch = functools.partial(
            _dispatch,
            structure=_StaticKey((state_def, static)),
            loss_fn=loss_fn,
            loss_leaf_types=tuple(type(leaf) for leaf in jax.tree.leaves(loss_fn)),
            config=program_config,
            mesh=mesh,
            length=min(config.steps_per_dispatch, config.steps),
            hflip=hflip,
            stochastic=stochastic,
        )
        period = config.checkpoint_every or config.steps
        bar = tqdm(
            total=config.steps,
            initial=start_step,
            desc=label,
            unit="step",
            disable=not progress or jax.process_index() != 0,
            dynamic_ncols=True,
        )
        # The state after the last finished dispatch and its step, rebound together in one
        # store, so that an interrupt (arriving between any two bytecodes) never sees one
        # without the other.
        done = (state_leaves, start_step)

        def save(step):  # whole: an interrupt waits for it (its threads wrote on, into a retry)
            state = jax.tree.unflatten(state_def, done[0])
            with held_signals():
                checkpoints.save_checkpoint(
                    manager, step, checkpointed(state, losses[:step]), {**metadata, "step": step}
                )

        try:
            with bar:
                while done[1] < config.steps:
                    step = done[1]
                    next_checkpoint = min((step // period + 1) * period, config.steps)
                    n_active = min(config.steps_per_dispatch, next_checkpoint - step)
                    new_leaves, dispatch_losses, bad = dispatch(
                        done[0],
                        frozen,
                        device_data,
                        device_labels,
                        key,
                        jnp.asarray(step),
                        jnp.asarray(n_active),
                    )
                    dispatch_losses = np.asarray(dispatch_losses)  # the one host sync per dispatch
                    bad = int(bad)
                    if bad >= 0:
                        losses[step:bad] = dispatch_losses[: bad - step]
                        raise NonFiniteLossError(
                            bad, float(dispatch_losses[bad - step]), losses[:bad], last_checkpoint
                        )
                    losses[step : step + n_active] = dispatch_losses[:n_active]
                    done = (new_leaves, step + n_active)
                    step = done[1]
                    bar.update(n_active)
                    recent = losses[max(0, step - config.log_every) : step]
                    bar.set_postfix(loss=f"{np.mean(recent):.4g}")
                    if manager is not None and step == next_checkpoint:
                        save(step)
                        last_checkpoint = step
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM, which the command line turns into one): keep the finished steps
            # as a checkpoint that ``resume`` continues to the uninterrupted run's parameters (the
            # step is a dispatch boundary, as in that run). A multi-process job would need every
            # process in the collective write, so it keeps its last periodic checkpoint.
            step = done[1]
            if manager is not None and jax.process_count() == 1:
                # A periodic save the interrupt cut short is retried; one it let finish is kept.
                if step > (manager.latest_step() or 0):
                    with contextlib.suppress(Exception):  # e.g. that save's unfinished files
                        save(step)
                last_checkpoint = manager.latest_step()
            raise TrainingInterrupted(step, config.steps, last_checkpoint) from None

        def as_model(params):
            return eqx.combine(params, frozen, static)

        state = jax.tree.unflatten(state_def, done[0])
        ema_model = None if config.ema_decay is None else as_model(state.ema_params)
        return TrainResult(as_model(state.params), ema_model, losses, config, start_step)
    finally:
        if manager is not None:
            manager.close()


def _differences(
    saved: dict, current: dict, defaults: dict, prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """``(dotted name, saved value, current value)`` of every field where two nested dicts of
    JSON values differ (``None`` for an absent field).

    A field absent from ``saved`` (a checkpoint written before the field existed) is the same
    when the current value is the field's declared default in ``defaults`` (a new field's
    default keeps the computation it had before the field existed)."""
    found = []
    for name in [*current, *(name for name in saved if name not in current)]:
        old, new = saved.get(name), current.get(name)
        default = defaults.get(name, {}) if isinstance(defaults, dict) else {}
        if isinstance(old, dict) and isinstance(new, dict):
            found += _differences(old, new, default, f"{prefix}{name}.")
        elif name not in saved and name in defaults and new == defaults[name]:
            continue
        elif old != new or (name in saved) != (name in current):
            found.append((f"{prefix}{name}", old, new))
    return found


def field_defaults(cls) -> dict[str, Any]:
    """The declared default of every field of the dataclass ``cls`` that has one, as JSON
    values (``{name: default}``), for :func:`train`'s ``run_defaults``."""
    return jsonable(
        {
            field.name: field.default
            for field in dataclasses.fields(cls)
            if field.default is not dataclasses.MISSING
        }
    )


def _check_resumable(saved: dict, current: dict, defaults: dict) -> None:
    """Refuse to resume a checkpoint into a different run (its result would be neither).

    The whole recorded configuration must be equal, but for the execution-only training
    fields, and ``train.steps``, which a ``"constant"`` schedule may change to any number not
    below the checkpointed step (the steps taken are then those of the new run). A field the
    checkpoint does not record (an older scorelab's) counts as its default (``defaults``); a
    section the checkpoint records and the current run does not (the sampler, which an older
    scorelab recorded though it does not enter training) is not compared.
    """
    may_differ = {f"train.{name}" for name in (*_EXECUTION_FIELDS, "steps")}
    recorded = {
        name: saved["config"][name] for name in current["config"] if name in saved["config"]
    }
    differing = [
        f"{name}: {old!r} -> {new!r}"
        for name, old, new in _differences(recorded, current["config"], defaults)
        if name not in may_differ
    ]
    if differing:
        raise ValueError(
            f"cannot resume: config differs from the checkpointed run ({', '.join(differing)}); "
            "restore those values, or start a new run in another out_dir"
        )
    train, saved_steps = current["config"]["train"], saved["config"]["train"]["steps"]
    if train["steps"] != saved_steps and train["schedule"] != "constant":
        raise ValueError(
            f"cannot resume: train.steps {saved_steps} -> {train['steps']} changes the "
            f"{train['schedule']!r} learning-rate schedule of the steps already taken; keep "
            f"steps = {saved_steps} (only a 'constant' schedule can be extended)"
        )
    if train["steps"] < saved["step"]:
        raise ValueError(
            f"cannot resume: train.steps = {train['steps']} is below the checkpointed step "
            f"{saved['step']}; choose steps >= {saved['step']}"
        )
    if saved["data_sha256"] != current["data_sha256"]:
        # Data are float32 whatever the width; a built-in set drawn in float64 has other values.
        wide = (
            "; jax_enable_x64 draws a built-in data set in float64, with other values"
            if jax.config.jax_enable_x64
            else ""
        )
        there, here = tuple(saved["data_shape"]), tuple(current["data_shape"])
        what = f"shape {there} there, {here} here" if there != here else f"the values of {here}"
        raise ValueError(
            f"cannot resume: data differ from the checkpointed run's ({what}){wide}; restore "
            "the data it trained on, or start a new run in another out_dir"
        )
    if saved.get("hflip", False) != current["hflip"]:
        raise ValueError(
            f"cannot resume: hflip {saved.get('hflip', False)} -> {current['hflip']} changes the "
            "batches; restore it, or start a new run in another out_dir"
        )
    if saved.get("labels_sha256") != current["labels_sha256"]:
        raise ValueError(
            "cannot resume: the class labels differ from the checkpointed run's; restore them, "
            "or start a new run in another out_dir"
        )
    if "loss" in saved and saved["loss"] != current["loss"]:  # older checkpoints lack it
        raise ValueError(
            f"cannot resume: loss_fn differs from the checkpointed run's ({saved['loss']} -> "
            f"{current['loss']}); restore it, or start a new run in another out_dir"
        )
    if (saved["key_impl"], saved["key_data"]) != (current["key_impl"], current["key_data"]):
        raise ValueError("cannot resume: key differs from the checkpointed run's (check the seed)")
