"""Hostile input, tried as a user would: every case ends in one line on stderr and exit status 2,
never a traceback, and leaves what was on disk intact.

The corpus covers data files, configuration files and flags, run directories and models,
outputs, sizes beyond memory and non-finite results (the pretrained loader's corpus is in
``tests/test_pretrained_hostile.py``). Files are generated here; most cases call
:func:`scorelab.cli.main` in-process (the boundary is the same function), and a few run the
installed console script as a subprocess.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.cli import main
from scorelab.config import ConfigError, ExperimentConfig
from scorelab.data import digits
from scorelab.workflows import _likelihood_points, likelihood_points

# Training on a data file (used whole); _TINY also draws fewer points from a built-in target.
_TINY_FILE = [
    "--steps",
    "4",
    "--batch-size",
    "16",
    "--set",
    "train.steps_per_dispatch=2",
    "--quiet",
]
_TINY = [*_TINY_FILE, "--set", "data.n=64"]


def _fails(argv, capsys, *fragments):
    """``main(argv)`` exits 2 with one line on stderr containing every fragment."""
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scorelab"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _npy_with_rows(path: Path, rows: int):
    """A .npy whose header declares ``rows`` x 2 float32 but holds no data."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 2), }}"
    header = header.ljust(118) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())


def _data_file(tmp_path: Path, kind: str) -> Path:
    """One hostile data file of the corpus."""
    path = tmp_path / f"{kind}.npy"
    rng = np.random.default_rng(0)
    good = rng.normal(size=(50, 2)).astype(np.float32)
    if kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "truncated":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "huge_header":
        _npy_with_rows(path, 10**11)
    elif kind == "complex":
        np.save(path, good + 1j)
    elif kind == "nan":
        np.save(path, np.where(np.arange(50)[:, None] == 7, np.nan, good))
    elif kind == "inf":
        np.save(path, np.where(np.arange(50)[:, None] == 3, np.inf, good))
    elif kind == "beyond_float32":
        np.save(path, good.astype(np.float64) * 1e39)
    elif kind == "near_float32_max":
        np.save(path, good * np.float32(1e30))
    elif kind == "one_dimensional":
        np.save(path, good[:, 0])
    elif kind == "three_dimensional":
        np.save(path, good.reshape(25, 2, 2))
    elif kind == "strings":
        np.save(path, np.array([["a", "b"]] * 5))
    elif kind == "objects":
        np.save(path, np.array([[object(), 1]] * 5, dtype=object), allow_pickle=True)
    elif kind == "zero_rows":
        np.save(path, np.zeros((0, 2), np.float32))
    elif kind == "zero_columns":
        np.save(path, np.zeros((5, 0), np.float32))
    elif kind == "npz_named_npy":
        np.savez(tmp_path / "x.npz", a=good)
        path.write_bytes((tmp_path / "x.npz").read_bytes())
    elif kind == "text_named_npy":
        path.write_text("1,2\n3,4\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "wrong_suffix":
        path = tmp_path / "data.txt"
        path.write_text("1,2\n")
    elif kind == "bool":
        np.save(path, good > 0)
    elif kind == "csv_empty":
        path = tmp_path / "empty.csv"
        path.write_text("")
    elif kind == "csv_header_only":
        path = tmp_path / "header.csv"
        path.write_text("x,y\n")
    elif kind == "csv_nan_first_row":
        path = tmp_path / "nanfirst.csv"
        path.write_text("nan,nan\n" + "\n".join("1,2" for _ in range(20)) + "\n")
    elif kind == "csv_ragged":
        path = tmp_path / "ragged.csv"
        path.write_text("1,2\n3,4,5\n6,7\n")
    elif kind == "csv_words":
        path = tmp_path / "words.csv"
        path.write_text("a,b\nc,d\ne,f\n")
    elif kind == "csv_semicolons":
        path = tmp_path / "semi.csv"
        path.write_text("1;2\n3;4\n5;6\n")
    elif kind == "csv_binary":
        path = tmp_path / "binary.csv"
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "timedelta":  # numpy counts timedelta64 among its integers
        np.save(path, np.zeros((50, 2), "timedelta64[s]"))
    elif kind == "huge_columns":  # a header of 10**13 columns: refused before numpy allocates
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 10000000000000), }"
        header = header.ljust(118) + "\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    elif kind == "shape_bool":  # numpy reads the header, then "an integer is required"
        header = "{'descr': '<f8', 'fortran_order': False, 'shape': (True, 2), }"
        header = header.ljust(118) + "\n"
        magic = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
        path.write_bytes(magic + header.encode() + bytes(16))
    elif kind == "shape_overflow":  # "Python int too large to convert to C long"
        header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({2**70}, 0), }}"
        header = header.ljust(118) + "\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    elif kind == "csv_underscores":  # float() reads "1_000" as 1000
        path = tmp_path / "underscores.csv"
        path.write_text("1_000,2\n3,4\n5,6\n")
    elif kind == "csv_huge_field":  # csv's "field larger than field limit (131072)"
        path = tmp_path / "bigfield.csv"
        path.write_text("1,2\n3," + "4" * 200_000 + "\n")
    elif kind.startswith("npz_"):  # a damaged member: zipfile's own errors, not numpy's
        path = tmp_path / f"{kind}.npz"
        np.savez(path, a=good)
        data = bytearray(path.read_bytes())
        central = data.find(b"PK\x01\x02")
        if kind == "npz_bad_crc":
            data[data.find(b"\x93NUMPY") + 200] ^= 0xFF
        elif kind == "npz_encrypted":
            data[6] |= 1
            data[central + 8] |= 1
        elif kind == "npz_unknown_method":
            data[8] = data[central + 10] = 99
        else:
            raise AssertionError(kind)
        path.write_bytes(bytes(data))
    else:
        raise AssertionError(kind)
    return path


_BAD_DATA = [
    "shape_bool",
    "shape_overflow",
    "csv_huge_field",
    "csv_underscores",
    "npz_bad_crc",
    "npz_encrypted",
    "npz_unknown_method",
    "empty_file",
    "truncated",
    "huge_header",
    "complex",
    "nan",
    "inf",
    "beyond_float32",
    "one_dimensional",
    "three_dimensional",
    "strings",
    "objects",
    "zero_rows",
    "zero_columns",
    "npz_named_npy",
    "text_named_npy",
    "folder",
    "missing",
    "wrong_suffix",
    "csv_empty",
    "csv_header_only",
    "csv_nan_first_row",
    "csv_ragged",
    "csv_words",
    "csv_semicolons",
    "csv_binary",
    "timedelta",
    "huge_columns",
]


@pytest.mark.parametrize("kind", _BAD_DATA)
def test_train_refuses_bad_data(kind, tmp_path, capsys):
    path = _data_file(tmp_path, kind)
    out = tmp_path / "run"
    _fails(["train", "--loss", "dsm", "--data", path, "--out", out, *_TINY_FILE], capsys)
    assert not (out / "model.eqx").exists()


@pytest.mark.parametrize("kind", _BAD_DATA)
def test_evaluate_refuses_bad_samples(kind, tmp_path, capsys):
    path = _data_file(tmp_path, kind)
    _fails(["evaluate", path, "--target", "seed_mixture", "--floor-repeats", "2"], capsys)


@pytest.mark.parametrize("kind", _BAD_DATA)
def test_evaluate_refuses_bad_reference_data(kind, tmp_path, capsys):
    samples = tmp_path / "good.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    path = _data_file(tmp_path, kind)
    _fails(["evaluate", samples, "--data", path, "--floor-repeats", "2"], capsys)


def test_data_too_large_for_float32_is_refused_not_trained(tmp_path, capsys):
    path = _data_file(tmp_path, "near_float32_max")
    _fails(["train", "--loss", "dsm", "--data", path, "--out", tmp_path / "r", *_TINY_FILE], capsys)


_TOML = {
    "section_scalar": "data = 1\n",
    "invalid": "[data\nsource = 'x'\n",
    "unknown_section": "[optimizer]\nname = 'adam'\n",
    "unknown_field": "[train]\nepochs = 3\n",
    "bool_as_string": "[model]\nnormalise_input = 'false'\n",
    "int_as_float": "[train]\nsteps = 2.5\n",
    "string_as_int": "[data]\nsource = 1\n",
    "list_as_number": "[train]\nlearning_rate = [1, 2]\n",
    "negative_steps": "[train]\nsteps = -3\n",
    "nan_learning_rate": "[train]\nlearning_rate = nan\n",
    "inf_learning_rate": "[train]\nlearning_rate = inf\n",
    "bad_loss": "[loss]\nname = 'l2'\n",
    "bad_model_for_loss": "[loss]\nname = 'ncsn'\n[model]\nname = 'mlp'\n",
    "sigma_range": "[loss]\nsigma_min = 5.0\nsigma_max = 1.0\n",
    "bad_schedule": "[train]\nschedule = 'linear'\n",
    "warmup_without_schedule": "[train]\nwarmup_steps = 10\n",
    "adam_weight_decay": "[train]\nweight_decay = 0.1\n",
    "ema_out_of_range": "[train]\nema_decay = 1.5\n",
    "ema_one_in_float32": "[train]\nema_decay = 0.9999999999\n",  # an average that never moves
    "binary": None,
    # parsed, then a RecursionError traceback from the copy that applies --set (pass 20A)
    "tables_nested_900_deep": "[a" + ".b" * 900 + "]\nx = 1\n",
}


@pytest.mark.parametrize("case", sorted(_TOML))
def test_train_refuses_bad_config_files(case, tmp_path, capsys):
    path = tmp_path / "config.toml"
    if _TOML[case] is None:
        path.write_bytes(bytes(range(256)))
    else:
        path.write_text(_TOML[case])
    # No --steps / --batch-size flags: they would override the file's values.
    _fails(["train", "--config", path, "--out", tmp_path / "run", "--quiet"], capsys)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--loss", "dsm", "--set", "loss.weighting='edm'"], "loss.weighting: loss 'dsm'"),
        (["--loss", "ncsn", "--set", "loss.beta_end=0.5"], "loss.beta_end: loss 'ncsn'"),
        (
            ["--loss", "ncsn", "--set", "loss.p_mean=-1.2"],
            "loss.p_mean: sigma_distribution 'loguniform'",
        ),
        (["--loss", "ncsn", "--set", "loss.sigma=2.0"], "loss.sigma: loss 'ncsn'"),
        (["--loss", "sliced", "--set", "loss.probe='gaussian'"], "loss.probe: loss 'sliced'"),
        (["--loss", "ncsn", "--set", "model.channels=[16]"], "model.channels: model 'ncsn_mlp'"),
        (["--loss", "dsm", "--set", "model.scale_by_sigma=false"], "model.scale_by_sigma"),
        (
            ["--loss", "ncsn", "--set", "model.preconditioning='edm'"]
            + ["--set", "model.normalise_input=false"],
            "model.normalise_input: model 'ncsn_mlp' with preconditioning 'edm'",
        ),
        (
            ["--data", "digits", "--model", "unet", "--loss", "vp_epsilon"]
            + ["--set", "loss.weighting='edm'"],
            "loss.weighting: loss 'vp_epsilon'",
        ),
        (
            ["--data", "digits", "--model", "unet", "--loss", "vp_epsilon"]
            + ["--set", "model.scale_by_sigma=false"],
            "model.scale_by_sigma: model 'unet'",
        ),
    ],
)
def test_train_refuses_a_setting_the_loss_or_model_does_not_read(flags, words, tmp_path, capsys):
    """Each trained, exit 0, as if the setting were not there."""
    out = tmp_path / "run"
    _fails(["train", "--out", out, *_TINY_FILE, *flags], capsys, words, "leave it out")
    assert not out.exists()


@pytest.mark.parametrize("p_mean", [200.0, -30.0])
def test_a_lognormal_law_beyond_the_sigma_range_is_refused(p_mean, tmp_path, capsys):
    """Its draws are clipped to [sigma_min, sigma_max]: at p_mean = 200 every sigma was
    sigma_max, one noise level, and training said nothing."""
    law = ["--set", "loss.sigma_distribution='lognormal'", "--set", f"loss.p_mean={p_mean}"]
    out = tmp_path / "run"
    _fails(["train", "--loss", "ncsn", "--out", out, *_TINY, *law], capsys, "loss.p_mean")
    from scorelab.config import LossConfig

    LossConfig(sigma_distribution="lognormal", p_mean=math.log(80.0) + 3 * 1.2)  # the edge


def test_a_setting_the_loss_reads_is_not_refused():
    """The check names what is unread, not what differs from the defaults."""
    from scorelab.builders import check_fields_read
    from scorelab.config import ExperimentConfig

    edm = {"preconditioning": "edm", "activation": "silu"}
    lognormal = {"sigma_distribution": "lognormal", "p_mean": -1.2, "weighting": "edm"}
    check_fields_read(ExperimentConfig.from_dict({"model": edm, "loss": lognormal}))
    hutchinson = {"name": "hutchinson", "n_probes": 3, "probe": "gaussian"}
    check_fields_read(ExperimentConfig.from_dict({"loss": hutchinson}))
    unet = {"name": "unet", "channels": [8, 16], "norm_groups": 4}
    vp = {"name": "vp_epsilon", "beta_end": 0.03}
    digits = {"source": "digits"}
    check_fields_read(ExperimentConfig.from_dict({"data": digits, "model": unet, "loss": vp}))


@pytest.mark.parametrize(
    ("path_kind", "words"),
    [("missing", "config file not found"), ("folder", "a folder, not a config file")],
)
def test_train_refuses_a_config_path_that_is_not_a_file(path_kind, words, tmp_path, capsys):
    path = tmp_path / "c.toml"
    if path_kind == "folder":
        path.mkdir()
    argv = ["train", "--config", path, "--out", tmp_path / "run", *_TINY]
    _fails(argv, capsys, str(path), words)


_CONFIG_PATHS = [
    ["train", "--config", "PATH", "--out", "OUT"],
    ["demo", "--settings", "PATH", "--out", "OUT", "--quiet"],
]
_DATA_PATHS = [  # a folder is images there: only a special file is out of place
    ["train", "--data", "PATH", "--out", "OUT"],
    ["evaluate", "PATH", "--target", "seed_mixture"],
    ["evaluate", "S.npy", "--data", "PATH"],
    ["likelihood", "--exact", "seed_mixture", "--points", "PATH"],
]


@pytest.mark.parametrize(
    ("argv", "kind", "what"),
    [(argv, "a folder", "config file") for argv in _CONFIG_PATHS]
    + [(argv, "a special file", "config file") for argv in _CONFIG_PATHS]
    + [(argv, "a special file", "data file") for argv in _DATA_PATHS],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_a_path_that_is_not_a_regular_file_is_named_as_such(argv, kind, what, tmp_path, capsys):
    """``/dev/null`` and a folder given as a config were 'not found' ('no such file or folder'
    as a data source): the user looked for a missing file."""
    path = Path("/dev/null") if kind == "a special file" else tmp_path / "named.toml"
    if kind == "a folder":
        path.mkdir()
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    swap = {"PATH": path, "OUT": tmp_path / "out", "S.npy": samples}
    # `train --data /dev/zero` named the field "data./dev/zero"
    _fails([swap.get(a, a) for a in argv], capsys, f" {path}: {kind}", f"not a {what}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "RUN", "--target", "seed_mixture"],
        ["likelihood", "--exact", "seed_mixture", "--points", "RUN"],
        ["train", "--data", "RUN", "--model", "unet", "--loss", "vp_epsilon", "--out", "OUT"],
    ],
    ids=lambda a: a[0],
)
def test_a_run_directory_given_as_images_names_its_first_file(argv, run_dir, tmp_path, capsys):
    """A folder of files and sub-folders (a run: config.json, checkpoints/) was said to hold
    'both image files and sub-folders'; none of its files is an image."""
    argv = [{"RUN": run_dir, "OUT": tmp_path / "out"}.get(a, a) for a in argv]
    _fails(argv, capsys, f"{run_dir / 'config.json'}: not an image file", "only images")


_BAD_TRAIN_FLAGS = [
    ["--steps", "0"],
    ["--steps", "-1"],
    ["--batch-size", "0"],
    ["--lr", "0"],
    ["--lr", "-1e-3"],
    ["--lr", "nan"],
    ["--lr", "inf"],
    ["--seed", "-1"],
    ["--loss", "nope"],
    ["--model", "unet9"],
    ["--data", "nowhere"],
    ["--set", "data.source=1"],
    ["--set", "data.n=0"],
    ["--set", "steps=3"],
    ["--set", "train.steps"],
    ["--set", "=3"],
    ["--set", "data.n.x=3"],
    ["--lr", "many"],
    ["--unknown-flag", "3"],
    ["--set", "train.ema_decay='0.9'"],
    ["--set", "model.normalise_input='false'"],
    ["--set", "nope.x=1"],
    ["--batch-size", "10000000000000"],
    ["--set", "data.n=100000000000000"],
    ["--steps", "1000000000000"],
    ["--steps", "99999999999999999999"],  # numpy's 'Maximum allowed dimension exceeded'
]


@pytest.mark.parametrize("flags", _BAD_TRAIN_FLAGS, ids=" ".join)
def test_train_refuses_bad_flags(flags, tmp_path, capsys):
    _fails(["train", "--out", tmp_path / "run", *_TINY, *flags], capsys)


