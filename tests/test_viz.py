"""scorelab.viz: the tutorial's figures from plain arrays, and the mesh score they plot."""

import re

import matplotlib.animation
import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.quiver import Quiver
from PIL import Image

from scorelab import viz
from scorelab.models import ExactScore
from scorelab.noise import karras_sigmas


def _saved_png(fig, tmp_path, name="fig.png"):
    """Save ``fig`` and return the decoded image size, checking the file is a real PNG."""
    path = viz.save_figure(fig, tmp_path / name, dpi=40)
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def _pixels(path):
    """The RGB pixels of a PNG file, ``(H, W, 3)`` uint8."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _gif_frames(path):
    with Image.open(path) as image:
        assert image.format == "GIF"
        return image.n_frames


def _numpy_mixture_score(target, x, sigma):
    """Independent transcription of the VE-noised mixture score in float64:
    sum_k r_k(x) (mu_k - x) / (c_k + sigma^2) for isotropic components c_k I."""
    means = np.asarray(target.means, dtype=np.float64)
    variances = np.asarray(target.covariances, dtype=np.float64)[:, 0, 0] + sigma**2
    weights = np.asarray(target.weights, dtype=np.float64)
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    log_r = np.log(weights) - np.log(variances) - sq / (2 * variances)
    log_r -= log_r.max(axis=1, keepdims=True)
    r = np.exp(log_r)
    r /= r.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkd->nd", r / variances, means[None] - x[:, None, :])


# --- mesh_score ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_mesh_score_points_to_nearest_mode(mixture, sigma):
    # lim 15 with 16 points puts the mesh on the odd integers; X varies along columns.
    X, Y, U, V = viz.mesh_score(ExactScore(mixture), lim=15.0, n=16, sigma=sigma)
    assert X.shape == Y.shape == U.shape == V.shape == (16, 16)
    np.testing.assert_allclose(X[0], np.arange(-15, 16, 2), atol=1e-5)
    np.testing.assert_allclose(Y[:, 0], np.arange(-15, 16, 2), atol=1e-5)
    # Each point is within sqrt(10) of one mode and >= sqrt(50) from all others, so the other
    # modes' responsibilities are below exp(-(50 - 10) / (2 * 1.1)) ~ 1e-8 and the score is
    # that of the nearest component alone: (mu - x) / (0.1 + sigma^2).
    for point, mode in [((1, 3), (0, 0)), ((-9, -9), (-10, -10)), ((11, 13), (10, 10))]:
        i, j = (point[1] + 15) // 2, (point[0] + 15) // 2
        expected = (np.array(mode) - np.array([X[i, j], Y[i, j]])) / (0.1 + sigma**2)
        np.testing.assert_allclose([U[i, j], V[i, j]], expected, rtol=1e-4)


def test_mesh_score_matches_numpy_transcription(mixture):
    sigma = 1.0
    X, Y, U, V = viz.mesh_score(ExactScore(mixture), lim=15.0, n=16, sigma=sigma)
    expected = _numpy_mixture_score(mixture, np.stack([X.ravel(), Y.ravel()], 1), sigma)
    # float32 logits of size <= |x - mu|^2 / (2 * 1.1) ~ 200 carry absolute error ~ 200 * 1e-7
    # in the responsibilities, i.e. ~2e-5 relative on scores of size ~20: 1e-3 is ample.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(U.ravel(), expected[:, 0], atol=1e-3 * scale)
    np.testing.assert_allclose(V.ravel(), expected[:, 1], atol=1e-3 * scale)


# --- static figures -----------------------------------------------------------------------------


def test_loss_curves_panels_reference_and_axes(tmp_path):
    rng = np.random.default_rng(0)
    steps = np.arange(300)
    histories = {"dsm": 1.0 + np.exp(-steps / 30) + 0.1 * rng.standard_normal(300), "hyv": -steps}
    fig = viz.loss_curves(histories, {"dsm": 1.0}, log_x=True, title="Loss")
    dsm, hyv = fig.axes[:2]
    assert fig.get_suptitle() == "Loss"
    assert [dsm.get_title(), hyv.get_title()] == ["dsm", "hyv"]
    assert dsm.get_xlabel() == "step" and dsm.get_ylabel() == "loss"
    assert dsm.get_xscale() == "log"
    dashed = [line for line in dsm.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 1.0)
    assert not [line for line in hyv.get_lines() if line.get_linestyle() == "--"]
    # The y range keeps the reference and the plateau in view.
    low, high = dsm.get_ylim()
    assert low < 1.0 < high and high < 2.0
    assert _saved_png(fig, tmp_path)[0] > 0


def test_score_field_limits_and_normalisation(mixture, tmp_path):
    field = viz.mesh_score(ExactScore(mixture), lim=12.0, n=16)
    data = np.random.default_rng(7).uniform(-10, 10, size=(50, 2))
    fig = viz.score_field(field, data, title="exact score")
    ax = fig.axes[0]
    assert ax.get_title() == "exact score"
    assert ax.get_xlim() == (-12.0, 12.0) and ax.get_ylim() == (-12.0, 12.0)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$x_1$", "$x_2$")
    quiver = next(c for c in ax.collections if isinstance(c, Quiver))
    moving = np.hypot(field[2], field[3]).ravel() > 0  # a zero score has no direction
    np.testing.assert_allclose(np.hypot(quiver.U, quiver.V)[moving], 1.0, rtol=1e-6)
    assert _saved_png(fig, tmp_path)[0] > 0

    fig = viz.score_field(field, lim=15.0, normalise="max")
    ax = fig.axes[0]
    assert ax.get_xlim() == (-15.0, 15.0)
    quiver = ax.collections[0]
    assert np.isclose(np.hypot(quiver.U, quiver.V).max(), 1.0)


def test_inference_trajectories_axes_band_and_time_map(tmp_path):
    sigmas = np.asarray(karras_sigmas(6))
    paths = {"e = 1": np.linspace(8.0, 0.1, 5), "with x_T": np.linspace(40.0, 0.0, 6)}
    fig = viz.inference_trajectories(sigmas, paths, path=tmp_path / "inf.gif", dpi=30)
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog"
    assert ax.get_xlim() == (1.0, 0.0)
    assert ax.get_title() and "time" in ax.get_xlabel()
    # The y range covers the 3 sigma_max = 30 band and the path starting outside it, at 40.
    low, high = ax.get_ylim()
    assert low <= -30.0 and high >= 40.0
    assert any(isinstance(c, PolyCollection) for c in ax.collections)
    lines = {line.get_label(): line for line in ax.get_lines()}
    # sigma_i sits at t_i = i / (N - 1): an (N-1,) path starts one step after t = 1.
    np.testing.assert_allclose(lines["e = 1"].get_xdata(), np.linspace(1, 0, 6)[1:])
    np.testing.assert_allclose(lines["with x_T"].get_xdata(), np.linspace(1, 0, 6))
    assert {"e = 1", "with x_T"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    assert _gif_frames(tmp_path / "inf.gif") == 6
    assert _saved_png(fig, tmp_path)[0] > 0

    with pytest.raises(ValueError, match="ascending"):
        viz.inference_trajectories(sigmas[::-1], paths)
    with pytest.raises(ValueError, match="6 or 5 points"):
        viz.inference_trajectories(sigmas, {"bad": np.zeros(3)})


def test_ddim_samples_panels_and_derived_limits(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.uniform([0.0, 5.0], [2.0, 6.0], size=(100, 2))
    samples = {0.0: data + 0.1, 0.5: data, "exact": data}
    fig = viz.ddim_samples(samples, data)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["eta = 0", "eta = 0.5", "exact"]
    for ax in visible:
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        # Derived from the data: a square box containing every data point.
        assert x0 <= data[:, 0].min() and data[:, 0].max() <= x1
        assert y0 <= data[:, 1].min() and data[:, 1].max() <= y1
        assert np.isclose(x1 - x0, y1 - y0)
    assert _saved_png(fig, tmp_path)[0] > 0
    fig = viz.ddim_samples(samples, data, lim=15.0)
    assert fig.axes[0].get_xlim() == (-15.0, 15.0)


def test_metric_vs_steps_log_axis_and_floor(tmp_path):
    ns = np.array([4, 9, 16, 25])
    results = {0.0: (ns, 1.0 / ns), 1.0: (ns, 0.5 / ns)}
    fig = viz.metric_vs_steps(results, floor=(0.02, 0.005), ylabel="sliced Wasserstein")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "sliced Wasserstein" and "N" in ax.get_xlabel()
    assert ax.get_title() == "Sliced Wasserstein against N"
    np.testing.assert_allclose(ax.get_xticks(), ns)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["eta = 0", "eta = 1"] and labels[2].startswith("floor")
    assert _saved_png(fig, tmp_path)[0] > 0


def _map_rows(nfes, curves):
    """Sweep rows: ``curves`` maps (sampler, score) -> metric -> one value per NFE."""
    return [
        {"sampler": sampler, "score": score, "nfe": nfe, **{m: v[i] for m, v in values.items()}}
        for (sampler, score), values in curves.items()
        for i, nfe in enumerate(nfes)
    ]


def _wide_map_rows():
    """Like the NCSN sampler map: 9 samplers x 2 scores, NFE 5...160 and an adaptive 73.5,
    values over several decades, a diverged run and negative unbiased MMD² at the floor."""
    rng = np.random.default_rng(9)
    nfes = [5, 10, 20, 40, 80, 160]
    curves = {}
    for i in range(9):
        for score in ("exact", "model"):
            decay = np.geomspace(1.0, 1e-2, 6) * (1 + i)
            curves[(f"sampler{i}", score)] = {
                "sw": 0.6 + 80 * decay * rng.uniform(0.5, 1.5, 6),
                "mmd2": 0.05 * decay**2 + rng.normal(0, 3e-4, 6),
                "tv": 0.018 + 0.5 * decay * rng.uniform(0.5, 1.0, 6),
            }
    curves[("sampler0", "exact")]["sw"][0] = 3e4  # a diverged run
    rows = _map_rows(nfes, curves)
    rows.append({"sampler": "tsit5", "score": "exact", "nfe": 73.5, "sw": 0.9, "mmd2": -2e-4})
    rows[-1]["tv"] = 0.025
    return rows


def _narrow_map_rows():
    """NFE 10...80 and TV within [0.021, 0.029]: log axes spanning about a decade, where
    matplotlib labels the minor ticks (3 x 10^1 beside 4 x 10^1); MMD² within its floor."""
    nfes = [10, 20, 40, 80]
    curves = {
        (f"s{i}", "exact"): {
            "sw": np.linspace(1.4, 1.1, 4) + 0.02 * i,
            "mmd2": np.linspace(2e-5, -1e-5, 4) * (i + 1),
            "tv": np.linspace(0.029, 0.021, 4) + 0.001 * (i % 2),
        }
        for i in range(3)
    }
    return _map_rows(nfes, curves)


def _drawn_tick_labels(fig):
    """The tick labels drawn inside each axis's view, major and minor, with their boxes."""
    renderer = fig.canvas.get_renderer()
    drawn = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for locs, get_ticks in (
                (axis.get_majorticklocs(), axis.get_major_ticks),
                (axis.get_minorticklocs(), axis.get_minor_ticks),
            ):
                for loc, tick in zip(locs, get_ticks(len(locs)), strict=True):
                    label = tick.label1
                    if lo <= loc <= hi and label.get_visible() and label.get_text():
                        drawn.append((label.get_text(), label.get_window_extent(renderer)))
    return drawn


