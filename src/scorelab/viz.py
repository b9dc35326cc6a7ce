r"""Figures and animations of the founding tutorial, from plain arrays.

Every function takes NumPy-convertible arrays (samples ``(n, 2)``, trajectories
``(n_chains, n_steps, 2)``, score fields on a mesh, loss histories, metric tables), so it works
for any sampler or model; only :func:`mesh_score` calls a score function. Static figures are
returned as :class:`matplotlib.figure.Figure` objects built without ``pyplot`` (no global
figure registry, no interactive backend; :func:`save_figure` renders through Agg), and
animations are written straight to a path: ``.gif`` through Pillow, ``.mp4`` through ffmpeg
when matplotlib can find it.

A *field* is the tuple ``(X, Y, U, V)`` of ``(n, n)`` arrays returned by :func:`mesh_score`:
the score :math:`(U, V) = \nabla \log q_\sigma(X, Y)` on a square mesh.

Plot limits: an argument ``lim`` (a float) draws the square :math:`[-lim, lim]^2`; ``lim=None``
derives the square from what the figure shows (the data if given, else the mesh, else the
samples), padded by 10%. Pass ``lim=15`` for the tutorial's view of its nine-mode target.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.animation as mpl_animation
import numpy as np
import PIL.Image
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullFormatter, NullLocator

from scorelab._files import atomic_write
from scorelab._validate import (
    check_callable,
    check_instance,
    check_int,
    check_mapping,
    check_memory,
    check_real,
    real_number,
)

__all__ = [
    "mesh_score",
    "loss_curves",
    "score_field",
    "animate_trajectories",
    "animate_noised_sequence",
    "animate_annealed",
    "inference_trajectories",
    "ddim_samples",
    "metric_vs_steps",
    "sampler_map",
    "score_error_profile",
    "save_image_grid",
    "save_figure",
]

Field = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

# One style for every figure: data faint blue, fields dark grey, chains in rainbow colours
# (as the tutorial), labelled series (models, e values) in tab10 minus the data's blue.
_DATA_STYLE = dict(color="tab:blue", alpha=0.3, s=4, linewidths=0, label="data")
_FIELD_COLOR = "0.2"
_PANEL = 4.5  # inches per square panel


# --- helpers ----------------------------------------------------------------------------------


def _points(x, name: str) -> np.ndarray:
    """``x`` as an ``(n, 2)`` float array, or a clear error."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2) (2-D points); got {x.shape}")
    return x


def _chains(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 2 or x.shape[1] < 1 or x.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (n_chains, n_steps, 2) with n_chains, n_steps >= 1; "
            f"got {x.shape}"
        )
    if not np.isfinite(x).any():
        raise ValueError(f"{name}: every point is NaN or inf (diverged chains); nothing to draw")
    return x


def _field(field, name: str = "field") -> Field:
    if len(field) != 4:
        raise ValueError(f"{name} must be the tuple (X, Y, U, V) returned by mesh_score")
    X, Y, U, V = (np.asarray(a, dtype=np.float64) for a in field)
    if not X.shape == Y.shape == U.shape == V.shape:
        raise ValueError(f"{name}: X, Y, U, V must have one shape; got {X.shape}, {U.shape}")
    return X, Y, U, V


