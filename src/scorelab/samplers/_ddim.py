r"""DDIM for VE noise (the tutorial's parameterisation) and its inference process.

References:
    Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
    https://arxiv.org/abs/2010.02502
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from jax import Array

from scorelab.samplers._core import (
    AbstractSampler,
    SamplerOutput,
    check_sigmas,
    checked_options,
    descending_steps,
    option,
    tweedie,
)

RENAMED = {"e": "eta", "eta_0": "final_noise"}
"""DDIM's former option names and their new spelling."""


def check_renamed(given: dict) -> None:
    """``ValueError`` naming the new spelling of a former DDIM option in ``given``."""
    for old, new in RENAMED.items():
        if old in given:
            raise ValueError(f"DDIM's option {old!r} is now called {new!r}; pass {new}= instead")


class DDIM(AbstractSampler):
    """DDIM for VE noise with the tutorial's parameterisation (:func:`ddim`)."""

    kind: ClassVar[str] = "ddim"
    has_final_step: ClassVar[bool] = True
    sigmas: Array
    eta: Array = option(1.0, "DDIM's eta (eq. 16): 0 deterministic, 1 ancestral", in_label=True)
    final_noise: Array = option(
        0.0,
        "standard deviation of the final step's noise, to sigma = 0",
        usual=(0.0, 1.0, "noise added to the samples themselves, in data units"),
    )

    @property
    def n_steps(self) -> int:
        return self.sigmas.shape[0]

    @property
    def nfe(self) -> int:
        return self.n_steps

    def schedule(self):
        """``(sigma_t, sigma_prev, eta_t)`` from the top: ``sigma_{N-1} -> sigma_{N-2}``, ...,
        ``sigma_1 -> sigma_0``, then the final step ``sigma_0 -> 0`` with ``final_noise``."""
        etas = _etas(self.sigmas, self.eta, self.final_noise)
        return (*descending_steps(self.sigmas), jnp.concatenate([etas[1:][::-1], etas[:1]]))

    def step(self, score_fn, x_t, inputs):
        (sigma_t, sigma_prev, eta), noise = inputs
        x_0 = tweedie(score_fn, x_t, sigma_t)
        return _posterior_step(x_0, x_t, sigma_t, sigma_prev, eta, noise(0)), None

    def final_step(self, score_fn, x_t, inputs):
        # sigma_0 -> 0 with its own, independent draw (the tutorial reuses the parent key
        # here, correlating this draw with the chain's first one).
        (sigma_t, _, eta), noise = inputs
        return tweedie(score_fn, x_t, sigma_t) + eta * noise(0), None


def ve_ddim_etas(
    sigmas, eta: float = DDIM.eta, final_noise: float = DDIM.final_noise, **renamed
) -> Array:
    r"""DDIM's noise standard deviations for VE noise, ``(N,)``.

    .. math::
        \eta_{k} = \operatorname{clip}\Big(\eta \sqrt{\sigma_{k}^2 - \sigma_{k-1}^2}
        \,\frac{\sigma_{k-1}}{\sigma_{k}},\; 0,\; \sigma_{k-1} - 10^{-8}\Big),
        \quad k = 1, \dots, N-1, \qquad \eta_0 = \text{final\_noise}.

    ``etas[k]`` is the standard deviation of the noise added on leaving level ``k``: the step
    :math:`\sigma_k \to \sigma_{k-1}` for ``k >= 1`` (the tutorial's :math:`\eta_{t-1}`),
    and the final step :math:`\sigma_0 \to 0` for ``k = 0``. :math:`\eta` is the DDIM
    paper's (eq. 16; diffusers' and k-diffusion's ``eta``, the tutorial's ``e``): ``eta = 1``
    gives the Bayes (ancestral) posterior :math:`q(x_{k-1} \mid x_k, x_0)` of the forward
    chain, ``eta = 0`` deterministic DDIM. The clip keeps :math:`\sigma_{k-1}^2 - \eta_k^2 > 0`
    for ``eta > 1``, and at ``eta = 1`` acts only on a step so wide (:math:`\sigma_{k-1} /
    \sigma_k` below about :math:`1.4 \cdot 10^{-3}`) that :math:`\eta_k` is within
    :math:`10^{-6}` of :math:`\sigma_{k-1}` (it keeps that much deterministic part, where
    k-diffusion's ancestral step keeps none); the bound is :math:`(1 - 10^{-6})\,\sigma_{k-1}`
    where the tutorial's is negative (below :math:`2 \cdot 10^{-8}`) or rounds to
    :math:`\sigma_{k-1}` in float32 (above :math:`10^{-2}`).

    Args:
        sigmas: ``(N,)`` ascending grid.
        eta: scale of the noise, ``>= 0``.
        final_noise: standard deviation of the final step's noise, ``>= 0`` (the tutorial's
            ``eta_0``).

    Returns:
        ``(N,)`` array of the grid's dtype, ``etas[0] = final_noise``.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels, if ``eta < 0`` or ``final_noise < 0``, or for a former option
            name (``e``, ``eta_0``).

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models, eq. 16.
        https://arxiv.org/abs/2010.02502
    """
    check_renamed(renamed)
    if renamed:
        raise TypeError(f"unexpected option {next(iter(renamed))!r}")
    check_ddim_options(eta, final_noise)
    return _etas(check_sigmas(sigmas), jnp.asarray(eta), jnp.asarray(final_noise))