@pytest.mark.parametrize("rows_fn", [_wide_map_rows, _narrow_map_rows])
def test_sampler_map_tick_labels_do_not_overlap(tmp_path, rows_fn):
    floors = {"sw": (0.78, 0.12), "mmd2": (8.7e-6, 1.9e-4), "tv": (0.027, 0.0038)}
    fig = viz.sampler_map(rows_fn(), floors)
    fig.canvas.draw()
    labels = _drawn_tick_labels(fig)
    for i, (text_a, box_a) in enumerate(labels):
        for text_b, box_b in labels[i + 1 :]:
            width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            assert width <= 0 or height <= 0, f"tick labels {text_a!r} and {text_b!r} overlap"
    for ax in fig.axes:  # few labels, but enough to read the scale
        assert 2 <= len([t for t in ax.get_xticklabels() if t.get_text()]) <= 6
        assert 2 <= len([t for t in ax.get_yticklabels() if t.get_text()]) <= 6
    assert _saved_png(fig, tmp_path)[0] > 0


@pytest.mark.parametrize("rows_fn", [_wide_map_rows, _narrow_map_rows])
def test_sampler_map_every_point_in_view(rows_fn):
    floors = {"sw": (0.78, 0.12), "mmd2": (8.7e-6, 1.9e-4), "tv": (0.027, 0.0038)}
    rows = rows_fn()
    fig = viz.sampler_map(rows, floors)
    for ax, name in zip(fig.axes, ("sw", "mmd2", "tv"), strict=True):
        y0, y1 = ax.get_ylim()
        x0, x1 = ax.get_xlim()
        curves = [line for line in ax.get_lines() if "floor" not in line.get_label()]
        assert len(curves) == len({(row["sampler"], row["score"]) for row in rows})
        drawn = np.concatenate([line.get_ydata() for line in curves])
        # Every value of the rows is drawn, and every drawn point is inside the panel.
        np.testing.assert_allclose(np.sort(drawn), np.sort([row[name] for row in rows]))
        assert np.all((y0 <= drawn) & (drawn <= y1)), (name, (y0, y1), drawn.min(), drawn.max())
        nfe = np.concatenate([line.get_xdata() for line in curves])
        assert np.all((x0 <= nfe) & (nfe <= x1))
    mmd = fig.axes[1]
    assert mmd.get_yscale() == "symlog" and mmd.get_ylim()[0] < 0  # negative MMD² shown
    assert fig.axes[0].get_yscale() == fig.axes[2].get_yscale() == "log"