_BAD_SAMPLE_FLAGS = [
    ["--n", "0"],
    ["--n", "-5"],
    ["--n", "1000000000000"],
    ["--levels", "1"],
    ["--levels", "0"],
    ["--sampler", "nope"],
    ["--sampler", "pc"],
    ["--sampler", "annealed"],
    ["--sampler", "ddim", "--eta", "-1"],
    ["--sampler", "ddim", "--n-steps", "5"],
    ["--sampler", "ula", "--step-size", "0"],
    ["--sampler", "ula", "--n-steps", "0"],
    ["--sampler", "ula", "--step-size", "100"],
    ["--sampler", "annealed_langevin", "--n-steps-per-level", "0"],
    ["--sampler", "predictor_corrector", "--step-rule", "nope"],
    ["--sampler", "edm", "--s-churn", "-1"],
    ["--sampler", "tsit5", "--rtol", "0"],
    ["--sampler", "tsit5", "--max-steps", "0"],
    ["--sigma-max", "0"],
    ["--sigma-min", "5", "--sigma-max", "1"],
    ["--sigma-min", "-1"],
    ["--grid", "nope"],
    ["--rho", "0"],
    ["--prior", "nope"],
    ["--set", "sampler.options.eta='x'"],
    ["--set", "sampler.options=3"],
    ["--set", "sampler.levels=3"],
    ["--set", "sampler.name=1"],
    # Seeds outside [0, 2**32): JAX keeps 32 bits, so they would alias smaller ones.
    ["--seed", "-1"],
    ["--seed", "4294967296"],
    ["--seed", "99999999999999999999"],
    # Grid sizes beyond memory are refused before the grid is built (a C++ abort before).
    ["--levels", "1000000000000"],
    ["--nfe", "1000000000000"],
    # Non-finite options (inf only where it is the default, as euler_churn's s_tmax).
    ["--sampler", "ddim", "--eta", "inf"],
    ["--sampler", "ddim", "--eta", "nan"],
    ["--sampler", "dpmpp_sde", "--s-noise", "inf"],
    ["--grid", "ays:"],
    ["--grid", "ays:../grids/seed_mixture_10"],
    # Step counts set by options, beyond memory (restart hung, ULA ran out of memory).
    ["--sampler", "restart", "--n-restarts", "1000000000"],
    ["--sampler", "ula", "--n-steps", "10000000000"],
    # A solve stopped by max_steps was an internal error; an int option beyond int32 too.
    ["--sampler", "tsit5", "--max-steps", "1", "--levels", "4"],
    ["--sampler", "dpm_adaptive", "--max-steps", "1", "--levels", "4"],
    ["--sampler", "dopri5", "--max-steps", "1000000000000"],
    ["--sampler", "dpm_adaptive", "--accept-safety", "2"],  # no attempt is accepted
    # A negative noise level was passed to the score, exit 0.
    ["--sampler", "ula", "--sigma", "-1", "--n-steps", "3"],
    ["--sampler", "mala", "--sigma", "-1", "--n-steps", "3"],
]


@pytest.mark.parametrize("flags", _BAD_SAMPLE_FLAGS, ids=" ".join)
def test_sample_refuses_bad_flags(flags, tmp_path, capsys):
    out = tmp_path / "s.npy"
    _fails(["sample", "--exact", "seed_mixture", "--n", "20", "--out", out, *flags], capsys)
    assert not out.exists()


_BAD_GRID_FILES = {
    "not_json": "{not json",
    "empty": "",
    "a_list": "[0.02, 80]",
    "sigmas_a_string": '{"sigmas": "abc"}',
    "sigmas_nested": '{"sigmas": [[0.02], [80]]}',
    "no_sigmas": '{"levels": [0.02, 80]}',
    "descending": '{"sigmas": [80, 1, 0.02]}',
    "nan": '{"sigmas": [0.02, NaN, 80]}',
    "negative": '{"sigmas": [-1, 1, 80]}',
    "one_level": '{"sigmas": [80]}',
    "beyond_float32": '{"sigmas": [0.02, 1e39, 1e40]}',
    "booleans": '{"sigmas": [true, 80]}',
    "below_float32": '{"sigmas": [1e-300, 1e-299]}',  # both 0 in float32
    "variance_underflows": '{"sigmas": [1e-25, 0.5, 80]}',  # its square is 0 in float32
    "variance_overflows": '{"sigmas": [0.02, 1, 1e25]}',  # its square is inf in float32
    "deeply_nested": '{"sigmas": ' + "[" * 100000 + "]" * 100000 + "}",  # a RecursionError
    "binary": None,
    "a_folder": "folder",
    "integer_beyond_float64": '{"sigmas": [0.1, ' + "9" * 400 + "]}",  # OverflowError (20A)
}


@pytest.mark.parametrize("kind", sorted(_BAD_GRID_FILES))
def test_sample_refuses_a_bad_saved_grid_before_sampling(kind, tmp_path, capsys):
    grid = tmp_path / "grid.json"
    if kind == "a_folder":
        grid.mkdir()
    elif kind == "binary":
        grid.write_bytes(bytes(range(256)))
    else:
        grid.write_text(_BAD_GRID_FILES[kind])
    out = tmp_path / "s.npy"
    argv = ["sample", "--exact", "seed_mixture", "--n", "5", "--grid", grid, "--out", out]
    _fails(argv, capsys, "sampler.grid", str(grid))
    assert not out.exists()


def test_a_saved_grid_brings_its_range_and_refuses_another(tmp_path, capsys):
    """``--grid FILE`` samples over the file's range unless a range is given; a range that
    differs is refused naming the flags (it was refused only at sampling, as an option)."""
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"sigmas": [0.002, 0.1, 1.0, 80.0]}))
    out = tmp_path / "s.npy"
    argv = ["sample", "--exact", "seed_mixture", "--n", "5", "--sampler", "euler", "--levels"]
    assert main([*argv, "4", "--grid", str(grid), "--out", str(out)]) == 0
    assert np.isfinite(np.load(out)).all()
    capsys.readouterr()
    _fails([*argv, "4", "--grid", grid, "--sigma-min", "0.01", "--out", out, "--overwrite"],
           capsys, "sampler.sigma_min = 0.002")  # fmt: skip


def test_sample_refuses_a_trajectory_written_over_the_samples(tmp_path, capsys):
    out = tmp_path / "s.npy"
    argv = ["sample", "--exact", "seed_mixture", "--n", "5", "--out", out, "--trajectory", out]
    _fails(argv, capsys, "--trajectory")
    assert not out.exists()


@pytest.mark.parametrize(
    "old, new",
    [("--e", "--eta"), ("--eta0", "--final-noise"), ("--steps-per-level", "--n-steps-per-level")],
)
def test_renamed_flags_name_their_new_spelling(old, new, tmp_path, capsys):
    _fails(
        ["sample", "--exact", "seed_mixture", old, "1", "--out", tmp_path / "s.npy"], capsys, new
    )


@pytest.mark.parametrize(
    "flags",
    [
        ["--exact", "nope"],
        [],
        ["--exact", "seed_mixture", "--run", "x"],
        ["--run", "nowhere"],
        ["--exact", "seed_mixture", "--prior", "exact", "--sampler", "mala"],
    ],
    ids=" ".join,
)
def test_sample_refuses_bad_sources(flags, tmp_path, capsys):
    argv = ["sample", *flags, "--n", "10", "--out", tmp_path / "s.npy"]
    if flags == ["--exact", "seed_mixture", "--prior", "exact", "--sampler", "mala"]:
        argv += ["--n-steps", "0"]
    _fails(argv, capsys)


@pytest.mark.parametrize("kind", ["exists", "suffix", "folder", "under_a_file"])
def test_sample_outputs_are_checked_before_the_work(kind, tmp_path, capsys):
    out = tmp_path / "s.npy"
    if kind == "exists":
        out.write_bytes(b"keep me")
    elif kind == "suffix":
        out = tmp_path / "s.png"
    elif kind == "folder":
        out.mkdir()
    else:
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "s.npy"
    _fails(["sample", "--exact", "seed_mixture", "--n", "10", "--out", out], capsys, str(out))
    if kind == "exists":
        assert out.read_bytes() == b"keep me"


def test_sample_out_writes_exactly_the_path_given_and_overwrite_replaces(tmp_path, capsys):
    out = tmp_path / "new" / "s.npy"
    argv = ["sample", "--exact", "seed_mixture", "--n", "10", "--sampler", "ddim", "--levels", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    assert np.load(out).shape == (10, 2) and str(out) in capsys.readouterr().out
    assert main([*argv, "--out", str(out), "--n", "12", "--overwrite"]) == 0
    assert np.load(out).shape == (12, 2)


@pytest.mark.parametrize(
    "flags",
    [
        ["--floor-repeats", "1"],
        ["--floor-repeats", "0"],
        ["--sigma", "-1"],
        ["--sigma", "nan"],
        ["--target", "nope"],
    ],
    ids=" ".join,
)
def test_evaluate_refuses_bad_flags(flags, tmp_path, capsys):
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    target = [] if "--target" in flags else ["--target", "seed_mixture"]
    _fails(["evaluate", samples, *target, *flags], capsys)


def test_evaluate_refuses_samples_of_another_dimension(tmp_path, capsys):
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 3), np.float32))
    _fails(["evaluate", samples, "--target", "seed_mixture"], capsys, "dimension 3")


def test_evaluate_json_is_not_overwritten(tmp_path, capsys):
    samples, report = tmp_path / "s.npy", tmp_path / "m.json"
    np.save(samples, np.zeros((20, 2), np.float32))
    report.write_text("keep")
    _fails(["evaluate", samples, "--target", "seed_mixture", "--json", report], capsys, "exists")
    assert report.read_text() == "keep"


_BAD_SWEEP_FLAGS = [
    ["--nfe", "0"],
    ["--nfe", "abc"],
    ["--samplers", "nope"],
    ["--samplers", "ula"],
    ["--n", "0"],
    ["--seeds", "-1"],
    ["--grid", "nope"],
    ["--sigma-min", "0"],
    ["--target", "nope"],
    ["--run", "nowhere"],
    ["--n", "100000000000"],  # sizes are checked before allocating, not by running out
    ["--nfe", "1000000000000"],
    # Repeats counted one run twice in the mean and its spread ('rows is empty' for --nfe 1).
    ["--seeds", "0,0"],
    ["--samplers", "euler,euler"],
    ["--samplers", "tsit5", "--tolerances", "0.1,0.1"],
    ["--samplers", "tsit5", "--tolerances", "1"],  # accepted, where likelihood refused it
    ["--nfe", "1"],
]


@pytest.mark.parametrize("flags", _BAD_SWEEP_FLAGS, ids=" ".join)
def test_sweep_refuses_bad_flags(flags, tmp_path, capsys):
    argv = [
        "sweep",
        "--samplers",
        "euler",
        "--nfe",
        "4",
        "--n",
        "50",
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "sweep"),
        "--quiet",
        *flags,
    ]
    _fails(argv, capsys)
    # a refused sweep leaves its folder as it found it: reusable without --overwrite
    assert [p.name for p in (tmp_path / "sweep").glob("*")] in ([], [".lock"])


@pytest.mark.parametrize("text", ["sweep = 1\n", "sweep = 'euler'\n", "sweep = [1, 2]\n"])
def test_sweep_refuses_a_sweep_entry_that_is_not_a_table(text, tmp_path, capsys):
    """``sweep = 1`` was an internal error (``dict(1)``)."""
    config = tmp_path / "c.toml"
    config.write_text(text)
    argv = ["sweep", "--config", config, "--samplers", "euler", "--nfe", "4", "--seeds", "0"]
    _fails([*argv, "--out", tmp_path / "sweep", "--quiet"], capsys, "sweep: expected a [sweep]")


@pytest.mark.parametrize(
    ("text", "flags", "words"),
    [
        ("nfe = [0]\n", [], "c.toml: sweep.nfe: expected an integer >= 1, got 0"),
        ("n_samples = 1\n", [], "c.toml: sweep.n_samples: expected an integer >= 2"),
        ("seeds = [0, 4294967296]\n", [], "c.toml: sweep.seeds: expected an integer seed"),
        ("nfe = [4]\n", ["--nfe", "0"], "--nfe: expected an integer >= 1, got 0"),
    ],
)
def test_sweep_names_a_bad_value_where_it_was_given(text, flags, words, tmp_path, capsys):
    """A value of the `--config` file was named by its flag (`--n: ...`), which the user
    never passed; it is named by the file and its field, as `train` and `sample` name them."""
    config = tmp_path / "c.toml"
    config.write_text("[sweep]\n" + text)
    argv = ["sweep", "--config", config, *flags, "--out", tmp_path / "sweep", "--quiet"]
    _fails(argv, capsys, words)


@pytest.mark.parametrize(
    "text",
    [
        "ula_steps = 'many'\n",
        "nope = 1\n",
        "hyvarinen = 3\n",
        "[hyvarinen]\nsteps = 0\n",
        "ddim_es = 1.0\n",
        "n_samples = -1\n",
        "n_likelihood = 1\n",  # a standard error needs two points
        "n_samples = 100000000000000\n",  # trained three models, then a traceback
    ],
)
def test_demo_refuses_bad_settings(text, tmp_path, capsys):
    path = tmp_path / "demo.toml"
    path.write_text(text)
    _fails(["demo", "--settings", path, "--out", tmp_path, "--quiet"], capsys)


@pytest.mark.parametrize(
    "text",
    [
        "n_samples = 100000000000\n",  # trained the U-Net, then sampled for ever
        "n_samples = 1000000000\nfloor_repeats = 1000\n",
    ],
)
def test_demo_images_refuses_sizes_beyond_memory_before_training(text, tmp_path, capsys):
    path = tmp_path / "demo.toml"
    path.write_text(text)
    argv = ["demo", "images", "--settings", path, "--out", tmp_path, "--quiet"]
    _fails(argv, capsys, "demo.", "of memory")
    assert not (tmp_path / "demo-images").exists()


# --- run directories and models ------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust") / "run"
    assert main(["train", "--loss", "ncsn", "--out", str(out), *_TINY]) == 0
    return out


