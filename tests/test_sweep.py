"""The sampler map: budgets to grids, honest NFE, floors, the fewest-NFE summary, the CLI."""

import json
import re

import jax
import numpy as np
import pytest

from scorelab import samplers
from scorelab.builders import draw_prior
from scorelab.cli import main
from scorelab.config import PRIORS, ConfigError
from scorelab.models import ExactScore
from scorelab.noise import karras_sigmas, read_saved_grid, sigma_grid
from scorelab.report import measure
from scorelab.samplers import ve_prior
from scorelab.sweep import (
    PARTIAL,
    SweepResult,
    SweepSettings,
    fewest_nfe,
    load_partial,
    mean_rows,
    save_partial,
    sweep,
    sweep_runs,
    sweep_sampler,
    sweep_settings,
)


def test_sweep_runs_builds_each_grid_once_and_runs_every_score_from_the_same_starts(mixture):
    """Heun's budgets 1, 5, 6, 9 buy N = 1, 3, 3, 5: N = 1 is skipped, 3 runs once; an adaptive
    solver runs once; each run asks chain_key for its key, and two scores given the same key
    and the same starts give the same chains."""
    asked = []

    def chain_key(label, levels, score):
        asked.append((label, levels, score))
        return jax.random.key(7)

    exact = ExactScore(mixture)
    tsit5 = sweep_sampler("tsit5", rtol=1e-2, atol=1e-2)
    runs = list(
        sweep_runs(
            [sweep_sampler("heun"), tsit5],
            [1, 5, 6, 9],
            {"a": exact, "b": exact},
            ve_prior(jax.random.key(1), 6, 2, np.float32(80.0)),
            chain_key,
            lambda n: karras_sigmas(n, 0.002, 80.0, 7.0),
        )
    )
    assert [(run.spec.label, run.levels) for run in runs] == [
        ("heun", 3),
        ("heun", 5),
        (tsit5.label, None),
    ]
    assert [run.sampler.nfe for run in runs[:2]] == [5, 9]  # 2N - 1
    assert asked == [(run.spec.label, run.levels, s) for run in runs for s in ("a", "b")]
    for run in runs:
        np.testing.assert_array_equal(run.outputs["a"].x, run.outputs["b"].x)


def test_sweep_runs_refuses_a_bad_option_of_any_sampler_before_the_first_run():
    """DDIM at eta = -1 listed after Euler: its constructor's refusal came after Euler had
    sampled (a sweep's earlier work lost); now every sampler is built first, and the error
    names the sampler."""

    def never_called(x, sigma):
        raise AssertionError("a sampler ran before every sampler was built")

    runs = sweep_runs(
        [sweep_sampler("euler"), sweep_sampler("ddim", eta=-1.0)],
        [4],
        {"exact": never_called},
        ve_prior(jax.random.key(1), 3, 2, np.float32(80.0)),
        lambda *_: jax.random.key(0),
        lambda n: karras_sigmas(n, 0.002, 80.0, 7.0),
    )
    with pytest.raises(ValueError, match=r"^sampler ddim\(eta=-1.0\): .*eta"):
        next(runs)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"nfe": []}, "sweep.nfe: an empty list; give at least one NFE budget"),
        ({"samplers": []}, "sweep.samplers: an empty list"),
        ({"options": {"hewn": {}}}, "sweep.options.hewn: unknown sampler 'hewn'"),
        ({"options": {"edm": {"churn": 1}}}, "sweep.options.edm.churn: "),  # swept or not
        (
            {"samplers": ["edm"], "options": {"edm": {"s_churn": "x"}}},
            "sweep.options.edm.s_churn: expected a number, got 'x'",  # failed when edm ran
        ),
        # "sweep needs at least one sampler, NFE budget, score and seed", naming none
        ({"samplers": ["tsit5"], "tolerances": []}, "sweep.tolerances: tsit5 run at"),
        ({"nfe": [4, 4]}, "sweep.nfe: 4 given more than once"),  # the same rows twice
    ],
)
def test_sweep_settings_name_the_field_at_fault(values, words):
    """An empty list was "sweep.sweep: needs at least one ..."; the options of a misspelt
    sampler were read, then ignored; an unknown option named no table."""
    with pytest.raises(ValueError, match=re.escape(words)):
        SweepSettings.from_dict({"nfe": [10], **values}).specs()


