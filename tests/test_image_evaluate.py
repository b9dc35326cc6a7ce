"""``scorelab evaluate --data digits``, its floors and its input checks; sweep's image metrics."""

import json
import re

import numpy as np
import pytest

from scorelab.cli import main
from scorelab.config import ConfigError
from scorelab.data import DataError, digits
from scorelab.workflows import evaluate_image_sets, evaluate_images, evaluate_samples


@pytest.mark.slow  # about 11 s of a worker: kept out of the default suite's 15 minutes
def test_held_out_images_score_their_floor_and_training_copies_are_flagged():
    """With the held-out split as samples (m = 40 of them), every two-set measure sits within
    4 sd of its floor; training images as samples have memorisation ratio exactly 0."""
    held_out, _ = digits("test")
    report = evaluate_images(held_out[:40], floor_repeats=4)
    row = report.rows[0]
    for name in ("fd", "kid", "precision", "recall", "class_tv"):
        mean, sd = report.floors[name]
        assert abs(row[name] - mean) <= 4 * sd, (name, row[name], mean, sd)
    train, _ = digits("train")
    assert evaluate_images(train[:40], floor_repeats=2).rows[0]["memo"] == 0.0


def test_sets_measured_together_get_their_numbers_alone_and_one_floor():
    """The floor computed once for several sets is the floor each set's own evaluation
    computes, and each row is the one it gets alone, bit for bit (equality, not closeness)."""
    held_out, _ = digits("test")
    train, _ = digits("train")
    noisy = np.clip(
        held_out[:40] + 0.3 * np.random.default_rng(0).standard_normal((40, 1, 8, 8)), -1, 1
    )
    sets = {"held out": held_out[:40], "training copies": train[:40], "noisy": noisy}
    together = evaluate_image_sets(sets, floor_repeats=3, seed=1)
    assert [row["method"] for row in together.rows] == list(sets)
    for (label, samples), row in zip(sets.items(), together.rows, strict=True):
        alone = evaluate_images(samples, floor_repeats=3, seed=1, label=label)
        assert alone.rows == [row]
        assert alone.floors == together.floors
    # the sets differ, so a row that ignored its own set would be caught above
    assert len({row["fd"] for row in together.rows}) == 3


def test_sets_of_different_sizes_are_refused_naming_the_sizes():
    held_out, _ = digits("test")
    with pytest.raises(DataError, match="one shape"):
        evaluate_image_sets({"a": held_out[:40], "b": held_out[:30]})
    with pytest.raises(DataError, match="no sample set"):
        evaluate_image_sets({})