def _normalise(U: np.ndarray, V: np.ndarray, mode: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Rescale arrows for readability.

    ``"max"``: divide by the longest arrow on the mesh (the tutorial's per-level rescaling,
    done on the norm so directions are kept); ``"unit"``: direction only; ``None``: raw.
    """
    if mode is None:
        return U, V
    norm = np.hypot(U, V)
    if mode == "max":
        scale = np.nanmax(norm) if np.any(norm > 0) else 1.0
        return U / scale, V / scale
    if mode == "unit":
        safe = np.where(norm > 0, norm, 1.0)
        return U / safe, V / safe
    raise ValueError(f"normalise must be None, 'max' or 'unit'; got {mode!r}")


def _square_limits(points: np.ndarray, lim: float | None, pad: float = 0.1):
    """``((x0, x1), (y0, y1))``: ``[-lim, lim]^2``, or a padded square around ``points``."""
    if lim is not None:
        if lim <= 0:
            raise ValueError(f"lim must be > 0; got {lim}")
        return (-lim, lim), (-lim, lim)
    finite = points[np.all(np.isfinite(points), axis=1)]
    if finite.size == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    centre = (lo + hi) / 2
    # A square box (equal aspect), never degenerate, padded so edge points are not cut.
    half = max(float(np.max(hi - lo)) / 2 * (1 + pad), 1e-3)
    return tuple((c - half, c + half) for c in centre)


def _scene_points(data, field: Field | None, fallback: np.ndarray) -> np.ndarray:
    """What default limits are derived from: the data, else the mesh, else ``fallback``."""
    if data is not None:
        return data
    if field is not None:
        return np.stack([field[0].ravel(), field[1].ravel()], axis=1)
    return fallback


def _draw_scene(ax: Axes, data, field: Field | None, limits, normalise: str | None):
    """Data scatter, quiver of the field, limits, labels; returns the quiver (or None)."""
    quiver = None
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], **_DATA_STYLE)
    if field is not None:
        X, Y, U, V = field
        U, V = _normalise(U, V, normalise)
        quiver = ax.quiver(X, Y, U, V, color=_FIELD_COLOR, width=0.003, angles="xy")
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return quiver


def _figure(figsize, dpi: float = 100) -> Figure:
    """A constrained-layout figure on its own Agg canvas (never registered with pyplot).

    A canvas attached once keeps one renderer, so text metrics stay cached across the frames
    of an animation instead of being recomputed by a fresh canvas at every save.
    """
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _legend(ax: Axes, **kwargs):
    """A legend whose scatter markers are opaque (faint data points make faint handles)."""
    legend = ax.legend(fontsize="small", **kwargs)
    for handle in legend.legend_handles:
        if isinstance(handle, PathCollection):
            handle.set_alpha(1.0)
    return legend


def _series_colors(n: int):
    # tab10 without its first colour, which is the data's blue.
    return [colormaps["tab10"](1 + i % 9) for i in range(n)]


def _chain_colors(n: int):
    return colormaps["rainbow"](np.linspace(0.0, 1.0, n))


def _format_label(label, key_name: str | None) -> str:
    """Strings as given; numbers (e.g. e values) as ``key_name = value``."""
    if isinstance(label, str) or key_name is None:
        return str(label)
    return f"{key_name} = {label:g}"


def _frame_indices(
    frames: int | Sequence[int] | None, n: int, default: int = 50, unit: str = "frame"
) -> list[int]:
    """Indices ``0 <= i < n`` to draw, from a count or from explicit indices.

    A count is spread evenly (first and last included); ``None`` is ``min(n, default)``;
    ``unit`` names the indices in errors (``"frame"``, ``"level"``).
    """
    if frames is None:
        frames = min(n, default)
    if isinstance(frames, int | np.integer):
        if frames < 1:
            raise ValueError(f"the number of {unit}s must be >= 1; got {frames}")
        return np.unique(np.linspace(0, n - 1, min(int(frames), n)).round().astype(int)).tolist()
    indices = [int(i) for i in frames]
    if not indices or min(indices) < 0 or max(indices) >= n:
        raise ValueError(f"{unit} indices must lie in [0, {n - 1}]; got {indices[:5]}...")
    return indices


def _animation_writer(path, fps=10, dpi=80) -> Callable[[int], mpl_animation.AbstractMovieWriter]:
    """The writer for ``path``'s suffix, checked before any drawing is done, with ``fps`` and
    ``dpi``."""
    check_int("fps", fps, 1)
    check_real("dpi", dpi, "a number > 0", lambda v: v > 0)
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return lambda fps: mpl_animation.PillowWriter(fps=fps)
    if suffix == ".mp4":
        if not mpl_animation.writers.is_available("ffmpeg"):
            raise ValueError(
                f"cannot write {str(path)!r}: MP4 needs ffmpeg, which matplotlib cannot find "
                "on PATH; install ffmpeg or write a .gif instead"
            )
        return lambda fps: mpl_animation.FFMpegWriter(fps=fps)
    raise ValueError(f"animation path must end in .gif or .mp4; got {str(path)!r}")


def _save_animation(
    fig: Figure, update, frames: list, path, writer_factory, fps: int, layout_frame=None
) -> Path:
    """Draw ``update(frame)`` for each frame into the movie writer, one render per frame.

    The layout is computed at ``layout_frame`` (default the first frame): the frame whose
    tick labels need the most room. ``fig`` exists only for the animation: it is cleared
    afterwards, whatever happens.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Lay the figure out once, then freeze it: re-running constrained layout on every
        # frame costs more than drawing it, and the frames only move data (and limits).
        update(frames[0] if layout_frame is None else layout_frame)
        fig.canvas.draw()
        fig.set_layout_engine("none")
        writer = writer_factory(fps)
        with writer.saving(fig, path, dpi=fig.dpi):
            for frame in frames:
                update(frame)
                writer.grab_frame()
    finally:
        fig.clear()
    return path


# --- score on a mesh --------------------------------------------------------------------------


@eqx.filter_jit
def _scores_at(score_fn, points, sigma):
    # filter_jit traces a module's arrays and hashes the rest, so a model (or the exact score)
    # evaluated at several sigmas compiles once instead of dispatching op by op.
    return jax.vmap(score_fn, in_axes=(0, None))(points, sigma)


def mesh_score(score_fn, lim: float = 15.0, n: int = 50, sigma=0.0) -> Field:
    r"""The score on a square mesh: :math:`(U, V)_{ij} = s(X_{ij}, Y_{ij}, \sigma)`.

    The tutorial's ``get_mesh_score``: an ``n x n`` mesh over :math:`[-lim, lim]^2`, the score
    vmapped over its points at one noise level.

    Args:
        score_fn: ``score_fn(x, sigma)`` for one point ``x`` of shape ``(2,)``.
        lim: half-width of the mesh, finite and > 0.
        n: points per side, >= 2.
        sigma: one noise level (>= 0) passed to ``score_fn``.

    Returns:
        ``(X, Y, U, V)``, four ``(n, n)`` NumPy arrays; ``X`` varies along columns.

    Raises:
        TypeError: if ``score_fn`` is not callable or returns something other than an array
            (a tuple).
        ValueError: for ``lim``, ``n`` or ``sigma`` out of range, a mesh beyond the memory, or
            a score of another shape than ``(2,)``.
    """
    check_callable("score_fn", score_fn, "score_fn(x, sigma)")
    check_real("lim", lim, "a number > 0", lambda v: v > 0)
    check_int("n", n, 2)
    # The mesh, its points, the scores and the four returned arrays, float32 and float64.
    check_memory("n", 64 * n**2, f"the {n} x {n} mesh is too large; give a smaller n")
    sigma_array = np.asarray(sigma)
    if sigma_array.ndim != 0 or sigma_array.dtype.kind not in "iuf":
        raise ValueError(f"sigma: expected one real noise level, got {sigma!r}")
    check_real("sigma", float(sigma_array), "a number >= 0", lambda v: v >= 0)
    axis = jnp.linspace(-lim, lim, n, dtype=jnp.float32)
    X, Y = jnp.meshgrid(axis, axis)
    points = jnp.stack([X.ravel(), Y.ravel()], axis=1)
    scores = _scores_at(score_fn, points, jnp.float32(sigma))
    if not isinstance(scores, jax.Array):  # a tuple had no .shape: an AttributeError
        raise TypeError(
            f"score_fn: returned {type(scores).__name__}; it must return one score array of "
            "shape (2,) for a point"
        )
    if scores.shape != (n * n, 2):
        raise ValueError(
            f"score_fn: returned shape {tuple(scores.shape[1:])} for a point of shape (2,); "
            "expected a score of shape (2,)"
        )
    U, V = (np.asarray(s).reshape(n, n) for s in (scores[:, 0], scores[:, 1]))
    return np.asarray(X), np.asarray(Y), U, V


# --- static figures ---------------------------------------------------------------------------


def _moving_average(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred moving average over ``window`` steps; returns (step positions, averages)."""
    steps = np.arange(1, len(values) + 1)
    if window <= 1:
        return steps, values
    averaged = np.convolve(values, np.ones(window) / window, mode="valid")
    return steps[(window - 1) // 2 : (window - 1) // 2 + len(averaged)], averaged


def _loss_ylim(values: np.ndarray, smooth: np.ndarray, ref: float | None):
    """A y range showing the descent and the plateau, not the first few huge losses: the
    moving average after its first 2%, the spread of the raw loss over the second half of
    training (1st-99th percentile) and the reference."""
    late = values[len(values) // 2 :]
    late = late[np.isfinite(late)]
    shown = [smooth[len(smooth) // 50 :]]
    if late.size:
        shown.append(np.quantile(late, [0.01, 0.99]))
    if ref is not None:
        shown.append(np.array([ref]))
    shown = np.concatenate(shown)
    shown = shown[np.isfinite(shown)]
    if shown.size == 0:
        return None, None
    lo, hi = shown.min(), shown.max()
    margin = 0.08 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1.0)
    return lo - margin, hi + margin


def loss_curves(
    histories: Mapping[str, np.ndarray],
    reference: Mapping[str, float] | None = None,
    *,
    window: int | None = None,
    log_x: bool = False,
    title: str = "Training loss",
    ylabel: str = "loss",
) -> Figure:
    """Loss against step, one panel per model (their losses live on different scales).

    Each panel shows the raw history faintly, a centred moving average on top and, when
    ``reference`` names the model, the exact score's loss as a dashed horizontal line. The
    y range leaves out the first 2% of steps, so a huge initial loss does not flatten the
    rest.

    Args:
        histories: model name -> ``(n_steps,)`` loss per step.
        reference: model name -> the loss of the exact score on the same objective.
        window: moving-average width; default ``max(1, n_steps // 50)``.
        log_x: logarithmic step axis (shows the fast early decrease).
        title, ylabel: figure title and y label.

    Raises:
        TypeError: if ``histories`` or ``reference`` is not a mapping, or a reference loss
            is not a real number.
        ValueError: for no histories, an empty or not 1-D history, or a ``window`` below 1
            or longer than a history.
    """
    check_mapping(
        "histories",
        histories,
        "a dict of model name -> loss history",
        remedy="wrap one history as {'model': losses}",
    )
    if not histories:
        raise ValueError("histories is empty: give at least one model's loss history")
    check_int("window", window, 1, optional=True)
    check_mapping("reference", reference, "a dict of model name -> exact loss", optional=True)
    reference = dict(reference or {})
    for name, ref in reference.items():
        if ref is not None and real_number(ref) is None:
            raise TypeError(
                f"reference[{name!r}]: expected a real number (the exact score's loss), got {ref!r}"
            )
    ncols = min(len(histories), 3)
    nrows = math.ceil(len(histories) / ncols)
    fig = _figure(figsize=(4.5 * ncols, 3.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, color, (name, history) in zip(
        axes, _series_colors(len(histories)), histories.items(), strict=False
    ):
        values = np.asarray(history, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(
                f"histories[{name!r}]: expected a 1-D loss history (n_steps,), got shape "
                f"{values.shape}"
            )
        if values.size == 0:
            raise ValueError(f"loss history {name!r} is empty")
        if window is not None and window > values.size:
            raise ValueError(
                f"window: {window} is more than the {values.size} steps of {name!r}; give a "
                f"window <= {values.size}"
            )
        width = window if window is not None else max(1, values.size // 50)
        steps = np.arange(1, values.size + 1)
        smooth_steps, smooth = _moving_average(values, width)
        if width > 1:
            ax.plot(steps, values, color=color, alpha=0.2, linewidth=0.5, label="per step")
            ax.plot(
                smooth_steps,
                smooth,
                color=color,
                linewidth=1.6,
                label=f"moving average ({width} steps)",
            )
        else:
            ax.plot(steps, values, color=color, linewidth=1.2, label="per step")
        ref = reference.get(name)
        if ref is not None:
            ax.axhline(
                ref, color="k", linestyle="--", linewidth=1.0, label=f"exact score: {ref:.4g}"
            )
        ax.set_ylim(*_loss_ylim(values, smooth, ref))
        if log_x:
            ax.set_xscale("log")
        ax.set_xlim(1, max(values.size, 2))  # one step: equal limits made a warning
        ax.set_title(str(name))
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _legend(ax, loc="upper right")
    for ax in axes[len(histories) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def score_field(
    field: Field,
    data=None,
    *,
    normalise: str | None = "unit",
    lim: float | None = None,
    title: str = "Score field",
) -> Figure:
    r"""Quiver plot of a score field over its mesh, with the data scattered underneath.

    Args:
        field: ``(X, Y, U, V)`` from :func:`mesh_score`.
        data: optional ``(n, 2)`` samples of the target.
        normalise: ``"unit"`` (directions, the default: raw scores grow like
            :math:`|x - \mu| / \sigma^2` and swamp the plot), ``"max"`` (relative lengths kept)
            or ``None`` (raw).
        lim: plot half-width; ``None`` takes the mesh extent.
        title: axes title.
    """
    field = _field(field)
    data = None if data is None else _points(data, "data")
    mesh_points = np.stack([field[0].ravel(), field[1].ravel()], axis=1)
    limits = _square_limits(mesh_points, lim, pad=0.0)
    fig = _figure(figsize=(_PANEL + 0.5, _PANEL + 0.3))
    ax = fig.add_subplot()
    _draw_scene(ax, data, field, limits, normalise)
    ax.set_title(title)
    if data is not None:
        _legend(ax, loc="upper right", markerscale=3)
    return fig


def _inference_times(n_sigmas: int, n_points: int) -> np.ndarray:
    """Times of a path over the grid: ``t_i = i / (N - 1)`` for ``sigma_i``, visited from
    ``t = 1`` down; a path of ``N - 1`` points starts after ``x_T``."""
    times = np.linspace(1.0, 0.0, n_sigmas)
    if n_points == n_sigmas:
        return times
    if n_points == n_sigmas - 1:
        return times[1:]
    raise ValueError(
        f"a trajectory over {n_sigmas} sigmas must have {n_sigmas} or {n_sigmas - 1} points; "
        f"got {n_points}"
    )


def _draw_inference_axes(
    ax: Axes, sigmas, center: float, n_std: float, title: str, extent: float
) -> None:
    times = np.linspace(0.0, 1.0, len(sigmas))
    ax.fill_between(
        times,
        center - n_std * sigmas,
        center + n_std * sigmas,
        color="tab:red",
        alpha=0.2,
        linewidth=0,
        label=rf"$x_0 \pm {n_std:g}\sigma_t$",
    )
    ax.axhline(center, color="tab:red", linewidth=0.8, alpha=0.6)
    ax.set_yscale("symlog", linthresh=max(float(sigmas[0]), 1e-3))
    bound = max(abs(center) + n_std * float(sigmas[-1]), extent)
    ax.set_ylim(-1.1 * bound, 1.1 * bound)
    ax.set_xlim(1.0, 0.0)  # sampling runs from t = 1 (sigma_max) to t = 0 (sigma_min)
    ax.set_xlabel(r"time $t$ ($\sigma_{\max}$ at 1, $\sigma_{\min}$ at 0)")
    ax.set_ylabel(r"$x_t$ (symlog)")
    ax.set_title(title)
    ax.grid(alpha=0.3)


def inference_trajectories(
    sigmas,
    trajectories: Mapping[str, np.ndarray],
    *,
    center: float = 0.0,
    n_std: float = 3.0,
    title: str = "Inference-process trajectories",
    path=None,
    fps: int = 10,
    dpi: int = 80,
) -> Figure:
    r"""1-D inference-process paths against time on a symlog axis, inside the
    :math:`x_0 \pm 3\sigma_t` band of :math:`q_{t|0}`.

    ``sigmas[i]`` sits at time :math:`t_i = i/(N-1)`; the paths run from :math:`t = 1` to
    :math:`t = 0`, i.e. over ``sigmas`` in descending order, as a sampler visits them.

    Args:
        sigmas: ``(N,)`` ascending grid (:func:`scorelab.noise.karras_sigmas`).
        trajectories: label -> ``(N,)`` path (``x_T`` first) or ``(N-1,)`` path (after each
            step, the tutorial's ``inference_process_sampling`` output).
        center: :math:`x_0`, the band's centre.
        n_std: band half-width in units of :math:`\sigma_t`.
        title: axes title.
        path: if given, also write an animation growing the paths step by step (``.gif`` or
            ``.mp4``) there.
        fps, dpi: animation frame rate and resolution (80 dpi keeps GIFs small).

    Returns:
        The static figure with the full paths.
    """
    sigmas = np.asarray(sigmas, dtype=np.float64).ravel()
    if sigmas.size < 2 or np.any(np.diff(sigmas) <= 0):
        raise ValueError("sigmas must be an ascending (N,) grid with N >= 2")
    if not trajectories:
        raise ValueError("trajectories is empty: give at least one label -> path")
    writer_factory = None if path is None else _animation_writer(path, fps, dpi)
    paths = {}
    for label, trajectory in trajectories.items():
        values = np.asarray(trajectory, dtype=np.float64).ravel()
        paths[label] = (_inference_times(sigmas.size, values.size), values)
    colors = _series_colors(len(paths))
    every_value = np.concatenate([values for _, values in paths.values()])
    finite = every_value[np.isfinite(every_value)]
    extent = float(np.max(np.abs(finite))) if finite.size else 0.0

    def draw(fig: Figure):
        ax = fig.add_subplot()
        _draw_inference_axes(ax, sigmas, center, n_std, title, extent)
        lines = [
            ax.plot(
                times,
                values,
                linestyle="--",
                marker="o",
                markersize=3,
                color=color,
                label=str(label),
            )[0]
            for color, (label, (times, values)) in zip(colors, paths.items(), strict=True)
        ]
        _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return lines

    fig = _figure(figsize=(7, 4.2))
    draw(fig)
    if path is not None:
        animation_fig = _figure(figsize=(7, 4.2), dpi=dpi)
        lines = draw(animation_fig)
        n_frames = max(values.size for _, values in paths.values())

        def update(k):
            for line, (times, values) in zip(lines, paths.values(), strict=True):
                line.set_data(times[: k + 1], values[: k + 1])

        _save_animation(animation_fig, update, list(range(n_frames)), path, writer_factory, fps)
    return fig


def ddim_samples(
    samples: Mapping[object, np.ndarray],
    data=None,
    *,
    lim: float | None = None,
    ncols: int | None = None,
    key_name: str | None = "eta",
    title: str = "DDIM samples",
) -> Figure:
    """One panel per sampler setting (e.g. per DDIM ``eta``): its samples over the data.

    Args:
        samples: label -> ``(n, 2)`` samples; numeric labels are shown as ``key_name = label``.
        data: optional ``(m, 2)`` reference samples drawn under each panel.
        lim: plot half-width; ``None`` derives one square for all panels from the data (else
            from all samples).
        ncols: panels per row; default all in one row up to 4.
        key_name: name printed before numeric labels.
        title: figure title.
    """
    if not samples:
        raise ValueError("samples is empty: give at least one label -> (n, 2) array")
    sets = {label: _points(x, f"samples[{label!r}]") for label, x in samples.items()}
    data = None if data is None else _points(data, "data")
    fallback = np.concatenate(list(sets.values()))
    limits = _square_limits(_scene_points(data, None, fallback), lim)
    ncols = ncols or min(len(sets), 4)
    nrows = math.ceil(len(sets) / ncols)
    fig = _figure(figsize=(3.6 * ncols, 3.7 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, color, (label, x) in zip(axes, _series_colors(len(sets)), sets.items(), strict=False):
        _draw_scene(ax, data, None, limits, None)
        ax.scatter(
            x[:, 0],
            x[:, 1],
            s=6,
            color=color,
            alpha=0.8,
            linewidths=0,
            label=f"samples (n={len(x)})",
        )
        ax.set_title(_format_label(label, key_name))
        # Below the panel: inside, it would cover the modes nearest a tight derived limit.
        _legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, markerscale=2)
    for ax in axes[len(sets) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def metric_vs_steps(
    results: Mapping[object, tuple[np.ndarray, np.ndarray]],
    floor: tuple[float, float] | None = None,
    *,
    ylabel: str = "sliced Wasserstein",
    xlabel: str = "N (number of steps)",
    key_name: str | None = "eta",
    log_y: bool = False,
    title: str | None = None,
) -> Figure:
    """A metric against the number of steps N, one line per setting, on a log N axis.

    Args:
        results: label (e.g. the DDIM ``eta``) -> ``(Ns, values)``, two equal-length 1-D arrays.
        floor: ``(mean, std)`` of the metric between two independent exact sample sets of the
            same size (:func:`scorelab.metrics.floor`), drawn as a band of one std.
        ylabel, xlabel: axis labels.
        key_name: name printed before numeric labels.
        log_y: logarithmic metric axis.
        title: axes title; default ``"<ylabel> against N"``.
    """
    if not results:
        raise ValueError("results is empty: give at least one label -> (Ns, values)")
    fig = _figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    all_ns = set()
    for color, (label, (ns, values)) in zip(
        _series_colors(len(results)), results.items(), strict=True
    ):
        ns, values = np.asarray(ns, dtype=np.float64), np.asarray(values, dtype=np.float64)
        if ns.shape != values.shape or ns.ndim != 1:
            raise ValueError(f"results[{label!r}]: Ns and values must be equal-length 1-D")
        all_ns.update(ns.tolist())
        ax.plot(
            ns,
            values,
            color=color,
            marker="o",
            markersize=4,
            linestyle="--",
            label=_format_label(label, key_name),
        )
    if floor is not None:
        mean, std = float(floor[0]), float(floor[1])
        ax.axhspan(
            mean - std,
            mean + std,
            color="0.5",
            alpha=0.3,
            linewidth=0,
            label=f"floor (exact vs exact): {mean:.3g} ± {std:.2g}",
        )
        ax.axhline(mean, color="0.3", linewidth=1.0)
    ax.set_xscale("log")
    ticks = sorted(all_ns)
    # Label the N actually run (e.g. 4, 9, ..., 100) rather than powers of ten.
    if len(ticks) <= 12:
        ax.set_xticks(ticks, [f"{n:g}" for n in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel[:1].upper()}{ylabel[1:]} against N")
    ax.grid(alpha=0.3, which="both")
    _legend(ax)
    return fig


PNG_SIDE_LIMIT = 2**31 - 1
"""The most pixels (bytes, for a row) a side of :func:`save_image_grid`'s PNG takes."""


def save_image_grid(
    images,
    path,
    *,
    ncols: int | None = None,
    scale: int = 1,
    label: str | None = None,
    row_labels: list[str] | None = None,
) -> Path:
    """Tile images into one PNG, pixel for pixel: row-major, black padding, no resampling.

    The grid has ``ceil(n / ncols)`` rows of ``ncols`` images; one-channel images are written
    as greyscale, and images of another channel count than grey (1), RGB (3) or RGBA (4) as
    their channels side by side, each in grey (the caption says so): a model trained on
    2-channel data could be sampled but not drawn. ``scale`` repeats every pixel ``scale``
    times along both axes (nearest neighbour, so small images stay exact), and ``label`` is
    written in white on a black strip above the grid (Pillow's default font), ``row_labels``
    on one left of the rows.

    Args:
        images: ``(n, H, W, C)``, or ``(n, H, W)`` grey; uint8, or
            floats in ``[0, 1]`` (checked to a rounding error, then written as
            ``round(255 v)``).
        path: the PNG file, ending ``.png`` (missing parent folders are created), or a binary
            file object (e.g. the handle of :func:`scorelab._files.atomic_write`).
        ncols: images per row, >= 1; default ``ceil(sqrt(n))``.
        scale: integer magnification, >= 1.
        label: a caption string, or ``None`` for none.
        row_labels: one string per row (e.g. its class), or ``None``.

    Returns:
        ``path`` (as a :class:`pathlib.Path` when it is a path).

    Raises:
        ValueError: for another shape, complex, NaN or inf values, float values outside
            ``[0, 1]``, ``scale < 1``, ``ncols < 1``, a grid larger than the memory or
            with a side beyond :data:`PNG_SIDE_LIMIT`,
            ``row_labels`` of another length than the rows, or a path not ending ``.png``.
        TypeError: for a ``label`` or ``row_labels`` that are not strings.
        IsADirectoryError: for a ``path`` that is a folder.
    """
    is_file = hasattr(path, "write")
    if not is_file:
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"path: {path} is a folder; give a file name ending .png")
        if path.suffix.lower() != ".png":
            raise ValueError(
                f"path: {path}: the grid is written as PNG; give a file name ending .png"
            )
    images = np.asarray(images)
    if np.iscomplexobj(images) or images.dtype.kind not in "biuf":
        raise ValueError(f"images: expected real pixel values, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or 0 in images.shape:
        raise ValueError(
            f"images must have shape (n, H, W, C) or (n, H, W), no axis empty; got {images.shape}"
        )
    if images.shape[-1] not in (1, 3, 4):
        n, height, width, channels = images.shape
        images = images.transpose(0, 1, 3, 2).reshape(n, height, channels * width, 1)
        label = f"{'images' if label is None else label} ({channels} channels side by side)"
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale: expected an integer >= 1, got {scale!r}")
    check_int("ncols", ncols, 1, optional=True)
    check_instance("label", label, str, "a string", optional=True)
    if row_labels is not None and (
        isinstance(row_labels, str) or not all(isinstance(t, str) for t in row_labels)
    ):
        raise TypeError(f"row_labels: expected a list of strings (one per row), got {row_labels!r}")
    n, height, width, channels = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"row_labels: expected {nrows} (one per row), got {len(row_labels)}")
    # Pillow's sides (and a row's bytes) are C ints: a wider grid was an OverflowError.
    grid_height, grid_width = nrows * height * scale, ncols * width * scale
    if max(grid_height, grid_width * channels) > PNG_SIDE_LIMIT:
        raise ValueError(
            f"ncols: a grid of {grid_height} x {grid_width} pixels is beyond Pillow's limit of "
            f"{PNG_SIDE_LIMIT} per side; give an ncols near sqrt(n) (at most n) or a smaller scale"
        )
    # The magnified images and the grid, as uint8.
    pixels = (n + nrows * ncols) * height * width * channels * scale**2
    check_memory(
        "scale", pixels, f"a grid of {pixels:.3g} bytes is too large; give a smaller scale or ncols"
    )
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        bad = np.flatnonzero(~np.isfinite(images).reshape(n, -1).all(axis=1))
        raise ValueError(
            f"images: {bad.size} image(s) hold NaN or inf (first at index {bad[0]}); drop or "
            "redraw them"
        )
    if images.dtype != np.uint8:
        images = images.astype(np.float64)
        if images.min() < -1e-3 or images.max() > 1 + 1e-3:
            raise ValueError(
                f"image values must lie in [0, 1]; got [{images.min():.3g}, {images.max():.3g}]"
            )
        images = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, height, width, channels = images.shape
    grid = np.zeros((nrows * height, ncols * width, channels), np.uint8)
    for i, image in enumerate(images):
        row, column = divmod(i, ncols)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    # Pillow (matplotlib's own PNG writer) as is: imsave would map one channel through a
    # colormap, stretching its contrast.
    picture = PIL.Image.fromarray(grid[..., 0] if channels == 1 else grid)
    if row_labels is not None:
        picture = _with_row_labels(picture, row_labels, height)
    if label:
        picture = _with_caption(picture, label)
    if is_file:
        picture.save(path, format="PNG")
        return path
    return atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


def _with_row_labels(picture: PIL.Image.Image, texts, row_height: int) -> PIL.Image.Image:
    """``picture`` right of a black strip with ``texts[i]`` in white beside row ``i``."""
    import PIL.ImageDraw

    draw = PIL.ImageDraw.Draw(PIL.Image.new("L", (1, 1)))
    boxes = [draw.textbbox((0, 0), text) for text in texts]
    margin = 3
    strip = max(right - left for left, _, right, _ in boxes) + 2 * margin
    canvas = PIL.Image.new(picture.mode, (picture.width + strip, picture.height))
    fill = 255 if picture.mode == "L" else (255,) * 3
    for row, (text, (left, top, _, bottom)) in enumerate(zip(texts, boxes)):
        y = row * row_height + (row_height - (bottom - top)) // 2 - top
        PIL.ImageDraw.Draw(canvas).text((margin - left, y), text, fill=fill)
    canvas.paste(picture, (strip, 0))
    return canvas


def _with_caption(picture: PIL.Image.Image, label: str) -> PIL.Image.Image:
    """``picture`` below a black strip with ``label`` in white, widened to fit the text."""
    import PIL.ImageDraw

    draw = PIL.ImageDraw.Draw(PIL.Image.new("L", (1, 1)))
    left, top, right, bottom = draw.textbbox((0, 0), label)
    margin = 3
    width = max(picture.width, right - left + 2 * margin)
    strip = bottom - top + 2 * margin
    canvas = PIL.Image.new(picture.mode, (width, picture.height + strip))
    PIL.ImageDraw.Draw(canvas).text(
        (margin - left, margin - top), label, fill=255 if picture.mode == "L" else (255,) * 3
    )
    canvas.paste(picture, (0, strip))
    return canvas


def save_figure(fig: Figure, path, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, e.g. ``.png``), tight bounding box.

    Args:
        fig: a figure returned by this module (or any matplotlib figure).
        path: output file, its suffix naming a format (``.png``, ``.pdf``, ``.svg``...);
            missing parent folders are created.
        dpi: resolution in dots per inch, > 0.

    Returns:
        ``path`` as a :class:`pathlib.Path`: the file written.

    Raises:
        TypeError: for a ``fig`` that is not a matplotlib figure.
        ValueError: for a ``path`` without a suffix matplotlib writes (matplotlib appended
            ``.png``, so the path returned was not the file written), or a ``dpi`` that is not
            a number > 0 or makes an image larger than the memory.
        IsADirectoryError: for a ``path`` that is a folder.
    """
    check_instance("fig", fig, Figure, "a matplotlib Figure")
    check_real("dpi", dpi, "a number > 0", lambda v: v > 0)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path: {path} is a folder; give a file name such as fig.png")
    formats = fig.canvas.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise ValueError(
            f"path: {path} does not end in a suffix matplotlib writes "
            f"({', '.join('.' + f for f in sorted(formats))}); give a name such as {path.stem}.png"
        )
    width, height = fig.get_size_inches() * dpi
    if max(width, height) >= 2**23:
        raise ValueError(
            f"dpi: {dpi!r} makes a {width:.3g} x {height:.3g} pixel image, beyond the 2**23 "
            "pixels per side matplotlib draws; give a smaller dpi"
        )
    check_memory("dpi", 4 * width * height, f"dpi = {dpi!r} makes too large an image; lower it")
    suffix = path.suffix.lower().lstrip(".")
    return atomic_write(
        path, lambda handle: fig.savefig(handle, format=suffix, dpi=dpi, bbox_inches="tight")
    )


# --- animations -------------------------------------------------------------------------------


def _chain_panels(trajectories, data, field, limits, normalise, dpi, line_style):
    """Two panels for animated chains: paths (left), current points (right), over the data
    and ``field``. Returns ``(fig, quivers, lines, points)``."""
    colors = _chain_colors(trajectories.shape[0])
    fig = _figure(figsize=(2 * _PANEL + 0.5, _PANEL + 0.6), dpi=dpi)
    path_ax, point_ax = fig.subplots(1, 2)
    quivers = []
    for ax, panel_title in ((path_ax, "paths"), (point_ax, "current samples")):
        quivers.append(_draw_scene(ax, data, field, limits, normalise))
        ax.set_title(panel_title)
    lines = [path_ax.plot([], [], color=c, **line_style)[0] for c in colors]
    points = point_ax.scatter(
        trajectories[:, 0, 0],
        trajectories[:, 0, 1],
        c=colors,
        s=30,
        edgecolors="k",
        linewidths=0.5,
        zorder=3,
    )
    return fig, quivers, lines, points


def animate_trajectories(
    trajectories,
    path,
    data=None,
    field: Field | None = None,
    *,
    frames: int | Sequence[int] | None = None,
    lim: float | None = None,
    normalise: str | None = "unit",
    fps: int = 10,
    dpi: int = 80,
    title: str = "Langevin chains",
) -> Path:
    """Animate sampler chains as in the tutorial: paths so far (left), current points (right),
    one rainbow colour per chain, over the data and the score field.

    Args:
        trajectories: ``(n_chains, n_steps, 2)``.
        path: output ``.gif`` (Pillow) or ``.mp4`` (ffmpeg).
        data: optional ``(n, 2)`` target samples.
        field: optional ``(X, Y, U, V)`` from :func:`mesh_score`.
        frames: number of frames spread over the steps (default ``min(n_steps, 50)``), or the
            step indices to show.
        lim: plot half-width; ``None`` derives it from the data, else the mesh, else the chains.
        normalise: arrow rescaling, see :func:`score_field`.
        fps, dpi: frames per second and resolution (80 dpi keeps GIFs small).
        title: figure title (the step is appended).

    Returns:
        ``path``.
    """
    writer_factory = _animation_writer(path, fps, dpi)
    trajectories = _chains(trajectories, "trajectories")
    data = None if data is None else _points(data, "data")
    field = None if field is None else _field(field)
    n_steps = trajectories.shape[1]
    indices = _frame_indices(frames, n_steps)
    limits = _square_limits(_scene_points(data, field, trajectories.reshape(-1, 2)), lim)
    fig, _, lines, points = _chain_panels(
        trajectories, data, field, limits, normalise, dpi, {"linewidth": 0.9, "alpha": 0.8}
    )

    def update(step):
        for line, chain in zip(lines, trajectories[:, : step + 1], strict=True):
            line.set_data(chain[:, 0], chain[:, 1])
        points.set_offsets(trajectories[:, step])
        fig.suptitle(f"{title}: step {step + 1} / {n_steps}")

    return _save_animation(fig, update, indices, path, writer_factory, fps)


def animate_noised_sequence(
    samples_per_sigma,
    sigmas,
    path,
    *,
    frames: int | Sequence[int] | None = None,
    lim: float | None = None,
    fps: int = 10,
    dpi: int = 80,
    title: str = r"Noised data $q_\sigma$",
) -> Path:
    r"""Animate samples of the noised sequence :math:`q_\sigma = q_0 * N(0, \sigma^2 I)`,
    one level per frame in the given order, with :math:`\sigma` in the title.

    The view follows the noise: every frame is a square around the least-noised level's
    centre, wide enough to hold all of that frame's points (padded by 10%) and never smaller
    than the least-noised view, so :math:`\sigma = 80` is not cropped to the data's box. The
    half-width is stated in each frame's title.

    Args:
        samples_per_sigma: ``(n_levels, n, 2)``, samples of :math:`q_{\sigma_i}` in row ``i``.
        sigmas: ``(n_levels,)``.
        path: output ``.gif`` or ``.mp4``.
        frames: number of frames spread over the levels (default ``min(n_levels, 50)``), or
            level indices.
        lim: the smallest view, the square :math:`[-lim, lim]^2`; ``None`` derives it from the
            least-noised level (the data), padded by 30%.
        fps, dpi: frames per second and resolution (80 dpi keeps GIFs small).
        title: title; ``sigma = ...`` and the view's half-width are appended.
    """
    writer_factory = _animation_writer(path, fps, dpi)
    samples = _chains(samples_per_sigma, "samples_per_sigma")
    sigmas = np.asarray(sigmas, dtype=np.float64).ravel()
    if sigmas.size != samples.shape[0]:
        raise ValueError(f"got {sigmas.size} sigmas for {samples.shape[0]} levels of samples")
    indices = _frame_indices(frames, sigmas.size)
    (x0, x1), (y0, y1) = _square_limits(samples[int(np.argmin(sigmas))], lim, pad=0.3)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    smallest = (x1 - x0) / 2

    def half_width(level: int) -> float:
        offsets = np.abs(samples[level] - centre)
        offsets = offsets[np.all(np.isfinite(offsets), axis=1)]
        return max(smallest, 1.1 * float(offsets.max())) if offsets.size else smallest

    widths = {level: half_width(level) for level in indices}
    fig = _figure(figsize=(_PANEL + 0.5, _PANEL + 0.5), dpi=dpi)
    ax = fig.add_subplot()
    _draw_scene(ax, None, None, ((x0, x1), (y0, y1)), None)
    scatter = ax.scatter(
        samples[0, :, 0], samples[0, :, 1], s=5, color="tab:blue", alpha=0.6, linewidths=0
    )

    def update(level):
        half = widths[level]
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        scatter.set_offsets(samples[level])
        ax.set_title(rf"{title},  $\sigma$ = {sigmas[level]:.3g} (view $\pm${half:.3g})")

    widest = max(indices, key=widths.__getitem__)
    return _save_animation(fig, update, indices, path, writer_factory, fps, widest)


def animate_annealed(
    trajectories,
    sigmas,
    fields: Sequence[Field],
    path,
    data=None,
    *,
    levels: int | Sequence[int] | None = None,
    tail: int | None = None,
    lim: float | None = None,
    normalise: str | None = "max",
    fps: int = 10,
    dpi: int = 80,
    title: str = "Annealed Langevin",
) -> Path:
    r"""Animate annealed-Langevin chains with the score field of the current noise level.

    The chains run ``n_steps_per_level`` steps at each :math:`\sigma`, from the largest to
    the smallest. One frame per shown level, drawn after that level's last step: the paths so
    far (left, optionally only the last ``tail`` steps) and the current points (right) over
    the field of that level, rescaled per level (``normalise="max"``, the tutorial's choice:
    the raw field grows like :math:`1/\sigma^2`). Frames are chosen in levels, not steps, so
    a list of level indices cannot be read as step indices (and stop early).

    Args:
        trajectories: ``(n_chains, n_levels * n_steps_per_level, 2)`` in sampling order.
        sigmas: ``(n_levels,)`` in either order; sampling visits them from largest to smallest.
        fields: ``n_levels`` fields ``(X, Y, U, V)`` from :func:`mesh_score`, ``fields[i]`` at
            ``sigmas[i]``.
        path: output ``.gif`` or ``.mp4``.
        data: optional ``(n, 2)`` target samples.
        levels: the levels shown, one frame each: a number of levels spread evenly from the
            first to the last (both included), or level indices in sampling order (``0`` is
            the largest sigma, ``n_levels - 1`` the smallest); default ``min(n_levels, 50)``.
        tail: number of most recent steps drawn in the path panel; ``None`` draws all.
        lim: plot half-width; ``None`` derives it from the data, else the mesh.
        normalise: arrow rescaling, see :func:`score_field`.
        fps, dpi: frames per second and resolution (80 dpi keeps GIFs small).
        title: figure title; the level and sigma are appended.
    """
    writer_factory = _animation_writer(path, fps, dpi)
    trajectories = _chains(trajectories, "trajectories")
    sigmas = np.asarray(sigmas, dtype=np.float64).ravel()
    if len(fields) != sigmas.size:
        raise ValueError(f"got {len(fields)} fields for {sigmas.size} sigmas")
    order = np.argsort(-sigmas, kind="stable")  # sampling order: largest sigma first
    sigmas = sigmas[order]
    fields = [_field(fields[i], f"fields[{i}]") for i in order]
    n_total = trajectories.shape[1]
    n_levels = sigmas.size
    if n_total % n_levels:
        raise ValueError(
            f"trajectories have {n_total} steps, not a multiple of the {n_levels} levels "
            "(expected n_levels * n_steps_per_level records, without the initial point)"
        )
    per_level = n_total // n_levels
    shown = _frame_indices(levels, n_levels, unit="level")
    indices = [(level + 1) * per_level - 1 for level in shown]  # each level's last step
    data = None if data is None else _points(data, "data")
    limits = _square_limits(_scene_points(data, fields[0], trajectories.reshape(-1, 2)), lim)
    fig, quivers, lines, points = _chain_panels(
        trajectories, data, fields[0], limits, normalise, dpi, {"linewidth": 0.8, "alpha": 0.6}
    )

    def update(step):
        level = step // per_level
        start = 0 if tail is None else max(0, step + 1 - tail)
        for line, chain in zip(lines, trajectories[:, start : step + 1], strict=True):
            line.set_data(chain[:, 0], chain[:, 1])
        points.set_offsets(trajectories[:, step])
        U, V = _normalise(fields[level][2], fields[level][3], normalise)
        for quiver in quivers:
            quiver.set_UVC(U, V)
        fig.suptitle(
            rf"{title}: level {level + 1} / {n_levels}, $\sigma$ = {sigmas[level]:.3g}, "
            f"step {step + 1} / {n_total}"
        )

    return _save_animation(fig, update, indices, path, writer_factory, fps)


_MAP_TITLES = {"sw": "sliced Wasserstein", "mmd2": "MMD²", "tv": "mode-weight TV"}
_MAX_TICKS = 6  # labelled ticks per axis: ~6 short labels fit a 4.5-inch panel side by side


def _tick_label(value: float) -> str:
    """A short tick label: plain digits for moderate magnitudes, else mathtext ``m x 10^k``."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:g}"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    mantissa = round(value / 10.0**exponent, 6)
    if abs(mantissa) == 1:
        return rf"${'-' if mantissa < 0 else ''}10^{{{exponent}}}$"
    return rf"${mantissa:g}\times10^{{{exponent}}}$"


def _log_ticks(lo: float, hi: float, max_ticks: int = _MAX_TICKS) -> list[float]:
    """At most ``max_ticks`` labelled ticks for a log axis over ``[lo, hi]``, ``0 < lo <= hi``.

    ``1, 2, 5 x 10^k`` if few enough fall inside, else ``1, 3 x 10^k``, else ``10^k`` (every
    few decades when there are many); linear "nice" steps when less than two fall inside.
    """
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))

    def inside(mantissas):
        values = (m * 10.0**k for k in range(k0, k1 + 1) for m in mantissas)
        return [v for v in values if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]

    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        ticks = inside(mantissas)
        if len(ticks) <= max_ticks:
            break
    else:
        ticks = ticks[:: math.ceil(len(ticks) / max_ticks)]
    if len(ticks) < 2:
        linear = MaxNLocator(nbins=3, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        ticks = [float(v) for v in linear if lo <= v <= hi] or [lo, hi]
    return sorted(set(ticks))


def _symlog_ticks(lo: float, hi: float, linthresh: float, per_side: int = 3) -> list[float]:
    """Labelled ticks for a symmetric-log axis over ``[lo, hi]``: ``0`` and decades.

    The decades ``±10^k`` lie outside the linear band ``[-linthresh, linthresh]`` (at most
    ``per_side`` each side), so no label crowds ``0`` inside the band; linear "nice" steps
    when the view reaches no decade beyond the band (it is then nearly linear).
    """

    def decades(top: float) -> list[float]:
        if top <= linthresh:
            return []
        first = math.ceil(math.log10(linthresh) - 1e-9)
        powers = [10.0**k for k in range(first, math.floor(math.log10(top) + 1e-9) + 1)]
        return powers[::-1][:: math.ceil(len(powers) / per_side)][::-1] if powers else []

    zero = [0.0] if lo <= 0 <= hi else []
    ticks = [-v for v in decades(-lo)[::-1]] + zero + decades(hi)
    if len(ticks) < 2:
        linear = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        ticks = [float(v) for v in linear if lo <= v <= hi]
    return ticks


def _padded_limits(ax: Axes, axis: str, values: np.ndarray, pad: float = 0.05):
    """Limits holding every value, padded by ``pad`` of the span in the axis's scale."""
    transform = (ax.xaxis if axis == "x" else ax.yaxis).get_transform()
    t = transform.transform(values.reshape(-1, 1)).ravel()
    lo, hi = t.min(), t.max()
    margin = pad * (hi - lo) if hi > lo else 0.5
    return tuple(transform.inverted().transform([[lo - margin], [hi + margin]]).ravel())


def _set_ticks(axis, ticks: list[float]) -> None:
    """Labelled major ticks at ``ticks`` only; minor ticks stay, unlabelled.

    Log axes spanning about a decade label their minor ticks (``3 x 10^1`` beside
    ``4 x 10^1``): those are the labels that overlapped.
    """
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FixedFormatter([_tick_label(v) for v in ticks]))
    axis.set_minor_formatter(NullFormatter())


def sampler_map(
    rows: Sequence[Mapping],
    floors: Mapping[str, tuple[float, float]],
    metric_names: Sequence[str] = ("sw", "mmd2", "tv"),
    factor: float = 1.5,
) -> Figure:
    """The sampler map: each metric against NFE, one colour per sampler, one panel per metric.

    Solid lines are the exact score, dashed ones any other score (a trained model); the grey
    band is the floor's mean ± sd (two exact sets, :func:`scorelab.metrics.floor`) and the
    dotted line ``factor`` x its mean (mean + ``factor`` sd for MMD²). NFE is on a log axis;
    SW and TV on log axes, MMD² (unbiased: near 0 and negative at the floor) on a
    symmetric-log axis, linear within one floor sd of 0. Every finite value is in view, and
    each axis labels at most six ticks (``1, 2, 5 x 10^k`` or decades).

    Args:
        rows: seed-averaged rows (:func:`scorelab.sweep.mean_rows`): ``sampler``, ``score``,
            ``nfe`` and one value per metric name.
        floors: metric -> ``(mean, sd)``.
        metric_names: the panels, among ``sw``, ``mmd2``, ``tv``.
        factor: the tolerance drawn above the floor.
    """
    if not rows:
        raise ValueError("rows is empty: run scorelab.sweep.sweep first")
    for index, row in enumerate(rows):
        check_mapping(f"rows[{index}]", row, "a dict")
        missing = [f for f in ("sampler", "score", "nfe", *metric_names) if f not in row]
        if missing:
            raise ValueError(
                f"rows[{index}]: missing {', '.join(missing)}; give the rows of "
                "scorelab.sweep.mean_rows"
            )
        nfe = row["nfe"]
        if not (isinstance(nfe, numbers.Real) and math.isfinite(nfe) and nfe >= 1):
            raise ValueError(f"rows[{index}]: nfe must be a number >= 1 (a log axis), got {nfe!r}")
    missing = [name for name in metric_names if name not in floors]
    if missing:
        raise ValueError(f"floors: no floor for {', '.join(missing)}; give metric -> (mean, sd)")
    labels = list(dict.fromkeys(row["sampler"] for row in rows))
    colors = dict(zip(labels, _series_colors(len(labels))))
    # Colour and marker together tell apart more samplers than the 9 colours alone: 7 markers
    # against 9 colours (coprime), so no pair repeats before 63 samplers.
    markers = {label: "osD^vPX"[i % 7] for i, label in enumerate(labels)}
    nfe_all = np.array([float(row["nfe"]) for row in rows])
    nfe_all = nfe_all[np.isfinite(nfe_all) & (nfe_all > 0)]
    fig = _figure(figsize=(_PANEL * len(metric_names), 4.2))
    for index, name in enumerate(metric_names):
        ax = fig.add_subplot(1, len(metric_names), index + 1)
        series: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for row in rows:
            series.setdefault((row["sampler"], row["score"]), []).append(
                (float(row["nfe"]), float(row[name]))
            )
        curves = []
        for (label, score), points in series.items():
            nfe, values = np.asarray(sorted(points)).T
            ax.plot(
                nfe,
                values,
                color=colors[label],
                marker=markers[label],
                markersize=4,
                linestyle="-" if score == "exact" else "--",
                label=label if score == "exact" else f"{label} ({score})",
            )
            curves.append(values)
        curves = np.concatenate(curves)
        curves = curves[np.isfinite(curves)]
        mean, sd = (float(v) for v in floors[name])
        ax.axhspan(mean - sd, mean + sd, color="0.5", alpha=0.3, linewidth=0, label="floor")
        bound = mean + factor * sd if name == "mmd2" else factor * mean
        ax.axhline(bound, color="0.3", linestyle=":", linewidth=1, label=f"{factor:g}x floor")
        shown = np.concatenate([curves, [mean - sd, mean + sd, bound]])
        shown = shown[np.isfinite(shown)]
        # Log where every value is positive; else (MMD², or a zero TV) symmetric log, linear
        # within one floor sd (at least a millionth of the largest value, so that a tiny sd
        # does not spread the panel over a dozen empty decades).
        positive = name != "mmd2" and bool(np.all(curves > 0))
        if positive:
            shown = shown[shown > 0]  # a band reaching below 0 is cut, not the curves
            ax.set_yscale("log")
        else:
            peak = float(np.max(np.abs(shown))) if shown.size else 1.0
            linthresh = max(abs(sd), 1e-6 * peak) or 1.0  # all zero: any band will do
            ax.set_yscale("symlog", linthresh=linthresh)
        if shown.size:
            ax.set_ylim(*_padded_limits(ax, "y", shown))
        lo, hi = ax.get_ylim()
        _set_ticks(ax.yaxis, _log_ticks(lo, hi) if positive else _symlog_ticks(lo, hi, linthresh))
        ax.set_xscale("log")
        if nfe_all.size:
            ax.set_xlim(*_padded_limits(ax, "x", nfe_all))
            _set_ticks(ax.xaxis, _log_ticks(*ax.get_xlim()))
        ax.set_xlabel("NFE (score evaluations per sample)")
        ax.set_title(_MAP_TITLES.get(name, name) + ("" if positive else " (symlog)"))
        ax.grid(alpha=0.3, which="major")
        if index == len(metric_names) - 1:
            _legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def score_error_profile(profiles: Mapping[str, tuple], title: str | None = None) -> Figure:
    r"""The relative score error :math:`e(\sigma)` against :math:`\sigma`, log-log, one line per
    model, each with its band of :math:`\pm 2` standard errors.

    Args:
        profiles: model name -> ``(sigmas (L,), relative_error (L,), standard_error (L,))``
            (:class:`scorelab.score_error.ScoreErrorProfile`'s fields).
        title: the figure title; default "Relative score error per noise level".
    """
    check_mapping(
        "profiles", profiles, "a dict of model name -> (sigmas, relative_error, standard_error)"
    )
    if not profiles:
        raise ValueError("profiles is empty: give at least one model's profile")
    for name, profile in profiles.items():
        sizes = [np.size(v) for v in profile] if isinstance(profile, Sequence) else []
        if len(sizes) != 3 or len(set(sizes)) != 1 or sizes[0] == 0:
            raise ValueError(
                f"profiles[{name!r}]: expected (sigmas, relative_error, standard_error) of one "
                f"length L >= 1, got {'sizes ' + str(sizes) if sizes else type(profile).__name__}"
            )
    fig = _figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for color, (name, (sigmas, error, se)) in zip(
        _series_colors(len(profiles)), profiles.items(), strict=False
    ):
        sigmas, error, se = (np.asarray(v, dtype=np.float64).ravel() for v in (sigmas, error, se))
        order = np.argsort(sigmas)
        sigmas, error, se = sigmas[order], error[order], se[order]
        ax.plot(sigmas, error, color=color, marker="o", markersize=3, label=name)
        # A band reaching to or below 0 is cut at a tenth of the value: a log axis cannot show 0.
        low = np.maximum(error - 2 * se, 0.1 * error)
        ax.fill_between(sigmas, low, error + 2 * se, color=color, alpha=0.25, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("noise level sigma")
    ax.set_ylabel("E|s_model - s|^2 / E|s|^2")
    ax.set_title(title or "Relative score error per noise level")
    ax.grid(alpha=0.3, which="major")
    _legend(ax, loc="best")
    return fig
