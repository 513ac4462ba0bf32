"""A griffe extension for the API reference: stcsnn's reStructuredText-flavoured docstrings as Markdown.

The docstrings are written to read well in a terminal and in Sphinx-like tools (``.. math::``, ``:class:`X```,
``::`` literal blocks, ``>>>`` examples, simple ``=====`` tables); mkdocstrings renders Markdown, where those
come out as literal text (and ``>>>`` as nested block quotes). This extension rewrites the docstring text once
the package is loaded, before mkdocstrings parses it:

* ``.. math::`` blocks -> ``$$ ... $$`` (``aligned`` when the block uses ``&``), ``:math:`x``` -> ``\\(x\\)``
  (rendered by MathJax through ``pymdownx.arithmatex``);
* ``:class:`~a.b.C``` and the other Python roles -> a code span that links to the object where the reference
  renders it (an *optional* cross-reference: no link and no warning where it does not);
* ``>>>`` examples -> ``pycon`` fences; ``text::`` + an indented block and simple tables -> ``text`` fences;
* an attribute without a docstring takes the comment that documents it: the ``#`` or ``#:`` lines right above
  it and its trailing ``# comment`` (the keys of :class:`stcsnn.config.Config` are documented that way).

Nothing here changes the source files; only the rendered reference.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|data|attr|exc|obj|const):`([^`]+)`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
SIMPLE_TABLE_RULE = re.compile(r"^\s*=+(?: +=+)+\s*$")
DOCTEST = re.compile(r"^(\s*)>>>( |$)")
# a trailing comment of an assignment, e.g. ``dataset: str = "embedded"  # registered dataset name``
TRAILING_COMMENT = re.compile(r"""^[^#'"]*(?:(['"]).*?\1[^#'"]*)*#\s?(.*)$""")
# comments addressed to tools, not readers
TOOL_COMMENT = re.compile(r"^(type:|noqa|pragma|isort|fmt:|pyright:|mypy:)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, deeper_than: int) -> int:
    """The end (exclusive) of the block of lines from ``start`` indented more than ``deeper_than`` (blank lines
    inside it included, trailing blank lines excluded)."""
    end = start
    i = start
    while i < len(lines):
        if lines[i].strip():
            if _indent(lines[i]) <= deeper_than:
                break
            end = i + 1
        i += 1
    return end


def _dedent(lines: list[str]) -> list[str]:
    width = min((_indent(x) for x in lines if x.strip()), default=0)
    return [x[width:] for x in lines]


def convert_blocks(text: str) -> str:
    """The block-level conversions: math directives, doctests, literal blocks, simple tables."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        math = MATH_DIRECTIVE.match(line)
        if math:
            pad, first = math.group(1), math.group(2)
            end = _block(lines, i + 1, len(pad))
            body = ([first] if first else []) + [x.strip() for x in lines[i + 1:end] if x.strip()]
            aligned = any("&" in x for x in body) or len(body) > 1
            out += ["", pad + "$$"]
            out += [pad + r"\begin{aligned}"] if aligned else []
            out += [pad + x for x in body]
            out += [pad + r"\end{aligned}"] if aligned else []
            out += [pad + "$$", ""]
            i = end
            continue
        doctest = DOCTEST.match(line)
        if doctest:
            pad = doctest.group(1)
            end = i
            while end < len(lines) and lines[end].strip() and _indent(lines[end]) >= len(pad):
                end += 1
            out += ["", pad + "```pycon"] + [pad + x for x in _dedent(lines[i:end])] + [pad + "```", ""]
            i = end
            continue
        if SIMPLE_TABLE_RULE.match(line):
            rules = [j for j in range(i, len(lines)) if SIMPLE_TABLE_RULE.match(lines[j])][:3]
            end = rules[-1] + 1 if len(rules) == 3 else i + 1
            pad = " " * _indent(line)
            out += ["", pad + "```text"] + [pad + x for x in _dedent(lines[i:end])] + [pad + "```", ""]
            i = end
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            base = _indent(line)
            if j < len(lines) and _indent(lines[j]) > base:
                end = _block(lines, j, _indent(lines[j]) - 1)  # until a line less indented than the block
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(head + ":")
                pad = " " * base
                out += ["", pad + "```text"] + [pad + x for x in _dedent(lines[j:end])] + [pad + "```", ""]
                i = end
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The path of the object ``target`` names, seen from ``obj`` (its class, module and package), or None."""
    name = target.lstrip(".~")
    scopes = []
    node: Any = obj
    while node is not None:
        scopes.append(node)
        node = node.parent
    for scope in scopes:
        try:
            found = scope[name]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        try:
            return found.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    package = obj.package
    if name.startswith(package.path + "."):
        try:
            return package[name[len(package.path) + 1:]].path
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    return None


def convert_roles(text: str, obj: griffe.Object) -> str:
    """``:class:`~x.Y``` -> an optional cross-reference around ```Y```; ``:math:`x``` -> ``\\(x\\)``."""

    def role(match: re.Match) -> str:
        target = match.group(2).strip()
        shown = target.lstrip("~.")
        if target.startswith("~"):
            shown = shown.rsplit(".", 1)[-1]
        code = f"<code>{shown}</code>"
        path = _resolve(obj, target)
        return f'<autoref identifier="{path}" optional>{code}</autoref>' if path else f"`{shown}`"

    text = MATH_ROLE.sub(lambda m: r"\(" + m.group(1) + r"\)", text)
    return ROLE.sub(role, text)


def comment_docstring(attr: griffe.Attribute) -> str | None:
    """The comment that documents an attribute: the ``# lines`` right above its assignment, then its trailing
    ``# comment`` (section rules such as ``# --- data ---`` and comments addressed to tools left out)."""
    try:
        source = attr.lines_collection[attr.filepath]
    except (KeyError, OSError, ValueError, TypeError):  # no source (a compiled or generated module)
        return None
    if not attr.lineno or attr.lineno > len(source):
        return None
    above: list[str] = []
    i = attr.lineno - 2
    while i >= 0 and source[i].strip().startswith("#"):
        text = source[i].strip().removeprefix("#:").removeprefix("#").strip()
        if text.startswith("---") or TOOL_COMMENT.match(text):
            break
        above.insert(0, text)
        i -= 1
    match = TRAILING_COMMENT.match(source[attr.lineno - 1])
    trailing = match.group(2).strip() if match else ""
    parts = [" ".join(above)] if above else []
    if trailing and not TOOL_COMMENT.match(trailing):
        parts.append(trailing)
    return "; ".join(parts) or None


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        self._walk(pkg, seen)

    def _walk(self, obj: griffe.Object, seen: set[int]) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if obj.is_attribute and obj.docstring is None and "property" not in obj.labels:
            text = comment_docstring(obj)  # type: ignore[arg-type]
            if text:
                obj.docstring = griffe.Docstring(text, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = convert_roles(convert_blocks(obj.docstring.value), obj)
        for member in list(obj.members.values()):
            if member.is_alias:
                continue
            self._walk(member, seen)
