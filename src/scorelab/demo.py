r"""``scorelab demo``: the founding tutorial end to end, measured against the exact-score oracle.

On the tutorial's nine-mode mixture it trains the three models (Hyvarinen score matching,
denoising score matching at :math:`\sigma = 1`, the noise-conditional NCSN), samples with ULA,
annealed Langevin and VE-DDIM for :math:`\eta \in \{0, 0.1, 0.5, 1\}` and
:math:`N \in \{4, 9, \dots, 100\}`, and reports every result beside the same sampler driven by
the exact score and beside the floor (the metric between two exact sample sets). A learned
result then reads as floor + sampler error + model error. The NCSN model's likelihood is
reported the same way: the mean negative log-likelihood of held-out points by the
probability-flow ODE beside the exact score's (the floor) and the mixture's entropy.

It is composed of the steps the CLI exposes: each model is trained by
:func:`scorelab.workflows.train_run` into an ordinary run directory (``models/hyvarinen``,
``models/dsm``, ``models/ncsn``) that ``scorelab sample --run``, ``plot`` and ``sweep --run``
accept, and every row is measured by :func:`scorelab.report.measure` against floors from
:func:`scorelab.report.floors`. Only the keys are the demo's own: every one is derived from the
root seed by name (:func:`_key`), so the demo's numbers do not move when a step is added.

What differs from the tutorial, and why (each measured on the tutorial's own code):

- the networks end in a linear layer, not a leaky ReLU (which shrinks negative scores 100x);
- the Hyvarinen model trains at peak learning rate 3e-3 after 200 warm-up steps (at the
  tutorial's 1e-4 it learns nothing) with SiLU activations: the exact-trace loss cannot place
  the kinks of a leaky-ReLU network (see :mod:`scorelab.models`); the held-out losses of each
  choice are in docs/fixes.md and the README's "The demo's result";
- keys are never reused;
- samplers start from sigma_max = 80: at the tutorial's sigma_max = 10 even the exact score
  misses the mode weights (one row of the table shows what that costs);
- the mixture weights are normalised (current numpyro rejects unnormalised ones).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from tqdm.auto import tqdm

from scorelab import builders, samplers, viz
from scorelab._validate import (
    check_choice,
    check_fields,
    check_file,
    check_instance,
    check_int,
    check_memory,
    check_real,
    check_seed,
    check_sigma,
    check_unique,
    first_line,
    from_mapping,
)
from scorelab.config import TRAIN_RECIPE, ConfigError, ExperimentConfig, LossConfig
from scorelab.likelihood import log_likelihood
from scorelab.losses import SIGMA_DISTRIBUTIONS
from scorelab.metrics import check_floor_repeats
from scorelab.models import ExactScore
from scorelab.noise import GRIDS, RhoError, karras_sigmas, sigma_grid
from scorelab.report import Report, floors, measure
from scorelab.runs import (
    atomic_write,
    check_output_folder,
    demo_settings,
    has_checkpoints,
    load_run,
    manifest,
    named_key,
    read_json,
    read_losses,
    stored_outputs,
    write_json,
)
from scorelab.sweep import sweep_runs, sweep_sampler
from scorelab.targets import seed_mixture
from scorelab.training import TrainConfig
from scorelab.workflows import train_run

__all__ = ["DemoSettings", "MODELS", "run_demo", "plot_demo"]

MODELS = ("hyvarinen", "dsm", "ncsn")
"""The demo's three models, each a run directory ``models/<name>``."""


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Every number the demo uses. The defaults finish within 10 minutes on 2 CPU cores;
    :meth:`full` is the tutorial's budget (3000 steps at batch 2048 for every model).

    Attributes:
        seed: root seed; every other key is derived from it by ``fold_in`` with a name.
        n_data: size of the training set (the tutorial's 10 000).
        n_samples: samples per sampler run (the tutorial's 2000).
        hyvarinen, dsm, ncsn: training configurations of the three models.
        dsm_sigma: noise level of the DSM model (the tutorial's 1).
        ncsn_sigma_distribution: how NCSN draws training sigmas over
            ``[sigma_min, sigma_max]``.
        normalise_input: unit-scale network inputs (``input_scale`` / ``sigma_data`` = the
            data's standard deviation); ``False`` is the tutorial's raw input.
        grid, sigma_min, sigma_max, rho: the sampling grid (:func:`scorelab.noise.sigma_grid`).
        tutorial_sigma_max: the tutorial's sigma_max, for the prior-mismatch row (which uses
            the tutorial's Karras grid with ``rho``).
        ula_step_size, ula_steps: ULA as in the tutorial.
        annealed_levels, annealed_steps_per_level: annealed Langevin.
        ddim_etas, ddim_ns: the DDIM sweep over the noise knob eta and the number of levels.
        floor_repeats: repeats of the floor.
        n_chains_animated: chains drawn in the animations.
        n_likelihood: held-out exact points whose negative log-likelihood the NCSN model and
            the exact score are given by the probability-flow ODE (:func:`_likelihoods`).
    """

    seed: int = 0
    n_data: int = 10_000
    n_samples: int = 2000
    hyvarinen: TrainConfig = TrainConfig(
        steps=2000,
        learning_rate=3e-3,
        batch_size=512,
        schedule="warmup_cosine",
        warmup_steps=200,
        log_every=100,
    )
    dsm: TrainConfig = TrainConfig(
        steps=2000, learning_rate=1e-3, batch_size=512, schedule="cosine", log_every=100
    )
    # scorelab train's recipe (scorelab.config.TRAIN_RECIPE); 5000 steps: at 3000 the NCSN
    # model's small-sigma error left DDIM eta=0 modes too wide (README, "The demo's result").
    ncsn: TrainConfig = TRAIN_RECIPE
    dsm_sigma: float = 1.0
    ncsn_sigma_distribution: str = "loguniform"
    normalise_input: bool = True
    grid: str = "geometric"
    sigma_min: float = samplers.DEFAULT_SIGMA_MIN
    sigma_max: float = samplers.DEFAULT_SIGMA_MAX
    rho: float = 5.0
    tutorial_sigma_max: float = 10.0
    ula_step_size: float = 1e-2
    ula_steps: int = 1000
    annealed_levels: int = 100
    annealed_steps_per_level: int = 5
    ddim_etas: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)
    ddim_ns: tuple[int, ...] = tuple(int(k * k) for k in range(2, 11))
    floor_repeats: int = 5
    n_chains_animated: int = 20
    n_likelihood: int = 400

    def __post_init__(self):
        check_fields(self, "demo")  # settings built directly, not from_dict's
        positive = ("a number > 0", lambda v: v > 0)
        check_seed("demo.seed", self.seed)
        for name, minimum in (
            ("n_data", 2),
            ("n_samples", 2),
            ("ula_steps", 1),
            ("annealed_levels", 2),
            ("annealed_steps_per_level", 1),
            ("n_chains_animated", 1),
            ("n_likelihood", 2),
        ):
            check_int(f"demo.{name}", getattr(self, name), minimum)
        check_floor_repeats("demo.floor_repeats", self.floor_repeats)
        if self.n_chains_animated > self.n_samples:  # the animations drew n_samples, quietly
            raise ValueError(
                f"demo.n_chains_animated: {self.n_chains_animated} is more than the "
                f"{self.n_samples} chains drawn (demo.n_samples); give at most {self.n_samples}"
            )
        # Sizes before any work: n_samples = 10**14 trained three models, then ran out of
        # memory (a traceback) drawing the samples. Points are 2-D float32, kept in a few
        # copies (data, chains, trajectories, metrics); a grid holds a few floats a level.
        for name in ("n_data", "n_samples", "n_likelihood", "n_chains_animated"):
            check_memory(f"demo.{name}", 64.0 * getattr(self, name), "use fewer points")
        for name in ("annealed_levels", "ula_steps", "annealed_steps_per_level"):
            check_memory(f"demo.{name}", 256.0 * getattr(self, name), "use fewer levels or steps")
        # ULA and annealed Langevin keep every chain's 2-D trajectory for the animations:
        # 2000 x 2000 annealed steps of 10**4 samples were accepted, then needed 320 GB.
        annealed = self.annealed_levels * self.annealed_steps_per_level
        for name, steps in (("annealed_steps_per_level", annealed), ("ula_steps", self.ula_steps)):
            check_memory(
                f"demo.{name}",
                8.0 * self.n_samples * steps,
                "use fewer steps, levels or samples (every step of every chain is kept)",
            )
        for name in ("dsm_sigma", "sigma_min", "rho", "ula_step_size"):
            check_real(f"demo.{name}", getattr(self, name), *positive)
        for name in ("sigma_max", "tutorial_sigma_max"):
            check_real(
                f"demo.{name}",
                getattr(self, name),
                f"a number > sigma_min ({self.sigma_min})",
                lambda v: v > self.sigma_min,
            )
        for name in ("dsm_sigma", "sigma_min", "sigma_max", "tutorial_sigma_max"):
            check_sigma(f"demo.{name}", getattr(self, name))  # not the loss field it feeds
        check_choice("demo.grid", self.grid, GRIDS)
        check_choice(
            "demo.ncsn_sigma_distribution", self.ncsn_sigma_distribution, SIGMA_DISTRIBUTIONS
        )
        if not (self.ddim_etas and self.ddim_ns):
            raise ValueError("demo.ddim_etas, demo.ddim_ns: give at least one value each")
        for eta in self.ddim_etas:
            check_real("demo.ddim_etas", eta, "numbers >= 0", lambda v: v >= 0)
        for n in self.ddim_ns:
            check_int("demo.ddim_ns", n, 2)
            check_memory("demo.ddim_ns", 256.0 * n, "use fewer levels")
        check_unique("demo.ddim_etas", self.ddim_etas)
        check_unique("demo.ddim_ns", self.ddim_ns)
        # Each DDIM row keeps its samples; each floor repeat draws two exact sets.
        rows = len(self.ddim_etas) * len(self.ddim_ns)
        check_memory("demo.ddim_ns", 64.0 * rows * self.n_samples, "use fewer DDIM rows")
        repeats = 64.0 * self.floor_repeats * self.n_samples
        check_memory("demo.floor_repeats", repeats, "use fewer repeats")
        self._check_runs_and_grids()

    def _check_runs_and_grids(self) -> None:
        """The three runs and every grid the demo makes, built now: a lognormal law that
        misses the sigma range, or a rho whose grid overflows, was refused only once the
        models had trained, under fields the settings do not have (``loss.p_mean``)."""
        for name in MODELS:
            try:
                self.experiment(name)
            except ConfigError as error:
                text = str(error)
                if text.startswith("loss.p_"):  # the law's parameters: the loss's defaults
                    law = LossConfig()
                    text = (
                        f"demo.ncsn_sigma_distribution: the lognormal law (the loss's p_mean "
                        f"{law.p_mean:g}, p_std {law.p_std:g}) does not reach [sigma_min, "
                        f"sigma_max] = [{self.sigma_min:g}, {self.sigma_max:g}]: choose "
                        "'loguniform', or a sigma range that law reaches"
                    )
                # "sampler:": levels that merge, the levels, range and rho together
                names = {"sampler.": "demo.", "sampler:": "demo:", "train.": f"demo.{name}."}
                raise ConfigError(text).renamed(names) from None
        grids = [
            (self.grid, n, self.sigma_max, "grid")
            for n in {*self.ddim_ns, self.annealed_levels, 50}
        ]
        grids += [
            ("karras", n, self.tutorial_sigma_max, "tutorial_sigma_max")
            for n in (max(self.ddim_ns), 100)
        ]
        for grid, n, sigma_max, field in grids:
            try:
                sigma_grid(grid, n, self.sigma_min, sigma_max, self.rho)
            except ValueError as error:
                field = "rho" if isinstance(error, RhoError) else field
                raise ConfigError(f"demo.{field}: {first_line(error)}") from None

    @classmethod
    def full(cls) -> DemoSettings:
        """The tutorial's training budget: 3000 steps at batch 2048 for every model."""
        budget = {"steps": 3000, "batch_size": 2048}
        base = cls()
        return dataclasses.replace(
            base,
            hyvarinen=dataclasses.replace(base.hyvarinen, **budget),
            dsm=dataclasses.replace(base.dsm, **budget),
            ncsn=dataclasses.replace(base.ncsn, **budget),
        )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: DemoSettings | None = None) -> DemoSettings:
        """Settings from a mapping (``demo.json``, a TOML file): fields not given keep ``base``'s
        values (the defaults); training tables update that model's :class:`TrainConfig`.

        Raises:
            ValueError: for an unknown field or a value of the wrong type, naming the field
                (:func:`scorelab._validate.from_mapping`).
            TypeError: for a ``base`` that is not a :class:`DemoSettings` (or ``None``).
        """
        check_instance("base", base, DemoSettings, "a DemoSettings", optional=True)
        return from_mapping(cls, values, "demo", base=base if base is not None else cls())

    def experiment(self, name: str) -> ExperimentConfig:
        """The configuration of model ``name`` (one of :data:`MODELS`), as its run records it.

        The data section names the target and size; the demo draws the data itself with its
        named key (``_key(settings, "data")``), recorded in the run's manifest.
        """
        sampler = {
            "hyvarinen": {
                "name": "ula",
                "options": {"step_size": self.ula_step_size, "n_steps": self.ula_steps},
            },
            "dsm": {
                "name": "ula",
                "options": {
                    "step_size": self.ula_step_size,
                    "n_steps": self.ula_steps,
                    "sigma": self.dsm_sigma,
                },
            },
            "ncsn": {"name": "ddim", "grid": self.grid, "rho": self.rho},
        }[name]
        loss = {
            "hyvarinen": {"name": "hyvarinen"},
            "dsm": {"name": "dsm", "sigma": self.dsm_sigma},
            "ncsn": {
                "name": "ncsn",
                "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max,
                "n_sigmas": 2,
                "sigma_distribution": self.ncsn_sigma_distribution,
            },
        }[name]
        return ExperimentConfig.from_dict(
            {
                "data": {"source": "seed_mixture", "n": self.n_data, "seed": self.seed},
                "model": {"normalise_input": self.normalise_input},
                "loss": loss,
                "train": getattr(self, name).to_dict(),
                "sampler": sampler,
            }
        )


def _key(settings: DemoSettings, name: str) -> jax.Array:
    """The demo's key named ``name`` (:func:`scorelab.runs.named_key`)."""
    return named_key(settings.seed, name)


def _grid(settings: DemoSettings, n: int):
    return sigma_grid(settings.grid, n, settings.sigma_min, settings.sigma_max, settings.rho)


def _held_out(model, loss_fn, exact_loss_fn, exact_score, points, key) -> dict[str, float]:
    """Mean held-out loss (and its standard error) of ``model`` and of the exact score on the
    same fresh ``points`` with the same per-example keys."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(points.shape[0]))
    model_loss = jax.vmap(lambda k, x: loss_fn(k, model, x))(keys, points)
    exact_loss = jax.vmap(lambda k, x: exact_loss_fn(k, exact_score, x))(keys, points)
    root_n = np.sqrt(points.shape[0])
    return {
        "loss": float(model_loss.mean()),
        "loss_se": float(model_loss.std() / root_n),
        "exact_loss": float(exact_loss.mean()),
        "exact_loss_se": float(exact_loss.std() / root_n),
    }


def _relative_score_error(model, exact_score, points, sigma) -> float:
    """:math:`\\sqrt{E\\|s_\\theta - s\\|^2 / E\\|s\\|^2}` over ``points`` of :math:`q_\\sigma`."""
    s_model = jax.vmap(lambda x: model(x, sigma))(points)
    s_true = jax.vmap(lambda x: exact_score(x, sigma))(points)
    return float(jnp.sqrt(jnp.sum((s_model - s_true) ** 2) / jnp.sum(s_true**2)))


def _mean_and_se(values) -> tuple[float, float]:
    """The mean of ``values`` ``(n,)`` and its standard error ``sd / sqrt(n)`` (``ddof=1``)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def _likelihoods(settings: DemoSettings, target, score_fns: dict) -> dict[str, Any]:
    r"""Mean negative log-likelihood (nats) of held-out exact points under the probability-flow
    ODE of each score in ``score_fns``, beside the mixture's differential entropy.

    For :math:`n` = ``settings.n_likelihood`` fresh points :math:`x_i \sim q_0` (the key named
    ``"likelihood points"``), each score's
    :math:`\mathrm{NLL} = -\frac1n \sum_i \log p_{\sigma_{\min}}(x_i)` by
    :func:`scorelab.likelihood.log_likelihood` over the demo's
    :math:`[\sigma_{\min}, \sigma_{\max}]` with the exact trace, and on the same points the
    Monte-Carlo entropy :math:`\hat H = -\frac1n \sum_i \log q_0(x_i)` from the target's
    closed-form density. Since :math:`\mathbb{E}_{q_0}[-\log p] = H(q_0) + \mathrm{KL}(q_0
    \| p)`, the paired per-point difference ``excess`` :math:`= \frac1n \sum_i (\log q_0(x_i)
    - \log p(x_i))` estimates :math:`\mathrm{KL}(q_0 \| p)`, with a standard error far below
    either mean's (the points' spread cancels). The exact score's ODE is the floor: its excess
    is :math:`\mathrm{KL}(q_0 \| q_{\sigma_{\min}})` (:math:`d \sigma_{\min}^4 / 4v^2` for
    well-separated modes of variance :math:`v`: negligible) plus the
    solver's error and the prior's (:math:`\mathcal{N}(0, \sigma_{\max}^2 I)` for
    :math:`q_{\sigma_{\max}}`).

    Only a noise-conditional score has such a likelihood: the ODE needs the score at every
    level in :math:`[\sigma_{\min}, \sigma_{\max}]`, while the Hyvarinen and DSM models learn
    one law's score (:math:`q_0`, :math:`q_1`), which fixes a density only up to its
    normalising constant (and only if the learned field is a gradient).

    Args:
        settings: the demo's settings (``n_likelihood``, ``sigma_min``, ``sigma_max``, seed).
        target: the :class:`scorelab.targets.GaussianMixture` the points are drawn from.
        score_fns: name -> ``score_fn(x (d,), sigma) -> (d,)``.

    Returns:
        JSON-ready: ``n_points``, ``sigma_min``, ``sigma_max``, ``entropy`` and
        ``entropy_se``, and ``scores``: per name ``nll``, ``nll_se``, ``excess``,
        ``excess_se``, ``nfe`` (mean field evaluations a point) and ``seconds`` (wall time,
        compilation included).

    References:
        Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
        Differential Equations, Sec. 4.3 and App. D.2. https://arxiv.org/abs/2011.13456
    """
    points = target.sample(_key(settings, "likelihood points"), settings.n_likelihood)
    log_q = np.asarray(target.log_prob(points), np.float64)
    entropy, entropy_se = _mean_and_se(-log_q)
    results: dict[str, Any] = {
        "n_points": settings.n_likelihood,
        "sigma_min": settings.sigma_min,
        "sigma_max": settings.sigma_max,
        "entropy": entropy,
        "entropy_se": entropy_se,
        "scores": {},
    }
    for name, score_fn in score_fns.items():
        start = time.perf_counter()
        output = log_likelihood(
            _key(settings, f"likelihood probes {name}"),  # unused by the exact trace
            score_fn,
            points,
            sigma_min=settings.sigma_min,
            sigma_max=settings.sigma_max,
            n_probes="exact",
        )
        log_p = np.asarray(output.log_prob, np.float64)
        nll, nll_se = _mean_and_se(-log_p)
        excess, excess_se = _mean_and_se(log_q - log_p)
        results["scores"][name] = {
            "nll": nll,
            "nll_se": nll_se,
            "excess": excess,
            "excess_se": excess_se,
            "nfe": float(np.mean(output.nfe)),
            "seconds": time.perf_counter() - start,
        }
    return results


def _train_models(
    settings: DemoSettings, data: np.ndarray, out_dir: Path, progress: bool, resume: bool
):
    """Train the three models, each into the run directory ``out_dir/models/<name>``; with
    ``resume``, continue each from its checkpoints where it has them."""
    trained, histories, seconds = {}, {}, {}
    for name in MODELS:
        start = time.perf_counter()
        run_dir = out_dir / "models" / name
        result = train_run(
            settings.experiment(name),
            run_dir,
            resume=resume and has_checkpoints(run_dir),
            progress=progress,
            data=data,
            init_key=_key(settings, f"init {name}"),
            train_key=_key(settings, f"train {name}"),
            keys=f"demo: fold_in(key({settings.seed}), name) for 'data', 'init {name}', "
            f"'train {name}' (scorelab.demo._key)",
        )
        seconds[name] = time.perf_counter() - start
        # The EMA parameters where the run keeps them (NCSN), else the last iterate.
        trained[name] = result.ema_model if result.ema_model is not None else result.model
        histories[name] = result.losses
    return trained, histories, seconds


def _row(method, sampler, samples, exact_samples, reference, target, floor, full) -> dict:
    """One table row: the model's samples and the exact score's through the same sampler.

    Full rows get every metric (1000 directions); the sweep's rows sliced Wasserstein over
    250 directions and the mixture report only: the sliced distance's cost grows with the
    directions, and the sweep measures every (eta, N) twice.
    """
    options = {"n_projections": 1000, "max_sliced": True} if full else {"n_projections": 250}
    model = measure(samples, reference, target, mmd=full, **options)
    exact = measure(exact_samples, reference, target, mmd=full, **options)
    return {
        "method": method,
        "sampler": sampler.name,
        "nfe": sampler.nfe,
        **model,
        **{f"{name}_exact": value for name, value in exact.items()},
        "sw_floor": floor["sw"][0],
    }


_OUTPUTS = ("models", "figures", "samples.npz", "demo.json", "metrics.json")
"""What :func:`run_demo` writes into its folder besides the manifest."""


def run_demo(
    settings: DemoSettings, out_dir, *, progress: bool = True, resume: bool = False
) -> dict[str, Any]:
    """Run the demo and write ``out_dir`` (metrics.json, manifest.json, figures/, models/).

    Args:
        settings: every number the demo uses (:class:`DemoSettings`; ``DemoSettings.full()``
            for the tutorial's training budget).
        out_dir: output folder, created if needed.
        progress: show training progress bars.
        resume: continue an interrupted demo: each model trains on from its checkpoints (a
            finished one is read back, a missing one trained), to the uninterrupted demo's
            parameters; the rest is computed again from them.

    Returns:
        The content of ``metrics.json``.

    Raises:
        ValueError: for an ``out_dir`` that is a file.
        scorelab.runs.RunExistsError: for an ``out_dir`` that holds a run of another job (a
            training run) or files that are not a demo's, before any work.
    """
    out_dir = Path(out_dir)
    check_output_folder(out_dir, "demo", _OUTPUTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    target = seed_mixture()
    exact = ExactScore(target)
    data = np.asarray(target.sample(_key(settings, "data"), settings.n_data))
    n = settings.n_samples
    dim = target.dim

    trained, histories, train_seconds = _train_models(settings, data, out_dir, progress, resume)

    # --- held-out losses and score errors of the two single-level models -------------------
    held_out = {}
    points_key = _key(settings, "held-out points")
    clean_points = target.sample(points_key, 4000)
    noisy_points = target.ve_marginal(settings.dsm_sigma).sample(points_key, 4000)
    hyvarinen_loss = builders.make_loss(settings.experiment("hyvarinen").loss)
    held_out["hyvarinen"] = _held_out(
        trained["hyvarinen"],
        hyvarinen_loss,
        Partial(hyvarinen_loss, sigma=0.0),  # the exact score takes a sigma: the clean one
        exact,
        clean_points,
        _key(settings, "held-out hyvarinen"),
    )
    held_out["hyvarinen"]["relative_l2_error"] = _relative_score_error(
        trained["hyvarinen"], exact, clean_points, 0.0
    )
    dsm_loss = builders.make_loss(settings.experiment("dsm").loss)
    held_out["dsm"] = _held_out(
        trained["dsm"],
        dsm_loss,
        dsm_loss,
        exact,
        clean_points,
        _key(settings, "held-out dsm"),
    )
    held_out["dsm"]["relative_l2_error"] = _relative_score_error(
        trained["dsm"], exact, noisy_points, settings.dsm_sigma
    )

    # --- negative log-likelihoods of held-out points: the NCSN model against the floor -------
    likelihoods = _likelihoods(settings, target, {"ncsn": trained["ncsn"], "exact": exact})

    # --- floors -------------------------------------------------------------------------------
    floor = floors(
        ("sw", "tv"),
        target.sample,
        _key(settings, "floor"),
        n,
        settings.floor_repeats,
        target=target,
    )
    reference = np.asarray(target.sample(_key(settings, "reference"), n))

    def run(name, sampler, score_fn, sigma_init, trajectory=False, prior_key="prior"):
        x_init = samplers.ve_prior(_key(settings, prior_key), n, dim, jnp.float32(sigma_init))
        return samplers.sample(
            _key(settings, f"sampler {name}"), sampler, score_fn, x_init, trajectory=trajectory
        )

    def compare(
        method,
        name,
        sampler,
        model,
        sigma_init,
        law=target,
        law_reference=reference,
        trajectory=False,
        full=True,
    ):
        """One row: ``model`` and the exact score through the same sampler and prior."""
        out = run(name, sampler, model, sigma_init, trajectory=trajectory)
        out_exact = run(f"{name} exact", sampler, exact, sigma_init)
        row = _row(method, sampler, out.x, out_exact.x, law_reference, law, floor, full)
        bar.update(1)
        return row, out

    rows, sweep, trajectories = [], {}, {}
    n_rows = 2 + 1 + len(settings.ddim_etas) * len(settings.ddim_ns) + 1
    bar = tqdm(total=n_rows, desc="sample and measure", unit="row", disable=not progress)
    # ULA from N(0, 100 I), 1000 steps of 1e-2, as the tutorial.
    for name, sigma in (("hyvarinen", 0.0), ("dsm", settings.dsm_sigma)):
        sampler = samplers.ula(settings.ula_step_size, settings.ula_steps, sigma=sigma)
        # DSM learns q_sigma: its samples are judged against q_sigma, not the data.
        law = target if sigma == 0 else target.ve_marginal(sigma)
        law_reference = np.asarray(law.sample(_key(settings, f"reference {name}"), n))
        method = f"{name} + ULA" + ("" if sigma == 0 else f" (vs q_{sigma:g})")
        row, out = compare(
            method, f"ula {name}", sampler, trained[name], 10.0, law, law_reference, trajectory=True
        )
        rows.append(row)
        trajectories[f"ula_{name}"] = np.asarray(out.trajectory[: settings.n_chains_animated])

    # Annealed Langevin with the NCSN model.
    annealed = samplers.annealed_langevin(
        _grid(settings, settings.annealed_levels), settings.annealed_steps_per_level
    )
    row, out = compare(
        "ncsn + annealed Langevin",
        "annealed",
        annealed,
        trained["ncsn"],
        settings.sigma_max,
        trajectory=True,
    )
    rows.append(row)
    trajectories["annealed"] = np.asarray(out.trajectory[: settings.n_chains_animated])

    # The DDIM sweep over eta and N by the sampler map's driver, from the prior's starts, with
    # a chain key per (eta, N, score) as the demo's other rows.
    ddim_samples = {}
    x_T = samplers.ve_prior(_key(settings, "prior"), n, dim, jnp.float32(settings.sigma_max))
    for eta in settings.ddim_etas:
        sweep[eta] = {"N": [], "sw": [], "sw_exact": [], "tv": [], "tv_exact": []}
        runs = sweep_runs(
            [sweep_sampler("ddim", eta=eta)],
            settings.ddim_ns,  # DDIM spends one evaluation per level: N = NFE
            {"model": trained["ncsn"], "exact": exact},
            x_T,
            lambda _, levels, score, eta=eta: _key(
                settings, f"sampler ddim {eta} {levels}" + (" exact" if score == "exact" else "")
            ),
            lambda levels: _grid(settings, levels),
        )
        for point in runs:
            full = point.levels == max(settings.ddim_ns)  # the table's row gets every metric
            x, x_exact = point.outputs["model"].x, point.outputs["exact"].x
            method = f"ncsn + DDIM eta={eta:g}"
            row = _row(method, point.sampler, x, x_exact, reference, target, floor, full)
            bar.update(1)
            for field in ("sw", "sw_exact", "tv", "tv_exact"):
                sweep[eta][field].append(row[field])
            sweep[eta]["N"].append(point.levels)
            if full:
                rows.append(row)
                ddim_samples[eta] = np.asarray(x)

    # What the tutorial's grid (Karras, sigma_max = 10, x_T ~ N(0, 100 I)) costs at e = 1.
    grid = karras_sigmas(
        max(settings.ddim_ns), settings.sigma_min, settings.tutorial_sigma_max, settings.rho
    )
    method = f"ncsn + DDIM eta=1, sigma_max={settings.tutorial_sigma_max:g} (tutorial)"
    row, _ = compare(
        method,
        "ddim tutorial",
        samplers.ddim(grid, eta=1.0),
        trained["ncsn"],
        settings.tutorial_sigma_max,
    )
    rows.append(row)
    bar.close()

    results = {
        "rows": rows,
        "floor": floor,
        "held_out": held_out,
        "likelihood": likelihoods,
        "ddim_sweep": {str(eta): values for eta, values in sweep.items()},
        "train_seconds": train_seconds,
        "exact_hyvarinen_loss_closed_form": float(-0.5 * 2 / 0.1),
    }
    arrays = {
        "data": data,
        **{f"ddim_eta{eta:g}": x for eta, x in ddim_samples.items()},
        **{f"trajectory_{k}": v for k, v in trajectories.items()},
    }
    atomic_write(out_dir / "samples.npz", lambda handle: np.savez_compressed(handle, **arrays))
    write_json(out_dir / "demo.json", settings.to_dict())
    figures = plot_demo(
        out_dir, out_dir / "figures", results=results, trained=trained, progress=progress
    )
    results["figures"] = [str(path.relative_to(out_dir)) for path in figures]
    results["seconds"] = time.perf_counter() - started
    write_json(out_dir / "metrics.json", results)
    record = manifest(
        settings.to_dict(), seed=settings.seed, wall_seconds=results["seconds"], job="demo"
    )
    write_json(out_dir / "manifest.json", record)
    print(summary_table(results))
    print(f"\nwrote {out_dir} in {results['seconds']:.0f} s")
    return results


def summary_table(results: dict[str, Any]) -> str:
    """The demo's table (:class:`scorelab.report.Report`): each method beside the exact score
    and the floor, then the held-out losses of the single-level models and the negative
    log-likelihoods (:func:`_likelihoods`).

    Raises:
        ValueError: for ``results`` that are not the demo's ``metrics.json`` content, naming
            the first missing key.
    """
    if not isinstance(results, dict):
        raise ValueError(f"results: expected the demo's metrics (a dict), got {results!r}")
    for key in ("rows", "floor", "held_out", "likelihood"):
        if key not in results:
            raise ValueError(
                f"results: no {key!r}; expected the content of a demo's metrics.json "
                "(run_demo's return value)"
            )
    notes = tuple(
        f"{name}: held-out loss {record['loss']:.3f} (exact score {record['exact_loss']:.3f}), "
        f"relative L2 score error {record['relative_l2_error']:.3f}"
        for name, record in results["held_out"].items()
    )
    likelihood = results["likelihood"]
    notes += (
        f"NLL of {likelihood['n_points']} held-out points (nats, probability-flow ODE from "
        f"sigma {likelihood['sigma_min']:g} to {likelihood['sigma_max']:g}, exact trace; "
        "excess = NLL - entropy on the same points):",
        *(
            f"  {name}: {record['nll']:.3f} +- {record['nll_se']:.3f}, excess "
            f"{record['excess']:.4f} +- {record['excess_se']:.4f} ({record['nfe']:.0f} NFE a "
            f"point, {record['seconds']:.1f} s)"
            for name, record in likelihood["scores"].items()
        ),
        f"  mixture entropy (Monte Carlo): {likelihood['entropy']:.3f} +- "
        f"{likelihood['entropy_se']:.3f}",
    )
    floor = {name: tuple(value) for name, value in results["floor"].items()}
    return Report(results["rows"], floor, notes).text()


_FIGURE_COUNT = 12
"""How many files :func:`plot_demo` writes (the length of its progress bar)."""


def plot_demo(run_dir, out_dir, *, results=None, trained=None, progress=False) -> list[Path]:
    """Draw the demo's figures from its run directory; returns the paths written.

    ``progress`` shows a bar over the figures (the animations take most of the time).

    Raises:
        ValueError: for a ``run_dir`` that is not a demo's output (a training run, say),
            before ``out_dir`` is created, or whose stored files do not hold what the demo
            wrote (a damaged folder).
        FileNotFoundError: for a ``run_dir`` that does not exist.
    """
    with stored_outputs(run_dir, "scorelab demo"):
        return _draw_demo(run_dir, out_dir, results=results, trained=trained, progress=progress)


def _draw_demo(run_dir, out_dir, *, results=None, trained=None, progress=False) -> list[Path]:
    """:func:`plot_demo`'s drawing, its stored files' damage named by the caller."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    settings = demo_settings(run_dir, DemoSettings)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = results if results is not None else read_json(run_dir / "metrics.json")
    if trained is None:
        trained = {name: load_run(run_dir / "models" / name)[1] for name in MODELS}
    stored = np.load(check_file(run_dir / "samples.npz", "demo's samples file"))
    data = stored["data"][:1000]
    target = seed_mixture()
    exact = ExactScore(target)
    written = []
    bar = tqdm(total=_FIGURE_COUNT, desc="figures", unit="figure", disable=not progress)

    def done(path):
        written.append(path)
        bar.update()

    def save(fig, name):
        done(viz.save_figure(fig, out_dir / name))

    histories = {name: read_losses(run_dir / "models" / name) for name in trained}
    held = results["held_out"]
    save(
        viz.loss_curves(
            {name: histories[name] for name in ("hyvarinen", "dsm")},
            {name: held[name]["exact_loss"] for name in ("hyvarinen", "dsm")},
            title="Training loss (dashed: the exact score's held-out loss)",
        ),
        "loss_single_level.png",
    )
    save(viz.loss_curves({"ncsn": histories["ncsn"]}, title="NCSN training loss"), "loss_ncsn.png")
    field_hyv = viz.mesh_score(trained["hyvarinen"])
    save(viz.score_field(field_hyv, data, title="Hyvarinen model score"), "score_hyvarinen.png")
    field_dsm = viz.mesh_score(trained["dsm"], sigma=settings.dsm_sigma)
    save(
        viz.score_field(field_dsm, data, title=f"DSM model score (sigma={settings.dsm_sigma:g})"),
        "score_dsm.png",
    )
    save(viz.score_field(viz.mesh_score(exact), data, title="Exact score"), "score_exact.png")

    done(
        viz.animate_trajectories(
            stored["trajectory_ula_hyvarinen"],
            out_dir / "ula_hyvarinen.gif",
            data,
            field_hyv,
            frames=list(range(0, settings.ula_steps, max(1, settings.ula_steps // 50))),
            title="ULA with the Hyvarinen model",
        )
    )
    # The noised sequence q_sigma on the sampling grid.
    grid = _grid(settings, 50)
    key = _key(settings, "noised sequence")
    noised = np.stack([np.asarray(target.ve_marginal(s).sample(key, 500)) for s in grid])
    done(viz.animate_noised_sequence(noised, np.asarray(grid), out_dir / "noised.gif"))
    # Annealed Langevin trajectories with the per-level NCSN field.
    levels = _grid(settings, settings.annealed_levels)
    fields = [viz.mesh_score(trained["ncsn"], n=20, sigma=float(s)) for s in levels[::-1]]
    done(
        viz.animate_annealed(
            stored["trajectory_annealed"],
            np.asarray(levels),
            fields,
            out_dir / "annealed.gif",
            data,
            levels=50,  # 50 levels spread evenly, the first and the last included
            lim=15.0,
        )
    )
    # The inference process q^eta(x_{1:T} | x_0 = 0) in 1-D for the Bayes and e = 0.1 choices.
    grid = karras_sigmas(100, settings.sigma_min, settings.tutorial_sigma_max, settings.rho)
    key_x, key_bayes, key_other = jax.random.split(_key(settings, "inference process"), 3)
    x_T = jax.random.normal(key_x, (1,)) * settings.tutorial_sigma_max
    paths = {}
    for label, eta, k in (("Bayes (eta=1)", 1.0, key_bayes), ("eta=0.1", 0.1, key_other)):
        etas = samplers.ve_ddim_etas(grid, eta)
        out = samplers.inference_process(k, jnp.zeros((1,)), x_T, grid, etas)
        paths[label] = np.asarray(out.trajectory[:, 0])
    save(viz.inference_trajectories(np.asarray(grid), paths), "inference_process.png")
    save(
        viz.ddim_samples(
            {
                float(k[len("ddim_eta") :]): stored[k]
                for k in stored.files
                if k.startswith("ddim_eta")
            },
            data,
            title=f"DDIM samples with the NCSN model (N={max(settings.ddim_ns)})",
        ),
        "ddim_samples.png",
    )
    sweep = results["ddim_sweep"]
    floors = results["floor"]
    save(
        viz.metric_vs_steps(
            {float(eta): (np.array(v["N"]), np.array(v["sw"])) for eta, v in sweep.items()},
            tuple(floors["sw"]),
            title="DDIM with the NCSN model",
        ),
        "sw_vs_n.png",
    )
    save(
        viz.metric_vs_steps(
            {float(eta): (np.array(v["N"]), np.array(v["tv_exact"])) for eta, v in sweep.items()},
            tuple(floors["tv"]),
            ylabel="mixture total variation",
            title="DDIM with the exact score",
            log_y=True,
        ),
        "tv_vs_n_exact.png",
    )
    bar.close()
    return written