def test_tolerances_without_an_adaptive_row_are_refused_unless_a_file_is_narrowed(tmp_path):
    """``--tolerances`` beside ``--samplers euler`` was ignored without a word."""
    words = "sweep.tolerances: only tsit5 and dopri5 rows run at tolerances"
    with pytest.raises(ConfigError, match=re.escape(words)):
        sweep_settings(None, {"samplers": ("euler",), "tolerances": (1e-2,)})
    config = tmp_path / "map.toml"
    config.write_text('[sweep]\nsamplers = ["euler"]\ntolerances = [1e-2]\n')
    with pytest.raises(ConfigError, match=re.escape(words)):
        sweep_settings(config)
    config.write_text('[sweep]\nsamplers = ["euler", "tsit5"]\ntolerances = [1e-2]\n')
    assert sweep_settings(config, {"samplers": ("euler",)}).samplers == ("euler",)
    # The mirror case: budgets beside adaptive rows only were read by no row, exit 0.
    words = "sweep.nfe: sweep.samplers (tsit5) run at tolerances"
    with pytest.raises(ConfigError, match=re.escape(words)):
        sweep_settings(None, {"samplers": ("tsit5",), "nfe": (5,)})
    config.write_text('[sweep]\nsamplers = ["euler", "tsit5"]\nnfe = [5]\n')
    assert sweep_settings(config, {"samplers": ("tsit5",)}).samplers == ("tsit5",)


_ROW = {
    "sampler": "euler", "score": "exact", "nfe": 10, "levels": 10, "seed": 0, "sw": 0.1,
    "mmd2": -0.001, "tv": 0.05, "var_ratio": None, "near": 0.9, "far": 0.01, "n_empty": 0,
}  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda row: row.pop("mmd2"), "row 2: field(s) mmd2 unlike"),  # a KeyError, exit 1
        (lambda row: row.update(bogus=1), "row 2: field(s) bogus unlike"),  # a csv error at the end
        (lambda row: row.update(sw="oops"), "row 2: sw 'oops' is not a finite number"),
        (lambda row: row.update(sw=float("inf")), "row 2: sw inf is not a finite number"),
        (lambda row: row.update(sw=float("nan")), "row 2: sw nan is not a finite number"),
        (lambda row: row.update(seed="0"), "row 2: seed '0' of the wrong type"),
    ],
)
def test_a_damaged_partial_row_is_refused_naming_it(tmp_path, edit, words):
    """A hand-edited row failed after every remaining run (a KeyError or NumPy's TypeError,
    exit 1), or its NaN and inf measures were copied into the results."""
    about = {"settings": {"nfe": [10]}}
    rows = [dict(_ROW), dict(_ROW, seed=1)]
    assert np.isnan(load_partial(save_partial(tmp_path, about, rows).parent, about)[1]["var_ratio"])
    edit(rows[1])
    (tmp_path / PARTIAL).write_text(json.dumps({"about": about, "rows": rows}))
    with pytest.raises(ValueError, match=re.escape(words)):
        load_partial(tmp_path, about)


@pytest.mark.slow  # sweeps every sampler
def test_budgets_buy_the_largest_grid_and_nfe_is_reported_honestly(mixture):
    tsit5 = sweep_sampler("tsit5", rtol=1e-2, atol=1e-2)
    specs = [sweep_sampler("euler"), sweep_sampler("heun"), tsit5]
    result = sweep(
        mixture, specs, [4, 8], {"exact": ExactScore(mixture)}, n_samples=300, seeds=(0,),
        floor_repeats=2,
    )  # fmt: skip
    nfes = {(row["sampler"], row["levels"]): row["nfe"] for row in result.rows}
    assert nfes == {
        ("euler", 4): 4,
        ("euler", 8): 8,
        ("heun", 2): 3,  # 2N - 1 <= 4
        ("heun", 4): 7,  # 2N - 1 <= 8
        ("tsit5(rtol=0.01, atol=0.01)", None): nfes[("tsit5(rtol=0.01, atol=0.01)", None)],
    }
    assert (
        nfes[("tsit5(rtol=0.01, atol=0.01)", None)] >= 6 + 2
    )  # one step at least, start and denoiser
    assert set(result.floors) == {"sw", "mmd2", "tv"}
    for row in result.rows:
        assert np.isfinite([row["sw"], row["mmd2"], row["tv"]]).all()
        assert 0.0 <= row["far"] <= 1.0


