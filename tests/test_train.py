"""Training: schedules against the reference formulas, resume after SIGKILL / Ctrl-C bit for bit, atomic
checkpoints under a crash mid-write, and the NaN guard. Tiny runs (hidden 16, 32x32 frames, 3 -> 3 frames)."""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY, tiny_cfg

from stcsnn import io as io_mod
from stcsnn.config import make_config
from stcsnn.errors import CheckpointError
from stcsnn.io import WriteError, atomic_torch_save
from stcsnn.models import loading as loading_mod
from stcsnn.models.checkpoint import sealed
from stcsnn.models.loading import read_checkpoint
from stcsnn.train.loop import Trainer, TrainingError, epoch_batches, train
from stcsnn.train.schedule import learning_rate, reverse_sampling_etas, sampling_eta, sampling_mask

REPO = Path(__file__).resolve().parents[1]



# =============================================================================================== schedules

def test_sampling_eta_follows_the_reference():
    cfg = make_config({})  # the reference defaults: start 1.0, rate 2e-5, stop at 50,000
    assert (cfg.sampling_start, cfg.sampling_changing_rate, cfg.sampling_stop_iter) == (1.0, 2e-5, 50000)
    for itr in (1, 2, 100, 1234, 25000, 49999):
        assert sampling_eta(cfg, itr) == pytest.approx(1.0 - 2e-5 * itr, abs=1e-12)
    assert sampling_eta(cfg, 1) < 1.0
    for itr in (50000, 50001, 10**6):
        assert sampling_eta(cfg, itr) == 0.0
    values = [sampling_eta(cfg, i) for i in range(1, 60000, 97)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never increases
    assert all(0.0 <= v <= 1.0 for v in values)


def test_sampling_eta_other_modes():
    assert sampling_eta(make_config({"sampling": "teacher"}), 10**6) == 1.0
    assert sampling_eta(make_config({"sampling": "autoregressive"}), 1) == 0.0
    fast = make_config({"sampling_changing_rate": 0.1, "sampling_stop_iter": 100})
    assert sampling_eta(fast, 5) == pytest.approx(0.5)
    assert sampling_eta(fast, 20) == 0.0  # clipped at 0 before the stop iteration


@pytest.mark.parametrize("itr", [1, 15000, 35000, 49999, 50000])
def test_sampling_mask_matches_eta(itr):
    cfg = make_config({"input_frames": 10, "output_frames": 10})
    g = torch.Generator().manual_seed(itr)
    mask, eta = sampling_mask(cfg, itr, 20000, g)
    assert eta == pytest.approx(sampling_eta(cfg, itr))
    assert mask.shape == (20000, 9)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    n = mask.numel()
    sigma = math.sqrt(max(eta * (1 - eta), 1e-12) / n)
    assert abs(mask.mean().item() - eta) < 5 * sigma + 1e-9
    # each future step separately, too (the flips are independent per sample and per step)
    per_step = mask.mean(0)
    sigma_step = math.sqrt(max(eta * (1 - eta), 1e-12) / mask.shape[0])
    assert (per_step - eta).abs().max().item() < 5 * sigma_step + 1e-9


def test_sampling_mask_is_reproducible_and_batch_independent():
    cfg = make_config({"input_frames": 4, "output_frames": 5})
    a, _ = sampling_mask(cfg, 30000, 64, torch.Generator().manual_seed(1))
    b, _ = sampling_mask(cfg, 30000, 64, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    teacher, eta = sampling_mask(make_config({"sampling": "teacher", "output_frames": 5}), 7, 3, torch.Generator())
    assert eta == 1.0 and torch.equal(teacher, torch.ones(3, 4))
    none, eta = sampling_mask(make_config({"sampling": "autoregressive"}), 7, 3, torch.Generator())
    assert none is None and eta == 0.0


def reference_reverse(itr: int, s1: int = 25000, s2: int = 50000, alpha: float = 5000.0) -> tuple[float, float]:
    """PredRNN-v2 ``reserve_schedule_sampling_exp``: (r_eta, eta), written from the paper's code."""
    if itr < s1:
        r_eta = 0.5
    elif itr < s2:
        r_eta = 1.0 - 0.5 * math.exp(-float(itr - s1) / alpha)
    else:
        r_eta = 1.0
    if itr < s1:
        eta = 0.5
    elif itr < s2:
        eta = 0.5 - (0.5 / (s2 - s1)) * (itr - s1)
    else:
        eta = 0.0
    return r_eta, eta


@pytest.mark.parametrize("itr", [0, 1, 24999, 25000, 25001, 30000, 37500, 49999, 50000, 80000])
def test_reverse_schedule_matches_predrnn_v2(itr):
    cfg = make_config({"sampling": "reverse"})
    assert (cfg.r_sampling_step_1, cfg.r_sampling_step_2, cfg.r_exp_alpha) == (25000, 50000, 5000.0)
    got = reverse_sampling_etas(cfg, itr)
    want = reference_reverse(itr)
    assert got == pytest.approx(want, abs=1e-12)


def test_reverse_schedule_spot_values():
    cfg = make_config({"sampling": "reverse"})
    assert reverse_sampling_etas(cfg, 30000) == pytest.approx((1 - 0.5 * math.exp(-1), 0.4))
    assert reverse_sampling_etas(cfg, 37500) == pytest.approx((1 - 0.5 * math.exp(-2.5), 0.25))


@pytest.mark.parametrize("itr", [100, 30000, 45000, 60000])
def test_reverse_mask_matches_its_etas(itr):
    cfg = make_config({"sampling": "reverse", "input_frames": 6, "output_frames": 5})
    mask, eta = sampling_mask(cfg, itr, 20000, torch.Generator().manual_seed(0))
    r_eta, f_eta = reference_reverse(itr)
    assert eta == pytest.approx(f_eta)
    assert mask.shape == (20000, 6 - 1 + 5 - 1)
    for part, p in ((mask[:, :5], r_eta), (mask[:, 5:], f_eta)):
        sigma = math.sqrt(max(p * (1 - p), 1e-12) / part.numel())
        assert abs(part.mean().item() - p) < 5 * sigma + 1e-9


def reference_lr(epoch: int, epochs: int, lr: float, min_lr: float, warmup: int, warmup_lr: float) -> float:
    """timm's CosineLRScheduler as the reference (OpenSTL) configures it: t_initial = epochs, warmup_t = warmup,
    warmup_lr_init = warmup_lr, warmup_prefix False, cycle_limit 1, stepped per epoch."""
    if epoch < warmup:
        return warmup_lr + epoch * (lr - warmup_lr) / warmup
    if epoch >= epochs:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


@pytest.mark.parametrize("epochs,warmup", [(500, 10), (200, 10), (6, 1), (20, 0)])
def test_learning_rate_matches_the_reference(epochs, warmup):
    cfg = make_config({"epochs": epochs, "warmup_epochs": warmup, "lr": 1e-3, "min_lr": 1e-5, "warmup_lr": 1e-5})
    for epoch in sorted({0, 1, warmup - 1, warmup, warmup + 1, epochs // 2, epochs - 2, epochs - 1, epochs}):
        if epoch < 0:
            continue
        want = reference_lr(epoch, epochs, 1e-3, 1e-5, warmup, 1e-5)
        assert learning_rate(cfg, epoch) == pytest.approx(want, rel=1e-9, abs=1e-15), epoch


def test_learning_rate_shape():
    cfg = make_config({"epochs": 500, "warmup_epochs": 10, "lr": 1e-3, "min_lr": 1e-5, "warmup_lr": 1e-5})
    lrs = [learning_rate(cfg, e) for e in range(500)]
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[5] == pytest.approx(1e-5 + 5 * (1e-3 - 1e-5) / 10)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine falls
    assert max(lrs) <= 1e-3 and min(lrs) >= 1e-5
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-3)


def test_epoch_batches():
    a = epoch_batches(10, 3, 0, 0, None)
    assert len(a) == 3 and all(len(b) == 3 for b in a)
    assert len({i for b in a for i in b}) == 9
    assert a == epoch_batches(10, 3, 0, 0, None)
    assert a != epoch_batches(10, 3, 1, 0, None)
    assert a != epoch_batches(10, 3, 0, 1, None)
    assert len(epoch_batches(10, 3, 0, 0, 2)) == 2
    assert epoch_batches(10, 3, 0, 0, 2) == a[:2]


# =============================================================================================== resume

def write_config(path: Path, **over) -> Path:
    path.write_text(yaml.safe_dump({**TINY, **over}))
    return path


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stcsnn", *args], capture_output=True, text=True,
                          env=child_env(), timeout=timeout, cwd=REPO)


def run_until(args: list[str], epoch: int, batch: int, sig: int, timeout: float = 120) -> tuple[int, str]:
    """Start ``stcsnn train``; send ``sig`` as soon as it reports batch ``batch`` of epoch ``epoch``."""
    proc = subprocess.Popen([sys.executable, "-m", "stcsnn", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=child_env(), cwd=REPO)
    seen = []
    sent = False
    try:
        for line in proc.stderr:
            seen.append(line)
            m = re.match(r"epoch (\d+)/\d+ \[(\d+)/\d+\]", line)
            if m and not sent and (int(m[1]), int(m[2])) >= (epoch, batch):
                proc.send_signal(sig)
                sent = True
                if sig == signal.SIGKILL:
                    break
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sent, "the run ended before it could be interrupted:\n" + "".join(seen[-20:])
    return rc, "".join(seen)


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def assert_identical_runs(a: Path, b: Path) -> None:
    ca, cb = read_checkpoint(a / "last.pt"), read_checkpoint(b / "last.pt")
    assert (ca["epoch"], ca["step"], ca["batch"]) == (cb["epoch"], cb["step"], cb["batch"])
    assert ca["model"].keys() == cb["model"].keys()
    for name in ca["model"]:
        assert torch.equal(ca["model"][name], cb["model"][name]), f"{name} differs after resume"
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[k][field], sb[k][field]), f"optimizer {k}.{field} differs"
    assert torch.equal(ca["rng"]["mask"], cb["rng"]["mask"])
    # the per-epoch metrics (all but the wall-clock seconds) agree too
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in ca["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in cb["history"]]
    assert ca["best_val_mse"] == cb["best_val_mse"]
    best_a, best_b = model_state(a / "best.pt"), model_state(b / "best.pt")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    # steps.csv: one row per step (rows written after the checkpoint a resume started from were dropped), with
    # the values of the uninterrupted run
    steps_a, steps_b = step_rows(a), step_rows(b)
    assert [int(r["step"]) for r in steps_b] == list(range(1, cb["step"] + 1))
    assert steps_a == steps_b


def step_rows(run: Path) -> list[dict[str, str]]:
    """steps.csv without its wall-clock column."""
    with open(run / "steps.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


RESUME = {"epochs": 8, "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 2},
          "sampling_changing_rate": 0.03, "warmup_epochs": 2}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[Path, Path]:
    """One uninterrupted run (8 epochs x 4 steps); config and run dir."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = write_config(tmp / "tiny.yaml", **RESUME)
    out = tmp / "run"
    res = run_cli("train", "--config", str(cfg), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return cfg, out


@pytest.mark.parametrize("save_every,kill_at", [(0, (3, 2)), (1, (3, 2))],
                         ids=["epoch-checkpoints", "mid-epoch-checkpoints"])
def test_resume_after_sigkill_is_bit_identical(reference_run, tmp_path, save_every, kill_at):
    cfg, ref = reference_run
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--out", str(out), "--set", f"save_every_steps={save_every}"]
    rc, log = run_until(args, *kill_at, sig=signal.SIGKILL)
    assert rc == -signal.SIGKILL
    killed = read_checkpoint(out / "last.pt")
    assert 0 < killed["step"] < 32, "expected a checkpoint from the middle of the run"
    assert not (out / "report.json").exists()
    # without --resume the run dir is refused; with --resume auto it continues and completes
    refused = run_cli(*args)
    assert refused.returncode != 0 and "--resume auto" in refused.stderr and "Traceback" not in refused.stderr
    res = run_cli(*args, "--resume", "auto")
    assert res.returncode == 0, res.stderr
    assert (out / "report.json").is_file()
    assert_identical_runs(ref, out)


def test_resume_after_ctrl_c_is_bit_identical(reference_run, tmp_path):
    cfg, ref = reference_run
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--out", str(out)]
    rc, log = run_until(args, 2, 2, sig=signal.SIGINT)
    assert rc == 130, log
    assert "resume with" in log and "Traceback" not in log
    stopped = read_checkpoint(out / "last.pt")
    assert 0 < stopped["step"] < 32
    res = run_cli(*args, "--resume", "auto")
    assert res.returncode == 0, res.stderr
    assert_identical_runs(ref, out)


@pytest.mark.parametrize("stop_step,where", [(5, (1, 1, 5)), (4, (0, 4, 4))], ids=["mid-epoch", "end-of-epoch"])
def test_resume_from_a_checkpoint_path_in_process(tmp_path, stop_step, where):
    """``train(..., resume=PATH)`` with a mid-epoch checkpoint, in process: the same final weights and metrics.
    Also the edge case of a checkpoint written after the last batch of an epoch, before its validation."""
    cfg = tiny_cfg(epochs=2, save_every_steps=1)
    assert train(cfg, tmp_path / "a", progress=False) == 0
    # a second run stopped after ``stop_step`` of its 8 steps by a requested stop (as Ctrl-C does)
    orig_save = Trainer.save

    def stop_after(self, name="last.pt"):
        orig_save(self, name)
        if self.step == stop_step:
            self.requests.stop = True

    mp = pytest.MonkeyPatch()
    mp.setattr(Trainer, "save", stop_after)
    try:
        assert train(cfg, tmp_path / "b", progress=False) == 130
    finally:
        mp.undo()
    mid = read_checkpoint(tmp_path / "b" / "last.pt")
    assert (mid["epoch"], mid["batch"], mid["step"]) == where
    (tmp_path / "b" / "mid.pt").write_bytes((tmp_path / "b" / "last.pt").read_bytes())
    assert train(cfg, tmp_path / "b", resume=str(tmp_path / "b" / "mid.pt"), progress=False) == 0
    assert_identical_runs(tmp_path / "a", tmp_path / "b")


def test_resume_refuses_a_changed_trajectory(tmp_path):
    cfg = tiny_cfg(epochs=1)
    assert train(cfg, tmp_path, progress=False) == 0
    with pytest.raises(TrainingError, match="lr"):
        Trainer(tiny_cfg(epochs=2, lr=0.5), tmp_path, resume="auto", progress=False)
    # epochs may change (continue a finished run for longer)
    trainer = Trainer(tiny_cfg(epochs=2), tmp_path, resume="auto", progress=False)
    assert trainer.epoch == 1 and trainer.step == 4
    # the message quotes values bounded (config.short): a long list is cut, not printed whole
    with pytest.raises(TrainingError, match=r"hidden_channels=\[16\], the config now says \[16, 16, .*\.\.\.") as info:
        Trainer(tiny_cfg(epochs=2, hidden_channels=[16] * 200), tmp_path, resume="auto", progress=False)
    assert len(str(info.value)) < 250


# =============================================================================================== atomic writes

def half_then_crash(monkeypatch, fail_on: int = 1):
    """Make ``torch.save`` (as the checkpoint module calls it) write half its bytes, then raise, on call
    number ``fail_on`` (1-based); earlier calls work."""
    import io

    real_save = torch.save
    calls = {"n": 0}

    def fake_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < fail_on:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(io_mod.torch, "save", fake_save)
    return calls


def test_crash_during_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    old = {"format": loading_mod.FORMAT, "version": 1, "w": torch.arange(10.0)}
    atomic_torch_save(old, target)
    before = target.read_bytes()
    half_then_crash(monkeypatch)
    with pytest.raises(WriteError, match="simulated.*the previous file is unchanged"):
        atomic_torch_save({"format": loading_mod.FORMAT, "version": 1, "w": torch.zeros(10**5)}, target)
    assert target.read_bytes() == before
    assert torch.equal(read_checkpoint(target)["w"], torch.arange(10.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no stray temporary file


def test_crash_during_a_first_write_leaves_nothing(tmp_path, monkeypatch):
    half_then_crash(monkeypatch)
    with pytest.raises(WriteError, match="nothing was written"):
        atomic_torch_save({"x": 1}, tmp_path / "new.pt")
    assert list(tmp_path.iterdir()) == []


def test_crash_mid_training_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_cfg(epochs=1, save_every_steps=1)
    out = tmp_path / "run"
    snapshots = {}
    real = io_mod.atomic_torch_save

    def spy(obj, path):
        real(obj, path)
        if Path(path).name == "last.pt":
            snapshots[obj["step"]] = Path(path).read_bytes()

    monkeypatch.setattr("stcsnn.train.loop.atomic_torch_save", spy)
    half_then_crash(monkeypatch, fail_on=3)  # the third save (step 3) dies half-way
    with pytest.raises(WriteError, match="simulated"):
        train(cfg, out, progress=False)
    assert (out / "last.pt").read_bytes() == snapshots[2]
    good = read_checkpoint(out / "last.pt")
    assert good["step"] == 2
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # and the run resumes from it
    monkeypatch.undo()
    assert train(cfg, out, resume="auto", progress=False) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 4


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    cfg = tiny_cfg(epochs=1)
    assert train(cfg, tmp_path, progress=False) == 0
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an stcsnn checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")


# =============================================================================================== NaN guard

def test_nan_loss_stops_and_leaves_last_pt_untouched(tmp_path, monkeypatch):
    from stcsnn.train.loop import RolloutLoss

    cfg = tiny_cfg(epochs=2, save_every_steps=1)
    out = tmp_path / "run"
    real_forward = RolloutLoss.forward
    calls = {"n": 0}
    snapshot = {}

    def forward(self, frames, mask):
        calls["n"] += 1
        loss, rates = real_forward(self, frames, mask)
        if calls["n"] == 6:  # epoch 2, batch 2
            snapshot["last"] = (out / "last.pt").read_bytes()
            # the run's lock file (held while it runs, removed when it ends) aside
            snapshot["files"] = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".stcsnn.lock"}
            return loss * float("nan"), rates
        return loss, rates

    monkeypatch.setattr(RolloutLoss, "forward", forward)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 6.*last\.pt \(step 5\) is untouched"):
        train(cfg, out, progress=False)
    assert (out / "last.pt").read_bytes() == snapshot["last"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == snapshot["files"]
    assert read_checkpoint(out / "last.pt")["step"] == 5
    assert not (out / "report.json").exists()


def test_infinite_loss_stops_through_the_cli(tmp_path, monkeypatch, capsys):
    from stcsnn.cli import main
    from stcsnn.train.loop import RolloutLoss

    cfg = write_config(tmp_path / "c.yaml", epochs=1)
    real_forward = RolloutLoss.forward

    def forward(self, frames, mask):
        loss, rates = real_forward(self, frames, mask)
        return loss + float("inf"), rates

    monkeypatch.setattr(RolloutLoss, "forward", forward)
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: loss became inf") and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_from_mismatched_or_weights_only_checkpoints(tmp_path):
    cfg = tiny_cfg(epochs=1)
    assert train(cfg, tmp_path / "run", progress=False) == 0
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    bad = dict(ckpt, model={k: torch.zeros(3) for k in ckpt["model"]})  # same keys, other shapes
    torch.save(sealed(bad), tmp_path / "bad.pt")  # checksums of the wrong weights: the fit, not them, is refused
    with pytest.raises(TrainingError, match="do not fit"):
        Trainer(cfg, tmp_path / "new", resume=str(tmp_path / "bad.pt"), progress=False)
    weights = {k: ckpt[k] for k in ("format", "version", "config", "model")}
    torch.save(weights, tmp_path / "weights.pt")
    with pytest.raises(TrainingError, match="no training state"):
        Trainer(cfg, tmp_path / "new", resume=str(tmp_path / "weights.pt"), progress=False)


# =============================================================================================== a finished run

def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry of ``folder`` (recursively): its bytes and modification time (directories: b"" and theirs)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_resume_auto_of_a_complete_run_says_so_and_changes_nothing(tmp_path, capsys):
    from stcsnn.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 1}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--quiet"]) == 0
    before = _snapshot(run)
    capsys.readouterr()
    for args in (["--out", str(run)], ["--config", str(cfg), "--out", str(run)]):
        assert main(["train", *args, "--resume", "auto"]) == 0
        out = capsys.readouterr()
        assert out.out == (f"{run} is complete (epoch 1 of 1, report.json written); nothing to do -- use --set "
                           "epochs=M (M > 1) to extend it\n")
        assert "test (" not in out.out + out.err
        assert _snapshot(run) == before  # not re-evaluated: every file byte-identical, not even rewritten
    # given more epochs, it trains on
    assert main(["train", "--out", str(run), "--resume", "auto", "--set", "epochs=2", "--quiet"]) == 0
    assert read_checkpoint(run / "last.pt")["epoch"] == 2 and "test (best.pt)" in capsys.readouterr().out


def test_a_run_whose_report_is_missing_is_evaluated_again(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(tiny_cfg(epochs=1), run, progress=False) == 0
    for name in ("report.json", "report.md", "predictions.png"):  # a crash before the report was written
        (run / name).unlink(missing_ok=True)
    capsys.readouterr()
    assert train(tiny_cfg(epochs=1), run, resume="auto", progress=False) == 0
    assert "test (best.pt)" in capsys.readouterr().out and (run / "report.json").is_file()


# =============================================================================================== threads

def test_a_resumed_run_restores_its_thread_count_unless_one_is_given(tmp_path, capsys):
    from stcsnn.threads import ThreadChoice

    before = torch.get_num_threads()
    run = tmp_path / "run"
    try:
        torch.set_num_threads(1)
        assert train(tiny_cfg(epochs=1), run, progress=False) == 0
        assert yaml.safe_load((run / "config.yaml").read_text())["threads"] == 1
        # an automatic choice of 2 on resume: the run's own count comes back
        torch.set_num_threads(2)
        auto = ThreadChoice(2, "auto: 2 usable CPU(s), 0.0 busy with other work")
        capsys.readouterr()
        assert train(tiny_cfg(epochs=2), run, resume="auto", thread_choice=auto, tune_threads=True) == 0
        assert torch.get_num_threads() == 1
        assert capsys.readouterr().err.count("threads: 1 (restored: the count the run started with)") == 1
        # an explicit count wins, and the run says what it had
        torch.set_num_threads(2)
        given = ThreadChoice(2, "--threads 2")
        assert train(tiny_cfg(epochs=3), run, resume="auto", thread_choice=given) == 0
        assert torch.get_num_threads() == 2
        assert capsys.readouterr().err.count("threads: 2 (--threads 2; the run had used 1)") == 1
        # the config key, given anew on resume, counts as well
        assert train(tiny_cfg(epochs=4, threads=1), run, resume="auto", thread_choice=auto) == 0
        assert torch.get_num_threads() == 1
        assert capsys.readouterr().err.count("threads: 1 (config key threads)") == 1
        assert train(tiny_cfg(epochs=5), run, resume="auto", thread_choice=auto) == 0
        assert capsys.readouterr().err.count("threads: 1 (restored: the count the run started with)") == 1
    finally:
        torch.set_num_threads(before)
    with open(run / "steps.csv", newline="") as f:
        assert [int(r["threads"]) for r in csv.DictReader(f)] == [1] * 8 + [2] * 4 + [1] * 8
    assert yaml.safe_load((run / "config.yaml").read_text())["threads"] == 1
    report = __import__("json").loads((run / "report.json").read_text())
    assert report["threads"] == 1 and report["world_size"] == 1
    assert "trained on 1 process, 1 CPU thread(s) each" in (run / "report.md").read_text()


# =============================================================================================== gradient norms

def test_steps_csv_records_the_global_gradient_norm_before_clipping(tmp_path, monkeypatch):
    """The norm of the gradient Adam receives (grad_clip unset: unclipped), computed here independently, is
    steps.csv's grad_norm; with a grad_clip the column holds the norm before clipping (> the clip)."""
    seen: list[float] = []
    real = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        grads = [p.grad.flatten().double() for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        seen.append(float(torch.cat(grads).norm()))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    assert train(tiny_cfg(epochs=1), tmp_path / "free", progress=False) == 0
    with open(tmp_path / "free" / "steps.csv", newline="") as f:
        norms = [float(r["grad_norm"]) for r in csv.DictReader(f)]
    assert len(norms) == 4 and norms == pytest.approx(seen, rel=1e-5)
    seen.clear()
    clip = min(norms) / 2  # every step is clipped
    assert train(tiny_cfg(epochs=1, grad_clip=clip), tmp_path / "clipped", progress=False) == 0
    with open(tmp_path / "clipped" / "steps.csv", newline="") as f:
        clipped = [float(r["grad_norm"]) for r in csv.DictReader(f)]
    assert clipped[0] == pytest.approx(norms[0], rel=1e-6)  # the same first step: the norm before clipping
    assert all(n > clip for n in clipped) and seen == pytest.approx([clip] * 4, rel=1e-4)  # what Adam got