def test_image_grid_is_pixel_exact(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    grid = _pixels(viz.save_image_grid(images, tmp_path / "nested/dir/g.png"))  # 2 x 2, padded
    assert grid.shape == (8, 10, 3)
    np.testing.assert_array_equal(grid[4:, :5], images[2])
    np.testing.assert_array_equal(grid[:4, 5:], images[1])
    assert not grid[4:, 5:].any()
    floats = np.random.default_rng(2).uniform(size=(5, 8, 8, 3))
    grid = _pixels(viz.save_image_grid(floats, tmp_path / "f.png", ncols=5))
    np.testing.assert_array_equal(grid[:, :8], np.round(floats[0] * 255))
    grey = images[..., 0]  # (n, H, W): one channel, written as greyscale
    with Image.open(viz.save_image_grid(grey, tmp_path / "grey.png", ncols=3)) as image:
        np.testing.assert_array_equal(np.asarray(image.convert("L")), np.hstack(list(grey)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.save_image_grid(2.0 * floats, tmp_path / "bad.png")
    # Two channels (neither grey, RGB nor RGBA): side by side, each in grey.
    with Image.open(viz.save_image_grid(images[..., :2], tmp_path / "two.png", ncols=3)) as image:
        strips = [np.hstack([image[..., 0], image[..., 1]]) for image in images]
        np.testing.assert_array_equal(np.asarray(image)[-4:, :30], np.hstack(strips))
    with pytest.raises(ValueError, match="shape"):
        viz.save_image_grid(floats[:, :0], tmp_path / "bad.png")


def test_save_figure(tmp_path):
    fig = viz.loss_curves({"model": np.linspace(2.0, 1.0, 20)})
    width, height = _saved_png(fig, tmp_path, "nested/dir/curves.png")
    assert width > 0 and height > 0


# --- animations ---------------------------------------------------------------------------------


def test_animate_trajectories_frame_counts(tmp_path):
    trajectories = np.cumsum(np.random.default_rng(3).normal(size=(3, 10, 2)), axis=1)
    data = np.random.default_rng(4).normal(size=(30, 2))
    path = viz.animate_trajectories(trajectories, tmp_path / "ula.gif", data=data, frames=4, dpi=30)
    assert path.stat().st_size > 0 and _gif_frames(path) == 4
    path = viz.animate_trajectories(
        trajectories, tmp_path / "b.gif", frames=[0, 5, 9], lim=15, dpi=30
    )
    assert _gif_frames(path) == 3
    with pytest.raises(ValueError, match="frame indices"):
        viz.animate_trajectories(trajectories, tmp_path / "c.gif", frames=[10])


def _record_frames(monkeypatch):
    """Snapshots of the figure at each GIF frame: suptitle, and per axes its limits, title,
    scatter offsets and line data, taken just before the frame is written."""
    frames = []
    grab_frame = matplotlib.animation.PillowWriter.grab_frame

    def recording_grab_frame(self, **kwargs):
        axes = [
            {
                "xlim": ax.get_xlim(),
                "ylim": ax.get_ylim(),
                "title": ax.get_title(),
                "offsets": [
                    np.array(c.get_offsets())
                    for c in ax.collections
                    if isinstance(c, PathCollection)
                ],
                "lines": [np.asarray(line.get_xydata()) for line in ax.get_lines()],
            }
            for ax in self.fig.axes
        ]
        frames.append({"suptitle": self.fig.get_suptitle(), "axes": axes})
        return grab_frame(self, **kwargs)

    monkeypatch.setattr(matplotlib.animation.PillowWriter, "grab_frame", recording_grab_frame)
    return frames


def test_animate_noised_sequence_one_frame_per_level(tmp_path):
    sigmas = np.array([0.1, 1.0, 5.0])
    samples = sigmas[:, None, None] * np.random.default_rng(5).normal(size=(3, 40, 2))
    path = viz.animate_noised_sequence(samples, sigmas, tmp_path / "q.gif", dpi=30)
    assert _gif_frames(path) == 3
    with pytest.raises(ValueError, match="2 sigmas for 3 levels"):
        viz.animate_noised_sequence(samples, sigmas[:2], tmp_path / "q.gif")


def test_animate_noised_sequence_keeps_points_in_view(monkeypatch, tmp_path):
    # The tutorial's nine modes (spacing 10, sd ~0.3) noised up to EDM's sigma_max = 80: a view
    # fixed on the data (about +-13) would keep ~1% of the sigma = 80 points.
    rng = np.random.default_rng(8)
    modes = np.stack(np.meshgrid([-10.0, 0.0, 10.0], [-10.0, 0.0, 10.0]), -1).reshape(9, 2)
    data = modes[rng.integers(0, 9, 2000)] + 0.3 * rng.normal(size=(2000, 2))
    sigmas = np.array([80.0, 10.0, 1.0, 0.02])  # in sampling order
    samples = data + sigmas[:, None, None] * rng.normal(size=(4, 2000, 2))
    frames = _record_frames(monkeypatch)
    viz.animate_noised_sequence(samples, sigmas, tmp_path / "q.gif", dpi=30)
    assert len(frames) == 4
    for frame, x, sigma in zip(frames, samples, sigmas, strict=True):
        ax = frame["axes"][0]
        (x0, x1), (y0, y1) = ax["xlim"], ax["ylim"]
        np.testing.assert_array_equal(ax["offsets"][0], x)  # the level drawn is this frame's
        inside = (x0 <= x[:, 0]) & (x[:, 0] <= x1) & (y0 <= x[:, 1]) & (x[:, 1] <= y1)
        assert inside.mean() >= 0.99, (sigma, inside.mean(), ax["xlim"])
        assert f"{sigma:.3g}" in ax["title"] and "view" in ax["title"]
    # The view grows with the noise and is the data's (padded) box at the smallest sigma.
    half = [np.diff(frame["axes"][0]["xlim"])[0] / 2 for frame in frames]
    assert half == sorted(half, reverse=True)
    assert 10.3 < half[-1] < 15.0 and half[0] > 3 * 80.0


def _annealed_inputs(mixture, n_levels, per_level, n_chains=2):
    """Ascending sigmas, their fields, and trajectories whose every record is distinct."""
    sigmas = np.geomspace(0.1, 10.0, n_levels)
    field = viz.mesh_score(ExactScore(mixture), lim=15.0, n=8, sigma=1.0)
    steps = n_levels * per_level
    trajectories = np.arange(n_chains * steps * 2, dtype=float).reshape(n_chains, steps, 2)
    return sigmas, [field] * n_levels, trajectories


def test_animate_annealed_frames_and_level_check(mixture, tmp_path):
    sigmas, fields, trajectories = _annealed_inputs(mixture, 3, 2)  # 3 levels x 2 steps
    path = viz.animate_annealed(trajectories, sigmas, fields, tmp_path / "a.gif", tail=3, dpi=30)
    assert _gif_frames(path) == 3  # default: the last step of each level
    path = viz.animate_annealed(trajectories, sigmas, fields, tmp_path / "b.gif", levels=2, dpi=30)
    assert _gif_frames(path) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        viz.animate_annealed(trajectories[:, :5], sigmas, fields, tmp_path / "c.gif")
    with pytest.raises(ValueError, match=r"level indices must lie in \[0, 2\]"):
        viz.animate_annealed(trajectories, sigmas, fields, tmp_path / "d.gif", levels=[3])
    # Frames are chosen in levels: the former step-index keyword is refused, not misread.
    with pytest.raises(TypeError, match="frames"):
        viz.animate_annealed(trajectories, sigmas, fields, tmp_path / "e.gif", frames=[0, 2])


@pytest.mark.parametrize("levels", [None, 4, list(range(0, 10, 3))])
def test_animate_annealed_last_frame_is_the_last_level(mixture, monkeypatch, tmp_path, levels):
    # The demo's bug: level indices read as step indices stopped the GIF at level 20 of 100.
    n_levels, per_level = 10, 5
    sigmas, fields, trajectories = _annealed_inputs(mixture, n_levels, per_level)
    frames = _record_frames(monkeypatch)
    viz.animate_annealed(trajectories, sigmas, fields, tmp_path / "a.gif", levels=levels, dpi=30)
    shown = [0, 3, 6, 9] if levels is not None else list(range(n_levels))
    assert len(frames) == len(shown)
    for frame, level in zip(frames, shown, strict=True):
        step = (level + 1) * per_level - 1  # the level's last step
        paths, points = frame["axes"]
        np.testing.assert_array_equal(points["offsets"][0], trajectories[:, step])
        np.testing.assert_array_equal(paths["lines"][0][-1], trajectories[0, step])
        assert f"level {level + 1} / {n_levels}" in frame["suptitle"]
        assert f"step {step + 1} / {n_levels * per_level}" in frame["suptitle"]
    assert f"level {n_levels} / {n_levels}" in frames[-1]["suptitle"]
    np.testing.assert_array_equal(frames[-1]["axes"][1]["offsets"][0], trajectories[:, -1])


def test_mp4_without_ffmpeg_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(matplotlib.animation.writers, "is_available", lambda name: False)
    trajectories = np.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="MP4 needs ffmpeg"):
        viz.animate_trajectories(trajectories, tmp_path / "ula.mp4")
    assert not (tmp_path / "ula.mp4").exists()
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        viz.animate_trajectories(trajectories, tmp_path / "ula.avi")


# --- hostile input: clear one-line errors naming the argument, no warnings ---------------------


def test_save_figure_returns_the_file_written_and_refuses_folders_and_bare_names(tmp_path):
    fig = viz.loss_curves({"model": np.linspace(2.0, 1.0, 20)})
    with pytest.raises(ValueError, match="^path: .* does not end in a suffix matplotlib writes"):
        viz.save_figure(fig, tmp_path / "s4")  # matplotlib wrote s4.png, the path returned s4
    assert not (tmp_path / "s4.png").exists()
    with pytest.raises(IsADirectoryError, match="^path: .* is a folder"):
        viz.save_figure(fig, tmp_path)  # wrote <folder>.png
    with pytest.raises(TypeError, match="^fig: expected a matplotlib Figure"):
        viz.save_figure(None, tmp_path / "x.png")
    for dpi in (float("nan"), 0, -5):
        with pytest.raises(ValueError, match="^dpi: "):
            viz.save_figure(fig, tmp_path / "x.png", dpi=dpi)
    with pytest.raises(ValueError, match="^dpi: "):
        viz.save_figure(fig, tmp_path / "x.png", dpi=10**6)  # std::bad_alloc
    path = viz.save_figure(fig, tmp_path / "f.pdf", dpi=40)
    assert path.is_file() and path.read_bytes().startswith(b"%PDF")


_GRID = np.random.default_rng(0).uniform(size=(5, 8, 8, 1))


@pytest.mark.parametrize(
    ("images", "name", "options", "error", "argument"),
    [
        (np.full((2, 4, 4, 1), np.nan), "nan.png", {}, ValueError, "images"),
        (_GRID + 0j, "i.png", {}, ValueError, "images"),
        (_GRID, "b.png", {"ncols": 0}, ValueError, "ncols"),
        (_GRID, "c.png", {"ncols": -1}, ValueError, "ncols"),
        (_GRID, "d.png", {"ncols": 2.5}, ValueError, "ncols"),
        (_GRID, "x.jpg", {}, ValueError, "path"),
        (_GRID, "noext", {}, ValueError, "path"),
        (_GRID, "f.png", {"scale": 10**6}, ValueError, "scale"),
        (_GRID, "e.png", {"ncols": 10**9}, ValueError, "ncols"),  # wider than a PNG
        (_GRID, "m.png", {"label": 5}, TypeError, "label"),
        (_GRID, "l2.png", {"ncols": 5, "row_labels": [1]}, TypeError, "row_labels"),
    ],
    ids=[
        "nan", "complex", "ncols0", "ncols-1", "ncols-float", "jpg", "no-suffix", "scale-huge",
        "ncols-huge", "label-int", "row-labels-int",
    ],
)  # fmt: skip
def test_save_image_grid_refuses(tmp_path, images, name, options, error, argument):
    with pytest.raises(error, match=f"^{re.escape(argument)}: "):
        viz.save_image_grid(images, tmp_path / name, **options)
    assert not (tmp_path / name).exists()


def test_save_image_grid_refuses_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="^path: "):
        viz.save_image_grid(_GRID, tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n": 10**7}, "n"),
        ({"n": 0}, "n"),
        ({"lim": float("nan")}, "lim"),
        ({"lim": -2.0}, "lim"),
        ({"sigma": [1.0, 2.0]}, "sigma"),
        ({"score_fn": lambda x, s: x[:1]}, "score_fn"),
    ],
    ids=["n-huge", "n0", "lim-nan", "lim-negative", "sigma-vector", "score-shape"],
)
def test_mesh_score_refuses(kwargs, argument):
    arguments = {"score_fn": lambda x, s: -x, "lim": 2.0, "n": 5, **kwargs}
    with pytest.raises(ValueError, match=f"^{argument}: "):
        viz.mesh_score(arguments.pop("score_fn"), **arguments)


