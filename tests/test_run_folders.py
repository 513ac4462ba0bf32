"""No file a user owns is ever touched: symlinks in run folders, eval's output folder, reports matched by the
checkpoint's sha256, foreign files in a run folder, a disk full in epoch 1, signals during a save or an eval,
a hand-edited config.yaml (:mod:`stcsnn.runs`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from helpers import one_error
from test_run_safety import LOCK, Child, copy_run, fill, snapshot, tiny_cfg, tmpfs, write_config  # noqa: F401

from stcsnn.cli import main
from stcsnn.models.loading import read_checkpoint
from stcsnn.train.loop import train


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folders") / "run"
    assert train(tiny_cfg(), out, progress=False) == 0
    return out


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links as their target text), for byte-identity checks."""
    return {str(p.relative_to(folder)): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_symlink() or p.is_file()}


# ---------------------------------------------------------------------------------------------- 1: symlinks
@pytest.mark.parametrize("command", ["eval", "resume", "export", "import"])
def test_a_lock_symlink_is_refused_and_its_target_untouched(run, tmp_path, capsys, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    folder = copy_run(run, tmp_path / "run")
    (folder / LOCK).symlink_to(notes)
    before = tree(tmp_path)
    args = {"eval": ["eval", "--checkpoint", str(folder / "best.pt")],
            "resume": ["train", "--out", str(folder), "--resume", "auto", "--quiet"],
            "export": ["export", str(run / "best.pt"), "--out", str(folder)],
            "import": ["import-official", str(tmp_path / "x.pth"), "--config", str(folder / "config.yaml"),
                       "--out", str(folder / "imported.pt")]}[command]
    line = one_error(capsys, main(args))
    assert LOCK in line and "symbolic link" in line, line
    assert notes.read_text() == "my notes\n" and (folder / LOCK).is_symlink()
    assert tree(tmp_path) == before


def test_a_symlink_in_place_of_a_run_file_is_refused(run, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    folder = copy_run(run, tmp_path / "run")
    (folder / "metrics.csv").unlink()
    (folder / "metrics.csv").symlink_to(notes)
    before = tree(tmp_path)
    line = one_error(capsys, main(["train", "--out", str(folder), "--resume", "auto", "--set", "epochs=2",
                                   "--quiet"]))
    assert "metrics.csv" in line and "symbolic links" in line
    assert notes.read_text() == "mine\n" and (folder / "metrics.csv").is_symlink()
    assert tree(tmp_path) == before


def test_steps_csv_appends_refuse_a_symlink(tmp_path):
    from stcsnn.io import WriteError
    from stcsnn.train.progress import StepLog

    target = tmp_path / "target.txt"
    target.write_text("keep\n")
    (tmp_path / "steps.csv").symlink_to(target)
    log = StepLog(tmp_path / "steps.csv", 1)
    with pytest.raises(WriteError, match="symbolic link"):
        log.add(1, 1, 0.5, 1e-3, None, 0.1, 1, 0.5)
    assert target.read_text() == "keep\n"


# ---------------------------------------------------------------------------------------------- 2, 3: eval
def test_eval_of_an_export_folder_or_a_foreign_folder_needs_out(run, tmp_path, capsys):
    models = tmp_path / "models"
    assert main(["export", str(run / "best.pt"), "--out", str(models / "m1")]) == 0
    (models / "report.md").write_text("my report\n")
    capsys.readouterr()
    before = tree(tmp_path)
    line = one_error(capsys, main(["eval", "--checkpoint", str(models / "m1")]))
    assert "export folder" in line and "--out" in line
    line = one_error(capsys, main(["eval", "--checkpoint", "hf://user/repo"]))
    assert "--out" in line or "Hub" in line
    assert not Path("hf:").exists()
    # a checkpoint in a folder of the user's files
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.pt").write_bytes((run / "best.pt").read_bytes())
    (tmp_path / "mine" / "predictions.png").write_bytes(b"my picture")
    (tmp_path / "mine" / "todo.txt").write_text("x")
    before = tree(tmp_path)
    line = one_error(capsys, main(["eval", "--checkpoint", str(tmp_path / "mine" / "model.pt")]))
    assert "not a run folder" in line and "todo.txt" in line and "--out" in line
    assert tree(tmp_path) == before
    # with --out it works, and the report records the sha256 of the export's weights: the same eval again may
    # replace it, a report.json of the user's in --out is refused (it records no such sha256)
    import hashlib

    assert main(["eval", "--checkpoint", str(models / "m1"), "--out", str(tmp_path / "r")]) == 0
    weights = hashlib.sha256((models / "m1" / "model.safetensors").read_bytes()).hexdigest()
    assert json.loads((tmp_path / "r" / "report.json").read_text())["checkpoint_sha256"] == weights
    assert main(["eval", "--checkpoint", str(models / "m1"), "--out", str(tmp_path / "r")]) == 0
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "report.json").write_text('{"mine": 1}\n')
    capsys.readouterr()
    before = tree(tmp_path)
    line = one_error(capsys, main(["eval", "--checkpoint", str(models / "m1"), "--out", str(tmp_path / "u")]))
    assert "report of another checkpoint" in line and tree(tmp_path) == before


def test_eval_out_into_another_runs_folder_is_refused_and_the_card_matches_by_hash(run, tmp_path, capsys):
    a = copy_run(run, tmp_path / "a")
    b = tmp_path / "b"
    assert train(tiny_cfg(seed=1), b, progress=False) == 0
    capsys.readouterr()
    before = tree(tmp_path)
    line = one_error(capsys, main(["eval", "--checkpoint", str(b / "best.pt"), "--out", str(a)]))
    assert "another run's files" in line
    assert tree(tmp_path) == before
    # a report folder of one checkpoint refuses another checkpoint's report
    assert main(["eval", "--checkpoint", str(a / "best.pt"), "--out", str(tmp_path / "r")]) == 0
    assert main(["eval", "--checkpoint", str(a / "best.pt"), "--out", str(tmp_path / "r"), "--split", "val"]) == 0
    capsys.readouterr()
    kept = tree(tmp_path / "r")
    line = one_error(capsys, main(["eval", "--checkpoint", str(b / "best.pt"), "--out", str(tmp_path / "r")]))
    assert "report of another checkpoint" in line and tree(tmp_path / "r") == kept
    # the card takes metrics only from a report recording the exported checkpoint's sha256
    sha = hashlib.sha256((a / "best.pt").read_bytes()).hexdigest()
    assert json.loads((a / "report.json").read_text())["checkpoint_sha256"] == sha
    assert main(["export", str(a / "best.pt"), "--out", str(tmp_path / "ea")]) == 0
    assert "| MSE |" in (tmp_path / "ea" / "README.md").read_text()
    (a / "best.pt").write_bytes((b / "best.pt").read_bytes())  # another model under the same name
    assert main(["export", str(a / "best.pt"), "--out", str(tmp_path / "eb")]) == 0
    card = (tmp_path / "eb" / "README.md").read_text()
    assert "| MSE |" not in card and "another sha256" in card


# ---------------------------------------------------------------------------------------------- 4: foreign files
def test_a_new_run_refuses_a_folder_holding_any_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "predictions.png").write_bytes(b"my picture")
    line = one_error(capsys, main(["train", "--config", str(write_config(tmp_path / "c.yaml")), "--out", str(out),
                                   "--quiet"]))
    assert "predictions.png" in line and "another --out" in line
    assert snapshot(out) == {"predictions.png": b"my picture"}


