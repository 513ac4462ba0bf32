"""Science tools: operation counts and energy, gradients through time, neuron dynamics, the comparison grid.

* :mod:`stcsnn.analysis.energy` -- MACs / SOPs per layer from hooks on a real rollout, energy at 45 nm;
* :mod:`stcsnn.analysis.gradients` -- ``||dL/dV[t]||`` per layer and step, the per-step factor dV[t]/dV[t-1];
* :mod:`stcsnn.analysis.dynamics` -- STC gains, firing rates per step, spike rasters;
* :mod:`stcsnn.analysis.reproduce` -- ``stcsnn reproduce``: train the grid, one table, per-horizon plots
  (scales in :mod:`stcsnn.analysis.scales`).

Plots need matplotlib (the ``viz`` extra); without it every command still writes its CSV files.
"""

from stcsnn.analysis.dynamics import DynamicsTrace, trace_dynamics
from stcsnn.analysis.energy import E_AC_PJ, E_MAC_PJ, EnergyReport, count_operations
from stcsnn.analysis.gradients import GradientTrace, step_factor, trace_gradients
from stcsnn.analysis.reproduce import plan_grid, run_grid
from stcsnn.analysis.scales import DEFAULT_MODELS, SCALES

__all__ = ["DEFAULT_MODELS", "E_AC_PJ", "E_MAC_PJ", "SCALES", "DynamicsTrace", "EnergyReport", "GradientTrace",
           "count_operations", "plan_grid", "run_grid", "step_factor", "trace_dynamics", "trace_gradients"]
