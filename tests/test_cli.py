"""The command line: every command end to end at small sizes, and one-line errors (exit 2)."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from _interrupt import interrupt_at

from scorelab import demo, runs
from scorelab.cli import main
from scorelab.demo import _FIGURE_COUNT
from scorelab.targets import seed_mixture

_TINY_TRAIN = [
    "--steps",
    "6",
    "--batch-size",
    "32",
    "--set",
    "train.steps_per_dispatch=3",
    "--set",
    "data.n=200",
    "--quiet",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--loss", "dsm", "--out", str(out), *_TINY_TRAIN]) == 0
    return out


@pytest.mark.slow  # about 21 s of a worker: kept out of the default suite's 15 minutes
def test_train_writes_a_run_directory(trained_run):
    for name in ("config.json", "manifest.json", "model.json", "model.eqx", "losses.npy"):
        assert (trained_run / name).is_file(), name
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["config"]["loss"]["name"] == "dsm"
    assert manifest["versions"]["jax"]
    assert np.load(trained_run / "losses.npy").shape == (6,)


@pytest.mark.slow  # a training run: kept out of the default suite's 15 minutes
def test_plot_reads_the_data_once_and_draws_sample_runs_samples(tmp_path, monkeypatch):
    """plot_run read a run's data file for its figures and sample_run read it again, and
    load_run read it whole to check its shape; now once (load_run reads the .npy's header),
    and the samples drawn are sample_run's, bit for bit."""
    from scorelab import builders, viz, workflows

    points = np.asarray(seed_mixture().sample(jax.random.key(0), 200))
    np.save(tmp_path / "points.npy", points)
    run = tmp_path / "run"
    argv = ["train", "--loss", "dsm", "--data", str(tmp_path / "points.npy"), "--out", str(run)]
    assert main([*argv, *_TINY_TRAIN[:-3], "--quiet"]) == 0  # data.n: the file's
    reads, drawn = [], {}
    load_array, ddim_samples = builders.load_array, viz.ddim_samples
    monkeypatch.setattr(builders, "load_array", lambda p: reads.append(p) or load_array(p))
    monkeypatch.setattr(
        viz, "ddim_samples", lambda s, *a, **k: drawn.update(s) or ddim_samples(s, *a, **k)
    )
    workflows.plot_run(run, tmp_path / "figures")
    assert len(reads) == 1, reads  # the figures' and the samples': the shape is the header's
    config, model = runs.load_run(run)
    (samples,) = drawn.values()
    np.testing.assert_array_equal(samples, workflows.sample_run(config, model, 1000, 0).x)


@pytest.mark.slow  # about 31 s of a worker: kept out of the default suite's 15 minutes
def test_sample_evaluate_and_plot_a_trained_run(trained_run, tmp_path, capsys):
    samples = tmp_path / "s.npy"
    assert (
        main(
            [
                "sample",
                "--run",
                str(trained_run),
                "--sampler",
                "ula",
                "--n-steps",
                "5",
                "--n",
                "50",
                "--out",
                str(samples),
            ]
        )
        == 0
    )
    assert np.load(samples).shape == (50, 2)
    report = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                str(samples),
                "--target",
                "seed_mixture",
                "--floor-repeats",
                "2",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "SW floor" in table
    payload = json.loads(report.read_text())
    (row,) = payload["rows"]
    assert row["n"] == 50 and len(payload["floors"]["sw"]) == 2 and "ksd2" in row
    figures = tmp_path / "fig"
    assert main(["plot", str(trained_run), "--out", str(figures)]) == 0
    assert {p.name for p in figures.iterdir()} >= {"loss.png", "score_field.png", "samples.png"}


def test_an_unconditional_run_refuses_grid_samplers_and_points_to_ula(
    trained_run, tmp_path, capsys
):
    """A DSM run's network ignores sigma: DDIM would query that one score at every level of
    its grid. `sample` refuses it with the fix; the run's own sampler is ULA (a DSM run saved
    the default DDIM, which `sample --run` then refused with no flag given), which works and
    names the noised law the samples follow, with the `evaluate` flag that compares against
    it."""
    out = tmp_path / "s.npy"
    saved = json.loads((trained_run / "config.json").read_text())["sampler"]
    assert saved["name"] == "ula"
    flags = ["--n", "8", "--out", str(out)]
    assert main(["sample", "--run", str(trained_run), "--sampler", "ddim", *flags]) == 2
    err = capsys.readouterr().err
    assert "'ddim' walks a sigma grid" in err and "loss 'dsm' at sigma 1" in err
    assert "--sampler ula" in err and not out.exists()
    assert main(["sample", "--run", str(trained_run), "--n-steps", "3", *flags]) == 0
    printed = capsys.readouterr().out
    assert "(ula, NFE 3)" in printed and "--sigma 1 " in printed


@pytest.mark.slow  # about 10 s of a worker: kept out of the default suite's 15 minutes
def test_plot_draws_an_older_unconditional_run_saved_with_a_grid_sampler(trained_run, tmp_path):
    """An older scorelab saved a DSM run's sampler as the default DDIM, with any budget given:
    plot samples it with ULA, and the budget, which ULA cannot take, was kept (an error plot
    offered no way around)."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    sampler = {"name": "ddim", "nfe": 20, "n_levels": 20}
    config = json.loads((old / "config.json").read_text())
    config["sampler"].update(sampler)
    (old / "config.json").write_text(json.dumps(config))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["config"]["sampler"].update(sampler)
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert main(["plot", str(old), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "samples.png").is_file()


@pytest.mark.slow  # floors over many repeats
def test_evaluate_with_sigma_compares_with_the_noised_law(tmp_path, capsys):
    """Samples of q_sigma, the law a DSM model at sigma learns, match the noised reference and
    not the clean one.

    Exact target: the within-mode variance ratio, whose standard error at n samples is about
    n^-1/2 for isotropic 2-D modes (the sliced Wasserstein distance is blind to within-mode
    spread), is within 4 standard errors of 1 against q_sigma and far above it against q. Data
    file: points at the origin (sd 0.01) and samples of N(0, I); against the data noised at
    sigma = 1 the sliced Wasserstein distance is within 4 sd of its floor, against the bare
    data 20 sd above it (the floor's own spread over 8 repeats)."""
    import jax

    from scorelab.targets import seed_mixture
    from scorelab.workflows import evaluate_samples

    n = 1000
    samples = np.asarray(seed_mixture().ve_marginal(1.0).sample(jax.random.key(7), n))
    ratio = {
        sigma: evaluate_samples(samples, target="seed_mixture", sigma=sigma, floor_repeats=2).rows[
            0
        ]["var_ratio"]
        for sigma in (1.0, 0.0)
    }
    assert abs(ratio[1.0] - 1.0) < 4 / np.sqrt(n) and ratio[0.0] > 3.0, ratio

    rng = np.random.default_rng(0)
    data = tmp_path / "data.npy"
    np.save(data, 0.01 * rng.normal(size=(2000, 2)))
    gaussian = rng.normal(size=(500, 2))
    for sigma, near in ((1.0, True), (0.0, False)):
        report = evaluate_samples(gaussian, data=data, sigma=sigma, floor_repeats=8)
        mean, sd = report.floors["sw"]
        sw = report.rows[0]["sw"]
        assert (sw < mean + 4 * sd) if near else (sw > mean + 20 * sd), (sigma, sw, mean, sd)
    assert main(["evaluate", str(data), "--target", "seed_mixture", "--sigma", "-1"]) == 2
    assert "sigma: expected a number >= 0, got -1.0" in capsys.readouterr().err


def test_sample_with_the_exact_score_is_reproducible(tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    args = ["sample", "--exact", "seed_mixture", "--sampler", "ddim", "--levels", "5", "--n", "8"]
    assert main([*args, "--out", str(a)]) == 0
    assert main([*args, "--n", "16", "--out", str(b), "--trajectory", str(tmp_path / "t.npy")]) == 0
    # Chain i depends only on index i: the first 8 of 16 equal the 8.
    np.testing.assert_array_equal(np.load(a), np.load(b)[:8])
    assert np.load(tmp_path / "t.npy").shape == (16, 5, 2)


def test_evaluate_against_a_data_file(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(40, 2)))
    np.savetxt(tmp_path / "ref.csv", rng.normal(size=(60, 2)), delimiter=",")
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "x.npy"),
                "--data",
                str(tmp_path / "ref.csv"),
                "--floor-repeats",
                "2",
            ]
        )
        == 0
    )