def test_a_resume_refuses_a_report_picture_that_is_not_the_runs(run, tmp_path, capsys):
    out = copy_run(run, tmp_path / "run")
    for name in ("report.json", "report.md"):
        (out / name).unlink()
    (out / "predictions.png").write_bytes(b"my picture")
    before = tree(out)
    line = one_error(capsys, main(["train", "--out", str(out), "--resume", "auto", "--quiet"]))
    assert "predictions.png" in line and "no report.json" in line
    assert tree(out) == before


# ---------------------------------------------------------------------------------------------- 8: disk full
def test_a_disk_full_in_epoch_one_leaves_a_folder_a_run_takes_over(tmpfs, tmp_path, capsys):  # noqa: F811
    from stcsnn.io import atomic_torch_save

    calls = []

    def fail_at_last(obj, path):  # best.pt written, last.pt fails: the disk fills in between
        calls.append(Path(path).name)
        if Path(path).name == "last.pt":
            fill(tmpfs, leave=4 * 1024)
        atomic_torch_save(obj, path)

    out = tmpfs / "run"
    cfg = write_config(tmp_path / "c.yaml")
    mp = pytest.MonkeyPatch()
    mp.setattr("stcsnn.train.loop.atomic_torch_save", fail_at_last)
    try:
        line = one_error(capsys, main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]))
    finally:
        mp.undo()
    assert calls[:2] == ["best.pt", "last.pt"]
    assert "last.pt: No space left on device" in line and "were removed" in line and "again" in line
    assert not out.exists() or not list(out.iterdir())
    (tmpfs / "filler").unlink()
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "auto", "--quiet"]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 4


