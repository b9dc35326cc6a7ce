"""The sampler record, the chain driver, priors and the checks every sampler shares."""

from __future__ import annotations

import abc
import dataclasses
import functools
import inspect
import math
import numbers
import typing
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import (
    all_finite,
    check_callable,
    check_float32,
    check_instance,
    check_int,
    check_memory,
    check_sigma,
    is_real_dtype,
    is_traced,
    traced_message,
)
from scorelab._xla_cpu import convolution_jit, takes_convolutions
from scorelab.noise import geometric_sigmas

DEFAULT_SIGMA_MIN = 0.02
"""Smallest noise level of the default grid (the tutorial's)."""

DEFAULT_SIGMA_MAX = 80.0
"""Largest noise level of the default grid: EDM's (Karras et al., 2022), not the tutorial's 10,
which is too small for data spread over [-10, 10]^2 (see :mod:`scorelab.samplers`)."""


class SamplerOutput(NamedTuple):
    """What :func:`sample` (``n`` chains) and :meth:`AbstractSampler.run` (one chain) return.

    Shapes are for one chain with state shape ``S`` (e.g. ``(d,)`` or ``(1, 8, 8)``);
    :func:`sample` prepends the chain axis ``n`` to every array.

    Attributes:
        x: the final sample, ``S``.
        trajectory: the states after every step, ``(n_records, *S)`` (each sampler documents
            its records), or ``None`` when not asked for.
        nfe: the score evaluations this chain took, a scalar int, for samplers whose cost
            depends on the chain (adaptive ODE solvers, whose :attr:`AbstractSampler.nfe` is
            ``None``); ``None`` for the others.
        info: the sampler's per-step ``*Info`` record reduced over the chain's steps (means of
            floating and boolean fields, sums of integer ones), e.g. :class:`MALAInfo` with the
            chain's mean acceptance rate; ``None`` for samplers that report nothing.
    """

    x: Array
    trajectory: Array | None
    nfe: Array | None = None
    info: Any = None


class Option(NamedTuple):
    """One declared option of a sampler: what the registry, the configuration, the CLI flags,
    the sweep labels and the docs table are generated from.

    Attributes:
        name: the keyword of the constructor and of :func:`build_sampler`, e.g. ``"eta"``.
        type: ``float``, ``int`` or ``str``.
        default: the default value.
        help: a one-line description.
        choices: the accepted values of a ``str`` option, else ``None``.
        unbounded: a ``float`` option that takes ``inf`` (``s_tmax``: churn on every level, as
            k-diffusion's default); every other float must be finite.
        usual: ``(low, high, why)`` for a ``float`` option whose values far beyond ``high`` are
            accepted but rarely meant (``s_noise = 1000`` sampled noise of spread 300): a
            value outside ``[low, high]`` gives a warning saying ``why``; else ``None``.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    unbounded: bool = False
    usual: tuple[float, float, str] | None = None


S_NOISE_USUAL = (0.0, 2.0, "it scales the added noise; EDM tunes it within 1 to 1.01")
"""The usual range of every sampler's ``s_noise`` (:attr:`Option.usual`)."""

ATOL_USUAL = (0.0, 1.0, "an error allowed in data units, where data span about [-1, 1]")
"""The usual range of an adaptive solver's ``atol`` (:attr:`Option.usual`)."""


def option(
    default,
    help: str,
    *,
    type: type = float,  # noqa: A002 - the Option attribute's name
    choices: tuple[str, ...] | None = None,
    in_label: bool = False,
    unbounded: bool = False,
    usual: tuple[float, float, str] | None = None,
):
    """Declare a sampler's option: an ``equinox`` field with its default and one-line help.

    Numbers become array leaves (a new value does not recompile); ``int`` and ``str`` options
    set shapes or code, so they are static.

    Args:
        default: the default value.
        help: one line for the CLI and the docs.
        type: ``float`` (a traced array leaf), ``int`` or ``str`` (static).
        choices: the accepted values of a ``str`` option.
        in_label: show this option in the sampler's name even at its default value (its
            main knob, e.g. DDIM's ``eta``); other options show only when changed.
        unbounded: a ``float`` option that also takes ``inf`` (:attr:`Option.unbounded`).
        usual: the range beyond which a value is warned about (:attr:`Option.usual`).
    """
    declared = {
        "type": type,
        "help": help,
        "choices": choices,
        "in_label": in_label,
        "unbounded": unbounded,
        "usual": usual,
    }
    if type is float:
        return eqx.field(default=default, converter=_float_leaf, metadata={"option": declared})
    return eqx.field(default=default, static=True, metadata={"option": declared})


def _float_leaf(value) -> Array:
    """A float option's leaf: JAX's default float, strongly typed, whatever the value was given
    as (``1``, ``1.0``, ``np.float64(1.0)``): one compiled program for every value, and one
    label (``eta=1`` was an int32 leaf, a second compilation and the label ``ddim(eta=1)``)."""
    if is_traced(value):
        return value
    return jnp.asarray(value, dtype=jnp.asarray(0.0).dtype)


def declared_options(cls) -> tuple[Option, ...]:
    """The :class:`Option` records of sampler class ``cls``, in declaration order."""
    return tuple(
        Option(f.name, f.metadata["option"]["type"], f.default, f.metadata["option"]["help"],
               f.metadata["option"]["choices"], f.metadata["option"]["unbounded"],
               f.metadata["option"]["usual"])
        for f in dataclasses.fields(cls)
        if "option" in f.metadata
    )  # fmt: skip


