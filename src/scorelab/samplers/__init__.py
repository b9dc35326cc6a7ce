r"""Samplers driven by a score model: the sampler map, VE-native and VP through one conversion.

========================  =======================================  ==============  ========
family                    samplers                                 NFE             module
========================  =======================================  ==============  ========
Langevin                  :func:`ula`, :func:`annealed_langevin`,  steps           _langevin
                          :func:`mala`
DDIM (tutorial's)         :func:`ddim` (``eta``), inference        N               _ddim
                          process
reverse SDE               :func:`euler_maruyama`,                  N, N (M + 1)    _sde
                          :func:`ancestral`,
                          :func:`predictor_corrector`
probability-flow ODE      :func:`euler`, :func:`heun`,             N, 2N - 1,      _ode
                          :func:`edm`, :func:`dpmpp_2m`            2N - 1, N
multistep ODE             :func:`unipc`, :func:`deis`,             N               _unipc,
                          :func:`ipndm`                                            _deis
Restart (ODE + jumps)     :func:`restart`                          2(N + K N_R)-1  _restart
adaptive ODE (diffrax)    :func:`tsit5`, :func:`dopri5`            per chain       _adaptive
                          (:func:`adaptive`)
k-diffusion flows         :func:`euler_churn`, :func:`dpm_2`,      N, 2N - 1,      _kdpm
                          :func:`dpm_2_ancestral`, :func:`lms`,    2N - 1, N,
                          :func:`dpm_solver` (order k)             k (N - 1) + 1
DPM-Solver adaptive       :func:`dpm_adaptive` (PID control)       per chain       _dpm_adaptive
DPM-Solver++ family       :func:`dpmpp_3m`,                        N, N,           _dpmpp
                          :func:`dpmpp_2m_sde`,                    N,
                          :func:`dpmpp_3m_sde`,                    2N - 1,
                          :func:`dpmpp_sde`,                       2N - 1
                          :func:`dpmpp_2s_ancestral`
Brownian-tree noise       ``noise_sampler="brownian"``,                            _brownian
                          :func:`brownian_increment`
VP conversion             :func:`ve_score_from_vp`,                                _vp
                          :func:`vp_prior`, :func:`vp_state`
the driver                :func:`sample`, :class:`SamplerOutput`                   _core
by name (config, sweep)   :data:`SAMPLERS`, :func:`options`,                       _registry
                          :func:`build_sampler`, :func:`label`
========================  =======================================  ==============  ========

**Kernels on one driver.** A sampler is a frozen Equinox module (:class:`AbstractSampler`)
whose fields are its hyper-parameters: the grid and the numbers are array leaves, so a new grid
of the same size or a new ``eta`` reuses the compiled driver. It exposes its per-step
:meth:`~AbstractSampler.schedule` and a pure ``step(score_fn, state, (inputs_k, noise_k)) ->
(state, info)`` for one chain (blackjax's ``SamplingAlgorithm(init, step)``). One driver,
:func:`sample`, owns the rest: the draws (keys by ``fold_in`` / ``split``, or injected rows),
the scan, the final step, trajectories or a callback, NFE and the ``vmap`` over chains, the
one place where chains are batched::

    sampler = ddim(default_sigmas(100), eta=1.0)
    x_T = ve_prior(key_prior, 4000, 2, DEFAULT_SIGMA_MAX)
    out = sample(key_sampler, sampler, score_fn, x_T)  # out.x: (4000, 2)

``score_fn(x, sigma)`` takes one chain's state ``x`` of any shape ``S``: a vector ``(d,)`` or
an image. ``noise`` replaces the standard normal draws a chain would take from its key by given
ones, one row per draw in the order they are used (each constructor documents its layout);
tests use it to compare step for step with an independent implementation.
``sampler.run(key, score_fn, x_init, trajectory=False, noise=None)`` runs one chain.

**One declaration of every option.** Each option is a field declared with :func:`option`
(type, default, one-line help); the constructors, :data:`SAMPLERS`, :func:`options` (public
:class:`Option` records for the configuration, CLI flags and docs),
:func:`sampler_options`, :func:`build_sampler`, :func:`budget_levels` and :func:`label` are
generated from it. Registry names are the constructors' names.

Sigma grids are **ascending** (``sigmas[0] = sigma_min``, see :mod:`scorelab.noise`);
samplers walk them from the top down.

**The prior matters.** The founding tutorial starts from :math:`x_T \sim \mathcal{N}(0,
\sigma_{\max}^2 I)` with :math:`\sigma_{\max} = 10`, but its target has modes at
:math:`\pm 10`, so :math:`q_{10}` is far from :math:`\mathcal{N}(0, 100 I)`, and even the exact
score puts the wrong mass on the modes however many steps are taken (mode-weight total
variation 0.13 for ``eta = 0`` and 0.06 for ``eta = 1`` at 100 levels and 4000 samples, against
0.016 for 4000 exact samples). scorelab's default grid (:func:`default_sigmas`) goes up to EDM's
:data:`DEFAULT_SIGMA_MAX` = 80, where the mismatch is negligible; the tutorial's grid stays
``karras_sigmas(n)`` (:mod:`scorelab.noise`) with ``ve_prior(key, n, d, 10.0)``, and
:func:`exact_prior` starts from the exact :math:`q_{\sigma_{\max}}` where the target knows it.

References:
    Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin distributions
    and their discrete approximations. Bernoulli 2(4), 341-363.
    Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. https://arxiv.org/abs/1907.05600
    Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
    https://arxiv.org/abs/2010.02502
    Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. https://arxiv.org/abs/2206.00364
    Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic Differential
    Equations. https://arxiv.org/abs/2011.13456
    Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
    Probabilistic Models. https://arxiv.org/abs/2211.01095
"""

