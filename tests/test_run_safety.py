"""A run folder belongs to one run: the run lock, ownership refusals, signals (SIGTERM, save_on_signal), stale
temporary files, no empty folder after an early failure, and disk errors (a full or read-only file system).

Tiny runs (LIF or STC-LIF, hidden 16, 32x32 frames, 2 -> 2 frames, 4 steps an epoch). The lock and SIGTERM tests
start real `python -m stcsnn train` processes; the rest run in process."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY as SHARED_TINY
from helpers import one_error

from stcsnn import io as io_mod
from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.errors import CheckpointError, ConfigError, RunLockedError
from stcsnn.io import RunLock, WriteError, atomic_torch_save, atomic_write_text, check_writable
from stcsnn.models import build_model
from stcsnn.models.loading import read_checkpoint
from stcsnn.models.official import expected_keys
from stcsnn.train.loop import RolloutLoss, TrainingError, save_signal, train

REPO = Path(__file__).resolve().parents[1]
LOCK = ".stcsnn.lock"

#: the shared tiny run, shorter still: LIF, 2 -> 2 frames, one epoch
TINY = {**SHARED_TINY, "neuron": "lif", "input_frames": 2, "output_frames": 2, "epochs": 1}


def tiny_cfg(**over):
    return make_config({**TINY, **over})


def write_config(path: Path, **over) -> Path:
    path.write_text(yaml.safe_dump({**TINY, **over}))
    return path




def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One finished tiny run (1 epoch x 4 steps), copied by the tests that need one."""
    out = tmp_path_factory.mktemp("safety") / "run"
    assert train(tiny_cfg(), out, progress=False) == 0
    return out


# ----------------------------------------------------------------------------------------------- subprocesses

