"""``dtype: float64``: the parameters, the rollout, the loss and the reduced loss are float64 end to end (what the
DDP test relies on to compare 2 processes with 1 past float32 rounding); it is refused with ``amp``, is part of
the model (eval cannot relabel it) and survives a checkpoint and an export."""

from __future__ import annotations

import pytest
import torch
import yaml
from helpers import TINY, one_error, tiny_cfg

from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.errors import ConfigError
from stcsnn.models import build_model
from stcsnn.models.loading import load_model, read_checkpoint
from stcsnn.train.objective import rollout_loss


def test_float64_model_computes_in_float64():
    cfg = tiny_cfg(dtype="float64", frame_shape=[1, 32, 32])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    frames = torch.rand(2, 6, 1, 32, 32)  # float32 data, as the loaders give it
    loss, _ = rollout_loss(model, frames, cfg)
    assert loss.dtype == torch.float64
    # the same as feeding float64 frames: the float32 data are cast once, exactly
    ref, _ = rollout_loss(model, frames.double(), cfg)
    assert loss.item() == ref.item()
    # the default stays float32, also when it loads float64 weights
    f32 = build_model(tiny_cfg(frame_shape=[1, 32, 32]))
    f32.load_state_dict(model.state_dict())
    assert {p.dtype for p in f32.parameters()} == {torch.float32}
    assert rollout_loss(f32, frames, cfg)[0].dtype == torch.float32
    pred, state = model.step(frames[:, 0])
    assert pred.dtype == torch.float64 and all(t.dtype == torch.float64 for s in state for t in s)


def test_float64_with_amp_is_refused():
    with pytest.raises(ConfigError, match="amp.*bf16.*float64"):
        make_config({**TINY, "dtype": "float64", "amp": "bf16"})
    with pytest.raises(ConfigError, match="dtype"):
        make_config({**TINY, "dtype": "float16"})


def test_float64_run_checkpoint_export_and_eval(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "dtype": "float64", "epochs": 1}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--quiet"]) == 0
    saved = read_checkpoint(run / "last.pt")
    assert {t.dtype for t in saved["model"].values() if t.is_floating_point()} == {torch.float64}
    model, loaded_cfg = load_model(run / "best.pt")
    assert loaded_cfg.dtype == "float64" and model.readout.weight.dtype == torch.float64
    assert main(["export", str(run / "best.pt"), "--out", str(tmp_path / "export")]) == 0
    exported, _ = load_model(tmp_path / "export")
    assert exported.readout.weight.dtype == torch.float64
    assert torch.equal(exported.readout.weight, model.readout.weight)
    capsys.readouterr()
    # the weights are float64: a report labelled float32 would be false
    rc = main(["eval", "--checkpoint", str(run / "best.pt"), "--set", "dtype=float32", "--out", str(tmp_path / "e")])
    assert "dtype" in one_error(capsys, rc)