def _damaged_copy(run_dir: Path, tmp_path: Path, damage: str) -> Path:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    if damage == "no_config":
        (copy / "config.json").unlink()
    elif damage == "config_not_json":
        (copy / "config.json").write_text("{not json")
    elif damage == "config_a_list":
        (copy / "config.json").write_text("[1, 2]")
    elif damage == "config_bad_value":
        config = json.loads((copy / "config.json").read_text())
        config["train"]["steps"] = -1
        (copy / "config.json").write_text(json.dumps(config))
    elif damage == "no_model_eqx":
        (copy / "model.eqx").unlink()
    elif damage == "no_model_json":
        (copy / "model.json").unlink()
    elif damage == "truncated_model":
        data = (copy / "model.eqx").read_bytes()
        (copy / "model.eqx").write_bytes(data[: len(data) // 2])
    elif damage == "model_json_garbage":
        (copy / "model.json").write_text("garbage")
    elif damage == "model_json_other_dim":
        record = json.loads((copy / "model.json").read_text())
        record["kwargs"]["dim"] = 5
        (copy / "model.json").write_text(json.dumps(record))
    elif damage == "model_json_unknown_class":
        record = json.loads((copy / "model.json").read_text())
        record["class"] = "os:system"
        (copy / "model.json").write_text(json.dumps(record))
    elif damage == "model_eqx_empty":
        (copy / "model.eqx").write_bytes(b"")
    elif damage == "model_json_class_not_a_name":  # an AttributeError traceback before
        record = json.loads((copy / "model.json").read_text())
        record["class"] = 3
        (copy / "model.json").write_text(json.dumps(record))
    else:
        raise AssertionError(damage)
    return copy


_DAMAGES = [
    "no_config",
    "config_not_json",
    "config_a_list",
    "config_bad_value",
    "no_model_eqx",
    "no_model_json",
    "truncated_model",
    "model_json_garbage",
    "model_json_other_dim",
    "model_json_unknown_class",
    "model_eqx_empty",
    "model_json_class_not_a_name",
]


def test_mala_on_a_trained_run_is_refused_for_what_it_needs_first(run_dir, tmp_path, capsys):
    """MALA on a noise-conditional run said first to raise --sigma; doing so led only to the
    real refusal, that MALA needs an exact log-density (pass 24, #11)."""
    argv = ["sample", "--run", run_dir, "--sampler", "mala", "--out", tmp_path / "s.npy"]
    _fails(argv, capsys, "'mala' needs the target's log-density", "not a trained model")


@pytest.mark.parametrize(
    "override, field",
    [
        ("loss.name='dsm'", "loss.name"),
        ("data.source='digits_mixture'", "data.source"),
        ("model.seed=3", "model.seed"),
        ("train.learning_rate=0.5", "train.learning_rate"),
    ],
)
@pytest.mark.parametrize("command", ["sample", "score-error"])
def test_a_runs_training_sections_cannot_be_overridden(
    command, override, field, run_dir, tmp_path, capsys
):
    """Only ``[sampler]`` may change on top of a run: another loss or data described a model the
    run does not hold (a wrong hint, or a traceback for another dimension, before)."""
    out = ["--out", tmp_path / "s.npy"] if command == "sample" else []
    _fails([command, "--run", run_dir, "--n", "5", "--set", override, *out], capsys, field)


@pytest.mark.parametrize("damage", _DAMAGES)
def test_sample_refuses_a_damaged_run(damage, run_dir, tmp_path, capsys):
    copy = _damaged_copy(run_dir, tmp_path, damage)
    _fails(["sample", "--run", copy, "--n", "10", "--out", tmp_path / "s.npy"], capsys)


@pytest.mark.parametrize("damage", ["no_config", "config_not_json", "truncated_model"])
def test_plot_refuses_a_damaged_run(damage, run_dir, tmp_path, capsys):
    _fails(["plot", _damaged_copy(run_dir, tmp_path, damage)], capsys)


@pytest.mark.slow  # about 10 s of a worker: kept out of the default suite's 15 minutes
def test_plot_of_a_run_on_five_dimensional_data_draws_the_loss_curve_and_says_why_no_more(
    tmp_path, capsys
):
    """The figures of points are planar: plot refused such a run outright, its loss curve too
    (pass 25, #10). It draws the loss curve and says why nothing more, on one line."""
    data = tmp_path / "five.npy"
    np.save(data, np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32))
    out = tmp_path / "run"
    assert (
        main(["train", "--loss", "dsm", "--data", str(data), "--out", str(out), *_TINY_FILE]) == 0
    )
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning: plot: the run's data is 5-dimensional" in err[0]
    assert "only loss.png" in err[0]
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["loss.png"]


@pytest.mark.parametrize("size, channels", [(1, "[16, 32]"), (5, "[16, 32]"), (6, "[8, 16, 32]")])
def test_a_unet_refuses_images_its_levels_cannot_halve(size, channels, tmp_path, capsys):
    """1x1 PNGs under the default U-Net blamed 'sample_size 1' and told the user to fix a
    pretrained pipeline's config.json; the data's image size and model.channels are named."""
    data = tmp_path / "images.npy"
    np.save(data, np.zeros((8, size, size), np.uint8))
    argv = ["train", "--data", data, "--model", "unet", "--loss", "vp_epsilon", "--steps", "1"]
    argv += ["--set", f"model.channels={channels}", "--out", tmp_path / "run"]
    _fails(argv, capsys, "model.channels: a U-Net of", f"the data's are {size}x{size}")
    assert not (tmp_path / "run").exists()


def test_plot_never_replaces_a_users_files_without_overwrite(run_dir, tmp_path, capsys):
    """``plot --out DIR`` wrote loss.png and samples.png over files of those names in any
    folder; a non-empty --out now needs --overwrite, a file as --out is named, and RUN/figures
    (the run's own, redrawn from the same seed) is redrawn in place."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "loss.png").write_bytes(b"the user's own figure")
    _fails(["plot", run_dir, "--out", out], capsys, f"--out {out}: a folder that is not empty")
    assert (out / "loss.png").read_bytes() == b"the user's own figure"
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(["plot", run_dir, "--out", afile], capsys, str(afile))
    assert afile.read_text() == "x"
    assert main(["plot", str(run_dir), "--out", str(out), "--overwrite"]) == 0
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()


def test_train_never_overwrites_an_existing_run(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = (copy / "model.eqx").read_bytes()
    _fails(["train", "--loss", "ncsn", "--out", copy, *_TINY], capsys, "--overwrite")
    assert (copy / "model.eqx").read_bytes() == before
    shutil.rmtree(copy / "checkpoints")
    _fails(["train", "--loss", "ncsn", "--out", copy, *_TINY], capsys, "--overwrite")
    assert (copy / "model.eqx").read_bytes() == before


def test_train_out_naming_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("keep")
    _fails(["train", "--out", out, *_TINY], capsys)
    assert out.read_text() == "keep"


def test_resume_refuses_a_changed_configuration_naming_the_field(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    _fails(
        ["train", "--loss", "ncsn", "--out", copy, "--resume", *_TINY, "--lr", "0.5"],
        capsys,
        "learning_rate",
    )


@pytest.mark.parametrize("taken", ["config.json", "losses.npy", "model.eqx"])
def test_a_run_file_taken_by_a_folder_is_refused_before_training(run_dir, tmp_path, capsys, taken):
    # The run writes these files when it ends: a folder in their place made `train --resume`
    # train all its steps, then fail writing. It is refused before the first step now.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / taken).unlink()
    (copy / taken).mkdir()
    steps = sorted(p.name for p in (copy / "checkpoints").iterdir())
    argv = ["train", "--loss", "ncsn", "--out", copy, "--resume", *_TINY, "--steps", "6"]
    _fails(argv, capsys, taken, "not a file")
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == steps  # nothing trained


def test_resume_with_another_sampler_trains_on_and_records_it(run_dir, tmp_path, capsys):
    """The sampler does not enter training: resuming with another one was refused as a
    changed configuration. It resumes, and config.json records the new sampler; one that
    cannot sample the model is refused before any step (a DSM run saved DDIM, which every
    `sample --run` refused)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    argv = ["train", "--loss", "ncsn", "--out", copy, "--resume", *_TINY]
    assert main([str(a) for a in [*argv, "--set", "sampler.name=heun"]]) == 0
    assert json.loads((copy / "config.json").read_text())["sampler"]["name"] == "heun"
    capsys.readouterr()  # the run's own lines (a short run's EMA warning)
    _fails([*argv, "--set", "sampler.name=ula"], capsys, "sampler.options.sigma", "sigma > 0")
    fresh = ["train", "--out", tmp_path / "dsm", *_TINY, "--loss", "dsm"]
    _fails([*fresh, "--set", "sampler.name=ddim"], capsys, "walks a sigma grid", "ula")
    assert not (tmp_path / "dsm").exists()


def test_another_sampler_over_a_run_drops_the_runs_options_and_adaptive_budget(tmp_path, capsys):
    """`--sampler euler` on a run saved with DDIM's eta failed on `eta`, which no flag gave;
    `--sampler tsit5` on a run saved with a budget blamed `--nfe`, never given. The run's
    options and (for an adaptive solver) budget belonged to its sampler: they are dropped;
    the budget still sizes a fixed grid, and options given now are the new sampler's."""
    run = tmp_path / "run"
    saved = ["--set", "sampler.options.eta=0.5", "--set", "sampler.nfe=20"]
    assert main([str(a) for a in ["train", "--out", run, *_TINY, *saved]]) == 0
    capsys.readouterr()
    out = ["--n", "8", "--out", str(tmp_path / "s.npy"), "--overwrite"]
    for name, cost in (("euler", "NFE 20)"), ("heun", "NFE 19)"), ("tsit5", "NFE ")):
        assert main(["sample", "--run", str(run), "--sampler", name, *out]) == 0
        assert f"({name}, {cost}" in capsys.readouterr().out
    again = ["sample", "--run", run, "--sampler", "euler", *out, "--set", "sampler.options.eta=1"]
    _fails(again, capsys, "sampler 'euler': unknown option 'eta'")


def test_an_optimised_grid_of_two_levels_names_the_levels_flag(tmp_path, capsys):
    """It said "an optimised grid needs n_levels >= 3", naming no flag or field."""
    argv = ["grid", "--exact", "seed_mixture", "--levels", "2", "--n", "8", "--out"]
    _fails([*argv, tmp_path / "g.json"], capsys, "--levels (sampler.n_levels): an optimised")


def test_a_unet_option_refused_by_the_network_names_its_field(tmp_path, capsys):
    """The U-Net's refusals began `model: U-Net options: attention_head_dim ...`: no field
    that --set or a file could give."""
    unet = ["--data", "digits", "--model", "unet", "--loss", "vp_epsilon", "--steps", "1"]
    heads = ["--set", "model.attention_head_dim=1000", "--set", "model.attention_resolutions=[8]"]
    argv = ["train", *unet, *heads, "--set", "model.channels=[8,16]", "--quiet", "--out"]
    _fails([*argv, tmp_path / "run"], capsys, "model.attention_head_dim: attention_head_dim 1000")


def test_a_saved_grid_under_ula_names_the_grid_not_the_levels_it_brings(tmp_path, capsys):
    """`--sampler ula --grid ays:NAME` was told to leave out --levels, never given: the saved
    grid sets the levels."""
    argv = [
        "sample",
        "--exact",
        "seed_mixture",
        "--sampler",
        "ula",
        "--grid",
        "ays:seed_mixture_10",
    ]
    _fails([*argv, "--n", "2", "--out", tmp_path / "s.npy"], capsys, "--grid (sampler.grid): ")


def test_a_saved_grid_on_a_run_spans_its_own_range(run_dir, tmp_path, capsys):
    """`sample --run R --grid ays:NAME` was refused: the run's saved sigma_min (0.02) did not
    match the grid's (0.002); a saved grid brings its range, as it does with --exact."""
    argv = ["sample", "--run", str(run_dir), "--grid", "ays:seed_mixture_10", "--n", "4"]
    assert main([*argv, "--out", str(tmp_path / "s.npy")]) == 0
    assert "(ddim, NFE 10)" in capsys.readouterr().out
    given = [*argv, "--sigma-min", "0.01", "--out", tmp_path / "t.npy"]
    _fails(given, capsys, "spans [0.002, 80], but sigma_min, sigma_max are 0.01, 80")


def test_an_option_in_the_flat_spelling_replaces_the_runs_saved_one(run_dir, tmp_path, capsys):
    """`--set sampler.eta=0.2` (earlier versions' spelling) on a run that saved
    sampler.options.eta was refused as one option given twice; it replaces it, as --eta does."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["sampler"]["options"] = {"eta": 0.5}
    (copy / "config.json").write_text(json.dumps(config))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["sampler"]["options"] = {"eta": 0.5}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = ["--n", "4", "--levels", "4", "--out"]
    flat = ["sample", "--run", str(copy), "--set", "sampler.eta=0.0", *out, str(tmp_path / "a.npy")]
    assert main(flat) == 0
    flag = ["sample", "--run", str(copy), "--eta", "0", *out, str(tmp_path / "b.npy")]
    assert main(flag) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    twice = [
        "sample",
        "--run",
        copy,
        "--set",
        "sampler.eta=0.2",
        "--set",
        "sampler.options.eta=0.3",
    ]
    _fails([*twice, *out, tmp_path / "c.npy"], capsys, "give it once")


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    _fails(["train", "--out", tmp_path / "fresh", "--resume", *_TINY], capsys, "drop --resume")


def test_resume_of_a_finished_run_whose_steps_are_gone_keeps_its_model(run_dir, tmp_path, capsys):
    """An empty checkpoints folder counted as checkpoints: the run was trained again from
    step 0, and its finished model replaced, exit 0."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for step in (copy / "checkpoints").iterdir():
        shutil.rmtree(step)
    model = (copy / "model.eqx").read_bytes()
    argv = ["train", "--loss", "ncsn", "--out", copy, "--resume", *_TINY]
    _fails(argv, capsys, "--resume: no checkpoint in", "replace the run with --overwrite")
    assert (copy / "model.eqx").read_bytes() == model


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_during_train_keeps_the_finished_steps_for_resume(
    run_dir, tmp_path, capsys, monkeypatch, signal_name
):
    # A scheduler's time limit, `kill` or `timeout` sends SIGTERM, which ended the process at
    # once; Ctrl-C (SIGINT) stopped it with "interrupted". Either way a run that checkpoints
    # only at its end lost every step it had trained.
    import os
    import signal

    from _interrupt import interrupt_at

    number = getattr(signal, signal_name)
    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 2, lambda: os.kill(os.getpid(), number))
    # Python's own Ctrl-C handler, whatever this process inherited (a shell's background job,
    # and some test runners' workers, ignore SIGINT).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = main(["train", "--loss", "ncsn", "--out", str(out), *_TINY])
    finally:
        signal.signal(signal.SIGINT, inherited)
    err = capsys.readouterr().err
    assert status == 128 + number, err
    assert err.strip().splitlines() == [
        "scorelab train: interrupted: training stopped after 2 of 4 steps; the checkpoint of "
        "step 2 is kept; rerun it with --resume (the same settings, without --overwrite) to "
        "continue"
    ]
    assert signal.getsignal(signal.SIGTERM) is handler  # the caller's handler is back
    monkeypatch.undo()
    assert main(["train", "--loss", "ncsn", "--out", str(out), "--resume", *_TINY]) == 0
    for name in ("model.eqx", "losses.npy"):  # the uninterrupted run's, bit for bit
        assert (out / name).read_bytes() == (run_dir / name).read_bytes(), name


# --- the console script: the boundary as a user meets it -----------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "missing.npy", "--target", "seed_mixture"],
        ["sample", "--exact", "seed_mixture", "--sampler", "pc"],
        ["train", "--config", "missing.toml"],
    ],
    ids=" ".join,
)
def test_console_script_errors_are_one_line_with_status_2(argv, tmp_path):
    script = Path(sys.executable).with_name("scorelab")
    result = subprocess.run(
        [str(script), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow  # about 14 s of a worker: kept out of the default suite's 15 minutes
def test_an_interrupted_sample_ends_at_once_in_one_line(tmp_path):
    """Ctrl-C during a long sampler went unanswered until XLA returned (minutes; a second
    Ctrl-C did not help either), and when it came, the exit raced XLA's threads into a
    segmentation fault (status 139) after "interrupted". The interrupt arrives here a second
    into the sampler's call (hours of work); the command ends with 130 and one line."""
    probe = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's, not xdist's\n"
        "from scorelab import cli, workflows\n"
        "import threading\n"
        "real = workflows._interruptibly\n"
        "def interruptibly(*args, **kwargs):\n"
        "    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "    return real(*args, **kwargs)\n"
        "workflows._interruptibly = interruptibly\n"
        "sys.argv = ['scorelab', 'sample', '--exact', 'seed_mixture', '--sampler', 'ula',\n"
        "            '--n-steps', '10000000', '--n', '2000', '--out', 'x.npy']\n"
        "cli.console()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["scorelab sample: interrupted"]
    assert not (tmp_path / "x.npy").exists()


def test_an_unfinished_run_is_named_as_such_with_the_way_to_finish_it(run_dir, tmp_path, capsys):
    # An interrupted training run (checkpoints, no model yet) was "not a scorelab run
    # directory (no config.json) ...; check the path and the disk".
    import shutil

    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    for name in ("config.json", "model.json", "model.eqx", "losses.npy"):
        (unfinished / name).unlink()
    sample = ["sample", "--run", unfinished, "--out", tmp_path / "x.npy"]
    for argv in (sample, ["plot", unfinished]):
        _fails(argv, capsys, "an unfinished training run", "scorelab train --resume")


def _handler_of(monkeypatch, handler):
    """``scorelab evaluate`` runs ``handler(args)`` instead."""
    from scorelab import cli

    monkeypatch.setattr(cli, "_cmd_evaluate", handler)
    return ["evaluate", "x.npy", "--target", "seed_mixture"]


def _ctrl_c():
    import os
    import signal
    import time

    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(2)  # the handler raises in here


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler, whatever this process inherited (a test runner's worker
    may ignore SIGINT, and the command keeps an inherited "ignore")."""
    import signal

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


def test_a_second_ctrl_c_during_the_cleanup_is_ignored(monkeypatch, capsys, python_ctrl_c):
    """A double Ctrl-C cut the first one's cleanup short: tracebacks, a half-claimed folder."""

    def handler(args):
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()
        _ctrl_c()  # within the grace: recorded only, so this returns
        return 0

    assert main(_handler_of(monkeypatch, handler)) == 0


def test_an_interrupt_lost_in_a_callback_is_raised_again(monkeypatch, capsys, python_ctrl_c):
    """A Ctrl-C landing in XLA's garbage-collection callback printed "Exception ignored in
    ... KeyboardInterrupt", and the job ran on to exit 0."""
    import os
    import signal
    import time

    class Collected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # raised inside __del__: unraisable
            sum(range(1000))

    def handler(args):
        Collected()
        time.sleep(5)
        return 0

    assert main(_handler_of(monkeypatch, handler)) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["scorelab evaluate: interrupted"], err


def test_an_interrupt_turned_into_another_error_is_reported_as_the_interrupt(
    monkeypatch, capsys, python_ctrl_c
):
    """Ctrl-C inside ``import jax`` came out as numpy's ImportError, and the error boundary,
    importing jax again, printed a double traceback with status 1."""

    def handler(args):
        try:
            _ctrl_c()
        except KeyboardInterrupt as error:
            raise ImportError("numpy._core.multiarray failed to import") from error
        return 0

    assert main(_handler_of(monkeypatch, handler)) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["scorelab evaluate: interrupted"]


@pytest.mark.parametrize("platform", [pytest.param("tpu", marks=pytest.mark.slow), "cuda"])
def test_a_platform_this_machine_lacks_is_one_line_naming_jax_platforms(platform, tmp_path):
    """A missing TPU library was a 72-line traceback and "internal error"; a CUDA platform
    without its plugin (jax asserts) was blamed on the run's files: "save the model again"."""
    import os

    script = Path(sys.executable).with_name("scorelab")
    result = subprocess.run(
        [str(script), "sample", "--exact", "seed_mixture", "--n", "5", "--out", "x.npy"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": platform},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"JAX cannot start its backend (JAX_PLATFORMS={platform})" in lines[0]


def test_run_sources_take_the_same_overrides_in_sample_and_likelihood(run_dir, tmp_path, capsys):
    """``--run`` is read the same way by every command: ``--set`` applies on top of the saved
    configuration (likelihood ignored it before)."""
    points = tmp_path / "p.npy"
    np.save(points, np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32))
    report = tmp_path / "l.json"
    argv = [
        "likelihood",
        "--run",
        run_dir,
        "--points",
        points,
        "--set",
        "sampler.sigma_max=5.0",
        "--n-probes",
        "exact",
        "--rtol",
        "1e-3",
        "--atol",
        "1e-3",
        "--json",
        report,
    ]
    assert main([str(a) for a in argv]) == 0
    assert json.loads(report.read_text())["sigma_max"] == 5.0
    _fails(["likelihood", "--points", points], capsys, "exactly one of --run")


# --- the surfaces of the image and grid sessions ---------------------------------------------

_GRID = ["grid", "--exact", "seed_mixture", "--n", "40", "--levels", "5", "--candidates", "4"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--inner", "0"],
        ["--candidates", "0"],
        ["--sweeps", "0"],
        ["--sweeps", "-1"],
        ["--n", "10000000000000"],
        ["--seed", "-1"],
        ["--levels", "2"],
        ["--grid", "karras"],
        ["--prior", "exact"],
    ],
    ids=" ".join,
)
def test_grid_refuses_bad_flags(flags, tmp_path, capsys):
    out = tmp_path / "g.json"
    _fails([*_GRID, *flags, "--out", out], capsys)
    assert not out.exists()


@pytest.fixture(scope="module")
def dsm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust") / "dsm"
    assert main(["train", "--loss", "dsm", "--out", str(out), *_TINY]) == 0
    return out


@pytest.mark.parametrize(
    "flags",
    [["--n-probes", "100000000000"], ["--seed", "-1"], ["--seed", "4294967296"]],
    ids=" ".join,
)
def test_likelihood_refuses_bad_flags(flags, tmp_path, capsys):
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((3, 2), np.float32))
    _fails(["likelihood", "--exact", "seed_mixture", "--points", points, *flags], capsys)


@pytest.mark.parametrize("n_probes", ["exact", "auto"])
def test_likelihood_refuses_a_probe_law_beside_the_exact_trace(n_probes, tmp_path, capsys):
    """2-D points take the exact trace under ``auto``: ``--probe gaussian`` drew nothing and
    was ignored, exit 0."""
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((3, 2), np.float32))
    argv = ["likelihood", "--exact", "seed_mixture", "--points", points, "--probe", "gaussian"]
    _fails([*argv, "--n-probes", n_probes], capsys, "probe: 'gaussian'", "exact trace")


def test_likelihood_refuses_an_unconditional_model(dsm_run, tmp_path, capsys):
    """A DSM model is the score of one law: its probability-flow 'likelihood' was a number
    with no meaning, exit 0."""
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((3, 2), np.float32))
    _fails(["likelihood", "--run", dsm_run, "--points", points], capsys, "unconditional")


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        # The DSM run's sampler is ULA: options of its own (DDIM's eta is refused as unknown).
        ("sampler.options.step_size=0.5", "sampler.options.step_size: scorelab score-error does"),
        ("sampler.options.n_steps=5", "sampler.options.n_steps: scorelab score-error does"),
        ("sampler.name='heun'", "sampler.name: scorelab score-error does not read it"),
        ("sampler.prior='exact'", "(read by scorelab train, sample, grid --method ld3)"),
    ],
)
def test_score_error_refuses_a_sampler_setting_it_does_not_read(setting, words, dsm_run, capsys):
    """score-error reads the sampler's grid, not its sampler: ``--set sampler.options.eta=...``
    was accepted and ignored, exit 0."""
    _fails(["score-error", "--run", dsm_run, "--set", setting], capsys, words, "leave it out")


