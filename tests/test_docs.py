"""The documentation: docstrings of the public API, API pages, how-to examples, docstring markup.

The first two tests need nothing beyond the package. The others need the ``docs`` extra
(griffe, flax) and are skipped without it; ``.ci/run`` installs it and runs this file in its
documentation step, where they must pass.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import scorelab

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _public_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(scorelab.__path__) if m.name[0] != "_")


def _import(name: str):
    try:
        return importlib.import_module(f"scorelab.{name}")
    except ImportError as error:  # a module of an optional extra (e.g. diffusers) not installed
        pytest.skip(f"scorelab.{name} needs an optional dependency: {error}")


def _own_docstring(obj) -> str:
    """The docstring ``obj`` defines itself (not a dataclass's generated signature)."""
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""
    return doc.strip()


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_object_has_a_docstring(name):
    module = _import(name)
    undocumented = [] if module.__doc__ and module.__doc__.strip() else [name]
    for member in getattr(module, "__all__", []):
        obj = getattr(module, member)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not _own_docstring(obj):
            undocumented.append(member)
        if inspect.isclass(obj):
            for attribute, value in vars(obj).items():
                function = value.fget if isinstance(value, property) else value
                function = getattr(function, "__func__", function)  # classmethod, staticmethod
                if attribute[0] != "_" and inspect.isfunction(function):
                    if not (inspect.getdoc(getattr(obj, attribute)) or "").strip():
                        undocumented.append(f"{member}.{attribute}")
    assert not undocumented, f"scorelab.{name}: no docstring for {undocumented}"


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_module_has_an_api_page_in_the_nav(name):
    page = DOCS / "api" / f"{name}.md"
    assert page.is_file(), f"add docs/api/{name}.md with '::: scorelab.{name}'"
    assert f"::: scorelab.{name}" in page.read_text()
    assert f"api/{name}.md" in (ROOT / "mkdocs.yml").read_text(), "add the page to the nav"


# --- the how-to pages' examples, executed -------------------------------------------------------

# Environment of each page's run (the scale-out page needs four CPU devices before JAX starts).
_PAGE_ENV = {
    "scale-out.md": {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    "pretrained.md": {"SCORELAB_PRETRAINED": str(ROOT / "tests" / "fixtures" / "tiny_ddpm")},
}


def _python_blocks(page: Path) -> str:
    return "\n\n".join(re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M))


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", sorted(p.name for p in (DOCS / "how-to").glob("*.md") if _python_blocks(p))
)
def test_how_to_examples_run(page, tmp_path):
    """Each how-to page's Python blocks, in order, as one script in a fresh interpreter."""
    pytest.importorskip("flax", reason="the docs extra runs the how-to examples")
    script = tmp_path / "example.py"
    script.write_text(_python_blocks(DOCS / "how-to" / page))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg", **_PAGE_ENV.get(page, {})}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{page} failed:\n{result.stderr[-4000:]}"


# --- the griffe extension that reads the docstrings' Sphinx markup as Markdown ------------------


@pytest.fixture(scope="module")
def rst_extension():
    griffe = pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location(
        "griffe_rst", ROOT / "scripts" / "docs" / "griffe_rst.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return griffe, module


def _load(griffe, module, tmp_path, source: str):
    package = tmp_path / "toypkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(source))
    return griffe.load(
        "toypkg", search_paths=[tmp_path], extensions=griffe.load_extensions(module.RstToMarkdown)
    )


def test_rst_math_roles_and_tables_become_markdown(rst_extension, tmp_path):
    griffe, module = rst_extension
    package = _load(
        griffe,
        module,
        tmp_path,
        '''
        def helper(x):
            """Return x."""

        class Thing:
            """A thing.

            .. math::
                a = b^2,

            with :math:`b > 0`; see :func:`helper`, :meth:`Thing.go` and :func:`~toypkg.helper`,
            and :func:`jax.numpy.sum`.

            =====  ==========
            name   what
            =====  ==========
            one    the first,
                   continued
            two    the second
            =====  ==========

            Args:
                lo, hi: the range.
            """

            def go(self):
                """Go."""
        ''',
    )
    doc = package["Thing"].docstring.value
    assert "$$\na = b^2,\n$$" in doc
    assert "$b > 0$" in doc
    assert "[`helper`][toypkg.helper]" in doc and "[`Thing.go`][toypkg.Thing.go]" in doc
    assert "`jax.numpy.sum`" in doc and "[`jax" not in doc  # another package's: plain code
    assert "    lo: the range.\n    hi: the range." in doc
    assert "| name | what |\n|---|---|\n| one | the first, continued |\n| two | the second |" in doc


def test_rst_unknown_reference_is_a_warning(rst_extension, tmp_path, caplog):
    griffe, module = rst_extension
    with caplog.at_level(logging.WARNING):
        _load(griffe, module, tmp_path, '"""See :func:`renamed_long_ago`."""\n')
    assert any("renamed_long_ago" in record.getMessage() for record in caplog.records)


def test_the_site_serves_mathjax_itself(tmp_path):
    """The built site loads MathJax from its own files (the docs extra's
    ``django-static-mathjax``), never from a CDN: every script a page loads exists in the site,
    and so do the CHTML fonts the bundle fetches."""
    pytest.importorskip("mathjax", reason="the docs extra (django-static-mathjax)")
    pytest.importorskip("material", reason="the docs extra (mkdocs-material)")
    import yaml

    docs = tmp_path / "docs"
    (docs / "javascripts").mkdir(parents=True)
    (docs / "index.md").write_text("Inline $x^2$ and\n\n$$\na = b\n$$\n")
    shutil.copy(DOCS / "javascripts" / "mathjax.js", docs / "javascripts" / "mathjax.js")
    (tmp_path / "hook.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util
            spec = importlib.util.spec_from_file_location(
                "scorelab_docs_hooks", {str(ROOT / "scripts" / "docs" / "hooks.py")!r}
            )
            hooks = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(hooks)

            def on_files(files, config, **kwargs):
                for file in hooks.mathjax_files(config):
                    files.append(file)
                return files
            """
        )
    )
    ours = (ROOT / "mkdocs.yml").read_text()
    extra_javascript = re.search(r"^extra_javascript:\n((?:  - .*\n)+)", ours, re.M).group(0)
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\ntheme:\n  name: material\nhooks:\n  - hook.py\n"
        "markdown_extensions:\n  - pymdownx.arithmatex:\n      generic: true\n" + extra_javascript
    )
    assert yaml.safe_load((tmp_path / "mkdocs.yml").read_text())["extra_javascript"]
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q"],
        cwd=tmp_path,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    site = tmp_path / "site"
    page = (site / "index.html").read_text()
    sources = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert any(source.endswith("mathjax/tex-mml-chtml.js") for source in sources), sources
    for source in sources:
        assert not re.match(r"(https?:)?//", source), f"{source}: loaded from the network"
        assert (site / source.split("?")[0]).is_file(), source
    fonts = site / "assets" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("*.woff"))) > 10
