"""The README's command-line block runs top to bottom as written, at small sizes."""

import re
import shlex
from pathlib import Path

import pytest

from scorelab.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

# Sizes only: every flag the README shows stays; these are appended (argparse keeps the last).
_SMALL = {
    "train": [
        "--steps",
        "4",
        "--batch-size",
        "32",
        "--set",
        "train.steps_per_dispatch=2",
        "--set",
        "data.n=200",
        "--quiet",
    ],
    "sample": ["--n", "40", "--levels", "6"],
    "evaluate": ["--floor-repeats", "2"],
    "sweep": ["--nfe", "5", "--n", "100", "--seeds", "0", "--quiet"],
    "likelihood": ["--rtol", "1e-3", "--atol", "1e-3"],
    "score-error": ["--n", "50", "--levels", "5"],
    "demo": None,  # the demo itself is tested at a tiny size in test_cli.py (marked slow)
}


def _commands() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"## The command line.*?```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.strip()]


def test_the_block_is_found_and_names_every_command():
    names = {argv[1] for argv in _commands()}
    assert names >= {"train", "sample", "evaluate", "sweep", "likelihood", "plot", "demo"}


@pytest.mark.slow
def test_the_command_line_block_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in _commands():
        assert argv[0] == "scorelab"
        command = argv[1]
        if _SMALL.get(command, []) is None:
            continue
        extra = list(_SMALL.get(command, []))
        # The sampler named, else the run's own: a DSM run samples with ULA.
        named = argv[argv.index("--sampler") + 1] if "--sampler" in argv else None
        sampler = named or ("ula" if "runs/dsm" in argv else "ddim")
        if command == "sample" and sampler in ("ula", "mala"):
            # one noise level: no grid to shrink (--levels is refused), fewer steps instead
            extra = ["--n", "40", "--n-steps", "5"]
        if command == "sample" and "digits_mixture" in argv:
            # 8 levels: at 4, Heun's 64-D images overshoot [-1, 1] by more than evaluate accepts
            extra = ["--n", "8", "--levels", "8"]
        if command == "likelihood":
            extra += ["--n-probes", "2"]
        assert main([*argv[1:], *extra]) == 0, argv