@pytest.mark.parametrize(
    ("command", "setting", "words"),
    [
        ("sample", "model.channels=[8]", "model.channels: scorelab sample does not read it"),
        ("sample", "loss.sigma_max=20.0", "loss.sigma_max: scorelab sample"),
        ("sample", "train.steps=5", "(read by scorelab train)"),
        ("sample", "data.n=5", "data.n: scorelab sample"),
        ("grid", "sampler.grid='karras'", "(sampler.grid): scorelab grid does not read it"),
        ("grid", "sampler.name='heun'", "(read by scorelab train, sample, grid --method ld3)"),
        (
            "likelihood",
            "sampler.n_levels=7",
            "read by scorelab train, sample, grid, grid --method ld3, score-error",
        ),
        ("likelihood", "sampler.options.eta=0.5", "sampler.options.eta: scorelab likelihood"),
    ],
)
def test_a_command_refuses_a_setting_it_does_not_read(command, setting, words, tmp_path, capsys):
    """Each was accepted and ignored, exit 0 (``sample --exact`` with a loss setting even took
    the loss's sigma range for the sampler's)."""
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((3, 2), np.float32))
    extra = {"sample": ["--out", tmp_path / "s.npy"], "grid": ["--out", tmp_path / "g.json"]}
    extra["likelihood"] = ["--points", points]
    argv = [command, "--exact", "seed_mixture", "--set", setting, *extra[command]]
    _fails(argv, capsys, words, "leave it out")
    assert not list(tmp_path.glob("[sg].*"))


@pytest.mark.parametrize("sampler", ["ula", "mala"])
@pytest.mark.parametrize(
    "flags", [["--levels", "5"], ["--sigma-max", "20"], ["--grid", "karras"], ["--rho", "3"]]
)
def test_a_sampler_of_one_noise_level_refuses_the_grid_s_settings(sampler, flags, tmp_path, capsys):
    """``sample --sampler ula --levels 5`` ran ULA's own steps at its one sigma, exit 0: the
    grid's settings were read, then ignored."""
    out = tmp_path / "s.npy"
    argv = ["sample", "--exact", "seed_mixture", "--sampler", sampler, *flags, "--out", out]
    _fails(argv, capsys, f"sampler {sampler!r} samples at one noise level", "leave it out")
    assert not out.exists()


def test_the_sweep_refuses_a_table_of_its_config_other_than_sweep(tmp_path, capsys):
    """A [sampler] table beside [sweep] was read by nothing, exit 0."""
    config = tmp_path / "c.toml"
    config.write_text("[sweep]\nsamplers = ['euler']\n[sampler]\nname = 'heun'\n")
    argv = ["sweep", "--config", config, "--nfe", "4", "--seeds", "0", "--n", "20"]
    _fails([*argv, "--out", tmp_path / "sweep", "--quiet"], capsys, "sampler: scorelab sweep")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_demo_name_is_a_plain_folder_name(name, tmp_path, capsys):
    """``--name ..`` or ``''`` named ``--out`` itself or its parent, which --overwrite empties."""
    parent = tmp_path / "parent"
    (parent / "keep").mkdir(parents=True)
    (parent / "config.json").write_text("{}")
    argv = ["demo", "--out", parent / "runs", "--name", name, "--overwrite", "--quiet"]
    _fails(argv, capsys, "--name")
    assert (parent / "keep").is_dir() and (parent / "config.json").read_text() == "{}"


@pytest.mark.parametrize(
    "flags",
    [["--processes", "100000"], ["--processes", "0"], ["--processes", "2", "--lr", "-1"]],
    ids=" ".join,
)
def test_train_processes_are_checked_once_before_launching(flags, tmp_path, capsys):
    """The launcher refuses more processes than memory holds (100000 were started before) and
    checks the configuration itself: one error line, not one per process."""
    out = tmp_path / "run"
    _fails(["train", "--out", out, *_TINY, *flags], capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "override", ["train.seed=4294967296", "data.seed=-1", "model.seed=99999999999999999999"]
)
def test_train_refuses_seeds_that_alias(override, tmp_path, capsys):
    _fails(["train", "--out", tmp_path / "run", *_TINY, "--set", override], capsys, "seed")


@pytest.mark.parametrize("output", ["-o", "--save-array"])
def test_pretrained_never_overwrites_an_output(output, tmp_path, capsys):
    """``pretrained -o`` replaced an existing file without a word; now only with --overwrite,
    and refused before the pipeline is loaded."""
    existing = tmp_path / ("grid.png" if output == "-o" else "x.npy")
    existing.write_text("keep")
    argv = ["pretrained", tmp_path / "no-such-pipeline", output, existing]
    if output == "--save-array":
        argv += ["-o", tmp_path / "new.png"]
    _fails(argv, capsys, str(existing), "--overwrite")
    assert existing.read_text() == "keep"


@pytest.mark.parametrize("seeds", [(0,), (0, 2**32 - 1), (2**32 - 2, 2**32 - 1), (3, 7)])
def test_the_sweep_floor_key_is_none_of_its_seeds_keys(seeds):
    """The floors' key was ``fold_in(key(max(seeds) + 1), 0)``: at the largest seed 2**32 - 1
    that wrapped to ``key(0)``, whose ``fold_in(., 0)`` is seed 0's prior key, so the floor's
    exact sets were drawn from seed 0's starting noise."""
    from scorelab.sweep import _floor_key, _seed_keys

    used = {tuple(jax.random.key_data(k).tolist()) for s in {0, *seeds} for k in _seed_keys(s)}
    floor = tuple(jax.random.key_data(_floor_key(seeds)).tolist())
    assert floor not in used


def test_a_warning_is_one_line_naming_the_command(tmp_path, capsys):
    """A warning printed its file, line number and source line. A step ratio 1.5 times the
    stability bound 2 sigma_min^2 = 0.0008 grows the chains 2-fold a step on the top levels,
    finite after 20 steps: the samples are written, with the warning."""
    import warnings

    argv = ["sample", "--exact", "seed_mixture", "--n", "20", "--levels", "4"]
    argv += ["--sampler", "annealed_langevin", "--step-ratio", "0.0012"]
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as outside the tests, where warnings are errors
        status = main([str(a) for a in [*argv, "--out", tmp_path / "s.npy"]])
    captured = capsys.readouterr()
    assert status == 0 and "20 samples" in captured.out
    (warning,) = captured.err.splitlines()
    assert warning.startswith("scorelab sample: warning: step_ratio 0.0012 >= 2 sigma_min^2")


def test_a_warning_that_explains_a_divergence_is_the_error_line(tmp_path, capsys):
    """At a step ratio of 1e6 the chains overflow: a warning and an error were printed, two
    lines for one cause; the error now gives the warning's reason and remedy."""
    import warnings

    argv = ["sample", "--exact", "seed_mixture", "--n", "20", "--levels", "4"]
    argv += ["--sampler", "annealed_langevin", "--step-ratio", "1e6", "--out", tmp_path / "s.npy"]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        status = main([str(a) for a in argv])
    (error,) = capsys.readouterr().err.splitlines()
    assert status == 2 and not (tmp_path / "s.npy").exists()
    assert error.startswith("scorelab sample: error: sampler: 20 of 20 chains")
    assert "step_ratio 1e+06 >= 2 sigma_min^2 = 0.0008" in error
    assert "pass a step_ratio below 0.0008" in error


def test_likelihood_reads_points_in_the_model_s_shape(tmp_path, capsys):
    """Points are checked against one example of the model: a vector target takes ``(n, d)``
    (and 8x8 images for the 64-d ``digits_mixture``); an image run takes ``(n, C, H, W)`` or
    flat rows in [-1, 1]. Image points used to be refused as 'not 2-D', and flat ones crashed
    inside the U-Net."""
    images, _ = digits("test")
    square, flat = tmp_path / "square.npy", tmp_path / "flat.npy"
    np.save(square, images[:2])
    np.save(flat, images[:2].reshape(2, -1))
    for path in (square, flat):
        assert _likelihood_points(path, (1, 8, 8), (1, 8, 8)).shape == (2, 1, 8, 8)
    assert _likelihood_points(square, (64,), (1, 8, 8)).shape == (2, 64)
    with pytest.raises(ConfigError, match=r"these are points \(n, 64\), not images"):
        _likelihood_points(square, (64,))  # a target of points takes rows only
    for points, message in [
        (np.zeros((2, 3)), r"shape \(2, 3\); the model.s are \(n, 1, 8, 8\) or \(n, 64\)"),
        (2 * images[:2], r"values in \[-2, 2\]; the model's images are scaled to \[-1, 1\]"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _likelihood_points(points, (1, 8, 8), (1, 8, 8))
    conditional = ExperimentConfig.from_dict(
        {"data": {"source": "digits"}, "model": {"name": "unet", "num_classes": 10},
         "loss": {"name": "vp_epsilon"}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match="a class-conditional model; its likelihood needs"):
        likelihood_points(conditional, object(), square)
    three = tmp_path / "three.npy"
    np.save(three, np.zeros((3, 3), np.float32))
    _fails(["likelihood", "--exact", "seed_mixture", "--points", three], capsys, "(n, 2)")
    _fails(["likelihood", "--exact", "nope", "--points", three], capsys, "--exact: no exact")


def test_grid_png_is_checked_before_sampling(tmp_path, capsys):
    """``--grid-png`` of points is refused before any sampling (the samples were drawn, then
    lost to the refusal); the 64-d ``digits_mixture`` draws its points as 8x8 images."""
    out, grid = tmp_path / "s.npy", tmp_path / "g.png"
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", out, "--grid-png", grid]
    _fails(argv, capsys, "--grid-png: samples of seed_mixture are points")
    assert not out.exists() and not grid.exists()
    argv = ["sample", "--exact", "digits_mixture", "--n", "4", "--nfe", "4", "--out", out]
    assert main([str(a) for a in [*argv, "--grid-png", grid]]) == 0
    assert np.load(out).shape == (4, 64) and grid.is_file()


def test_a_vp_unet_under_a_gridless_sampler_needs_sigma():
    """A VP noise-prediction U-Net at sigma 0 divides by zero: ULA ran and 'diverged'."""
    from scorelab.diffusers import VPEpsilonUNet
    from scorelab.workflows import score_model

    model = VPEpsilonUNet(jax.random.key(0), (1, 8, 8), channels=(8, 16), norm_groups=4)
    config = ExperimentConfig.from_dict(
        {"data": {"source": "digits"}, "model": {"name": "unet"}, "loss": {"name": "vp_epsilon"},
         "sampler": {"name": "ula"}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match="a noise-conditional model needs sigma > 0 for ula"):
        score_model(config, model, None)


@pytest.fixture(scope="module")
def _conditional_run(tmp_path_factory) -> Path:
    """A class-conditional VP U-Net run (10 classes and a null label, zero weights), as
    ``scorelab train`` writes its config.json and model files."""
    from scorelab._files import write_json
    from scorelab.checkpoints import save_model
    from scorelab.diffusers import VPEpsilonUNet

    kwargs = {"image_shape": [1, 8, 8], "channels": [8, 16], "norm_groups": 4, "num_classes": 10,
              "null_class": True}  # fmt: skip
    config = ExperimentConfig.from_dict(
        {"data": {"source": "digits"}, "loss": {"name": "vp_epsilon", "label_dropout": 0.1},
         "model": {"name": "unet", "channels": [8, 16], "norm_groups": 4, "num_classes": 10},
         "sampler": {"name": "ddim", "n_levels": 3}}
    )  # fmt: skip
    run = tmp_path_factory.mktemp("conditional") / "run"
    run.mkdir()
    # Zero weights in the network's abstract shape: an eager initialisation takes a minute.
    shapes = eqx.filter_eval_shape(VPEpsilonUNet, jax.random.key(0), **kwargs)
    model = jax.tree.map(
        lambda leaf: (
            jnp.zeros(leaf.shape, leaf.dtype) if isinstance(leaf, jax.ShapeDtypeStruct) else leaf
        ),
        shapes,
    )
    save_model(run / "model", model, **kwargs)
    write_json(run / "config.json", config.to_dict())
    return run


def _class_conditional_run(tmp_path: Path, built: Path) -> Path:
    """A copy of the run ``built`` in ``tmp_path``, for a test to damage."""
    import shutil

    return Path(shutil.copytree(built, tmp_path / "run"))


@pytest.mark.parametrize("label", ["-1", str(2**64)])
def test_a_class_out_of_range_is_refused_before_it_becomes_a_key(
    tmp_path, capsys, label, _conditional_run
):
    """``--class -1`` or a class beyond 32 bits was folded into the key (uint32) before the
    class was checked: an OverflowError traceback."""
    run = _class_conditional_run(tmp_path, _conditional_run)
    argv = ["sample", "--run", run, "--n", "2", "--class", label, "--out", tmp_path / "s.npy"]
    _fails(argv, capsys, f"--class: {label} is not a class of this model; choose one in [0, 10)")
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            ("digits", "digits16"),
            "examples of shape [1, 16, 16] but the saved model takes [1, 8, 8]",
        ),
        (('"num_classes": 10', '"num_classes": 7'), "model.num_classes = 7 but the saved model"),
        (('"norm_groups": 4', '"norm_groups": 8'), "model.norm_groups = 8 but the saved model"),
    ],
)
def test_a_run_whose_config_disagrees_with_its_model_is_refused(
    tmp_path, capsys, edit, message, _conditional_run
):
    """config.json edited (or copied from another run) after training: an 8x8 U-Net was
    sampled on 16x16 states without a word, and a class count or schedule that the network
    does not have was reported as the run's."""
    run = _class_conditional_run(tmp_path, _conditional_run)
    config = run / "config.json"
    assert edit[0] in config.read_text()
    config.write_text(config.read_text().replace(edit[0], edit[1]))
    argv = ["sample", "--run", run, "--n", "2", "--out", tmp_path / "s.npy"]
    _fails(argv, capsys, message, "restore config.json or train again")
    _fails(["export", run, "--diffusers", tmp_path / "pipeline"], capsys, message)
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "pipeline").exists()


def test_image_samples_far_beyond_the_data_range_are_said_to_be(tmp_path, capsys):
    """A barely trained VP run sampled values of ±700, written without a word, which evaluate
    and likelihood then refused: the note says so where they are made. Here a zero network
    on the digits (score 0: the sample is the prior's draw, of spread sigma_max)."""
    from scorelab import builders
    from scorelab._files import write_json
    from scorelab.checkpoints import save_model

    config = ExperimentConfig.from_dict(
        {"data": {"source": "digits"}, "model": {"widths": [8, 8, 8]},
         "sampler": {"name": "ddim", "n_levels": 3}}
    )  # fmt: skip
    model, kwargs = builders.make_model(config.model, config.loss, digits("train")[0][:8])
    model = jax.tree.map(lambda leaf: jnp.zeros_like(leaf) if eqx.is_array(leaf) else leaf, model)
    run, out = tmp_path / "run", tmp_path / "s.npy"
    run.mkdir()
    save_model(run / "model", model, **kwargs)
    write_json(run / "config.json", config.to_dict())
    assert main(["sample", "--run", str(run), "--n", "2", "--out", str(out)]) == 0
    samples = np.load(out)
    assert np.abs(samples).max() > 2  # written as sampled, unclipped
    printed = capsys.readouterr().out
    low, high = samples.min(), samples.max()
    assert f"note: the samples' values lie in [{low:.4g}, {high:.4g}], far beyond" in printed


@pytest.mark.parametrize("size, shape", [(8, None), (16, "[1, 16, 16]")])
def test_a_run_s_data_shape_is_checked_from_headers_without_decoding_the_images(
    tmp_path, monkeypatch, size, shape, _conditional_run
):
    """``load_run`` read a whole image folder (or array) to compare one example's shape with
    the network's, and ``sample --run`` then read it again: only the first image's header is
    read now, and a folder of the wrong size is still refused."""
    from PIL import Image

    import scorelab.data as data
    from scorelab.runs import load_run

    run = _class_conditional_run(tmp_path, _conditional_run)
    for label in ("0", "1"):
        (tmp_path / "faces" / label).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((size, size), 40 * i, np.uint8)
            Image.fromarray(pixels).save(tmp_path / "faces" / label / f"{i}.png")
    config = json.loads((run / "config.json").read_text())
    config["data"]["source"] = str(tmp_path / "faces")
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(data, "_read_folder", lambda path: pytest.fail("the pixels were read"))
    if shape is None:
        assert load_run(run)[0].data.source == str(tmp_path / "faces")
    else:
        with pytest.raises(ConfigError, match=re.escape(f"examples of shape {shape} but")):
            load_run(run)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", "", "--steps", "1"],
        ["sample", "--exact", "seed_mixture", "--out", ""],
        ["sample", "--run", ""],
        ["evaluate", "", "--target", "seed_mixture"],
        ["evaluate", "s.npy", "--data", ""],
        ["likelihood", "--exact", "seed_mixture", "--points", " "],
        ["export", "", "--diffusers", "pipe"],
        ["demo", "--out", ""],
        ["plot", ""],
        ["pretrained", "", "-o", "g.png"],  # read the current folder as a pipeline
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, capsys, argv):
    """``Path("")`` is ``.``: an unset shell variable made ``train --out ""`` a run in the
    current folder and ``--data ""`` a folder of images (the working directory's files)."""
    _fails(argv, capsys, "an empty path; give a file or folder name")


def test_an_empty_data_source_is_refused(capsys):
    with pytest.raises(
        ConfigError, match="data.source: expected a built-in name or a path, got ''"
    ):
        ExperimentConfig.from_dict({"data": {"source": ""}})
    _fails(["train", "--data", " ", "--steps", "1"], capsys, "(data.source): expected a built-in")


def test_likelihood_tolerances_that_bound_nothing_are_refused(tmp_path, capsys):
    """``--rtol 2`` printed a log-density with no correct digit guaranteed."""
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((3, 2), np.float32))
    for rtol in ("1", "2"):
        argv = ["likelihood", "--exact", "seed_mixture", "--points", points, "--rtol", rtol]
        _fails(argv, capsys, f"rtol: expected a number in (0, 1), got {float(rtol)}")


def test_pretrained_seeds_are_in_the_key_range(tmp_path, capsys):
    """``pretrained --seed -1`` drew the noise of seed 2**32 - 1 (JAX keeps 32 bits)."""
    pipeline = Path(__file__).parent / "fixtures" / "tiny_ddpm"
    for seed in ("-1", str(2**32)):
        argv = ["pretrained", pipeline, "--seed", seed, "-o", tmp_path / "g.png"]
        _fails(argv, capsys, "seed: expected an integer seed in [0, 2**32 - 1]")
    assert not (tmp_path / "g.png").exists()


@pytest.mark.slow  # two U-Net samplers compiled: about a minute
def test_a_guided_sample_counts_two_network_evaluations_per_score(
    tmp_path, capsys, _conditional_run
):
    """Classifier-free guidance calls the network twice per score (conditional and
    unconditional): its NFE was printed as the sampler's score evaluations, half the cost."""
    argv = ["sample", "--run", _conditional_run, "--n", "1", "--class", "3", "--overwrite"]
    printed = {}
    for guidance in ("0", "1.5"):
        out = tmp_path / f"s{guidance}.npy"
        assert main([str(a) for a in [*argv, "--guidance", guidance, "--out", out]]) == 0
        printed[guidance] = capsys.readouterr().out
    unguided = int(printed["0"].split("NFE ")[1].split(")")[0])
    assert f"NFE {2 * unguided} (guided: two network evaluations per score)" in printed["1.5"]


