"""The CUDA paths, and the device logic that decides them.

Each test that runs a model takes ``device`` in ``["cpu", "cuda"]``: the CPU half runs everywhere (it proves the
test itself works and holds on the CPU), the CUDA half is marked ``cuda`` and skipped without a CUDA device.
``pytest -m cuda tests/test_cuda.py`` runs only the GPU half (``benchmarks/gpu.sh`` runs the whole file).

The device choice (``pick_device``) and the DDP setup order (``setup_runtime``) are checked on the CPU with
CUDA's availability and torch.distributed's calls replaced: they are logic about names and call order, and
run for real only on a machine with several GPUs.
"""

from __future__ import annotations

import re

import pytest
import torch
from helpers import tiny_cfg

import stcsnn
from stcsnn.config import make_config
from stcsnn.device import grad_scaler, pick_device
from stcsnn.errors import ConfigError
from stcsnn.models import build_model, plain_rollout
from stcsnn.train.objective import rollout_loss

CUDA = torch.cuda.is_available()
ON_CUDA = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=ON_CUDA)]


def model_config(neuron: str, **over):
    return make_config({"neuron": neuron, "hidden_channels": [16, 16], "kernel_size": 3, "patch_size": 2,
                        "frame_shape": [1, 16, 16], "input_frames": 3, "output_frames": 3, "seed": 0, **over})


