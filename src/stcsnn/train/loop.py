"""The training loop: one loop for CPU, one GPU and many GPUs (DDP under torchrun).

Distributed runs are detected from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``):
every rank builds the same model from the same seed, draws the same global batch order and the same
scheduled-sampling mask, and takes its own contiguous slice of each global batch (``batch_size`` is the
*global* batch and must divide by the number of processes). Gradients are averaged by DDP, so N processes
follow the same trajectory as one process with the same global batch. Rank 0 alone logs and writes files;
evaluation also runs on rank 0.

Run directory: ``config.yaml`` (resolved), ``metrics.csv`` (one row per epoch), ``last.pt`` (everything needed
to resume bit for bit), ``best.pt`` (best validation MSE, never chosen on the test split), and at the end
``report.json``, ``report.md`` and ``predictions.png`` for the test split.

A run folder belongs to one run. :func:`train` holds its :class:`~stcsnn.io.RunLock` for the whole run (rank 0
only under DDP), so a second command into the same folder is refused while the first runs. A new run refuses a
folder holding any run file (``RUN_FILES``); ``resume="auto"`` continues the folder's own ``last.pt``;
``resume=PATH`` continues PATH, into a folder that is empty or new or the folder PATH lies in (any other folder
holding run files holds a *different* run, and is refused). Nothing is written before these checks pass.

Signals: SIGINT (Ctrl-C) and SIGTERM (Slurm, ``docker stop``, Kubernetes) finish the current step, write
``last.pt`` and return 130 / 143; a second Ctrl-C aborts. ``save_on_signal`` (default SIGUSR1, the pre-emption
warning of Slurm's ``--signal=USR1@90``) writes ``last.pt`` at the end of the current step and trains on. Under
DDP the requests travel with the per-step loss reduction, so every rank acts on the same step.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from stcsnn.config import Config, dump_config, load_config, make_config
from stcsnn.data import build_splits, resolve_frame_shape
from stcsnn.device import pick_device
from stcsnn.errors import ConfigError, StcsnnError
from stcsnn.io import RunLock, atomic_torch_save, atomic_write_text, remove_stale_temporaries
from stcsnn.models import build_model
from stcsnn.models.loading import FORMAT, VERSION, read_checkpoint
from stcsnn.train.evaluate import evaluate, write_report
from stcsnn.train.schedule import learning_rate, sampling_mask


class TrainingError(StcsnnError):
    """The run cannot go on (non-finite loss, mismatched resume)."""


# Keys that may differ between a run and its resumption (they do not change the trajectory).
RESUMABLE_CHANGES = {"epochs", "device", "num_workers", "log_every", "val_every", "save_every_steps",
                     "max_test_batches", "num_visualize", "compile", "save_on_signal"}

# The files that make a folder a run (or an import-official checkpoint): a new run never writes into a folder
# holding any of them.
RUN_FILES = ("*.pt", "report*.json", "report*.md", "metrics.csv", "config.yaml")
# Signals that cannot serve as save_on_signal: they stop the run, or cannot be caught.
_NOT_SAVE_SIGNALS = {"SIGINT", "SIGTERM", "SIGKILL", "SIGSTOP"}


def run_files(folder: str | os.PathLike) -> list[str]:
    """The names of the run files (``RUN_FILES``) in ``folder``, sorted; [] for a missing folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted({p.name for pattern in RUN_FILES for p in folder.glob(pattern) if p.is_file()})


def save_signal(cfg: Config) -> signal.Signals | None:
    """The signal of ``cfg.save_on_signal`` ("SIGUSR1" or "USR1"), None for none or where the platform lacks it."""
    name = cfg.save_on_signal
    if name is None:
        return None
    full = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
    known = {"SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGCONT", "SIGWINCH", "SIGURG", "SIGPWR",
             "SIGXCPU", "SIGBREAK"} | {s.name for s in signal.Signals}
    if full in _NOT_SAVE_SIGNALS or full not in known:
        raise ConfigError(f"save_on_signal expects the name of a signal such as SIGUSR1 (not SIGINT, SIGTERM, "
                          f"SIGKILL or SIGSTOP), or null; got {name!r}")
    return getattr(signal, full, None)  # e.g. no SIGUSR1 on Windows: nothing to handle there


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(cfg: Config) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    if world > 1:
        import torch.distributed as dist

        if cfg.batch_size % world:
            raise ConfigError(f"batch_size {cfg.batch_size} (global) must divide by the {world} processes")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return Runtime(rank, world, local_rank, device)


