"""griffe extension for the docs build: render the reST bits of the packages' numpy-style docstrings as Markdown.

The docstrings use Sphinx roles (``:func:`select```, ``:class:`~tarot.result.SelectionResult```) and math
(``:math:`x```, ``.. math::`` blocks). mkdocstrings renders docstrings as Markdown, where these would show up
literally. This extension rewrites them when griffe loads an object (the source files are not touched):

- ``:role:`~a.b.c``` → ``c`` in code, ``:role:`a.b``` → ``a.b`` in code;
- ``:math:`x``` → ``$x$``; a ``.. math::`` directive (one line or an indented block) → a ``$$ … $$`` block,
  which the site's KaTeX renders.

Registered in mkdocs.yml under the python handler's ``extensions``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const|ref):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_LINE = re.compile(r"^(\s*)\.\. math::\s*(\S.*)$")
_MATH_BLOCK = re.compile(r"^(\s*)\.\. math::\s*$")


def _role(m: re.Match) -> str:
    tilde, target = m.group(1), m.group(2).strip()
    if "<" in target and target.endswith(">"):  # :class:`text <target>`
        target = target[: target.index("<")].strip()
    elif tilde:
        target = target.split(".")[-1]
    return f"`{target}`"


def rst_to_markdown(text: str) -> str:
    """Rewrite Sphinx roles and math directives of one docstring."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        one = _MATH_LINE.match(line)
        block = _MATH_BLOCK.match(line)
        if one:
            out += ["", f"{one.group(1)}$$ {one.group(2).strip()} $$", ""]
            i += 1
            continue
        if block:
            indent = len(block.group(1))
            body: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i].strip())
                i += 1
            while body and not body[-1]:
                body.pop()
            pad = " " * indent
            out += ["", pad + "$$", *[pad + b for b in body if b], pad + "$$", ""]
            continue
        out.append(line)
        i += 1
    text = "\n".join(out)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    return _ROLE.sub(_role, text)


class RstToMarkdown(griffe.Extension):
    """Rewrite every loaded object's docstring (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None and obj.docstring.value:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