def test_a_map_in_parts_reuses_its_floors_and_rows_do_not_change(mixture):
    # One sweep of two samplers against two sweeps of one, the second given the first's floors:
    # the same rows (common random numbers per seed), and the floors passed through unmeasured.
    score_fns = {"exact": ExactScore(mixture)}
    kwargs = dict(n_samples=200, seeds=(0,), floor_repeats=2, n_projections=20)
    euler, heun = sweep_sampler("euler"), sweep_sampler("heun")
    whole = sweep(mixture, [euler, heun], [4], score_fns, **kwargs)
    first = sweep(mixture, [euler], [4], score_fns, **kwargs)
    marked = {"sw": (-1.0, 0.0), "mmd2": (-2.0, 0.0), "tv": (-3.0, 0.0)}  # no metric's value
    second = sweep(mixture, [heun], [4], score_fns, known_floors=marked, **kwargs)
    assert first.floors == whole.floors
    assert second.floors == marked
    assert first.rows + second.rows == whole.rows
    assert second.settings == whole.settings


@pytest.mark.parametrize("prior", PRIORS)
def test_the_sweep_starts_every_seed_from_its_prior(mixture, prior):
    """A row is the sampler run from ``prior``'s draws under the seed's prior key (split(key(s),
    3)[0]) with the chain key, measured against the reference: the same numbers computed by
    hand; the three priors give three different rows, and the settings record which."""
    sigmas = sigma_grid("karras", 4, 0.002, 80.0, 7.0)
    result = sweep(
        mixture, [sweep_sampler("euler")], [4], {"exact": ExactScore(mixture)}, n_samples=200,
        seeds=(5,), floor_repeats=2, n_projections=20, prior=prior,
    )  # fmt: skip
    key_prior, key_chain, key_reference = jax.random.split(jax.random.key(5), 3)
    x_T = draw_prior(prior, key_prior, 200, 2, 80.0, mixture)
    x = samplers.sample(key_chain, samplers.Euler(sigmas), ExactScore(mixture), x_T).x
    expected = measure(np.asarray(x), np.asarray(mixture.sample(key_reference, 200)), mixture,
                       n_projections=20)  # fmt: skip
    (row,) = result.rows
    for name in ("sw", "mmd2", "tv", "var_ratio", "far"):
        assert row[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-9), name
    assert result.settings["prior"] == prior
    others = [draw_prior(p, key_prior, 200, 2, 80.0, mixture) for p in PRIORS if p != prior]
    assert all(not np.allclose(x_T, other) for other in others)


def _fake_result(points, floor=(1.0, 0.1)):
    rows = [
        {"sampler": s, "score": "exact", "nfe": n, "levels": n, "seed": seed, "sw": v,
         "mmd2": v, "tv": v, "var_ratio": 1.0, "near": 1.0, "far": 0.0}
        for s, series in points.items() for n, v in series for seed in (0, 1)
    ]  # fmt: skip
    return SweepResult(rows, {"sw": floor, "mmd2": floor, "tv": floor}, {})


def test_fewest_nfe_is_the_budget_from_which_the_bound_holds():
    result = _fake_result(
        {
            "a": [(5, 2.0), (10, 1.0), (20, 1.3)],  # within 1.5 x 1.0 from 10 on
            "b": [(5, 1.0), (10, 2.0), (20, 1.0)],  # dips in and out: only from 20
            "c": [(5, 3.0), (10, 2.0)],  # never
        }
    )
    fewest = fewest_nfe(result, "sw")
    assert fewest == {("a", "exact"): 10, ("b", "exact"): 20, ("c", "exact"): None}
    # MMD^2's floor is centred on 0: the bound is mean + 1.5 sd = 1.15.
    assert fewest_nfe(result, "mmd2")[("a", "exact")] is None
    assert len(mean_rows(result.rows)) == 8 and mean_rows(result.rows)[0]["n_seeds"] == 2
    # "all": every metric within its bound (here MMD^2's 1.15 fails a and b at 1.3 / 2.0)...
    assert fewest_nfe(result, "all") == {("a", "exact"): None, ("b", "exact"): 20,
                                         ("c", "exact"): None}  # fmt: skip
    # ... and the within-mode variance in VAR_RATIO_BAND: a collapsed point fails.
    collapsed = [{**row, "var_ratio": 0.14} if row["nfe"] == 20 else row for row in result.rows]
    assert fewest_nfe(result._replace(rows=collapsed), "all")[("b", "exact")] is None


