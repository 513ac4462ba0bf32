"""The training loop: one loop for CPU, one GPU and many GPUs (DDP under torchrun, :mod:`stcsnn.train.runtime`).

Every rank builds the same model from the same seed, draws the same global batch order and the same
scheduled-sampling mask, and takes its own contiguous slice of each global batch (``batch_size`` is the *global*
batch and must divide by the number of processes). Gradients are averaged by DDP, so N processes follow the same
trajectory as one process with the same global batch. Rank 0 alone logs, validates and writes files.

Run directory: ``config.yaml`` (resolved, with the records ``threads`` and ``world_size``), ``metrics.csv`` (one
row per epoch), ``steps.csv`` (one row per optimizer step, :mod:`stcsnn.train.progress`), ``last.pt`` (everything
needed to resume bit for bit), ``best.pt`` (best validation :data:`SELECTION_METRIC`, never chosen on the test
split), ``tensorboard/`` (with ``tensorboard: true``), and at the end ``report.json``, ``report.md`` and
``predictions.png`` for the test split. Those records and the lines about them: :mod:`stcsnn.train.records`. The
metrics validated and reported are the config key ``metrics`` (default: the reported set of the metric table,
:mod:`stcsnn.metrics`). ``--resume`` of a complete run (every epoch trained, report.json written) does nothing and
says so (:class:`RunComplete`).

A run folder belongs to one run. :func:`train` holds its :class:`~stcsnn.io.RunLock` for the whole run (rank 0
only under DDP), so a second command into the same folder is refused while the first runs. What a run may find in
its folder, what it resumes and what a failed run removes again are the rules of :mod:`stcsnn.runs`; nothing is
written before its checks pass.
Signals (Ctrl-C, SIGTERM, ``save_on_signal``): :mod:`stcsnn.train.signals`.

One step of :meth:`Trainer._train_epochs`: the objective (:class:`~stcsnn.train.objective.RolloutLoss`) under the
run's autocast, then ``scaler.scale(loss).backward()``, gradient clipping, ``scaler.step``: the scaler is a
pass-through except for fp16 on CUDA (:func:`stcsnn.device.grad_scaler`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Collection
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from stcsnn import runs
from stcsnn.config import Config, check_memory
from stcsnn.data import build_splits, resolve_frame_shape
from stcsnn.device import autocast, grad_scaler, slow_bf16_note
from stcsnn.errors import ConfigError
from stcsnn.io import RunLock, WriteError, atomic_torch_save, remove_stale_temporaries
from stcsnn.metrics import metric_line
from stcsnn.models import build_model, meta_parameters
from stcsnn.models.checkpoint import check_training, lacking_training_keys, read_checkpoint, training_checkpoint
from stcsnn.runs import RESUMABLE_CHANGES, RUN_FILES, TrainingError, run_files  # re-exported
from stcsnn.threads import ThreadChoice, ThreadTuner, usable_cpus
from stcsnn.train.evaluate import evaluate_model, run_metrics, write_report
from stcsnn.train.objective import RolloutLoss
from stcsnn.train.progress import Progress, summary_writer_class
from stcsnn.train.records import Records, p_true, position
from stcsnn.train.runtime import Runtime, all_reduce, barrier, close_runtime, is_main_process, setup_runtime
from stcsnn.train.schedule import learning_rate, sampling_mask
from stcsnn.train.signals import Requests, Terminated, save_signal, sigterm_raises

__all__ = ["RESUMABLE_CHANGES", "RUN_FILES", "SELECTION_METRIC", "RolloutLoss", "RunComplete", "Runtime", "Trainer",
           "TrainingError", "epoch_batches", "run_files", "save_signal", "setup_runtime", "train"]


#: The validation metric that chooses best.pt (the checkpoint key ``best_val_mse`` holds its best value); it is
#: computed at every validation whether or not the run's ``metrics`` list it.
SELECTION_METRIC = "mse"


def batches_per_epoch(n: int, batch: int, limit: int | None) -> int:
    """Full global batches of ``batch`` in ``n`` sequences, at most ``limit``."""
    count = n // batch
    return min(count, limit) if limit else count


def epoch_batches(n: int, batch: int, epoch: int, seed: int, limit: int | None) -> list[list[int]]:
    """The global batches of one epoch: a permutation seeded by (seed, epoch), cut into full batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i * batch:(i + 1) * batch] for i in range(batches_per_epoch(n, batch, limit))]


