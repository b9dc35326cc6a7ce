r"""DDIM and DDPM sampling for variance-preserving models, with diffusers' scheduler conventions.

A VP model is trained on :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\,
\varepsilon` at integer timesteps :math:`t \in \{0, \dots, T-1\}` (:mod:`scorelab.noise`'s
VP schedules) and predicts :math:`\varepsilon`, :math:`x_0` or
:math:`v = \sqrt{\bar\alpha_t}\,\varepsilon - \sqrt{1-\bar\alpha_t}\, x_0`. This module
reproduces diffusers' ``DDIMScheduler`` and ``DDPMScheduler`` (timestep spacings,
``steps_offset``, ``set_alpha_to_one``, x0 clipping, eta, ``use_clipped_model_output``) so
that checkpoints trained with diffusers sample here as they do there, in pure JAX: the timestep
grid and its coefficients are NumPy arrays built once, and the chain is one ``lax.scan``.

The VP quantities come from the core: :math:`\bar\alpha_t` from
:func:`scorelab.noise.vp_alphas_cumprod` and the scales :math:`\alpha_t = \sqrt{\bar\alpha_t}`,
:math:`\sigma_t = \sqrt{1 - \bar\alpha_t}` from :func:`scorelab.noise.vp_alpha_sigma`. The timesteps
of a :class:`VPGrid` are the VE levels ``ve_sigmas_from_vp(*vp_alpha_sigma(grid.alpha_prod_t))``
(:func:`scorelab.samplers.ve_sigmas_from_vp`), on which, without clipping, on the ``leading``
spacing with ``set_alpha_to_one``, these samplers are the core's: DDIM with :math:`\eta = 1` and
DDPM (``fixed_small``) are :func:`scorelab.samplers.ancestral`, :math:`\eta = 0` is
:func:`scorelab.samplers.euler` (``tests/test_samplers_sde.py`` checks it step for step). They stay
written out here, in :math:`x_t` on integer timesteps, for step-for-step parity with diffusers where
a VE grid cannot follow: the predicted :math:`x_0` is clipped but :math:`\hat\varepsilon` is not,
DDIM steps from :math:`t` to :math:`t - \lfloor T/n \rfloor` whatever the spacing (not to the next
timestep of a ``trailing`` grid), ``set_alpha_to_one=False`` ends on a step of length zero,
``fixed_large`` is not the posterior variance, and the step variances follow diffusers' float32
order of operations.

References:
    Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
    https://arxiv.org/abs/2010.02502
    Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    https://arxiv.org/abs/2006.11239
    Lin, S., Liu, B., Li, J. & Yang, X. (2024). Common Diffusion Noise Schedules and Sample
    Steps are Flawed (timestep spacings, Table 2). https://arxiv.org/abs/2305.08891
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import (
    FLOAT32_MAX,
    FLOAT32_TINY,
    all_finite,
    check_callable,
    check_instance,
    check_mapping,
    is_traced,
    traced_message,
)
from scorelab.diffusers._checks import PretrainedError, is_int, is_number
from scorelab.noise import VP_SCHEDULES, vp_alpha_sigma, vp_alphas_cumprod

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
"""What a VP model predicts: :math:`\\varepsilon`, :math:`x_0` or :math:`v` (diffusers' names)."""

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
"""Timestep spacings accepted by :func:`timesteps` (diffusers' names)."""

VARIANCE_TYPES = ("fixed_small", "fixed_large")
"""DDPM step variances accepted by :func:`ddpm_grid`: the posterior's or :math:`\\beta_t`."""

# Other spellings of the two in the files diffusers writes (pass 28, #3): a scheduler of
# another class (DPMSolverMultistepScheduler) saves None, which DDPMScheduler reads as the
# posterior variance; ``fixed_small_log`` is that variance taken through its logarithm
# (exp(0.5 log v) = sqrt v), and ``fixed_large_log`` GLIDE's log(beta_t), the variance beta_t,
# whose square root diffusers' DDPM step then takes of the logarithm itself (NaN).
_VARIANCE_SPELLINGS = {
    None: "fixed_small",
    "fixed_small_log": "fixed_small",
    "fixed_large_log": "fixed_large",
}

# diffusers scheduler options whose non-default values change the maths; anything else in a
# scheduler_config.json (class name, version, options of other schedulers) is ignored, as
# diffusers' own ``from_config`` ignores it.
_UNSUPPORTED = {
    "thresholding": False,
    "rescale_betas_zero_snr": False,
    "trained_betas": None,
    "timestep_type": "discrete",
}
_MAX_TRAIN_TIMESTEPS = 100_000
"""Far above any trained schedule (DDPM: 1000, improved DDPM: 4000); a bound on allocation."""


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The options of diffusers' ``DDIMScheduler`` / ``DDPMScheduler`` that scorelab supports.

    Field names and defaults are diffusers' (``DDIMScheduler``), so a ``scheduler_config.json``
    maps onto it with :meth:`from_diffusers`.

    Attributes:
        num_train_timesteps: ``T``.
        beta_start, beta_end, beta_schedule: the VP schedule (:func:`scorelab.noise.vp_betas`).
        clip_sample: clip the predicted :math:`x_0` to ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_range: the clipping bound, ``> 0``.
        set_alpha_to_one: DDIM's last step goes to :math:`\\bar\\alpha = 1` (else
            :math:`\\bar\\alpha_0`).
        steps_offset: added to every ``leading`` timestep.
        prediction_type: what the model predicts, one of :data:`PREDICTION_TYPES`.
        timestep_spacing: one of :data:`TIMESTEP_SPACINGS`.
        variance_type: DDPM's ancestral variance, one of :data:`VARIANCE_TYPES`.

    Raises:
        PretrainedError: naming the field, for ``num_train_timesteps`` not an integer in
            ``[1, 100000]``, ``beta_start`` or ``beta_end`` not a number in ``(0, 1)``,
            ``clip_sample`` or ``set_alpha_to_one`` not a bool, ``clip_sample_range`` not a
            number ``> 0``, ``steps_offset`` not an integer ``>= 0``, a ``beta_schedule`` /
            ``prediction_type`` / ``timestep_spacing`` / ``variance_type`` not accepted, or a
            schedule (betas, schedule and ``num_train_timesteps`` together) whose
            :math:`\\bar\\alpha_t` falls below float32's smallest normal number (zero in the
            sampler's arithmetic: NaN samples).

    References:
        diffusers ``DDIMScheduler`` / ``DDPMScheduler``.
        https://huggingface.co/docs/diffusers/api/schedulers/ddim
    """

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    variance_type: str = "fixed_small"

    def __post_init__(self):
        T = self.num_train_timesteps
        if not (is_int(T) and 1 <= T <= _MAX_TRAIN_TIMESTEPS):
            raise PretrainedError(
                f"num_train_timesteps must be an integer in [1, {_MAX_TRAIN_TIMESTEPS}], got {T!r}"
            )
        for field in ("beta_start", "beta_end"):
            value = getattr(self, field)
            if not (is_number(value) and 0 < value < 1):
                raise PretrainedError(f"{field} must be a number in (0, 1), got {value!r}")
        for field in ("clip_sample", "set_alpha_to_one"):
            if not isinstance(getattr(self, field), bool):
                raise PretrainedError(
                    f"{field} must be true or false, got {getattr(self, field)!r}"
                )
        bound = self.clip_sample_range
        # float32 holds it: 1e308 became inf with only NumPy's "overflow encountered in cast"
        if not (is_number(bound) and 0 < bound <= FLOAT32_MAX):
            raise PretrainedError(
                f"clip_sample_range must be a number > 0 within float32's range (3.4e38), got "
                f"{bound!r}"
            )
        # Only leading spacing adds the offset, and its first timestep (the offset or more) must
        # be < T; the other spacings ignore it, as diffusers does (T = 3, offset 3, trailing
        # samples 2, 1, 0 there), so a large one is no contradiction.
        leading = self.timestep_spacing == "leading"
        bound, what = (T, f"{T}) (num_train_timesteps)") if leading else (2**31, "2**31)")
        if not (is_int(self.steps_offset) and 0 <= self.steps_offset < bound):
            raise PretrainedError(
                f"steps_offset must be an integer in [0, {what}, got "
                f"{reprlib.repr(self.steps_offset)}"
            )
        for field, accepted in (
            ("beta_schedule", VP_SCHEDULES),
            ("prediction_type", PREDICTION_TYPES),
            ("timestep_spacing", TIMESTEP_SPACINGS),
            ("variance_type", VARIANCE_TYPES),
        ):
            value = getattr(self, field)
            if not isinstance(value, str) or value not in accepted:
                raise PretrainedError(
                    f"{field} {value!r} is not supported; accepted: {', '.join(accepted)}"
                )
        # A schedule whose abar underflows float32 (to zero, or to a subnormal XLA flushes to
        # zero) made NaN coefficients: x0 = (x - sigma eps) / sqrt(abar) divides by zero.
        smallest = float(np.min(self.alphas_cumprod()))
        if not smallest >= FLOAT32_TINY:
            raise PretrainedError(
                f"beta_start {self.beta_start!r}, beta_end {self.beta_end!r}, beta_schedule "
                f"{self.beta_schedule!r}, num_train_timesteps {T}: the noise level alphas_cumprod "
                f"falls to {smallest:.3g}, below float32's smallest normal number, where an "
                "epsilon model's x0 and the level's VE sigma divide by zero; choose smaller betas "
                "or fewer training timesteps"
            )

    @classmethod
    def from_diffusers(cls, config: Mapping) -> SchedulerConfig:
        """Read a diffusers ``scheduler_config.json`` (as a dict) of a DDIM or DDPM scheduler.

        Keys that are fields of this class are taken; other keys (``_class_name``,
        ``_diffusers_version``, options of other schedulers) are ignored, as diffusers ignores
        them. ``variance_type`` ``None`` (another scheduler's file) and ``fixed_small_log``
        are read as ``fixed_small``, ``fixed_large_log`` as ``fixed_large``: the same
        variances (of the last, diffusers' DDPM step takes the root of the logarithm, NaN).

        Args:
            config: the parsed JSON, a mapping from option name to value.

        Returns:
            The :class:`SchedulerConfig`.

        Raises:
            PretrainedError: naming the field, for a ``config`` that is not a mapping, options
                that would change the sampler and are not implemented (``thresholding``,
                ``rescale_betas_zero_snr``, ``trained_betas``, ``timestep_type`` other than
                ``discrete``; learned ``variance_type`` values), or any check of
                :class:`SchedulerConfig`.
        """
        check_mapping("config", config, "a JSON object of scheduler options", error=PretrainedError)
        for field, default in _UNSUPPORTED.items():
            if _differs(config.get(field, default), default):
                raise PretrainedError(
                    f"scheduler option {field}={reprlib.repr(config[field])} is not supported "
                    f"(only {field}={default!r})"
                )
        known = {f.name for f in dataclasses.fields(cls)}
        options = {name: value for name, value in config.items() if name in known}
        variance = options.get("variance_type", "fixed_small")
        if isinstance(variance, str | None) and variance in _VARIANCE_SPELLINGS:
            options["variance_type"] = _VARIANCE_SPELLINGS[variance]
        return cls(**options)

    def ddim_options(self) -> dict:
        """The options as diffusers' ``DDIMScheduler`` takes them: every field but DDPM's
        ``variance_type``, and ``beta_schedule`` in diffusers' spelling (scorelab's alias
        ``cosine`` is ``squaredcos_cap_v2``, which diffusers alone knows: a folder exported
        with ``cosine`` failed to load in ``DDIMPipeline``, pass 28 #1).

        Returns:
            A JSON-ready ``dict`` of option name to value.
        """
        options = {k: v for k, v in dataclasses.asdict(self).items() if k != "variance_type"}
        if options["beta_schedule"] == "cosine":
            options["beta_schedule"] = "squaredcos_cap_v2"
        return options

    def alphas_cumprod(self) -> np.ndarray:
        r"""The cumulative products :math:`\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)`.

        Exactly as diffusers computes them (:func:`scorelab.noise.vp_alphas_cumprod`).

        Returns:
            ``(T,)`` float32 NumPy array, indexed by timestep.
        """
        return vp_alphas_cumprod(
            self.beta_schedule, self.num_train_timesteps, self.beta_start, self.beta_end
        )


def _differs(value, default) -> bool:
    """Whether a scheduler option's ``value`` is other than its only supported ``default``: a
    ``None`` default takes ``None`` only (an array of ``trained_betas`` was compared
    elementwise, 'the truth value of an array is ambiguous'), another default an equal value."""
    if default is None:
        return value is not None
    try:
        return bool(value != default)
    except (TypeError, ValueError):  # an array, or a value without a truth value
        return True


def _check_config(config) -> None:
    """Refuse a ``config`` that is not a :class:`SchedulerConfig` (a dict of its fields gave
    'dict' object has no attribute 'num_train_timesteps')."""
    check_instance(
        "config",
        config,
        SchedulerConfig,
        "a SchedulerConfig",
        remedy="build one with SchedulerConfig(...) or SchedulerConfig.from_diffusers(dict)",
    )


def timesteps(config: SchedulerConfig, num_inference_steps: int) -> np.ndarray:
    """The descending timesteps of diffusers' ``set_timesteps`` (Lin et al. 2024, Table 2).

    With ``T`` training steps, ``n`` inference steps and ``r = T // n``:

    * ``leading``: ``r (n-1), ..., r, 0``, plus ``steps_offset`` (``T=1000, n=10``: 900, ..., 0);
    * ``trailing``: ``round(T - k T/n) - 1`` for ``k = 0, ..., n-1`` (999, 899, ..., 99);
      diffusers computes it as ``round(arange(T, 0, -T/n)) - 1``, whose float ``arange``
      overshoots by one element for some ``n`` (``T = 1000``: ``n = 61``, 103, 121, ...),
      giving ``n + 1`` timesteps ending at ``-1`` (diffusers then feeds the model ``t = -1``
      and its ``alphas_cumprod[-1]`` wraps to the noisiest level). scorelab deviates from
      diffusers on purpose for those ``n``: it returns the ``n`` timesteps of the formula,
      dropping the rounding artefact; for every other ``n`` the two agree exactly;
    * ``linspace``: ``round(linspace(0, T-1, n))`` reversed (999, 888, ..., 0).

    Args:
        config: the scheduler options (``num_train_timesteps``, ``timestep_spacing``,
            ``steps_offset``).
        num_inference_steps: ``n``, an integer in ``[1, T]``.

    Returns:
        ``(n,)`` int64 NumPy array, descending.

    Raises:
        TypeError: if ``config`` is not a :class:`SchedulerConfig`.
        PretrainedError: if ``num_inference_steps`` is not an integer in ``[1, T]``, or
            ``steps_offset`` puts the first timestep at or past ``T``.

    References:
        Lin, S., Liu, B., Li, J. & Yang, X. (2024). Common Diffusion Noise Schedules and Sample
        Steps are Flawed (Table 2). https://arxiv.org/abs/2305.08891
    """
    _check_config(config)
    T, n = config.num_train_timesteps, num_inference_steps
    if not (is_int(n) and 1 <= n <= T):
        raise PretrainedError(f"num_inference_steps must be an integer in [1, {T}], got {n!r}")
    if config.timestep_spacing == "leading":
        steps = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + config.steps_offset
    elif config.timestep_spacing == "trailing":
        # [:n]: the float arange holds one element more for some n, rounded to t = -1
        steps = np.round(np.arange(T, 0, -T / n)).astype(np.int64)[:n] - 1
    else:
        steps = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
    if steps[0] >= T:
        raise PretrainedError(
            f"steps_offset {config.steps_offset} puts the first timestep at {steps[0]} >= "
            f"num_train_timesteps {T}"
        )
    return steps


class VPGrid(NamedTuple):
    r"""A descending timestep grid and the per-step coefficients of one sampler.

    Attributes:
        timesteps: ``(n,)`` int32 timesteps fed to the model.
        alpha_prod_t: ``(n,)`` float32 :math:`\bar\alpha_t`.
        alpha_prod_t_prev: ``(n,)`` float32 :math:`\bar\alpha` of the step each one goes to.
        std: ``(n,)`` float32 standard deviation of the noise added at each step.
    """

    timesteps: np.ndarray
    alpha_prod_t: np.ndarray
    alpha_prod_t_prev: np.ndarray
    std: np.ndarray


def _check_eta(eta) -> None:
    """Refuse a DDIM ``eta`` outside ``[0, 1]``: above 1 the step's noise exceeds the variance
    the step leaves, where diffusers' DDIM gives NaN and the clamp that guards this sampler's
    rounding gave finite numbers of neither (pass 28, #4).

    Raises:
        PretrainedError: naming ``eta`` and its range.
    """
    if not (is_number(eta) and 0 <= eta <= 1):
        raise PretrainedError(
            f"eta must be a number in [0, 1], got {eta!r}; DDIM's eta is 0 (deterministic) to 1 "
            "(DDPM's variance)"
        )


def ddim_grid(config: SchedulerConfig, num_inference_steps: int, eta: float = 0.0) -> VPGrid:
    r"""DDIM's timestep grid and per-step coefficients, as diffusers' ``DDIMScheduler``.

    The previous step of timestep :math:`t` is :math:`t - \lfloor T/n \rfloor` whatever the
    spacing (as diffusers), with :math:`\bar\alpha_{\text{prev}} = 1` past the end if
    ``set_alpha_to_one``, else :math:`\bar\alpha_0`; the step noise is Song et al. (2021)
    eq. 16,

    .. math::
        \sigma_t(\eta) = \eta \sqrt{\frac{1 - \bar\alpha_{\text{prev}}}{1 - \bar\alpha_t}}
        \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{\text{prev}}}},

    in float32 in diffusers' order of operations. ``eta = 0`` is deterministic DDIM,
    ``eta = 1`` DDPM's posterior variance.

    Args:
        config: the scheduler options.
        num_inference_steps: ``n``, an integer in ``[1, T]``.
        eta: :math:`\eta \in [0, 1]`.

    Returns:
        A :class:`VPGrid` of ``(n,)`` arrays: int32 timesteps (descending), float32
        :math:`\bar\alpha_t`, :math:`\bar\alpha_{\text{prev}}` and :math:`\sigma_t(\eta)`.

    Raises:
        TypeError: ``config`` not a :class:`SchedulerConfig` (:func:`timesteps`).
        PretrainedError: if ``eta`` is not a number in ``[0, 1]``, or from
            :func:`timesteps`.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
        https://arxiv.org/abs/2010.02502
    """
    if is_traced(eta):  # the grid is computed on the host, with NumPy
        raise PretrainedError(traced_message("eta"))
    _check_eta(eta)
    steps = timesteps(config, num_inference_steps)
    alphas_cumprod = config.alphas_cumprod()
    prev = steps - config.num_train_timesteps // num_inference_steps
    final = np.float32(1.0) if config.set_alpha_to_one else alphas_cumprod[0]
    alpha_prod_t = alphas_cumprod[steps]
    alpha_prod_t_prev = np.where(prev >= 0, alphas_cumprod[np.maximum(prev, 0)], final)
    one = np.float32(1.0)
    variance = ((one - alpha_prod_t_prev) / (one - alpha_prod_t)) * (
        one - alpha_prod_t / alpha_prod_t_prev
    )
    std = np.float32(eta) * np.sqrt(variance)
    return VPGrid(steps.astype(np.int32), alpha_prod_t, alpha_prod_t_prev.astype(np.float32), std)


def ddpm_grid(config: SchedulerConfig, num_inference_steps: int) -> VPGrid:
    r"""DDPM's ancestral timestep grid and per-step coefficients, as diffusers' ``DDPMScheduler``.

    The previous step is the next timestep of the grid (-1 after the last, with
    :math:`\bar\alpha = 1`); the step variance is the posterior variance of Ho et al. (2020)
    eq. 7 (``fixed_small``, floored at 1e-20 as diffusers) or :math:`\beta_t` (``fixed_large``),

    .. math::
        \tilde\beta_t = \frac{1 - \bar\alpha_{\text{prev}}}{1 - \bar\alpha_t}\beta_t,
        \qquad \beta_t = 1 - \bar\alpha_t/\bar\alpha_{\text{prev}},

    and no noise is added at timestep 0.

    Args:
        config: the scheduler options (``variance_type`` picks the variance).
        num_inference_steps: ``n``, an integer in ``[1, T]``.

    Returns:
        A :class:`VPGrid` of ``(n,)`` arrays: int32 timesteps (descending), float32
        :math:`\bar\alpha_t`, :math:`\bar\alpha_{\text{prev}}` and the step standard deviation
        (0 at timestep 0).

    Raises:
        TypeError: ``config`` not a :class:`SchedulerConfig` (:func:`timesteps`).
        PretrainedError: from :func:`timesteps`.

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
    """
    steps = timesteps(config, num_inference_steps)
    alphas_cumprod = config.alphas_cumprod()
    alpha_prod_t = alphas_cumprod[steps]
    alpha_prod_t_prev = np.append(alphas_cumprod[steps[1:]], np.float32(1.0))
    one = np.float32(1.0)
    beta_t = one - alpha_prod_t / alpha_prod_t_prev
    if config.variance_type == "fixed_small":
        variance = np.maximum((one - alpha_prod_t_prev) / (one - alpha_prod_t) * beta_t, 1e-20)
    else:
        variance = beta_t
    std = np.where(steps > 0, np.sqrt(variance.astype(np.float32)), np.float32(0.0))
    return VPGrid(steps.astype(np.int32), alpha_prod_t, alpha_prod_t_prev, std)


def predict_x0_eps(
    model_output: Array, x_t: Array, alpha_t, sigma_t, prediction_type: str
) -> tuple[Array, Array]:
    r"""The model's :math:`(\hat x_0, \hat\varepsilon)` from its output of any prediction type.

    With :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`, :math:`\alpha_t = \sqrt{\bar\alpha_t}`,
    :math:`\sigma_t = \sqrt{1 - \bar\alpha_t}` (:func:`scorelab.noise.vp_alpha_sigma`):

    * ``epsilon``: :math:`\hat x_0 = (x_t - \sigma_t \hat\varepsilon)/\alpha_t`;
    * ``sample``: :math:`\hat\varepsilon = (x_t - \alpha_t \hat x_0)/\sigma_t`;
    * ``v_prediction`` (Salimans & Ho, 2022, https://arxiv.org/abs/2202.00512):
      :math:`\hat x_0 = \alpha_t x_t - \sigma_t \hat v`,
      :math:`\hat\varepsilon = \alpha_t \hat v + \sigma_t x_t`.

    Args:
        model_output, x_t: float arrays of one shape, e.g. ``(B, C, H, W)``.
        alpha_t, sigma_t: :math:`\alpha_t, \sigma_t \in (0, 1)`, scalars (or broadcastable to
            ``x_t``).
        prediction_type: one of :data:`PREDICTION_TYPES`.

    Returns:
        ``(x0_hat, eps_hat)``, each shaped like ``x_t``.

    Raises:
        PretrainedError: for an unknown ``prediction_type``.

    References:
        Salimans, T. & Ho, J. (2022). Progressive Distillation for Fast Sampling of Diffusion
        Models. https://arxiv.org/abs/2202.00512
    """
    if prediction_type == "epsilon":
        return (x_t - sigma_t * model_output) / alpha_t, model_output
    if prediction_type == "sample":
        return model_output, (x_t - alpha_t * model_output) / sigma_t
    if prediction_type == "v_prediction":
        return alpha_t * x_t - sigma_t * model_output, alpha_t * model_output + sigma_t * x_t
    accepted = ", ".join(PREDICTION_TYPES)
    raise PretrainedError(
        f"prediction_type {prediction_type!r} is not supported; accepted: {accepted}"
    )


def _clip(x_0: Array, clip_sample_range: float | None) -> Array:
    return (
        x_0 if clip_sample_range is None else jnp.clip(x_0, -clip_sample_range, clip_sample_range)
    )


def ddim_step(
    model_output: Array,
    x_t: Array,
    alpha_t,
    sigma_t,
    alpha_prev,
    sigma_prev,
    std,
    noise: Array | None,
    *,
    prediction_type: str = "epsilon",
    clip_sample_range: float | None = 1.0,
    use_clipped_model_output: bool = False,
) -> tuple[Array, Array]:
    r"""One DDIM step, Song et al. (2021) eq. 12.

    .. math::
        x_{\text{prev}} = \alpha_{\text{prev}}\, \hat x_0
        + \sqrt{\sigma_{\text{prev}}^2 - \sigma_t(\eta)^2}\, \hat\varepsilon + \sigma_t(\eta)\, z,

    with :math:`\hat x_0` clipped to ``[-clip_sample_range, clip_sample_range]`` (``None``: no
    clipping) and, if ``use_clipped_model_output``, :math:`\hat\varepsilon` re-derived from the
    clipped :math:`\hat x_0` (as GLIDE does).

    Args:
        model_output, x_t: ``(B, C, H, W)`` (any shape) model output and current state.
        alpha_t, sigma_t, alpha_prev, sigma_prev: the VP scales of the current and the next
            step (:func:`scorelab.noise.vp_alpha_sigma` of a :class:`VPGrid` row's
            :math:`\bar\alpha`), scalars.
        std: the step noise :math:`\sigma_t(\eta)` of the row, a scalar.
        noise: standard normal ``z`` shaped like ``x_t``, or ``None`` when ``std = 0``.
        prediction_type: one of :data:`PREDICTION_TYPES`.
        clip_sample_range: bound of the :math:`\hat x_0` clipping, or ``None``.
        use_clipped_model_output: re-derive :math:`\hat\varepsilon` from the clipped
            :math:`\hat x_0`.

    Returns:
        ``(x_prev, x0_hat)``, each shaped like ``x_t``; ``x0_hat`` after clipping.

    Raises:
        PretrainedError: for an unknown ``prediction_type`` (:func:`predict_x0_eps`).

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
        https://arxiv.org/abs/2010.02502
    """
    x_0, eps = predict_x0_eps(model_output, x_t, alpha_t, sigma_t, prediction_type)
    x_0 = _clip(x_0, clip_sample_range)
    if use_clipped_model_output:
        eps = (x_t - alpha_t * x_0) / sigma_t
    # max(., 0): rounding must not turn a zero direction coefficient (eta = 1, last step) into NaN.
    direction = jnp.sqrt(jnp.maximum(sigma_prev**2 - std**2, 0.0)) * eps
    x_prev = alpha_prev * x_0 + direction
    if noise is not None:
        x_prev = x_prev + std * noise
    return x_prev, x_0


def ddpm_step(
    model_output: Array,
    x_t: Array,
    alpha_t,
    sigma_t,
    alpha_prev,
    sigma_prev,
    std,
    noise: Array | None,
    *,
    prediction_type: str = "epsilon",
    clip_sample_range: float | None = 1.0,
) -> tuple[Array, Array]:
    r"""One DDPM ancestral step, a draw from the posterior of Ho et al. (2020) eq. 7.

    A draw from the Gaussian posterior :math:`q(x_{\text{prev}} \mid x_t, \hat x_0)`, its mean
    plus :math:`\sigma z`, in the notation of Kingma et al. (2021):

    .. math::
        x_{\text{prev}} = \frac{\alpha_{\text{prev}}\,\beta_t}{\sigma_t^2}\hat x_0
        + \frac{\alpha_{t|\text{prev}}\,\sigma_{\text{prev}}^2}{\sigma_t^2} x_t + \sigma z,
        \qquad \alpha_{t|\text{prev}} = \frac{\alpha_t}{\alpha_{\text{prev}}},
        \quad \beta_t = \sigma_t^2 - \alpha_{t|\text{prev}}^2 \sigma_{\text{prev}}^2
        = 1 - \frac{\bar\alpha_t}{\bar\alpha_{\text{prev}}},

    :math:`\beta_t` taken in the first form, which is exactly :math:`\sigma_t^2` on the last
    step (:math:`\sigma_{\text{prev}} = 0`), so that step returns :math:`\hat x_0` exactly;

    :math:`\hat x_0` is clipped as in :func:`ddim_step`.

    Args:
        model_output, x_t: ``(B, C, H, W)`` (any shape) model output and current state.
        alpha_t, sigma_t, alpha_prev, sigma_prev: the VP scales of the current and the next
            step (:func:`scorelab.noise.vp_alpha_sigma` of a :func:`ddpm_grid` row), scalars.
        std: the step's standard deviation :math:`\sigma` of the row, a scalar.
        noise: standard normal ``z`` shaped like ``x_t``, or ``None`` when ``std = 0``.
        prediction_type: one of :data:`PREDICTION_TYPES`.
        clip_sample_range: bound of the :math:`\hat x_0` clipping, or ``None``.

    Returns:
        ``(x_prev, x0_hat)``, each shaped like ``x_t``; ``x0_hat`` after clipping.

    Raises:
        PretrainedError: for an unknown ``prediction_type`` (:func:`predict_x0_eps`).

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
        Kingma, D. P., Salimans, T., Poole, B. & Ho, J. (2021). Variational Diffusion Models.
        https://arxiv.org/abs/2107.00630
    """
    x_0, _ = predict_x0_eps(model_output, x_t, alpha_t, sigma_t, prediction_type)
    x_0 = _clip(x_0, clip_sample_range)
    alpha_t_prev = alpha_t / alpha_prev
    beta_t = sigma_t**2 - alpha_t_prev**2 * sigma_prev**2
    x_prev = (alpha_prev * beta_t * x_0 + alpha_t_prev * sigma_prev**2 * x_t) / sigma_t**2
    if noise is not None:
        x_prev = x_prev + std * noise
    return x_prev, x_0


def _run(
    step_fn: Callable,
    model_fn: Callable,
    x_T: Array,
    grid: VPGrid,
    key: Array | None,
    noise: Array | None,
) -> Array:
    """Walk ``grid`` from ``x_T`` with one ``lax.scan``; noise from ``noise`` or ``key``."""
    n = grid.timesteps.shape[0]
    if key is not None:
        key = typed_key(key, "key")
    scales = (*vp_alpha_sigma(grid.alpha_prod_t), *vp_alpha_sigma(grid.alpha_prod_t_prev))
    rows = tuple(jnp.asarray(a) for a in (grid.timesteps, *scales, grid.std))
    stochastic = bool(np.any(grid.std > 0))
    if not stochastic:
        draws = None
    elif noise is not None:
        _check_real_array("noise", noise)
        if np.shape(noise) != (n, *x_T.shape):
            raise PretrainedError(f"noise must have shape {(n, *x_T.shape)}, got {np.shape(noise)}")
        if all_finite(noise) is False:
            raise PretrainedError(
                "noise holds NaN or inf values; give finite standard normal noise"
            )
        draws = jnp.asarray(noise, x_T.dtype)
    elif key is not None:
        draws = jax.random.split(key, n)
    else:
        raise PretrainedError("a stochastic sampler (eta > 0 or DDPM) needs a key or noise")

    from_key = stochastic and noise is None

    def body(x_t, row):
        (t, *coefficients), draw = row
        if from_key:
            draw = jax.random.normal(draw, x_t.shape, x_t.dtype)
        output = model_fn(x_t, t)
        if np.shape(output) != x_t.shape:  # static: refused while tracing, before any step
            raise ValueError(
                f"model_fn: returned shape {np.shape(output)} for x_t of shape {x_t.shape}; it "
                "must return the model output shaped like x_t"
            )
        x_prev, _ = step_fn(output, x_t, *coefficients, draw)
        return x_prev, None

    x_0, _ = jax.lax.scan(body, x_T, (rows, draws))
    return x_0


def _check_real_array(name: str, value) -> None:
    """Refuse ``value`` unless an array (or nested list) of real numbers: a string, a complex
    array (its imaginary part was dropped with only a warning) or an object array."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):  # ragged lists
            dtype = np.dtype(object)
    if dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected an array of real numbers, got dtype {dtype}")


def _check_sampling(model_fn, config, x_T, noise, deterministic: bool) -> None:
    """The checks :func:`ddim_sample` and :func:`ddpm_sample` share, by type and shape (so
    they apply under ``jit`` too), and by value on concrete arrays only."""
    _check_config(config)
    check_callable("model_fn", model_fn, "model_fn(x_t, t) -> output")
    dtype = getattr(x_T, "dtype", None)
    if not hasattr(x_T, "shape") or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        what = f"dtype {dtype}" if dtype is not None else type(x_T).__name__
        raise TypeError(f"x_T: expected a float array (jax.random.normal(key, shape)), got {what}")
    if jnp.finfo(dtype).bits < 32:  # the float32 coefficients promoted the scan's carry
        raise TypeError(
            f"x_T: expected float32 or float64, got {dtype}: the schedule's coefficients are "
            "float32; cast x_T with x_T.astype(jnp.float32)"
        )
    if all_finite(x_T) is False:  # a NaN start sampled NaN without a word
        raise PretrainedError("x_T holds NaN or inf values; give finite initial noise")
    if noise is not None and deterministic:
        raise PretrainedError(
            "noise: eta 0 is deterministic and adds no step noise, so it would be ignored; "
            "drop noise, or set eta > 0"
        )


def _clip_range(config: SchedulerConfig) -> float | None:
    return config.clip_sample_range if config.clip_sample else None


def ddim_sample(
    model_fn: Callable[[Array, Array], Array],
    x_T: Array,
    config: SchedulerConfig,
    num_inference_steps: int,
    *,
    eta: float = 0.0,
    use_clipped_model_output: bool = False,
    key: Array | None = None,
    noise: Array | None = None,
) -> Array:
    r"""Sample with DDIM from ``x_T``, like diffusers' ``DDIMPipeline`` after its noise draw.

    Walks :func:`ddim_grid` with :func:`ddim_step` in one ``lax.scan``, from :math:`x_T` at the
    first (largest) timestep to :math:`x_0`.

    Args:
        model_fn: ``(x_t, t) -> model_output``, ``x_t`` shaped like ``x_T``, ``t`` an int32
            scalar timestep.
        x_T: ``(B, C, H, W)`` initial noise (any shape ``model_fn`` accepts).
        config: the scheduler options.
        num_inference_steps: ``n``.
        eta: :math:`\eta \ge 0`; 0 is deterministic.
        use_clipped_model_output: see :func:`ddim_step`.
        key: PRNG key for the step noise (needed when ``eta > 0`` unless ``noise`` is given).
        noise: ``(n, *x_T.shape)`` injected step noise; takes precedence over ``key``.

    Returns:
        The final sample, shaped like ``x_T``, in model space (before any post-processing).

    Raises:
        TypeError: ``model_fn`` not callable, ``config`` not a :class:`SchedulerConfig`,
            ``x_T`` not a float32 or float64 array (half precision included), ``key`` not a
            PRNG key (:func:`scorelab._keys.typed_key`), ``noise`` not real.
        ValueError: ``model_fn`` returns another shape than ``x_t``'s.
        PretrainedError: for ``eta < 0``, a bad ``num_inference_steps`` (:func:`timesteps`),
            ``x_T`` with NaN or inf, ``noise`` of the wrong shape, with NaN or inf (concrete
            values only), or given at ``eta = 0`` (where it would be ignored), or ``eta > 0``
            with neither ``key`` nor ``noise``.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
        https://arxiv.org/abs/2010.02502
    """

    _check_sampling(model_fn, config, x_T, noise, deterministic=is_number(eta) and eta == 0)

    def step_fn(*args):
        return ddim_step(
            *args,
            prediction_type=config.prediction_type,
            clip_sample_range=_clip_range(config),
            use_clipped_model_output=use_clipped_model_output,
        )

    return _run(step_fn, model_fn, x_T, ddim_grid(config, num_inference_steps, eta), key, noise)


def ddpm_sample(
    model_fn: Callable[[Array, Array], Array],
    x_T: Array,
    config: SchedulerConfig,
    num_inference_steps: int,
    *,
    key: Array | None = None,
    noise: Array | None = None,
) -> Array:
    """Sample with DDPM's ancestral sampler from ``x_T``, like diffusers' ``DDPMPipeline``.

    Walks :func:`ddpm_grid` with :func:`ddpm_step` in one ``lax.scan``.

    Args:
        model_fn: ``(x_t, t) -> model_output``, ``x_t`` shaped like ``x_T``, ``t`` an int32
            scalar timestep.
        x_T: ``(B, C, H, W)`` initial noise (any shape ``model_fn`` accepts).
        config: the scheduler options.
        num_inference_steps: ``n``.
        key: PRNG key for the step noise (needed unless ``noise`` is given).
        noise: ``(n, *x_T.shape)`` injected step noise; takes precedence over ``key``.

    Returns:
        The final sample, shaped like ``x_T``, in model space (before any post-processing).

    Raises:
        TypeError: ``model_fn`` not callable, ``config`` not a :class:`SchedulerConfig`,
            ``x_T`` not a float32 or float64 array (half precision included), ``key`` not a
            PRNG key (:func:`scorelab._keys.typed_key`), ``noise`` not real.
        ValueError: ``model_fn`` returns another shape than ``x_t``'s.
        PretrainedError: for a bad ``num_inference_steps`` (:func:`timesteps`), ``noise`` of
            the wrong shape or with NaN or inf (concrete values only), or neither ``key`` nor
            ``noise``.

    References:
        Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
        https://arxiv.org/abs/2006.11239
    """

    _check_sampling(model_fn, config, x_T, noise, deterministic=False)

    def step_fn(*args):
        return ddpm_step(
            *args, prediction_type=config.prediction_type, clip_sample_range=_clip_range(config)
        )

    return _run(step_fn, model_fn, x_T, ddpm_grid(config, num_inference_steps), key, noise)
