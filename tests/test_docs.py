"""The documentation: the MkDocs site builds with ``--strict``, and every ```python block of README.md and of
docs/**/*.md runs (each page's blocks in order, in one namespace, in a temporary working directory holding a
copy of configs/ and hubconf.py, with docs/examples/ importable).

A block that is deliberately not run is marked on the page, visibly: a ``sketch`` title (```python
title="sketch"``) or an HTML comment ``<!-- not-run: reason -->`` on the line above it. Those blocks are listed in
``NOT_RUN`` below, and a test fails when the marked blocks differ from that list, so none is hidden silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

#: The blocks that are marked as not run: (page, reason). A new one has to be added here, on purpose.
NOT_RUN = {
    ("docs/export.md", "needs the network and a published Hub repository"),
}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
NOT_RUN_COMMENT = re.compile(r"^\s*<!--\s*not-run\b:?(?P<reason>.*?)-->\s*$")
SKETCH_TITLE = re.compile(r"""\btitle\s*=\s*["']sketch""")
SNIPPET = re.compile(r"""^\s*-+8<-+\s+["'](?P<path>[^"']+)["']\s*$""")
PYTHON = {"python", "py", "python3"}


@dataclass
class Block:
    page: str  # relative to the repository root
    line: int  # the opening fence's line (1-based)
    language: str
    code: str  # dedented, with snippet lines (--8<-- "path") replaced by the file they name
    skip: str | None  # why the block is not run (None: it runs)


def _expand_snippets(code: str) -> str:
    out = []
    for line in code.splitlines():
        match = SNIPPET.match(line)
        out.append((ROOT / match["path"]).read_text().rstrip("\n") if match else line)
    return "\n".join(out) + "\n"


