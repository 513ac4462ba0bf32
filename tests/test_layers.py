"""The package's layers only look down.

bottom (errors, io, config, device, threads, metrics, viz, children, runs) -> neurons -> models -> data -> train
-> analysis, perf (siblings: neither imports the other) -> cli (the ``stcsnn.cli`` package and ``__main__``).
Importing any module of a layer, in a fresh interpreter, must not import a module of a higher (or sibling) layer.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import stcsnn

RANKS = {"bottom": 0, "neurons": 1, "models": 2, "data": 3, "train": 4, "analysis": 5, "perf": 5, "cli": 6}
BOTTOM = {"errors", "io", "config", "device", "threads", "metrics", "viz", "children", "runs", "machine", "safe_yaml"}
ENTRY = {"stcsnn.__main__"}  # runs the CLI when imported: never imported here, but part of the cli layer


def layer_of(module: str) -> str:
    """The layer of ``stcsnn.<...>``; an unplaced module fails the test (a new module must be given a layer)."""
    parts = module.split(".")[1:]
    if not parts:
        return "bottom"  # the package itself: its __init__ is lazy and imports only stcsnn.errors
    if module in ENTRY or parts[0] == "cli":
        return "cli"
    if len(parts) == 1 and parts[0] in BOTTOM:
        return "bottom"
    if parts[0] in RANKS and parts[0] not in ("bottom", "cli"):
        return parts[0]
    raise AssertionError(f"{module} belongs to no layer: add it to tests/test_layers.py")


def all_modules() -> list[str]:
    root = Path(stcsnn.__file__).parent
    return ["stcsnn"] + sorted(m.name for m in pkgutil.walk_packages([str(root)], prefix="stcsnn."))


def test_every_module_has_a_layer() -> None:
    modules = all_modules()
    assert "stcsnn.data.registry" in modules and "stcsnn.neurons.stc" in modules  # the walk found the tree
    for module in modules:
        layer_of(module)


# A fresh interpreter imports the layers bottom-up and records, after each layer, which stcsnn modules are loaded:
# a module of layer L that imports anything above L shows up right after layer L. Every layer is tested in the
# same process (nothing above it is loaded yet when it is imported), which spares the ~2 s torch import per
# layer; perf, the sibling of analysis, gets its own interpreter so that analysis is not already loaded.
PROBE = """
import importlib, json, sys
report = {}
for chunk in json.loads(sys.argv[1]):
    layer, names = chunk
    for name in names:
        importlib.import_module(name)
    report[layer] = sorted(m for m in sys.modules if m == "stcsnn" or m.startswith("stcsnn."))
print(json.dumps(report))
"""
LAYERS = [name for name in RANKS if name != "cli"]
CHAINS = (("bottom", "neurons", "models", "data", "train", "analysis"), ("perf",))


@pytest.fixture(scope="module")
def loaded_after() -> dict[str, list[str]]:
    """``{layer: the stcsnn modules loaded once that layer (and those before it in its chain) is imported}``."""
    modules = all_modules()
    procs = []
    for chain in CHAINS:
        plan = [(layer, [m for m in modules if layer_of(m) == layer and m not in ENTRY]) for layer in chain]
        procs.append(subprocess.Popen([sys.executable, "-c", PROBE, json.dumps(plan)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    report: dict[str, list[str]] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        report.update(json.loads(out.strip().splitlines()[-1]))
    return report


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_lower_layers(layer: str, loaded_after: dict[str, list[str]]) -> None:
    assert any(layer_of(m) == layer for m in loaded_after[layer]), f"no module of layer {layer} was imported"
    higher = [m for m in loaded_after[layer] if RANKS[layer_of(m)] > RANKS[layer]
              or (RANKS[layer_of(m)] == RANKS[layer] and layer_of(m) != layer)]
    assert not higher, f"importing the {layer} layer imported modules of higher layers: {', '.join(higher)}"


# ------------------------------------------------------------------------------------- imports inside functions
# The fresh-interpreter probe above sees only what importing a module runs. Imports deferred into functions (to
# break a cycle, or to reach up a layer) run later, so they are read from the source: every ``import`` statement
# anywhere in a module, resolved to the stcsnn module it loads. ``from stcsnn import x`` loads the submodule x when
# there is one, else it reaches the package's own functions (``stcsnn.build_model``...): the "api" layer, the top
# of the tree next to the CLI, which only the CLI and the package itself may use.
API = "api"


def _rank(module: str) -> int:
    return RANKS["cli"] if module == API else RANKS[layer_of(module)]


def module_sources() -> dict[str, str]:
    root = Path(stcsnn.__file__).parent
    sources = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        sources[".".join(parts)] = path.read_text()
    return sources


def imported_modules(module: str, source: str, known: set[str]) -> set[str]:
    """The stcsnn modules (or API) that ``module``'s import statements load, wherever in the file they stand."""
    import ast

    package = module if module in known and any(k.startswith(module + ".") for k in known) else \
        module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "stcsnn" or a.name.startswith("stcsnn.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base != "stcsnn" and not base.startswith("stcsnn."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif base == "stcsnn":
                    found.add(API)
                else:
                    found.add(base)
    found = {m if m == API or m in known else m.rpartition(".")[0] for m in found}
    found.discard("stcsnn")  # the lazy package itself: importing it runs only stcsnn.errors
    found.discard(module)
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    known = set(sources)
    return {m: imported_modules(m, s, known) for m, s in sources.items()}


def uphill_imports(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` pairs where a module loads one of a higher layer or of a sibling layer."""
    bad = []
    for m, targets in graph.items():
        if m == "stcsnn" or m in ENTRY:  # the package's API functions and the entry point sit on top
            continue
        for t in targets:
            if _rank(t) > _rank(m) or (t != API and _rank(t) == _rank(m) and layer_of(t) != layer_of(m)):
                bad.append(f"{m} -> {t}")
    return sorted(bad)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_anywhere_in_a_module_reaches_up_or_sideways() -> None:
    bad = uphill_imports(import_graph(module_sources()))
    assert not bad, "imports (deferred ones included) that reach a higher or sibling layer: " + ", ".join(bad)


def test_no_import_cycles_deferred_ones_included() -> None:
    cycles = import_cycles(import_graph(module_sources()))
    assert not cycles, "import cycles (deferred imports included): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_source_check_finds_a_planted_deferred_cycle_and_uphill_import() -> None:
    sources = module_sources()
    base = import_graph(sources)
    planted = dict(sources)
    # a deferred cycle: stcsnn.io (bottom) imports stcsnn.config inside a function, config imports io
    planted["stcsnn.io"] = sources["stcsnn.io"] + "\n\ndef _planted():\n    from stcsnn import config\n"
    planted["stcsnn.config"] = sources["stcsnn.config"] + "\n\ndef _planted():\n    import stcsnn.io\n"
    # a deferred uphill import: a neuron module asks the trainer, and one asks the package's API
    planted["stcsnn.neurons.lif"] = sources["stcsnn.neurons.lif"] + (
        "\n\ndef _planted():\n    from ..train import loop\n    from stcsnn import build_model\n")
    graph = import_graph(planted)
    assert {"stcsnn.neurons.lif -> stcsnn.train.loop", "stcsnn.neurons.lif -> api"} <= \
        set(uphill_imports(graph)) - set(uphill_imports(base))
    assert any({"stcsnn.io", "stcsnn.config"} <= set(c) for c in import_cycles(graph))
    assert not any({"stcsnn.io", "stcsnn.config"} <= set(c) for c in import_cycles(base))
