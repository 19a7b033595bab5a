"""A griffe extension for the API pages: the reST left in torchnde's docstrings, as Markdown.

The docstrings are Markdown (lists, tables, fenced examples) with a few reST constructs that
read well in ``help()``: roles (``:class:`Solution```, ``:math:`\\dot y```), ``.. math::``
and ``.. code-block::`` directives, and literal blocks introduced by ``::``. The site renders
them as code: roles as code spans (a ``~a.b.Name`` target as ``Name``), directives and literal
blocks as fenced blocks. Nothing else changes, and the sources stay as they are.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from griffe import Extension, Object

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|math|ref):`([^`]+)`")  # may span lines
_DIRECTIVE = re.compile(r"^(\s*)\.\. (math|code-block)::\s*(\S.*)?$")


def _role(match: re.Match[str]) -> str:
    target = match.group(1)
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def _indented_block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines from ``start`` indented deeper than ``indent`` (blank lines inside kept)."""
    block: list[str] = []
    i = start
    while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
        block.append(lines[i])
        i += 1
    while block and not block[-1].strip():
        block.pop()
        i -= 1
    return block, i


def _fence(pad: str, language: str, body: list[str]) -> list[str]:
    code = textwrap.dedent("\n".join(body)).strip("\n").splitlines()
    return [f"{pad}```{language}", *[pad + line if line else "" for line in code], f"{pad}```"]


def to_markdown(text: str) -> str:
    """``text`` with its reST roles, directives and literal blocks as Markdown."""
    lines = _ROLE.sub(_role, text).splitlines()  # a role may wrap onto the next line
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive:
            pad, kind, rest = directive.group(1), directive.group(2), directive.group(3)
            block, i = _indented_block(lines, i + 1, len(pad))
            if kind == "math":
                out += _fence(pad, "text", ([rest] if rest else []) + block)
            else:
                out += _fence(pad, rest or "text", block)
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            indent = len(line) - len(line.lstrip())
            block, end = _indented_block(lines, i + 1, indent)
            if any(b.strip() for b in block):
                head = line.rstrip()[:-2].rstrip()
                out.append(head + ":" if head else "")
                out.append("")
                out += _fence(" " * indent, "python", block)
                i = end
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstDocstrings(Extension):
    """Rewrite every docstring with :func:`to_markdown` as griffe loads it."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
