"""stcsnn: spatio-temporal predictive learning with spiking neural networks.

The Spatio-Temporal Circuit (STC) neuron of Wang & Yu, "Autaptic Synaptic Circuit Enhances Spatio-temporal
Predictive Learning of Spiking Neural Networks" (ICML 2024), its baselines (LIF, PLIF, GLIF, TC-LIF, LM-H),
the predictor, datasets, OpenSTL-compatible metrics, training and analysis tools.

Importing ``stcsnn`` imports nothing else of the package (every ``import stcsnn.x`` runs this file, so it must
stay light and must not pull higher layers into lower ones): the subpackages (``stcsnn.neurons``,
``stcsnn.data``, ...) are imported when first used, and the functions below import what they need on call.
"""

from __future__ import annotations

import importlib
from typing import Any

from stcsnn.errors import StcsnnError

__version__ = "0.1.0"
__all__ = ["StcsnnError", "__version__", "build_model", "load_config", "load_model", "set_threads"]

_SUBMODULES = frozenset({"analysis", "cli", "config", "data", "device", "errors", "io", "metrics", "models",
                         "neurons", "perf", "threads", "train", "viz"})


def __getattr__(name: str) -> Any:
    """``stcsnn.neurons`` and the other subpackages, imported on first access."""
    if name in _SUBMODULES:
        return importlib.import_module(f"stcsnn.{name}")
    raise AttributeError(f"module 'stcsnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)


def load_config(path=None, overrides=None):
    """``stcsnn.load_config("configs/mmnist/reference.yaml", overrides={"epochs": 1})`` -> Config."""
    from stcsnn.config import load_config as _load

    return _load(path, overrides)


def build_model(cfg):
    """The :class:`~stcsnn.models.SpikingPredictor` a config describes; ``model(inputs, n_future=N)``.

    A config without ``frame_shape`` gets the shape of its dataset (from the dataset's spec and options);
    ``stcsnn.models.build_model`` itself needs the shape given."""
    from stcsnn.data import resolve_config_shape
    from stcsnn.models import build_model as _build

    return _build(resolve_config_shape(cfg))


def load_model(path, device="cpu"):
    """``model, cfg = stcsnn.load_model("runs/quickstart/best.pt")``."""
    from stcsnn.models.loading import load_model as _load

    return _load(path, device)


def set_threads(setting="auto", verbose: bool = False):
    """PyTorch's CPU thread count, as every command sets it: ``"auto"`` (the CPUs this process may use minus
    those busy with other work; ``OMP_NUM_THREADS`` wins) or a number. Returns the choice (threads, reason)."""
    from stcsnn.threads import set_threads as _set

    return _set(setting, verbose)
