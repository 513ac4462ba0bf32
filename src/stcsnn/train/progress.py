"""What a run shows and records while it trains: the progress display, ``steps.csv`` and TensorBoard.

- :class:`Progress`: a tqdm bar on a terminal (loss, lr, ``p_true``, it/s, time left), plain periodic lines
  otherwise (``epoch E/N [i/n] loss ... lr ... p_true ... X it/s left M:SS``, what logs and the tests read).
- :class:`StepLog`: ``RUN/steps.csv``, one row per optimizer step, columns :data:`STEP_COLUMNS`. Appended and
  flushed every ``log_every`` steps and before every checkpoint, so a crash loses only rows after the last
  checkpoint; a resumed run first drops the rows after its checkpoint's step, so the file holds exactly one row
  per step of the run's trajectory. ``threads`` is the CPU thread count the step ran with (it changes only with the
  opt-in ``retune_threads``); ``grad_norm`` is the global L2 norm of the gradient before clipping, so how often and
  how far a ``grad_clip`` would clip can be read from any run.
- :class:`Board`: TensorBoard event files under ``RUN/tensorboard/`` (config key ``tensorboard``; the ``tb``
  extra).

``p_true`` is the scheduled-sampling probability of feeding the true frame at a future step (called eta in
PredRNN, and in metrics.csv's ``eta`` column, kept for compatibility); it is left empty where it does not apply
(a single output frame: no future frame is ever fed back).
"""

from __future__ import annotations

import errno
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from stcsnn.errors import ConfigError, StcsnnError
from stcsnn.io import NOFOLLOW, WriteError, atomic_write_text

#: The columns of ``steps.csv`` (``stcsnn plot`` reads them by these names).
STEP_COLUMNS = ("step", "epoch", "loss", "lr", "p_true", "seconds", "threads", "grad_norm")
TB_INSTALL = 'pip install "stcsnn[tb]"'


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_values(values: dict[str, float | None]) -> str:
    return " ".join(f"{k} {'-' if v is None else format(v, '.4g')}" for k, v in values.items())


class Progress:
    """A tqdm bar over the whole run on a terminal, plain periodic lines otherwise (nothing when disabled).

    ``total`` steps in the run, ``done`` of them before this process started (a resumed run)."""

    def __init__(self, enabled: bool, every: int, total: int, done: int = 0, stream: TextIO | None = None) -> None:
        stream = sys.stderr if stream is None else stream  # looked up now: sys.stderr may have been replaced
        self.enabled = enabled
        self.tty = enabled and _isatty(stream)
        self.every = max(1, every)
        self.stream = stream
        self.total, self.done, self.first = total, done, done
        self.start = time.time()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, file=stream, unit="step", dynamic_ncols=True, leave=True,
                            disable=False)

    def update(self, epoch: int, epochs: int, i: int, n: int, **values: float | None) -> None:
        """One more step: batch ``i`` (0-based) of ``n`` in epoch ``epoch`` (0-based) of ``epochs``."""
        if not self.enabled:
            return
        self.done += 1
        where = f"epoch {epoch + 1}/{epochs} [{i + 1}/{n}]"
        if self.bar is not None:
            self.bar.set_description(where, refresh=False)
            self.bar.set_postfix_str(_fmt_values(values), refresh=False)
            self.bar.update(1)
        elif (i + 1) % self.every == 0 or i + 1 == n:
            elapsed = time.time() - self.start
            rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"{where} {_fmt_values(values)} {rate:.2f} it/s left {_fmt_time(left)}", file=self.stream,
                  flush=True)

    def write(self, text: str) -> None:
        """A line of its own (above the bar on a terminal); nothing when the display is disabled."""
        if self.enabled:
            self.say(text)

    def say(self, text: str) -> None:
        """A line that is shown even when the display is disabled (what the run did on a signal)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# ---------------------------------------------------------------------------------------------------- steps.csv

def _cut_offset(path: Path, step: int) -> tuple[int, bool]:
    """(byte offset after the last row to keep, whether the header is right): rows are kept while they are
    well formed, in increasing step order and at most ``step``; everything from the first other line on goes."""
    header = (",".join(STEP_COLUMNS) + "\n").encode()
    with open(path, "rb") as f:
        if f.readline() != header:
            return 0, False
        offset, last = len(header), 0
        for line in f:
            fields = line.rstrip(b"\n").split(b",")
            try:
                n = int(fields[0])
            except ValueError:
                break
            if not line.endswith(b"\n") or len(fields) != len(STEP_COLUMNS) or not last < n <= step:
                break
            offset, last = offset + len(line), n
    return offset, True


class StepLog:
    """``steps.csv``: one row per optimizer step, written append-only (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, every: int) -> None:
        self.path = Path(path)
        self.every = max(1, every)
        self.pending: list[str] = []

    def start(self, step: int, source: str | os.PathLike | None = None) -> None:
        """Begin after ``step``: keep the rows of steps 1..``step`` (from ``source``'s steps.csv when the run
        continues a checkpoint of another folder), drop any later ones (written before a crash), or start the
        file with its header."""
        header = ",".join(STEP_COLUMNS) + "\n"
        # the checkpoint's folder may hold no steps.csv (a checkpoint copied elsewhere): then this folder's own
        found = next((p for p in [*([Path(source)] if source else []), self.path] if p.is_file()), None)
        if step == 0 or found is None:
            atomic_write_text(self.path, header)
            return
        try:
            offset, good = _cut_offset(found, step)
            if not good:  # not a steps.csv of ours: replaced by a fresh one
                atomic_write_text(self.path, header)
            elif found.resolve() != self.path.resolve():
                with open(found, "rb") as f:
                    atomic_write_text(self.path, f.read(offset).decode())
            elif offset < self.path.stat().st_size:
                fd = os.open(self.path, os.O_WRONLY | NOFOLLOW)  # a symbolic link is refused, never followed
                try:
                    os.ftruncate(fd, offset)  # one call: the file holds either every row or the kept ones
                finally:
                    os.close(fd)
        except OSError as exc:
            cause = "it is a symbolic link, not a file stcsnn wrote" if exc.errno == errno.ELOOP else exc.strerror
            raise WriteError(f"cannot continue {self.path}: {cause or exc}", exc.errno) from None

    def add(self, step: int, epoch: int, loss: float, lr: float, p_true: float | None, seconds: float,
            threads: int, grad_norm: float) -> None:
        p = "" if p_true is None or not math.isfinite(p_true) else repr(float(p_true))
        self.pending.append(f"{step},{epoch},{float(loss)!r},{float(lr)!r},{p},{seconds:.6f},{threads},"
                            f"{float(grad_norm)!r}\n")
        if step % self.every == 0:
            self.flush()

    def flush(self, sync: bool = False) -> None:
        """Append the pending rows (``sync``: and make them durable, as a checkpoint is)."""
        if not self.pending and not sync:
            return
        try:
            # ONOFOLLOW: a symbolic link put in steps.csv's place is refused, never appended to
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o666)
            with open(fd, "a") as f:
                f.write("".join(self.pending))
                f.flush()
                if sync:
                    os.fsync(f.fileno())
        except OSError as exc:
            cause = "it is a symbolic link, not a file stcsnn wrote" if exc.errno == errno.ELOOP else exc.strerror
            raise WriteError(f"cannot write {self.path}: {cause or exc}", exc.errno) from None
        self.pending = []


