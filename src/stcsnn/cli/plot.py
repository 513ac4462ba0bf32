"""``stcsnn plot RUN [RUN ...] --out curves.png``: training curves of runs, overlaid."""

from __future__ import annotations

import argparse
from pathlib import Path

from stcsnn.errors import StcsnnError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="training curves of runs (loss per step, validation metrics), overlaid",
                       description="Reads each RUN folder's steps.csv (loss per step; without it, the per-epoch "
                                   "train_loss of metrics.csv), metrics.csv (validation MSE, MAE, SSIM, PSNR, "
                                   "learning rate) and config.yaml (the label: neuron and seed), and draws them "
                                   "in one PNG, one colour per run.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `stcsnn train`")
    p.add_argument("--out", help="PNG to write (default: RUN/curves.png for one run; required for several)")
    p.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> int:
    from stcsnn.analysis.plot import read_run, write_curves
    from stcsnn.io import check_writable
    from stcsnn.viz import require_viz

    require_viz("stcsnn plot")
    if args.out:
        out = Path(args.out)
    elif len(args.runs) == 1:
        out = Path(args.runs[0]) / "curves.png"
    else:
        raise StcsnnError(f"plotting {len(args.runs)} runs together needs --out FILE.png (where to write it)")
    if out.suffix.lower() != ".png" or out.is_dir():
        raise StcsnnError(f"--out expects a .png file path, got {str(out)!r}")
    runs = [read_run(r) for r in args.runs]  # every file checked before anything is written
    check_writable(out)
    write_curves(runs, out)
    notes = [n for r in runs for n in r.notes]
    print(f"wrote {out}" + "".join(f"; {n}" for n in notes))
    return 0
