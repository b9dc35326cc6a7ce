"""mkdocs hooks: execute the tutorial when it is out of date, and add its rendering to the site.

``mkdocs build`` / ``mkdocs serve`` call :func:`on_pre_build`, which runs
``scripts/docs/build_tutorial.py`` unless ``build/docs/pages`` already holds the rendering of
the current notebook and library (reduced sizes, or full ones with
``SCORELAB_TUTORIAL_FULL=1``). :func:`on_files` then adds the generated page, its images and
the executed notebook to the site, so nothing generated lives in ``docs/``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mkdocs.structure.files import File, Files

_SCRIPT = Path(__file__).with_name("build_tutorial.py")
_spec = importlib.util.spec_from_file_location("scorelab_build_tutorial", _SCRIPT)
build_tutorial = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_tutorial)


def on_pre_build(config, **kwargs) -> None:
    full = os.environ.get("SCORELAB_TUTORIAL_FULL", "0") == "1"
    if not (build_tutorial.is_fresh(full) or (not full and build_tutorial.is_fresh(True))):
        build_tutorial.build(full)


def sampler_options_table() -> str:
    """The table of every sampler's options (name, type, default, help), from
    :func:`scorelab.samplers.options`: the one declaration the CLI and config also read."""
    from scorelab import samplers

    lines = ["| sampler | option | type | default | what it does |", "|---|---|---|---|---|"]
    for name in samplers.SAMPLERS:
        options = samplers.options(name) or ()
        if not options:
            lines.append(f"| `{name}` | - | | | no options: only the grid |")
        for option in options:
            kind = getattr(option.type, "__name__", str(option.type))
            help_text = option.help.replace("|", "\\|")
            lines.append(
                f"| `{name}` | `{option.name}` | {kind} | `{option.default!r}` | {help_text} |"
            )
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    return markdown.replace("<!-- sampler-options -->", sampler_options_table())


MATHJAX_DIR = "assets/mathjax"
"""Where the site serves MathJax from (``extra_javascript`` in mkdocs.yml names its
``tex-mml-chtml.js``)."""

# The es5 build's other combined bundles (SVG output, speech) are not loaded by tex-mml-chtml.
_MATHJAX_UNUSED = ("mml-", "tex-chtml", "tex-svg", "tex-mml-svg", "node-main")


def mathjax_files(config) -> list[File]:
    """MathJax 3's browser build (``es5/``: the tex-mml-chtml bundle and the fonts, input,
    output, menu and accessibility components it loads on demand) as site files under
    :data:`MATHJAX_DIR`, so that the equations render offline.

    Vendored from the ``django-static-mathjax`` package (MathJax's own release files, no
    Django needed; the ``docs`` extra installs it): no Python package ships MathJax for
    MkDocs, and Material's setup loads it from a CDN.
    """
    import mathjax

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    found = []
    for path in sorted(es5.rglob("*")):
        relative = path.relative_to(es5).as_posix()
        if path.is_file() and not (path.parent == es5 and relative.startswith(_MATHJAX_UNUSED)):
            found.append(
                File.generated(config, f"{MATHJAX_DIR}/{relative}", abs_src_path=str(path))
            )
    return found


def on_files(files: Files, config, **kwargs) -> Files:
    for file in mathjax_files(config):
        files.append(file)
    pages = build_tutorial.PAGES
    for path in sorted(pages.rglob("*")):
        if path.is_file():
            files.append(
                File(
                    path.relative_to(pages).as_posix(),
                    src_dir=str(pages),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files
