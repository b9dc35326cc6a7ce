r"""The diffusers wing: pretrained diffusers DDPM-family pipelines, natively in JAX.

==========================  ===============================================  ============
part                        public names                                     module
==========================  ===============================================  ============
U-Net port                  :class:`UNet2D`, :func:`load_unet`,              _unet
                            :func:`unet_folder`, :func:`timestep_embedding`,
                            :data:`UNET_DEFAULTS`,
                            :data:`MAX_LAYERS_PER_BLOCK`
diffusers' schedulers       :class:`SchedulerConfig`, :func:`timesteps`,     _schedulers
                            :func:`ddim_grid`, :func:`ddpm_grid`,
                            :func:`ddim_sample`, :func:`ddpm_sample`, ...
pipeline and loader         :func:`resolve_pipeline`, :func:`load_pipeline`, _pretrained
                            :func:`sample`, :func:`to_images`, :func:`run`
trainable U-Net models      :func:`unet_config`, :class:`UNetNetwork`,       _score_models
                            :class:`VPEpsilonUNet`, :class:`ClassConditioned`
export                      :func:`export_pipeline`                          _export
errors                      :class:`PretrainedError`                         _checks
==========================  ===============================================  ============

The wing imports the core (:mod:`scorelab.noise` for the VP schedule and scales,
:mod:`scorelab.viz` for the image grid) and nothing in the core imports it. Every file,
configuration field and tensor it reads is checked before use; failures are one
:class:`PretrainedError` line (a ``ValueError``) naming the input and the remedy.

References:
    Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    https://arxiv.org/abs/2006.11239
    Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models.
    https://arxiv.org/abs/2010.02502
"""

from scorelab.diffusers._checks import PretrainedError
from scorelab.diffusers._export import DIFFUSERS_FORMAT_VERSION, export_pipeline
from scorelab.diffusers._pretrained import (
    PIXEL_PIPELINES,
    diffusers_sample,
    load_pipeline,
    load_scheduler_config,
    resolve_pipeline,
    run,
    sample,
    to_images,
)
from scorelab.diffusers._schedulers import (
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    VARIANCE_TYPES,
    SchedulerConfig,
    VPGrid,
    ddim_grid,
    ddim_sample,
    ddim_step,
    ddpm_grid,
    ddpm_sample,
    ddpm_step,
    predict_x0_eps,
    timesteps,
)
from scorelab.diffusers._score_models import (
    ClassConditioned,
    UNetNetwork,
    VPEpsilonUNet,
    unet_config,
)
from scorelab.diffusers._unet import (
    MAX_LAYERS_PER_BLOCK,
    UNET_DEFAULTS,
    UNet2D,
    load_unet,
    timestep_embedding,
    unet_folder,
)

__all__ = [
    "PretrainedError",
    "UNet2D",
    "UNET_DEFAULTS",
    "MAX_LAYERS_PER_BLOCK",
    "load_unet",
    "unet_folder",
    "timestep_embedding",
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "VARIANCE_TYPES",
    "PIXEL_PIPELINES",
    "SchedulerConfig",
    "VPGrid",
    "timesteps",
    "ddim_grid",
    "ddpm_grid",
    "predict_x0_eps",
    "ddim_step",
    "ddpm_step",
    "ddim_sample",
    "ddpm_sample",
    "resolve_pipeline",
    "load_scheduler_config",
    "load_pipeline",
    "sample",
    "diffusers_sample",
    "to_images",
    "run",
    "unet_config",
    "UNetNetwork",
    "VPEpsilonUNet",
    "ClassConditioned",
    "export_pipeline",
    "DIFFUSERS_FORMAT_VERSION",
]
