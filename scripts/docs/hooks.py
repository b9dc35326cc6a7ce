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


def on_files(files: Files, config, **kwargs) -> Files:
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
