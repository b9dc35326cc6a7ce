"""Hostile inputs to the library API of the jobs (fuzz11 items 21-34): ``scorelab.report``,
``scorelab.workflows``, ``scorelab.runs``, ``scorelab.sweep`` and the demos' settings.

Each test is one defect: bad input is refused up front with one message naming the argument,
and good input gives the numbers it gave before.
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest

from scorelab import runs
from scorelab.builders import make_target
from scorelab.classifier import DigitsClassifier
from scorelab.config import ConfigError, ExperimentConfig
from scorelab.data import DataError
from scorelab.demo import DemoSettings
from scorelab.image_demo import ImageDemoSettings
from scorelab.report import Report, floors, format_table, image_evaluation, measure
from scorelab.sweep import SweepSettings, run_sweep, sweep_settings
from scorelab.targets import GaussianMixture
from scorelab.training import TrainConfig
from scorelab.workflows import (
    evaluate_image_sets,
    evaluate_images,
    evaluate_samples,
    likelihood_points,
    plot_run,
    sample_run,
    save_sample_grid,
    train_run,
)


def raises(error, message: str):
    return pytest.raises(error, match=re.escape(message))


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    return rng.standard_normal((50, 2)), rng.standard_normal((60, 2))


@pytest.fixture(scope="module")
def gm():
    means = np.array([[0.0, 0.0], [3.0, 3.0]])
    return GaussianMixture(means, np.stack([np.eye(2)] * 2) * 0.5, np.array([0.5, 0.5]))


# --- 21: measure -----------------------------------------------------------------------------


def test_measure_refuses_non_numeric_samples_with_the_metrics_message(points):
    _, y = points
    with raises(ValueError, "x: expected real numbers, got dtype object"):
        measure(np.array([[None, 1]] * 5), y)
    with raises(ValueError, "x: expected real numbers, got dtype <U3"):
        measure("abc", y)


def test_measure_refuses_ksd_without_a_target(points):
    x, y = points
    with raises(ValueError, "ksd: needs target"):
        measure(x, y, n_projections=10, ksd=True)


def test_measure_refuses_traced_samples(points):
    x, y = points
    with raises(TypeError, "x: a traced array"):
        jax.jit(lambda a: measure(a, y, n_projections=10)["sw"])(x)


def test_measure_keeps_nan_rows_for_diverged_samples(points):
    x, y = points
    row = measure(np.full_like(x, np.nan), y, n_projections=10)
    assert np.isnan(row["sw"]) and np.isnan(row["mmd2"])


# --- 22: image_evaluation and floors -------------------------------------------------------------


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return (
        rng.random((12, 1, 8, 8)).astype(np.float32),
        rng.random((10, 1, 8, 8)).astype(np.float32),
        DigitsClassifier(jax.random.key(0)),
    )


@pytest.mark.parametrize("repeats", [2.0, float("inf"), True, "2"])
def test_image_evaluation_refuses_repeats_that_are_not_integers(images, repeats):
    imgs, held, clf = images
    with raises(ValueError, "repeats: expected an integer >= 2"):
        image_evaluation([imgs], imgs, held, clf, jax.random.key(0), repeats)


def test_image_evaluation_names_train_and_held_out(images):
    imgs, held, clf = images
    key = jax.random.key(0)
    with raises(ValueError, "train: 3 training images; every repeat draws 10"):
        image_evaluation([imgs], imgs[:3], held, clf, key, 2)
    for size in (0, 1):
        with raises(ValueError, "held_out: need at least 8 held-out images"):
            image_evaluation([imgs], imgs, held[:size], clf, key, 2)
    with raises(ValueError, "sets, train, held_out: images of different shapes"):
        image_evaluation([imgs], imgs.reshape(12, 64), held, clf, key, 2)
    with raises(TypeError, "sets: expected a list of sample arrays, got ndarray"):
        image_evaluation(imgs, imgs, held, clf, key, 2)


def test_image_evaluation_and_floors_refuse_seeds_as_keys(images, gm):
    imgs, held, clf = images
    with raises(TypeError, "key: expected a PRNG key"):
        image_evaluation([imgs], imgs, held, clf, 0, 2)
    with raises(TypeError, "key: expected a PRNG key"):
        floors(["sw"], gm.sample, 0, 20, 2)


def test_floors_refuses_a_bare_name_and_a_non_callable_sampler(gm):
    key = jax.random.key(0)
    with raises(TypeError, "names: expected a list of metric names, got 'sw'"):
        floors("sw", gm.sample, key, 20, 2)
    with raises(TypeError, "sample_fn: expected a callable sample_fn(key, n) -> samples"):
        floors(["sw"], None, key, 20, 2)
    with raises(ValueError, "n: expected an integer >= 2, got 1.5"):
        floors(["sw"], gm.sample, key, 1.5, 2)


def test_floors_take_legacy_keys_with_the_same_numbers(gm):
    typed = floors(["sw"], gm.sample, jax.random.key(3), 20, 2, n_projections=10)
    legacy = floors(["sw"], gm.sample, jax.random.PRNGKey(3), 20, 2, n_projections=10)
    assert typed == legacy


# --- 23: format_table and Report ---------------------------------------------------------------


def test_format_table_shows_numpy_nan_as_missing():
    table = format_table([{"sw": np.float32("nan"), "tv": float("nan"), "mmd2": np.float64(1)}])
    assert "nan" not in table
    assert table.splitlines()[2].split()[:2] == ["-", "-"]


def test_format_table_refuses_non_numeric_cells_and_non_dict_rows():
    with raises(TypeError, "rows[0]['sw']: expected a real number, got 'abc'"):
        format_table([{"sw": "abc"}])
    with raises(TypeError, "rows[0]: expected a dict of column -> value, got list"):
        format_table([[1, 2]])
    with raises(TypeError, "rows: expected a list of dicts, got dict"):
        format_table({"sw": 1.0})


def test_format_table_formats_numpy_values_as_before():
    row = {"method": "m", "nfe": 5, "sw": np.float32(0.12345), "mmd2": np.float64(1.5e-3)}
    assert format_table([row]).splitlines()[2].split() == ["m", "5", "0.123", "1.50e-03"]


def test_report_refuses_bare_floors_and_string_notes():
    with raises(TypeError, "floors['sw']: expected a (mean, sd) pair, got 1.0"):
        Report([{"sw": 1.0}], {"sw": 1.0}).text()
    with raises(TypeError, "notes: expected a list of lines, got 'ab'"):
        Report([{"sw": 1.0}], {"sw": (1.0, 0.1)}, "ab").text()
    with raises(TypeError, "notes: expected a list of lines"):
        Report([{"sw": 1.0}], {"sw": (1.0, 0.1)}, "ab").to_dict()
    text = Report([{"sw": 1.0}], {"sw": [np.float32(1.0), 0.1]}, ("ab",)).text()
    assert text.splitlines()[-2:] == ["floor sw: 1 +- 0.1", "ab"]


# --- 24: sample_run ---------------------------------------------------------------------------


def test_sample_run_takes_numpy_integers_with_the_same_samples():
    config = ExperimentConfig()
    plain = sample_run(config, None, 4, 0, batch=2)
    numpy = sample_run(config, None, np.int64(4), np.uint32(0), batch=np.int32(2))
    np.testing.assert_array_equal(plain.x, numpy.x)


@pytest.mark.parametrize("config", [{"sampler": {}}, None])
def test_sample_run_refuses_a_config_that_is_not_an_experiment_config(config):
    with raises(TypeError, "config: expected an ExperimentConfig"):
        sample_run(config, None, 4, 0)


def test_sample_run_refuses_a_trajectory_flag_that_is_not_a_bool():
    with raises(TypeError, "trajectory: expected True or False, got 'no'"):
        sample_run(ExperimentConfig(), None, 4, 0, trajectory="no")


# --- 25: evaluate_samples ---------------------------------------------------------------------


def test_evaluate_samples_refuses_both_references_and_neither():
    x = np.random.default_rng(0).standard_normal((20, 2))
    data = np.random.default_rng(1).standard_normal((50, 2))
    with raises(ConfigError, "target and data: give one reference, not both"):
        evaluate_samples(x, target="seed_mixture", data=data, floor_repeats=2, progress=False)
    with raises(ConfigError, "target, data: no reference; give target (seed_mixture"):
        evaluate_samples(x, floor_repeats=2, progress=False)


# --- 26: save_sample_grid ---------------------------------------------------------------------


def test_save_sample_grid_refuses_labels_that_do_not_group_the_samples(tmp_path):
    imgs = np.zeros((4, 1, 8, 8))
    with raises(ConfigError, "labels: the grid draws one row per class"):
        save_sample_grid(imgs, tmp_path / "a.png", labels=np.array([0, 1, 0, 1]))
    with raises(ConfigError, "labels: the grid draws one row per class"):
        save_sample_grid(imgs, tmp_path / "a.png", labels=np.array([0, 0, 0, 1]))
    with raises(ConfigError, "labels: expected one class per sample, shape (4,), got shape (3,)"):
        save_sample_grid(imgs, tmp_path / "a.png", labels=np.array([0, 0, 1]))
    assert not (tmp_path / "a.png").exists()
    assert save_sample_grid(imgs, tmp_path / "b.png", labels=np.array([5, 5, 2, 2])).is_file()


def test_save_sample_grid_refuses_a_path_that_is_not_a_png_file(tmp_path):
    imgs = np.zeros((4, 1, 8, 8))
    with raises(ConfigError, "the grid is written as PNG; give a file name ending .png"):
        save_sample_grid(imgs, tmp_path / "g.jpg")
    with raises(ConfigError, f"path: {tmp_path} is a folder"):
        save_sample_grid(imgs, tmp_path)
    assert not (tmp_path / "g.jpg").exists()


def test_save_sample_grid_refuses_empty_images(tmp_path):
    with raises(ConfigError, "samples: shape (2, 1, 0, 8) has an empty axis"):
        save_sample_grid(np.zeros((2, 1, 0, 8)), tmp_path / "g.png")


# --- 27: named_key ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**32, -1, 2**64, "3", 1.5, True])
def test_named_key_refuses_seeds_outside_32_bits(seed):
    with raises(ValueError, "seed: expected an integer seed in [0, 2**32 - 1]"):
        runs.named_key(seed, "a")


def test_named_key_refuses_a_name_that_is_not_a_string():
    with raises(TypeError, "name: expected a string naming the draw, got int"):
        runs.named_key(0, 5)


def test_named_key_draws_are_unchanged():
    expected = jax.random.fold_in(jax.random.key(7), 0xE8B7BE43)  # crc32(b"a")
    np.testing.assert_array_equal(
        jax.random.key_data(runs.named_key(7, "a")), jax.random.key_data(expected)
    )
    np.testing.assert_array_equal(
        jax.random.key_data(runs.named_key(np.uint32(7), "a")), jax.random.key_data(expected)
    )


# --- 28, 29: train_run ------------------------------------------------------------------------


@pytest.fixture
def tiny():
    # no EMA: an average over 1000 steps of a 3-step run is a warning (an error in the tests)
    return ExperimentConfig.from_dict({"train": {"steps": 3, "batch_size": 16, "ema_decay": None}})


def test_train_run_refuses_data_of_another_shape_than_the_config(tiny, tmp_path):
    with raises(ConfigError, "data: examples of shape 3 (as the model takes them), but config"):
        train_run(tiny, tmp_path / "run", progress=False, data=np.zeros((10, 3), np.float32))
    assert not (tmp_path / "run").exists()


def test_train_run_refuses_data_and_config_of_the_wrong_type(tiny, tmp_path):
    with raises(TypeError, "data: expected an array (n, d) or (n, C, H, W), got list"):
        train_run(tiny, tmp_path / "run", progress=False, data=[[1.0, 2.0]] * 10)
    with raises(TypeError, "config: expected an ExperimentConfig"):
        train_run({"train": {"steps": 3}}, tmp_path / "run", progress=False)
    bad = np.zeros((10, 2), np.float32)
    bad[3] = np.nan
    with pytest.raises(DataError, match="data"):
        train_run(tiny, tmp_path / "run", progress=False, data=bad)
    assert not (tmp_path / "run").exists()  # refused before the folder was claimed


def test_train_run_refuses_a_manifest_field_that_is_not_json_before_training(tiny, tmp_path):
    with raises(TypeError, "extra: a manifest field must be JSON-serialisable"):
        train_run(tiny, tmp_path / "run", progress=False, extra=object())
    assert not (tmp_path / "run").exists()


def test_train_run_warns_before_training_on_fewer_examples_than_dimensions(tiny, tmp_path):
    """One point, or points saved column-wise, trained with exit 0 and not a word: a (2, 500)
    file of 500 points trained as 2 points of 500 dimensions (session 35)."""
    expected = r"^data: 1 example\(s\) of 2 dimensions, fewer examples than dimensions: .*array.T"
    with pytest.warns(UserWarning, match=expected):
        train_run(tiny, tmp_path / "one", progress=False, data=np.ones((1, 2), np.float32))
    assert (tmp_path / "one" / "model.eqx").is_file()  # a warning: the run goes on
    train_run(tiny, tmp_path / "two", progress=False, data=np.eye(2, dtype=np.float32))  # none


@pytest.mark.slow  # a training run: kept out of the default suite's 15 minutes
def test_a_debiased_average_of_a_short_run_is_not_warned_about(tmp_path):
    """It keeps no share of the initial weights, which is what the warning is about."""
    debiased = {"steps": 3, "batch_size": 16, "ema_decay": 0.999, "ema_debias": True}
    train_run(ExperimentConfig.from_dict({"train": debiased}), tmp_path / "run", progress=False)


def test_train_run_with_matching_data_writes_a_loadable_run(tiny, tmp_path):
    data = np.random.default_rng(0).standard_normal((32, 2)).astype(np.float32)
    train_run(tiny, tmp_path / "run", progress=False, data=data, note=np.float32(1.5))
    config, _ = runs.load_run(tmp_path / "run")
    assert config == tiny
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["note"] == 1.5


# --- 30: likelihood_points --------------------------------------------------------------------


def test_likelihood_points_reports_the_range_it_solved_over():
    config = ExperimentConfig()
    x = np.random.default_rng(0).standard_normal((3, 2))
    options = {"n_probes": 1, "rtol": 1e-3, "atol": 1e-3}
    result = likelihood_points(config, None, x, sigma_min=1.0, **options)
    assert result["sigma_min"] == 1.0
    assert result["sigma_max"] == config.sampler.sigma_max
    exact = np.asarray(make_target(config.data).ve_marginal(1.0).log_prob(x))
    np.testing.assert_array_equal(result["exact_log_prob"], exact)


def test_likelihood_points_takes_numpy_probe_counts_and_refuses_unknown_options():
    config = ExperimentConfig()
    x = np.random.default_rng(0).standard_normal((3, 2))
    options = {"rtol": 1e-3, "atol": 1e-3}
    plain = likelihood_points(config, None, x, n_probes=1, **options)
    numpy = likelihood_points(config, None, x, n_probes=np.int64(1), **options)
    np.testing.assert_array_equal(plain["log_prob"], numpy["log_prob"])
    with raises(TypeError, "likelihood_points: unknown option 'bogus'; accepted: sigma_min"):
        likelihood_points(config, None, x, bogus=1)


# --- 31: run folders and plot_run -------------------------------------------------------------


def test_prepare_run_dir_names_a_path_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with raises(ValueError, f"{tmp_path / 'afile' / 'sub'}: a folder inside the file"):
        with runs.prepare_run_dir(tmp_path / "afile" / "sub"):
            pass


def test_prepare_run_dir_names_a_folder_it_cannot_create():
    with raises(ValueError, "/proc/scorelab-xyz: cannot create the folder"):
        with runs.prepare_run_dir("/proc/scorelab-xyz"):
            pass


def test_plot_run_refuses_an_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with raises(ValueError, f"out_dir: {tmp_path / 'afile'} is a file; give a folder"):
        plot_run(tmp_path / "no-run", tmp_path / "afile")


# --- 32, 33: settings built directly ----------------------------------------------------------


def test_sweep_settings_refuse_an_unknown_target_before_the_run_folder(tmp_path):
    values = {"target": "bogus", "samplers": ["euler"], "nfe": [5], "seeds": [0]}
    with raises(ValueError, "sweep.target: unknown value 'bogus'; accepted: seed_mixture"):
        SweepSettings.from_dict({**values, "n_samples": 50, "tolerances": []})
    with raises(ConfigError, "sweep.target: unknown 'bogus'; accepted: seed_mixture"):
        sweep_settings(None, values)


def test_sweep_settings_refuse_image_metrics_of_points():
    with raises(ValueError, "sweep.image_metrics: the target's points must be 8x8 or 16x16"):
        SweepSettings(image_metrics=True)
    with raises(ValueError, "sweep.image_metrics: the target's points must be 8x8 or 16x16"):
        SweepSettings.from_dict({"image_metrics": True})  # not run_sweep, inside its folder
    SweepSettings(target="digits_mixture", image_metrics=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"samplers": "euler"}, "sweep.samplers: expected a list, got 'euler'"),
        ({"nfe": 5}, "sweep.nfe: expected a list, got 5"),
        ({"options": [1]}, "sweep.options: expected a table, got [1]"),
        ({"options": {"euler": 5}}, "sweep.options.euler: expected a table of option name"),
        ({"n_samples": "50"}, "sweep.n_samples: expected an integer, got '50'"),
        ({"image_metrics": "no"}, "sweep.image_metrics: expected true or false, got 'no'"),
    ],
)
def test_sweep_settings_built_directly_are_type_checked(fields, message):
    with raises(ValueError, message):
        SweepSettings(**fields)


def test_sweep_settings_built_directly_equal_those_read():
    direct = SweepSettings(samplers=["euler"], nfe=[5, 10], sigma_max=80)
    read = SweepSettings.from_dict({"samplers": ["euler"], "nfe": [5, 10], "sigma_max": 80})
    assert direct == read and direct.nfe == (5, 10) and isinstance(direct.sigma_max, float)
    with raises(ValueError, "sweep.options.euler: expected a table of option name"):
        SweepSettings.from_dict({"options": {"euler": 5}})


def test_sweep_settings_refuse_overrides_that_are_not_a_mapping():
    with raises(ConfigError, "overrides: expected a mapping of field -> value, got list"):
        sweep_settings(None, [1])


def test_demo_settings_refuse_a_bad_base_and_a_table_for_a_train_config():
    with raises(TypeError, "base: expected None or a DemoSettings, got str"):
        DemoSettings.from_dict({}, base="x")
    with raises(ValueError, "demo.dsm: expected a TrainConfig"):
        DemoSettings(dsm={"steps": 5})
    with raises(ValueError, "demo.train: expected a TrainConfig"):
        ImageDemoSettings(train={"steps": 5})
    assert DemoSettings.from_dict({"dsm": {"steps": 5}}).dsm == TrainConfig(
        **{**DemoSettings().dsm.__dict__, "steps": 5}
    )


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {
                "ncsn_sigma_distribution": "lognormal",
                "sigma_min": 1e3,
                "sigma_max": 1e4,
                "tutorial_sigma_max": 2e4,
            },
            "demo.ncsn_sigma_distribution: the lognormal law (the loss's p_mean -0.5, p_std "
            "1.2) does not reach [sigma_min, sigma_max] = [1000, 10000]",
        ),
        ({"rho": 1e-30}, "demo.rho: rho 1e-30: sigma_max ** (1 / rho) overflows"),
        ({"sigma_min": 1.0, "sigma_max": 1.0000001}, "demo: sigma grid of 100 levels"),
        ({"tutorial_sigma_max": 3e7, "rho": 0.05}, "demo.tutorial_sigma_max: sigma grid of 100"),
    ],
)
def test_demo_settings_refuse_runs_and_grids_that_would_fail_after_training(values, message):
    """Each was refused only once the models had trained (the first after two models, under
    a field the settings do not have)."""
    with raises(ValueError, message):
        DemoSettings.from_dict(values)


# --- 34: evaluate_images ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_samples():
    rng = np.random.default_rng(0)
    return np.clip(rng.standard_normal((16, 1, 8, 8)) * 0.5, -1, 1).astype(np.float32)


@pytest.mark.parametrize("tolerance", [float("nan"), -1.0, "x", float("inf")])
def test_evaluate_images_refuses_a_bad_range_tolerance(digit_samples, tolerance):
    with raises(ConfigError, "range_tolerance: expected"):
        evaluate_images(
            digit_samples * 1000, range_tolerance=tolerance, floor_repeats=2, progress=False
        )


def test_evaluate_image_sets_refuses_a_list_of_sets_and_a_list_as_data(digit_samples):
    with raises(TypeError, "sets: expected a dict of row label -> images, got list"):
        evaluate_image_sets([digit_samples], floor_repeats=2, progress=False)
    with raises(ConfigError, "data: image metrics know only 'digits', 'digits16', got ['digits']"):
        evaluate_images(digit_samples, data=["digits"], floor_repeats=2, progress=False)


def test_run_sweep_refuses_sizes_before_it_claims_its_folder(tmp_path):
    settings = SweepSettings.from_dict(
        {"samplers": ["euler"], "nfe": [5], "seeds": [0], "n_samples": 10**15}
    )
    with raises(ValueError, "sweep.n_samples: needs"):
        run_sweep(settings, tmp_path / "sw", progress=None)
    assert not (tmp_path / "sw").exists()


# --- 35, 36: sweep() --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_sweep():
    from scorelab.config import TARGETS
    from scorelab.models import ExactScore
    from scorelab.sweep import sweep_sampler

    target = TARGETS["seed_mixture"]()
    keywords = {"n_samples": 20, "seeds": (0,), "floor_repeats": 2, "n_projections": 10}
    return target, [sweep_sampler("euler")], {"exact": ExactScore(target)}, keywords


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"prior": "bogus"}, ValueError, "prior: unknown value 'bogus'; accepted: normal"),
        ({"seeds": (2**32,)}, ValueError, "seeds: expected an integer seed in [0, 2**32 - 1]"),
        ({"seeds": (-1,)}, ValueError, "seeds: expected an integer seed in [0, 2**32 - 1]"),
        ({"n_samples": 1}, ValueError, "n_samples: expected an integer >= 2, got 1"),
    ],
)
def test_sweep_refuses_bad_settings_before_any_work(small_sweep, change, error, message):
    from scorelab.sweep import sweep

    target, specs, score_fns, keywords = small_sweep
    with raises(error, message):
        sweep(target, specs, [4], score_fns, **{**keywords, **change})


def test_sweep_refuses_arguments_of_the_wrong_type(small_sweep):
    from scorelab.sweep import sweep

    target, specs, score_fns, keywords = small_sweep
    with raises(TypeError, "target: expected a GaussianMixture"):
        sweep("seed_mixture", specs, [4], score_fns, **keywords)
    with raises(TypeError, "sampler_specs: expected SweepSampler records"):
        sweep(target, ["euler"], [4], score_fns, **keywords)
    with raises(TypeError, "score_fns: expected a mapping label -> score_fn, got list"):
        sweep(target, specs, [4], list(score_fns.values()), **keywords)


def test_sweep_checks_known_floors_and_done_rows_before_any_work(small_sweep, monkeypatch):
    """#36: floors without mmd2/tv, or a bare number, were accepted and failed later in
    fewest_nfe (KeyError, cannot unpack); a row without its seed was a KeyError in the sweep.
    Refused before any sampling; good floors and rows still give the uninterrupted result."""
    from scorelab import sweep as sweep_module
    from scorelab.sweep import sweep

    target, specs, score_fns, keywords = small_sweep
    whole = sweep(target, specs, [4, 8], score_fns, **keywords)
    monkeypatch.setattr(sweep_module, "sweep_runs", None)  # any sampling fails the test
    for given, error, message in [
        ({"sw": (0.1, 0.01)}, ValueError, "known_floors: mmd2, tv missing or unknown"),
        ({**whole.floors, "fd": (1, 0)}, ValueError, "known_floors: fd missing or unknown"),
        ({**whole.floors, "sw": 5}, ValueError, "known_floors['sw']: expected a (mean, sd) pair"),
        ({**whole.floors, "tv": ("a", 1)}, ValueError, "known_floors['tv']: expected a (mean, sd)"),
        ({**whole.floors, "tv": "ab"}, ValueError, "known_floors['tv']: expected a (mean, sd)"),
        ([("sw", (0, 0))], TypeError, "known_floors: expected a mapping of metric name -> (mean"),
    ]:
        with raises(error, message):
            sweep(target, specs, [4], score_fns, **keywords, known_floors=given)
    row = whole.rows[0]
    for rows, error, message in [
        ([{"a": 1}], ValueError, "done_rows: row 1: field(s) a, far, levels, mmd2"),
        ([row, {k: v for k, v in row.items() if k != "seed"}], ValueError, "row 2: field(s) seed"),
        ([{**row, "seed": "0"}], ValueError, "done_rows: row 1: seed '0' of the wrong type"),
        ([{**row, "sw": "x"}], ValueError, "done_rows: row 1: sw 'x' is not a finite number"),
        ([[1, 2]], ValueError, "done_rows: row 1: a list, not a mapping"),
        ("rows", TypeError, "done_rows: expected rows of an earlier sweep (mappings), got 'rows'"),
    ]:
        with raises(error, message):
            sweep(target, specs, [4], score_fns, **keywords, done_rows=rows)
    monkeypatch.undo()
    # Every row done and the floors known: nothing sampled, nothing measured, the same result
    # (a NaN measure, as a diverged run saves it, is a row too).
    nan_row = {**whole.rows[-1], "var_ratio": float("nan")}
    again = sweep(
        target,
        specs,
        [4, 8],
        score_fns,
        **keywords,
        known_floors=whole.floors,
        done_rows=[*whole.rows[:-1], nan_row],
    )
    assert again.floors == whole.floors and again.rows[:-1] == whole.rows[:-1]
    # A floor as an array is a pair, as Report takes it (one check, report.is_floor_pair).
    arrays = {name: np.asarray(pair) for name, pair in whole.floors.items()}
    kept = sweep(target, specs, [4, 8], score_fns, **keywords, known_floors=arrays,
                 done_rows=whole.rows)  # fmt: skip
    assert kept.rows == whole.rows


# --- 37, 38: the demos' folders ---------------------------------------------------------------


def _fake_training_run(folder):
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    runs.write_json(folder / "manifest.json", runs.manifest({}, job="train"))


def test_run_demo_refuses_a_training_run_folder_before_any_work(tmp_path):
    from scorelab.demo import run_demo

    _fake_training_run(tmp_path / "run")
    with raises(runs.RunExistsError, "holds a scorelab train run, not a demo run"):
        run_demo(DemoSettings(), tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["job"] == "train"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with raises(runs.RunExistsError, "is not empty (notes.txt) and holds no scorelab demo run"):
        run_demo(DemoSettings(), tmp_path / "other", progress=False)


def test_plotting_a_demo_names_a_folder_that_is_not_one(tmp_path):
    from scorelab.demo import plot_demo
    from scorelab.image_demo import plot_image_demo

    _fake_training_run(tmp_path / "run")
    with raises(ValueError, "not the output of a demo (no demo.json); it is a training run"):
        plot_demo(tmp_path / "run", tmp_path / "figures")
    assert not (tmp_path / "figures").exists()
    with raises(ValueError, "not the output of an image demo (no demo.json); it is a training run"):
        plot_image_demo(tmp_path / "run", tmp_path / "figures")
    with raises(FileNotFoundError, "no such folder"):
        plot_demo(tmp_path / "missing", tmp_path / "figures")


# --- 39, 40, 43: score_error_run, grid_run, check_reads -----------------------------------------


def test_score_error_run_refuses_no_model():
    from scorelab.workflows import score_error_run

    with raises(ConfigError, "model: score_error_run needs a trained model; None is the exact"):
        score_error_run(ExperimentConfig(), None, n=8)


def test_grid_run_refuses_a_model_that_is_not_callable():
    from scorelab.workflows import grid_run

    with raises(TypeError, "model: expected a callable score model(x, sigma) or None, got str"):
        grid_run(ExperimentConfig(), "m", 8, 0, progress=False)


def test_grid_run_refuses_a_model_of_the_wrong_dimension_before_the_search():
    """#40: a model of another dimension failed inside JAX's broadcasting ("add got
    incompatible shapes") or its own matmul; now refused up front, naming model and shapes."""
    import jax.numpy as jnp

    from scorelab.workflows import grid_run

    c = ExperimentConfig.from_dict({"sampler": {"n_levels": 4}})
    kw = dict(n_inner=1, n_candidates=2, n_sweeps=1, progress=False)
    with raises(ConfigError, "model: returned shape (3,) for one point of the data, of shape (2,)"):
        grid_run(c, lambda x, s: jnp.zeros(3), 8, 0, **kw)
    with raises(ConfigError, "model: fails on one point of the data, of shape (2,) ("):
        grid_run(c, lambda x, s: jnp.ones((3, 3)) @ x, 8, 0, **kw)
    sigmas, bound, _, about = grid_run(c, lambda x, s: -x / (1 + s**2), 8, 0, **kw)
    assert sigmas.shape == (4,) and np.isfinite(bound) and about["score"] == "model"