@pytest.mark.slow  # about 14 s of a worker: kept out of the default suite's 15 minutes
def test_train_from_a_toml_config_and_a_csv_file(tmp_path):
    np.savetxt(tmp_path / "d.csv", np.random.default_rng(1).normal(size=(64, 2)), delimiter=",")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[data]\nsource = "{tmp_path / "d.csv"}"\n[loss]\nname = "hutchinson"\nn_probes = 2\n'
        "[train]\nsteps = 4\nbatch_size = 16\nsteps_per_dispatch = 2\n"
    )
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["loss"] == {**saved["loss"], "name": "hutchinson", "n_probes": 2}


def _nan_file(tmp_path):
    path = tmp_path / "nan.npy"
    np.save(path, np.array([[0.0, np.nan], [1.0, 1.0]]))
    return path


def _file(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--loss", "ncsn", "--set", "loss.sigma_min=-1"], "loss.sigma_min"),
        (["train", "--set", "loss.sigma_min=20", "--set", "loss.sigma_max=10"], "loss.sigma_max"),
        (["train", "--steps", "0"], "train.steps"),
        (["train", "--loss", "nope"], "accepted: hyvarinen, hutchinson, sliced, dsm, ncsn"),
        (["train", "--model", "resnet"], "model.name"),
        (["train", "--data", "moons"], "data.source"),
        (["train", "--data", "missing.npy"], "not found"),
        (["train", "--set", "train.optimizer='lion'"], "train.optimizer"),
        (["train", "--set", "bogus.x=1"], "unknown section"),
        (["sample", "--exact", "seed_mixture", "--eta", "-0.5"], "--eta (sampler.options.eta): "),
        (["sample", "--exact", "seed_mixture", "--sigma-min", "-1"], "sampler.sigma_min"),
        (
            ["sample", "--exact", "seed_mixture", "--sigma-min", "90"],
            "--sigma-min (sampler.sigma_min): expected a number < sigma_max (80.0",
        ),
        (["sample", "--exact", "seed_mixture", "--sampler", "rk4"], "sampler.name"),
        (["sample", "--exact", "two_moons"], "no exact score"),
        (["sample", "--exact", "seed_mixture", "--n", "0"], "error: --n: expected an integer >= 1"),
        (["sample", "--run", "no/such/run"], "no config.json"),
        (["evaluate", "missing.npy", "--target", "seed_mixture"], "not found"),
        (["evaluate", "{x}", "--target", "nine_modes"], "target"),
    ],
)
def test_invalid_input_is_a_one_line_error_with_exit_status_2(argv, expected, tmp_path, capsys):
    argv = [a.replace("{x}", str(_file(tmp_path, "x.npy", np.zeros((3, 2))))) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"scorelab {argv[0]}: error:")
    assert expected in err


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([[0.0, np.nan], [1.0, 1.0]]), "NaN or inf"),
        (np.array([[0.0, np.inf]]), "NaN or inf"),
        (np.zeros(4), "2-D array"),
        (np.zeros((0, 2)), "no data"),
    ],
)
def test_bad_data_files_are_rejected(array, expected, tmp_path, capsys):
    path = _file(tmp_path, "bad.npy", array)
    assert main(["train", "--data", str(path), "--quiet"]) == 2
    assert main(["evaluate", str(path), "--target", "seed_mixture"]) == 2
    for line in capsys.readouterr().err.strip().splitlines():
        assert expected in line


