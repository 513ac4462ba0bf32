"""Are two grids' cells the same training, bit for bit? Test metrics and every step's loss, cell by cell.

    python scripts/compare_cells.py runs/recheck/small results/small/cells [more pairs: A B ...]

Each argument pair is (a grid folder whose cells were trained again, a folder holding the same cells'
records), both laid out ``<dataset>/<model>/seed<N>/`` with ``report.json`` and ``steps.csv``. Every cell of
the first is looked up in the second and compared exactly: the test report's ``metrics`` and the ``loss``
column of ``steps.csv`` (one value per training step, as written). Why: on one machine, one thread and the same
code path, training is deterministic, so a cell trained again on a later commit that comes out identical shows
that the commit computes what the earlier one did for that model. Prints one line per cell and a count; exits 1
when a cell differs or has no counterpart."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def _losses(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [row["loss"] for row in csv.DictReader(f)]


def compare(new_root: Path, old_root: Path) -> tuple[int, int]:
    """Print one line per cell of ``new_root``; returns (identical, compared)."""
    same = total = 0
    for report in sorted(new_root.glob("*/*/seed*/report.json")):
        cell = report.parent.relative_to(new_root)
        old = old_root / cell
        total += 1
        if not (old / "report.json").is_file() or not (old / "steps.csv").is_file():
            print(f"{cell}: no counterpart in {old_root}")
            continue
        a, b = json.loads(report.read_text())["metrics"], json.loads((old / "report.json").read_text())["metrics"]
        la, lb = _losses(report.parent / "steps.csv"), _losses(old / "steps.csv")
        ok = a == b and la == lb
        same += ok
        print(f"{cell}: test metrics {'identical' if a == b else 'DIFFER'}, {len(la)} step losses "
              f"{'identical' if la == lb else 'DIFFER'} (MSE {a.get('mse')!r} / {b.get('mse')!r})")
    return same, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="pairs: NEW_GRID OLD_CELLS [NEW_GRID OLD_CELLS ...]")
    args = ap.parse_args()
    if len(args.folders) % 2:
        print("error: expected pairs of folders (NEW_GRID OLD_CELLS), got an odd count", file=sys.stderr)
        return 2
    same = total = 0
    for new, old in zip(args.folders[::2], args.folders[1::2]):
        s, t = compare(new, old)
        same, total = same + s, total + t
    print(f"{same}/{total} cells identical")
    return 0 if total and same == total else 1


if __name__ == "__main__":
    sys.exit(main())