def check_option(option: Option, value, field: str | None = None) -> None:
    """Refuse ``value`` for the declared ``option`` unless it is of the option's type: a float
    option a real number, finite and representable in float32 (``inf`` only for an
    :attr:`~Option.unbounded` option; :func:`scorelab._validate.check_float32`), an int option
    an integer below 2**31 (options enter the compiled samplers as int32), a str option a
    string. A value traced
    under ``jit`` is taken as it is. Messages start with ``field`` (default: the option's
    name); the configuration passes ``sampler.options.NAME``.

    Raises:
        TypeError: naming the option, for a value of another type (a string, an array of
            several values, ``None``, a boolean).
        ValueError: naming the option, for ``inf``, NaN or a magnitude beyond float32 (they
            passed ``step_size > 0`` and the like and sampled to NaN), or an integer
            beyond int32 (an ``OverflowError`` from the compiled call).
    """
    field = option.name if field is None else field
    if is_traced(value):
        return
    if option.type is float:
        array = None if isinstance(value, str | bool | None) else np.asarray(value)
        if array is None or array.ndim or not is_real_dtype(array.dtype):
            raise TypeError(f"{field}: expected a number, got {value!r}")
        number = float(array)
        if number == math.inf and option.unbounded:
            return
        if not math.isfinite(number):
            raise ValueError(f"{field}: expected a finite number, got {value!r}")
        check_float32(field, number)
    elif option.type is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{field}: expected an integer, got {value!r}")
        if abs(value) >= 2**31:
            raise ValueError(f"{field}: expected an integer below 2**31, got {value!r}")
    elif not isinstance(value, str):
        raise TypeError(f"{field}: expected a string, got {value!r}")


def warn_if_unusual(field: str, value, usual: tuple[float, float, str] | None) -> None:
    """Warn, naming ``field`` and why, about a checked concrete ``value`` outside the ``usual``
    range ``(low, high, why)`` (:attr:`Option.usual`); nothing for ``None`` or a traced value."""
    if usual is None or is_traced(value):
        return
    low, high, why = usual
    number = float(np.asarray(value))
    if not low <= number <= high:
        warnings.warn(
            f"{field}: {number:g} is outside its usual range {low:g} to {high:g} ({why}); "
            "the work goes on with it",
            stacklevel=3,  # the caller of a sampler's constructor
        )


_NEEDS_CONCRETE = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)
"""What a value check raises on a traced value (``if``, ``np.asarray``, ``int`` of it)."""


def checked_options(constructor):
    """Decorate a sampler's constructor: the options it is given are checked against their
    declarations (:func:`check_option`) before its own range checks run, so a string, an
    array or ``inf`` is named as the option's, not an error from a comparison or NaN samples."""
    signature = inspect.signature(constructor)

    @functools.wraps(constructor)
    def build(*args, **kwargs):
        declared = declared_options(typing.get_type_hints(constructor)["return"])
        given = signature.bind_partial(*args, **kwargs).arguments
        for option in declared:
            if option.name in given:
                check_option(option, given[option.name])
        try:
            sampler = constructor(*args, **kwargs)
        except _NEEDS_CONCRETE as error:  # a range check of a traced grid or option value
            traced = [name for name, value in given.items() if is_traced(value)]
            raise TypeError(traced_message(", ".join(traced) or "sampler options")) from error
        for option in declared:  # accepted by the constructor's own checks, but unusual
            if option.name in given:
                warn_if_unusual(option.name, given[option.name], option.usual)
        return sampler

    return build


def format_label(kind: str, cls, values: dict[str, Any]) -> str:
    """``kind(option=value, ...)``: the options marked ``in_label`` and those away from their
    defaults, in declaration order (traced ones left out); ``kind`` alone when there are
    none."""
    shown = []
    for f in dataclasses.fields(cls):
        if "option" not in f.metadata or f.name not in values:
            continue
        value = values[f.name]
        # The sampler in a caller's jit: no value to show; a size check's message names the
        # sampler there too.
        if is_traced(value):
            continue
        if isinstance(value, jax.Array | np.ndarray | np.generic):
            value = np.asarray(value)[()]  # str(np.float32(0.2)) is "0.2", its shortest repr
            changed = value != np.asarray(f.default, value.dtype)
        else:
            changed = value != f.default
        if f.metadata["option"]["in_label"] or changed:
            shown.append(f"{f.name}={value!s}")
    return f"{kind}({', '.join(shown)})" if shown else kind


