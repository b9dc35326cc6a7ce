"""`scorelab sample` with every sampler of the registry: options reach the sampler, adaptive NFE
is the chains' own, MALA only with a log-density, and bad values are one-line errors."""

import dataclasses

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


def test_config_fields_are_the_registry_options_with_its_defaults():
    """One table: every option of every sampler is a SamplerConfig field with the same default,
    and every name builds."""
    config = SamplerConfig()
    fields = {field.name for field in dataclasses.fields(SamplerConfig)}
    for option, default in samplers.SAMPLER_OPTIONS.items():
        assert option in fields and getattr(config, option) == default, option
    target = DataConfig().target()
    for name in samplers.SAMPLERS:
        sampler = SamplerConfig(name=name, n_levels=3, n_steps=3).build(target)
        expected = {"annealed": "annealed_langevin", "tsit5": "tsit5", "dopri5": "dopri5"}
        assert sampler.name.startswith(expected.get(name, name)), (name, sampler.name)
        assert (sampler.nfe is None) == (name in samplers.ADAPTIVE_SOLVERS)


def test_options_reach_the_sampler_through_the_cli(tmp_path, capsys):
    """Stated equivalences, through the flags: Euler = DDIM with e = 0 on the same grid, and
    predictor-corrector with no corrector step = Euler-Maruyama (same draws)."""
    grid = ("--levels", "12", "--grid", "karras", "--rho", "7")
    euler = _sample(tmp_path, "euler", "--sampler", "euler", *grid)
    ddim = _sample(tmp_path, "ddim", "--sampler", "ddim", "--e", "0", *grid)
    np.testing.assert_allclose(euler, ddim, rtol=0, atol=1e-4)
    em = _sample(tmp_path, "em", "--sampler", "euler_maruyama", *grid)
    pc0 = _sample(tmp_path, "pc0", "--sampler", "pc", "--n-corrector", "0", *grid)
    pc1 = _sample(tmp_path, "pc1", "--sampler", "pc", "--n-corrector", "1", *grid)
    np.testing.assert_allclose(em, pc0, rtol=0, atol=1e-4)
    assert np.abs(pc1 - em).max() > 1e-2  # the corrector changed something
    printed = capsys.readouterr().out
    assert "(euler, NFE 12)" in printed and "(pc, NFE 24)" in printed


def test_adaptive_reports_the_chains_own_nfe(tmp_path, capsys):
    """A tsit5 solve costs each chain its own count: the mean over chains is reported, with
    the range, and equals what the library returns."""
    _sample(tmp_path, "tsit5", "--sampler", "tsit5", "--rtol", "1e-2", "--atol", "1e-2", n=32)
    printed = capsys.readouterr().out
    config = ExperimentConfig(sampler=SamplerConfig(name="tsit5", rtol=1e-2, atol=1e-2))
    result = sample_run(config, None, 32, 0)
    assert result.nfe_per_chain.shape == (32,) and result.nfe_per_chain.min() >= 8
    low, high = int(result.nfe_per_chain.min()), int(result.nfe_per_chain.max())
    assert f"NFE {result.nfe:.1f} per chain on average, {low}-{high}" in printed
    assert result.nfe == pytest.approx(result.nfe_per_chain.mean())


def test_mala_needs_the_exact_log_density(tmp_path, mixture):
    x = _sample(tmp_path, "mala", "--sampler", "mala", "--n-steps", "20", "--step-size", "0.05")
    assert x.shape == (64, 2) and np.isfinite(x).all()
    config = ExperimentConfig(sampler=SamplerConfig(name="mala", n_steps=5))
    with pytest.raises(ConfigError, match="sampler.name: 'mala' needs the target's log-density"):
        sample_run(config, ExactScore(mixture), 8, 0)  # a model: no log-density


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--sampler", "rk4"], "sampler.name: unknown value 'rk4'; accepted: ula, mala,"),
        (["--sampler", "pc", "--step-rule", "batch"], "sampler.step_rule: unknown value"),
        (["--sampler", "pc", "--n-corrector", "-1"], "sampler.n_corrector: expected an integer"),
        (["--sampler", "pc", "--snr", "0"], "sampler.snr: expected a number > 0, got 0.0"),
        (["--sampler", "edm", "--s-tmax", "0.01"], "sampler.s_tmax: expected a number >= s_tmin"),
        (["--sampler", "tsit5", "--rtol", "-1"], "sampler.rtol: expected a number > 0"),
        (["--sampler", "dopri5", "--max-steps", "0"], "sampler.max_steps: expected an integer"),
        (["--sampler", "mala", "--step-size", "0"], "sampler.step_size: expected a number > 0"),
        (["--sampler", "mala", "--set", "data.source=two_moons"], "data.source: no exact score"),
    ],
)
def test_bad_sampler_values_are_one_line_errors(flags, expected, tmp_path, capsys):
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", str(tmp_path / "x.npy")]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scorelab sample: error: ") and expected in err
    assert err.count("\n") == 1