def test_a_damaged_json_or_npy_file_of_a_run_is_named(tmp_path, capsys, _conditional_run):
    """A damaged JSON file was reported as 'Expecting property name ...: line 1 column 2'
    and a damaged losses.npy as numpy's pickle advice, neither naming the file."""
    run = _class_conditional_run(tmp_path, _conditional_run)
    (run / "losses.npy").write_bytes(b"\x80\x04garbage")
    _fails(["plot", run, "--out", tmp_path / "figures"], capsys, f"{run / 'losses.npy'}: not a",
           "; restore it, or rerun the training with --resume")  # fmt: skip
    (run / "losses.npy").unlink()  # was "data file not found ...; check the path and the disk"
    _fails(["plot", run, "--out", tmp_path / "figures"], capsys,
           f"{run / 'losses.npy'}: the run's loss history is missing; restore it")  # fmt: skip
    (run / "config.json").write_text('{"data": ')
    argv = ["sample", "--run", run, "--n", "2", "--out", tmp_path / "s.npy"]
    _fails(argv, capsys, f"{run / 'config.json'}: not readable JSON", "restore it")
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "demo.json").write_bytes(b"\xff\xfe{")
    _fails(["plot", demo], capsys, f"{demo / 'demo.json'}: not readable JSON")


def test_an_atomic_write_error_names_the_destination():
    """An atomic write fails at the rename; the error named the hidden temporary file."""
    from scorelab.cli import _user_error

    error = IsADirectoryError(
        21, "Is a directory", "/r/.config.json.1a2b.tmp", None, "/r/config.json"
    )
    assert _user_error(error) == "/r/config.json: Is a directory; give a file, not a folder"


def test_an_atomic_write_never_replaces_a_special_file(tmp_path):
    """The rename replaced a pipe (as root, /dev/null itself) by a regular file."""
    from scorelab._files import atomic_write, write_json

    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)
    for write in (lambda: write_json(pipe, {}), lambda: atomic_write(pipe, lambda f: None)):
        with pytest.raises(ValueError, match="a special file .* give the path of a regular file"):
            write()
        assert stat.S_ISFIFO(pipe.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.json"]  # no temporary left


def test_sweep_refuses_a_model_of_other_points_than_the_target_s(tmp_path, capsys):
    """A 2-D model swept on the 64-d digits_mixture crashed in a matrix product (traceback)."""
    from scorelab.checkpoints import save_model
    from scorelab.models import NoiseConditionalMLP

    save_model(tmp_path / "ncsn", NoiseConditionalMLP(jax.random.key(0), dim=2), dim=2)
    argv = ["sweep", "--target", "digits_mixture", "--run", tmp_path / "ncsn", "--samplers"]
    argv += ["euler", "--nfe", "4", "--n", "16", "--seeds", "0", "--out", tmp_path / "sweep"]
    _fails(argv, capsys, "holds a model of other points than the target's 64-d ones")
    assert not (tmp_path / "sweep").exists()


def test_a_data_source_that_is_a_path_is_named_as_one(tmp_path):
    """A missing folder or a file of another type was an 'unknown source' beside the list of
    built-in names."""
    (tmp_path / "points.txt").write_text("1,2\n")
    for source, message in [
        (tmp_path / "points.txt", "points.txt: unsupported file type; give a .npy, .csv or .npz"),
        (tmp_path / "images", "images: no such file or folder; check the path"),
        ("digitz", "unknown source 'digitz'; accepted: seed_mixture"),
    ]:
        with pytest.raises(ConfigError, match=f"^data.source: .*{message}"):
            ExperimentConfig.from_dict({"data": {"source": str(source)}})


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "configuration: expected a table of sections, got list"),
        ('{"bogus": {}}', "bogus: unknown section"),
    ],
)
def test_a_run_s_invalid_config_is_named(tmp_path, capsys, _conditional_run, text, message):
    """An invalid config.json of a run was reported without naming the file."""
    run = _class_conditional_run(tmp_path, _conditional_run)
    (run / "config.json").write_text(text)
    argv = ["sample", "--run", run, "--n", "2", "--out", tmp_path / "s.npy"]
    _fails(argv, capsys, f"{run / 'config.json'}: {message}", "restore the file or train again")


# --- the fuzzing session's cases: each was a traceback, a hang, a wrong message or lost work --


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["train", "--loss", "dsm", "--set", "loss.sigma=1e300"], "loss.sigma: 1e+300"),
        (["train", "--set", "train.grad_clip=1e300"], "train.grad_clip: 1e+300"),
        (["sample", "--exact", "seed_mixture", "--sigma-max", "1e300"], "sampler.sigma_max"),
        (
            ["sample", "--exact", "seed_mixture", "--sampler", "ddim", "--eta", "1e300"],
            "sampler.options.eta",
        ),
        (["evaluate", "SAMPLES", "--target", "seed_mixture", "--sigma", "1e300"], "sigma: 1e+300"),
    ],
)
def test_a_number_beyond_float32_is_refused_naming_the_setting(argv, field, tmp_path, capsys):
    """Settings are computed in float32, where 1e300 is infinite: loss.sigma = 1e300 trained to
    a NaN loss blamed on the learning rate (two lines), evaluate --sigma 1e300 was a traceback,
    sampler.sigma_max a 'sampler.options' error and grad_clip a cast warning, exit 0."""
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    argv = [samples if a == "SAMPLES" else a for a in argv]
    if argv[0] == "train":
        argv += ["--out", tmp_path / "run", *_TINY]
    elif argv[0] == "sample":
        argv += ["--n", "5", "--out", tmp_path / "out.npy"]
    _fails(argv, capsys, field, "beyond float32's range")
    assert not (tmp_path / "run").exists() and not (tmp_path / "out.npy").exists()


def test_an_override_on_several_lines_is_refused(tmp_path, capsys):
    """``--set $'train.steps=3\\ntrain.seed=2'``: TOML read ``3`` and dropped the second line."""
    argv = ["train", "--out", tmp_path / "run", *_TINY, "--set", "train.seed=3\ntrain.steps=2"]
    _fails(argv, capsys, "a value on several lines; give one --set per field")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, flag, field",
    [
        (["train", "--set", "train.steps=x", "--steps", "2"], "--steps", "train.steps"),
        (
            ["sample", "--exact", "seed_mixture", "--set", "sampler.options.eta=-1", "--eta", "1"],
            "--eta",
            "sampler.options.eta",
        ),
        (["sample", "--exact", "seed_mixture", "--set", " sampler.n_levels = 5", "--levels", "3"],
         "--levels", "sampler.n_levels"),
        (["sample", "--exact", "seed_mixture", "--set", "sampler.options={eta=0.5}", "--eta", "1"],
         "--eta", "sampler.options.eta"),
        # a field inside the flag's value: the flag replaced the table --set built
        (["train", "--set", "train.steps.x=5", "--steps", "5"], "--steps", "train.steps"),
    ],
)  # fmt: skip
def test_a_field_set_by_both_a_flag_and_set_is_refused(argv, flag, field, tmp_path, capsys):
    """The flag won and the ``--set`` value went unread, not even checked (``train.steps=x``
    trained 2 steps): two different values for one field are refused (the same value twice is
    harmless, and tests/test_precond.py passes ``--data digits --set data.source="digits"``)."""
    out = tmp_path / ("run" if argv[0] == "train" else "s.npy")
    _fails([*argv, "--out", out], capsys, field, flag, "give it once")
    assert not out.exists()


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_a_config_file_that_is_not_utf8_is_named(encoding, tmp_path, capsys):
    """It was Python's "'utf-8' codec can't decode byte 0xff", naming no file."""
    path = tmp_path / "c.toml"
    path.write_bytes("# caf\xe9\n[train]\nsteps = 2\n".encode(encoding))
    _fails(["train", "--config", path, "--out", tmp_path / "run"], capsys, str(path), "UTF-8")


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path):
    """A TOML file saved with a BOM (as Windows editors do) read 'invalid TOML (Invalid
    statement)'; a JSON file 'Unexpected UTF-8 BOM'. Both are read as without it."""
    from scorelab._files import read_json
    from scorelab.config import load_config

    toml, json_file = tmp_path / "c.toml", tmp_path / "c.json"
    toml.write_bytes("\ufeff[train]\nsteps = 2\n".encode())
    json_file.write_bytes('\ufeff{"a": 1}'.encode())
    assert load_config(toml) == {"train": {"steps": 2}}
    assert read_json(json_file) == {"a": 1}
    grid = tmp_path / "grid.json"  # a saved grid was refused: "Unexpected UTF-8 BOM" (pass 20A)
    grid.write_bytes('\ufeff{"sigmas": [0.01, 0.1, 1.0, 10.0]}'.encode())
    out = tmp_path / "s.npy"
    assert main(["sample", "--exact", "seed_mixture", "--n", "5", "--grid", str(grid), "--out",
                 str(out)]) == 0  # fmt: skip


@pytest.mark.parametrize("kind", ["huge_header", "huge_columns"])
def test_an_npy_header_is_checked_before_numpy_allocates(kind, tmp_path, capsys):
    """A damaged header declaring 10**11 rows or 10**13 columns was 'out of memory: ask for
    fewer samples (--n)', naming neither the file nor its shape."""
    path = _data_file(tmp_path, kind)
    _fails(["evaluate", path, "--target", "seed_mixture"], capsys, str(path), "truncated")
    big = tmp_path / "big.npy"
    _npy_with_rows(big, 10**11)
    with open(big, "ab") as handle:  # as long as the header says (sparse): refused by its size
        handle.truncate(big.stat().st_size + 8 * 10**11)
    _fails(["evaluate", big, "--target", "seed_mixture"], capsys, str(big), "of memory")


@pytest.mark.parametrize("rows", [1, 2])
def test_evaluate_refuses_too_few_samples_naming_the_file(rows, tmp_path, capsys):
    """One sample was 'mmd needs at least two samples on each side', two 'kernel_stein_
    discrepancy needs n >= 3': neither named the file nor the remedy."""
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((rows, 2), np.float32))
    argv = ["evaluate", samples, "--target", "seed_mixture"]
    _fails(argv, capsys, str(samples), "at least 3", "--n")


@pytest.mark.parametrize("data", [None, "digits"])
def test_evaluate_refuses_floor_repeats_beyond_what_they_can_tell(data, tmp_path, capsys):
    """``--floor-repeats 10**11`` drew exact pairs for hours before running out of memory, and
    ``10**8`` (within memory) ran for hours without a word under ``--quiet`` (pass 13, #6)."""
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2 if data is None else 64), np.float32))
    reference = ["--target", "seed_mixture"] if data is None else ["--data", data]
    for repeats in ("100000000000", "100000000", "1001"):
        argv = ["evaluate", samples, *reference, "--floor-repeats", repeats, "--quiet"]
        _fails(argv, capsys, f"--floor-repeats: {repeats} repeats; at most 1000")


@pytest.mark.parametrize("flag", ["--out", "--grid-png", "--trajectory", "--json"])
def test_an_output_on_a_symbolic_link_loop_is_one_line(flag, tmp_path, capsys):
    """A self-linked output path was Path.resolve's RuntimeError, a traceback, exit 1."""
    loop = tmp_path / ("loop.png" if flag == "--grid-png" else "loop.npy")
    loop.symlink_to(loop.name)
    if flag == "--json":
        np.save(tmp_path / "s.npy", np.zeros((20, 2), np.float32))
        loop = tmp_path / "loop.json"
        loop.symlink_to(loop.name)
        argv = ["evaluate", tmp_path / "s.npy", "--target", "seed_mixture", flag, loop]
    else:
        argv = ["sample", "--exact", "seed_mixture", "--n", "5", "--levels", "3"]
        argv += ["--out", loop] if flag == "--out" else ["--out", tmp_path / "s.npy", flag, loop]
    _fails(argv, capsys, f"{loop.name}: a symbolic link loop", "remove it or choose another path")


@pytest.mark.parametrize(
    "toml, flags, named",
    [
        ('[train]\nsteps = "5"\n', [], "c.toml: train.steps: expected an integer, got '5'"),
        ('[model]\nwidths = [256, "x"]\n', [], "c.toml: model.widths: expected an integer"),
        # put's "train.batch_size (--batch-size): train is not a table", blaming the flag
        ("train = 5\n", ["--batch-size", "8"], "c.toml: train = 5: expected a table of fields"),
        ("", ["--set", 'train.steps="5"'], "--set train.steps: expected an integer, got '5'"),
        # an unknown section named neither its file nor --set (pass 13, #5)
        ("[unknown]\nx = 1\n", [], "c.toml: unknown: unknown section; accepted: data"),
        ("", ["--set", "unknown.x=1"], "--set unknown: unknown section; accepted: data"),
    ],
)
def test_a_bad_value_is_blamed_on_the_file_or_set_that_gave_it(
    toml, flags, named, tmp_path, capsys
):
    """A --config file's bad value was reported as the flag for its field, which the user never
    passed (``--steps (train.steps): expected an integer, got '5'``), and the file not named."""
    config = tmp_path / "c.toml"
    config.write_text(toml)
    argv = ["train", "--data", "two_moons", "--config", config, "--out", tmp_path / "run", *flags]
    _fails(argv, capsys, named)
    assert main([str(a) for a in argv]) == 2
    error = capsys.readouterr().err.partition("error: ")[2]
    assert error.startswith(str(config) if "c.toml" in named else "--set")  # no --steps first


def test_images_against_points_say_what_does_not_match(tmp_path, capsys):
    """8x8 images against a 2-D target were told "save them as rows", which only led to
    "dimension 64 does not match the reference's 2"."""
    images, rows = tmp_path / "i.npy", tmp_path / "r.npy"
    np.save(images, np.zeros((20, 1, 8, 8), np.float32))
    np.save(rows, np.zeros((30, 64), np.float32))
    for reference in (["--target", "seed_mixture"], ["--data", "two_moons"]):
        _fails(["evaluate", images, *reference], capsys, "the reference holds 2-D points")
    _fails(["evaluate", images, "--data", rows], capsys, "reshape them to rows (n, 64)")


def test_evaluate_shows_its_floor_repeats_unless_quiet(tmp_path, capsys):
    """``evaluate --floor-repeats 100000`` ran for an hour and a half without a word."""
    samples = tmp_path / "s.npy"
    np.save(samples, np.random.default_rng(0).standard_normal((20, 2)).astype(np.float32))
    argv = ["evaluate", str(samples), "--target", "seed_mixture", "--floor-repeats", "3"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "sw floor: 100%" in err and "3/3" in err
    assert main([*argv, "--quiet"]) == 0
    assert "floor" not in capsys.readouterr().err


def test_a_likelihood_solve_out_of_steps_names_the_tolerances(tmp_path, capsys):
    """Tolerances below float32's resolution used up max_steps inside the compiled solve:
    diffrax's EquinoxRuntimeError, a 60-line traceback, exit 1."""
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((2, 2), np.float32))
    argv = ["likelihood", "--exact", "seed_mixture", "--points", points, "--n-probes", "exact"]
    argv += ["--rtol", "1e-30", "--atol", "1e-30"]
    _fails(argv, capsys, "max_steps (4096)", "loosen the tolerances")


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_a_sample_solve_out_of_steps_on_an_unreachable_tolerance_says_so(solver, tmp_path, capsys):
    """``--rtol 1e-30`` in float32 used up max_steps and was told "Try increasing `max_steps`",
    which cannot help; a reachable tolerance keeps diffrax's advice (above, ``--max-steps 1``)."""
    out = tmp_path / "s.npy"
    argv = ["sample", "--exact", "seed_mixture", "--sampler", solver, "--n", "4", "--out", out]
    argv += ["--rtol", "1e-30", "--atol", "1e-30", "--max-steps", "64", "--levels", "4"]
    _fails(argv, capsys, "more cannot help: rtol 1e-30 is below what float32 resolves; give rtol")
    assert not out.exists()


def test_a_grid_search_stops_when_a_sweep_moves_nothing():
    """``grid --sweeps 10**11`` built every (sweep, level) pair up front (itertools.product
    holds its inputs), an 'out of memory' naming --n; the search now stops once a sweep moves
    no level, which is the result every later sweep would give."""
    from scorelab.ays import optimise_grid

    x_0 = jax.random.normal(jax.random.key(0), (16, 2))

    def denoise(x, sigma):
        return x / (1.0 + sigma**2)

    args = (denoise, x_0, jax.random.key(1), 5, 0.02, 80.0)
    few = optimise_grid(*args, n_candidates=3, n_sweeps=40)
    many = optimise_grid(*args, n_candidates=3, n_sweeps=10**11)
    np.testing.assert_array_equal(few[0], many[0])
    assert few[1:] == many[1:]