def code_blocks(text: str, page: str) -> list[Block]:
    """The fenced code blocks of a Markdown page (fences inside admonitions and lists included)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = i + 1
        while end < len(lines) and not close.match(lines[end]):
            end += 1
        body = textwrap.dedent("\n".join(x[len(indent):] if x.startswith(indent) else x for x in lines[i + 1:end]))
        language = info.split()[0].lstrip("{.").rstrip("}").lower() if info else ""
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = None
        if SKETCH_TITLE.search(info):
            skip = "sketch"
        elif (comment := NOT_RUN_COMMENT.match(above)) is not None:
            skip = comment["reason"].strip() or "not-run"
        blocks.append(Block(page, i + 1, language, _expand_snippets(body), skip))
        i = end + 1
    return blocks


def page_blocks(path: Path) -> list[Block]:
    return code_blocks(path.read_text(), path.relative_to(ROOT).as_posix())


def python_blocks(path: Path) -> list[Block]:
    return [b for b in page_blocks(path) if b.language in PYTHON]


RUNNABLE_PAGES = [p for p in PAGES if any(b.skip is None for b in python_blocks(p))]


# ------------------------------------------------------------------------------------------ the block parser
def test_the_parser_finds_marked_indented_and_included_blocks():
    page = textwrap.dedent('''\
        text
        ```python
        a = 1
        ```

        <!-- not-run: needs a GPU -->
        ```python
        b = 2
        ```

        !!! note
            ```python title="sketch"
            c = 3
            ```

        ```bash
        echo not python
        ```

        ```python
        --8<-- "docs/examples/my_neuron.py"
        ```
        ''')
    blocks = code_blocks(page, "page.md")
    assert [(b.line, b.language, b.skip) for b in blocks] == [
        (2, "python", None), (7, "python", "needs a GPU"), (12, "python", "sketch"), (16, "bash", None),
        (20, "python", None)]
    assert blocks[0].code == "a = 1\n" and blocks[2].code == "c = 3\n"
    assert blocks[4].code == (EXAMPLES / "my_neuron.py").read_text()


# ------------------------------------------------------------------------------------------ the site
@pytest.mark.slow
def test_the_site_builds_with_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    for page in ("index.html", "readme/index.html", "api/config/index.html", "api/metrics/index.html"):
        assert (site / page).is_file(), page
    # the example neuron is included from its file, and the API reference is rendered from the docstrings
    assert "my_lif_step" in (site / "custom-neuron" / "index.html").read_text()
    assert "stcsnn.neurons.STC" in (site / "api" / "neurons" / "index.html").read_text()
    assert "The SSIM data range" in (site / "metrics" / "index.html").read_text()


# ------------------------------------------------------------------------------------------ the code blocks
def test_not_run_blocks_are_marked_and_listed():
    marked = [b for p in PAGES for b in python_blocks(p) if b.skip is not None]
    found = {(b.page, b.skip) for b in marked}
    listing = "\n".join(f"  {b.page}:{b.line} ({b.skip})" for b in marked)
    assert found == NOT_RUN, (f"{len(marked)} python block(s) are marked as not run:\n{listing}\n"
                              f"expected exactly the {len(NOT_RUN)} listed in NOT_RUN of tests/test_docs.py")
    runnable = sum(b.skip is None for p in PAGES for b in python_blocks(p))
    assert runnable > 10 * len(marked)  # not running a block is the exception


@pytest.fixture
def docs_workdir(tmp_path, monkeypatch):
    """A scratch working directory with the repository's configs/ and hubconf.py; docs/examples importable.
    Registries and modules a page adds are removed again afterwards."""
    from stcsnn.data.registry import DATASETS
    from stcsnn.neurons.registry import NEURONS

    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copy(ROOT / "hubconf.py", tmp_path / "hubconf.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    neurons, datasets, modules = dict(NEURONS), dict(DATASETS), set(sys.modules)
    yield tmp_path
    for registry, saved in ((NEURONS, neurons), (DATASETS, datasets)):
        registry.clear()
        registry.update(saved)
    for name in set(sys.modules) - modules:
        where = str(getattr(sys.modules[name], "__file__", "") or "")
        if name in ("hubconf", "my_neuron") or where.startswith((str(tmp_path), str(EXAMPLES))):
            del sys.modules[name]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(page, docs_workdir):
    namespace: dict = {"__name__": "__docs__"}
    for block in python_blocks(page):
        if block.skip is not None:
            continue
        where = f"{block.page}:{block.line}"
        failure = None
        try:
            exec(compile(block.code, where, "exec"), namespace)
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == where]
            line = f", line {frames[-1].lineno} of the block" if frames else ""
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            failure = f"the python block at {where} fails{line}: {detail}\n\n{block.code}"
        if failure:
            pytest.fail(failure, pytrace=False)


# ------------------------------------------------------------------------------------------ coverage
def docs_text() -> str:
    return "\n".join(p.read_text() for p in sorted(DOCS.rglob("*.md")))


def _subparsers(parser):
    import argparse

    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def test_every_command_is_documented():
    from stcsnn.cli import build_parser

    text = docs_text()
    names = list(_subparsers(build_parser()).choices)
    missing = [name for name in names if f"stcsnn {name}" not in text]
    assert not missing, f"commands without a mention (`stcsnn NAME`) in docs/: {missing}"


@pytest.mark.parametrize(("command", "page"), [("reproduce", "reproduce.md"), ("export", "export.md"),
                                               ("train", "training.md")])
def test_every_option_of_the_changing_commands_is_documented(command, page):
    from stcsnn.cli import build_parser

    parser = _subparsers(build_parser()).choices[command]
    text = (DOCS / page).read_text()
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    missing = [f for f in flags if f not in ("--help", "--threads") and f not in text]
    assert not missing, f"options of `stcsnn {command}` missing from docs/{page}: {missing}"


def test_every_registered_neuron_and_surrogate_is_documented():
    from stcsnn.neurons import SURROGATES, list_neurons

    text = (DOCS / "neurons.md").read_text()
    missing = [n for n, _ in list_neurons() if f"`{n}`" not in text] + [s for s in SURROGATES if f"`{s}`" not in text]
    assert not missing, f"neurons or surrogates missing from docs/neurons.md: {missing}"


def test_the_api_reference_covers_the_packages():
    text = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    modules = ["stcsnn", "stcsnn.neurons", "stcsnn.models", "stcsnn.data", "stcsnn.metrics", "stcsnn.train",
               "stcsnn.config"]
    missing = [m for m in modules if not re.search(rf"^::: {re.escape(m)}\s*$", text, re.M)]
    assert not missing, f"modules without an API page (`::: module` in docs/api/): {missing}"


def test_the_readme_own_neuron_example_is_the_example_file():
    """README's "Your own neuron" block is docs/examples/my_neuron.py verbatim (the module docstring aside): the
    file is what tests/test_plugins.py trains, so the README shows tested code."""
    import ast

    source = (EXAMPLES / "my_neuron.py").read_text()
    docstring_end = ast.parse(source).body[0].end_lineno
    expected = "\n".join(source.splitlines()[docstring_end:]).strip("\n") + "\n"
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Your own neuron"):]
    section = section[:section.index("\n### ", 1)]
    blocks = [b for b in code_blocks(section, "README.md") if b.language in PYTHON]
    assert len(blocks) == 1 and blocks[0].code == expected