from scorelab.samplers._adaptive import (
    ADAPTIVE_SOLVERS,
    AdaptiveInfo,
    AdaptiveODE,
    AdaptiveState,
    adaptive,
    dopri5,
    tsit5,
)
from scorelab.samplers._brownian import NOISE_SAMPLERS, brownian_increment
from scorelab.samplers._core import (
    DEFAULT_SIGMA_MAX,
    DEFAULT_SIGMA_MIN,
    AbstractSampler,
    Option,
    SamplerOutput,
    SolveError,
    check_option,
    default_sigmas,
    exact_prior,
    option,
    sample,
    ve_prior,
)
from scorelab.samplers._ddim import DDIM, ddim, inference_process, ve_ddim_etas
from scorelab.samplers._deis import DEIS, IPNDM, MultistepState, deis, ipndm
from scorelab.samplers._dpm_adaptive import (
    DPMAdaptive,
    DPMAdaptiveInfo,
    DPMAdaptiveState,
    dpm_adaptive,
)
from scorelab.samplers._dpmpp import (
    SOLVER_TYPES as DPMPP_SOLVER_TYPES,
)
from scorelab.samplers._dpmpp import (
    DPMpp2MSDE,
    DPMpp2SAncestral,
    DPMpp3M,
    DPMpp3MSDE,
    DPMpp3MState,
    DPMppSDE,
    ancestral_step,
    dpmpp_2m_sde,
    dpmpp_2s_ancestral,
    dpmpp_3m,
    dpmpp_3m_sde,
    dpmpp_sde,
)
from scorelab.samplers._kdpm import (
    KDPM2,
    LMS,
    DPMSolver,
    EulerChurn,
    KDPM2Ancestral,
    LMSState,
    dpm_2,
    dpm_2_ancestral,
    dpm_solver,
    dpm_solver_step,
    euler_churn,
    lms,
    lms_coefficients,
)
from scorelab.samplers._langevin import (
    DEFAULT_STEP_RATIO,
    MALA,
    ULA,
    AnnealedLangevin,
    MALAInfo,
    MALAState,
    annealed_langevin,
    langevin_update,
    mala,
    ula,
)
from scorelab.samplers._ode import (
    EDM,
    DPMpp2M,
    DPMpp2MState,
    Euler,
    Heun,
    dpmpp_2m,
    edm,
    edm_gammas,
    euler,
    heun,
)
from scorelab.samplers._registry import (
    SAMPLERS,
    SamplerKind,
    budget_levels,
    build_sampler,
    label,
    options,
    sampler_options,
)
from scorelab.samplers._restart import Restart, restart
from scorelab.samplers._sde import (
    DEFAULT_SNR,
    STEP_RULES,
    Ancestral,
    EulerMaruyama,
    PredictorCorrector,
    ancestral,
    euler_maruyama,
    predictor_corrector,
)
from scorelab.samplers._unipc import SOLVER_TYPES as UNIPC_SOLVER_TYPES
from scorelab.samplers._unipc import UniPC, UniPCState, unipc
from scorelab.samplers._vp import (
    ve_score_from_vp,
    ve_sigmas_from_vp,
    vp_alpha_sigma_from_ve,
    vp_prior,
    vp_state,
)

