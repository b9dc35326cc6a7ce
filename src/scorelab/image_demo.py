r"""The image demo: a U-Net trained on scikit-learn's digits, sampled at fixed budgets, measured.

``scorelab demo images`` composes library calls, as the 2-D demo (:mod:`scorelab.demo`) does:

1. **Train** a VP noise-prediction U-Net (:class:`scorelab.diffusers.VPEpsilonUNet`, diffusers'
   ``UNet2DModel`` layout; :func:`scorelab.losses.vp_epsilon_loss`, DDPM's objective) on the
   1437 training digits (:func:`scorelab.data.digits`) into the ordinary run directory
   ``models/unet`` (:func:`scorelab.workflows.train_run`): ``scorelab sample --run``,
   ``plot`` and ``export --diffusers`` take it.
2. **Sample** with each of the chosen samplers at each budget of score evaluations (NFE):
   each sampler's grid size comes from its own cost per step
   (:func:`scorelab.samplers.budget_levels`), so the rows compare equal work.
3. **Measure** every sample set with the classifier measures of
   :func:`scorelab.workflows.evaluate_image_sets` against the training digits, all beside one
   floor (the held-out digits measured the same way), computed once.
4. **Draw** a labelled grid per sampler and budget, the loss curve, and each measure against
   NFE with the floor band.

Every random draw has its own named key (``fold_in(key(seed), name)``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
from tqdm.auto import tqdm

from scorelab import builders, samplers, viz
from scorelab._files import atomic_write
from scorelab._validate import (
    check_choice,
    check_fields,
    check_file,
    check_int,
    check_memory,
    check_seed,
    check_unique,
    from_mapping,
)
from scorelab.config import ConfigError, ExperimentConfig, LossConfig, ModelConfig
from scorelab.data import DIGITS_HELD_OUT, DIGITS_SIZES, digits
from scorelab.metrics import check_floor_repeats
from scorelab.noise import GRIDS
from scorelab.runs import (
    check_output_folder,
    demo_settings,
    has_checkpoints,
    manifest,
    named_key,
    read_json,
    read_losses,
    stored_outputs,
    write_json,
)
from scorelab.training import TrainConfig
from scorelab.workflows import evaluate_image_sets, sample_run, save_sample_grid, train_run

__all__ = ["ImageDemoSettings", "is_image_demo", "plot_image_demo", "run_image_demo"]

_MEASURES = {
    "fd": "Fréchet distance (classifier features)",
    "class_tv": "class-frequency total variation",
}


# The run's configuration fields the settings set, by the settings' names.
_SETTING_OF_FIELD = {
    "model.channels": "demo.channels",
    "sampler.n_levels": "demo.budgets",
    "sampler.grid": "demo.grid",
    "sampler.rho": "demo.rho",
    "sampler:": "demo:",  # levels that merge: the budgets, range and rho together
    "train.": "demo.train.",
}


@dataclasses.dataclass(frozen=True)
class ImageDemoSettings:
    """Every number the image demo uses.

    Attributes:
        seed: root seed of the named keys.
        size: image size, 8 (the digits) or 16 (``digits16``).
        channels: the U-Net's channels per level.
        train: the training recipe (steps, batch, optimiser, EMA).
        samplers: the samplers compared (keys of :data:`scorelab.samplers.SAMPLERS`).
        budgets: score evaluations per sample (NFE) each sampler is given.
        grid, rho: the sigma grid the samplers walk (Karras et al.'s with ``rho``).
        n_samples: samples per sampler and budget (the held-out split's size by default, so
            rows and floors compare sets of one size).
        floor_repeats: subsets drawn for each measure and its floor.
    """

    seed: int = 0
    size: int = 8
    channels: tuple[int, ...] = (32, 64)
    train: TrainConfig = TrainConfig(
        steps=2000,
        learning_rate=2e-3,
        batch_size=128,
        schedule="warmup_cosine",
        warmup_steps=100,
        # No EMA: the cosine schedule ends at rate 0, and its last iterate has the lower VP
        # epsilon loss on the held-out digits (docs/benchmarks.md, "The image demo's network").
        steps_per_dispatch=5,
        unroll=True,  # XLA:CPU runs a U-Net inside a loop far slower (TrainConfig.unroll)
        log_every=100,
    )
    samplers: tuple[str, ...] = ("dpmpp_2m", "heun", "ddim")
    budgets: tuple[int, ...] = (10, 20, 50)
    grid: str = "karras"
    rho: float = 7.0
    n_samples: int = DIGITS_HELD_OUT
    floor_repeats: int = 5

    def __post_init__(self):
        check_fields(self, "demo")  # settings built directly, not from_dict's
        check_seed("demo.seed", self.seed)
        check_choice("demo.size", self.size, DIGITS_SIZES)
        check_int("demo.n_samples", self.n_samples, 8)
        check_floor_repeats("demo.floor_repeats", self.floor_repeats)
        # Sizes before any work: n_samples = 10**11 trained the U-Net, then sampled for ever.
        # A sampler holds the images and the U-Net's widest activation, a floor its repeats
        # of the images (float32).
        image = 4.0 * self.size**2
        widest = 1 + max(self.channels, default=1)
        check_memory("demo.n_samples", image * self.n_samples * widest, "use fewer samples")
        repeats = image * self.n_samples * self.floor_repeats
        check_memory("demo.floor_repeats", repeats, "use fewer repeats")
        check_choice("demo.grid", self.grid, GRIDS)
        if not (self.samplers and self.budgets):
            raise ValueError("demo.samplers, demo.budgets: give at least one value each")
        for name in self.samplers:
            check_choice("demo.samplers", name, tuple(samplers.SAMPLERS))
            if not samplers.SAMPLERS[name].uses_grid:
                raise ValueError(
                    f"demo.samplers: {name!r} walks no sigma grid; choose a grid sampler"
                )
        for nfe in self.budgets:
            check_int("demo.budgets", nfe, 2)
        check_unique("demo.samplers", self.samplers)
        check_unique("demo.budgets", self.budgets)
        # The runs it will make, checked now (an empty channels list was refused after 9 s,
        # a batch of 10**14 once training began, both under the run's field names).
        try:
            for name in self.samplers:
                for nfe in self.budgets:
                    levels = samplers.budget_levels(name, nfe)
                    if levels is None:  # was "demo.budgets: expected an integer, got None"
                        raise ConfigError(
                            f"demo.samplers: {name!r} is adaptive (run at tolerances, not a "
                            "budget); choose a fixed-grid sampler"
                        )
                    if levels < 2:  # was "expected an integer >= 2, got 1", of the levels
                        raise ConfigError(
                            f"demo.budgets: {nfe} evaluations buy {name!r} no grid of 2 "
                            "levels; raise the budget"
                        )
                    config = self.experiment(name, levels)
            # The network, abstractly: the run's shape and memory checks (a U-Net too deep for
            # the images, or of 262 GiB, was refused only once the demo had started).
            _check_network(config.model, config.loss, self.size)
        except ConfigError as error:
            text = str(error)
            if text.startswith("model ("):  # the network's memory: its channels' setting
                text = f"demo.channels: {text}"
            raise ConfigError(text).renamed(_SETTING_OF_FIELD) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImageDemoSettings:
        """Settings from a mapping (a TOML file); fields not given keep their defaults.

        Raises:
            ValueError: for an unknown field or a value of the wrong type, naming the field.
        """
        return from_mapping(cls, values, "demo", base=cls())

    def experiment(self, sampler: str = "ddim", n_levels: int = 50) -> ExperimentConfig:
        """The run's configuration, sampling with ``sampler`` on ``n_levels`` levels."""
        return ExperimentConfig.from_dict(
            {
                "data": {"source": "digits" if self.size == 8 else "digits16"},
                "model": {"name": "unet", "channels": list(self.channels), "seed": self.seed},
                "loss": {"name": "vp_epsilon"},
                "train": self.train.to_dict(),
                "sampler": {
                    "name": sampler,
                    "n_levels": n_levels,
                    "grid": self.grid,
                    "rho": self.rho,
                },
            }
        )


@functools.lru_cache(maxsize=16)
def _check_network(model: ModelConfig, loss: LossConfig, size: int) -> None:
    """:func:`scorelab.builders.make_model` of the run's sections for ``size`` x ``size``
    digits, under :func:`equinox.filter_eval_shape`: its checks (the U-Net's levels against
    the image size, the network's memory) with the run's messages, and nothing allocated.
    Cached: settings differing in other fields build the same network."""
    images = np.zeros((2, 1, size, size), np.float32)  # the digits' (n, C, H, W), as shapes
    eqx.filter_eval_shape(lambda: builders.make_model(model, loss, images))


def is_image_demo(run_dir) -> bool:
    """Whether ``run_dir`` is the output of ``scorelab demo images`` (its ``demo.json`` holds
    the image demo's settings, which the 2-D demo's do not: ``budgets``)."""
    path = Path(run_dir) / "demo.json"
    if not path.is_file():
        return False
    record = read_json(path)
    return isinstance(record, dict) and "budgets" in record


def _label(name: str, nfe: int) -> str:
    return f"{samplers.label(name)} NFE {nfe}"


def _key(settings: ImageDemoSettings, name: str) -> jax.Array:
    """The image demo's key named ``name`` (:func:`scorelab.runs.named_key`)."""
    return named_key(settings.seed, name)


_OUTPUTS = ("models", "figures", "samples.npz", "demo.json", "metrics.json")
"""What :func:`run_image_demo` writes into its folder besides the manifest."""


def run_image_demo(
    settings: ImageDemoSettings, out_dir, *, progress: bool = True, resume: bool = False
) -> dict:
    """Run the image demo and write ``out_dir`` (metrics.json, samples.npz, figures/, models/).

    Args:
        settings: every number the demo uses (:class:`ImageDemoSettings`).
        out_dir: the demo's run directory (prepared by the caller).
        progress: show progress bars.
        resume: continue an interrupted demo: the U-Net trains on from its checkpoints (or is
            read back when it finished), to the uninterrupted demo's parameters.

    Returns:
        The content of ``metrics.json``: ``rows`` (sampler, budget, levels, NFE and each
        measure), ``floors`` (measure -> (mean, sd)), ``train_seconds`` and ``seconds``.

    Raises:
        scorelab.runs.RunExistsError: for an ``out_dir`` that holds a run of another job (a
            training run) or files that are not the demo's, before any work
            (:func:`scorelab.runs.check_output_folder`).
    """
    out_dir = Path(out_dir)
    check_output_folder(out_dir, "demo images", _OUTPUTS)
    started = time.perf_counter()
    run_dir = out_dir / "models" / "unet"
    result = train_run(
        settings.experiment(),
        run_dir,
        resume=resume and has_checkpoints(run_dir),
        progress=progress,
        init_key=_key(settings, "init"),
        train_key=_key(settings, "train"),
        keys=f"image demo: fold_in(key({settings.seed}), crc32(name)) for 'init', 'train', "
        "'sample <sampler> <nfe>' (scorelab.image_demo._key)",
    )
    train_seconds = time.perf_counter() - started
    model = result.ema_model if result.ema_model is not None else result.model

    jobs = [
        (name, nfe, samplers.budget_levels(name, nfe))
        for name in settings.samplers
        for nfe in settings.budgets
    ]
    jobs = [(name, nfe, levels) for name, nfe, levels in jobs if levels and levels >= 2]
    drawn, arrays = {}, {}
    bar = tqdm(total=len(jobs), desc="sample", unit="run", disable=not progress)
    for name, nfe, levels in jobs:
        seed = int(jax.random.randint(_key(settings, f"sample {name} {nfe}"), (), 0, 2**31 - 1))
        drawn[name, nfe] = sample_run(
            settings.experiment(name, levels), model, settings.n_samples, seed
        )
        arrays[f"{name}_nfe{nfe}"] = drawn[name, nfe].x
        bar.update()
    bar.close()
    labels = {job: _label(*job) for job in drawn}
    # Measured together: one floor for every row. Clipped to the pixel range as diffusers'
    # pipelines clip before saving an image.
    report = evaluate_image_sets(
        {labels[job]: np.clip(result.x, -1.0, 1.0) for job, result in drawn.items()},
        floor_repeats=settings.floor_repeats,
        seed=settings.seed,
        progress=progress,
    )
    rows = [
        {**row, "sampler": name, "budget": nfe, "levels": levels, "nfe": drawn[name, nfe].nfe}
        for (name, nfe, levels), row in zip(jobs, report.rows, strict=True)
    ]
    atomic_write(out_dir / "samples.npz", lambda handle: np.savez_compressed(handle, **arrays))
    results = {
        "rows": rows,
        "floors": report.floors,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
    }
    write_json(out_dir / "metrics.json", results)
    write_json(out_dir / "demo.json", settings.to_dict())
    plot_image_demo(out_dir, out_dir / "figures", results=results, losses=result.losses)
    record = manifest(
        settings.to_dict(), seed=settings.seed, wall_seconds=results["seconds"], job="demo images"
    )
    write_json(out_dir / "manifest.json", record)
    return results


def plot_image_demo(run_dir, out_dir, *, results=None, losses=None) -> list[Path]:
    """Draw the image demo's figures from its run directory; returns the paths written.

    A labelled grid of the first 64 samples per sampler and budget, one of held-out digits,
    the U-Net's loss curve, and each measure against NFE with the floor band, from
    ``metrics.json``, ``samples.npz``, ``demo.json`` and ``models/unet`` (``scorelab plot``
    redraws them; :func:`run_image_demo` passes its own ``results`` and ``losses``).

    Raises:
        ValueError: for a ``run_dir`` that is not an image demo's output (a training run,
            say), or whose stored files do not hold what the demo wrote (a damaged folder).
        FileNotFoundError: for a ``run_dir`` that does not exist.
    """
    with stored_outputs(run_dir, "scorelab demo images"):
        return _draw_image_demo(run_dir, out_dir, results=results, losses=losses)


def _draw_image_demo(run_dir, out_dir, *, results=None, losses=None) -> list[Path]:
    """:func:`plot_image_demo`'s drawing, its stored files' damage named by the caller."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    settings = demo_settings(run_dir, ImageDemoSettings, "image demo")
    results = results if results is not None else read_json(run_dir / "metrics.json")
    losses = losses if losses is not None else read_losses(run_dir / "models" / "unet")
    rows, floors = results["rows"], results["floors"]
    written = []
    with np.load(check_file(run_dir / "samples.npz", "demo's samples file")) as arrays:
        for row in rows:
            name, nfe = row["sampler"], row["budget"]
            path = out_dir / f"samples_{name}_nfe{nfe}.png"
            written.append(
                save_sample_grid(arrays[f"{name}_nfe{nfe}"][:64], path, label=_label(name, nfe))
            )
    held_out, _ = digits("test", size=settings.size)
    written.append(save_sample_grid(held_out[:64], out_dir / "data.png", label="held-out digits"))
    figure = viz.loss_curves({"unet": np.asarray(losses)}, title="U-Net training loss")
    written.append(viz.save_figure(figure, out_dir / "loss.png"))
    for measure, ylabel in _MEASURES.items():
        curves = {
            name: (
                np.array([r["nfe"] for r in rows if r["sampler"] == name]),
                np.array([r[measure] for r in rows if r["sampler"] == name]),
            )
            for name in settings.samplers
        }
        figure = viz.metric_vs_steps(
            curves,
            tuple(floors[measure]),
            ylabel=ylabel,
            xlabel="NFE (score evaluations per sample)",
            key_name="sampler",
            title="Samplers on the digits U-Net (band: the floor, held-out digits)",
        )
        written.append(viz.save_figure(figure, out_dir / f"{measure}_vs_nfe.png"))
    return written