def check_ddim_options(eta, final_noise) -> None:
    """``ValueError`` unless ``eta >= 0`` and ``final_noise >= 0``, naming the one that is not
    (a negative final_noise was blamed on eta, and the CLI's ``--eta``)."""
    for name, value in (("eta", eta), ("final_noise", final_noise)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {name}={value}")


def _etas(sigmas: Array, eta: Array, final_noise: Array) -> Array:
    sigma_t, sigma_prev = sigmas[1:], sigmas[:-1]
    etas = eta * jnp.sqrt(sigma_t**2 - sigma_prev**2) * sigma_prev / sigma_t
    # The tutorial's bound sigma_prev - 1e-8 is negative below 1e-8 (every eta negative, every
    # chain NaN at sigma_min 1e-10) and rounds to sigma_prev in float32 above about 0.1 (a
    # negative variance by rounding, NaN at eta > 1): there the bound is relative.
    relative = sigma_prev * (1 - 1e-6)
    bound = jnp.where(sigma_prev > 2e-8, jnp.minimum(sigma_prev - 1e-8, relative), relative)
    etas = jnp.clip(etas, 0.0, bound)
    return jnp.concatenate([jnp.full((1,), final_noise, dtype=etas.dtype), etas])


def _posterior_step(x_0: Array, x_t: Array, sigma_t, sigma_prev, eta, z: Array) -> Array:
    r"""A draw of :math:`q^\eta(x_{t-1} \mid x_t, x_0) = \mathcal{N}(x_0 +
    \sqrt{\sigma_{t-1}^2 - \eta^2}\,(x_t - x_0)/\sigma_t,\ \eta^2 I)`, the tutorial's
    ``inference_process`` plus its noise."""
    return x_0 + jnp.sqrt(sigma_prev**2 - eta**2) / sigma_t * (x_t - x_0) + eta * z


@checked_options
def ddim(sigmas, eta: float = DDIM.eta, final_noise: float = DDIM.final_noise, **renamed) -> DDIM:
    r"""DDIM for VE noise with the tutorial's parameterisation.

    With Tweedie's denoiser :math:`\hat x_0(x, \sigma) = x + \sigma^2 s(x, \sigma)`, each step
    :math:`\sigma_k \to \sigma_{k-1}` (``k = N-1, ..., 1``) replaces the unknown :math:`x_0` of
    the inference process (:func:`inference_process`) by :math:`\hat x_0`:

    .. math::
        x_{k-1} = \hat x_0 + \frac{\sqrt{\sigma_{k-1}^2 - \eta_k^2}}{\sigma_k}
        (x_k - \hat x_0) + \eta_k z_k,

    and the final step is :math:`x = \hat x_0(x_0', \sigma_0) + \eta_0 z` with
    ``etas = ve_ddim_etas(sigmas, eta, final_noise)``. ``eta = 1`` is ancestral sampling from
    the Bayes posterior, ``eta = 0`` deterministic DDIM (the DDIM paper's :math:`\eta`, eq. 16,
    as in diffusers and k-diffusion; the tutorial's ``e``).

    With ``eta = 0`` (and ``final_noise = 0``) every step is exactly an Euler step of the
    probability-flow ODE :math:`dx/d\sigma = -\sigma s(x, \sigma)` in :math:`\sigma`:
    :math:`x_{k-1} = x_k + (\sigma_{k-1} - \sigma_k)(-\sigma_k s(x_k, \sigma_k))`, the final
    one with :math:`\sigma_{-1} = 0` (Karras et al., 2022, Sec. 4).

    Unlike the tutorial, every draw, the final one included, comes from its own key.

    Args:
        sigmas: ``(N,)`` ascending grid; start the chain at ``x_init`` drawn near
            :math:`q_{\sigma_{N-1}}` (:func:`ve_prior` or :func:`exact_prior`).
        eta: noise scale :math:`\eta \ge 0`.
        final_noise: the standard deviation (not a scale) of the noise added by the final
            step to :math:`\sigma = 0`, ``>= 0`` (the tutorial's ``eta_0``).

    Returns:
        A :class:`DDIM` with ``nfe = N``. Trajectory ``(N, *S)``: the states at
        :math:`\sigma_{N-2}, \dots, \sigma_0` and the final sample (as the tutorial's).
        ``noise`` is ``(N, *S)``: row ``j < N - 1`` for the step leaving
        :math:`\sigma_{N-1-j}`, row ``N - 1`` for the final step.

    Raises:
        ValueError: unless ``sigmas`` is a 1-D, finite, positive, strictly ascending grid of
            ``>= 2`` levels, if ``eta < 0`` or ``final_noise < 0``, or for a former option name
            (``e``, ``eta_0``), naming the new one.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models, eq. 12
        and 16. https://arxiv.org/abs/2010.02502
        Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
        Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    """
    check_renamed(renamed)
    if renamed:
        raise TypeError(f"ddim() got an unexpected keyword argument {next(iter(renamed))!r}")
    check_ddim_options(eta, final_noise)
    return DDIM(check_sigmas(sigmas), eta, final_noise)


def inference_process(
    key: Array,
    x_0: Array,
    x_T: Array,
    sigmas,
    etas,
    noise=None,
    trajectory: bool = True,
) -> SamplerOutput:
    r"""Sample the DDIM inference process :math:`q^\eta(x_{1:T} \mid x_0)` backwards from ``x_T``.

    For ``k = N-1, ..., 1``:

    .. math::
        x_{k-1} = x_0 + \frac{\sqrt{\sigma_{k-1}^2 - \eta_k^2}}{\sigma_k} (x_k - x_0)
        + \eta_k z_k,

    which keeps every marginal :math:`q(x_k \mid x_0) = \mathcal{N}(x_0, \sigma_k^2 I)` when
    :math:`x_T \sim \mathcal{N}(x_0, \sigma_{N-1}^2 I)`, whatever the :math:`\eta`
    (Song et al., 2021, Lemma 1). The tutorial's ``inference_process_sampling``; :func:`ddim` is
    this chain with :math:`x_0` replaced by Tweedie's estimate.

    Args:
        key: PRNG key for the draws.
        x_0: ``(d,)`` the clean point.
        x_T: ``(d,)`` the start at ``sigmas[-1]``.
        sigmas: ``(N,)`` ascending grid.
        etas: ``(N,)`` in the layout of :func:`ve_ddim_etas`; ``etas[0]`` is not used (the
            process stops at :math:`\sigma_0`).
        noise: optional ``(N - 1, d)`` standard normal draws, row ``j`` for the step leaving
            :math:`\sigma_{N-1-j}`.
        trajectory: whether to return the states.

    Returns:
        :class:`SamplerOutput` with ``x`` the state at :math:`\sigma_0` and ``trajectory``
        ``(N - 1, d)``, the states at :math:`\sigma_{N-2}, \dots, \sigma_0`.

    Raises:
        ValueError: if ``etas`` and ``sigmas`` differ in shape, or ``noise`` is not
            ``(N - 1, d)``.

    References:
        Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models, eq. 7.
        https://arxiv.org/abs/2010.02502
    """
    sigmas = jnp.asarray(sigmas, dtype=x_T.dtype)
    etas = jnp.asarray(etas, dtype=x_T.dtype)
    if etas.shape != sigmas.shape:
        raise ValueError(f"etas must have the shape of sigmas {sigmas.shape}, got {etas.shape}")
    return _InferenceProcess(sigmas, etas, x_0).run(key, None, x_T, trajectory, noise)


class _InferenceProcess(AbstractSampler):
    """The inference process as a kernel: DDIM's step with the known ``x_0``, no final step."""

    kind: ClassVar[str] = "inference_process"
    sigmas: Array
    etas: Array
    x_0: Array

    @property
    def n_steps(self) -> int:
        return self.sigmas.shape[0] - 1

    @property
    def nfe(self) -> int:
        return 0

    def schedule(self):
        return self.sigmas[1:][::-1], self.sigmas[:-1][::-1], self.etas[1:][::-1]

    def step(self, score_fn, x_t, inputs):
        (sigma_t, sigma_prev, eta), noise = inputs
        return _posterior_step(self.x_0, x_t, sigma_t, sigma_prev, eta, noise(0)), None
