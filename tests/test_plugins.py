"""Adding a neuron is one file outside the package (docs/examples/my_neuron.py): it trains through the Python API
and through ``stcsnn train`` with a config naming it, alone and wrapped with STC(...)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import stcsnn
from stcsnn.config import make_config
from stcsnn.neurons import NEURONS, STC, get_spec
from stcsnn.train.loop import train

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
TINY = {"dataset": "embedded", "data_options": {"num_samples": 8}, "input_frames": 3,
        "output_frames": 2, "hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "batch_size": 4,
        "epochs": 1, "steps_per_epoch": 2, "max_val_batches": 1, "max_test_batches": 1, "num_visualize": 1,
        "warmup_epochs": 0, "device": "cpu"}


@pytest.fixture
def my_neuron(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module = importlib.import_module("my_neuron")
    yield module
    for name in ("my_lif", "stc_my_lif"):
        NEURONS.pop(name, None)
    sys.modules.pop("my_neuron", None)


@pytest.mark.parametrize("name", ["my_lif", "stc_my_lif"])
def test_a_user_neuron_trains_through_the_python_api(my_neuron, name, tmp_path):
    cfg = make_config({**TINY, "neuron": name})
    model = stcsnn.build_model(cfg)
    assert all(type(c) is (STC if name.startswith("stc_") else my_neuron.MyLIF) for c in model.cells)
    assert get_spec(name).is_stc == name.startswith("stc_")
    assert not model.cells[0].has_fused_update()  # no fused function: the fast path runs its update
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert train(cfg, tmp_path / "run", progress=False) == 0
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["step"] == 2
    changed = [k for k, v in last["model"].items() if not torch.equal(v, before[k])]
    assert changed  # the two steps moved the weights


def test_a_user_neuron_trains_through_the_cli(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "neuron": "stc_my_lif"}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "stcsnn", "--plugin", "my_neuron", "train", "--config", str(cfg),
           "--out", str(tmp_path / "run"), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "report.json").is_file()
    # without the plugin the name is unknown: one error line, no code imported from the config
    bare = [sys.executable, "-m", "stcsnn", "train", "--config", str(cfg), "--out", str(tmp_path / "other")]
    r = subprocess.run(bare, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown neuron 'stc_my_lif'" in r.stderr


def test_a_plugin_that_cannot_be_imported_is_one_error_line():
    r = subprocess.run([sys.executable, "-m", "stcsnn", "--plugin", "no_such_plugin_module", "neurons"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: cannot import plugin 'no_such_plugin_module'")
    assert "Traceback" not in r.stderr