def frames(device, dtype=torch.float32, n: int = 2, t: int = 6, seed: int = 0) -> torch.Tensor:
    # made on the CPU from a seeded generator, then moved: both devices see the same numbers
    x = torch.rand(n, t, 1, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    return x.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------- fast path = plain


@pytest.mark.parametrize("neuron", ["lif", "stc_lif"])
@pytest.mark.parametrize("device", DEVICES)
def test_fast_path_equals_plain_in_float64(device, neuron):
    """Outputs and every gradient of the fast rollout equal the plain one's (float64: the paths round
    differently, no membrane lies within rounding of its threshold; see tests/test_fast_path.py)."""
    model = build_model(model_config(neuron)).to(device=device, dtype=torch.float64)
    results = []
    for plain in (False, True):
        model.zero_grad(set_to_none=True)
        x = frames(device, torch.float64)
        out = plain_rollout(model, x, 3, 3) if plain else model.rollout(x, 3, 3)
        out.frames.square().mean().backward()
        results.append((out.frames.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fast, g_fast), (ref, g_ref) = results
    assert fast.device.type == device and ref.abs().max() > 0
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-9 * ref.abs().max().item())
    scale = max(g.abs().max().item() for g in g_ref.values())
    for name, g in g_ref.items():
        torch.testing.assert_close(g_fast[name], g, rtol=1e-9, atol=1e-9 * scale, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_fast_path_equals_plain_in_float32(device, monkeypatch):
    """The same in float32, inference, with TF32 convolutions off (TF32 rounds to 10 bits: a different test;
    the model has no matmul)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = build_model(model_config("stc_lif")).to(device).eval()
    x = frames(device)
    with torch.no_grad():
        fast, ref = model.rollout(x, 3, 3), plain_rollout(model, x, 3, 3)
    torch.testing.assert_close(fast.frames, ref.frames, rtol=1e-4, atol=1e-4 * ref.frames.abs().max().item())
    torch.testing.assert_close(fast.rates, ref.rates, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------- autocast


AMP_CASES = [("cpu", "bf16"), pytest.param("cuda", "bf16", marks=ON_CUDA), pytest.param("cuda", "fp16", marks=ON_CUDA)]


@pytest.mark.parametrize(("device", "amp"), AMP_CASES)
def test_autocast_training_loss_is_finite_and_falls(device, amp):
    """A few optimizer steps on one batch under autocast (fp16 with the run's gradient scaler, as the trainer
    does): every loss finite, the last below the first. fp16 needs CUDA (its scaler exists only there)."""
    cfg = model_config("stc_lif", amp=amp, device=device)
    dev = torch.device(device)
    model = build_model(cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    scaler = grad_scaler(dev, amp)
    x = frames(dev, seed=1) / 2  # in [0, 1], as data
    losses = []
    for _ in range(12):
        opt.zero_grad(set_to_none=True)
        with stcsnn.device.autocast(dev, amp):
            loss, _ = rollout_loss(model, x, cfg)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses


# ---------------------------------------------------------------------------------- checkpoint and back


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_written_on_the_device_loads_on_the_cpu_and_back(device, tmp_path):
    """A real training run on ``device`` (the trainer's loop: pinned loader memory, cuDNN autotuning on CUDA)
    writes last.pt; it loads on the CPU and on the device with bitwise-equal weights, and (float64) both
    predict the same frames."""
    run = tmp_path / "run"
    assert stcsnn.train.train(tiny_cfg(epochs=1, device=device, dtype="float64"), run, progress=False) == 0
    on_cpu, cfg = stcsnn.load_model(run / "last.pt", "cpu")
    on_dev, _ = stcsnn.load_model(run / "last.pt", device)
    assert next(on_dev.parameters()).device.type == device
    cpu_state, dev_state = on_cpu.state_dict(), on_dev.state_dict()
    assert set(cpu_state) == set(dev_state)
    for name, t in cpu_state.items():
        assert t.device.type == "cpu"
        assert torch.equal(t, dev_state[name].cpu()), name
    x = torch.rand(2, cfg.input_frames, *cfg.frame_shape, generator=torch.Generator().manual_seed(2),
                   dtype=torch.float64)
    with torch.no_grad():
        a, b = on_cpu(x, 3), on_dev(x.to(device), 3).cpu()
    torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("device", DEVICES)
def test_metrics_accumulated_on_the_device_equal_the_cpu_ones(device):
    from stcsnn.metrics import MetricAccumulator

    g = torch.Generator().manual_seed(4)
    batches = [(torch.rand(3, 4, 1, 16, 16, generator=g, dtype=torch.float64).float(),
                torch.rand(3, 4, 1, 16, 16, generator=g, dtype=torch.float64).float()) for _ in range(2)]
    names = ("mse", "mae", "ssim", "psnr")
    on_dev, on_cpu = MetricAccumulator(names, device=device), MetricAccumulator(names, device="cpu")
    for pred, true in batches:
        on_dev.update(pred.to(device), true.to(device))
        on_cpu.update(pred, true)
    got, want = on_dev.compute(), on_cpu.compute()
    assert on_dev.count == on_cpu.count == 6
    for name in names:
        assert got[name] == pytest.approx(want[name], rel=1e-5), name


# ---------------------------------------------------------------------------------------- step = rollout


@pytest.mark.parametrize("neuron", ["lif", "stc_lif"])
@pytest.mark.parametrize("device", DEVICES)
def test_step_by_step_equals_the_rollout(device, neuron):
    model = build_model(model_config(neuron)).to(device=device, dtype=torch.float64).eval()
    x = frames(device, torch.float64, t=3)
    with torch.no_grad():
        ref = model(x, 3)
        state = None
        for t in range(3):
            pred, state = model.step(x[:, t], state)
        preds = [pred]
        for _ in range(2):
            pred, state = model.step(pred, state)
            preds.append(pred)
    assert ref.device.type == device
    torch.testing.assert_close(torch.stack(preds, 1), ref, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------- analyze --device

ANALYSIS_CONFIG = """\
dataset: embedded
data_options: {canvas_size: 32, num_samples: 4, val_samples: 2, test_samples: 4}
neuron: stc_lif
hidden_channels: [16]
kernel_size: 3
patch_size: 4
input_frames: 3
output_frames: 2
"""


@pytest.mark.parametrize("device", DEVICES)
def test_analyze_gradients_and_dynamics_run_on_the_device(device, tmp_path):
    """The commands whose summaries (quantiles) and region histograms made CPU tensors beside CUDA ones."""
    import csv

    from stcsnn.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(ANALYSIS_CONFIG)
    assert main(["analyze", "gradients", "--config", str(config), "--neurons", "lif,stc_lif", "--batch-size", "2",
                 "--device", device, "--out", str(tmp_path / "g")]) == 0
    assert main(["analyze", "dynamics", "--config", str(config), "--batch-size", "2", "--device", device,
                 "--out", str(tmp_path / "d")]) == 0
    with open(tmp_path / "g" / "gradients.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["factor_median"] for r in rows if r["step"] != "0" and r["neuron"] == "stc_lif")
    with open(tmp_path / "d" / "gains.csv") as f:
        gains = list(csv.DictReader(f))
    assert {r["gain"] for r in gains} == {"temporal", "spatial"}
    assert all(0.0 <= float(r["gain_median"]) <= 2.0 for r in gains)


# ------------------------------------------------------------- device choice and DDP setup (CPU, faked)


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(("name", "local_rank", "want"), [
    ("cuda", 0, "cuda:0"), ("cuda", 3, "cuda:3"), ("auto", 2, "cuda:2"),
    ("cuda:1", 0, "cuda:1"), ("cuda:2", 1, "cuda:3"), ("cpu", 3, "cpu"),
])
def test_each_rank_takes_its_own_gpu(monkeypatch, name, local_rank, want):
    fake_gpus(monkeypatch, 4)
    assert pick_device(name, local_rank) == torch.device(want)


@pytest.mark.parametrize(("name", "local_rank", "message"), [
    ("cuda:4", 0, "'cuda:4' is GPU 4, but only 4 CUDA device(s) are visible (GPUs 0..3)"),
    ("cuda:2", 2, "'cuda:2' + local rank 2 is GPU 4, but only 4 CUDA device(s) are visible"),
    ("cuda:x", 0, "device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    ("gpu", 0, "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_a_gpu_that_is_not_there_is_one_clear_error(monkeypatch, name, local_rank, message):
    fake_gpus(monkeypatch, 4)
    with pytest.raises(ConfigError, match=re.escape(message)):
        pick_device(name, local_rank)


def test_cuda_without_cuda_names_the_cpu():
    if CUDA:
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        pick_device("cuda:1")


def test_ddp_rank_sets_its_gpu_before_joining_the_process_group(monkeypatch):
    """Under torchrun (rank 1 of 2, LOCAL_RANK 1), device: cuda -> cuda:1, set as the current device before
    init_process_group (NCCL binds the communicator to it), which gets device_id where torch takes it."""
    import inspect

    import torch.distributed as dist

    from stcsnn.train.runtime import setup_runtime

    fake_gpus(monkeypatch, 2)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    real_signature = inspect.signature(dist.init_process_group)

    def init_process_group(**kwargs):
        real_signature.bind(**kwargs)  # the arguments the installed torch takes
        calls.append(("init_process_group", kwargs))

    init_process_group.__signature__ = real_signature  # what runtime inspects for device_id
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    for key, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    rt = setup_runtime(tiny_cfg(device="cuda"))
    assert (rt.rank, rt.world, rt.local_rank, rt.device, rt.backend) == (1, 2, 1, torch.device("cuda:1"), "nccl")
    want = {"backend": "nccl"}
    if "device_id" in real_signature.parameters:
        want["device_id"] = torch.device("cuda:1")
    assert calls == [("set_device", torch.device("cuda:1")), ("init_process_group", want)]
    assert torch.backends.cudnn.benchmark is True


def test_cpu_runtime_leaves_cudnn_alone(monkeypatch):
    from stcsnn.train.runtime import setup_runtime

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    rt = setup_runtime(tiny_cfg(device="cpu"))
    assert rt.device == torch.device("cpu") and torch.backends.cudnn.benchmark is False


def test_gpu_script_parses():
    """benchmarks/gpu.sh is valid bash (its full CPU check, GPU_SH_CPU=1, runs every part in about a minute)."""
    import shutil
    import subprocess
    from pathlib import Path

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.sh"
    subprocess.run([bash, "-n", str(script)], check=True)
