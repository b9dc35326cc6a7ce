"""scorelab.viz: the tutorial's figures from plain arrays, and the mesh score they plot."""

import matplotlib.animation
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
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
    with pytest.raises(ValueError, match="shape"):
        viz.save_image_grid(floats[..., :2], tmp_path / "bad.png")


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


def test_animate_noised_sequence_one_frame_per_level(tmp_path):
    sigmas = np.array([0.1, 1.0, 5.0])
    samples = sigmas[:, None, None] * np.random.default_rng(5).normal(size=(3, 40, 2))
    path = viz.animate_noised_sequence(samples, sigmas, tmp_path / "q.gif", dpi=30)
    assert _gif_frames(path) == 3
    with pytest.raises(ValueError, match="2 sigmas for 3 levels"):
        viz.animate_noised_sequence(samples, sigmas[:2], tmp_path / "q.gif")


def test_animate_annealed_frames_and_level_check(mixture, tmp_path):
    sigmas = np.array([0.1, 1.0, 5.0])  # ascending: sampling visits 5, 1, 0.1
    fields = [viz.mesh_score(ExactScore(mixture), lim=15.0, n=16, sigma=s) for s in sigmas]
    trajectories = np.random.default_rng(6).normal(size=(2, 6, 2))  # 3 levels x 2 steps
    path = viz.animate_annealed(trajectories, sigmas, fields, tmp_path / "a.gif", tail=3, dpi=30)
    assert _gif_frames(path) == 3  # default: the last step of each level
    path = viz.animate_annealed(trajectories, sigmas, fields, tmp_path / "b.gif", frames=6, dpi=30)
    assert _gif_frames(path) == 6
    with pytest.raises(ValueError, match="not a multiple"):
        viz.animate_annealed(trajectories[:, :5], sigmas, fields, tmp_path / "c.gif")


def test_mp4_without_ffmpeg_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(matplotlib.animation.writers, "is_available", lambda name: False)
    trajectories = np.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="MP4 needs ffmpeg"):
        viz.animate_trajectories(trajectories, tmp_path / "ula.mp4")
    assert not (tmp_path / "ula.mp4").exists()
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        viz.animate_trajectories(trajectories, tmp_path / "ula.avi")