def test_argparse_errors_exit_2_and_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "scorelab.cli", "sample", "--levels", "many"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "invalid int value" in result.stderr


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["train", "--lr", "many"], ["demo", "--help"], []]
)
def test_help_and_usage_errors_do_not_wait_for_jax(argv):
    """Only ``sample`` and ``grid`` generate flags from the samplers (importing JAX); every
    other command's help and usage errors answer without it."""
    probe = (
        "import sys\nfrom scorelab.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('jax' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == "False", result.stderr


def test_sample_help_lists_the_generated_sampler_flags():
    result = subprocess.run(
        [sys.executable, "-m", "scorelab.cli", "sample", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--s-churn" in result.stdout
    assert "samplers and their options" in result.stdout


@pytest.mark.parametrize("text", ["10,,20", "10,", ",", " "])
@pytest.mark.parametrize(
    ("flag", "example"),
    [("--nfe", "e.g. 3 or 3,7"), ("--samplers", "e.g. euler or euler,heun")],
)
def test_comma_lists_refuse_empty_items(text, flag, example, capsys):
    """An empty item is a typo, not "no item": ``--nfe 10,,20`` is refused, not read as 10,20;
    the example is of the flag's own kind (sampler names were told 'write e.g. 3 or 3,7')."""
    assert main(["sweep", flag, text]) == 2
    err = capsys.readouterr().err
    assert "an empty item" in err and example in err


_TINY_DEMO = """
n_data = 300
n_samples = 100
ula_steps = 20
annealed_levels = 6
ddim_etas = [0.0, 1.0]
ddim_ns = [4, 9]
floor_repeats = 2
n_chains_animated = 4
n_likelihood = 16
[hyvarinen]
steps = 4
warmup_steps = 1
batch_size = 32
steps_per_dispatch = 2
[dsm]
steps = 4
batch_size = 32
steps_per_dispatch = 2
[ncsn]
steps = 4
batch_size = 32
steps_per_dispatch = 2
"""


@pytest.mark.slow  # the whole demo and its figures: ~480 programs, two minutes on 2 cores
def test_demo_and_its_plots_at_a_tiny_size(tmp_path, capsys, monkeypatch):
    settings = tmp_path / "tiny.toml"
    settings.write_text(_TINY_DEMO)
    named = {}  # every named key the demo draws, by name

    def recording_key(seed, name):
        named[name] = np.asarray(jax.random.key_data(runs.named_key(seed, name))).tobytes()
        return runs.named_key(seed, name)

    monkeypatch.setattr(demo, "named_key", recording_key)
    argv = ["demo", "--settings", str(settings), "--out", str(tmp_path), "--name", "d", "--quiet"]
    # Interrupted in its first model's training, the demo says how to continue; --resume
    # continues it (test_an_interrupted_demo_trains_on_to_the_uninterrupted_models: to the
    # same models), and what follows checks the resumed demo.
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "scorelab demo: interrupted: training stopped after 2 of 4 steps; the checkpoint of "
        "step 2 is kept; rerun it with --resume (the same settings, without --overwrite) to "
        "continue"
    )
    assert main(argv) == 2  # a demo is there: resume or overwrite it
    assert "resume it (--resume)" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    # Distinct draws get distinct keys (the DDIM sweep's names differ only after 8 characters).
    assert len(named) > 10 and len(set(named.values())) == len(named)
    run = tmp_path / "d"
    table = capsys.readouterr().out
    assert "sigma_max=10 (tutorial)" in table and "floor sw: " in table
    metrics = json.loads((run / "metrics.json").read_text())
    # One row per sampler family, the DDIM row per eta at the largest N, and the tutorial's row.
    assert len(metrics["rows"]) == 2 + 1 + 2 + 1
    assert metrics["ddim_sweep"]["1.0"]["N"] == [4, 9]
    _check_demo_likelihoods(metrics["likelihood"], 16)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["ncsn"]["steps"] == 4
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"sw_vs_n.png", "ddim_samples.png", "annealed.gif", "ula_hyvarinen.gif"} <= figures
    assert len(figures) == _FIGURE_COUNT  # the figures' progress bar ends full
    redrawn = tmp_path / "again"
    assert main(["plot", str(run), "--out", str(redrawn)]) == 0
    assert {p.name for p in redrawn.iterdir()} == figures
    # The demo's models are ordinary run directories: sample, plot and sweep take them.
    samples = tmp_path / "ncsn.npy"
    argv = ["sample", "--run", str(run / "models" / "ncsn"), "--n", "16", "--out", str(samples)]
    assert main([*argv, "--levels", "5"]) == 0 and np.load(samples).shape == (16, 2)
    argv = ["sample", "--run", str(run / "models" / "dsm"), "--n", "8", "--out", str(samples)]
    assert main([*argv, "--n-steps", "3", "--overwrite"]) == 0
    assert main(["plot", str(run / "models" / "hyvarinen")]) == 0
    sweep = ["sweep", "--samplers", "euler", "--nfe", "4", "--n", "50", "--seeds", "0", "--quiet"]
    assert main([*sweep, "--run", str(run / "models" / "ncsn"), "--out", str(tmp_path / "m")]) == 0


@pytest.mark.slow  # trains the tiny demo's three models twice
@pytest.mark.filterwarnings("ignore:train.ema_decay")  # the tiny demo's short runs
def test_an_interrupted_demo_trains_on_to_the_uninterrupted_models(tmp_path, monkeypatch):
    """The models of a demo resumed after an interrupt in its training (demo --resume) equal
    an uninterrupted demo's, bit for bit: each trains on from its checkpoints, a finished one
    is read back, a missing one trained. The rest of the demo is computed from them."""
    from scorelab.config import load_config
    from scorelab.targets import seed_mixture

    (tmp_path / "tiny.toml").write_text(_TINY_DEMO)
    settings = demo.DemoSettings.from_dict(load_config(tmp_path / "tiny.toml"))
    data = np.asarray(seed_mixture().sample(demo._key(settings, "data"), settings.n_data))
    whole, _, _ = demo._train_models(settings, data, tmp_path / "whole", False, False)
    interrupt_at(monkeypatch, 4 + 2)  # hyvarinen's 4 steps, then dsm's first dispatch of 2
    with pytest.raises(KeyboardInterrupt):
        demo._train_models(settings, data, tmp_path / "part", False, False)
    monkeypatch.undo()
    assert not (tmp_path / "part" / "models" / "ncsn").exists()
    resumed, _, _ = demo._train_models(settings, data, tmp_path / "part", False, True)
    for name in demo.MODELS:
        for a, b in zip(jax.tree.leaves(resumed[name]), jax.tree.leaves(whole[name]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _check_demo_likelihoods(likelihood, n):
    """The demo's NLLs: the exact score's ODE reaches the closed form of q_sigma_min on the same
    points, and the Monte-Carlo entropy the closed form of well-separated modes."""
    assert set(likelihood["scores"]) == {"ncsn", "exact"} and likelihood["n_points"] == n
    for record in likelihood["scores"].values():
        assert all(np.isfinite(record[k]) for k in ("nll", "nll_se", "excess", "excess_se"))
    target = seed_mixture()
    points = target.sample(runs.named_key(0, "likelihood points"), n)
    closed = -np.mean(np.asarray(target.ve_marginal(likelihood["sigma_min"]).log_prob(points)))
    exact = likelihood["scores"]["exact"]
    # The per-point error is the solver's and the prior's (N(0, sigma_max^2 I) for q_sigma_max);
    # its mean over the points is bounded by 3 standard errors of their spread, excess_se (the
    # error against log q_0, which differs from log q_sigma_min by O(sigma_min^2) a point).
    assert abs(exact["nll"] - closed) <= 3 * exact["excess_se"]
    # Modes 10 apart with standard deviation 0.32 do not overlap: the entropy is the weights'
    # plus one Gaussian's, log det(2 pi e C) / 2, and the estimate is within 3 standard errors.
    weights = np.asarray(target.weights, np.float64)
    covariance = np.asarray(target.covariances[0], np.float64)
    entropy = (
        -np.sum(weights * np.log(weights))
        + 0.5 * np.linalg.slogdet(2 * np.pi * np.e * covariance)[1]
    )
    assert abs(likelihood["entropy"] - entropy) <= 3 * likelihood["entropy_se"]


@pytest.mark.slow  # about 15 s of a worker: kept out of the default suite's 15 minutes
def test_demo_settings_errors_name_the_field(tmp_path, capsys):
    settings = tmp_path / "bad.toml"
    settings.write_text("[ncsn]\nsteps = 0\n")
    assert main(["demo", "--settings", str(settings), "--out", str(tmp_path)]) == 2
    assert "demo.ncsn.steps" in capsys.readouterr().err
    settings.write_text("n_chains = 3\n")
    assert main(["demo", "--settings", str(settings), "--out", str(tmp_path)]) == 2
    assert "demo.n_chains: unknown field" in capsys.readouterr().err
    # Sizes that only ran on for ever, or failed once training had begun, under run fields.
    for text, named in [
        ("floor_repeats = 10000000000000\n", "demo.floor_repeats: 10000000000000 repeats; at most"),
        ("[ncsn]\nbatch_size = 100000000000000\n", "demo.ncsn.batch_size: needs"),
        (f"ddim_ns = {list(range(2, 100002))}\n", "demo.ddim_ns: needs"),
        ("ddim_ns = [4, 4]\n", "demo.ddim_ns: 4 given more than once"),
        # clamped to n_samples without a word; named as the loss fields they feed
        ("n_samples = 100\nn_chains_animated = 1000\n", "demo.n_chains_animated: 1000 is more"),
        ("sigma_max = 1e30\n", "demo.sigma_max: 1e+30 is beyond"),
        ("sigma_min = 1e-30\n", "demo.sigma_min: 1e-30 is below"),
        # each factor fitted; the kept trajectories of their product did not
        (
            "n_samples = 10000\nannealed_levels = 2000\nannealed_steps_per_level = 2000\n",
            "demo.annealed_steps_per_level: needs",
        ),
    ]:
        settings.write_text(text)
        assert main(["demo", "--settings", str(settings), "--out", str(tmp_path / "d")]) == 2
        assert named in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow  # about 13 s of a worker: kept out of the default suite's 15 minutes
def test_evaluate_names_built_in_data(tmp_path, capsys):
    """``--data`` takes a toy set's name (fresh draws of it are the reference and the floor's
    law: its own draws sit at the floor, a Gaussian far above) and ``digits16``; a target's
    name points to ``--target``. All three used to end in 'data file not found'."""
    from scorelab.data import TOY_DATASETS
    from scorelab.workflows import evaluate_samples

    own = np.asarray(TOY_DATASETS["two_moons"](jax.random.key(123), 500))
    for samples, near in ((own, True), (np.random.default_rng(0).normal(size=(500, 2)), False)):
        report = evaluate_samples(samples, data="two_moons", floor_repeats=8)
        mean, sd = report.floors["sw"]
        sw = report.rows[0]["sw"]
        assert (sw < mean + 4 * sd) if near else (sw > mean + 10 * sd), (near, sw, mean, sd)
    points, small = tmp_path / "p.npy", tmp_path / "small.npy"
    np.save(points, own)
    np.save(small, np.zeros((20, 1, 8, 8), np.float32))
    assert main(["evaluate", str(points), "--data", "seed_mixture"]) == 2
    assert "use --target seed_mixture" in capsys.readouterr().err
    assert main(["evaluate", str(small), "--data", "digits16"]) == 2
    assert "8x8 images; 'digits16' holds 16x16" in capsys.readouterr().err


def test_evaluate_of_a_file_against_itself_says_so(tmp_path, capsys):
    """``evaluate s.npy --data s.npy`` scored distances of about 0 without a word (pass 26)."""
    samples = tmp_path / "s.npy"
    np.save(samples, np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32))
    assert main(["evaluate", str(samples), "--data", str(samples), "--floor-repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert f"note: {samples} is measured against itself (--data names the same file)" in out
    other = tmp_path / "t.npy"
    np.save(other, np.load(samples))
    assert main(["evaluate", str(samples), "--data", str(other), "--floor-repeats", "2"]) == 0
    assert "against itself" not in capsys.readouterr().out


@pytest.mark.slow  # samples once per grid size
def test_a_grid_is_sized_by_levels_or_by_a_budget_never_both_silently(tmp_path, capsys):
    """``--levels 5 --nfe 10`` sampled the budget's grid and said nothing, and ``--levels 5`` on
    a run trained with a budget sampled that budget: levels and a budget given together are
    refused, and levels given over a run's saved budget replace it."""
    run = tmp_path / "run"
    argv = ["train", "--loss", "ncsn", "--out", str(run), *_TINY_TRAIN, "--set", "sampler.nfe=10"]
    assert main(argv) == 0
    capsys.readouterr()
    out = str(tmp_path / "s.npy")
    sample = ["sample", "--run", str(run), "--n", "8", "--out", out, "--overwrite"]
    assert main([*sample, "--levels", "5"]) == 0
    assert "(ddim, NFE 5)" in capsys.readouterr().out
    assert main(sample) == 0
    assert "(ddim, NFE 10)" in capsys.readouterr().out  # the saved budget, when none is given
    for both in (["--levels", "5", "--nfe", "8"], ["--set", "sampler.n_levels=5", "--nfe", "8"]):
        assert main([*sample, *both]) == 2
        err = capsys.readouterr().err
        assert err.startswith("scorelab sample: error: --nfe (sampler.nfe): a budget sizes the")
    # a command that reads levels but no budget takes the levels over the run's saved budget
    assert main(["score-error", "--run", str(run), "--levels", "3", "--n", "8"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2 + 3


@pytest.mark.slow  # trains, grids and samples
def test_a_saved_grid_brings_its_own_levels(tmp_path, capsys):
    """A 4-level grid of ``scorelab grid`` was interpolated to the default 100 levels unless
    ``--levels`` was given (the command's own hint leaves it out)."""
    grid = tmp_path / "g.json"
    assert main(["grid", "--exact", "seed_mixture", "--levels", "4", "--n", "20", "--sweeps",
                 "1", "--out", str(grid), "--quiet"]) == 0  # fmt: skip
    out = str(tmp_path / "s.npy")
    sample = ["sample", "--exact", "seed_mixture", "--n", "8", "--grid", str(grid), "--out", out]
    for extra, nfe in (([], 4), (["--levels", "7"], 7)):
        capsys.readouterr()
        assert main([*sample, *extra, "--overwrite"]) == 0
        assert f"(ddim, NFE {nfe})" in capsys.readouterr().out


def test_an_output_another_process_writes_meanwhile_is_kept_and_the_command_says_so(
    tmp_path, capsys, monkeypatch
):
    from scorelab import workflows

    out = tmp_path / "s.npy"
    real = workflows.sample_run

    def racing(*args, **kwargs):  # a second `sample --out s.npy` finishes first
        np.save(out, np.zeros(3))
        return real(*args, **kwargs)

    monkeypatch.setattr(workflows, "sample_run", racing)
    argv = ["sample", "--exact", "seed_mixture", "--levels", "5", "--n", "10", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out}: another process created it while this command ran" in err
    assert np.load(out).shape == (3,)  # the other command's result
    assert main([*argv, "--overwrite"]) == 0  # replaced when asked
    assert np.load(out).shape == (10, 2)


@pytest.mark.slow  # a training run's command: kept out of the default suite's 15 minutes
def test_train_on_a_file_saved_column_wise_warns_and_says_how_to_transpose(tmp_path, capsys):
    """A (3, 40) file of 40 points in 3 dimensions trained as 3 points of 40 (session 35)."""
    data = tmp_path / "columns.npy"
    np.save(data, np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32))
    argv = ["train", "--data", str(data), "--steps", "2", "--out", str(tmp_path / "run")]
    assert main([*argv, "--set", "train.ema_decay=0.1", "--quiet"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "scorelab train: warning: data: 3 example(s) of 40 dimensions, fewer examples than "
        "dimensions: the model can learn little beyond these points; each row is one example, "
        "so if each column is one, transpose the array (array.T)"
    ]


@pytest.mark.slow  # about 14 s of a worker: kept out of the default suite's 15 minutes
def test_resume_extends_a_finished_run_from_its_own_options(tmp_path, capsys):
    """``train --out R --resume --steps 30`` was refused, listing every field R's command
    line had set (pass 23, #7): a finished run's config.json is the start."""
    out = tmp_path / "run"
    first = ["train", "--out", str(out), "--loss", "ncsn", "--steps", "20", "--batch-size", "32"]
    first += ["--set", "train.schedule=constant", "--set", "train.ema_decay=0.5", "--quiet"]
    assert main(first) == 0
    assert main(["train", "--out", str(out), "--resume", "--steps", "30", "--quiet"]) == 0
    assert np.load(out / "losses.npy").shape == (30,)
    config = json.loads((out / "config.json").read_text())
    assert config["loss"]["name"] == "ncsn" and config["train"]["batch_size"] == 32
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--batch-size", "64", "--quiet"]) == 2
    assert "batch_size" in capsys.readouterr().err  # a change is still refused


def test_resume_of_a_run_cut_short_starts_from_its_checkpoint_s_options(tmp_path):
    """A run cut short has no config.json yet: ``--resume`` starts from the configuration
    its newest checkpoint records (pass 23, #7), so ``train --out R --resume`` needs none of
    R's options again."""
    from scorelab.checkpoints import saved_config

    out = tmp_path / "run"
    first = ["train", "--out", str(out), "--loss", "ncsn", "--steps", "20", "--batch-size", "32"]
    first += ["--set", "train.schedule=constant", "--set", "train.ema_decay=0.5", "--quiet"]
    assert main([*first, "--set", "train.checkpoint_every=10"]) == 0
    for name in ("config.json", "model.eqx", "model.json", "losses.npy"):  # as if cut short
        (out / name).unlink()
    assert saved_config(out / "checkpoints")["loss"]["name"] == "ncsn"
    assert saved_config(tmp_path / "nowhere") is None
    assert main(["train", "--out", str(out), "--resume", "--steps", "30", "--quiet"]) == 0
    assert np.load(out / "losses.npy").shape == (30,)
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 32


@pytest.mark.slow  # trains, then samples twice
def test_sampling_beyond_the_trained_levels_says_so(tmp_path, capsys):
    """A grid wider than the levels a noise-conditional run was trained on is allowed (the docs
    show ``--sigma-min``), and was silent (pass 23); its own range is."""
    run = tmp_path / "run"
    train = ["train", "--loss", "ncsn", "--out", str(run), *_TINY_TRAIN]
    assert main([*train, "--set", "loss.sigma_min=0.05", "--set", "loss.sigma_max=20"]) == 0
    argv = ["sample", "--run", str(run), "--n", "4", "--out", str(tmp_path / "s.npy")]
    argv += ["--levels", "4", "--overwrite"]
    assert main(argv) == 0
    assert "note:" not in capsys.readouterr().out
    assert main([*argv, "--sigma-min", "0.01", "--sigma-max", "80"]) == 0
    note = "note: the grid spans sigma 0.01 to 80, beyond the 0.05 to 20 the model was trained on"
    assert note in capsys.readouterr().out
