"""Science tools: operation counts and energy, gradients through time, neuron dynamics, the comparison grid.

* :mod:`stcsnn.analysis.energy` -- MACs / SOPs per layer from hooks on a real rollout, energy at 45 nm;
* :mod:`stcsnn.analysis.gradients` -- ``||dL/dV[t]||`` per layer and step, the per-step factor dV[t]/dV[t-1];
* :mod:`stcsnn.analysis.dynamics` -- STC gains, firing rates per step, spike rasters;
* :mod:`stcsnn.analysis.reproduce` -- ``stcsnn reproduce``: train the grid, one table, per-horizon plots
  (scales in :mod:`stcsnn.analysis.scales`).

Plots need matplotlib (the ``viz`` extra); without it every command still writes its CSV files.
"""

from __future__ import annotations

import importlib
from typing import Any

from stcsnn.analysis.scales import DEFAULT_MODELS, SCALES

__all__ = ["DEFAULT_MODELS", "E_AC_PJ", "E_MAC_PJ", "SCALES", "DynamicsTrace", "EnergyReport", "GradientTrace",
           "count_operations", "plan_grid", "run_grid", "step_factor", "trace_dynamics", "trace_gradients"]

#: the names of the torch-using modules, imported on first access: the command line builds ``reproduce``'s
#: options from the scales (plain data) through this package without importing torch
_LAZY = {"DynamicsTrace": "dynamics", "trace_dynamics": "dynamics", "E_AC_PJ": "energy", "E_MAC_PJ": "energy",
         "EnergyReport": "energy", "count_operations": "energy", "GradientTrace": "gradients",
         "step_factor": "gradients", "trace_gradients": "gradients", "plan_grid": "reproduce",
         "run_grid": "reproduce"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"stcsnn.analysis.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'stcsnn.analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