def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Child:
    """``python -m stcsnn ...`` with its stderr read by a thread (a full pipe would block the child's writes)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "stcsnn", "--threads", "1", *args],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env=child_env(), cwd=REPO)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        end = time.time() + timeout
        while time.time() < end:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in the child's stderr:\n" + "".join(self.lines[-20:]))

    def finish(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.mark.slow  # a real second process: torch's import alone takes seconds
def test_a_second_train_into_a_running_folder_is_refused(tmp_path, capsys):
    cfg = write_config(tmp_path / "long.yaml", epochs=500)
    out = tmp_path / "run"
    first = Child("train", "--config", str(cfg), "--out", str(out))
    try:
        first.wait_for(r"epoch 1/500 \[2/4\]")  # training: the lock is held (taken before any work)
        pid, command = (out / LOCK).read_text().splitlines()
        assert int(pid) == first.proc.pid and command == "stcsnn train"
        config_before = (out / "config.yaml").read_bytes()
        # a second run (another lr: had it written config.yaml, the bytes would differ), and a resume of it
        for extra in (["--set", "lr=0.5"], ["--resume", "auto"]):
            line = one_error(capsys, main(["train", "--config", str(cfg), *extra, "--out", str(out), "--quiet"]))
            assert f"{out} is in use by `stcsnn train` (PID {first.proc.pid})" in line
            assert "another --out" in line
        assert (out / "config.yaml").read_bytes() == config_before
        first.proc.send_signal(signal.SIGTERM)  # the first ends as it should: saved, resumable
        assert first.finish() == 143, first.log
    finally:
        first.kill()
    assert "resume with: stcsnn train --out" in first.log and "Traceback" not in first.log
    assert not (out / LOCK).exists()
    assert read_checkpoint(out / "last.pt")["step"] >= 2


@pytest.mark.slow  # a real second process: torch's import alone takes seconds
def test_sigterm_finishes_the_step_saves_and_resumes(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", epochs=3)
    out = tmp_path / "run"
    child = Child("train", "--config", str(cfg), "--out", str(out))
    try:
        child.wait_for(r"epoch 2/3 \[2/4\]")
        child.proc.send_signal(signal.SIGTERM)
        rc = child.finish()
    finally:
        child.kill()
    assert rc == 143, child.log
    assert "SIGTERM: finishing this step, saving last.pt" in child.log and "Traceback" not in child.log
    step = int(re.search(r"saved \S+last\.pt at (?:the end of )?epoch \d+, step (\d+); resume with: stcsnn train "
                         r"--out \S+ --resume auto", child.log)[1])
    assert 6 <= step < 12  # stopped where the signal came: in epoch 2, before the end
    assert read_checkpoint(out / "last.pt")["step"] == step
    assert not (out / "report.json").exists() and not (out / LOCK).exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert main(["train", "--out", str(out), "--resume", "auto", "--quiet"]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 12 and (out / "report.json").is_file()


# ----------------------------------------------------------------------------------------------- signals in process

def signal_at_step(monkeypatch, sig: int, at: int) -> None:
    """Send ``sig`` to this process during the forward pass of training step ``at`` (1-based)."""
    real = RolloutLoss.forward
    calls = {"n": 0}

    def forward(self, frames, mask):
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), sig)
        return real(self, frames, mask)

    monkeypatch.setattr(RolloutLoss, "forward", forward)


def spy_saves(monkeypatch) -> list[tuple[str, int]]:
    saves: list[tuple[str, int]] = []
    real = io_mod.atomic_torch_save

    def spy(obj, path):
        real(obj, path)
        saves.append((Path(path).name, obj["step"]))

    monkeypatch.setattr("stcsnn.train.loop.atomic_torch_save", spy)
    return saves


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_save_signal_writes_last_pt_and_training_goes_on(tmp_path, monkeypatch, capsys):
    assert train(tiny_cfg(epochs=2), tmp_path / "plain", progress=False) == 0
    saves = spy_saves(monkeypatch)
    signal_at_step(monkeypatch, signal.SIGUSR1, 2)
    assert train(tiny_cfg(epochs=2), tmp_path / "run", progress=False) == 0
    # last.pt at the end of step 2 (the step the signal came in), then the usual end-of-epoch files
    assert saves == [("last.pt", 2), ("best.pt", 4), ("last.pt", 4), ("best.pt", 8), ("last.pt", 8)] or \
        saves == [("last.pt", 2), ("best.pt", 4), ("last.pt", 4), ("last.pt", 8)]
    assert re.search(r"SIGUSR1: saved \S+last\.pt at epoch 1, step 2; training goes on", capsys.readouterr().err)
    # saving changed nothing: the run ends with the weights of an uninterrupted one
    a, b = read_checkpoint(tmp_path / "plain" / "last.pt"), read_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handler is put back


def test_sigterm_in_process_and_before_training(tmp_path, monkeypatch, capsys):
    saves = spy_saves(monkeypatch)
    signal_at_step(monkeypatch, signal.SIGTERM, 3)
    assert train(tiny_cfg(epochs=2), tmp_path / "run", progress=False) == 143
    assert saves == [("last.pt", 3)] and read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3
    monkeypatch.undo()
    # while the data is being built (outside any step): stops at once, nothing saved, no folder left behind
    import stcsnn.train.loop as loop

    real = loop.build_splits

    def build_then_term(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "build_splits", build_then_term)
    capsys.readouterr()
    assert train(tiny_cfg(), tmp_path / "new" / "run", progress=False) == 143
    assert "SIGTERM: stopped outside a training step; nothing was saved" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto resolves to the CPU only without CUDA")
def test_fp16_on_a_cpu_chosen_at_run_time_is_refused_before_any_work(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", device="auto", amp="fp16")
    line = one_error(capsys, main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]))
    assert "fp16" in line and "'auto' resolved to the CPU" in line and "bf16" in line
    assert not (tmp_path / "run").exists()


def test_save_on_signal_is_checked_before_any_work(tmp_path):
    assert save_signal(tiny_cfg(save_on_signal=None)) is None
    if hasattr(signal, "SIGUSR2"):
        assert save_signal(tiny_cfg(save_on_signal="usr2")) == signal.SIGUSR2
    for bad in ("SIGTERM", "INT", "SIGKILL", "SIGNOPE"):
        with pytest.raises(ConfigError, match="save_on_signal expects the name of a signal"):
            train(tiny_cfg(save_on_signal=bad), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------- the lock

def test_run_lock_in_process(tmp_path, capsys):
    folder = tmp_path / "a" / "b"
    with RunLock(folder, "stcsnn tester") as lock:
        assert lock.path.read_text() == f"{os.getpid()}\nstcsnn tester\n"
        with pytest.raises(RunLockedError, match=rf"b is in use by `stcsnn tester` \(PID {os.getpid()}\)"):
            with RunLock(folder, "stcsnn other"):
                pass
        # the commands that write into a run folder are refused while it is held; nothing is written
        cfg = write_config(tmp_path / "c.yaml")
        line = one_error(capsys, main(["train", "--config", str(cfg), "--out", str(folder), "--quiet"]))
        assert "in use by `stcsnn tester`" in line
        line = one_error(capsys, main(["import-official", str(tmp_path / "ref.pth"), "--config", str(cfg),
                                       "--out", str(folder / "best.pt")]))
        assert "in use by `stcsnn tester`" in line
        assert [p.name for p in folder.iterdir()] == [LOCK]
    # released: the lock file and the folders the lock created are gone, also after an exception
    assert not (tmp_path / "a").exists()
    with pytest.raises(KeyError):
        with RunLock(folder, "x"):
            raise KeyError("boom")
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    with RunLock(tmp_path / "a", "x"):
        pass
    assert (tmp_path / "a").is_dir()  # not created by the lock: kept


def test_a_lock_file_left_by_a_dead_process_blocks_nobody(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK).write_text("999999999\nstcsnn train\n")  # as SIGKILL leaves it: the kernel dropped the lock
    with RunLock(folder, "stcsnn train") as lock:
        assert lock.path.read_text().startswith(f"{os.getpid()}\n")


def test_a_folder_that_cannot_be_created(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for folder in (afile, afile / "run"):
        with pytest.raises(CheckpointError, match="afile"):
            with RunLock(folder, "x"):
                pass
    assert afile.read_text() == "keep me"


# ----------------------------------------------------------------------------------------------- ownership

def test_resume_path_into_another_run_is_refused(run, tmp_path, capsys):
    a, b = copy_run(run, tmp_path / "a"), copy_run(run, tmp_path / "b")
    before = snapshot(b)
    line = one_error(capsys, main(["train", "--out", str(b), "--resume", str(a / "last.pt"), "--quiet"]))
    assert f"{b} holds another run" in line and "--resume auto" in line
    assert snapshot(b) == before
    # into a new folder it starts a continuation there, as before
    assert main(["train", "--out", str(tmp_path / "c"), "--resume", str(a / "last.pt"), "--set", "epochs=2",
                 "--quiet"]) == 0
    assert read_checkpoint(tmp_path / "c" / "last.pt")["step"] == 8
    assert snapshot(b) == before


@pytest.mark.parametrize("name", ["best.pt", "model.pt", "report.json", "report_val.md", "metrics.csv",
                                  "config.yaml"])
def test_a_folder_with_files_of_another_run_is_refused(run, tmp_path, capsys, name):
    folder = tmp_path / "ref"
    folder.mkdir()
    (folder / name).write_bytes((run / name).read_bytes() if (run / name).exists() else b"not ours")
    cfg = write_config(tmp_path / "c.yaml", lr=0.01)  # another config than the one in run/config.yaml
    for extra in ([], ["--resume", "auto"]):
        line = one_error(capsys, main(["train", "--config", str(cfg), "--out", str(folder), *extra, "--quiet"]))
        assert str(folder) in line and "another --out" in line and name in line
    assert snapshot(folder) == {name: (folder / name).read_bytes()}


def test_resume_auto_restarts_a_run_that_died_before_its_first_checkpoint(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml")
    out = tmp_path / "run"
    out.mkdir()
    # what a SIGKILL in epoch 1 leaves: the config.yaml the run wrote, no checkpoint
    (out / "config.yaml").write_text(yaml.safe_dump({**TINY, "frame_shape": [1, 32, 32]}))
    line = one_error(capsys, main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]))
    assert "config.yaml but no checkpoint" in line and "--resume auto" in line
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "auto", "--quiet"]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 4


def test_import_official_never_overwrites_without_force(run, tmp_path, capsys):
    cfg = {k: TINY[k] for k in ("neuron", "hidden_channels", "kernel_size", "patch_size", "input_frames",
                                "output_frames")}
    cfg_path = tmp_path / "ref.yaml"
    cfg_path.write_text(yaml.safe_dump({**cfg, "dataset": "mmnist", "frame_shape": [1, 32, 32]}))
    model = build_model(make_config({**cfg, "frame_shape": [1, 32, 32]}))
    torch.manual_seed(0)
    torch.save({k: torch.randn(shape) for k, (shape, _) in expected_keys(model).items()}, tmp_path / "ref.pth")
    folder = copy_run(run, tmp_path / "trained")
    before = snapshot(folder)
    args = ["import-official", str(tmp_path / "ref.pth"), "--config", str(cfg_path), "--out", str(folder / "best.pt")]
    line = one_error(capsys, main(args))
    assert "best.pt" in line and "already exists" in line and "--force" in line
    assert snapshot(folder) == before
    assert main([*args, "--force"]) == 0
    assert "imported_from" in read_checkpoint(folder / "best.pt")
    assert snapshot(folder).keys() == before.keys()  # no lock or temporary file left
    # a new folder, then a failing import into another new folder: no folder left behind
    assert main([*args[:-1], str(tmp_path / "new" / "best.pt")]) == 0
    capsys.readouterr()
    (tmp_path / "bad.pth").write_bytes(b"junk")
    one_error(capsys, main(["import-official", str(tmp_path / "bad.pth"), "--config", str(cfg_path), "--out",
                            str(tmp_path / "none" / "best.pt")]))
    assert not (tmp_path / "none").exists()


# ----------------------------------------------------------------------------------------------- cleanup

def test_stale_temporaries_are_removed_at_the_next_start(run, tmp_path, capsys):
    out = copy_run(run, tmp_path / "run")
    stale = [".last.pt.k3j_x9q2.tmp", ".config.yaml.abcdefgh.tmp"]  # what SIGKILL mid-write leaves
    kept = [".last.pt.tmp", "notes.tmp", "last.pt.abcdefgh.tmp", ".last.pt.abc.tmp"]
    for name in stale + kept:
        (out / name).write_bytes(b"partial")
    # a refused start touches nothing, stale files included
    before = snapshot(out)
    one_error(capsys, main(["train", "--config", str(out / "config.yaml"), "--out", str(out), "--quiet"]))
    assert snapshot(out) == before
    assert main(["train", "--out", str(out), "--resume", "auto", "--set", "epochs=2", "--quiet"]) == 0
    names = {p.name for p in out.iterdir()}
    assert not names & set(stale) and set(kept) <= names


def test_failures_before_the_first_file_leave_no_folder(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml")
    nested = tmp_path / "x" / "y" / "run"
    checks = [
        ["train", "--config", str(cfg), "--out", str(nested), "--resume", str(tmp_path / "missing.pt")],
        ["train", "--config", str(cfg), "--out", str(nested), "--set", "dataset=npy",
         "--set", f"data_options={{path: {tmp_path / 'none.npy'}}}"],
        # fails inside the run, after config.yaml: it is removed again
        ["train", "--config", str(cfg), "--out", str(nested), "--set", "batch_size=16"],
    ]
    for argv in checks:
        one_error(capsys, main([*argv, "--quiet"]))
        assert not (tmp_path / "x").exists(), argv
    check_writable(nested / "f.txt")
    assert not (tmp_path / "x").exists()


def test_non_finite_loss_in_epoch_one_says_nothing_was_saved(tmp_path, monkeypatch):
    real = RolloutLoss.forward

    def forward(self, frames, mask):
        loss, rates = real(self, frames, mask)
        return loss * float("nan"), rates

    monkeypatch.setattr(RolloutLoss, "forward", forward)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, step 1; stopped without saving: no "
                                            r"checkpoint was written yet \(\S+last\.pt does not exist\)"):
        train(tiny_cfg(), out, progress=False)
    assert not out.exists()  # its config.yaml removed with it: the folder does not look like a run


# ----------------------------------------------------------------------------------------------- disk errors

def fail_with(monkeypatch, name: str, code: int) -> None:
    def boom(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(io_mod.os, name, boom)


@pytest.mark.parametrize("name,code", [("fsync", errno.ENOSPC), ("replace", errno.EROFS), ("fsync", errno.EIO)])
def test_a_failed_write_is_one_error_and_keeps_the_old_file(tmp_path, monkeypatch, name, code):
    target = tmp_path / "last.pt"
    atomic_torch_save({"w": torch.arange(4.0)}, target)
    before = target.read_bytes()
    fail_with(monkeypatch, name, code)
    with pytest.raises(WriteError, match=rf"cannot write {re.escape(str(target))}: {os.strerror(code)}; the "
                                         "previous file is unchanged") as info:
        atomic_torch_save({"w": torch.zeros(1000)}, target)
    assert info.value.errno == code
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_torch_save_errors_name_their_cause(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        f.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(io_mod.torch, "save", broken)
    with pytest.raises(WriteError, match=r"cannot write \S+new\.pt: .*inline_container.*; nothing was written"):
        atomic_torch_save({}, tmp_path / "new.pt")

    def bug(obj, f, *args, **kwargs):
        raise RuntimeError("a bug, not a write failure")

    monkeypatch.setattr(io_mod.torch, "save", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # keeps its traceback
        atomic_torch_save({}, tmp_path / "new.pt")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_config_yaml_through_the_cli(tmp_path, monkeypatch, capsys):
    cfg = write_config(tmp_path / "c.yaml")
    fail_with(monkeypatch, "fsync", errno.ENOSPC)
    line = one_error(capsys, main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]))
    assert re.fullmatch(r"error: cannot write \S+config\.yaml: No space left on device; nothing was written", line)
    assert not (tmp_path / "run").exists()


@pytest.fixture
def tmpfs(tmp_path):
    """A real 1 MiB tmpfs (root only; skipped where mounting is not permitted), unmounted afterwards."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system until at most ``leave`` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(free - leave, 0))
            f.flush()
        except OSError:
            pass


