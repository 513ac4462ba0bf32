"""Per-step curves: steps.csv (one row per optimizer step, also after a crash and a resume), TensorBoard events
equal to the csv files, the missing-extra error, the tqdm bar's labels, and the thread re-check's hook.

Tiny in-process runs (STC-LIF, hidden 16, 32x32 frames, 3 -> 3 frames, 4 steps an epoch)."""

from __future__ import annotations

import builtins
import csv
import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY, tiny_cfg

import stcsnn.train.loop as loop
from stcsnn.cli import main
from stcsnn.errors import ConfigError, StcsnnError
from stcsnn.models.loading import read_checkpoint
from stcsnn.threads import ThreadChoice, usable_cpus
from stcsnn.train.loop import RolloutLoss, train
from stcsnn.train.progress import STEP_COLUMNS, StepLog, summary_writer_class
from stcsnn.train.schedule import learning_rate, sampling_eta


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Crash(BaseException):
    """A crash between two steps: nothing in the trainer handles it (as with SIGKILL, no checkpoint is written)."""


def crash_at_step(monkeypatch, at: int) -> None:
    real = RolloutLoss.forward
    calls = {"n": 0}

    def forward(self, frames, mask):
        calls["n"] += 1
        if calls["n"] == at:
            raise Crash
        return real(self, frames, mask)

    monkeypatch.setattr(RolloutLoss, "forward", forward)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path | int]:
    """An uninterrupted run, and the same run crashed during step 7 (last.pt from step 4) then resumed, both with
    TensorBoard on; also how many rows steps.csv held at the crash."""
    tmp = tmp_path_factory.mktemp("curves")
    cfg = tiny_cfg(tensorboard=True)
    assert train(tiny_cfg(), tmp / "ref", progress=False) == 0
    mp = pytest.MonkeyPatch()
    crash_at_step(mp, 7)
    try:
        with pytest.raises(Crash):
            train(cfg, tmp / "run", progress=False)
    finally:
        mp.undo()
    assert read_checkpoint(tmp / "run" / "last.pt")["step"] == 4
    rows_at_crash = len(read_csv(tmp / "run" / "steps.csv"))
    assert train(cfg, tmp / "run", resume="auto", progress=False) == 0
    return {"ref": tmp / "ref", "run": tmp / "run", "rows_at_crash": rows_at_crash}


# ----------------------------------------------------------------------------------------------- steps.csv

def test_steps_csv_has_one_row_per_step(runs):
    cfg = tiny_cfg()
    run = runs["run"]
    assert (run / "steps.csv").read_text().splitlines()[0] == ",".join(STEP_COLUMNS)
    rows = read_csv(run / "steps.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert [int(r["epoch"]) for r in rows] == [1] * 4 + [2] * 4
    for r in rows:
        step, epoch = int(r["step"]), int(r["epoch"])
        assert float(r["lr"]) == learning_rate(cfg, epoch - 1)
        assert float(r["p_true"]) == pytest.approx(sampling_eta(cfg, step), abs=1e-12)
        assert 0 < float(r["seconds"]) < 60 and math.isfinite(float(r["loss"]))
    # the per-epoch rows of metrics.csv are the means of these
    metrics = read_csv(run / "metrics.csv")
    for m in metrics:
        losses = [float(r["loss"]) for r in rows if r["epoch"] == m["epoch"]]
        assert sum(losses) / len(losses) == pytest.approx(float(m["train_loss"]), rel=1e-12)
        last = [r for r in rows if int(r["step"]) == int(m["step"])][0]
        assert float(m["p_true"]) == float(m["eta"]) == float(last["p_true"])


def test_rows_written_after_the_checkpoint_are_dropped_on_resume(runs):
    # the crash came after steps 5 and 6 were flushed: they were dropped and written again by the resumed run,
    # with the values of the uninterrupted run (bit for bit on the CPU)
    assert runs["rows_at_crash"] == 6
    ref, run = read_csv(runs["ref"] / "steps.csv"), read_csv(runs["run"] / "steps.csv")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in ref]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in run]


