"""DDP on CPU (gloo): 2 processes under torchrun follow the same trajectory as 1 process with the same global
batch, and rank 0 alone writes and logs.

The two runs compute per-rank batches of another shape, so oneDNN may pick other convolution kernels: they agree
only to rounding, and in float32 a rounding difference can flip a spike on some CPU. So both train in float64
(``dtype: float64``), where the parameters agree to ~1e-15; the tolerance below leaves room for Adam's division by
small second moments."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from stcsnn.models.loading import read_checkpoint

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "dataset": "embedded",
    "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 2},
    "neuron": "stc_lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
    "input_frames": 3, "output_frames": 3, "batch_size": 4, "epochs": 2, "warmup_epochs": 0, "lr": 5e-3,
    # eta falls fast, so the scheduled-sampling masks mix true frames and predictions across the batch
    "sampling_changing_rate": 0.15, "seed": 0, "device": "cpu", "num_visualize": 1, "dtype": "float64",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    e["PYTHONPATH"] = str(REPO / "src") + os.pathsep + e.get("PYTHONPATH", "")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):  # never inherit a launcher's
        e.pop(key, None)
    return e


def command(nproc: int, *args: str) -> list[str]:
    """``python -m stcsnn ARGS``, under torchrun with ``nproc`` processes when more than one."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
                "--master_port", str(free_port())] if nproc > 1 else []
    return [sys.executable, *launcher, "-m", "stcsnn", *args]


def run(nproc: int, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run(command(nproc, *args), capture_output=True, text=True, env=env(), cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


def train(cfg: Path, out: Path, nproc: int, quiet: bool = True) -> subprocess.CompletedProcess:
    return run(nproc, "train", "--config", str(cfg), "--out", str(out), *(["--quiet"] if quiet else []))


def compare(one: Path, two: Path, atol: float = 1e-9) -> None:
    a, b = read_checkpoint(one / "last.pt"), read_checkpoint(two / "last.pt")
    assert a["step"] == b["step"] == 4
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert a["model"][name].dtype == b["model"][name].dtype == torch.float64, name
        assert torch.allclose(a["model"][name], b["model"][name], rtol=0, atol=atol), (
            f"{name}: max diff {(a['model'][name] - b['model'][name]).abs().max().item():.3g}")
    losses_a = [row["train_loss"] for row in a["history"]]
    losses_b = [row["train_loss"] for row in b["history"]]
    assert losses_a == pytest.approx(losses_b, rel=1e-9)
    assert [row["eta"] for row in a["history"]] == [row["eta"] for row in b["history"]]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp / "one"
    train(cfg, out, 1)
    return cfg, out


def test_two_processes_match_one(single, tmp_path):
    cfg, one = single
    two = tmp_path / "two"
    res = train(cfg, two, 2, quiet=False)
    compare(one, two)
    # the run says, and records, that it trained on 2 processes (a record: one process may resume it)
    assert res.stderr.count("training on 2 processes (DDP, gloo)") == 1, res.stderr[-2000:]
    for run, world in ((one, 1), (two, 2)):
        assert yaml.safe_load((run / "config.yaml").read_text())["world_size"] == world
        assert json.loads((run / "report.json").read_text())["world_size"] == world
        assert f"trained on {world} process{'es (DDP)' if world > 1 else ''}," in (run / "report.md").read_text()
    # the gradient norms of steps.csv are those of the averaged gradient: the one-process values
    norms = [[float(r["grad_norm"]) for r in csv.DictReader(open(run / "steps.csv"))] for run in (one, two)]
    assert len(norms[0]) == 4 and norms[0] == pytest.approx(norms[1], rel=1e-6)
    # rank 0 alone reports and writes: one test line, one set of files, no temporary leftovers
    assert res.stdout.count("test (best.pt): MSE") == 1, res.stdout
    names = sorted(p.name for p in two.iterdir())
    assert names == sorted(p.name for p in one.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]
    # and the weights did move away from the initialisation during those 4 steps
    torch.manual_seed(0)
    from stcsnn.config import load_config
    from stcsnn.models import build_model

    init = build_model(load_config(one / "config.yaml")).state_dict()
    trained = read_checkpoint(two / "last.pt")["model"]
    assert any(not torch.allclose(init[k], trained[k], atol=1e-4) for k in init)


def test_two_processes_with_frozen_parameters(single, tmp_path):
    """GLIF keeps its gates frozen by default; DDP must still train it (and match 1 process)."""
    cfg, _ = single
    glif = tmp_path / "glif.yaml"
    glif.write_text(yaml.safe_dump({**TINY, "neuron": "stc_glif"}))
    train(glif, tmp_path / "two", 2)
    train(glif, tmp_path / "one", 1)
    compare(tmp_path / "one", tmp_path / "two")


def test_run_destroys_only_the_process_group_it_created(monkeypatch, tmp_path):
    """A finished run destroys the group it created (left to the interpreter's exit, gloo's threads can abort a
    rank that succeeded: pytorch/pytorch#190489); a group the caller made before calling train() is the caller's.
    A real one-process gloo group, in this process."""
    import torch.distributed as dist

    from stcsnn.config import Config
    from stcsnn.train.runtime import close_runtime, setup_runtime

    for key, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    cfg = Config(**{**TINY, "data_options": dict(TINY["data_options"])})
    created, real_init = [], dist.init_process_group

    def init_process_group(**kwargs):  # the launcher's two processes, as one: a group of world size 1
        created.append(kwargs)
        real_init(kwargs["backend"], init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)

    assert not dist.is_initialized()
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    rt = setup_runtime(cfg)
    assert created == [{"backend": "gloo"}] and rt.owns_group and dist.is_initialized()
    close_runtime(rt)
    assert not dist.is_initialized() and not rt.owns_group

    # the caller's own group: joined, used, and left standing
    real_init("gloo", init_method=f"file://{tmp_path / 'rendezvous2'}", rank=0, world_size=1)
    try:
        rt = setup_runtime(cfg)
        assert rt.backend == "gloo" and not rt.owns_group
        close_runtime(rt)
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_sigterm_stops_both_ranks_at_one_step_and_saves(tmp_path):
    """SIGTERM to torchrun (a scheduler's pre-emption) reaches both ranks; they agree on the step to stop at,
    rank 0 saves last.pt there and says so once, and both leave through the process group's orderly end (no
    rank aborts at exit). The same two processes resume it."""
    import signal
    import time

    cfg = tmp_path / "long.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 100000}))
    out = tmp_path / "run"
    proc = subprocess.Popen(command(2, "train", "--config", str(cfg), "--out", str(out), "--quiet"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        # metrics.csv gets its first row at the end of epoch 1: both ranks are training
        while time.monotonic() < deadline and proc.poll() is None and not (
                (out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > 1):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert stderr.count("SIGTERM: finishing this step, saving last.pt") == 1, stderr[-3000:]
    assert stderr.count("resume with: stcsnn train --out") == 1, stderr[-3000:]
    assert "terminate called" not in stderr and "SIGABRT" not in stderr, stderr[-3000:]
    saved = read_checkpoint(out / "last.pt")
    assert saved["step"] >= 2 and saved["step"] == 2 * saved["epoch"] + saved["batch"]  # 2 batches an epoch
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".last.pt.")]
    # resumed by the same two processes, to the end of the next epoch (epochs is a key a resume may change)
    end = saved["epoch"] + 1
    res = run(2, "train", "--out", str(out), "--resume", "auto", "--set", f"epochs={end}", "--quiet")
    assert res.stdout.count("test (best.pt): MSE") == 1, res.stdout
    assert read_checkpoint(out / "last.pt")["step"] == 2 * end