def test_a_run_killed_between_best_and_last_restarts_with_resume_auto(run, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "steps.csv", "best.pt"):  # what SIGKILL between the two checkpoints leaves
        (out / name).write_bytes((run / name).read_bytes())
    cfg = write_config(tmp_path / "c.yaml")
    line = one_error(capsys, main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]))
    assert "no last.pt" in line and "--resume auto" in line
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "auto", "--quiet"]) == 0


# ---------------------------------------------------------------------------------------------- 10: config.yaml
def test_resume_auto_refuses_a_hand_edited_config_yaml(run, tmp_path, capsys):
    out = copy_run(run, tmp_path / "run")
    data = yaml.safe_load((out / "config.yaml").read_text())
    data["epochs"] = 3
    (out / "config.yaml").write_text(yaml.safe_dump(data))
    before = tree(out)
    line = one_error(capsys, main(["train", "--out", str(out), "--resume", "auto", "--quiet"]))
    assert "config.yaml differs" in line and "epochs=3" in line and "--set epochs=3" in line
    assert tree(out) == before
    assert main(["train", "--out", str(out), "--resume", "auto", "--set", "epochs=3", "--quiet"]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 12
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 3


# ---------------------------------------------------------------------------------------------- 9, 14a: signals
def test_an_interrupt_inside_a_save_keeps_last_pt_and_is_no_disk_error(tmp_path):
    from stcsnn.io import atomic_torch_save

    (tmp_path / "last.pt").write_bytes(b"previous")

    class Interrupting:
        def __reduce__(self):
            raise KeyboardInterrupt

    import torch
    big = {"w": torch.zeros(1 << 20), "x": Interrupting()}
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(big, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.slow
def test_a_second_ctrl_c_during_a_real_save_exits_130_and_keeps_last_pt(tmp_path):
    cfg = write_config(tmp_path / "big.yaml", hidden_channels=[1024, 1024], kernel_size=5, epochs=50,
                       save_every_steps=1, log_every=1)
    out = tmp_path / "run"
    child = Child("train", "--config", str(cfg), "--out", str(out))
    try:
        child.wait_for(r"\] loss", timeout=120)  # the first step's progress line
        deadline = time.time() + 120
        while not (out / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        first = (out / "last.pt").read_bytes()
        while not [p for p in out.iterdir() if p.name.startswith(".last.pt.")] and time.time() < deadline:
            time.sleep(0.002)
        child.proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        child.proc.send_signal(signal.SIGINT)
        rc = child.finish(timeout=120)
    finally:
        child.kill()
    assert rc == 130, child.log
    assert "Traceback" not in child.log and "cannot write" not in child.log and "inline_container" not in child.log
    assert "interrupt" in child.log
    read_checkpoint(out / "last.pt")  # whole: the previous one or the new one, never a torn file
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or p.name == LOCK]
    assert first


@pytest.mark.slow
def test_sigterm_during_eval_exits_143_and_leaves_nothing(run, tmp_path):
    out = tmp_path / "report"
    child = Child("eval", "--checkpoint", str(run / "best.pt"), "--out", str(out), "--set",
                  "data_options.test_samples=4000", "--set", "eval_batch_size=1")
    try:
        deadline = time.time() + 120
        while not (out / LOCK).exists() and time.time() < deadline and child.proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.5)
        child.proc.send_signal(signal.SIGTERM)
        rc = child.finish(timeout=120)
    finally:
        child.kill()
    assert rc == 143, child.log
    assert "SIGTERM" in child.log and "Traceback" not in child.log
    assert not out.exists()


def test_eval_without_a_checkpoint_hash_never_takes_an_existing_report(tmp_path):
    """An ``hf://`` model has no local file to hash: a report.json already in --out is not its (a user's, or
    another model's), whatever it records."""
    from stcsnn.runs import RunFolderError, eval_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text('{"mine": 1}\n')
    names = ["report.json", "report.md", "predictions.png"]
    with pytest.raises(RunFolderError, match="report of another checkpoint"):
        eval_folder("hf://user/repo", str(tmp_path / "out"), names, None)
    assert eval_folder("hf://user/repo", str(tmp_path / "new"), names, None) == tmp_path / "new"