def test_settings_and_samplers_reject_unknown_names():
    with pytest.raises(ValueError, match="unknown sampler 'rk4'"):
        sweep_sampler("rk4")
    with pytest.raises(ValueError, match="unknown option 'churn'"):
        sweep_sampler("edm", churn=3)
    with pytest.raises(ValueError, match="sweep.nfes: unknown field"):
        SweepSettings.from_dict({"nfes": [1]})
    settings = SweepSettings.from_dict(
        {"samplers": ["tsit5", "predictor_corrector"], "tolerances": [1e-2, 1e-3]}
    )
    assert [spec.label for spec in settings.specs()] == [
        "tsit5(rtol=0.01, atol=0.01)",
        "tsit5(rtol=0.001, atol=0.001)",
        "predictor_corrector(n_corrector=1)",
    ]
    with pytest.raises(ValueError, match="'pc' is now called 'predictor_corrector'"):
        SweepSettings.from_dict({"samplers": ["pc"]}).specs()


@pytest.mark.slow
@pytest.mark.parametrize("name, nfe", [("heun", 40), ("dpmpp_2m", 40), ("euler_maruyama", 160)])
def test_exact_score_reaches_the_floor(mixture, name, nfe):
    """With the exact score, what is left is the finite sample, not the sampler: the seed-mean
    SW and TV of 8 seeds x 4000 samples are within three standard errors of their floors' means
    (8 exact pairs). Under "the sampler is exact" a row and a floor pair are draws of the same
    law, so the difference of the two means has sd ``s * sqrt(1/8 + 1/8)`` with ``s`` the floor's
    sd. Three seeds were too few: the TV of one exact set is right-skewed (seed 0 draws 0.033
    against a mean of 0.018 with every converged sampler). The budgets are the sampler map's
    order (docs/benchmarks.md): second-order solvers are there by 20-40 NFE, the first-order
    Euler-Maruyama needs 160 at this sample size."""
    n = 8
    result = sweep(mixture, [sweep_sampler(name)], [nfe], {"exact": ExactScore(mixture)},
                   seeds=range(n), floor_repeats=n)  # fmt: skip
    (row,) = mean_rows(result.rows)
    for metric in ("sw", "tv"):
        mean, sd = result.floors[metric]
        assert row[metric] <= mean + 3 * sd * np.sqrt(2 / n), (metric, row[metric], mean, sd)


