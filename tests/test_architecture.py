"""The layer rule, checked on the code: no module imports one above it, and no import cycles."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _architecture():
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "scripts/architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_a_layer_above_it_and_there_are_no_cycles():
    assert _architecture().violations() == []


def test_the_check_catches_an_upward_import_and_a_cycle(tmp_path):
    architecture = _architecture()
    package = tmp_path / "scorelab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "noise.py").write_text("from scorelab import cli\n")  # core -> application
    (package / "cli.py").write_text("from scorelab.noise import x\n")
    (package / "viz.py").write_text("import scorelab.targets\n")  # viz imports nothing
    (package / "targets.py").write_text("")
    problems = architecture.violations(tmp_path)
    assert "noise (maths core) imports cli (application)" in problems
    assert "viz (figures) imports targets (maths core)" in problems
    assert any("an import cycle" in problem for problem in problems)


def test_code_lines_leave_out_docstrings_comments_and_blanks(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        '"""Doc.\n\nMore."""\n\n# comment\nx = 1  # trailing\n"""Attribute doc."""\n'
        'def f():\n    """Doc."""\n    return (x +\n            1)\n'
    )
    assert _architecture().code_lines(path) == 4  # x = 1, def, and the two-line return