class RolloutLoss(nn.Module):
    """Training objective: MSE between the rollout and the true next frames (all of them, or the future ones)."""

    def __init__(self, model: nn.Module, cfg: Config) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        out = self.model.rollout(frames, cfg.input_frames, cfg.output_frames, mask, reverse=cfg.sampling == "reverse")
        pred, target = out.frames, frames[:, 1:]
        if cfg.loss == "future":
            pred, target = pred[:, cfg.input_frames - 1:], frames[:, cfg.input_frames:]
        return F.mse_loss(pred.float(), target), out.rates


def epoch_batches(n: int, batch: int, epoch: int, seed: int, limit: int | None) -> list[list[int]]:
    """The global batches of one epoch: a permutation seeded by (seed, epoch), cut into full batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    count = n // batch
    if limit:
        count = min(count, limit)
    return [perm[i * batch:(i + 1) * batch] for i in range(count)]


class Progress:
    """A progress bar on a terminal, plain periodic lines otherwise."""

    def __init__(self, enabled: bool, every: int, stream=None) -> None:
        stream = sys.stderr if stream is None else stream  # looked up now: sys.stderr may have been replaced
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self.every = max(1, every)
        self.stream = stream
        self.start = time.time()

    def update(self, epoch: int, epochs: int, i: int, n: int, step: int, total: int, **values: float) -> None:
        if not self.enabled:
            return
        elapsed = time.time() - self.start
        rate = step / elapsed if elapsed > 0 else 0.0
        left = (total - step) / rate if rate > 0 else float("nan")
        stats = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        line = f"epoch {epoch + 1}/{epochs} [{i + 1}/{n}] {stats} {rate:.2f} it/s left {_fmt_time(left)}"
        if self.tty:
            width = 24
            done = int(width * (i + 1) / n)
            self.stream.write("\r" + "#" * done + "." * (width - done) + " " + line + "\x1b[K")
            self.stream.flush()
        elif (i + 1) % self.every == 0 or i + 1 == n:
            print(line, file=self.stream, flush=True)

    def end_epoch(self, text: str) -> None:
        if self.enabled:
            if self.tty:
                self.stream.write("\n")
            print(text, file=self.stream, flush=True)


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | os.PathLike, resume: str | None = None,
                 progress: bool = True) -> None:
        self.out = Path(out_dir)
        self.progress_enabled = progress
        self.written: set[str] = set()  # run files this trainer wrote (a failed new run removes them again)
        ckpt = self._resume_checkpoint(cfg, resume)
        if ckpt is not None:
            saved = make_config(ckpt["config"])
            changed = {k for k, v in cfg.to_dict().items() if k != "frame_shape" and saved.to_dict()[k] != v}
            if changed - RESUMABLE_CHANGES:
                key = sorted(changed - RESUMABLE_CHANGES)[0]
                raise TrainingError(f"cannot resume {self.out}: its run has {key}={saved.to_dict()[key]!r}, "
                                    f"the config now says {cfg.to_dict()[key]!r} (use another --out)")
            cfg = make_config({**saved.to_dict(), **{k: cfg.to_dict()[k] for k in changed}})
        self.save_signal = save_signal(cfg)
        self.rt = setup_runtime(cfg)
        self.splits = build_splits(cfg)
        cfg = resolve_frame_shape(cfg, self.splits["train"])
        self.cfg = cfg
        if cfg.input_frames + cfg.output_frames < 2 or cfg.output_frames < 1:
            raise ConfigError("need output_frames >= 1")
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(self.rt.device)
        if cfg.compile:
            for cell in self.model.cells:
                cell.update = torch.compile(cell.update)
        self.objective: nn.Module = RolloutLoss(self.model, cfg)
        if self.rt.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.mask_rng = torch.Generator().manual_seed(cfg.seed)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and self.rt.device.type == "cuda" else None
        self.epoch, self.batch, self.step = 0, 0, 0
        self.best_val = math.inf
        self.history: list[dict[str, Any]] = []
        # running sums of the epoch in progress, saved with mid-epoch checkpoints so a resumed epoch logs the
        # same train loss as an uninterrupted one
        self.partial: dict[str, Any] = {"loss_sum": 0.0, "seen": 0, "rate_sum": None, "eta": float("nan")}
        self.stop_requested = False
        self.stop_code = 130  # the exit status of a requested stop: 130 Ctrl-C, 143 SIGTERM
        # save_on_signal requests: counted by the handler, acted on by the loop (no flag is lost to a race)
        self.save_signals = 0
        self._saves_done = 0
        if ckpt is not None:
            self._load_state(ckpt)

    # ------------------------------------------------------------------ checkpoints
    def _resume_checkpoint(self, cfg: Config, resume: str | None) -> dict | None:
        """The checkpoint to continue (None: a new run), after checking that the folder is this run's to write."""
        last = self.out / "last.pt"
        found = run_files(self.out)
        listed = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
        if resume is None:
            if last.exists():
                raise TrainingError(f"{self.out} already holds a run (last.pt); resume it with --resume auto "
                                    "or choose another --out")
            if found == ["config.yaml"]:
                raise TrainingError(f"{self.out} already holds config.yaml but no checkpoint (a run stopped before "
                                    "its first save?); restart that run with --resume auto, or choose another "
                                    "--out")
            if found:
                raise TrainingError(f"{self.out} already holds {listed} (not a run this command wrote); choose "
                                    "another --out (nothing was changed)")
            return None
        if resume == "auto":
            if last.exists():
                path = last
            elif not found:
                return None
            elif found == ["config.yaml"] and self._same_run(cfg):
                return None  # the same run, stopped before its first checkpoint: start it again
            else:
                raise TrainingError(f"{self.out} holds {listed} but no last.pt: there is no run of this config to "
                                    "resume there; choose another --out (nothing was changed)")
        else:
            path = Path(resume)
            if found and not _inside(path, self.out):
                raise TrainingError(f"{self.out} holds another run ({listed}); continuing {path} there would "
                                    f"overwrite it: choose a new --out, or --resume auto to continue {self.out}'s "
                                    "own run (nothing was changed)")
        ckpt = read_checkpoint(path)
        lacking = [k for k in ("model", "optimizer", "epoch", "batch", "step", "best_val_mse", "history", "rng")
                   if k not in ckpt]
        if lacking:
            raise TrainingError(f"checkpoint {str(path)!r} holds no training state (no {', '.join(lacking)}): "
                                "it can be evaluated or used to predict, not resumed")
        return ckpt

    def _same_run(self, cfg: Config) -> bool:
        """Whether the folder's config.yaml describes the run ``cfg`` describes (the keys a resume may change
        aside)."""
        try:
            saved = load_config(self.out / "config.yaml").to_dict()
        except StcsnnError:
            return False
        now = cfg.to_dict()
        return all(saved.get(k) == v for k, v in now.items() if k not in RESUMABLE_CHANGES and k != "frame_shape")

    def _state(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "config": self.cfg.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "step": self.step, "best_val_mse": self.best_val,
            "history": self.history, "partial": self.partial,
            "rng": {"torch": torch.get_rng_state(), "mask": self.mask_rng.get_state()},
            "scaler": self.scaler.state_dict() if self.scaler else None,
        }

    def _load_state(self, ckpt: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError) as exc:  # mismatched keys or shapes
            raise TrainingError(f"cannot resume from this checkpoint, its weights do not fit its config: "
                                f"{' '.join(str(exc).split())[:300]}") from None
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        self.best_val = ckpt["best_val_mse"]
        self.history = list(ckpt["history"])
        self.partial = dict(ckpt.get("partial") or self.partial)
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.mask_rng.set_state(ckpt["rng"]["mask"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

    def save(self, name: str = "last.pt") -> None:
        if self.rt.main:
            atomic_torch_save(self._state(), self.out / name)
            self.written.add(name)

    def _write_csv(self) -> None:
        if not self.history:
            return
        buf = io.StringIO()
        fields = list(self.history[-1].keys())
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.out / "metrics.csv", buf.getvalue())
        self.written.add("metrics.csv")

    def discard_unsaved(self) -> list[str]:
        """After a failure: if the folder holds no checkpoint, remove the config.yaml / metrics.csv this trainer
        wrote, so that a run that never saved leaves no half run behind (nor blocks the next start)."""
        if any(self.out.glob("*.pt")):
            return []
        removed = []
        for name in sorted(self.written & {"config.yaml", "metrics.csv"}):
            try:
                (self.out / name).unlink()
                removed.append(name)
            except OSError:
                pass
        return removed

    def _last_checkpoint_note(self) -> str:
        """What is true of last.pt right now, for a message about a run that stopped without saving."""
        last = self.out / "last.pt"
        if not last.exists():
            return f"no checkpoint was written yet ({last} does not exist)"
        try:
            ckpt = read_checkpoint(last)
            return f"the last good checkpoint {last} (step {ckpt['step']}) is untouched"
        except (StcsnnError, KeyError):
            return f"{last} is untouched"

    # ------------------------------------------------------------------ training
    def _on_sigint(self, signum, frame) -> None:
        if self.stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._request_stop(130, "interrupt: finishing this step, saving last.pt (Ctrl-C again to abort)")

    def _on_sigterm(self, signum, frame) -> None:
        # a repeated SIGTERM changes nothing: the save is under way (a supervisor that cannot wait sends SIGKILL)
        if not self.stop_requested:
            self._request_stop(143, "SIGTERM: finishing this step, saving last.pt")

    def _request_stop(self, code: int, text: str) -> None:
        self.stop_requested = True
        self.stop_code = code
        if self.rt.main:
            _notice(text)

    def _on_save_signal(self, signum, frame) -> None:
        self.save_signals += 1

    def _stop_flags(self) -> list[float]:
        return [float(self.stop_requested), float(self.stop_requested and self.stop_code == 143)]

    def _agree_stop(self, reduced: list[float]) -> bool:
        """Whether any rank was asked to stop, from the reduced ``_stop_flags``; a SIGTERM anywhere makes every
        rank's exit status 143."""
        if reduced[1] > 0:
            self.stop_code = 143
        if reduced[0] > 0:
            self.stop_requested = True
        return reduced[0] > 0

    def _stop_at_epoch_end(self) -> bool:
        """A stop requested on any rank (one small all-reduce under DDP), so that every rank takes the same
        branch."""
        if not self.rt.distributed:
            return self.stop_requested
        import torch.distributed as dist

        t = torch.tensor(self._stop_flags(), device=self.rt.device)
        dist.all_reduce(t)
        return self._agree_stop(t.tolist())

    def _saved_on_signal(self, progress: Progress) -> None:
        if self.rt.main and self.save_signal is not None:
            print(("\n" if progress.tty else "") + f"{self.save_signal.name}: saved {self.out / 'last.pt'} at "
                  f"{self._position()}; training goes on", file=sys.stderr, flush=True)

    def _position(self) -> str:
        if self.batch == 0 and self.epoch > 0:
            return f"the end of epoch {self.epoch}, step {self.step}"
        return f"epoch {self.epoch + 1}, step {self.step}"

    def fit(self) -> int:
        """Train to ``cfg.epochs``, then write the test report. Returns an exit code (130 when interrupted by
        Ctrl-C, 143 by SIGTERM; last.pt then holds the step reached)."""
        cfg, rt = self.cfg, self.rt
        if rt.main:
            dump_config(cfg, self.out / "config.yaml")
            self.written.add("config.yaml")
        handlers = {signal.SIGINT: self._on_sigint, signal.SIGTERM: self._on_sigterm}
        if self.save_signal is not None:
            handlers[self.save_signal] = self._on_save_signal
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()} if _main_thread() else {}
        try:
            interrupted = self._train_epochs()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if interrupted:
            if rt.main:
                print(f"saved {self.out / 'last.pt'} at {self._position()}; "
                      f"resume with: stcsnn train --out {self.out} --resume auto", file=sys.stderr)
            return self.stop_code
        if rt.main:
            self.test_report()
        if rt.distributed:
            import torch.distributed as dist

            dist.barrier()
        return 0

    def _train_epochs(self) -> bool:
        cfg, rt = self.cfg, self.rt
        train_set = self.splits["train"]
        per_rank = cfg.batch_size // rt.world
        progress = Progress(self.progress_enabled and rt.main, cfg.log_every)
        n_batches = len(epoch_batches(len(train_set), cfg.batch_size, 0, cfg.seed, cfg.steps_per_epoch))
        if n_batches == 0:
            raise ConfigError(f"the {cfg.dataset!r} training split has {len(train_set)} sequences, fewer than "
                              f"one batch of {cfg.batch_size}")
        total_steps = n_batches * cfg.epochs
        progress_start = self.step
        progress.start = time.time()
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp or "")
        while self.epoch < cfg.epochs:
            t0 = time.time()
            lr = learning_rate(cfg, self.epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(self.epoch)
            batches = epoch_batches(len(train_set), cfg.batch_size, self.epoch, cfg.seed, cfg.steps_per_epoch)
            mine = [b[rt.rank * per_rank:(rt.rank + 1) * per_rank] for b in batches[self.batch:]]
            loader = DataLoader(train_set, batch_sampler=mine, num_workers=cfg.num_workers)
            part = self.partial
            for inputs, targets in loader:
                frames = torch.cat([inputs, targets], 1).to(rt.device, non_blocking=True)
                mask, part["eta"] = sampling_mask(cfg, self.step + 1, cfg.batch_size, self.mask_rng)
                if mask is not None:
                    mask = mask[rt.rank * per_rank:(rt.rank + 1) * per_rank].to(rt.device)
                autocast = (torch.autocast(rt.device.type, dtype=amp_dtype) if amp_dtype else nullcontext())
                with autocast:
                    loss, rates = self.objective(frames, mask)
                global_loss = loss.detach().float()
                saves = self.save_signals  # requests up to now are served at the end of this step
                if rt.distributed:
                    import torch.distributed as dist

                    # stop and save requests travel with the loss: a signal reaches the ranks at different
                    # moments, and a rank acting alone would leave the others waiting in the next reduction
                    flags = [*self._stop_flags(), float(saves > self._saves_done)]
                    packed = torch.cat([global_loss.reshape(1), global_loss.new_tensor(flags)])
                    dist.all_reduce(packed)
                    global_loss = packed[0] / rt.world
                    reduced = packed[1:].tolist()
                    stop_now, save_now = self._agree_stop(reduced[:2]), reduced[2] > 0
                if not torch.isfinite(global_loss):
                    raise TrainingError(
                        f"loss became {global_loss.item()} at epoch {self.epoch + 1}, step {self.step + 1}; "
                        f"stopped without saving: {self._last_checkpoint_note()} "
                        "(lower lr, set grad_clip, or use amp: null)")
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.optimizer)
                else:
                    loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                if self.scaler:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.step += 1
                self.batch += 1
                part["seen"] += 1
                part["loss_sum"] += global_loss.item()
                r = rates.detach().cpu()
                part["rate_sum"] = r if part["rate_sum"] is None else part["rate_sum"] + r
                progress.update(self.epoch, cfg.epochs, self.batch - 1, len(batches), self.step - progress_start,
                                total_steps - progress_start, loss=global_loss.item(), eta=part["eta"], lr=lr)
                saved = bool(cfg.save_every_steps) and self.step % cfg.save_every_steps == 0
                if saved:
                    self.save()
                if not rt.distributed:  # read after the step, so a request during it is served now
                    saves = self.save_signals
                    stop_now, save_now = self.stop_requested, saves > self._saves_done
                if stop_now:
                    self.save()
                    return True
                if save_now:
                    if not saved:
                        self.save()
                    self._saves_done = saves
                    self._saved_on_signal(progress)
            seen, eta = max(part["seen"], 1), part["eta"]
            train_loss = part["loss_sum"] / seen
            rates = (part["rate_sum"] / seen).tolist() if part["rate_sum"] is not None else []
            self.partial = {"loss_sum": 0.0, "seen": 0, "rate_sum": None, "eta": float("nan")}
            self.epoch, self.batch = self.epoch + 1, 0
            row: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "train_loss": train_loss}
            if rt.main and (self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs):
                results, _ = evaluate(self.model, self.splits["val"], cfg, rt.device, cfg.max_val_batches)
                row.update({f"val_{k}": results[k] for k in ("mse", "mae", "ssim", "psnr")})
                if results["mse"] < self.best_val:
                    self.best_val = results["mse"]
                    atomic_torch_save(self._state(), self.out / "best.pt")
            row.update({"lr": lr, "eta": eta})
            row.update({f"rate_l{i}": r for i, r in enumerate(rates)})
            row["seconds"] = time.time() - t0
            self.history.append(row)
            saves = self.save_signals
            if rt.main:
                self._write_csv()
                self.save()
                val = f" val_mse {row['val_mse']:.3f} val_ssim {row['val_ssim']:.4f}" if "val_mse" in row else ""
                progress.end_epoch(f"epoch {self.epoch}/{cfg.epochs} train_loss {train_loss:.5f}{val} "
                                   f"lr {lr:.2e} eta {eta:.3f} ({row['seconds']:.1f}s)")
            if saves > self._saves_done:  # requests made since the last step: this last.pt serves them
                self._saves_done = saves
                self._saved_on_signal(progress)
            if self._stop_at_epoch_end():
                return True
        return False

    def test_report(self) -> list[Path]:
        """Evaluate ``best.pt`` (or the final weights if no validation ran) on the test split."""
        cfg = self.cfg
        best = self.out / "best.pt"
        name = "last.pt"
        if best.exists():
            self.model.load_state_dict(read_checkpoint(best)["model"])
            name = "best.pt"
        results, samples = evaluate(self.model, self.splits["test"], cfg, self.rt.device, cfg.max_test_batches,
                                    keep=cfg.num_visualize)
        meta = {"split": "test", "checkpoint": str(self.out / name), "dataset": cfg.dataset, "neuron": cfg.neuron,
                "num_samples": results["num_samples"], "split_samples": len(self.splits["test"]),
                "input_frames": cfg.input_frames, "output_frames": cfg.output_frames}
        paths = write_report(self.out, results, meta, samples)
        m = results
        print(f"test ({name}): MSE {m['mse']:.4f}  MAE {m['mae']:.4f}  SSIM {m['ssim']:.4f}  PSNR {m['psnr']:.3f}")
        print("wrote " + ", ".join(str(p) for p in paths))
        return paths


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _notice(text: str) -> None:
    """A line on stderr from a signal handler: a raw write, since the handler may interrupt a print() of the
    progress bar (re-entering a buffered stream raises RuntimeError)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stderr (tests) has no file descriptor
        print("\n" + text, file=sys.stderr, flush=True)
        return
    try:
        os.write(fd, ("\n" + text + "\n").encode())
    except OSError:
        pass


class _Terminated(Exception):
    """SIGTERM outside the training steps (data loading, the test report)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Outside the steps, SIGTERM ends the command at once but as an exception, so that the lock is released and
    a new run that never saved is cleaned up (its default action would kill the process with neither)."""
    if not _main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def train(cfg: Config, out_dir: str | os.PathLike, resume: str | None = None, progress: bool = True) -> int:
    """Python entry point of ``stcsnn train``. Holds ``out_dir``'s :class:`~stcsnn.io.RunLock` for the whole run
    (rank 0 only under DDP) and, holding it, removes the temporary files an earlier crash left there. Returns an
    exit code: 0 done, 130 stopped by Ctrl-C, 143 by SIGTERM (resumable from last.pt)."""
    out = Path(out_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        with _sigterm_raises(), (RunLock(out, "stcsnn train") if main else nullcontext()):
            trainer = Trainer(cfg, out, resume, progress)
            if main:
                remove_stale_temporaries(out)
            try:
                return trainer.fit()
            except BaseException:
                if main:
                    trainer.discard_unsaved()
                raise
    except _Terminated:
        last = out / "last.pt"
        then = (f"resume with: stcsnn train --out {out} --resume auto" if last.exists()
                else "nothing was saved")
        print(f"SIGTERM: stopped outside a training step; {then}", file=sys.stderr)
        return 143