def test_cli_sweep_writes_table_csv_json_and_plot(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text('[sweep]\nsamplers = ["euler", "edm"]\n[sweep.options.edm]\ns_churn = 5.0\n')
    out = tmp_path / "map"
    argv = ["sweep", "--config", str(config), "--nfe", "3,6", "--n", "200", "--seeds", "0",
            "--prior", "moments", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "euler [exact]" in printed and "edm(s_churn=5.0) [exact]" in printed
    assert "floor sw" in printed
    for name in ("sweep.csv", "sweep.json", "sampler_map.png"):
        assert (out / name).is_file(), name
    payload = json.loads((out / "sweep.json").read_text())
    assert len(payload["rows"]) == 4 and payload["settings"]["n_samples"] == 200
    assert payload["settings"]["prior"] == "moments"
    assert set(payload["fewest_nfe_within_1.5x_floor"]) == {"sw", "mmd2", "tv", "all"}


def test_cli_sweep_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", "--samplers", "rk4", "--out", str(tmp_path)]) == 2
    assert "--samplers: unknown sampler 'rk4'" in capsys.readouterr().err
    assert main(["sweep", "--target", "moons", "--out", str(tmp_path)]) == 2
    assert "error: --target: unknown 'moons'" in capsys.readouterr().err
    # read, then ignored: the geometric grid has no curvature
    assert main(["sweep", "--grid", "geometric", "--rho", "3", "--out", str(tmp_path)]) == 2
    assert "error: --rho: the 'geometric' grid has no rho" in capsys.readouterr().err


def test_cli_sweep_takes_a_saved_model_and_refuses_an_unconditional_one(tmp_path, capsys):
    """``--run`` accepts what save_model wrote (the demo's ``models/ncsn``), adds its rows
    beside the exact score's, and rejects a network that ignores sigma."""
    import jax

    from scorelab.checkpoints import save_model
    from scorelab.models import MLP, NoiseConditionalMLP

    save_model(tmp_path / "ncsn", NoiseConditionalMLP(jax.random.key(0), dim=2), dim=2)
    save_model(tmp_path / "mlp", MLP(jax.random.key(0), dim=2), dim=2)
    out = tmp_path / "map"
    argv = ["sweep", "--samplers", "euler", "--nfe", "3", "--n", "100", "--seeds", "0",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main([*argv, "--run", str(tmp_path / "ncsn")]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [row["score"] for row in rows] == ["exact", "model"]
    capsys.readouterr()
    assert main([*argv, "--run", str(tmp_path / "mlp")]) == 2
    assert "measures noise-conditional models of points (ncsn_mlp" in capsys.readouterr().err
    assert main([*argv, "--run", str(tmp_path / "missing")]) == 2
    assert "neither a run directory nor a saved model" in capsys.readouterr().err


@pytest.mark.slow  # sweeps twice
def test_an_interrupted_cli_sweep_keeps_its_rows_and_resume_ends_as_uninterrupted(
    tmp_path, capsys, monkeypatch
):
    """A sweep interrupted half way (Ctrl-C, SIGTERM) lost every row it had measured; it keeps
    them in sweep.partial.json, and --resume measures only the rest. Every row depends on its
    own seed, sampler and grid alone, so the files equal the uninterrupted sweep's, byte for
    byte, whatever the rows re-used."""
    import jax

    import scorelab.sweep
    from scorelab.checkpoints import save_model
    from scorelab.models import NoiseConditionalMLP

    save_model(tmp_path / "ncsn", NoiseConditionalMLP(jax.random.key(0), dim=2), dim=2)
    argv = ["sweep", "--samplers", "euler,tsit5", "--tolerances", "0.01", "--nfe", "3,6",
            "--n", "100", "--seeds", "0,1", "--run", str(tmp_path / "ncsn"), "--quiet"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0

    measure, calls = scorelab.sweep.measure, [0]

    def interrupted_measure(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:  # within seed 0's tsit5 run, after Euler's 4 rows (2 grids, 2 scores)
            raise KeyboardInterrupt
        return measure(*args, **kwargs)

    monkeypatch.setattr(scorelab.sweep, "measure", interrupted_measure)
    out = tmp_path / "part"
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == (
        f"scorelab sweep: interrupted: 4 rows kept in {out / 'sweep.partial.json'}; rerun it "
        "with --resume (the same settings, without --overwrite) to continue"
    )
    monkeypatch.undo()
    assert main([*argv, "--out", str(out)]) == 2  # without --resume it is refused
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--n", "101", "--out", str(out), "--resume"]) == 2
    assert "sweep.n_samples differ" in capsys.readouterr().err
    resumed = [0]

    def counted_measure(*args, **kwargs):
        resumed[0] += 1
        return measure(*args, **kwargs)

    monkeypatch.setattr(scorelab.sweep, "measure", counted_measure)
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    monkeypatch.undo()
    assert resumed[0] == 12 - 4  # the kept rows are not measured again
    assert not (out / "sweep.partial.json").exists()
    for name in ("sweep.csv", "sweep.json"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert main([*argv, "--out", str(out), "--resume"]) == 2
    assert "holds a finished sweep" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "holds no unfinished sweep" in capsys.readouterr().err


def test_a_sweep_config_key_outside_its_table_is_told_where_it_goes(tmp_path):
    """``n_samples = 200`` above ``[sweep]`` was told to "leave [n_samples] out", a table."""
    from scorelab.sweep import sweep_settings

    config = tmp_path / "sweep.toml"
    config.write_text("n_samples = 200\n[sweep]\nnfe = [4]\n")
    with pytest.raises(ValueError, match=r"^n_samples: a key outside the \[sweep\] table"):
        sweep_settings(config)
    config.write_text("[train]\nsteps = 2\n")
    with pytest.raises(ValueError, match=r"leave \[train\] out"):
        sweep_settings(config)
    config.write_text("[sweep]\nnfe = [4]\n")
    assert sweep_settings(config, {"seeds": (1,)}).seeds == (1,)


def test_a_saved_grid_sets_the_sweeps_range_unless_given():
    """As ``scorelab sample``'s: ``--grid ays:NAME`` alone was refused, asking for the grid's
    own ends as --sigma-min and --sigma-max."""
    saved = read_saved_grid("ays:ld3_seed_mixture_ipndm_10")
    settings = sweep_settings(None, {"grid": "ays:ld3_seed_mixture_ipndm_10"})
    assert (settings.sigma_min, settings.sigma_max) == (saved[0], saved[-1])
    given = sweep_settings(None, {"grid": "ays:ld3_seed_mixture_ipndm_10", "sigma_max": 60.0})
    assert (given.sigma_min, given.sigma_max) == (saved[0], 60.0)


def test_diverged_samples_make_a_row_of_nan_not_an_error():
    """The metrics refuse non-finite samples (NaN rows were counted in mode 0); a sampler's
    diverged chains still make a row, of undefined (NaN, written null) measures."""
    from scorelab.report import measure
    from scorelab.targets import seed_mixture

    target = seed_mixture()
    reference = np.asarray(target.sample(jax.random.key(0), 200))
    diverged = reference.copy()
    diverged[:10] = np.nan
    row = measure(diverged, reference, target, ksd=True)
    assert set(row) == {"sw", "mmd2", "tv", "var_ratio", "near", "far", "n_empty", "ksd2",
                        "ksd2_se"}  # fmt: skip
    assert all(np.isnan(value) for value in row.values())
    assert set(measure(reference, reference, target, ksd=True)) == set(row)


def test_the_map_refuses_a_run_trained_on_other_data_than_its_target(tmp_path):
    """``sweep --run`` of a two_moons model measured it against seed_mixture and its floor,
    exit 0 (pass 23, #1): a run directory's data must be the target's."""
    from scorelab.config import ExperimentConfig
    from scorelab.sweep import load_score_model
    from scorelab.workflows import train_run

    values = {"data": {"source": "two_moons", "n": 64}, "loss": {"name": "ncsn"}}
    values["train"] = {"steps": 2, "batch_size": 16, "ema_decay": None}
    train_run(ExperimentConfig.from_dict(values), tmp_path / "moons", progress=False)
    with pytest.raises(ValueError, match=r"trained on 'two_moons' data, and the map measures"):
        load_score_model(tmp_path / "moons", dim=2, target="seed_mixture")
    load_score_model(tmp_path / "moons", dim=2)  # no target named: nothing to compare


@pytest.mark.slow  # sweeps twice
def test_a_sweep_whose_finish_failed_is_resumed_from_its_rows(tmp_path, capsys, monkeypatch):
    """A sweep that measured every row and then failed writing its figure (a full disk) kept
    sweep.json but had removed its rows file: ``--resume`` said "holds a finished sweep;
    nothing to continue" (pass 22). The rows file now goes last, and a resume finishes from it
    without measuring again."""
    import errno

    import scorelab.sweep
    import scorelab.viz

    out = tmp_path / "map"
    argv = ["sweep", "--samplers", "euler", "--nfe", "3", "--n", "100", "--seeds", "0",
            "--out", str(out), "--quiet"]  # fmt: skip

    def full_disk(figure, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(scorelab.viz, "save_figure", full_disk)
    assert main(argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    measured = [0]
    measure = scorelab.sweep.measure

    def counted_measure(*args, **kwargs):
        measured[0] += 1
        return measure(*args, **kwargs)

    monkeypatch.setattr(scorelab.sweep, "measure", counted_measure)
    assert main([*argv, "--resume"]) == 0
    assert measured[0] == 0
    assert (out / "sampler_map.png").is_file() and not (out / PARTIAL).exists()
    assert main([*argv, "--resume"]) == 2
    assert "holds a finished sweep" in capsys.readouterr().err
