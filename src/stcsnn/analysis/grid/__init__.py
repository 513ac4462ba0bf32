"""``stcsnn reproduce`` in parts, by what each does (:mod:`stcsnn.analysis.reproduce` re-exports the public names):

- :mod:`.cells`: a cell of the grid, its files and how they are read;
- :mod:`.plan`: scales -> cells (validation of the request, configs, data fallback);
- :mod:`.run`: training the cells, serially or in child processes, resumably;
- :mod:`.evaluate`: the cached evaluations of a cell (long horizon, per test sequence, operation counts) and of
  the naive reference predictors;
- :mod:`.aggregate`: rows per cell, means over seeds, paired differences and their statistics;
- :mod:`.report`: ``table.md``, the CSV files and ``results.json``;
- :mod:`.plots`: the per-horizon figures.
"""
