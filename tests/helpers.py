"""Pieces shared by the tests: the one-error-line assertion, the tiny training config, loading a script."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from stcsnn.config import Config, make_config


def load_file(path: Path, name: str) -> ModuleType:
    """The Python file ``path`` (a script, an example: not a package module) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_error(capsys, rc: int) -> str:
    """The command failed as an expected failure should: exit status 2, exactly one ``error:`` line on stderr,
    no traceback anywhere. Returns the line."""
    out = capsys.readouterr()
    assert rc == 2, (rc, out.err)
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.err + out.out
    return lines[0]


#: A run that trains in about a second: 32x32 frames, one layer of 16, 3 -> 3 frames, 2 epochs of batch 2.
TINY = {
    "dataset": "embedded",
    "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 2},
    "neuron": "stc_lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
    "input_frames": 3, "output_frames": 3, "batch_size": 2, "epochs": 2, "warmup_epochs": 1,
    "sampling_changing_rate": 0.02, "seed": 0, "device": "cpu", "num_visualize": 1, "log_every": 1,
}


def tiny_cfg(**over) -> Config:
    return make_config({**TINY, **over})