_ROW = {"sampler": "a", "score": "exact", "nfe": 0, "sw": 0.1, "mmd2": 0.1, "tv": 0.1}
_FLOORS = {"sw": (0.1, 0.01), "mmd2": (0.0, 0.01), "tv": (0.1, 0.01)}


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda p: viz.loss_curves([1, 2, 3]), TypeError, "histories"),
        (lambda p: viz.loss_curves({"a": np.ones(50)}, window=10**9), ValueError, "window"),
        (lambda p: viz.loss_curves({"a": np.ones(50)}, window=0), ValueError, "window"),
        (lambda p: viz.loss_curves({"a": np.zeros((5, 5))}), ValueError, "histories['a']"),
        (
            lambda p: viz.score_error_profile(
                {"a": (np.array([0.1, 1.0]), np.array([0.1]), np.array([0.01, 0.01]))}
            ),
            ValueError,
            "profiles['a']",
        ),
        (
            lambda p: viz.score_error_profile({"a": (np.array([0.1, 1.0]), np.array([0.1, 0.2]))}),
            ValueError,
            "profiles['a']",
        ),
        (lambda p: viz.score_error_profile([1]), TypeError, "profiles"),
        (lambda p: viz.sampler_map([{"sampler": "a"}], {}), ValueError, "rows[0]"),
        (lambda p: viz.sampler_map([_ROW], _FLOORS), ValueError, "rows[0]"),
        (lambda p: viz.sampler_map([{**_ROW, "nfe": 4}], {}), ValueError, "floors"),
        (lambda p: viz.animate_trajectories(_TR, p / "t0.gif", fps=0), ValueError, "fps"),
        (lambda p: viz.animate_trajectories(_TR, p / "t1.gif", fps=-5), ValueError, "fps"),
        (lambda p: viz.animate_trajectories(_TR, p / "t2.gif", dpi=0), ValueError, "dpi"),
        (
            lambda p: viz.animate_trajectories(np.zeros((0, 3, 2)), p / "t3.gif"),
            ValueError,
            "trajectories",
        ),
        (
            lambda p: viz.animate_trajectories(np.full((4, 3, 2), np.nan), p / "t4.gif"),
            ValueError,
            "trajectories",
        ),
    ],
    ids=[
        "histories-list", "window-huge", "window0", "history-2d", "profile-lengths",
        "profile-pair", "profiles-list", "row-missing", "nfe0", "floors-missing", "fps0",
        "fps-negative", "dpi0", "no-chains", "nan-chains",
    ],
)  # fmt: skip
def test_figures_refuse(tmp_path, call, error, argument):
    with pytest.raises(error, match=f"^{re.escape(argument)}[: ]") as info:
        call(tmp_path)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


