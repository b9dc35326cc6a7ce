"""`scorelab sample` with every sampler of the registry: options reach the sampler, adaptive NFE
is the chains' own, MALA only with a log-density, and bad values are one-line errors."""

import numpy as np
import pytest

from scorelab import samplers
from scorelab.cli import main
from scorelab.config import ConfigError, DataConfig, ExperimentConfig, SamplerConfig
from scorelab.models import ExactScore
from scorelab.workflows import sample_run


def _sample(tmp_path, name, *flags, n=64):
    out = tmp_path / f"{name}.npy"
    argv = ["sample", "--exact", "seed_mixture", "--n", str(n), "--out", str(out), *flags]
    assert main(argv) == 0
    return np.load(out)


def test_the_cli_flags_and_config_are_generated_from_the_declared_options():
    """One declaration: every option of every sampler is a CLI flag writing
    ``sampler.options.NAME`` with the declared type, the config builds every name with its
    declared defaults, and a given option reaches the sampler."""
    from scorelab.builders import make_sampler, make_target
    from scorelab.cli import _sampler_flags

    target = make_target(DataConfig())
    for name in samplers.SAMPLERS:
        for option in samplers.options(name):
            flag = "--" + option.name.replace("_", "-")
            assert _sampler_flags()[flag][0] == f"sampler.options.{option.name}"
        config = ExperimentConfig.from_dict({"sampler": {"name": name, "n_levels": 3}})
        sampler = make_sampler(config.sampler, target)
        assert sampler.name == samplers.label(name, samplers.sampler_options(name))
        assert (sampler.nfe is None) == (name in {*samplers.ADAPTIVE_SOLVERS, "dpm_adaptive"})
    config = ExperimentConfig.from_dict({"sampler": {"name": "ddim", "options": {"eta": 0.25}}})
    assert make_sampler(config.sampler).eta == 0.25


@pytest.mark.slow  # about 12 s of a worker: kept out of the default suite's 15 minutes
def test_options_reach_the_sampler_through_the_cli(tmp_path, capsys):
    """Stated equivalences, through the flags: Euler = DDIM with eta = 0 on the same grid, and
    predictor-corrector with no corrector step = Euler-Maruyama (same draws)."""
    grid = ("--levels", "12", "--grid", "karras", "--rho", "7")
    euler = _sample(tmp_path, "euler", "--sampler", "euler", *grid)
    ddim = _sample(tmp_path, "ddim", "--sampler", "ddim", "--eta", "0", *grid)
    np.testing.assert_allclose(euler, ddim, rtol=0, atol=1e-4)
    em = _sample(tmp_path, "em", "--sampler", "euler_maruyama", *grid)
    pc0 = _sample(tmp_path, "pc0", "--sampler", "predictor_corrector", "--n-corrector", "0", *grid)
    pc1 = _sample(tmp_path, "pc1", "--sampler", "predictor_corrector", "--n-corrector", "1", *grid)
    np.testing.assert_allclose(em, pc0, rtol=0, atol=1e-4)
    assert np.abs(pc1 - em).max() > 1e-2  # the corrector changed something
    printed = capsys.readouterr().out
    assert "(euler, NFE 12)" in printed and "(predictor_corrector, NFE 24)" in printed


def test_adaptive_reports_the_chains_own_nfe(tmp_path, capsys):
    """A tsit5 solve costs each chain its own count: the mean over chains is reported, with
    the range, and equals what the library returns."""
    _sample(tmp_path, "tsit5", "--sampler", "tsit5", "--rtol", "1e-2", "--atol", "1e-2", n=32)
    printed = capsys.readouterr().out
    config = ExperimentConfig(
        sampler=SamplerConfig(name="tsit5", options={"rtol": 1e-2, "atol": 1e-2})
    )
    result = sample_run(config, None, 32, 0)
    assert result.nfe_per_chain.shape == (32,) and result.nfe_per_chain.min() >= 8
    low, high = int(result.nfe_per_chain.min()), int(result.nfe_per_chain.max())
    assert f"NFE {result.nfe:.1f} per chain on average, {low}-{high}" in printed
    assert result.nfe == pytest.approx(result.nfe_per_chain.mean())