class AbstractSampler(eqx.Module):
    r"""A sampler: a kernel over an explicit per-step schedule, run by one driver.

    A sampler is a frozen Equinox module whose fields are its hyper-parameters: the grid and
    the numbers are array leaves, so a new grid of the same size, or a new ``eta``, reuses the
    compiled driver. It exposes

    - :meth:`schedule`: the per-step inputs, a pytree of arrays with leading axis
      :attr:`n_steps`;
    - :meth:`init` and :meth:`step`: ``step(score_fn, state, (inputs_k, noise_k)) -> (state,
      info)``, pure, for one chain, with ``noise_k`` the step's :class:`StepNoise`
      (``noise_k(j)`` is its draw ``j < draws_per_step``; ``None`` when it draws nothing) and
      ``info`` the step's ``*Info`` record or ``None``;
    - :meth:`final_step` when the last step (landing on :math:`\sigma = 0`) differs from the
      others (:attr:`has_final_step`).

    The driver (:func:`sample`, :meth:`run`) owns the rest: the draws (from keys or injected
    rows), trajectories or a callback, the final step, NFE and the ``vmap`` over chains, as
    blackjax's ``SamplingAlgorithm(init, step)`` is run by its user's loop.

    Subclasses are final; their options are fields declared with :func:`option`.
    """

    kind: ClassVar[str]
    """The registry name, equal to the constructor's name, e.g. ``"ddim"``."""

    has_final_step: ClassVar[bool] = False
    uses_grid: ClassVar[bool] = True
    needs_log_density: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def n_steps(self) -> int:
        """Number of steps, the final one included (a Python int)."""

    @property
    def draws_per_step(self) -> int:
        """Standard normal draws per step (0 for a deterministic sampler)."""
        return 1

    @property
    @abc.abstractmethod
    def nfe(self) -> int | None:
        """Score evaluations per chain; ``None`` when it depends on the chain (read
        :attr:`SamplerOutput.nfe`)."""

    @property
    def name(self) -> str:
        """A short name for reports, e.g. ``"ddim(eta=1.0)"`` (:func:`label`)."""
        return format_label(self.kind, type(self), self.option_values())

    def option_values(self) -> dict[str, Any]:
        """The sampler's options: name -> value (arrays for the numbers)."""
        return {o.name: getattr(self, o.name) for o in declared_options(type(self))}

    @classmethod
    def levels(cls, nfe: int, options: dict[str, Any]) -> int | None:
        """The largest grid size ``N`` whose NFE fits the budget ``nfe``; ``None`` for a
        sampler without a grid or with an adaptive one. Default: one evaluation per level."""
        return nfe if cls.uses_grid else None

    @abc.abstractmethod
    def schedule(self) -> Any:
        """The per-step inputs: a pytree of arrays with leading axis :attr:`n_steps`."""

    def init(self, score_fn, x: Array) -> Any:
        """The chain's state at ``x`` (default: ``x`` itself)."""
        return x

    @abc.abstractmethod
    def step(self, score_fn, state, inputs) -> tuple[Any, Any]:
        """One step: ``(state, (inputs_k, noise_k)) -> (state, info)``."""

    def final_step(self, score_fn, state, inputs) -> tuple[Any, Any]:
        """The last step, when :attr:`has_final_step`."""
        raise NotImplementedError

    def position(self, state) -> Array:
        """The chain's position ``x`` in ``state`` (default: the state itself)."""
        return state

    def records(self, state) -> Array:
        """What a scanned step adds to the trajectory, ``(r, *S)`` (default: its position;
        the final step adds its position)."""
        return self.position(state)[None]

    def row_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one injected noise row for a state of shape ``shape``."""
        return shape

    def step_keys(self, key: Array) -> Array:
        """The keys of a chain's draws, ``(n_steps, draws_per_step)``, from its key: one fresh
        key per draw (draw ``j`` of step ``i`` uses ``split(key)[i * k + j]``)."""
        k = self.draws_per_step
        return jax.random.split(key, self.n_steps * k).reshape(self.n_steps, k)

    def draw_from_key(self, key: Array, x: Array):
        """One draw from ``key``: a standard normal like ``x``."""
        return jax.random.normal(key, x.shape, x.dtype)

    def draw_from_row(self, row: Array, x: Array):
        """One draw from an injected row."""
        return row

    def noise_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The injected ``noise`` of one chain with state shape ``shape``:
        ``(n_steps * draws_per_step, *row_shape(shape))``, rows in the order they are used."""
        return (self.n_steps * self.draws_per_step, *self.row_shape(shape))

    def run(
        self, key: Array, score_fn, x_init: Array, trajectory: bool = False, noise=None
    ) -> SamplerOutput:
        """Run ONE chain from ``x_init`` (any shape ``S``); :func:`sample` runs many.

        Args:
            key: PRNG key of the chain's draws (unused when ``noise`` is given).
            score_fn: ``score_fn(x, sigma)`` on one state ``x`` ``S``, scalar ``sigma``.
            x_init: the start, ``S``.
            trajectory: whether to keep the states.
            noise: optional injected standard normal rows, :meth:`noise_shape`.

        Returns:
            :class:`SamplerOutput` for one chain.

        Raises:
            ValueError: if ``noise`` is not of shape :meth:`noise_shape`, ``score_fn``
                returns another shape than ``S``, or a concrete ``x_init`` or ``noise`` holds
                NaN or inf.
            TypeError: for a ``key`` that is not a PRNG key, states that are not float32
                or float64, ``noise`` that is not real, or a ``score_fn`` that is not
                callable or returns something other than a real array.
        """
        key = typed_key(key)
        _check_score_fn(score_fn, self)
        x_init = _check_x_init(jnp.asarray(x_init)[None])[0]
        noise = _check_noise_values(noise)
        check_noise(noise, self.noise_shape(jnp.shape(x_init)))
        score_fn = _shape_checked(score_fn)
        return run_chain(self, key, score_fn, x_init, noise, trajectory, None)


# --- grids and priors --------------------------------------------------------------------------


