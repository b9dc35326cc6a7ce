"""scorelab demo images: the pipeline end to end at toy sizes (the real run is in the README)."""

import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from scorelab.cli import main
from scorelab.image_demo import ImageDemoSettings

_TINY = """
samplers = ["ddim", "heun"]
budgets = [3, 5]
n_samples = 16
floor_repeats = 2
channels = [8, 16]
[train]
steps = 4
warmup_steps = 1
batch_size = 8
steps_per_dispatch = 2
unroll = true
log_every = 2
"""


@pytest.mark.slow  # trains and samples a U-Net end to end: minutes of compilation on 2 cores
def test_image_demo_writes_rows_floors_grids_and_a_run(tmp_path, capsys):
    settings = tmp_path / "tiny.toml"
    settings.write_text(_TINY)
    argv = ["demo", "images", "--settings", str(settings), "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    run = tmp_path / "demo-images"
    metrics = json.loads((run / "metrics.json").read_text())
    # heun at 3 NFE has 2 levels (2N - 1 = 3); every job is a row with its budget respected
    assert [(r["sampler"], r["budget"]) for r in metrics["rows"]] == [
        ("ddim", 3),
        ("ddim", 5),
        ("heun", 3),
        ("heun", 5),
    ]
    assert all(r["nfe"] <= r["budget"] for r in metrics["rows"])
    assert set(metrics["floors"]) >= {"fd", "class_tv", "top_prob"}
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"loss.png", "data.png", "fd_vs_nfe.png", "samples_heun_nfe5.png"} <= figures
    samples = np.load(run / "samples.npz")
    assert samples["ddim_nfe5"].shape == (16, 1, 8, 8)
    assert (run / "models" / "unet" / "manifest.json").is_file()
    assert "floor fd" in capsys.readouterr().out
    # scorelab plot redraws the demo's figures from its files, pixel for pixel
    assert main(["plot", str(run), "--out", str(tmp_path / "again")]) == 0
    for name in figures:
        first = plt.imread(run / "figures" / name)
        np.testing.assert_array_equal(plt.imread(tmp_path / "again" / name), first)
    # the demo's folder is not a run, and the error names the run inside it
    out = str(tmp_path / "s.npy")
    assert main(["sample", "--run", str(run), "--n", "2", "--out", out]) == 2
    assert str(run / "models" / "unet") in capsys.readouterr().err
    # a second run refuses the directory instead of overwriting it
    assert main(argv) == 2


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"samplers": ["ula"]}, "demo.samplers"),
        ({"budgets": [1]}, "demo.budgets"),
        ({"size": 32}, "demo.size"),
        ({"n_samples": 2}, "demo.n_samples"),
        # the runs the settings make, checked up front under the settings' own names (these
        # were found seconds into the demo, or once training began, as model.channels, ...)
        ({"channels": []}, "demo.channels"),
        ({"channels": [0]}, "demo.channels"),
        # the U-Net's group norms divide the channels (was "choose channels, groups and heads"
        # at build time, naming two settings the demo does not have)
        ({"channels": [3, 5]}, "demo.channels: every entry must be a multiple"),
        # a grid too large to hold is named by the budgets, without the sample command's flags
        ({"budgets": [10**11]}, "demo.budgets: needs"),
        ({"rho": 0.0}, "demo.rho"),
        ({"train": {"batch_size": 10**14}}, "demo.train.batch_size"),
        ({"budgets": [10, 10]}, "demo.budgets: 10 given more than once"),
        ({"samplers": ["ddim", "ddim"]}, "demo.samplers: 'ddim' given more than once"),
        # the grid's level count was reported as if it were the budget given
        ({"samplers": ["heun"], "budgets": [2, 10]}, "demo.budgets: 2 evaluations buy 'heun' no"),
        ({"samplers": ["tsit5"], "budgets": [10]}, "demo.samplers: 'tsit5' is adaptive"),
    ],
)
def test_image_demo_settings_refuse_bad_values(bad, named):
    with pytest.raises(ValueError) as refused:
        ImageDemoSettings.from_dict(bad)
    assert str(refused.value).startswith(named), str(refused.value)


@pytest.mark.parametrize(
    "channels, message",
    [
        # 5 levels halve 8x8 digits below 1 pixel: train_run refused it once the demo began
        (
            [8, 8, 8, 8, 8],
            "demo.channels: a U-Net of 5 levels needs images whose height and width are "
            "multiples of 2 ** (5 - 1) = 16, and the data's are 8x8",
        ),
        # hundreds of GiB of parameters: the model build refused it once the demo began
        ([8192, 8192], "demo.channels: model (unet for examples of shape (1, 8, 8)): needs "),
    ],
)
def test_image_demo_settings_check_the_network_the_run_builds(channels, message, monkeypatch):
    """#45: "The runs it will make, checked now" accepted U-Nets the run then refused; now the
    settings refuse them with the run's own message (builders.make_model on the digits)."""
    import dataclasses

    from scorelab import _validate, builders

    monkeypatch.setattr(_validate, "available_memory", lambda: 20 * 2**30)
    with pytest.raises(ValueError, match=re.escape(message)):
        ImageDemoSettings.from_dict({"channels": channels})
    config = ImageDemoSettings().experiment()
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, channels=tuple(channels))
    )
    with pytest.raises(ValueError) as run:  # what the run says, before any weight is drawn
        builders.make_model(config.model, config.loss, np.zeros((2, 1, 8, 8), np.float32))
    assert message.split(": ", 1)[1] in str(run.value)


def test_image_demo_settings_keep_networks_the_run_accepts():
    settings = ImageDemoSettings.from_dict({"channels": [8, 16], "size": 16})
    assert settings.channels == (8, 16)