__all__ = [
    "check_option",
    "DEFAULT_SIGMA_MIN",
    "DEFAULT_SIGMA_MAX",
    "DEFAULT_STEP_RATIO",
    "DEFAULT_SNR",
    "STEP_RULES",
    "ADAPTIVE_SOLVERS",
    "SamplerOutput",
    "SolveError",
    "AbstractSampler",
    "Option",
    "option",
    "default_sigmas",
    "ula",
    "ULA",
    "annealed_langevin",
    "AnnealedLangevin",
    "langevin_update",
    "mala",
    "MALA",
    "MALAState",
    "MALAInfo",
    "ve_ddim_etas",
    "ddim",
    "DDIM",
    "inference_process",
    "euler_maruyama",
    "EulerMaruyama",
    "ancestral",
    "Ancestral",
    "predictor_corrector",
    "PredictorCorrector",
    "euler",
    "Euler",
    "heun",
    "Heun",
    "edm",
    "EDM",
    "edm_gammas",
    "dpmpp_2m",
    "DPMpp2M",
    "DPMpp2MState",
    "euler_churn",
    "EulerChurn",
    "dpm_2",
    "KDPM2",
    "dpm_2_ancestral",
    "KDPM2Ancestral",
    "lms",
    "LMS",
    "LMSState",
    "lms_coefficients",
    "dpm_solver",
    "DPMSolver",
    "dpm_solver_step",
    "dpm_adaptive",
    "DPMAdaptive",
    "DPMAdaptiveState",
    "DPMAdaptiveInfo",
    "dpmpp_3m",
    "DPMpp3M",
    "DPMpp3MState",
    "dpmpp_3m_sde",
    "DPMpp3MSDE",
    "dpmpp_2m_sde",
    "DPMpp2MSDE",
    "dpmpp_sde",
    "DPMppSDE",
    "dpmpp_2s_ancestral",
    "DPMpp2SAncestral",
    "ancestral_step",
    "DPMPP_SOLVER_TYPES",
    "NOISE_SAMPLERS",
    "brownian_increment",
    "unipc",
    "UniPC",
    "UniPCState",
    "UNIPC_SOLVER_TYPES",
    "deis",
    "DEIS",
    "ipndm",
    "IPNDM",
    "MultistepState",
    "restart",
    "Restart",
    "adaptive",
    "tsit5",
    "dopri5",
    "AdaptiveODE",
    "AdaptiveState",
    "AdaptiveInfo",
    "ve_score_from_vp",
    "ve_sigmas_from_vp",
    "vp_alpha_sigma_from_ve",
    "vp_prior",
    "vp_state",
    "SAMPLERS",
    "SamplerKind",
    "options",
    "sampler_options",
    "build_sampler",
    "budget_levels",
    "label",
    "sample",
    "ve_prior",
    "exact_prior",
]