def test_mala_needs_the_exact_log_density(tmp_path, mixture):
    x = _sample(tmp_path, "mala", "--sampler", "mala", "--n-steps", "20", "--step-size", "0.05")
    assert x.shape == (64, 2) and np.isfinite(x).all()
    config = ExperimentConfig(sampler=SamplerConfig(name="mala", options={"n_steps": 5}))
    with pytest.raises(ConfigError, match="sampler.name: 'mala' needs the target's log-density"):
        sample_run(config, ExactScore(mixture), 8, 0)  # a model: no log-density


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--sampler", "rk4"], "--sampler (sampler.name): unknown sampler 'rk4'"),
        (["--sampler", "pc"], "(sampler.name): sampler 'pc' is now called"),
        (
            ["--sampler", "predictor_corrector", "--step-rule", "batch"],
            "--step-rule (sampler.options.step_rule): unknown step_rule 'batch'",
        ),
        (
            ["--sampler", "predictor_corrector", "--n-corrector", "-1"],
            "--n-corrector (sampler.options.n_corrector): must be an integer >= 0",
        ),
        (
            ["--sampler", "predictor_corrector", "--snr", "0"],
            "--snr (sampler.options.snr): must be > 0",
        ),
        # a message about several options: under the first given one it names
        (
            ["--sampler", "edm", "--s-tmax", "0.01"],
            "--s-tmax (sampler.options.s_tmax): need s_churn >= 0 and 0 <= s_tmin <= s_tmax",
        ),
        (["--sampler", "tsit5", "--rtol", "-1"], "--rtol (sampler.options.rtol): need 0 < rtol"),
        (["--sampler", "dopri5", "--rtol", "1"], "--rtol (sampler.options.rtol): need 0 < rtol"),
        (["--sampler", "dopri5", "--max-steps", "0"], "(sampler.options.max_steps): must be a"),
        (["--sampler", "mala", "--step-size", "0"], "(sampler.options.step_size): must be >"),
        (["--sampler", "mala", "--set", "data.source=two_moons"], "data.source: no exact score"),
        (["--sampler", "ddim", "--n-steps", "3"], "(sampler.options.n_steps): sampler 'ddim'"),
        # the kernel's out-of-memory killer, 17 GiB in: the corrector steps' noise was unsized
        (
            ["--sampler", "predictor_corrector", "--levels", "6", "--n-corrector", "2000000000"],
            "n_corrector=2000000000) (one chain's noise): needs",
        ),
        (["--sampler", "ula", "--n-steps", "2000000000"], "2000000000 steps of ula"),
    ],
)
def test_bad_sampler_values_are_one_line_errors(flags, expected, tmp_path, capsys):
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", str(tmp_path / "x.npy")]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scorelab sample: error: ") and expected in err
    assert err.count("\n") == 1


@pytest.mark.slow  # samples at several chunk sizes
def test_chunks_do_not_change_the_samples_and_sizes_are_checked_first():
    """Chains run ``batch`` at a time give exactly the samples of one call (keys by chain
    index), chunks of one chain included (XLA rounds a batch of one otherwise: 1e-5 apart
    with the exact score, and tsit5's step choices made it 3e-2 and other evaluation counts),
    and a size beyond memory is refused before anything is allocated."""
    for name in ("ddim", "euler_maruyama", "tsit5"):
        config = ExperimentConfig.from_dict({"sampler": {"name": name, "n_levels": 10}})
        whole = sample_run(config, None, 7, 3)
        for batch in (1, 3):  # 3: chunks of 3, 3 and 1
            chunked = sample_run(config, None, 7, 3, batch=batch)
            np.testing.assert_array_equal(whole.x, chunked.x, err_msg=f"{name}, batch {batch}")
            if name == "tsit5":
                np.testing.assert_array_equal(whole.nfe_per_chain, chunked.nfe_per_chain)
    with pytest.raises(ConfigError, match=r"sample.n: needs .* of memory, .* available"):
        sample_run(config, None, 10**13, 0)
