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
BOTTOM = {"errors", "io", "config", "device", "threads", "metrics", "viz", "children", "runs", "machine"}
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