def test_evaluate_digits_prints_the_floors_and_writes_json(tmp_path, capsys):
    held_out, _ = digits("test")
    np.save(tmp_path / "s.npy", held_out[:30].reshape(30, 64))
    out = tmp_path / "m.json"
    argv = ["evaluate", str(tmp_path / "s.npy"), "--data", "digits", "--floor-repeats", "2"]
    assert main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "floor fd:" in text and "recall" in text
    saved = json.loads(out.read_text())
    assert set(saved["floors"]) == {
        "fd", "kid", "precision", "recall", "class_tv", "top_prob", "memo"
    }  # fmt: skip
    assert saved["rows"][0]["n"] == 30


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((10, 8, 8)), "expected digit images of shape"),
        (np.zeros((10, 1, 12, 12)), "expected digit images of shape"),
        (np.full((10, 64), np.nan), "NaN or inf"),
        (np.zeros((0, 64)), "no images"),
        (np.full((10, 64), 255.0), "beyond \\[-1, 1\\]"),
        (np.zeros((5, 64)), "at least 8 images"),
    ],
)
def test_bad_images_end_in_one_line_and_status_2(tmp_path, capsys, array, message):
    np.save(tmp_path / "s.npy", array)
    assert main(["evaluate", str(tmp_path / "s.npy"), "--data", "digits"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert re.search(message, error), error


@pytest.mark.slow  # two classifier evaluations with their floors, about 15 s of a worker
def test_evaluate_samples_measures_the_digits_by_their_classifier():
    """``evaluate_samples(data="digits")`` is ``evaluate_images``'s report, bit for bit (the
    command line's routing, which the library refused: one place now)."""
    samples = digits("test")[0][:20]
    routed = evaluate_samples(samples, data="digits", floor_repeats=2, seed=3, progress=False)
    direct = evaluate_images(samples, floor_repeats=2, seed=3, progress=False)
    assert routed.rows == direct.rows and routed.floors == direct.floors
    assert "fd" in routed.rows[0]


def test_evaluate_samples_refuses_what_built_in_images_do_not_read():
    """A noise level, layout, pixel range or .npz key beside the digits is refused by field,
    before anything is measured: nothing there reads it."""
    samples = digits("test")[0][:20]
    for field, value in (
        ("sigma", 0.1),
        ("layout", "NHWC"),
        ("pixel_range", "0-1"),
        ("array", "x"),
    ):
        with pytest.raises(ConfigError, match=f"^{field}: .*; leave it out$"):
            evaluate_samples(samples, data="digits", floor_repeats=2, **{field: value})


def test_sigma_with_digits_is_refused(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.zeros((10, 64)))
    argv = ["evaluate", str(tmp_path / "s.npy"), "--data", "digits", "--sigma", "0.1"]
    assert main(argv) == 2
    assert "--sigma" in capsys.readouterr().err


def test_sweep_image_metrics_need_an_image_target(mixture):
    from scorelab.models import ExactScore
    from scorelab.sweep import sweep, sweep_sampler

    with pytest.raises(ValueError, match="8x8 or 16x16 images"):
        sweep(
            mixture,
            [sweep_sampler("euler")],
            [3],
            {"exact": ExactScore(mixture)},
            n_samples=20,
            seeds=(0,),
            floor_repeats=2,
            image_metrics=True,
        )


def test_sweep_adds_image_metrics_and_their_floors_on_digits_mixture():
    """Euler at 40 NFE with the exact score on the 64-D mixture: every image row and floor is
    present, and fewest_nfe reads fd and kid."""
    from scorelab.models import ExactScore
    from scorelab.sweep import IMAGE_METRICS, fewest_nfe, sweep, sweep_sampler
    from scorelab.targets import digits_mixture

    target = digits_mixture()
    result = sweep(
        target,
        [sweep_sampler("euler")],
        [40],
        {"exact": ExactScore(target)},
        n_samples=60,
        seeds=(0,),
        floor_repeats=2,
        image_metrics=True,
    )
    assert set(IMAGE_METRICS) <= set(result.rows[0]) and set(IMAGE_METRICS) <= set(result.floors)
    assert set(fewest_nfe(result, "kid")) == {("euler", "exact")}
    with pytest.raises(ValueError, match="unknown metric"):
        fewest_nfe(result, "recall")


@pytest.mark.slow  # about 11 s of a worker: kept out of the default suite's 15 minutes
def test_sweep_cli_takes_image_metrics_from_the_flag_over_the_toml(tmp_path, capsys):
    """--image-metrics turns them on; --no-image-metrics overrides the TOML's true."""
    base = ["sweep", "--target", "digits_mixture", "--samplers", "euler", "--nfe", "10"]
    base += ["--n", "30", "--seeds", "0", "--quiet"]
    assert main([*base, "--image-metrics", "--out", str(tmp_path / "on")]) == 0
    assert "floor fd:" in capsys.readouterr().out
    config = tmp_path / "sweep.toml"
    config.write_text("[sweep]\nimage_metrics = true\n")
    off = [*base, "--config", str(config), "--no-image-metrics", "--out", str(tmp_path / "off")]
    assert main(off) == 0
    assert "floor fd:" not in capsys.readouterr().out
    saved = json.loads((tmp_path / "off" / "sweep.json").read_text())
    assert "fd" not in saved["floors"] and "fd" not in saved["rows"][0]


def test_sweep_cli_takes_image_metrics_from_the_toml(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text(
        '[sweep]\ntarget = "digits_mixture"\nsamplers = ["euler"]\nnfe = [10]\n'
        "n_samples = 30\nseeds = [0]\nimage_metrics = true\n"
    )
    out = tmp_path / "map"
    assert main(["sweep", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    assert "floor fd:" in capsys.readouterr().out
    saved = json.loads((out / "sweep.json").read_text())
    assert {"fd", "kid", "recall"} <= set(saved["floors"])
