"""What a training run writes and says besides its checkpoints (rank 0 only): ``config.yaml``, ``metrics.csv``
(one row per epoch: the train loss, ``val_<name>`` for each metric of the run, lr, ``eta``/``p_true``, the firing
rate per layer), ``steps.csv`` (:class:`~stcsnn.train.progress.StepLog`), TensorBoard
(:class:`~stcsnn.train.progress.Board`), and the lines a run prints about where it stands.

:class:`Records` keeps the set of run files this process wrote (``written``): a new run that fails before its first
``last.pt`` removes exactly those again (:func:`stcsnn.runs.discard_unsaved`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stcsnn.config import Config, dump_config
from stcsnn.errors import StcsnnError
from stcsnn.io import atomic_write_text
from stcsnn.metrics import METRICS
from stcsnn.models.checkpoint import read_checkpoint
from stcsnn.train.progress import Board, Progress, StepLog


def position(epoch: int, batch: int, step: int) -> str:
    """Where a run stands, as its messages say it: ``epoch 3, step 40`` or ``the end of epoch 2, step 40``."""
    if batch == 0 and epoch > 0:
        return f"the end of epoch {epoch}, step {step}"
    return f"epoch {epoch + 1}, step {step}"


def p_true(cfg: Config, eta: float) -> float | None:
    """The scheduled-sampling probability of a true frame; None where no future frame is fed back."""
    return eta if cfg.output_frames > 1 and math.isfinite(eta) else None


class Records:
    """The run's records in ``out`` for a run of ``cfg`` that reports ``metrics`` (names of the metric table).
    ``main``: this process writes them (rank 0); the other ranks keep none."""

    def __init__(self, out: Path, cfg: Config, metrics: Sequence[str], main: bool) -> None:
        self.out, self.cfg, self.metrics = out, cfg, tuple(metrics)
        self.written: set[str] = set()
        self.steps = StepLog(out / "steps.csv", cfg.log_every) if main else None
        self.board: Board | None = None

    def open(self, cfg: Config, step: int, resumed_from: Path | None) -> None:
        """config.yaml (``cfg``: the run's, with its thread and process records), steps.csv (continued from the
        checkpoint's step) and the TensorBoard writer."""
        self.cfg = cfg
        dump_config(cfg, self.out / "config.yaml")
        self.written.add("config.yaml")
        source = resumed_from.parent / "steps.csv" if resumed_from is not None else None
        self.steps.start(step, source)
        self.written.add("steps.csv")
        if cfg.tensorboard:
            self.board = Board(self.out / "tensorboard", purge_step=step + 1 if step else None)

    def flush(self) -> None:
        """Make every step up to now durable (before a checkpoint is written)."""
        if self.steps is not None:
            self.steps.flush(sync=True)
        if self.board is not None:
            self.board.flush()

    def step(self, step: int, epoch: int, loss: float, lr: float, p: float | None, seconds: float, threads: int,
             grad_norm: float) -> None:
        """steps.csv and TensorBoard for the step just taken."""
        if self.steps is not None:
            self.steps.add(step, epoch, loss, lr, p, seconds, threads, grad_norm)
        if self.board is not None:
            self.board.step(step, loss, lr, p)

    def epoch(self, history: list[dict[str, Any]], samples: dict[str, np.ndarray] | None) -> None:
        """metrics.csv (every row so far) and the epoch's TensorBoard scalars."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(history[-1].keys()), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.out / "metrics.csv", buf.getvalue())
        self.written.add("metrics.csv")
        if self.board is not None:
            self.board.epoch(history[-1], samples, self.metrics)

    def summary(self, row: dict[str, Any]) -> str:
        """The line printed at the end of an epoch: its train loss, the validation metrics (when it validated)."""
        val = "".join(f" val_{n} {METRICS[n].format(row[f'val_{n}'])}" for n in self.metrics if f"val_{n}" in row)
        p = "-" if row["p_true"] is None else f"{row['p_true']:.3f}"
        return (f"epoch {row['epoch']}/{self.cfg.epochs} train_loss {row['train_loss']:.5f}{val} "
                f"lr {row['lr']:.2e} p_true {p} ({row['seconds']:.1f}s)")

    def saved_on_signal(self, progress: Progress, signal_name: str, where: str) -> None:
        progress.say(f"{signal_name}: saved {self.out / 'last.pt'} at {where}; training goes on")

    def last_checkpoint_note(self) -> str:
        """What is true of last.pt right now, for a message about a run that stopped without saving."""
        last = self.out / "last.pt"
        if not last.exists():
            return f"no checkpoint was written yet ({last} does not exist)"
        try:
            ckpt = read_checkpoint(last)
            return f"the last good checkpoint {last} (step {ckpt['step']}) is untouched"
        except (StcsnnError, KeyError):
            return f"{last} is untouched"
