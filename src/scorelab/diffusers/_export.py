r"""Export: a trained VP :math:`\varepsilon`-prediction U-Net as a diffusers ``DDIMPipeline``.

The folder diffusers' ``DDIMPipeline.from_pretrained`` (and ``scorelab pretrained``) reads::

    model_index.json                           DDIMPipeline: unet, scheduler
    unet/config.json                           UNet2DModel's config
    unet/diffusion_pytorch_model.safetensors   its state dict (UNet2D.state_dict)
    scheduler/scheduler_config.json            DDIMScheduler on the training schedule

The network is already diffusers' (:class:`~scorelab.diffusers.UNet2D` in its names and
layout), so the weights are written as they are: loading the folder rebuilds them bit for bit.

References:
    diffusers ``DDIMPipeline`` documentation.
    https://huggingface.co/docs/diffusers/api/pipelines/ddim
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from scorelab._files import atomic_write, file_above, naming, write_json
from scorelab.diffusers._pretrained import SCHEDULER_CONFIG
from scorelab.diffusers._score_models import VPEpsilonUNet
from scorelab.diffusers._unet import CONFIG_NAME, WEIGHTS_NAME
from scorelab.precond import EDMPreconditioned

__all__ = ["export_pipeline", "DIFFUSERS_FORMAT_VERSION"]

DIFFUSERS_FORMAT_VERSION = "0.42.1"
"""The ``_diffusers_version`` written: the diffusers release whose ``DDIMPipeline`` the
``diffusers``-marked tests load the folders with."""


def _check_exportable(model) -> VPEpsilonUNet:
    if not isinstance(model, VPEpsilonUNet):
        what = f"a {type(model).__name__}"
        if isinstance(model, EDMPreconditioned):  # diffusers' DDIM runs a VP noise predictor
            what = "an EDM-preconditioned VE model"
        raise ValueError(
            f"export --diffusers: {what} has no diffusers pipeline; only a VP epsilon U-Net "
            "exports (train with model.name=unet and loss.name=vp_epsilon)"
        )
    return model


def export_pipeline(model: VPEpsilonUNet, directory: str | os.PathLike) -> Path:
    """Write ``model`` as a diffusers ``DDIMPipeline`` folder (``UNet2DModel`` + ``DDIMScheduler``).

    The files are written into a temporary folder beside ``directory``, which is then renamed
    to it: a reader sees the whole pipeline or none, and an existing folder is never
    overwritten.

    A class-conditional model is written too, its class embedding as the ``UNet2DModel``'s
    ``num_class_embeds``, but a ``DDIMPipeline`` passes no class: neither diffusers'
    pipeline nor ``scorelab pretrained`` can sample the folder (both refuse it); load its
    ``unet/`` with ``UNet2DModel.from_pretrained`` or :func:`~scorelab.diffusers.load_unet`
    and pass ``class_labels`` to the network, or sample the scorelab run with
    ``scorelab sample --run RUN --class K``.

    Args:
        model: a :class:`~scorelab.diffusers.VPEpsilonUNet` (as trained by ``scorelab train``
            with ``model.name = "unet"``).
        directory: the pipeline folder to create; it must not exist (or be empty).

    Returns:
        ``directory`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``model`` is not a VP epsilon U-Net (an MLP, an EDM-preconditioned VE
            network: diffusers' DDIM pipeline cannot represent it), or, naming ``directory``
            before anything is written: it exists and is not empty, or is a file, or is a
            dangling symbolic link, or lies inside a file, or its folder cannot be created or
            written (``/proc``, a read-only mount, no permission).
    """
    from safetensors.numpy import save

    unet = _check_exportable(model).network.unet
    directory = Path(directory)
    # exists() and not a folder: a file, or a special file such as /dev/null
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ValueError(
            f"--diffusers: {directory} already exists; choose a new folder (export never "
            "overwrites)"
        )
    version = {"_diffusers_version": DIFFUSERS_FORMAT_VERSION}
    if directory.is_symlink() and not directory.exists():  # the final rename failed on it
        raise ValueError(
            f"--diffusers: {directory} is a symbolic link to nothing ({os.readlink(directory)}); "
            "remove it or choose a new folder"
        )
    if directory.is_symlink():  # to an empty folder: written there (renaming onto the link
        directory = Path(os.path.realpath(directory))  # itself failed with 'Not a directory')
    if (ancestor := file_above(directory)) is not None:
        raise ValueError(
            f"--diffusers: {directory} would be a folder inside the file {ancestor}; choose "
            "another folder"
        )
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        umask = os.umask(0)  # mkdtemp's folder is private (0700): the umask's, as mkdir's
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
    except OSError as error:  # it named the staging folder (/proc/.x.f9h7l0z_), not the user's
        raise ValueError(
            f"--diffusers: {directory}: cannot create the folder ({error.strerror or error}); "
            "choose another folder"
        ) from None
    try:
        write_json(
            staging / "model_index.json",
            {
                "_class_name": "DDIMPipeline",
                **version,
                "scheduler": ["diffusers", "DDIMScheduler"],
                "unet": ["diffusers", "UNet2DModel"],
            },
        )
        (staging / "unet").mkdir()
        write_json(
            staging / "unet" / CONFIG_NAME,
            {"_class_name": "UNet2DModel", **version, **dict(unet.config)},
        )
        weights = save(unet.state_dict())
        atomic_write(staging / "unet" / WEIGHTS_NAME, lambda handle: handle.write(weights))
        (staging / SCHEDULER_CONFIG).parent.mkdir()
        write_json(
            staging / SCHEDULER_CONFIG,
            {
                "_class_name": "DDIMScheduler",
                **version,
                **model.scheduler.ddim_options(),
            },
        )
        os.replace(staging, directory)  # POSIX: replaces an empty folder, never a full one
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        where = getattr(error, "filename", None)  # a full disk named the staging folder
        if isinstance(error, OSError) and error.errno and where and staging in Path(where).parents:
            raise naming(error, directory / Path(where).relative_to(staging)) from None
        raise
    return directory