def test_check_reads_refuses_an_unknown_job_and_configs_of_the_wrong_type():
    from scorelab.workflows import check_reads

    c0 = ExperimentConfig()
    c1 = ExperimentConfig.from_dict({"train": {"steps": 7}})
    for config in (c0, c1):
        with raises(ValueError, "job: unknown 'bogus'; accepted: train, sample, grid"):
            check_reads("bogus", config, c0)
    with raises(TypeError, "config: expected an ExperimentConfig"):
        check_reads("sample", {}, c0)
    with raises(TypeError, "base: expected an ExperimentConfig, got dict"):
        check_reads("sample", c0, {})


def test_run_image_demo_refuses_a_training_run_folder_before_any_work(tmp_path):
    from scorelab.image_demo import run_image_demo

    _fake_training_run(tmp_path / "run")
    with raises(runs.RunExistsError, "holds a scorelab train run, not a demo images run"):
        run_image_demo(ImageDemoSettings(), tmp_path / "run", progress=False)


@pytest.mark.parametrize("factor", [float("nan"), -1.0, 0, "x"])
def test_fewest_nfe_refuses_a_bad_factor(small_sweep, factor):
    from scorelab.sweep import fewest_nfe, sweep

    target, specs, score_fns, keywords = small_sweep
    result = sweep(target, specs, [4, 8], score_fns, **keywords)
    with raises(ValueError, "factor: expected a number > 0"):
        fewest_nfe(result, "sw", factor)
    with raises(TypeError, "result: expected a SweepResult (sweep() or run_sweep()), got dict"):
        fewest_nfe({"rows": []})


def test_summary_table_names_a_missing_key_of_the_results():
    from scorelab.demo import summary_table

    with raises(ValueError, "results: no 'rows'; expected the content of a demo's metrics.json"):
        summary_table({})


@pytest.mark.slow  # about 10 s of a worker: kept out of the default suite's 15 minutes
def test_train_run_warns_a_library_caller_when_the_run_is_shorter_than_its_average(tmp_path):
    """The warning was the command line's alone: train_run saved a model that was 99.7% its
    initial weights (3 steps at ema_decay 0.999) and said nothing (pass 21D, F1)."""
    config = ExperimentConfig.from_dict(
        {"train": {"steps": 3, "batch_size": 16, "ema_decay": 0.999}}
    )
    expected = r"^train.ema_decay 0.999 averages over about 1000 steps, this run took 3: the sav"
    with pytest.warns(UserWarning, match=expected):
        train_run(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.eqx").is_file()  # written first
    fast = ExperimentConfig.from_dict({"train": {"steps": 3, "batch_size": 16, "ema_decay": 0.3}})
    train_run(fast, tmp_path / "fast", progress=False)  # 0.3**3 = 2.7%: no warning (an error)
