"""Griffe extension: read scorelab's reStructuredText docstring markup as Markdown.

scorelab's docstrings are Google style with Sphinx roles and directives, because that is what
``help()`` and editors show well. mkdocstrings renders Markdown, so before rendering this
extension rewrites, in every docstring of the package:

* ``.. math::`` blocks into ``$$ ... $$`` display math and ``:math:`x``` into ``$x$``
  (``pymdownx.arithmatex`` hands both to MathJax);
* ``:func:`` / ``:class:`` / ``:mod:`` / ``:meth:`` / ``:attr:`` / ``:data:`` / ``:exc:``
  roles into cross-references ``[`name`][scorelab.module.name]``, resolved the way Sphinx
  resolves them (the docstring's class, then its module, then the package). A role naming a
  ``scorelab`` object that does not exist is logged as a warning, which ``mkdocs build
  --strict`` turns into a failure: a renamed function cannot leave a dangling reference.
  Roles naming other packages' objects (``jax.random.split``) become code.
* RST simple tables (``===  ===`` borders) into Markdown tables;
* ``a, b: description`` items of an Args section into one item per name;
* a paragraph ending in ``::`` (a literal block follows) into one ending in ``:``.

No library does this conversion (griffe parses Google/NumPy/Sphinx *sections*, not inline
Sphinx markup), hence this file.
"""

from __future__ import annotations

import logging
import re

import griffe

_LOG = logging.getLogger("mkdocs.plugins.scorelab_rst")

_ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*$")


def _math_blocks(text: str) -> str:
    """``.. math::`` + indented body -> ``$$`` fenced display math at the directive's indent."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group(1)
        body = []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        nonblank = [line for line in body if line.strip()]
        strip = min(len(line) - len(line.lstrip()) for line in nonblank) if nonblank else 0
        if out and out[-1].strip():
            out.append("")
        out.append(f"{indent}$$")
        out.extend(f"{indent}{line[strip:]}" if line.strip() else "" for line in body)
        out.append(f"{indent}$$")
        out.append("")
    return "\n".join(out)


_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes):\s*$")
_GROUPED_ITEM = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+)(\s*(?:\([^)]*\))?:.*)$")


def _split_grouped_items(text: str) -> str:
    """``a, b: description`` in an Args/Attributes section -> one item per name.

    Google style documents one name per item, and griffe reports ``a, b`` as an unknown
    parameter; the shared description is repeated for each name.
    """
    lines = text.split("\n")
    out: list[str] = []
    section_indent = None
    i = 0
    while i < len(lines):
        line = lines[i]
        section = _SECTION.match(line)
        if section:
            section_indent = len(section.group(1))
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        if line.strip() and section_indent is not None and indent <= section_indent:
            section_indent = None
        grouped = _GROUPED_ITEM.match(line) if section_indent is not None else None
        if not grouped:
            out.append(line)
            i += 1
            continue
        item_indent = len(grouped.group(1))
        continuation = []
        i += 1
        while (
            i < len(lines)
            and lines[i].strip()
            and (len(lines[i]) - len(lines[i].lstrip()) > item_indent)
        ):
            continuation.append(lines[i])
            i += 1
        for name in grouped.group(2).split(","):
            out.append(f"{grouped.group(1)}{name.strip()}{grouped.group(3)}")
            out.extend(continuation)
    return "\n".join(out)


_TABLE_BORDER = re.compile(r"^(\s*)(=+)((?:\s+=+)+)\s*$")


def _columns(border: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _simple_tables(text: str) -> str:
    """RST simple tables (``====  ====`` borders) -> Markdown pipe tables.

    The first row between the top border and the second is the header; a row whose first
    cell is empty continues the row above (its cells are joined with a space).
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        top = _TABLE_BORDER.match(lines[i])
        if not top:
            out.append(lines[i])
            i += 1
            continue
        indent, columns = top.group(1), _columns(lines[i])
        rows: list[list[str]] = []
        borders = 1
        i += 1
        while i < len(lines) and borders < 3:
            line = lines[i]
            i += 1
            if _TABLE_BORDER.match(line):
                borders += 1
                continue
            if not line.strip():
                continue
            ends = [start for start, _ in columns[1:]] + [None]
            cells = [line[start:end].strip() for (start, _), end in zip(columns, ends)]
            if rows and not cells[0] and borders == 2:
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
            else:
                rows.append(cells)
        if out and out[-1].strip():
            out.append("")
        header, *body = rows
        out.append(indent + "| " + " | ".join(header) + " |")
        out.append(indent + "|" + "---|" * len(header))
        out.extend(indent + "| " + " | ".join(row) + " |" for row in body)
        out.append("")
    return "\n".join(out)


def _literal_markers(text: str) -> str:
    """``text::`` before a literal block -> ``text:`` (Markdown's indented code follows)."""
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.MULTILINE)


class RstToMarkdown(griffe.Extension):
    """Rewrite the Sphinx markup of every docstring of the package as Markdown."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        self._collection = loader.modules_collection
        self._visit(pkg)

    def _visit(self, obj) -> None:
        if obj.is_alias:
            return
        if obj.docstring is not None:
            obj.docstring.value = self._convert(obj.docstring.value, obj)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member)

    def _lookup(self, path: str):
        try:
            found = self._collection.get_member(path)
        except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError):
            return None
        if found.is_alias:
            try:
                return found.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
        return found

    def _resolve(self, name: str, obj) -> str | None:
        """The canonical path of ``name`` as seen from ``obj``, or ``None``."""
        scopes = []
        scope = obj if obj.is_class or obj.is_module else obj.parent
        while scope is not None:
            scopes.append(scope.path)
            scope = scope.parent
        for candidate in [*(f"{s}.{name}" for s in scopes), name]:
            found = self._lookup(candidate)
            if found is not None:
                return found.path
        return None

    def _role(self, match: re.Match, obj) -> str:
        short, name = match.group(2) == "~", match.group(3).strip()
        name = name.removesuffix("()")
        shown = name.rsplit(".", 1)[-1] if short else name
        path = self._resolve(name, obj)
        if path is None:
            if name.startswith("scorelab") or "." not in name:
                _LOG.warning("%s: docstring refers to unknown object %r", obj.path, name)
            return f"`{shown}`"
        if any(part.startswith("_") and not part.startswith("__") for part in path.split(".")):
            return f"`{shown}`"  # private objects are not rendered: no page to link to
        return f"[`{shown}`][{path}]"

    def _convert(self, text: str, obj) -> str:
        text = _split_grouped_items(_simple_tables(_math_blocks(text)))
        text = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", text)
        text = _ROLE.sub(lambda m: self._role(m, obj), text)
        return _literal_markers(text)