_TR = np.random.default_rng(0).normal(size=(4, 3, 2))


# --- argument checks named by argument ------------------------------------------------------------


def test_mesh_score_refuses_a_score_fn_that_is_not_a_callable_of_one_array():
    with pytest.raises(TypeError, match=r"^score_fn: expected a callable score_fn\(x, sigma\)"):
        viz.mesh_score(3, n=4)
    with pytest.raises(TypeError, match=r"^score_fn: returned tuple; it must return one score"):
        viz.mesh_score(lambda x, s: (x, x), n=4)


def test_save_image_grid_refuses_a_grid_wider_than_a_png(tmp_path):
    with pytest.raises(ValueError, match=r"^ncols: a grid of 4 x 4000000000 pixels is beyond"):
        viz.save_image_grid(np.zeros((2, 4, 4)), tmp_path / "g.png", ncols=10**9)
    assert not (tmp_path / "g.png").exists()


def test_loss_curves_refuses_a_reference_that_is_not_a_number():
    message = r"^reference\['a'\]: expected a real number \(the exact score's loss\), got 'x'"
    with pytest.raises(TypeError, match=message):
        viz.loss_curves({"a": np.arange(10.0)}, reference={"a": "x"})
    with pytest.raises(TypeError, match=r"^reference: expected None or a dict"):
        viz.loss_curves({"a": np.arange(10.0)}, reference=[1.0])