# ---------------------------------------------------------------------------------------------------- TensorBoard

def summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; a missing tensorboard package is one clear error (any other
    import error propagates unchanged: it is not cured by installing the extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError as exc:
        if exc.name != "tensorboard":
            raise
        raise ConfigError(f"config key 'tensorboard' is true, which needs the tensorboard package, but it is not "
                          f"installed; install it: {TB_INSTALL} (or set tensorboard: false)") from None
    return SummaryWriter


class Board:
    """TensorBoard event files in ``folder``. Steps are the x axis of every curve; ``purge_step`` (a resumed
    run: its checkpoint's step + 1) hides the events a crashed process wrote after its last checkpoint."""

    def __init__(self, folder: str | os.PathLike, purge_step: int | None = None) -> None:
        writer_class = summary_writer_class()
        self.folder = Path(folder)
        self.existed = self.folder.exists()
        self.before = set(os.listdir(self.folder)) if self.existed else set()
        self.writer = writer_class(log_dir=str(self.folder), purge_step=purge_step)
        self.pictures = _can_draw()

    def step(self, step: int, loss: float, lr: float, p_true: float | None) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        if p_true is not None and math.isfinite(p_true):
            self.writer.add_scalar("train/p_true", p_true, step)

    def epoch(self, row: dict[str, Any], samples: dict[str, np.ndarray] | None = None,
              metrics: Sequence[str] = ()) -> None:
        """The scalars of a metrics.csv row (at its step: ``val/<name>`` for each of ``metrics``), and the
        prediction picture of ``samples``."""
        step = row["step"]
        self.writer.add_scalar("train/epoch_loss", row["train_loss"], step)
        for key in metrics:
            if f"val_{key}" in row:
                self.writer.add_scalar(f"val/{key}", row[f"val_{key}"], step)
        for key, value in row.items():
            if key.startswith("rate_l"):
                self.writer.add_scalar(f"rates/layer{key[len('rate_l'):]}", value, step)
        if samples and self.pictures:
            from stcsnn.viz import prediction_grid

            picture = prediction_grid(samples["inputs"], samples["truth"], samples["pred"])
            self.writer.add_image("val/predictions", picture, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def discard(self) -> None:
        """Remove the event files this board wrote (a new run that never saved leaves nothing behind)."""
        self.close()
        for name in set(os.listdir(self.folder)) - self.before if self.folder.is_dir() else ():
            try:
                (self.folder / name).unlink()
            except OSError:
                pass
        if not self.existed:
            try:
                self.folder.rmdir()
            except OSError:
                pass


def _can_draw() -> bool:
    """Whether the prediction picture can be drawn (the viz extra); says once why not."""
    from stcsnn.viz import require_viz

    try:
        require_viz("TensorBoard prediction pictures")
    except StcsnnError as exc:
        print(f"note: {exc}; the curves are written without them", file=sys.stderr)
        return False
    return True