def default_sigmas(n: int = 100, sigma_max: float = DEFAULT_SIGMA_MAX) -> Array:
    r"""scorelab's default VE grid: geometric from 0.02 to ``sigma_max`` (80), ascending.

    .. math::
        \sigma_i = \sigma_{\min} (\sigma_{\max} / \sigma_{\min})^{i / (n - 1)},

    Song & Ermon (2019)'s ladder with EDM's :math:`\sigma_{\max}`. Why not the tutorial's
    Karras :math:`\rho = 5` ladder stretched to 80: ancestral DDIM (``e = 1``) loses
    within-mode variance in the steps where :math:`\sigma` is comparable to the modes' own
    spread (0.3 on :func:`scorelab.targets.seed_mixture`), and stretching a :math:`\rho`-grid
    to 80 coarsens exactly that region. At 100 levels a mode of variance 0.1 keeps 0.87 of
    its variance on the stretched Karras grid and 0.92 on this one (linear-Gaussian recursion,
    confirmed by sampling). The tutorial's grid is ``karras_sigmas(n)`` in
    :mod:`scorelab.noise`.

    Args:
        n: number of levels, integer ``>= 2``.
        sigma_max: the top level, ``> 0.02``.

    Returns:
        ``(n,)`` float32, ascending, ``sigmas[0] = 0.02``, ``sigmas[-1] = sigma_max``.

    Raises:
        ValueError: if ``n`` is not an integer ``>= 2`` or ``sigma_max <= 0.02``
            (:func:`scorelab.noise.geometric_sigmas`).

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    return geometric_sigmas(n, DEFAULT_SIGMA_MIN, sigma_max)


def ve_prior(
    key: Array, n: int, shape: int | tuple[int, ...], sigma, mean=None, covariance=None
) -> Array:
    r"""``n`` draws from the VE prior :math:`\mathcal{N}(0, \sigma^2 I)`, shape ``(n, *shape)``;
    with ``mean`` and ``covariance``, from the Gaussian with the moments of :math:`q_\sigma`.

    .. math::
        x_T^{(i)} = \sigma z_i, \qquad \text{or} \qquad
        x_T^{(i)} = m + L z_i, \quad L L^\top = C + \sigma^2 I, \qquad
        z_i \sim \mathcal{N}(0, I).

    :math:`q_\sigma = q_0 * \mathcal{N}(0, \sigma^2 I)` has mean :math:`m` and covariance
    :math:`C + \sigma^2 I` when :math:`q_0` has :math:`m, C` (the exact moments of a target, or
    the data's sample moments), and :math:`\mathcal{N}(m, C + \sigma^2 I)` is the Gaussian
    closest to :math:`q_\sigma` in :math:`\mathrm{KL}(q_\sigma \| \cdot)` (moment matching);
    :math:`\mathcal{N}(0, \sigma^2 I)` differs from it by a KL that falls only as
    :math:`1/\sigma^2` (docs/benchmarks.md, "The moonshot, fourth look").

    Sample ``i`` is drawn from ``fold_in(key, i)``, so the first ``m`` rows do not depend on
    ``n``; both forms use the same :math:`z_i`. Use ``sigma = sigmas[-1]`` of the sampler's
    grid. Jitted with ``n`` and ``shape`` static.

    Args:
        key: PRNG key.
        n: number of samples (Python int).
        shape: one state's shape: an int ``d`` for vectors, or a tuple such as ``(C, H, W)``.
        sigma: the prior's noise level, a scalar.
        mean: optional ``shape`` mean :math:`m` of the data (default 0).
        covariance: optional ``(D, D)`` covariance :math:`C` of the data, ``D`` the size of
            ``shape`` (a state flattened row-major); default 0.

    Returns:
        ``(n, *shape)`` array of JAX's default float (float32 unless x64 is enabled).

    References:
        Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
        Distribution. https://arxiv.org/abs/1907.05600

    Raises:
        ValueError: unless ``n`` is an integer ``>= 0`` and ``shape`` positive integers (2.5
            drew 3 rows, -1 none) whose draws fit in memory, ``sigma`` a scalar and (when
            concrete) a finite level ``>= 0`` (NaN drew all-NaN states), ``mean`` of
            ``shape`` (or its size) and finite, ``covariance`` a finite symmetric ``(D, D)``
            matrix with ``C + sigma^2 I`` positive definite (else NaN states).
        TypeError: for a ``key`` that is not a PRNG key (:func:`scorelab._keys.typed_key`),
            or a ``sigma``, ``mean`` or ``covariance`` that is not real (a string, complex).
    """
    key = typed_key(key)
    check_int("n", n, 0)
    dims = (shape,) if np.ndim(shape) == 0 else tuple(shape)
    if not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in dims
    ):
        raise ValueError(f"shape: expected an integer d >= 1 or a tuple of them, got {shape!r}")
    dims = tuple(int(d) for d in dims)
    size = math.prod(dims)
    check_level("sigma", sigma)
    if mean is not None:
        _check_mean(mean, dims, size)
    if covariance is not None:
        _check_covariance(covariance, dims, size)
    itemsize = jnp.asarray(0.0).dtype.itemsize
    copies = 1 + (mean is not None) + (covariance is not None)  # z, and x from it
    check_memory(
        "n, shape",
        float(n) * size * itemsize * copies + 8.0 * n,
        f"draw fewer than {n} states of shape {dims} at once (sample i is drawn from "
        "fold_in(key, i): chunks of rows give the same states)",
    )
    x, factored = _ve_prior(key, n, dims, sigma, mean, covariance)
    if covariance is not None and not is_traced(factored) and not factored:
        raise ValueError(
            f"covariance: C + sigma^2 I is not positive definite in {x.dtype}; give a "
            "symmetric positive semi-definite covariance C (and sigma > 0 for a singular one)"
        )
    return x


def check_level(field: str, sigma) -> None:
    """Refuse a noise level that is not one real scalar (a string, a complex number) or, when
    concrete, not a finite number ``>= 0`` whose square float32 holds: NaN drew all-NaN
    states and a complex level complex ones."""
    traced = is_traced(sigma)
    if traced:
        real = is_real_dtype(sigma.dtype)
    else:
        real = not isinstance(sigma, str | bytes | bool | None)
        real = real and is_real_dtype(np.asarray(sigma).dtype)
    if not real:
        raise TypeError(f"{field}: expected a real noise level, got {sigma!r}")
    if np.ndim(sigma):
        raise ValueError(
            f"{field}: expected one noise level (a scalar), got shape {np.shape(sigma)}"
        )
    if traced:
        return
    value = float(np.asarray(sigma))
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{field}: expected a finite noise level >= 0, got {sigma!r}")
    check_sigma(field, value)


def _real_values(field: str, value, what: str) -> np.ndarray | None:
    """``value``'s entries on the host when concrete (``None`` when traced), or a ``TypeError``
    naming ``field`` unless they are real numbers (``what`` says what was expected)."""
    if is_traced(value):
        if not is_real_dtype(value.dtype):
            raise TypeError(f"{field}: expected {what}, got dtype {value.dtype}")
        return None
    array = None if isinstance(value, str | bytes | None) else np.asarray(value)
    if array is None or not is_real_dtype(array.dtype):
        dtype = "a string" if array is None else f"dtype {array.dtype}"
        raise TypeError(f"{field}: expected {what}, got {dtype}")
    return array


def _check_mean(mean, dims: tuple[int, ...], size: int) -> None:
    """Refuse a prior's ``mean`` that is not ``size`` finite real numbers (reshaped to
    ``dims``): a mean of 3 entries for states of 2 was a reshape error."""
    values = _real_values("mean", mean, f"real numbers of shape {dims}")
    if math.prod(jnp.shape(mean)) != size:
        raise ValueError(
            f"mean: expected shape {dims} (or its {size} entries), got shape {jnp.shape(mean)}"
        )
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError("mean: expected finite numbers, got NaN or inf entries")


def _check_covariance(covariance, dims: tuple[int, ...], size: int) -> None:
    """Refuse a prior's ``covariance`` that is not a finite symmetric ``(D, D)`` matrix of
    reals: a scalar was broadcast to a full matrix, a ``(3, 3)`` one for states of 2 was a
    broadcasting error, and an asymmetric one (a Cholesky factor) drew NaN."""
    values = _real_values("covariance", covariance, f"a real ({size}, {size}) matrix")
    if tuple(jnp.shape(covariance)) != (size, size):
        raise ValueError(
            f"covariance: expected ({size}, {size}), D = {size} the size of shape {dims} (a state "
            f"flattened row-major), got shape {jnp.shape(covariance)}"
        )
    if values is None:
        return
    if not np.all(np.isfinite(values)):
        raise ValueError("covariance: expected finite numbers, got NaN or inf entries")
    values = values.astype(np.float64)
    asymmetry, scale = np.max(np.abs(values - values.T)), np.max(np.abs(values))
    if asymmetry > 1e-4 * scale:
        raise ValueError(
            f"covariance: not symmetric (|C - C^T| up to {asymmetry:.3g}, entries up to "
            f"{scale:.3g}); give the covariance C itself, not a factor of it"
        )


@functools.partial(jax.jit, static_argnums=(1, 2))
def _ve_prior(key, n, shape, sigma, mean, covariance):
    """The draws, and whether the covariance's Cholesky factor is finite (a matrix that is not
    positive definite factors to NaN)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    z = jax.vmap(lambda k: jax.random.normal(k, shape))(keys)
    factored = jnp.asarray(True)
    if covariance is None:
        x = sigma * z
    else:
        size = int(np.prod(shape))
        factor = jnp.linalg.cholesky(covariance + sigma**2 * jnp.eye(size, dtype=z.dtype))
        factored = jnp.all(jnp.isfinite(factor))
        # One row at a time: a matrix product over the rows rounded each row by n's blocking,
        # and the first m of n states were not the m states (in float32's last bits).
        x = jax.lax.map(lambda row: factor @ row, z.reshape(n, size)).reshape(n, *shape)
    return (x if mean is None else x + jnp.reshape(mean, shape)), factored


