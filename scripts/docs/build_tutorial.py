"""Execute the tutorial (``docs/tutorial.py``, Jupytext percent format) and render it as Markdown.

    python scripts/docs/build_tutorial.py          # reduced sizes (CI, a few minutes on 2 cores)
    python scripts/docs/build_tutorial.py --full   # the founding tutorial's sizes

The notebook runs in a fresh Jupyter kernel (nbclient) with ``SCORELAB_TUTORIAL_FULL`` set
from ``--full``; any error in any cell stops the build with that cell's traceback. Outputs go
to ``build/docs/pages/`` (ignored by git):

* ``tutorial.md``: the page mkdocs renders (``scripts/docs/hooks.py`` adds it to the site):
  Markdown cells as they are, code cells as fenced Python, text output as fenced text, images
  (PNG figures, GIF animations) as files in ``tutorial_files/``;
* ``tutorial.ipynb``: the executed notebook, offered for download.

A stamp (hash of the notebook, the library's sources and the size mode) lets
``mkdocs build`` skip the execution when nothing changed. Why not mkdocs-jupyter: rendering
through mkdocs' own Markdown keeps the tutorial's equations on the same arithmatex/MathJax path
as the rest of the site, its links checked by ``--strict``, and its text searchable.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "docs" / "tutorial.py"
OUT = ROOT / "build" / "docs"
PAGES = OUT / "pages"
FILES_DIR = "tutorial_files"
_IMAGE_TYPES = {"image/gif": "gif", "image/png": "png", "image/jpeg": "jpg"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _stamp(full: bool) -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    for path in sorted((ROOT / "src" / "scorelab").rglob("*.py")):
        digest.update(path.read_bytes())
    digest.update(b"full" if full else b"reduced")
    return digest.hexdigest()


def is_fresh(full: bool = False) -> bool:
    """Whether ``build/docs/pages`` holds the rendering of the current sources."""
    stamp = OUT / "stamp"
    return (
        (PAGES / "tutorial.md").is_file()
        and stamp.is_file()
        and (stamp.read_text() == _stamp(full))
    )


def _text_block(text: str) -> str:
    text = _ANSI.sub("", text)
    # A progress bar's carriage returns: keep what the terminal would finally show.
    text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n")).rstrip()
    return f"```text\n{text}\n```\n\n" if text else ""


def _outputs(cell, index: int, files: Path) -> str:
    parts = []
    stream = []  # consecutive stream outputs (one print may arrive in several) form one block
    for j, output in enumerate(cell.get("outputs", [])):
        kind = output["output_type"]
        if kind == "stream":
            stream.append(output["text"])
            continue
        parts.append(_text_block("".join(stream)))
        stream = []
        if kind not in ("display_data", "execute_result"):
            continue
        data = output["data"]
        image = next((mime for mime in _IMAGE_TYPES if mime in data), None)
        if image is not None:
            name = f"cell{index:02d}_{j}.{_IMAGE_TYPES[image]}"
            (files / name).write_bytes(base64.b64decode(data[image]))
            parts.append(f"![output of cell {index}]({FILES_DIR}/{name})\n\n")
        elif "text/markdown" in data:
            parts.append(data["text/markdown"].rstrip() + "\n\n")
        elif "text/plain" in data:
            parts.append(_text_block(data["text/plain"]))
    parts.append(_text_block("".join(stream)))
    return "".join(parts)


def to_markdown(notebook, pages: Path) -> str:
    """The executed ``notebook`` as one Markdown page; images are written to ``pages``."""
    files = pages / FILES_DIR
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir(parents=True)
    parts = []
    for index, cell in enumerate(notebook.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "markdown":
            parts.append(cell.source.strip() + "\n\n")
        elif cell.cell_type == "code":
            if cell.source.strip() and "remove-input" not in tags:
                parts.append(f"```python\n{cell.source.strip()}\n```\n\n")
            parts.append(_outputs(cell, index, files))
    return "".join(parts)


def build(full: bool = False, timeout: int = 1200) -> Path:
    """Execute the tutorial and write ``build/docs/pages``; returns the page's path."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    notebook = jupytext.read(SOURCE)
    run_dir = OUT / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    os.environ["SCORELAB_TUTORIAL_FULL"] = "1" if full else "0"
    os.environ.setdefault("MPLBACKEND", "Agg")
    started = time.perf_counter()
    print(f"executing {SOURCE.relative_to(ROOT)} ({'full' if full else 'reduced'} sizes)")
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(run_dir)}},
    ).execute()
    print(f"executed in {time.perf_counter() - started:.0f} s")
    PAGES.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, PAGES / "tutorial.ipynb")
    page = PAGES / "tutorial.md"
    page.write_text(to_markdown(notebook, PAGES))
    (OUT / "stamp").write_text(_stamp(full))
    return page


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the founding tutorial's sizes")
    parser.add_argument("--force", action="store_true", help="execute even if up to date")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = parser.parse_args(argv)
    if not args.force and is_fresh(args.full):
        print("tutorial up to date:", PAGES / "tutorial.md")
        return 0
    print("wrote", build(args.full, args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