def test_step_log_keeps_only_the_rows_of_the_checkpoint(tmp_path):
    path = tmp_path / "steps.csv"
    header = ",".join(STEP_COLUMNS) + "\n"
    rows = [f"{i},1,0.5,0.001,0.9,0.01,1,2.5\n" for i in range(1, 6)]
    path.write_text(header + "".join(rows) + "6,1,0.5")  # a row cut by a crash mid-write
    log = StepLog(path, every=5)
    log.start(3)
    assert path.read_text() == header + "".join(rows[:3])
    log.add(4, 1, 0.25, 1e-3, None, 0.5, 2, 3.0)
    assert path.read_text() == header + "".join(rows[:3])  # not yet flushed (every 5 steps)
    log.add(5, 1, 0.25, 1e-3, float("nan"), 0.5, 1, 0.125)
    assert path.read_text().splitlines()[-2:] == ["4,1,0.25,0.001,,0.500000,2,3.0", "5,1,0.25,0.001,,0.500000,1,0.125"]
    # from another folder's file (resume=PATH into a new folder): its rows up to the step are copied
    other = tmp_path / "new" / "steps.csv"
    other.parent.mkdir()
    StepLog(other, every=1).start(2, source=path)
    assert other.read_text() == header + "".join(rows[:2])
    # a new run starts with the header alone; a foreign file is replaced by it
    path.write_text("not,our,columns\n1,2,3\n")
    StepLog(path, every=1).start(4)
    assert path.read_text() == header


def test_p_true_is_empty_where_it_does_not_apply(tmp_path):
    out = tmp_path / "run"
    assert train(tiny_cfg(epochs=1, steps_per_epoch=2, output_frames=1), out, progress=False) == 0
    rows = read_csv(out / "steps.csv")
    assert len(rows) == 2 and [r["p_true"] for r in rows] == ["", ""]
    assert read_csv(out / "metrics.csv")[0]["p_true"] == ""


# ----------------------------------------------------------------------------------------------- TensorBoard

def events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_events_equal_the_csv_files(runs):
    pytest.importorskip("tensorboard")
    run = runs["run"]
    acc = events(run / "tensorboard")
    steps, metrics = read_csv(run / "steps.csv"), read_csv(run / "metrics.csv")
    # one event per step, also for the steps the crashed process had logged (purged on resume)
    for tag, column in (("train/loss", "loss"), ("train/lr", "lr"), ("train/p_true", "p_true")):
        got = scalars(acc, tag)
        assert [s for s, _ in got] == [int(r["step"]) for r in steps], tag
        assert [v for _, v in got] == pytest.approx([float(r[column]) for r in steps], rel=1e-6), tag
    for tag, column in (("val/mse", "val_mse"), ("val/mae", "val_mae"), ("val/ssim", "val_ssim"),
                        ("val/psnr", "val_psnr"), ("train/epoch_loss", "train_loss"), ("rates/layer0", "rate_l0")):
        got = scalars(acc, tag)
        assert [s for s, _ in got] == [int(m["step"]) for m in metrics], tag
        assert [v for _, v in got] == pytest.approx([float(m[column]) for m in metrics], rel=1e-6), tag
    pictures = acc.Images("val/predictions")
    assert [p.step for p in pictures] == [4, 8] and all(p.width > 0 and p.height > 0 for p in pictures)


def fake_import(monkeypatch, error: ImportError) -> None:
    """Make ``import torch.utils.tensorboard`` fail with ``error``."""
    real = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise error
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)