def exact_prior(key: Array, target, n: int, sigma) -> Array:
    r"""``n`` draws from the exact VE marginal :math:`q_\sigma = q_0 * \mathcal{N}(0, \sigma^2 I)`.

    Removes the prior mismatch of :func:`ve_prior` when the target knows its marginal.

    Args:
        key: PRNG key; sample ``i`` is drawn from ``fold_in(key, i)``.
        target: a :class:`scorelab.targets.GaussianMixture`.
        n: number of samples.
        sigma: noise level, normally ``sigmas[-1]``.

    Returns:
        ``(n, d)`` array, ``d = target.dim``.

    Raises:
        TypeError: for a ``key`` that is not a PRNG key, a ``target`` that is not a
            :class:`~scorelab.targets.GaussianMixture`, or a ``sigma`` that is not real.
        ValueError: unless ``n`` is an integer ``>= 0`` whose draws fit in memory and
            ``sigma`` (when concrete) a finite level ``>= 0`` (NaN drew all-NaN states).
    """
    key = typed_key(key)
    if not all(hasattr(target, a) for a in ("ve_marginal", "dim")):
        raise TypeError(
            "target: expected a scorelab.targets.GaussianMixture (e.g. seed_mixture()), got "
            f"{type(target).__name__}"
        )
    check_int("n", n, 0)
    check_level("sigma", sigma)
    check_memory(
        "n",
        float(n) * target.dim * jnp.asarray(0.0).dtype.itemsize * 4 + 8.0 * n,
        f"draw fewer than {n} states at once (sample i is drawn from fold_in(key, i): chunks "
        "of rows give the same states)",
    )
    return target.ve_marginal(sigma).sample(key, n)


# --- shared pieces -----------------------------------------------------------------------------


def check_sigmas(sigmas) -> Array:
    """``sigmas`` as an array of JAX's default float (float32; float64 under x64), or
    ``ValueError`` unless a 1-D, ascending, positive grid there.

    The grid is checked in the precision it is sampled in: levels that merge in float32
    (``[1, 1.0000000001]``), overflow it (``1e39``) or square to a variance it cannot hold
    (:func:`scorelab._validate.check_sigma`) passed a float64 check and sampled to NaN.
    """
    values = np.asarray(sigmas)
    if not is_real_dtype(values.dtype):  # not booleans, complex numbers, strings
        raise TypeError(f"sigmas: expected real numbers, got dtype {values.dtype}")
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"sigmas must be a 1-D grid of >= 2 levels, got shape {values.shape}")
    dtype = jnp.asarray(0.0).dtype  # JAX's default float
    with np.errstate(over="ignore"):
        cast = values.astype(dtype)
    if not (np.all(np.isfinite(cast)) and cast[0] > 0 and np.all(np.diff(cast) > 0)):
        raise ValueError(
            f"sigmas must be finite, positive and strictly ascending in {dtype} (levels it "
            "cannot tell apart merge)"
        )
    if dtype == np.float32:
        check_sigma("sigmas: the smallest level", float(cast[0]))
        check_sigma("sigmas: the largest level", float(cast[-1]))
    return jnp.asarray(cast)


def descending_steps(sigmas: Array) -> tuple[Array, Array]:
    r"""The steps :math:`\sigma_{N-1} \to \sigma_{N-2}, \dots, \sigma_0 \to 0` of an ascending
    grid: ``(sigma_from, sigma_to)``, each ``(N,)``; the last step lands on 0."""
    sigma_from = sigmas[::-1]
    sigma_to = jnp.concatenate([sigmas[:-1][::-1], jnp.zeros((1,), sigmas.dtype)])
    return sigma_from, sigma_to


def tweedie(score_fn, x_t: Array, sigma) -> Array:
    r"""Tweedie's denoiser :math:`D(x, \sigma) = \mathbb{E}[x_0 \mid x_\sigma = x] = x +
    \sigma^2 \nabla \log q_\sigma(x)` (Efron, 2011), one score evaluation."""
    return x_t + sigma**2 * score_fn(x_t, sigma)