@pytest.mark.parametrize("history", ["two_dimensional", "strings", "empty", "pipe"])
def test_plot_refuses_a_loss_history_that_is_not_one(history, run_dir, tmp_path, capsys):
    """Strings were numpy's 'could not convert string to float'; a 2-D array plotted, exit 0;
    an empty one was "loss history 'ncsn' is empty", naming no file; a pipe was refused with
    two remedies, the data reader's and the run's."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    words = "losses.npy: not a loss history"
    if history == "pipe":
        (copy / "losses.npy").unlink()
        os.mkfifo(copy / "losses.npy")
        words = "losses.npy: a special file (a device or a pipe), not a loss history; restore it"
    else:
        values = {"two_dimensional": np.zeros((2, 2)), "strings": np.array(["a", "b"])}
        np.save(copy / "losses.npy", values.get(history, np.zeros(0, np.float32)))
    _fails(["plot", copy, "--out", tmp_path / "figures"], capsys, words)


@pytest.mark.parametrize("where", ["data", "config"])
def test_overwrite_never_deletes_an_input_inside_the_run(where, run_dir, tmp_path, capsys):
    """``train --data RUN/points.npy --out RUN --overwrite`` read the data, then deleted it
    with the old run (a --config kept in the run too)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    kept = copy / ("points.npy" if where == "data" else "c.toml")
    if where == "data":
        np.save(kept, np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
        argv = ["train", "--loss", "dsm", "--data", kept, *_TINY_FILE]
    else:
        kept.write_text("[loss]\nname = 'ncsn'\n")
        argv = ["train", "--config", kept, *_TINY]
    before = kept.read_bytes()
    _fails([*argv, "--out", copy, "--overwrite"], capsys, f"would delete {kept}", "move it out")
    assert kept.read_bytes() == before and (copy / "model.eqx").is_file()


@pytest.mark.parametrize(
    ("command", "name"),
    [("sample", "losses.npy"), ("grid", "config.json"), ("likelihood", "config.json")],
)
def test_an_output_never_replaces_a_file_of_the_run_it_reads(
    command, name, run_dir, tmp_path, capsys
):
    """``sample --run RUN --out RUN/losses.npy --overwrite`` replaced the run's loss history
    with the samples (plot then drew them as losses)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = (copy / name).read_bytes()
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((3, 2), np.float32))
    flag = {"sample": "--out", "grid": "--out", "likelihood": "--json"}[command]
    extra = {"sample": ["--n", "5"], "grid": ["--n", "5"], "likelihood": ["--points", points]}
    argv = [command, "--run", copy, *extra[command], flag, copy / name, "--overwrite"]
    _fails(argv, capsys, f"{copy / name}: a file of the run", "another name")
    assert (copy / name).read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["sample", "--exact", "seed_mixture", "--n", "5", "--out"], "losses.npy"),
        (["sample", "--exact", "seed_mixture", "--n", "5", "--out"], "checkpoints/x.npy"),
        (["evaluate", "SAMPLES", "--target", "seed_mixture", "--json"], "config.json"),
        (["likelihood", "--exact", "seed_mixture", "--points", "SAMPLES", "--json"], "model.json"),
        (["grid", "--exact", "seed_mixture", "--levels", "4", "--out"], "manifest.json"),
    ],
)
def test_an_output_never_replaces_a_file_of_any_run(argv, name, run_dir, tmp_path, capsys):
    """Not only the run a command reads: ``evaluate --json RUN/config.json --overwrite``
    replaced another run's configuration with metrics (and ``sample --out RUN/losses.npy``
    its loss history), and a file written into ``checkpoints/`` joined a run's checkpoints."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    argv = [samples if a == "SAMPLES" else a for a in argv]
    _fails([*argv, copy / name, "--overwrite"], capsys, f"{copy / name}: a file of the run")
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("whose", ["its own", "another"])
def test_plot_never_draws_into_a_run_s_checkpoints_folder(whose, run_dir, tmp_path, capsys):
    """``plot --out OTHER/checkpoints --overwrite`` wrote figures into another run's
    checkpoints folder itself (only paths below it were refused for other runs)."""
    other = run_dir if whose == "its own" else tmp_path / "other"
    if whose == "another":
        import shutil

        shutil.copytree(run_dir, other)
    target = other / "checkpoints"
    before = sorted(p.name for p in target.iterdir())
    argv = ["plot", run_dir, "--out", target, "--overwrite"]
    _fails(argv, capsys, f"{target}: a file of the run {other}")
    assert sorted(p.name for p in target.iterdir()) == before


@pytest.mark.parametrize("whose", ["its own", "another"])
def test_export_never_writes_among_a_run_s_checkpoints(whose, run_dir, _conditional_run, capsys):
    """``export RUN --diffusers RUN/checkpoints/pipe`` wrote a pipeline among the checkpoints
    a resume reads."""
    target = (_conditional_run if whose == "its own" else run_dir) / "checkpoints" / "pipe"
    argv = ["export", _conditional_run, "--diffusers", target]
    _fails(argv, capsys, f"{target}: a file of the run", "another name")
    assert not target.exists()


@pytest.mark.parametrize("path", ["/dev/null", "FILE"])
def test_export_and_plot_refuse_a_file_as_their_folder(
    path, run_dir, _conditional_run, tmp_path, capsys
):
    """``plot --out FILE`` said 'File exists'; ``export --diffusers /dev/null`` 'Not a
    directory; a part of the path is a file'."""
    if path == "FILE":
        path = tmp_path / "f.npy"
        path.write_bytes(b"keep")
    _fails(["plot", run_dir, "--out", path], capsys, f"--out {path}: a file, not a folder")
    _fails(["export", _conditional_run, "--diffusers", path], capsys, f"{path} already exists")
    assert path == "/dev/null" or path.read_bytes() == b"keep"


def test_a_flag_inside_a_set_value_that_is_not_a_table_is_refused(tmp_path, capsys):
    """``--set sampler.options=3 --eta 1`` was a TypeError (an internal error)."""
    argv = ["sample", "--exact", "seed_mixture", "--set", "sampler.options=3", "--eta", "1"]
    _fails([*argv, "--out", tmp_path / "s.npy"], capsys, "(--eta): options is not a table")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_export_into_a_folder_it_cannot_write_names_the_user_s_path(_conditional_run, capsys):
    """``export --diffusers /proc/x`` named the staging folder beside it: '/proc/.x.f9h7l0z_: No
    such file or directory'."""
    _fails(["export", _conditional_run, "--diffusers", "/proc/x"], capsys, "/proc/x: ")
    assert not any(path.name.startswith(".x.") for path in Path("/proc").iterdir())


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["sample", "--exact", "seed_mixture", "--sigma-max", "1e30"], "sampler.sigma_max"),
        (["train", "--loss", "dsm", "--set", "loss.sigma=1e20"], "loss.sigma"),
        (["evaluate", "SAMPLES", "--target", "seed_mixture", "--sigma", "1e20"], "sigma"),
        (["sweep", "--samplers", "euler", "--nfe", "4", "--sigma-max", "1e25"], "--sigma-max"),
    ],
)
def test_a_noise_level_whose_variance_overflows_float32_is_refused(argv, field, tmp_path, capsys):
    """Within float32 but not its square: sigma_max = 1e30 'diverged' (blamed on the step
    size), evaluate --sigma 1e20 printed metrics of an infinite-variance law, exit 0."""
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    argv = [samples if a == "SAMPLES" else a for a in argv]
    extra = {
        "sample": ["--n", "5", "--out", tmp_path / "out.npy"],
        "train": ["--out", tmp_path / "run", *_TINY],
        "sweep": ["--n", "20", "--seeds", "0", "--out", tmp_path / "sweep", "--quiet"],
        "evaluate": [],
    }[argv[0]]
    _fails([*argv, *extra], capsys, field, "1 / sigma**2 (a precision) underflows float32")
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["sample", "--exact", "seed_mixture", "--sigma-min", "1e-30"], "sampler.sigma_min"),
        (["sample", "--exact", "seed_mixture", "--sampler", "ula", "--sigma", "1e-30"], "sigma"),
        (["train", "--set", "loss.sigma_min=1e-25"], "loss.sigma_min"),
        (["sweep", "--samplers", "euler", "--nfe", "4", "--sigma-min", "1e-20"], "--sigma-min"),
    ],
)
def test_a_positive_noise_level_whose_variance_underflows_float32_is_refused(
    argv, field, tmp_path, capsys
):
    """A positive level below 1.1e-19 has a zero float32 variance: sampler.sigma_min = 1e-300
    was refused as 'sampler.options: sigmas must be finite, positive and strictly ascending'
    (blaming the options), ULA at sigma 1e-300 'diverged', blamed on the step size. (Below
    float32's smallest normal number, 1.2e-38, a level is 0 itself, and refused as such:
    ``test_settings_that_are_zero_in_float32_or_too_large_to_hold_are_refused``.)"""
    extra = {
        "sample": ["--n", "5", "--out", tmp_path / "out.npy"],
        "train": ["--out", tmp_path / "run", *_TINY],
        "sweep": ["--n", "20", "--seeds", "0", "--out", tmp_path / "sweep", "--quiet"],
    }[argv[0]]
    _fails([*argv, *extra], capsys, field, "its square (a variance) underflows float32")
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["sample", "plot", "export"])
def test_a_sampler_map_or_a_demo_given_as_a_run_says_what_it_is(command, tmp_path, capsys):
    """A folder of scorelab's but not a training run: a sweep's output was 'not a scorelab run
    directory (no config.json): ...; check the path and the disk', and a demo's too, though
    the demo's trained models inside it are runs."""
    sweep_dir, demo_dir = tmp_path / "map", tmp_path / "demo"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.json").write_text("{}")
    (demo_dir / "models" / "ncsn").mkdir(parents=True)
    (demo_dir / "models" / "ncsn" / "config.json").write_text("{}")
    extra = {
        "sample": ["--n", "2", "--out", tmp_path / "s.npy"],
        "plot": ["--out", tmp_path / "figures"],
        "export": ["--diffusers", tmp_path / "pipeline"],
    }[command]
    where = ["--run"] if command == "sample" else []
    _fails([command, *where, sweep_dir, *extra], capsys, "a sampler map", "sampler_map.png")
    _fails([command, *where, demo_dir, *extra], capsys, "a demo's output",
           str(demo_dir / "models" / "ncsn"))  # fmt: skip


def test_the_command_line_computes_in_float32_under_x64(tmp_path, capsys):
    """With jax_enable_x64 (JAX_ENABLE_X64=1 in a user's shell) train was an internal error (a
    float64 loss beside a float32 one in the training step) and a U-Net run refused float64
    states. The command line computes in float32 and says so once; a Python caller's setting
    is back afterwards."""
    import jax

    with jax.enable_x64(True):
        assert main(["train", "--out", str(tmp_path / "run"), *_TINY]) == 0
        assert "computes in float32" in capsys.readouterr().err
        out = tmp_path / "s.npy"
        assert main(["sample", "--run", str(tmp_path / "run"), "--n", "3", "--out", str(out)]) == 0
        assert np.load(out).dtype == np.float32
        assert jax.config.jax_enable_x64


@pytest.mark.parametrize(
    "setting",
    [
        ("default_prng_impl", "rbg"),
        ("threefry_partitionable", False),
        ("numpy_rank_promotion", "raise"),
        ("numpy_dtype_promotion", "strict"),
    ],
    ids=lambda setting: setting[0],
)
def test_the_command_line_draws_the_same_numbers_whatever_jax_is_set_to(setting, tmp_path, capsys):
    """``JAX_DEFAULT_PRNG_IMPL=rbg`` or ``JAX_THREEFRY_PARTITIONABLE=0`` drew other samples for
    one seed (by up to 20), and ``JAX_NUMPY_RANK_PROMOTION=raise`` failed inside scorelab's
    broadcasting: the command line pins them, says so, and gives the caller's setting back."""
    import jax

    argv = ["sample", "--exact", "seed_mixture", "--n", "5", "--sampler", "euler_maruyama"]
    assert main([*argv, "--out", str(tmp_path / "reference.npy")]) == 0
    capsys.readouterr()
    name, value = setting
    with getattr(jax, name)(value):
        assert main([*argv, "--out", str(tmp_path / "s.npy")]) == 0
        assert f"JAX_{name.upper()} ignored here" in capsys.readouterr().err
        assert getattr(jax.config, f"jax_{name}") == value
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.load(tmp_path / "reference.npy"))