def test_missing_tensorboard_is_one_error_line_before_any_work(tmp_path, monkeypatch, capsys):
    fake_import(monkeypatch, ModuleNotFoundError("No module named 'tensorboard'", name="tensorboard"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--out", str(out), "--tensorboard"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and 'pip install "stcsnn[tb]"' in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_another_import_error_is_not_hidden(monkeypatch):
    fake_import(monkeypatch, ImportError("libtensorflow_framework.so: cannot open shared object file"))
    with pytest.raises(ImportError, match="libtensorflow_framework") as info:
        summary_writer_class()
    assert not isinstance(info.value, StcsnnError)
    fake_import(monkeypatch, ModuleNotFoundError("No module named 'google.protobuf'", name="google.protobuf"))
    with pytest.raises(ModuleNotFoundError, match="google.protobuf"):
        summary_writer_class()
    fake_import(monkeypatch, ModuleNotFoundError("No module named 'tensorboard'", name="tensorboard"))
    with pytest.raises(ConfigError, match=r"tensorboard package, but it is not installed"):
        summary_writer_class()


# ----------------------------------------------------------------------------------------------- progress

class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_on_a_terminal_shows_p_true(tmp_path, monkeypatch):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert train(tiny_cfg(epochs=1), tmp_path / "run", progress=True) == 0
    text = tty.getvalue()
    assert "\r" in text and "step/s" in text  # tqdm's bar
    assert "epoch 1/1 [4/4]" in text and "p_true 0.92" in text and "lr 1e-05" in text
    assert " eta " not in text
    assert "epoch 1/1 train_loss" in text


# ----------------------------------------------------------------------------------------------- threads

class RecordingTuner:
    made: list[tuple[int, int, int, int]] = []
    seconds: list[float] = []

    def __init__(self, threads: int, usable: int, every: int = 500, probe: int = 5) -> None:
        RecordingTuner.made.append((threads, usable, every, probe))
        self.threads, self.trials = threads, []

    def step(self, seconds: float) -> int:
        RecordingTuner.seconds.append(seconds)
        return self.threads


def test_the_thread_tuner_is_fed_every_step_only_when_re_tuning_is_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "ThreadTuner", RecordingTuner)
    RecordingTuner.made, RecordingTuner.seconds = [], []
    assert train(tiny_cfg(), tmp_path / "off", progress=False) == 0
    assert train(tiny_cfg(), tmp_path / "auto", progress=False, tune_threads=True) == 0
    assert RecordingTuner.made == []  # an automatic count is picked once, at the start: no re-tuning by default
    assert train(tiny_cfg(retune_threads=True), tmp_path / "on", progress=False, tune_threads=True) == 0
    assert RecordingTuner.made == [(torch.get_num_threads(), usable_cpus(), 500, 5)]
    steps = read_csv(tmp_path / "on" / "steps.csv")
    assert RecordingTuner.seconds == pytest.approx([float(r["seconds"]) for r in steps], abs=1e-6)
    assert len(RecordingTuner.seconds) == 8


@pytest.mark.parametrize("reason,retune,tuned", [
    ("auto: 2 usable CPU(s), 0.0 busy with other work", False, False),
    ("auto: 2 usable CPU(s), 0.0 busy with other work", True, True),
    ("--threads 1", True, False), ("OMP_NUM_THREADS=1", True, False)])
def test_the_cli_re_tunes_only_an_automatic_choice_when_asked_and_says_it_once(tmp_path, monkeypatch, capsys,
                                                                               reason, retune, tuned):
    import stcsnn.threads

    monkeypatch.setattr(stcsnn.threads, "set_threads", lambda setting: ThreadChoice(1, reason))
    monkeypatch.setattr(loop, "ThreadTuner", RecordingTuner)
    RecordingTuner.made = []
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    sets = ["--set", "epochs=1"] + (["--set", "retune_threads=true"] if retune else [])
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), *sets]) == 0
    assert len(RecordingTuner.made) == int(tuned)
    assert capsys.readouterr().err.count(f"threads: 1 ({reason})") == 1


class SwitchingTuner(RecordingTuner):
    """Re-tuning that moves to 2 threads after the third step (what ThreadTuner does when 2 are faster)."""

    def step(self, seconds: float) -> int:
        RecordingTuner.seconds.append(seconds)
        if len(RecordingTuner.seconds) == 3:
            torch.set_num_threads(2)
            self.threads = 2
        return self.threads


def test_steps_csv_records_the_thread_count_of_each_step_and_the_run_its_start(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "ThreadTuner", SwitchingTuner)
    RecordingTuner.made, RecordingTuner.seconds = [], []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "run"
        assert train(tiny_cfg(retune_threads=True), out, progress=False, tune_threads=True) == 0
    finally:
        torch.set_num_threads(before)
    assert [int(r["threads"]) for r in read_csv(out / "steps.csv")] == [1, 1, 1, 2, 2, 2, 2, 2]
    assert yaml.safe_load((out / "config.yaml").read_text())["threads"] == 1  # the count the run started with
    assert json.loads((out / "report.json").read_text())["threads"] == 1


def test_a_new_run_that_never_saved_leaves_no_curves_behind(tmp_path, monkeypatch):
    real = RolloutLoss.forward

    def forward(self, frames, mask):
        loss, rates = real(self, frames, mask)
        return loss * float("nan"), rates

    monkeypatch.setattr(RolloutLoss, "forward", forward)
    with pytest.raises(loop.TrainingError, match="loss became nan"):
        train(tiny_cfg(tensorboard=True), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # no steps.csv, no tensorboard/ events: nothing looks like a run