def check_positive_int(name: str, value) -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` unless a positive integer (an
    ``int`` or NumPy integer: a string ``'2'`` or a float ``2.0`` is refused, and quoted with
    ``repr`` so that ``'2'`` does not read as the integer 2)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --- the driver --------------------------------------------------------------------------------


def _check_noise_values(noise):
    """``noise`` as an array (a list was mapped over as a pytree), or ``TypeError`` unless real
    numbers (complex draws were cast to real with a warning) and, when concrete, ``ValueError``
    unless finite (NaN draws gave NaN samples without a word)."""
    if noise is None or is_traced(noise):
        if noise is not None and not is_real_dtype(noise.dtype):
            raise TypeError(f"noise: expected real standard normal draws, got {noise.dtype}")
        return noise
    if isinstance(noise, str | bytes):
        raise TypeError(f"noise: expected real standard normal draws, got {noise!r}")
    noise = jnp.asarray(noise)
    if not is_real_dtype(noise.dtype):
        raise TypeError(f"noise: expected real standard normal draws, got {noise.dtype}")
    if all_finite(noise) is False:
        raise ValueError("noise: expected finite standard normal draws, got NaN or inf entries")
    return noise


def check_noise(noise, shape: tuple[int, ...]) -> None:
    """``ValueError`` unless ``noise`` is ``None`` or of ``shape``."""
    if noise is not None and jnp.shape(noise) != shape:
        raise ValueError(f"noise must have shape {shape}, got {jnp.shape(noise)}")


class StepNoise(NamedTuple):
    """The standard normal draws of one step, as the driver hands them to a kernel.

    ``noise(j)`` is draw ``j < draws_per_step``: from the step's keys (the sampler's
    :meth:`~AbstractSampler.draw_from_key`) or from injected rows
    (:meth:`~AbstractSampler.draw_from_row`). A kernel draws where it uses the draw, e.g.
    inside its own inner loop (:func:`predictor_corrector`'s corrector scans over ``sources``
    with ``draw``). ``noise(j, (sigma, sigma_next))`` also hands the draw the noise interval
    it covers, for samplers whose draws are increments of one Brownian path per chain
    (:mod:`scorelab.samplers._brownian`).

    Attributes:
        sources: the step's ``draws_per_step`` keys, or rows ``(draws_per_step, *row)``.
        draw: ``draw(source)``, one draw from one source.
    """

    sources: Array
    draw: Callable[[Array], Any]

    def __call__(self, j: int, interval=None):
        if interval is None:
            return self.draw(self.sources[j])
        return self.draw(self.sources[j], interval)


def run_chain(
    sampler: AbstractSampler, key: Array, score_fn, x_init: Array, noise, trajectory: bool,
    callback, schedule=None,
) -> SamplerOutput:  # fmt: skip
    """The driver for one chain: the draws, the scan of :meth:`AbstractSampler.step`, the final
    step, the records or the callback, and the reduction of the ``Info`` records.

    ``schedule`` is :meth:`AbstractSampler.schedule`'s value when the caller computed it
    outside the trace (:func:`sample` does), else ``None``. The chain runs in its states'
    precision: the sampler's and the schedule's float arrays are cast to ``x_init``'s dtype
    (:func:`in_state_dtype`)."""
    sampler = in_state_dtype(sampler, x_init.dtype)
    if schedule is None:
        schedule = sampler.schedule()
    schedule = in_state_dtype(schedule, x_init.dtype)
    n_steps, k = sampler.n_steps, sampler.draws_per_step
    if k == 0:
        sources, draw = None, None
    elif noise is None:
        sources = sampler.step_keys(key)
        draw = functools.partial(sampler.draw_from_key, x=x_init)
    else:
        noise = jnp.asarray(noise, dtype=x_init.dtype)
        sources = noise.reshape(n_steps, k, *noise.shape[1:])
        draw = functools.partial(sampler.draw_from_row, x=x_init)

    def advance(step_fn, state, index, inputs):
        schedule_k, step_sources = inputs
        step_noise = None if draw is None else StepNoise(step_sources, draw)
        state, info = step_fn(score_fn, state, (schedule_k, step_noise))
        if callback is not None:
            jax.debug.callback(callback, index, sampler.position(state))
        # Booleans (MALA's accept decisions) are averaged as floats.
        info = jax.tree.map(lambda a: a.astype(x_init.dtype) if a.dtype == bool else a, info)
        return state, info

    state = sampler.init(score_fn, x_init)
    inputs = (schedule, sources)
    n_scanned = n_steps - 1 if sampler.has_final_step else n_steps
    head = jax.tree.map(lambda a: a[:n_scanned], inputs)
    info_like = jax.eval_shape(
        lambda s, i: advance(sampler.step, s, 0, i)[1], state, jax.tree.map(lambda a: a[0], inputs)
    )
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), info_like)

    def body(carry, xs):
        state, total = carry
        state, info = advance(sampler.step, state, *xs)
        records = sampler.records(state) if trajectory else None
        return (state, jax.tree.map(jnp.add, total, info)), records

    (state, total), records = jax.lax.scan(body, (state, zeros), (jnp.arange(n_scanned), head))
    if trajectory:
        records = records.reshape(-1, *records.shape[2:])
    if sampler.has_final_step:
        last = jax.tree.map(lambda a: a[-1], inputs)
        state, info = advance(sampler.final_step, state, n_steps - 1, last)
        total = jax.tree.map(jnp.add, total, info)
        if trajectory:
            records = jnp.concatenate([records, sampler.position(state)[None]])
    # Counts (an adaptive solve's evaluations) are summed over the steps, the rest averaged.
    info = jax.tree.map(lambda a: a if jnp.issubdtype(a.dtype, jnp.integer) else a / n_steps, total)
    nfe = None if sampler.nfe is not None else info.nfe
    return SamplerOutput(sampler.position(state), records, nfe, info)


def sample(
    key: Array,
    sampler: AbstractSampler,
    score_fn,
    x_init: Array,
    trajectory: bool = False,
    *,
    noise=None,
    callback=None,
    first_chain: int = 0,
) -> SamplerOutput:
    """Run ``sampler`` on ``n`` chains: the one place where chains are ``vmap``-ped.

    Chain ``i`` uses ``fold_in(key, first_chain + i)``, so the first ``m`` chains of a run with
    ``n`` chains are the chains of a run with ``m``, and ``n`` chains run in chunks (each with
    its ``first_chain``) give the chains of one run: exactly with a closed-form score (a chunk
    of one chain runs beside a copy of itself: XLA rounds a batch of one otherwise; but with a
    ``callback``), to float rounding with a network, whose matrix products XLA blocks by the
    batch's size; an adaptive step controller may turn that rounding into other steps.

    Compiled with ``equinox.filter_jit``: the array leaves of ``sampler`` and ``score_fn`` (the
    grid, ``eta``, step sizes, an Equinox module's weights) are traced and the rest is static,
    so a second call with the same shapes does not recompile, even with another grid, ``eta``
    or set of weights.

    Args:
        key: PRNG key.
        sampler: an :class:`AbstractSampler`, e.g. ``ddim(default_sigmas(100))``.
        score_fn: ``score_fn(x, sigma)`` on one state ``x`` of shape ``S``, scalar ``sigma``.
        x_init: ``(n, *S)`` starting points, a vector ``S = (d,)`` or any array (an image);
            sharded over devices along the chains (a ``NamedSharding`` with
            ``PartitionSpec("chains")``), each device runs its chains and the result keeps
            that sharding (docs: how-to "Run on several devices").
        trajectory: whether to keep every chain's states.
        noise: optional injected standard normal rows ``(n, *sampler.noise_shape(S))``
            replacing the draws from ``key`` (tests compare step for step with them).
        callback: optional ``callback(step, x)``, called on the host after every step of
            every chain with the step's index and the chain's position (progress, logging).
        first_chain: the index of the first chain, for a chunk of a larger run.

    Returns:
        :class:`SamplerOutput` with ``x`` ``(n, *S)``, ``trajectory`` ``(n, n_records, *S)``
        or ``None``, ``nfe`` ``(n,)`` or ``None``, ``info`` with leading axis ``n`` or ``None``.

    Raises:
        ValueError: if ``x_init`` is not ``(n, *S)``, ``noise`` not
            ``(n, *sampler.noise_shape(S))``, ``score_fn`` returns another shape than ``S``,
            a concrete ``x_init`` or ``noise`` holds NaN or inf, or ``first_chain`` is
            negative or ``first_chain + n`` beyond ``2**32``.
        TypeError: for a ``key`` that is not a PRNG key (a typed key or a legacy ``uint32``
            one), a ``sampler`` that is not an :class:`AbstractSampler`, a ``score_fn`` or
            ``callback`` that is not callable or cannot be called as ``callback(step, x)``,
            a ``trajectory`` that is not ``True`` or ``False``, a ``score_fn`` that returns
            something other than a real array (a tuple, complex numbers), states that are not
            float32 or float64, ``noise`` that is not real, or a ``first_chain`` that is not
            an integer.
        SolveError: a ``ValueError``, when a chain's solve stops on a check of the
            sampler's options (an adaptive solver's ``max_steps``), naming the remedy.
    """
    key = typed_key(key)
    _check_score_fn(score_fn, sampler)
    check_instance("trajectory", trajectory, bool | np.bool_, "True or False")
    trajectory = bool(trajectory)  # a string "no" was read as True
    _check_callback(callback)  # not in a trace
    x_init = _check_x_init(x_init)
    noise = _check_noise_values(noise)
    check_noise(noise, (x_init.shape[0], *sampler.noise_shape(x_init.shape[1:])))
    _check_sample_memory(sampler, x_init, trajectory)
    # traced: a new chunk does not recompile
    first = _check_first_chain(first_chain, x_init.shape[0])
    # The schedule is computed here, op by op, and enters the compiled function as arrays: a
    # new grid or option value does not recompile, and its values are rounded as they always
    # were (XLA's fused kernel for the same formulas can differ in the last bit).
    schedule = sampler.schedule()
    # Image states (two or more axes per chain) are what convolution networks take.
    run = _sample_images if takes_convolutions(x_init) else _sample_vectors
    # XLA compiles a batch of one chain without its batch axis, with other rounding (1e-5 with
    # the exact score; an adaptive solver's step choices made 3e-2 of it): a lone chain runs
    # beside a copy of itself and gives the numbers it gives among others, whatever the
    # chunking. With a callback it runs alone (the copy would report every step twice).
    alone = x_init.shape[0] == 1 and callback is None
    if alone:
        x_init = jnp.concatenate([x_init, x_init])
        noise = None if noise is None else jnp.concatenate([noise, noise])
    try:
        out = run(key, sampler, score_fn, x_init, noise, trajectory, callback, first, schedule)
    except eqx.EquinoxRuntimeError as error:  # a check inside the solve: max_steps reached
        message = _unreachable_tolerance(sampler, x_init.dtype) or _runtime_message(error)
        raise SolveError(f"sampler {sampler.name}: {message}") from error
    return jax.tree.map(lambda a: a[:1], out) if alone else out


def _unreachable_tolerance(sampler: AbstractSampler, dtype) -> str | None:
    """The remedy for an adaptive solve that ran out of steps on a relative tolerance finer
    than its dtype resolves, else ``None``: "increase max_steps" (diffrax's advice) cannot
    help there, since the rounding error of one step already exceeds the tolerance."""
    rtol = getattr(sampler, "rtol", None)
    if rtol is None or is_traced(rtol):
        return None
    floor = 10 * float(jnp.finfo(dtype).eps)
    if float(rtol) >= floor:
        return None
    return (
        f"the solver ran out of steps, and more cannot help: rtol {float(rtol):g} is below "
        f"what {jnp.dtype(dtype).name} resolves; give rtol >= {floor:.1e}"
    )


def _check_sample_memory(sampler: AbstractSampler, x_init: Array, trajectory: bool) -> None:
    """Refuse, before anything is traced, a run whose schedule, draws or records the memory
    cannot hold: ``ula(n_steps=2**31 - 1)`` or a million chains of a long stochastic sampler
    were an out-of-memory error from XLA (or the kernel's killer) after compiling."""
    n, size = x_init.shape[0], math.prod(x_init.shape[1:])
    n_steps, k = sampler.n_steps, sampler.draws_per_step
    what = f"{n_steps} steps of {sampler.name}"
    # The per-step schedule holds a few floats a step.
    check_memory(f"sampler: {what}", 256.0 * n_steps, "take fewer steps (fewer levels, or "
                 "smaller options that multiply them)")  # fmt: skip
    # Every chain splits its key into one per draw before its scan (8 bytes each, and twice
    # that with XLA's temporaries and the draws), all chains at once.
    row = math.prod(sampler.row_shape(tuple(x_init.shape[1:])))
    check_memory(
        f"x_init: {n} chains of {what}",
        2.0 * n * n_steps * k * (8 + 4 * row),
        "run fewer chains at once (chunks with first_chain give the same chains) or take "
        "fewer steps",
    )
    if trajectory:
        check_memory(
            f"trajectory: {n} chains of {what}",
            float(n) * (n_steps + 1) * size * x_init.dtype.itemsize,
            "run fewer chains at once (chunks with first_chain give the same chains), or no "
            "trajectory",
        )


def _check_score_fn(score_fn, sampler) -> None:
    """``TypeError`` unless ``sampler`` is an :class:`AbstractSampler` (a name was an
    ``AttributeError``) and ``score_fn`` a callable, or ``None`` for a sampler that evaluates
    no score (MALA with ``returns_score``; :func:`_shape_checked` names it when one does)."""
    what = "an AbstractSampler (e.g. build_sampler('ddim', sigmas))"
    check_instance("sampler", sampler, AbstractSampler, what)
    if score_fn is not None:  # None: a sampler that needs none
        check_callable("score_fn", score_fn, "score_fn(x, sigma)")


def _check_callback(callback) -> None:
    """``TypeError`` unless ``callback`` is ``None`` or a callable that takes ``(step, x)``: one
    of another arity failed on the host, inside the compiled run, as XLA's "INTERNAL:
    CpuCallback error" (a callable whose signature Python cannot read is taken as it is)."""
    check_callable("callback", callback, "callback(step, x)", optional=True)
    if callback is None:
        return
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # a builtin or extension type without a signature
        return
    try:
        signature.bind(0, None)
    except TypeError:
        raise TypeError(
            f"callback: cannot be called as callback(step, x), its signature is {signature}; "
            "give a callable of the step's index and the chain's position"
        ) from None


def _check_x_init(x_init) -> Array:
    """``x_init`` as an array of chains ``(n, *S)`` of float32 or float64, or a one-line error:
    one chain ``(d,)`` was an ``IndexError`` deep in the driver, float16 or integer states a
    scan's "carry types differ", complex states ran and returned complex samples, and a NaN
    start a NaN chain returned without a word (checked when concrete)."""
    if isinstance(x_init, str | bytes):
        raise TypeError(f"x_init: expected float32 or float64 states, got {x_init!r}")
    x_init = jnp.asarray(x_init)
    if x_init.ndim < 2:
        raise ValueError(
            f"x_init: expected chains (n, *S), e.g. (n, d), got shape {x_init.shape}; one "
            "chain is x[None]"
        )
    if x_init.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"x_init: expected float32 or float64 states, got {x_init.dtype}")
    if all_finite(x_init) is False:
        finite = np.isfinite(np.asarray(x_init).reshape(len(x_init), -1)).all(1)
        raise ValueError(
            "x_init: expected finite starting states, got NaN or inf entries (chain "
            f"{int(np.flatnonzero(~finite)[0])})"
        )
    return x_init


def _check_first_chain(first_chain, n: int) -> Array:
    """``first_chain`` as a ``uint32`` array (traced under ``jit``), or a one-line error: 1.5
    ran as chain 1, -1 wrapped to chain 2**32 - 1, and 2**32 - 2 was an ``OverflowError``
    converting to int32 (chain indices are the ``uint32`` data of ``fold_in``)."""
    if is_traced(first_chain):
        first = first_chain
    elif isinstance(first_chain, bool | str | bytes | None):
        first = None
    elif isinstance(first_chain, numbers.Integral):  # 2**70 is no NumPy integer
        first = np.asarray(0)
    else:
        first = np.asarray(first_chain)
    if first is None or first.ndim or first.dtype == bool or first.dtype.kind not in "iu":
        raise TypeError(f"first_chain: expected an integer, got {first_chain!r}")
    if is_traced(first):
        return first.astype(jnp.uint32)
    first = int(first_chain)
    if not 0 <= first <= 2**32 - max(n, 1):
        raise ValueError(
            f"first_chain: expected an integer in [0, 2**32) with first_chain + n <= 2**32 "
            f"(n = {n} chains), got {first_chain!r}"
        )
    return jnp.asarray(first, jnp.uint32)


def _shape_checked(score_fn):
    """``score_fn``, refusing while it is traced a score of another shape than its state: a
    scalar or ``(1,)`` score broadcast over the state and ran to meaningless samples."""

    def checked(x, sigma):
        if score_fn is None:
            raise TypeError(
                "score_fn: None, but this sampler evaluates the score; pass a callable "
                "score_fn(x, sigma)"
            )
        score = score_fn(x, sigma)
        if not isinstance(score, jax.Array | np.ndarray | np.generic | float | int) or (
            not is_real_dtype(jnp.result_type(score))
        ):  # a tuple was a TracerArrayConversionError, complex a scan's "carry types differ"
            what = getattr(score, "dtype", type(score).__name__)
            raise TypeError(
                f"score_fn: returned {what}; it must return a real array of the state's shape"
            )
        if jnp.shape(score) != jnp.shape(x):
            raise ValueError(
                f"score_fn: returned shape {jnp.shape(score)} for a state of shape "
                f"{jnp.shape(x)}; it must return the score of one state, of the state's shape"
            )
        # In the state's precision: under x64 a float64 score (a float64 target's) promoted
        # float32 states, and the scan refused carries of two types.
        return jnp.asarray(score).astype(jnp.result_type(x))

    return checked


def in_state_dtype(tree, dtype):
    """``tree`` (a sampler, its schedule) with its float arrays in the states' ``dtype``: a
    chain runs in its states' precision (under x64 a float64 grid or coefficient table
    promoted float32 states, and the scan refused carries of two types; without x64 all are
    float32 and nothing changes)."""
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


class SolveError(ValueError):
    """A chain's solve stopped on a check of the sampler's own options (an adaptive solver
    that used up ``max_steps``): the remedy is an option, so it is a user's error."""


def _runtime_message(error: Exception) -> str:
    """The message of an ``equinox.error_if`` check (diffrax's or a sampler's) in ``error``,
    whose text also holds the stacks inside and outside of JIT."""
    prefix = "EquinoxRuntimeError: "
    lines = [line for line in str(error).splitlines() if prefix in line]
    return lines[-1].split(prefix, 1)[1].strip() if lines else "the solve stopped"


def _sample_chains(
    key, sampler, score_fn, x_init, noise, trajectory, callback, first_chain, schedule
) -> SamplerOutput:
    indices = first_chain + jnp.arange(x_init.shape[0], dtype=first_chain.dtype)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)

    checked = _shape_checked(score_fn)

    def chain(k, x, z):
        return run_chain(sampler, k, checked, x, z, trajectory, callback, schedule)

    return jax.vmap(chain)(keys, x_init, noise)


_sample_vectors = eqx.filter_jit(_sample_chains)
_sample_images = convolution_jit(_sample_chains)  # XLA:CPU's own convolutions (_xla_cpu)