@pytest.mark.slow  # samples in a fresh interpreter
def test_the_command_line_pins_jax_in_the_thread_that_samples_too(tmp_path):
    """An environment variable sets JAX's global default, which the worker thread that runs the
    sampler (``workflows._interruptibly``) reads: the pinned settings are carried there."""
    argv = ["sample", "--exact", "seed_mixture", "--n", "5", "--sampler", "euler_maruyama"]
    assert main([*argv, "--out", str(tmp_path / "reference.npy")]) == 0
    script = Path(sys.executable).with_name("scorelab")
    result = subprocess.run(
        [str(script), *argv, "--out", "s.npy"],
        cwd=tmp_path,
        env={**os.environ, "JAX_THREEFRY_PARTITIONABLE": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.load(tmp_path / "reference.npy"))


@pytest.mark.parametrize(
    "variable, reason",
    [
        ("JAX_TRACEBACK_FILTERING", 'Invalid value "garbage" for JAX flag'),
        ("JAX_ENABLE_X64", "invalid truth value 'garbage'"),
    ],
)
def test_a_jax_variable_jax_refuses_on_import_is_one_line(variable, reason, tmp_path):
    """JAX refuses some values when it is imported, which the parser does: a traceback."""
    script = Path(sys.executable).with_name("scorelab")
    result = subprocess.run(
        [str(script), "sample", "--exact", "seed_mixture", "--n", "4", "--out", "s.npy"],
        cwd=tmp_path,
        env={**os.environ, variable: "garbage"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"scorelab: error: {variable}='garbage': JAX refuses it")
    assert reason in result.stderr and len(result.stderr.splitlines()) == 1


# --- sizes a host cannot hold, found before anything is allocated (session 20's hostile pass) --


@pytest.mark.parametrize(("loss", "field"), [("ncsn", "n_sigmas"), ("hutchinson", "n_probes")])
def test_a_step_too_large_by_its_draws_per_example_names_them(loss, field, tmp_path, capsys):
    """10**8 noise levels (or probes) for each example were blamed on a batch of 1, with a
    remedy (a smaller batch_size) that could not be followed."""
    flags = ["--loss", loss, "--batch-size", "1", "--set", f"loss.{field}=100000000"]
    argv = ["train", *flags, "--steps", "1", "--quiet", "--out", tmp_path / "run"]
    _fails(argv, capsys, f"loss.{field} (100000000 draws for each of 1 examples", f"fewer {field}")
    # 10**18: the loss's own check, while the step is traced, said `n_sigmas:`, no section
    argv[6] = f"loss.{field}={10**18}"
    _fails(argv, capsys, f"loss.{field}: needs ", "PiB of memory")


def _sparse_images(path: Path, shape: tuple) -> Path:
    """A uint8 image array of ``shape`` as a sparse .npy: no disk, no memory until read."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape).flush()
    return path


@pytest.mark.parametrize(
    "shape, flags, named",
    [
        # an MLP over 108 M pixels: a first layer of 620 GiB with its optimiser state
        ((1, 3, 6000, 6000), ["--loss", "dsm"], "model (mlp for examples of shape (3, 6000"),
        # the U-Net's parameters are small, its activations (attention) are not
        (
            (2, 3, 1024, 1024),
            ["--model", "unet", "--loss", "vp_epsilon", "--batch-size", "2"],
            "train.batch_size (2 examples of shape (3, 1024, 1024)",
        ),
    ],
)
def test_a_network_or_step_too_large_for_the_host_is_refused_before_allocating(
    shape, flags, named, tmp_path, capsys
):
    """The kernel killed `train` on a 20000x20000 image (exit 137, and the folder it had
    claimed then refused the next run): neither the network's size nor a training step's was
    checked, only the data's. Both are found abstractly (``jax.eval_shape``), before any
    allocation; the run directory is left empty for the corrected command."""
    data = _sparse_images(tmp_path / "big.npy", shape)
    out = tmp_path / "run"
    _fails(["train", "--data", data, "--steps", "1", "--quiet", "--out", out, *flags],
           capsys, named, "of memory")  # fmt: skip
    assert not out.exists() or [p.name for p in out.iterdir() if p.name != ".lock"] == []


def test_settings_that_are_zero_in_float32_or_too_large_to_hold_are_refused(tmp_path, capsys):
    """A learning rate of 1e-320 trained at rate 0 (exit 0); 10**10 timesteps ran out of
    memory with a message naming neither the setting nor a flag of `train`."""
    out = tmp_path / "run"
    _fails(["train", "--out", out, *_TINY, "--lr", "1e-320"], capsys, "train.learning_rate",
           "smallest normal")  # fmt: skip
    _fails(["sample", "--exact", "seed_mixture", "--sigma-min", "1e-300", "--out",
            tmp_path / "s.npy"], capsys, "sampler.sigma_min", "smallest normal")  # fmt: skip
    vp = ["--data", "digits", "--model", "unet", "--loss", "vp_epsilon"]
    timesteps = ["--set", "loss.num_train_timesteps=10000000000"]
    _fails(["train", "--out", out, *_TINY_FILE, *vp, *timesteps], capsys,
           "loss.num_train_timesteps", "of memory")  # fmt: skip


def test_finite_float64_pixels_beyond_float32_are_refused_by_their_range(tmp_path, capsys):
    """1e300 became inf in the cast to float32: a warning line, then 'contain NaN or inf'
    about a file that holds none."""
    path = tmp_path / "huge.npy"
    np.save(path, np.full((8, 1, 8, 8), 1e300))
    _fails(["train", "--data", path, "--out", tmp_path / "run", *_TINY_FILE], capsys,
           str(path), "pixel values span [1e+300, 1e+300]")  # fmt: skip


def test_evaluate_of_coincident_points_says_so(tmp_path, capsys):
    """'the median pairwise distance is 0; pass bandwidth': no option of evaluate."""
    path = tmp_path / "z.npy"
    np.save(path, np.zeros((10, 3), np.float32))
    _fails(["evaluate", path, "--data", path], capsys, "coincide: x (the samples) and y (the "
           "reference) all one point", "check the data and the samples")  # fmt: skip
    # A constant reference was blamed on the samples (pass 25, #6).
    spread = tmp_path / "spread.npy"
    np.save(spread, np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32))
    constant = tmp_path / "c.npy"
    np.save(constant, np.ones((40, 3), np.float32))
    _fails(["evaluate", spread, "--data", constant], capsys, ": y (the reference) all one point")


@pytest.mark.slow  # a console-script subprocess that trains
def test_a_closed_stderr_silences_the_progress_bar_instead_of_failing(tmp_path):
    # 2>&- : tqdm wrote to sys.stderr = None, an AttributeError and "internal error", exit 1
    script = Path(sys.executable).with_name("scorelab")
    result = subprocess.run(
        f"{script} train --steps 3 --out run 2>&-", shell=True, cwd=tmp_path,
        capture_output=False, stdout=subprocess.PIPE, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert (tmp_path / "run" / "model.eqx").is_file()


def test_a_closed_stdout_drops_the_report_and_still_writes_the_samples(tmp_path, monkeypatch):
    # >&- : Python's sys.stdout is None; the stdout wrapper wrapped None and the report line
    # ended in "internal error (a bug in scorelab)", exit 1, where print() drops the text
    from scorelab.cli import main

    monkeypatch.setattr(sys, "stdout", None)
    out = tmp_path / "s.npy"
    assert main(["sample", "--exact", "seed_mixture", "--n", "4", "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 2)
    assert sys.stdout is None


def test_a_low_address_space_limit_is_warned_of_before_jax_starts(monkeypatch):
    # ulimit -v 2000000: `scorelab sample` ended in a segmentation fault (exit 139) with no word
    # of the limit; the warning names it and the remedy, and a limit of 4 GiB or none is silent
    resource = pytest.importorskip("resource")
    from scorelab.cli import _address_space_warning

    for soft, warned in (
        (2000000 * 1024, True),
        (4 * 2**30, False),
        (resource.RLIM_INFINITY, False),
    ):
        monkeypatch.setattr(resource, "getrlimit", lambda _, soft=soft: (soft, soft))
        message = _address_space_warning("sample")
        assert (message is not None) == warned
    monkeypatch.setattr(resource, "getrlimit", lambda _: (2000000 * 1024, resource.RLIM_INFINITY))
    assert _address_space_warning("sample") == (
        "scorelab sample: warning: ulimit -v limits this process to 1.91 GiB of address space; "
        "JAX's runtime reserves more than it uses, and under a few GiB may end in a "
        "segmentation fault instead of an error: raise the limit (ulimit -v unlimited) if it does"
    )


def test_jax_debug_nans_is_a_user_error_naming_the_variable():
    # JAX_DEBUG_NANS=1 made a diverging run "internal error (a bug in scorelab)", exit 1
    from scorelab.cli import _user_error

    message = _user_error(FloatingPointError("invalid value (nan) encountered in scan"))
    assert message.startswith("invalid value (nan) encountered in scan (JAX_DEBUG_NANS is set)")


def test_processes_refuse_an_indivisible_batch_before_starting_any(tmp_path, capsys):
    # refused after 35 s, once per started process, naming batch_size
    argv = ["train", "--processes", 2, "--batch-size", 3, "--steps", 4, "--out", tmp_path / "r"]
    _fails(argv, capsys, "--batch-size (train.batch_size): 3 is not divisible by --processes 2")
    assert not (tmp_path / "r").exists()


def test_an_output_is_never_a_file_the_command_reads(tmp_path, capsys):
    """``pretrained --init-noise x.npy --save-array x.npy --overwrite`` replaced the user's noise
    with the samples: --overwrite replaces earlier outputs, never an input (a hard link too)."""
    noise = tmp_path / "x_T.npy"
    np.save(noise, np.ones((1, 3, 16, 16), np.float32))
    before = noise.read_bytes()
    (tmp_path / "link.npy").hardlink_to(noise)
    pipeline = Path(__file__).parent / "fixtures" / "tiny_ddpm"
    for output in (noise, tmp_path / "link.npy"):
        argv = ["pretrained", pipeline, "--steps", "2", "--init-noise", noise, "--overwrite"]
        argv += ["-o", tmp_path / "grid.png", "--save-array", output]
        _fails(argv, capsys, f"{output}: the same file as --init-noise")
    assert noise.read_bytes() == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_output_folder_that_takes_no_file_is_refused_before_the_work(tmp_path, capsys):
    """``evaluate --json /proc/m.json`` computed and printed every metric, then failed."""
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    argv = ["evaluate", samples, "--target", "seed_mixture", "--json", "/proc/m.json"]
    _fails(argv, capsys, "/proc/m.json: cannot write in its folder")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("command", ["sample", "evaluate", "plot", "pretrained", "sweep"])
def test_an_unknown_argument_is_named_by_its_command(command, capsys):
    """It was ``scorelab: error: unrecognized arguments: --bogus (see scorelab --help)``."""
    assert main([command, "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scorelab {command}: error: ")
    assert err.rstrip().endswith(f"(see scorelab {command} --help)") and err.count("\n") == 1


def test_a_boolean_flag_is_named_as_the_user_gave_it(tmp_path, capsys):
    """``sweep --image-metrics`` on a 2-D target was refused as ``--no-image-metrics: ...``."""
    argv = ["sweep", "--target", "seed_mixture", "--samplers", "euler", "--nfe", "4"]
    argv += ["--n", "20", "--image-metrics", "--out", tmp_path / "s", "--quiet"]
    _fails(argv, capsys, "error: --image-metrics: ")


@pytest.mark.parametrize(
    "damage, fragment",
    [
        # a trained model without config.json was "an unfinished training run"
        ("no_config", "config.json: missing beside the run's trained model; restore it"),
        # special files were "not found", or (config.json a fifo) "an unfinished training run"
        ("config_a_fifo", "config.json: a special file (a device or a pipe), not a run"),
        ("model_eqx_a_device", "model.eqx: a special file (a device or a pipe), not a saved"),
        ("model_json_a_fifo", "model.json: a special file (a device or a pipe), not a saved"),
    ],
)
def test_a_damaged_run_is_named_by_what_is_wrong_with_it(
    damage, fragment, run_dir, tmp_path, capsys
):
    import os
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    file = copy / {"model_eqx": "model.eqx", "model_json": "model.json"}.get(
        damage.split("_a_")[0], "config.json"
    )
    file.unlink()
    if damage.endswith("fifo"):
        os.mkfifo(file)
    elif damage.endswith("device"):
        file.symlink_to("/dev/zero")
    _fails(["sample", "--run", copy, "--n", "10", "--out", tmp_path / "s.npy"], capsys, fragment)


@pytest.mark.slow  # samples a pipeline twice
def test_pretrained_n_must_agree_with_the_init_noise(tmp_path, capsys):
    """``--n 3`` with two images of init noise sampled two and said nothing; without ``--n``
    the file's batch is the number of images."""
    noise = tmp_path / "x_T.npy"
    np.save(noise, np.ones((2, 3, 16, 16), np.float32))
    pipeline = Path(__file__).parent / "fixtures" / "tiny_ddpm"
    argv = ["pretrained", pipeline, "--steps", "2", "--init-noise", noise, "-o", tmp_path / "g.png"]
    _fails([*argv, "--n", "3"], capsys, "--n 3: the init noise", "holds 2 images")
    assert main([str(a) for a in [*argv, "--save-array", tmp_path / "x.npy"]]) == 0
    assert np.load(tmp_path / "x.npy").shape == (2, 3, 16, 16)


def test_export_of_a_class_conditional_run_says_what_runs_it(_conditional_run, tmp_path, capsys):
    """The folder exported (diffusers' UNet2DModel takes its class labels), with a note that
    DDIMPipeline and ``pretrained`` pass no class: it was written without a word."""
    folder = tmp_path / "pipe"
    assert main(["export", str(_conditional_run), "--diffusers", str(folder)]) == 0
    out = capsys.readouterr().out
    assert (folder / "unet" / "config.json").is_file()
    assert "note: a class-conditional U-Net" in out and "--class K" in out
    # made private by its staging (0700, pass 13, #7): the umask's, as any new folder
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_export_refuses_a_folder_inside_a_run(run_dir, _conditional_run, capsys):
    """``export --diffusers RUN/sub`` was written inside a run, which ``train --out RUN
    --overwrite`` then deleted with it."""
    for run in (run_dir, _conditional_run):
        target = run / "sub" / "pipe"
        argv = ["export", _conditional_run, "--diffusers", target]
        _fails(argv, capsys, f"--diffusers {target}: inside the run {run}", "outside any run")
        assert not (run / "sub").exists()


def test_pretrained_names_a_scorelab_run_as_a_run(run_dir, tmp_path, capsys):
    """It read the run's config.json as a U-Net's: 'unsupported UNet2DModel config field(s):
    data, loss, model, sampler, train'."""
    argv = ["pretrained", run_dir, "--steps", "2", "-o", tmp_path / "g.png"]
    _fails(argv, capsys, f"{run_dir}: a scorelab run, not a diffusers pipeline")


@pytest.mark.parametrize("command", ["evaluate", "likelihood"])
def test_points_of_higher_rank_are_not_flattened_for_a_target_of_points(command, tmp_path, capsys):
    """``(50, 2, 1)`` was flattened to 2-D points without a word (any ``(n, *S)`` with two
    numbers would have been); a target of images (``digits_mixture``) still takes 8x8 images."""
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((50, 2, 1), np.float32))
    argv = {
        "evaluate": ["evaluate", points, "--target", "seed_mixture"],
        "likelihood": ["likelihood", "--exact", "seed_mixture", "--points", points],
    }[command]
    _fails(argv, capsys, "points of shape (50, 2, 1); these are points (n, 2), not images")


@pytest.mark.parametrize(
    "flags, reason",
    [
        ("--bogus", "Unknown flag in XLA_FLAGS: --bogus"),
        ("--xla_force_host_platform_device_count=abc", "Couldn't interpret value abc"),
    ],
)
def test_an_xla_flags_xla_refuses_is_one_line_not_an_abort(flags, reason, monkeypatch, capsys):
    """XLA aborted the interpreter (a fatal log line, exit 1) when it parsed the variable."""
    monkeypatch.setenv("XLA_FLAGS", flags)
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", "unused.npy"]
    _fails(argv, capsys, f"XLA_FLAGS={flags!r}: XLA refuses it ({reason}")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--lr", "-inf"], "--lr (train.learning_rate): expected a finite value"),
        (["train", "--lr", "-1e-3"], "--lr (train.learning_rate): expected a number > 0"),
        (["evaluate", "s.npy", "--target", "seed_mixture", "--sigma", "-1e5"], "--sigma: expe"),
        (["sample", "--exact", "seed_mixture", "--sigma-max", "-Infinity"], "--sigma-max (sa"),
        (["sample", "--exact", "seed_mixture", "--sigma-min", "-.5E+2"], "--sigma-min (sa"),
    ],
    ids=lambda item: " ".join(item) if isinstance(item, list) else "",
)
def test_a_negative_number_in_any_spelling_is_a_value_not_a_flag(argv, message, capsys):
    """argparse took only ``-5`` and ``-0.5`` for numbers: ``--lr -inf`` and ``--sigma -1e5``
    were "expected one argument", naming no remedy (pass 18, #10)."""
    _fails(argv, capsys, message)


@pytest.mark.parametrize("written", ['"3"', "nan", "true", "1979-05-27", "{x = 1}"])
def test_a_file_value_a_flag_replaces_is_still_checked(written, tmp_path, capsys):
    """``steps = "3"`` in a --config file was refused, but accepted beside ``--steps 2``,
    which replaced it unread (pass 18, #9)."""
    path = tmp_path / "s.toml"
    path.write_text(f"[train]\nsteps = {written}\n")
    out = tmp_path / "run"
    _fails(["train", "--config", path, "--steps", "2", "--out", out], capsys,
           f"{path}: train.steps: expected an integer, got ",
           "(--steps replaces it in this run; correct the file)")  # fmt: skip
    assert not out.exists()


def test_a_budget_of_zero_beside_levels_is_no_budget(tmp_path, capsys):
    """``--set sampler.nfe=0`` (no budget, the default) beside ``--levels`` was refused as if
    a budget were given (pass 18, #11); a budget of 5 still is."""
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--levels", "4"]
    assert main([*argv, "--out", str(tmp_path / "s.npy"), "--set", "sampler.nfe=0"]) == 0
    assert "NFE 4" in capsys.readouterr().out
    _fails([*argv, "--out", tmp_path / "t.npy", "--set", "sampler.nfe=5"], capsys,
           "a budget sizes the grid, and sampler.n_levels (--levels) was given too")  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--exact", "seed_mixture", "--n", "4", "--out", "unused.npy"],
        ["likelihood", "--exact", "seed_mixture", "--points", "unused.npy"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_field_the_command_ignores_is_named_before_what_it_breaks(argv, capsys):
    """``--set model.name=unet`` beside an exact score was told to set loss.name=vp_epsilon,
    advice that led to "does not read it" (pass 18, #6): that comes first now."""
    message = f"--set model.name: scorelab {argv[0]} does not read it (read by scorelab train)"
    _fails([*argv, "--set", "model.name='unet'"], capsys, message)


def test_an_output_may_not_be_the_grid_file_the_command_reads(tmp_path, capsys):
    """``grid --method ld3 --grid G.json --out G.json --overwrite`` replaced the saved grid it
    started from (pass 18B, #1a)."""
    grid = tmp_path / "g.json"
    argv = ["grid", "--exact", "seed_mixture", "--levels", "4", "--n", "16", "--quiet"]
    assert main([*argv, "--out", str(grid)]) == 0
    saved = grid.read_bytes()
    capsys.readouterr()
    _fails(["grid", "--exact", "seed_mixture", "--method", "ld3", "--sampler", "euler",
            "--grid", grid, "--n", "8", "--out", grid, "--overwrite", "--quiet"], capsys,
           f"{grid}: the same file as --grid, which this command reads")  # fmt: skip
    assert grid.read_bytes() == saved


def test_an_interrupt_while_the_run_is_written_comes_after_its_last_file(tmp_path, monkeypatch):
    """Ctrl-C between model.eqx and config.json left a model without its configuration, which
    ``sample`` then called damaged (pass 18B, #2): the run's files are written whole, and the
    interrupt is raised after them."""
    import signal as signals

    from scorelab import workflows

    real = workflows.save_model

    def interrupted(*args, **kwargs):
        signals.raise_signal(signals.SIGINT)  # held until the files are written
        return real(*args, **kwargs)

    monkeypatch.setattr(workflows, "save_model", interrupted)
    previous = signals.signal(signals.SIGINT, signals.default_int_handler)
    try:
        assert main(["train", "--out", str(tmp_path / "run"), *_TINY]) == 130
    finally:
        signals.signal(signals.SIGINT, previous)
    for name in ("model.eqx", "model.json", "losses.npy", "config.json", "manifest.json"):
        assert (tmp_path / "run" / name).is_file(), name


def test_a_range_broken_by_the_end_given_names_that_end(tmp_path, capsys, run_dir):
    """``--sigma-min 100`` blamed ``--sigma-max``, never given (its 80 kept from the target);
    ``score-error --seed -1`` named ``score_error.seed`` (pass 18, #8)."""
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", tmp_path / "s.npy"]
    _fails([*argv, "--sigma-min", "100"], capsys,
           "--sigma-min (sampler.sigma_min): expected a number < sigma_max (80.0, not given "
           "here: set it too), got 100.0")  # fmt: skip
    both = "--sigma-max (sampler.sigma_max): expected a number > sigma_min (1.0), got 0.5"
    _fails([*argv, "--sigma-min", "1", "--sigma-max", "0.5"], capsys, both)
    _fails(["score-error", "--run", run_dir, "--seed", "-1"], capsys, "error: --seed: ")


def test_levels_that_merge_blame_no_single_flag(tmp_path, capsys):
    """Levels that merge in float32 named ``--grid (sampler.grid)``, never given: the cause is
    the levels, the range and rho together (pass 18A, #8b)."""
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", tmp_path / "s.npy"]
    _fails([*argv, "--levels", "5", "--sigma-min", "1", "--sigma-max", "1.0000001"], capsys,
           "error: sampler: sigma grid of 5 levels from 1.0 to 1.0000001: its levels "
           "merge or overflow in float32; widen the range, use fewer levels, or a milder "
           "rho")  # fmt: skip


def test_a_table_given_by_set_inside_an_option_is_blamed_on_set(tmp_path, capsys):
    """``--set sampler.options.eta.x=1`` was blamed on ``--eta``, never given: the field's
    value came whole from ``--set`` (pass 18A, #8d)."""
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", tmp_path / "s.npy"]
    _fails([*argv, "--sampler", "ddim", "--set", "sampler.options.eta.x=1"], capsys,
           "error: --set sampler.options.eta: expected a number, got {'x': 1}")  # fmt: skip


def test_plot_into_a_read_only_run_names_the_run_and_plot_out(run_dir, monkeypatch, capsys):
    """On a read-only run folder, ``plot`` named the internal ``.lock`` file and "choose another
    path" (pass 18B, #6): it names the run and ``--out``."""
    from scorelab import runs

    def read_only(path):
        raise PermissionError(1, "Operation not permitted", str(path / ".lock"))

    monkeypatch.setattr(runs, "_try_lock", read_only)
    _fails(["plot", run_dir], capsys,
           f"{run_dir}: cannot write into the run folder (Operation not permitted); write the "
           "figures elsewhere (plot --out DIR)")  # fmt: skip


def test_version_prints_the_installed_version(capsys):
    """``scorelab --version`` said "the following arguments are required: COMMAND"."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("scorelab ")


def test_an_mplbackend_matplotlib_refuses_is_named_with_its_remedy(tmp_path):
    """Importing matplotlib raised "Key backend: 'nonsense' is not a valid value ...", naming
    neither the variable nor a remedy (a fresh process: this one's matplotlib is imported)."""
    script = Path(sys.executable).with_name("scorelab")
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", "unused.npy"]
    env = {**os.environ, "MPLBACKEND": "nonsense"}
    result = subprocess.run(
        [str(script), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "scorelab sample: error: MPLBACKEND='nonsense': not a matplotlib backend; unset "
        "MPLBACKEND or set it to agg\n"
    )
    assert not (tmp_path / "unused.npy").exists()


def _console(argv, tmp_path, stdout):
    script = Path(sys.executable).with_name("scorelab")
    return subprocess.run(
        [str(script), *argv],
        cwd=tmp_path,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # about 16 s of a worker: kept out of the default suite's 15 minutes
def test_a_closed_pipe_on_stdout_ends_quietly_with_sigpipes_status(tmp_path):
    """``scorelab ... | head`` whose reader is gone said "error: Broken pipe; check the path and
    the disk": the command ends as a pipeline's writer does, with no message and 128 + SIGPIPE;
    the samples were written before the report."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", "s.npy"]
    try:
        result = _console(argv, tmp_path, write_end)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (128 + signal.SIGPIPE, "")
    assert np.load(tmp_path / "s.npy").shape == (4, 2)


@pytest.mark.slow  # about 14 s of a worker: kept out of the default suite's 15 minutes
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_stdout_is_named_as_stdout(tmp_path):
    """``> /dev/full`` said "the disk is full" about no file: the message names stdout."""
    argv = ["sample", "--exact", "seed_mixture", "--n", "4", "--out", "s.npy"]
    with open("/dev/full", "w") as full:
        result = _console(argv, tmp_path, full)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "scorelab sample: error: standard output: No space left on device"
    )
    assert len(result.stderr.splitlines()) == 1


def test_image_samples_are_compared_in_the_layout_and_range_the_data_are_read_in(tmp_path, capsys):
    """The samples file is read as stored (model space), the data through the image loader:
    an (n, H, W, C) array compared with itself was 'far' (SW 0.36 against a floor of 0.34),
    and 8-bit samples were compared raw with data read in [-1, 1] (SW 140)."""
    pixels = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    data, nhwc, nchw = tmp_path / "data.npy", tmp_path / "nhwc.npy", tmp_path / "nchw.npy"
    np.save(data, pixels)
    scaled = pixels.astype(np.float32) / 127.5 - 1
    np.save(nhwc, scaled)
    np.save(nchw, scaled.transpose(0, 3, 1, 2))
    argv = ["evaluate", "--data", data, "--floor-repeats", "2"]
    _fails([argv[0], nhwc, *argv[1:]], capsys, "expected (n, 3, 8, 8) or flat rows (n, 192)")
    raw = tmp_path / "raw.npy"
    np.save(raw, pixels.transpose(0, 3, 1, 2))
    _fails([argv[0], raw, *argv[1:]], capsys, "integer pixels; the samples are compared")
    assert main([str(a) for a in [argv[0], nchw, *argv[1:]]]) == 0
    assert "samples  0.000 " in capsys.readouterr().out  # the data's own images: SW 0


def test_likelihood_refuses_images_in_another_layout(tmp_path, capsys):
    """(n, 8, 8, 3) points for a (3, 8, 8) model were reshaped, not transposed: a log-density
    of scrambled images, exit 0."""
    from scorelab.workflows import _likelihood_points

    nhwc = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(
        ConfigError, match=r"images of shape \(2, 8, 8, 3\); expected \(n, 3, 8, 8\)"
    ):
        _likelihood_points(nhwc, (3, 8, 8), (3, 8, 8))
    assert _likelihood_points(nhwc.transpose(0, 3, 1, 2), (3, 8, 8), (3, 8, 8)).shape == (
        2,
        3,
        8,
        8,
    )


def test_plot_into_a_dangling_link_names_it(run_dir, tmp_path, capsys):
    """``plot --out LINK`` to a folder that does not exist said 'cannot create the folder
    (File exists)' (pass 14, #8)."""
    link = tmp_path / "figs"
    link.symlink_to(tmp_path / "gone")
    _fails(["plot", run_dir, "--out", link], capsys, f"--out {link}: a symbolic link to")


def test_plot_into_a_run_another_process_holds_is_refused(run_dir, capsys):
    """``plot RUN`` wrote RUN/figures while a failing ``train --out RUN --overwrite`` was
    replacing the run, which took the figures for the new run's work and deleted the old run
    (pass 14, #1)."""
    from scorelab.runs import locked

    with locked(run_dir):
        _fails(["plot", run_dir], capsys, f"run directory {run_dir} is in use by another process")
    assert main(["plot", str(run_dir), "--overwrite"]) == 0


@pytest.mark.parametrize("inside", [".", "sub/deeper"])
def test_an_output_into_a_run_another_process_writes_is_refused(inside, run_dir, tmp_path, capsys):
    """``evaluate S --json RUN/m.json`` while another process trained or replaced RUN wrote
    into it; that job, when it finished, recorded the file as its own work, and the run's next
    ``--overwrite`` deleted it (pass 19B, #1b). Refused, at any depth; once the run is free, a
    file beside it is the user's to write."""
    import shutil

    from _holder import held_by_another_process

    run_dir = shutil.copytree(run_dir, tmp_path / "run")  # the module's run stays as it is
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    out = run_dir / inside / "mine.json"
    argv = ["evaluate", samples, "--target", "seed_mixture", "--json", out, "--quiet"]
    with held_by_another_process(run_dir):
        _fails(argv, capsys, f"{out}: inside the run {run_dir}, which another process is")
    assert not out.exists()
    assert main([str(arg) for arg in argv]) == 0


def test_two_plots_into_one_new_folder_do_not_both_succeed(run_dir, tmp_path, capsys, monkeypatch):
    """Two ``plot --out NEW`` at once both exited 0, and NEW held one run's figures (pass 14,
    #6): the second to write a figure is refused, keeping the first's."""
    from scorelab import workflows

    out = tmp_path / "figs"
    real = workflows.plot_run

    def racing(run, folder):  # another `plot --out figs` finishes first
        written = real(run, folder)
        for path in written:
            path.write_bytes(b"theirs")
        return real(run, folder)

    monkeypatch.setattr(workflows, "plot_run", racing)
    _fails(["plot", run_dir, "--out", out], capsys, "another process created it")
    assert all(path.read_bytes() == b"theirs" for path in out.iterdir())
    assert main(["plot", str(run_dir), "--out", str(out), "--overwrite"]) == 0


_HUGE = str(10**400)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["train", "--set", f"train.steps={_HUGE}"], "--set train.steps: expected an integer"),
        (["train", "--set", f"loss.sigma={_HUGE}"], "--set loss.sigma: expected a number within"),
        (["train", "--batch-size", _HUGE], "--batch-size (train.batch_size): expected an integer"),
        (["sample", "--exact", "seed_mixture", "--n", _HUGE], "--n: expected an integer"),
        (
            ["sample", "--exact", "seed_mixture", "--set", f"sampler.options.eta={_HUGE}"],
            "--set sampler.options.eta: expected a number within float32's range",
        ),
        (["sweep", "--n", _HUGE], "--n: expected an integer"),
        (["grid", "--exact", "seed_mixture", "--candidates", _HUGE], "--candidates: expected"),
        (
            ["likelihood", "--exact", "seed_mixture", "--points", "POINTS", "--n-probes", _HUGE],
            "--n-probes: needs more memory than any machine has",
        ),
    ],
    ids=["steps", "sigma", "batch-size", "n", "option", "sweep-n", "candidates", "n-probes"],
)
def test_an_integer_past_float_range_is_one_line_not_a_traceback(argv, named, tmp_path, capsys):
    """TOML and argparse read integers of any size: 10**400 raised OverflowError in a float
    conversion or a size check, a traceback and 'internal error' (pass 16, #1)."""
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((4, 2), np.float32))
    argv = [str(points) if a == "POINTS" else a for a in argv]
    out = {"train": "r", "sample": "s.npy", "sweep": "m", "grid": "g.json"}.get(argv[0])
    argv += ["--out", tmp_path / out] if out else []
    _fails(argv, capsys, named, "digits" if "memory" not in named else "")