def test_a_real_full_and_read_only_file_system(tmpfs, capsys):
    # a finished run, then the disk fills: resuming it fails at its first checkpoint, one line, nothing lost
    out = tmpfs / "run"
    assert train(tiny_cfg(), out, progress=False) == 0
    capsys.readouterr()
    checkpoints = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt")}
    fill(tmpfs, leave=16 * 1024)  # room for the lock, config.yaml and metrics.csv, not a 48 kB checkpoint
    rc = main(["train", "--out", str(out), "--resume", "auto", "--set", "epochs=2", "--quiet"])
    line = one_error(capsys, rc)
    assert re.fullmatch(r"error: cannot write \S+(best|last)\.pt: No space left on device; the previous file is "
                        r"unchanged", line)
    assert {name: (out / name).read_bytes() for name in checkpoints} == checkpoints
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or p.name == LOCK]
    # a new run on the full disk: nothing left behind
    line = one_error(capsys, main(["train", "--config", str(write_config(tmpfs.parent / "c.yaml")), "--out",
                                   str(tmpfs / "new"), "--quiet"]))
    assert "No space left on device" in line and not (tmpfs / "new").exists()
    # read-only
    (tmpfs / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(WriteError, match=r"cannot write \S+config\.yaml: Read-only file system; the previous"):
        atomic_write_text(out / "config.yaml", "x: 1\n")
    line = one_error(capsys, main(["train", "--out", str(out), "--resume", "auto", "--set", "epochs=2", "--quiet"]))
    assert "Read-only file system" in line
    assert {name: (out / name).read_bytes() for name in checkpoints} == checkpoints
