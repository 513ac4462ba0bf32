"""Adding a neuron is one file outside the package (docs/examples/my_neuron.py): it trains through the Python API
and through ``stcsnn train`` with a config naming it, alone and wrapped with STC(...)."""

from __future__ import annotations

import importlib
import json
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


def test_a_checkpoint_records_its_plugin_and_loading_it_without_names_the_plugin(my_neuron, tmp_path):
    """train (the plugin imported) -> eval / predict / export in fresh processes: without --plugin one error line
    naming the --plugin the checkpoint was trained with; with it (by module name or by file path) they work,
    and the exported folder records the plugin too."""
    import numpy as np

    from stcsnn.models.checkpoint import PLUGINS

    cfg = make_config({**TINY, "neuron": "stc_my_lif", "data_options": {"num_samples": 8, "canvas_size": 32}})
    assert train(cfg, tmp_path / "run", progress=False) == 0
    ckpt = tmp_path / "run" / "best.pt"
    record = torch.load(ckpt, weights_only=True)
    assert record[PLUGINS] == [{"module": "my_neuron", "file": "my_neuron.py"}]
    c, h, w = record["config"]["frame_shape"]
    np.save(tmp_path / "in.npy", np.random.default_rng(0).random((2, 3, c, h, w), dtype=np.float32))
    commands = {
        "eval": ["eval", "--checkpoint", str(ckpt)],
        "predict": ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "in.npy"), "--output",
                    str(tmp_path / "pred.npy"), "--device", "cpu"],
        "export": ["export", str(ckpt), "--out", str(tmp_path / "export")],
    }
    # a fresh process where my_neuron is importable but not imported: the checkpoint names it, nothing runs it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    want = ("error: unknown neuron 'stc_my_lif': this checkpoint was trained with --plugin my_neuron "
            "(or ./my_neuron.py); pass it to this command")
    for name, args in commands.items():
        r = subprocess.run([sys.executable, "-m", "stcsnn", *args], capture_output=True, text=True, timeout=300,
                           env=env, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(want), (name, r.stderr)
    assert not (tmp_path / "pred.npy").exists() and not (tmp_path / "export").exists()
    for name, args in commands.items():
        plugin = str(EXAMPLES / "my_neuron.py") if name == "predict" else "my_neuron"  # by path, by name
        r = subprocess.run([sys.executable, "-m", "stcsnn", "--plugin", plugin, *args], capture_output=True,
                           text=True, timeout=300, env=env, cwd=tmp_path)
        assert r.returncode == 0, (name, r.stderr)
    assert np.load(tmp_path / "pred.npy").shape[0] == 2
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert exported[PLUGINS] == [{"module": "my_neuron", "file": "my_neuron.py"}]
    # the exported folder without the plugin: the same message, about the export
    code = f"import stcsnn; stcsnn.load_model({str(tmp_path / 'export')!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0 and "unknown neuron 'stc_my_lif': this export was trained with --plugin my_neuron " \
        "(or ./my_neuron.py)" in r.stderr


def test_a_built_in_neuron_records_no_plugin():
    from stcsnn.models.checkpoint import PLUGINS, model_checkpoint

    cfg = make_config({**TINY, "neuron": "stc_lif", "frame_shape": [1, 16, 16]})
    assert PLUGINS not in model_checkpoint(stcsnn.build_model(cfg), cfg)
    assert get_spec("stc_lif").module == "stcsnn.neurons.stc" and get_spec("lif").module == "stcsnn.neurons.lif"


def test_a_malformed_plugins_record_gives_the_plain_unknown_neuron_error():
    from stcsnn.errors import StcsnnError
    from stcsnn.models.loading import require_neuron

    for record in (None, "my_neuron", [{"module": 5}], [["my_neuron"]], [{"module": ""}]):
        with pytest.raises(StcsnnError, match="unknown neuron 'stc_nope'") as info:
            require_neuron("stc_nope", record, "checkpoint 'x.pt'")
        assert "trained with" not in str(info.value)
    with pytest.raises(StcsnnError) as info:  # a hostile name is shortened, not echoed whole
        require_neuron("stc_nope", [{"module": "m" * 10_000, "file": "f.py"}], "checkpoint 'x.pt'")
    assert "trained with --plugin mmm" in str(info.value) and len(str(info.value)) < 400