# --- pass 20B: tampered run folders and odd output paths ---


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return shutil.copytree(run_dir, tmp_path / "run")  # the module's run stays as it is


@pytest.mark.parametrize("record", [".scorelab-written", "manifest.json"])
def test_a_pipe_or_device_as_a_run_s_record_is_named_not_waited_on(record, run_dir, tmp_path):
    """A FIFO as ``RUN/.scorelab-written`` or ``RUN/manifest.json`` made ``sample --out RUN/x``,
    ``plot`` and ``train --resume`` wait for ever, and a link to /dev/zero read until the
    memory ran out (pass 20B, F1, F2): every JSON read refuses a file that is not regular."""
    from scorelab._files import read_json

    run = _copy(run_dir, tmp_path)
    (run / record).unlink(missing_ok=True)
    os.mkfifo(run / record)
    with pytest.raises(ValueError, match=f"{record}: a special file .* not a JSON file"):
        read_json(run / record)
    (run / record).unlink()
    (run / record).symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=f"{record}: a special file .* not a JSON file"):
        read_json(run / record)


@pytest.mark.parametrize("content", ["5", "null", "[1]"])
def test_a_demo_json_that_is_not_an_object_is_named(content, run_dir, tmp_path, capsys):
    """``plot`` of a folder whose demo.json held ``5`` ended in "TypeError: argument of type
    'int' is not iterable", an internal error (pass 20B, F3)."""
    run = _copy(run_dir, tmp_path)
    (run / "demo.json").write_text(content)
    _fails(["plot", run, "--out", tmp_path / "figs"], capsys, f"{run / 'demo.json'}: demo")


def test_plot_of_a_demo_folder_names_its_damaged_stored_files(tmp_path, capsys):
    """``plot`` of a demo folder whose metrics.json lacked its rows ended in "KeyError: 'rows'",
    an internal error, and a pipe as samples.npz or metrics.json waited for ever (pass 20B,
    F4)."""
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "demo.json").write_text('{"budgets": [10, 20]}')
    (demo / "metrics.json").write_text("{}")
    (demo / "models" / "unet").mkdir(parents=True)
    np.save(demo / "models" / "unet" / "losses.npy", np.array([1.0, 0.5], np.float32))
    np.savez(demo / "samples.npz", data=np.zeros((2, 1, 8, 8), np.float32))
    _fails(["plot", demo, "--out", tmp_path / "f1"], capsys, "metrics.json or samples.npz is not")
    (demo / "metrics.json").unlink()
    os.mkfifo(demo / "metrics.json")
    _fails(["plot", demo, "--out", tmp_path / "f2"], capsys, "metrics.json: a special file")
    (demo / "metrics.json").unlink()
    (demo / "metrics.json").write_text('{"rows": [], "floors": {}}')
    (demo / "samples.npz").unlink()
    os.mkfifo(demo / "samples.npz")
    _fails(["plot", demo, "--out", tmp_path / "f3"], capsys, "samples.npz: a special file")


def test_a_run_without_its_manifest_keeps_its_files_from_outputs(run_dir, tmp_path, capsys):
    """A run whose manifest.json was lost took ``evaluate --json RUN/config.json --overwrite``
    and ``sample --out RUN/losses.npy --overwrite`` (pass 20B, F5)."""
    run = _copy(run_dir, tmp_path)
    (run / "manifest.json").unlink()
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    before = (run / "config.json").read_bytes()
    argv = ["evaluate", samples, "--target", "seed_mixture", "--quiet", "--overwrite"]
    _fails([*argv, "--json", run / "config.json"], capsys, "config.json: a file of the run")
    _fails([*argv, "--json", run / "losses.npy"], capsys, "losses.npy: a file of the run")
    assert (run / "config.json").read_bytes() == before


def test_plot_into_run_figures_linked_out_of_the_run_needs_overwrite(run_dir, tmp_path, capsys):
    """``RUN/figures`` as a link to a user's folder elsewhere had its files replaced without
    ``--overwrite`` (pass 20B, F6): only figures inside the run are redrawn in place."""
    import shutil

    run = _copy(run_dir, tmp_path)
    shutil.rmtree(run / "figures", ignore_errors=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "loss.png").write_bytes(b"the user's own figure")
    (run / "figures").symlink_to(mine)
    _fails(["plot", run], capsys, f"{run / 'figures'} (a link to {mine}): a folder that is not")
    assert (mine / "loss.png").read_bytes() == b"the user's own figure"


def test_a_path_with_a_line_break_is_refused_whole(run_dir, tmp_path, capsys):
    """``sample --out $'ex\\nist.npy'`` said only "error: ex" (pass 20B, F7)."""
    out = tmp_path / "ex\nist.npy"
    _fails(["plot", run_dir, "--out", out], capsys, "a path with a line break", "rename it")


def test_a_loss_history_without_a_finite_loss_is_damage(run_dir, tmp_path, capsys):
    """An all-NaN losses.npy was drawn as an empty figure, exit 0 (pass 20B, F10)."""
    run = _copy(run_dir, tmp_path)
    np.save(run / "losses.npy", np.full(20, np.nan, np.float32))
    _fails(["plot", run, "--out", tmp_path / "figs"], capsys, "losses.npy: holds no finite loss")


def test_resume_refuses_a_run_file_linked_out_of_the_run(run_dir, tmp_path, capsys):
    """``train --resume`` wrote the run's configuration through RUN/config.json, a link to a
    user's file outside the run (pass 20B, F13)."""
    run = _copy(run_dir, tmp_path)
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(notes)
    _fails(
        ["train", "--out", run, "--resume", "--loss", "ncsn", *_TINY],
        capsys,
        f"{run / 'config.json'}: a link to {notes}, outside the run",
    )
    assert notes.read_text() == '{"my": "notes"}'


def test_a_refused_stranger_s_folder_keeps_no_lock_file(tmp_path, capsys):
    """``train --out DIR --overwrite`` on a folder of the user's that holds no run was refused,
    and left a .lock file among the user's files (pass 20A)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    _fails(["train", "--out", folder, "--overwrite", *_TINY], capsys, "holds no scorelab run")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_demo_settings_errors_name_the_settings_file(tmp_path, capsys):
    """``demo --settings FILE`` named the field alone (``demo.n_data: ...``), unlike
    ``train --config`` (pass 20A)."""
    settings = tmp_path / "tiny.toml"
    settings.write_text('n_data = "many"\n')
    _fails(
        ["demo", "--settings", settings, "--out", tmp_path / "d"],
        capsys,
        f"{settings}: demo.n_data",
    )
    _fails(
        ["demo", "images", "--settings", settings, "--out", tmp_path / "d"],
        capsys,
        f"{settings}: demo.",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--exact", "seed_mixture", "--sigma-min", "1e-400"],
        ["sample", "--exact", "seed_mixture", "--sampler", "ddim", "--eta", "-1e-400"],
        ["sweep", "--tolerances", "1e-3,1e-400"],
        ["likelihood", "--exact", "seed_mixture", "--points", "p.npy", "--rtol", "1e-400"],
    ],
)
def test_a_number_that_rounds_to_zero_is_refused_as_written(argv, capsys):
    """``--sigma-min 1e-400`` was used as 0 and reported as "got 0.0" (pass 16, #18f)."""
    _fails(argv, capsys, "1e-400: below the smallest double", "give 0 or a larger number")


def test_a_run_shorter_than_its_average_says_the_model_keeps_its_initial_weights(tmp_path, capsys):
    """With the default EMA (0.999) a 30-step run saved a model 97% its initial weights, and
    said only "trained model written" (pass 21D, F1)."""
    out = tmp_path / "run"
    argv = ["train", "--out", out, "--steps", "30", "--batch-size", "32", "--quiet"]
    assert main([str(arg) for arg in argv]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "scorelab train: warning: train.ema_decay 0.999 averages over about 1000 steps, this "
        "run took 30: the saved (averaged) model keeps 97% of the initial weights; train "
        "longer, lower train.ema_decay or set train.ema_debias = true"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--exact", "seed_mixture", "--n", "4", "--out"],
        ["evaluate", "SAMPLES", "--target", "seed_mixture", "--floor-repeats", "2", "--json"],
    ],
)
def test_an_output_inside_a_file_is_named_as_such(tmp_path, capsys, argv):
    """``--out afile/x.npy`` said "cannot write in its folder (File exists)" (pass 22, #8);
    train's --out already said "a folder inside the file"."""
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((20, 2), np.float32))
    (tmp_path / "afile").write_text("mine")
    suffix = ".npy" if argv[0] == "sample" else ".json"
    out = tmp_path / "afile" / f"x{suffix}"
    argv = [samples if a == "SAMPLES" else a for a in argv]
    _fails([*argv, out], capsys, f"{out}: a file inside the file {tmp_path / 'afile'}")
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_very_long_error_keeps_its_start_and_its_remedy(tmp_path, capsys):
    """A tensorstore error quoted its whole spec, 2 KB in the one line (pass 22, #3); a long
    message keeps what failed and the remedy, its middle cut."""
    from scorelab.cli import _LONGEST

    name = "x" * 5000
    _fails(["sample", "--exact", name, "--out", tmp_path / "s.npy"], capsys)
    main(["sample", "--exact", name, "--out", str(tmp_path / "s.npy")])
    line = capsys.readouterr().err.strip()
    assert len(line) <= len("scorelab sample: error: ") + _LONGEST + len(" [...] ")
    assert line.startswith("scorelab sample: error: --exact: no exact score for 'xxx")
    assert " [...] " in line and line.endswith("'; accepted: seed_mixture, digits_mixture")


def test_a_trajectory_of_dpm_adaptive_is_refused_before_sampling(tmp_path, capsys):
    """Its two records, both at the end of the solve, were written as the trajectory, exit 0
    (pass 23, #4)."""
    argv = ["sample", "--exact", "seed_mixture", "--sampler", "dpm_adaptive", "--n", "4"]
    argv += ["--out", tmp_path / "s.npy", "--trajectory", tmp_path / "t.npy"]
    _fails(argv, capsys, "--trajectory: dpm_adaptive chooses its steps per chain", "tsit5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", [["--class", "3"], ["--guidance", "2"]])
def test_a_class_asked_of_an_exact_score_names_the_exact_score(tmp_path, capsys, flag):
    """``--exact digits_mixture --class 3`` said "the model is not class-conditional", with no
    model in the command (pass 23, #6)."""
    argv = ["sample", "--exact", "digits_mixture", "--n", "2", *flag, "--out", tmp_path / "s.npy"]
    _fails(argv, capsys, f"{flag[0]}: an exact score has no classes")


@pytest.mark.slow  # about 13 s of a worker: kept out of the default suite's 15 minutes
def test_plot_of_a_class_conditional_run_draws_labelled_rows(
    tmp_path, _conditional_run, monkeypatch
):
    """``plot`` drew 64 samples of every class, 640 unlabelled images (pass 23, #3): now 8 of
    each of the first 8 classes, a labelled row each, as ``sample --grid-png`` draws them."""
    from scorelab import workflows

    run = _class_conditional_run(tmp_path, _conditional_run)
    np.save(run / "losses.npy", np.ones(3, np.float32))
    drawn = {}

    def grid(images, path, label, labels=None):
        drawn.update(n=len(images), labels=None if labels is None else list(labels))
        return Path(path)

    monkeypatch.setattr(workflows, "save_sample_grid", grid)
    workflows.plot_run(run, tmp_path / "figures")
    assert drawn == {"n": 64, "labels": [c for c in range(8) for _ in range(8)]}


@pytest.mark.parametrize(("overwrite", "hint"), [(False, True), (True, False)])
def test_a_full_disk_suggests_resume_only_where_it_continues_this_run(overwrite, hint):
    """A refused ``train --overwrite`` suggested ``--resume``, which continues the run it was
    to replace (pass 22, #8)."""
    from scorelab.cli import _user_error

    error = OSError(errno.ENOSPC, "No space left on device", "/r/checkpoints")
    message = _user_error(error, "train", resumable=not overwrite)
    assert message.startswith("/r/checkpoints: No space left on device; the disk is full")
    assert ("--resume" in message) == hint


@pytest.mark.slow  # about 17 s of a worker: kept out of the default suite's 15 minutes
def test_a_home_without_a_config_folder_adds_nothing_to_stderr(tmp_path):
    """With an unwritable or missing ``HOME`` (a container run as another user) matplotlib
    made a temporary config folder and said so in two lines on every command's stderr (pass
    22, #8). ``HOME`` is a file here: no folder can be made under it, even by root."""
    (tmp_path / "home").write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME")}
    env.update(HOME=str(tmp_path / "home"), MPLBACKEND="Agg")
    script = Path(sys.executable).with_name("scorelab")
    argv = [str(script), "sample", "--exact", "seed_mixture", "--n", "4", "--out", "s.npy"]
    result = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert np.load(tmp_path / "s.npy").shape == (4, 2)


def test_a_unet_attention_resolution_that_is_no_level_names_the_field(tmp_path, capsys):
    """The U-Net's refusal came as ``model: attention_resolutions: ...``, unlike every other
    field's ``model.FIELD:``, and did not say a resolution is a level's height (pass 25, #9)."""
    argv = ["train", "--data", "digits", "--set", "model.name='unet'", "--set",
            "loss.name='vp_epsilon'", "--set", "model.attention_resolutions=[3]",
            "--out", tmp_path / "run"]  # fmt: skip
    words = "model.attention_resolutions: [3] is not a level's resolution (its height)"
    _fails(argv, capsys, words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["points", "images"])
def test_boolean_data_are_refused_with_a_remedy(kind, tmp_path, capsys):
    """bool arrays were refused without saying what to give instead (pass 25, #8)."""
    shape = (20, 2) if kind == "points" else (20, 8, 8)
    np.save(tmp_path / "b.npy", np.zeros(shape, bool))
    remedy = "convert them to floats" if kind == "points" else "convert them to uint8"
    _fails(["train", "--data", tmp_path / "b.npy", "--out", tmp_path / "run"], capsys, remedy)