def _fresh_partial() -> dict[str, Any]:
    return {"loss_sum": 0.0, "seen": 0, "rate_sum": None, "eta": float("nan")}


class RunComplete(Exception):
    """``--resume`` of a run that has nothing left to do (every epoch trained, its report written)."""


class Trainer:
    """One run: ``Trainer(cfg, out_dir, resume).fit()`` (use :func:`train`, which also locks the folder).

    ``thread_choice``: how the CPU thread count was chosen (``stcsnn.threads.set_threads``; printed once when
    training starts). An automatic choice is made once, at the start; it is re-timed during training
    (:class:`~stcsnn.threads.ThreadTuner`, not under DDP) only with the config key ``retune_threads`` and
    ``tune_threads`` (the caller's word that the count is automatic, not the user's). The count the run starts
    with is recorded as the config key ``threads`` (config.yaml, the checkpoints, report.json), which a resume
    restores unless the count was given explicitly (``--threads N``, ``OMP_NUM_THREADS``)."""

    def __init__(self, cfg: Config, out_dir: str | os.PathLike, resume: str | None = None, progress: bool = True,
                 tune_threads: bool = False, thread_choice: ThreadChoice | None = None,
                 given: Collection[str] | None = None, loaded: tuple[Path, dict] | None = None) -> None:
        self.out = Path(out_dir)
        self.progress_enabled = progress
        self.resumed_from, ckpt = _resume_checkpoint(self.out, cfg, resume, loaded)
        if ckpt is not None:
            cfg = runs.resumed_config(self.out, cfg, ckpt["config"], given)
            _refuse_complete(self.out, cfg, ckpt)
        self.save_signal = save_signal(cfg)
        if cfg.tensorboard:
            summary_writer_class()  # a missing extra is one error line before any work
        check_memory(cfg)  # one training step must fit, before anything is built (again once the data gives
        self.rt = setup_runtime(cfg)  # the frame shape, where the config has none)
        threads, self.thread_note = _run_threads(cfg, thread_choice, ckpt)
        self.splits = build_splits(cfg)
        cfg = resolve_frame_shape(cfg, self.splits["train"])
        self.cfg = cfg = dataclasses.replace(cfg, threads=threads, world_size=self.rt.world)
        check_memory(cfg, params=meta_parameters(cfg, tuple(cfg.frame_shape)))  # exact, now that the shape is known
        self.n_batches = batches_per_epoch(len(self.splits["train"]), cfg.batch_size, cfg.steps_per_epoch)
        if self.n_batches == 0:
            raise ConfigError(f"the {cfg.dataset!r} training split has {len(self.splits['train'])} sequences, "
                              f"fewer than one batch of {cfg.batch_size}")
        self.metrics = run_metrics(cfg)
        self._build(cfg)
        self.epoch, self.batch, self.step = 0, 0, 0
        self.best_val = math.inf
        self.history: list[dict[str, Any]] = []
        # running sums of the epoch in progress, saved with mid-epoch checkpoints so a resumed epoch logs the
        # same train loss as an uninterrupted one
        self.partial: dict[str, Any] = _fresh_partial()
        self.requests = Requests(announce=self.rt.main)
        retune = tune_threads and cfg.retune_threads and not self.rt.distributed
        self.tuner = ThreadTuner(threads, usable_cpus(), every=500, probe=5) if retune else None
        self.records = Records(self.out, cfg, self.metrics, self.rt.main)
        self.lr, self.last_loss, self.grad_norm, self.epoch_start = cfg.lr, math.nan, math.nan, time.time()
        if ckpt is not None:
            self._load_state(ckpt)

    def _build(self, cfg: Config) -> None:
        """Model, objective (DDP-wrapped when distributed), optimizer, sampling generator, autocast, scaler."""
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(self.rt.device)
        if cfg.compile:
            self.model.compile_updates()
        self.objective: nn.Module = RolloutLoss(self.model, cfg)
        if self.rt.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.mask_rng = torch.Generator().manual_seed(cfg.seed)
        self.autocast = autocast(self.rt.device, cfg.amp)
        self.scaler = grad_scaler(self.rt.device, cfg.amp)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return training_checkpoint(
            self.cfg, self.model.state_dict(), optimizer=self.optimizer.state_dict(), epoch=self.epoch,
            batch=self.batch, step=self.step, best_val_mse=self.best_val, history=self.history, partial=self.partial,
            rng={"torch": torch.get_rng_state(), "mask": self.mask_rng.get_state()},
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
        )

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
        if self.scaler.is_enabled() and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

    def save(self, name: str = "last.pt") -> None:
        """Write ``name`` with the current state (rank 0); the step records are flushed first, so that every step
        up to a checkpoint's is on disk whenever the checkpoint is."""
        if self.rt.main:
            self.records.flush()
            atomic_torch_save(self._state(), self.out / name)
            self.records.written.add(name)

    # ------------------------------------------------------------------ training
    def fit(self) -> int:
        """Train to ``cfg.epochs``, then write the test report. Returns an exit code (130 when interrupted by
        Ctrl-C, 143 by SIGTERM; last.pt then holds the step reached)."""
        rt = self.rt
        if rt.main:
            self.records.open(self.cfg, self.step, self.resumed_from)
        try:
            with self.requests.installed(self.save_signal):
                interrupted = self._train_epochs()
        finally:
            if self.records.board is not None:
                self.records.board.close()
        if interrupted:
            if rt.main:
                print(f"saved {self.out / 'last.pt'} at {position(self.epoch, self.batch, self.step)}; "
                      f"resume with: stcsnn train --out {self.out} --resume auto", file=sys.stderr)
            return self.requests.code
        if rt.main:
            self.test_report()
        if rt.distributed:
            barrier()
        return 0

    def _train_epochs(self) -> bool:
        """Train to the last epoch; True when stopped by a signal (last.pt saved)."""
        progress = self._begin_run()
        try:
            while self.epoch < self.cfg.epochs:
                loader = self._begin_epoch()
                tick = time.perf_counter()
                for inputs, targets in loader:
                    agreed = self._train_step(inputs, targets)
                    if self._after_step(agreed, time.perf_counter() - tick, progress):
                        return True
                    tick = time.perf_counter()
                if self._end_epoch(progress):
                    return True
            return False
        finally:
            progress.close()

    def _begin_run(self) -> Progress:
        """The start lines (the thread count and why; the processes of a distributed run) and the display."""
        show = self.progress_enabled and self.rt.main
        if show and self.thread_note:
            print(f"threads: {self.cfg.threads} ({self.thread_note})", file=sys.stderr, flush=True)
        if self.rt.main and (note := slow_bf16_note(self.rt.device, self.cfg.amp)):  # runs anyway, slowly
            print(note, file=sys.stderr, flush=True)
        if show and self.rt.distributed:
            print(f"training on {self.rt.world} processes (DDP, {self.rt.backend})", file=sys.stderr, flush=True)
        return Progress(show, self.cfg.log_every, self.n_batches * self.cfg.epochs, self.step)

    def _begin_epoch(self) -> DataLoader:
        """The epoch's learning rate, and a loader of this rank's rows of the epoch's remaining batches."""
        cfg, train_set = self.cfg, self.splits["train"]
        self.epoch_start = time.time()
        self.lr = learning_rate(cfg, self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(self.epoch)
        batches = epoch_batches(len(train_set), cfg.batch_size, self.epoch, cfg.seed, cfg.steps_per_epoch)
        rows = self.rt.rows(cfg.batch_size)
        return DataLoader(train_set, batch_sampler=[b[rows] for b in batches[self.batch:]],
                          num_workers=cfg.num_workers, pin_memory=self.rt.device.type == "cuda")

    def _train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[bool, bool, int] | None:
        """One optimizer step on a batch. Returns the stop / save requests agreed by all ranks (DDP), or None
        (one process: they are read after the step)."""
        cfg, rt = self.cfg, self.rt
        frames = torch.cat([inputs, targets], 1).to(rt.device, non_blocking=True)
        mask, self.partial["eta"] = sampling_mask(cfg, self.step + 1, cfg.batch_size, self.mask_rng)
        if mask is not None:
            mask = mask[rt.rows(cfg.batch_size)].to(rt.device)
        with self.autocast:
            loss, rates = self.objective(frames, mask)
        global_loss, agreed = self._reduce(loss.detach())  # float32, or float64 for a dtype: float64 model
        if not torch.isfinite(global_loss):
            raise TrainingError(f"loss became {global_loss.item()} at epoch {self.epoch + 1}, step {self.step + 1}; "
                                f"stopped without saving: {self.records.last_checkpoint_note()} "
                                "(lower lr, set grad_clip, or use amp: null)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        # the global gradient norm before clipping, recorded in steps.csv (DDP: of the averaged gradient, the same
        # on every rank); clip_grad_norm_ computes it anyway, get_total_norm alone where nothing is clipped
        params = [p for p in self.model.parameters() if p.grad is not None]
        if cfg.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.grad_norm = float(norm)
        self._count(global_loss.item(), rates.detach().cpu())
        return agreed

    def _reduce(self, loss: torch.Tensor) -> tuple[torch.Tensor, tuple[bool, bool, int] | None]:
        """The loss averaged over the ranks and, under DDP, the agreed (stop, save, saves) requests: they travel
        with the loss, since a signal reaches the ranks at different moments and a rank acting alone would leave
        the others waiting in the next reduction."""
        if not self.rt.distributed:
            return loss, None
        req = self.requests
        saves = req.saves  # requests up to now are served at the end of this step
        flags = [*req.flags(), float(saves > req.saves_done)]
        packed = all_reduce(torch.cat([loss.reshape(1), loss.new_tensor(flags)]))
        reduced = packed[1:].tolist()
        return packed[0] / self.rt.world, (req.agree(reduced[:2]), reduced[2] > 0, saves)

    def _count(self, loss: float, rates: torch.Tensor) -> None:
        self.step += 1
        self.batch += 1
        self.last_loss = loss
        part = self.partial
        part["seen"] += 1
        part["loss_sum"] += loss
        part["rate_sum"] = rates if part["rate_sum"] is None else part["rate_sum"] + rates

    def _after_step(self, agreed: tuple[bool, bool, int] | None, seconds: float, progress: Progress) -> bool:
        """Record the step (steps.csv, TensorBoard, the opt-in thread re-check, the display), write the checkpoints
        it is due, serve signal requests; True: stop (saved)."""
        p = p_true(self.cfg, self.partial["eta"])
        self.records.step(self.step, self.epoch + 1, self.last_loss, self.lr, p, seconds, torch.get_num_threads(),
                          self.grad_norm)
        if self.tuner is not None:
            before = self.tuner.threads
            self.tuner.step(seconds)
            if self.tuner.threads != before and not self.tuner.trials:
                progress.write(f"threads: {self.tuner.threads} (re-checked by timing at step {self.step})")
        progress.update(self.epoch, self.cfg.epochs, self.batch - 1, self.n_batches, loss=self.last_loss,
                        lr=self.lr, p_true=p)
        saved = bool(self.cfg.save_every_steps) and self.step % self.cfg.save_every_steps == 0
        if saved:
            self.save()
        if agreed is None:  # read after the step, so a request during it is served now
            saves = self.requests.saves
            agreed = (self.requests.stop, saves > self.requests.saves_done, saves)
        stop_now, save_now, saves = agreed
        if stop_now:
            self.save()
            return True
        if save_now:
            if not saved:
                self.save()
            self.requests.saves_done = saves
            if self.rt.main and self.save_signal is not None:
                self.records.saved_on_signal(progress, self.save_signal.name,
                                             position(self.epoch, self.batch, self.step))
        return False

    def _end_epoch(self, progress: Progress) -> bool:
        """Validate, log and save at the end of an epoch; True: stop (saved)."""
        cfg, rt = self.cfg, self.rt
        train_loss, rates, eta = self._close_epoch()
        row: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "train_loss": train_loss}
        samples = None
        if rt.main and (self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs):
            samples = self._validate(row)
        row.update({"lr": self.lr, "eta": eta, "p_true": p_true(cfg, eta)})
        row.update({f"rate_l{i}": r for i, r in enumerate(rates)})
        row["seconds"] = time.time() - self.epoch_start
        self.history.append(row)
        saves = self.requests.saves
        if rt.main:
            self.records.epoch(self.history, samples)
            self.save()
            progress.write(self.records.summary(row))
        if saves > self.requests.saves_done:  # requests made since the last step: this last.pt serves them
            self.requests.saves_done = saves
            if rt.main and self.save_signal is not None:
                self.records.saved_on_signal(progress, self.save_signal.name,
                                             position(self.epoch, self.batch, self.step))
        return self._stop_at_epoch_end()

    def _close_epoch(self) -> tuple[float, list[float], float]:
        """(train loss, firing rate per layer, last eta) of the epoch just trained; the counters move on."""
        part = self.partial
        seen = max(part["seen"], 1)
        rates = (part["rate_sum"] / seen).tolist() if part["rate_sum"] is not None else []
        self.partial = _fresh_partial()
        self.epoch, self.batch = self.epoch + 1, 0
        return part["loss_sum"] / seen, rates, part["eta"]

    def _validate(self, row: dict[str, Any]) -> dict[str, Any]:
        """The run's validation metrics into ``row`` (``val_<name>``); best.pt when the :data:`SELECTION_METRIC`
        is the best so far. Returns the first samples (for TensorBoard's picture: none are kept without it)."""
        cfg = self.cfg
        keep = cfg.num_visualize if self.records.board is not None else 0
        names = self.metrics if SELECTION_METRIC in self.metrics else (*self.metrics, SELECTION_METRIC)
        results, samples = evaluate_model(self.model, self.splits["val"], cfg, self.rt.device, cfg.max_val_batches,
                                          keep=keep, metrics=names)
        row.update({f"val_{k}": results[k] for k in self.metrics})
        if results[SELECTION_METRIC] < self.best_val:
            self.best_val = results[SELECTION_METRIC]
            self.save("best.pt")
        return samples

    def _stop_at_epoch_end(self) -> bool:
        """A stop requested on any rank (one small all-reduce under DDP), so that every rank takes the same
        branch."""
        if not self.rt.distributed:
            return self.requests.stop
        reduced = all_reduce(torch.tensor(self.requests.flags(), device=self.rt.device))
        return self.requests.agree(reduced.tolist())

    def test_report(self) -> list[Path]:
        """Evaluate ``best.pt`` (or the final weights if no validation ran) on the test split."""
        cfg = self.cfg
        best = self.out / "best.pt"
        name = "last.pt"
        if best.exists():
            self.model.load_state_dict(read_checkpoint(best)["model"])
            name = "best.pt"
        results, samples = evaluate_model(self.model, self.splits["test"], cfg, self.rt.device, cfg.max_test_batches,
                                          keep=cfg.num_visualize, metrics=self.metrics)
        used = self.out / name
        sha = runs.file_sha256(used) if used.is_file() else None
        meta = {"split": "test", "checkpoint": str(used), runs.SHA_KEY: sha,
                "dataset": cfg.dataset, "neuron": cfg.neuron,
                "num_samples": results["num_samples"], "split_samples": len(self.splits["test"]),
                "input_frames": cfg.input_frames, "output_frames": cfg.output_frames,
                "world_size": cfg.world_size, "threads": cfg.threads}
        paths = write_report(self.out, results, meta, samples)
        print(f"test ({name}): {metric_line(results, self.metrics)}")
        print("wrote " + ", ".join(str(p) for p in paths))
        return paths


def _resume_checkpoint(out: Path, cfg: Config, resume: str | None, loaded: tuple[Path, dict] | None = None
                       ) -> tuple[Path | None, dict | None]:
    """(path, checkpoint) of the run to continue ((None, None): a new run), after checking that the folder is this
    run's to write. ``loaded``: ``(path, checkpoint)`` the caller already read (``stcsnn train --resume`` without
    ``--config`` reads the checkpoint for its config): used when it is the file to continue, not read again."""
    path = runs.resume_path(out, cfg, resume)
    if path is None:
        return None, None
    same = loaded is not None and os.path.realpath(loaded[0]) == os.path.realpath(path)
    ckpt = loaded[1] if same else read_checkpoint(path)
    lacking = lacking_training_keys(ckpt)
    if lacking:
        raise TrainingError(f"checkpoint {str(path)!r} holds no training state (no {', '.join(lacking)}): "
                            "it can be evaluated or used to predict, not resumed")
    check_training(ckpt, str(path))  # every entry, before any is used (even to say the run is complete)
    return path, ckpt


def _refuse_complete(out: Path, cfg: Config, ckpt: dict[str, Any]) -> None:
    """A run whose checkpoint is at the end of its last epoch and whose report is written has nothing to do:
    :class:`RunComplete` before anything is read or written (re-evaluating would rewrite the report)."""
    epoch = ckpt.get("epoch")
    if (isinstance(epoch, int) and epoch >= cfg.epochs and ckpt.get("batch") == 0
            and (out / "report.json").is_file()):
        raise RunComplete(f"{out} is complete (epoch {epoch} of {cfg.epochs}, report.json written); nothing to "
                          f"do -- use --set epochs=M (M > {epoch}) to extend it")


def _run_threads(cfg: Config, choice: ThreadChoice | None, ckpt: dict[str, Any] | None) -> tuple[int, str]:
    """The CPU thread count of the run, applied, and what the start line says of it ("" for nothing to say).

    An explicit count (``--threads N``, ``OMP_NUM_THREADS``) wins; then the config key ``threads`` where it names a
    count (a new run's config, ``--set threads=N`` on resume); then a resumed run restores the count its
    checkpoint records; else the automatic choice made when the command started stays."""
    explicit = choice is not None and not choice.auto
    saved = ckpt["config"].get("threads") if ckpt is not None else None
    now = torch.get_num_threads()
    if explicit:
        changed = f"; the run had used {saved}" if saved is not None and saved != now else ""
        return now, f"{choice.reason}{changed}"
    # the config's key where it says something new (a new run's config, --set threads=N on resume), else the record
    wanted, what = cfg.threads, "config key threads"
    if ckpt is not None and (wanted is None or wanted == saved):
        wanted, what = saved, "restored: the count the run started with"
    if isinstance(wanted, int) and wanted >= 1:
        n = min(wanted, usable_cpus())
        torch.set_num_threads(n)
        capped = f", capped at the {n} usable CPU(s)" if n < wanted else ""
        return n, f"{what}{capped}"
    return now, choice.reason if choice is not None else ""


def train(cfg: Config, out_dir: str | os.PathLike, resume: str | None = None, progress: bool = True,
          tune_threads: bool = False, thread_choice: ThreadChoice | None = None,
          given: Collection[str] | None = None, loaded: tuple[Path, dict] | None = None) -> int:
    """Python entry point of ``stcsnn train``. Holds ``out_dir``'s :class:`~stcsnn.io.RunLock` for the whole run
    (rank 0 only under DDP) and, holding it, removes the temporary files an earlier crash left there. Returns an
    exit code: 0 done (or nothing to do: a complete run, one line says so and nothing is written), 130 stopped by
    Ctrl-C, 143 by SIGTERM (resumable from last.pt). ``tune_threads`` and ``thread_choice``: see :class:`Trainer`;
    ``given``: the config keys set explicitly on the command line
    (:func:`stcsnn.runs.resumed_config`); ``loaded``: ``(path, checkpoint)`` already read by the caller."""
    out = Path(out_dir)
    main = is_main_process()
    trainer: Trainer | None = None
    try:
        with sigterm_raises(), (RunLock(out, "stcsnn train") if main else nullcontext()):
            try:
                trainer = Trainer(cfg, out, resume, progress, tune_threads=tune_threads,
                                  thread_choice=thread_choice, given=given, loaded=loaded)
            except RunComplete as done:  # nothing read beyond the checkpoint, nothing written
                print(done)
                return 0
            if main:
                remove_stale_temporaries(out)
            try:
                code = trainer.fit()
            except BaseException as exc:
                if main:
                    _after_failure(trainer, exc)
                raise
            close_runtime(trainer.rt)
            return code
    except Terminated:
        last = out / "last.pt"
        then = (f"resume with: stcsnn train --out {out} --resume auto" if last.exists()
                else "nothing was saved")
        print(f"SIGTERM: stopped outside a training step; {then}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        if trainer is None or not main:
            raise
        # a second Ctrl-C: stopped at once, possibly inside a save (whose temporary file is gone again)
        print(f"interrupt: stopped at once (second Ctrl-C); {trainer.records.last_checkpoint_note()}",
              file=sys.stderr)
        return 130


def _after_failure(trainer: Trainer, exc: BaseException) -> None:
    """A run that stopped before its first last.pt removes what it wrote (:func:`stcsnn.runs.discard_unsaved`):
    the folder is again one that a new run or ``--resume auto`` takes. A failed write's message says so."""
    out, records = trainer.out, trainer.records
    removed = runs.discard_unsaved(out, records.written)
    if records.board is not None and not (out / "last.pt").exists():
        records.board.discard()
    if removed and isinstance(exc, WriteError):
        exc.args = (f"{exc}; the run had written no last.pt, so its {', '.join(removed)} were removed: run the "
                    "same command again to start it anew",)
