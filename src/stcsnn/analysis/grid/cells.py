"""A cell of a ``stcsnn reproduce`` grid, the grid, and the cell's JSON files as the grid reads them.

Each cell is an ordinary run directory ``<out>/<scale>/<dataset>/<model>/seed<k>/``. Its training is finished
when ``report.json`` exists (the test report the training loop writes); it is done when the grid's cached
evaluations are there too: ``horizon<N>.json``, ``energy.json`` and the per-sequence record (the key
``per_sequence`` added to ``report.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stcsnn.config import Config, load_config, make_config
from stcsnn.errors import StcsnnError, short
from stcsnn.metrics import DEFAULT_METRICS
from stcsnn.runs import RESUMABLE_CHANGES, changed_keys

#: the keys each JSON file of a cell must hold (dotted: nested), checked when it is read. A test report holds
#: the default metrics (a metric registered later is taken from the grid's own per-sequence evaluation).
REPORT_KEYS = tuple(f"metrics.{m}" for m in DEFAULT_METRICS)
HORIZON_KEYS = ("horizon", "trained_output_frames", "ranges", "per_horizon")  # when "available"
ENERGY_KEYS = tuple(f"total.{k}" for k in ("params", "macs", "sops", "energy_snn_pj", "energy_ann_pj"))
SEQUENCE_KEYS = ("metrics", "per_sequence", "num_samples", "frames")
#: how to make a cell's file again: the grid re-tests a cell without report.json from its last.pt and
#: recomputes a missing evaluation
REDO = "delete it and run the same `stcsnn reproduce` command again"
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


@dataclass
class Cell:
    dataset: str
    model: str
    seed: int
    cfg: Config
    run_dir: Path
    horizon: int = 0  # frames of the long-term evaluation; 0: none

    @property
    def finished(self) -> bool:
        """Training finished (the test report exists)."""
        return (self.run_dir / "report.json").is_file()

    @property
    def horizon_path(self) -> Path:
        return self.run_dir / f"horizon{self.horizon}.json"

    @property
    def report(self) -> dict[str, Any]:
        return read_cell_json(self.run_dir / "report.json", "the cell's test report", REPORT_KEYS)

    @property
    def done(self) -> bool:
        """Trained and every cached evaluation written: nothing left to do for this cell."""
        return (self.finished and (self.run_dir / "energy.json").is_file()
                and (not self.horizon or self.horizon_path.is_file()) and "per_sequence" in self.report)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model} seed {self.seed}"

    def check_trained_config(self) -> None:
        """A finished cell must have been trained with the config the grid gives it now, to the keys a resume may
        change (:data:`stcsnn.runs.RESUMABLE_CHANGES`): a scale edited since (another neuron option, learning
        rate, ...) would otherwise put an old result in the new table under the new protocol's name."""
        if not self.finished or not (self.run_dir / "config.yaml").is_file():
            return
        saved, now = load_config(self.run_dir / "config.yaml").to_dict(), self.cfg.to_dict()
        changed = sorted(changed_keys(saved, now) - RESUMABLE_CHANGES)
        if changed:
            k = changed[0]
            raise StcsnnError(f"{self.label}: {self.run_dir} was trained with {k}={short(saved.get(k))}, the grid "
                              f"now gives {short(now[k])}: move that folder away (or use another --out) to train "
                              "the cell again")


@dataclass
class Grid:
    name: str
    root: Path
    cells: list[Cell]
    horizon: int | None  # the requested horizon (None: each cell's 3 x T_out)
    data_notes: dict[str, str] = field(default_factory=dict)  # dataset label -> where its data came from
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant label -> its config overrides
    #: paired comparisons beyond each STC neuron against its declared base: ``(model, against)``, same seeds
    comparisons: list[tuple[str, str]] = field(default_factory=list)


def read_cell_json(path: Path, what: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """A cell's JSON file (``report.json``, ``horizon<N>.json``, ``energy.json``, ``timing.json``): a JSON object
    holding ``keys``. Anything else (truncated, garbage, ``[]``, a key missing) is one error line naming the
    file, what it should hold and how to make it again."""
    try:
        data: Any = json.loads(path.read_bytes())
    except OSError as exc:
        found = f"a file that cannot be read ({exc.strerror or exc})"
    except ValueError as exc:  # not JSON, truncated, not UTF-8
        found = f"no valid JSON ({str(exc).splitlines()[0][:100]})"
    else:
        found = _missing_keys(data, keys)
        if found is None:
            return data
    holding = f" holding {', '.join(keys)}" if keys else ""
    raise StcsnnError(f"{path}: expected {what} (a JSON object{holding}), found {found}; {REDO}")


def _missing_keys(data: Any, keys: Sequence[str]) -> str | None:
    """What is wrong with ``data`` as a JSON object holding the dotted ``keys``; None when nothing."""
    if not isinstance(data, dict):
        return "null" if data is None else _JSON_TYPES.get(type(data), type(data).__name__)
    for key in keys:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return f"no {key}"
            node = node[part]
    return None


def checkpoint(cell: Cell) -> Path:
    """The checkpoint the cell's test report evaluated (best.pt, else last.pt), in the cell's folder."""
    if cell.finished:
        name = Path(str(cell.report.get("checkpoint", "best.pt"))).name
        if (cell.run_dir / name).is_file():
            return cell.run_dir / name
    best = cell.run_dir / "best.pt"
    return best if best.is_file() else cell.run_dir / "last.pt"


@dataclass(frozen=True)
class TrainedCell:
    """A finished cell found in a grid folder: its coordinates and the checkpoint its test report evaluated."""

    dataset: str
    model: str
    seed: int
    checkpoint: Path


def pair_order(model: str, models: set[str]) -> tuple[str, bool, str]:
    """Sort key that puts each STC neuron right after its declared base neuron (the registry's ``base``) when
    that base is among ``models``; anything else sorts by its own name."""
    from stcsnn.neurons.registry import NEURONS

    spec = NEURONS.get(model)
    base = spec.base if spec is not None and spec.is_stc and spec.base in models else None
    return (base or model, base is not None, model)


def finished_cells(root: str | os.PathLike) -> list[TrainedCell]:
    """The finished cells (``<dataset>/<model>/seed<k>/report.json``) of the grid folder ``root`` (what
    ``stcsnn reproduce`` writes, e.g. ``runs/reproduce/small``), ordered by dataset, then each STC neuron right
    after its base neuron, then seed."""
    root = Path(root)
    if not root.is_dir():
        raise StcsnnError(f"--grid {str(root)!r}: expected the folder of a `stcsnn reproduce` grid (such as "
                          "runs/reproduce/small), found no such folder")
    found = []
    for report in root.glob("*/*/seed*/report.json"):
        run_dir = report.parent
        try:
            seed = int(run_dir.name[4:])
        except ValueError:
            continue
        cell = Cell(run_dir.parent.parent.name, run_dir.parent.name, seed, make_config({}), run_dir)
        found.append(TrainedCell(cell.dataset, cell.model, seed, checkpoint(cell)))
    if not found:
        raise StcsnnError(f"--grid {str(root)!r}: expected finished cells <dataset>/<model>/seed<k>/report.json "
                          "(a `stcsnn reproduce` grid folder such as runs/reproduce/small), found none")
    models = {c.model for c in found}
    return sorted(found, key=lambda c: (c.dataset, *pair_order(c.model, models), c.seed))
