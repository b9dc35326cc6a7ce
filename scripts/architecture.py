"""The layer picture of scorelab, generated from the code: imports, layers, sizes.

``python scripts/architecture.py`` rewrites ``docs/architecture.md`` from ``src/scorelab``:
which layer each module belongs to, what it imports, its size in lines of code (without
docstrings, comments or blank lines), and the first paragraph of its docstring (what it owns).
``python scripts/architecture.py --loc SRC`` prints the lines of code per layer of another
tree (e.g. an older checkout) for comparisons. ``tests/test_architecture.py`` checks the
rule with :func:`violations`: a module imports only modules of its own layer or of layers
below, and no two modules import each other (directly or through others).
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS = (
    ("support", ("_validate", "_files", "_signals", "_keys", "_xla_cpu", "_jax_settings")),
    (
        "maths core",
        (
            "noise", "targets", "data", "models", "precond", "losses", "samplers", "adapters",
            "metrics", "likelihood", "score_error", "classifier", "image_metrics", "ays", "ld3",
        ),
    ),
    ("figures", ("viz",)),
    ("diffusers wing", ("diffusers",)),
    (
        "application",
        (
            "distributed", "checkpoints", "training", "runs", "config", "builders", "report",
            "workflows", "sweep", "demo", "image_demo", "cli",
        ),
    ),
)  # fmt: skip
"""Layers from the bottom up, and the top-level modules (or packages) each holds: argument
checks, atomic file writes, held signals, PRNG keys, XLA:CPU's compile options and the command
line's pinned JAX settings support everything; ``viz`` draws plain arrays and imports of scorelab only the support layer."""


def module_name(path: Path, src: Path) -> str:
    """``scorelab.samplers._core`` for ``src/scorelab/samplers/_core.py``."""
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top(name: str) -> str:
    """The top-level unit of a module: ``samplers`` for ``scorelab.samplers._core``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(unit: str) -> int | None:
    """The index of ``unit``'s layer in :data:`LAYERS`, or ``None`` if it is in none."""
    for index, (_, units) in enumerate(LAYERS):
        if unit in units:
            return index
    return None


def imports(path: Path, name: str) -> set[str]:
    """The scorelab modules ``path`` imports, anywhere in the file (functions included)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("scorelab")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("scorelab"):
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def graph(src: Path) -> dict[str, set[str]]:
    """Unit -> the other units it imports (units: top-level modules and packages)."""
    edges: dict[str, set[str]] = {}
    paths = sorted((src / "scorelab").rglob("*.py"))
    units = {top(module_name(path, src)) for path in paths} - {""}
    for path in paths:
        name = module_name(path, src)
        unit = top(name)
        if not unit:
            continue
        targets = {top(target) for target in imports(path, name)} & units  # not __version__
        edges.setdefault(unit, set()).update(t for t in targets if t != unit)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


def violations(src: Path = ROOT / "src") -> list[str]:
    """Every breach of the layer rule in ``src``: a unit in no layer, an import of a unit in a
    higher layer, an import by ``viz`` of anything of scorelab but the support layer, and import
    cycles."""
    edges = graph(src)
    problems = [
        f"{unit}: in no layer of scripts/architecture.py"
        for unit in edges
        if layer_of(unit) is None
    ]
    for unit, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer_of(unit) is None or layer_of(target) is None:
                continue
            # viz draws plain arrays: of scorelab it imports only the support layer's checks.
            if (unit == "viz" and layer_of(target) > 0) or layer_of(target) > layer_of(unit):
                problems.append(
                    f"{unit} ({LAYERS[layer_of(unit)][0]}) imports {target} "
                    f"({LAYERS[layer_of(target)][0]})"
                )
    problems += [" -> ".join(cycle) + ": an import cycle" for cycle in _cycles(edges)]
    return problems


def code_lines(path: Path) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    text = path.read_text()
    docstring_lines = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    docstring_lines |= set(range(body[0].lineno, body[0].end_lineno + 1))
        # attribute docstrings: a bare string right after an assignment
        body = getattr(node, "body", None)
        for child in body if isinstance(body, list) else ():
            if (
                isinstance(child, ast.Expr)
                and isinstance(child.value, ast.Constant)
                and isinstance(child.value.value, str)
            ):
                docstring_lines |= set(range(child.lineno, child.end_lineno + 1))
    code = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            continue
        code |= set(range(token.start[0], token.end[0] + 1))
    return len(code - docstring_lines)


def sizes(src: Path) -> dict[str, int]:
    """Unit -> lines of code (:func:`code_lines` summed over its files)."""
    totals: dict[str, int] = {}
    for path in sorted((src / "scorelab").rglob("*.py")):
        unit = top(module_name(path, src))
        if unit:
            totals[unit] = totals.get(unit, 0) + code_lines(path)
    return totals


def _summary(src: Path, unit: str) -> str:
    path = src / "scorelab" / unit
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def render(src: Path = ROOT / "src") -> str:
    """The text of ``docs/architecture.md``."""
    edges, size = graph(src), sizes(src)
    lines = [
        "# Architecture",
        "",
        "Generated by `python scripts/architecture.py` from the code (do not edit by hand);",
        "`tests/test_architecture.py` checks the rule it shows: a module imports only modules of",
        "its own layer or of the layers below it, `viz` imports only the support layer, and there",
        "are no import cycles. Sizes are lines of code without docstrings, comments or blanks.",
        "",
        "| layer (bottom up) | module | lines | imports |",
        "|---|---|---|---|",
    ]
    for name, units in LAYERS:
        for unit in units:
            if unit in size:
                targets = ", ".join(f"`{t}`" for t in sorted(edges.get(unit, ()))) or "-"
                lines.append(f"| {name} | `{unit}` | {size[unit]} | {targets} |")
    lines += ["", "| layer | lines of code |", "|---|---|"]
    for name, units in LAYERS:
        lines.append(f"| {name} | {sum(size.get(u, 0) for u in units)} |")
    lines += ["", "## What each module owns", ""]
    for name, units in LAYERS:
        lines += [f"### {name}", ""]
        for unit in units:
            if unit in size:
                lines += [f"**`scorelab.{unit}`**: {_summary(src, unit)}", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loc", type=Path, help="print lines of code per module of this src")
    args = parser.parse_args(argv)
    if args.loc is not None:
        size = sizes(args.loc)
        for unit, count in sorted(size.items()):
            print(f"{unit:14s} {count}")
        print(f"{'total':14s} {sum(size.values())}")
        return 0
    problems = violations()
    for problem in problems:
        print(problem, file=sys.stderr)
    (ROOT / "docs" / "architecture.md").write_text(render())
    print(ROOT / "docs" / "architecture.md")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
