"""``stcsnn reproduce``: train and evaluate a grid (datasets x models x seeds), then one table and plots.

The work is done in :mod:`stcsnn.analysis.grid` (one module per part: plan, run, evaluate, aggregate, report,
plots); this module keeps the public names in one place for the CLI, the other analyses and the tests.

Each cell of the grid is an ordinary run directory ``<out>/<scale>/<dataset>/<model>/seed<k>/`` trained by
:func:`stcsnn.train.loop.train` (what ``stcsnn train`` runs: the run lock, resumption, cleanup of a failed new
run; the same loop, patching, scheduled sampling and metrics for every model). A cell's training is finished
when its ``report.json`` exists; the grid then adds its cached evaluations (``horizon<N>.json``, the long-term
evaluation; the per-sequence metrics in ``report.json``; ``energy.json``, operation counts). Re-running skips
done cells without touching their files, resumes unfinished ones from their ``last.pt`` and adds missing
evaluations. ``--jobs N`` runs N cells at a time in separate processes. The grid folder holds a
:class:`~stcsnn.io.RunLock` while it works. Outputs: see :mod:`stcsnn.analysis.grid.report`.
"""

from __future__ import annotations

from stcsnn.analysis.grid.aggregate import (
    PRIMARY,
    aggregate,
    cell_row,
    horizon_series,
    mean_std,
    paired_differences,
    range_key,
    selected_epoch,
    training_seconds,
)
from stcsnn.analysis.grid.cells import REDO, Cell, Grid, TrainedCell, finished_cells, read_cell_json
from stcsnn.analysis.grid.evaluate import (
    REFERENCE_MODELS,
    cell_energy,
    evaluate_sequences,
    horizon_ranges,
    long_horizon,
    reference_evaluation,
    sequence_record,
)
from stcsnn.analysis.grid.plan import data_note, get_scale, missing_files, paper_config, parse_seeds, plan_grid
from stcsnn.analysis.grid.plots import plot_horizons
from stcsnn.analysis.grid.report import results_markdown, write_results
from stcsnn.analysis.grid.run import _cell_main, run_cell, run_grid
from stcsnn.neurons.registry import stc_pairs

_mean_std = mean_std  # the older private name

__all__ = ["PRIMARY", "REDO", "REFERENCE_MODELS", "Cell", "Grid", "TrainedCell", "_cell_main", "aggregate",
           "cell_energy", "cell_row", "data_note", "evaluate_sequences", "finished_cells", "get_scale",
           "horizon_ranges", "horizon_series", "long_horizon", "mean_std", "missing_files", "paired_differences",
           "paper_config", "parse_seeds", "plan_grid", "plot_horizons", "range_key", "read_cell_json",
           "reference_evaluation", "results_markdown", "run_cell", "run_grid", "selected_epoch", "sequence_record",
           "stc_pairs", "training_seconds", "write_results"]
