"""Configs are validated completely before any work; hostile configs and checkpoints are refused at once; reports
state what was really evaluated; ``eval`` refuses overrides that would mislabel a checkpoint's model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import one_error

from stcsnn.cli import error_line, main
from stcsnn.cli.data import parse_options
from stcsnn.config import (
    MAX_NODES,
    MODEL_KEYS,
    checkpoint_config,
    load_config,
    make_config,
    parse_overrides,
    parse_value,
    short,
)
from stcsnn.errors import ConfigError, DataError
from stcsnn.io import atomic_torch_save
from stcsnn.models import build_model
from stcsnn.models.loading import model_checkpoint

TINY = {
    "dataset": "embedded", "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 4, "test_samples": 5},
    "neuron": "stc_lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "input_frames": 2,
    "output_frames": 2, "batch_size": 4, "epochs": 1, "warmup_epochs": 0, "device": "cpu", "num_visualize": 1,
}
HANG_GUARD_S = 2.0  # hostile input must be refused at once; generous so a busy machine does not fail it




def alias_bomb(levels: int = 9) -> str:
    """Under 1 KB of YAML that expands to 10**levels values."""
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    return text


def shared_bomb() -> list:
    """A list that repeats one list 2**40 times, through shared references (tiny in memory)."""
    x = [1] * 10
    for _ in range(40):
        x = [x, x]
    return x


@pytest.fixture
def tiny_yaml(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


# ----------------------------------------------------------------------------------------------- value ranges

BAD_VALUES = [
    ("grad_clip", "-1", "config key 'grad_clip' must be null or > 0, got -1"),
    ("grad_clip", "0", "'grad_clip' must be null or > 0, got 0"),
    ("val_every", "0", "'val_every' must be >= 1, got 0"),
    ("max_val_batches", "0", "'max_val_batches' must be null or >= 1, got 0"),
    ("max_test_batches", "-2", "'max_test_batches' must be null or >= 1, got -2"),
    ("lr", ".nan", "'lr' must be a finite number > 0, got nan"),
    ("lr", "-1e-3", "'lr' must be > 0, got -0.001"),
    ("lr", "0", "'lr' must be > 0, got 0"),
    ("min_lr", "-1", "'min_lr' must be >= 0"),
    ("warmup_lr", ".inf", "'warmup_lr' must be a finite number >= 0, got inf"),
    ("weight_decay", "-0.1", "'weight_decay' must be >= 0, got -0.1"),
    ("weight_decay", ".nan", "'weight_decay' must be a finite number >= 0"),
    ("num_workers", "-1", "'num_workers' must be >= 0, got -1"),
    ("steps_per_epoch", "-1", "'steps_per_epoch' must be null or >= 1, got -1"),
    ("steps_per_epoch", "0", "'steps_per_epoch' must be null or >= 1, got 0"),
    ("eval_batch_size", "0", "'eval_batch_size' must be null or >= 1"),
    ("batch_size", "0", "'batch_size' must be >= 1"),
    ("epochs", "0", "'epochs' must be >= 1"),
    ("log_every", "0", "'log_every' must be >= 1"),
    ("warmup_epochs", "-1", "'warmup_epochs' must be >= 0"),
    ("save_every_steps", "-5", "'save_every_steps' must be >= 0"),
    ("num_visualize", "-1", "'num_visualize' must be >= 0"),
    ("checkpoint_steps", "-1", "'checkpoint_steps' must be >= 0"),
    ("input_frames", "0", "'input_frames' must be >= 1"),
    ("output_frames", "0", "'output_frames' must be >= 1"),
    ("patch_size", "0", "'patch_size' must be >= 1"),
    ("kernel_size", "4", "'kernel_size' must be odd"),
    ("kernel_size", "-1", "'kernel_size' must be >= 1"),
    ("hidden_channels", "[16, -16]", "'hidden_channels[1]' must be a positive multiple of 16"),
    ("sampling_start", "1.5", "'sampling_start' must be >= 0 and <= 1, got 1.5"),
    ("sampling_changing_rate", "-1e-5", "'sampling_changing_rate' must be >= 0"),
    ("r_exp_alpha", "0", "'r_exp_alpha' must be > 0"),
    ("seed", "-1", "'seed' must be >= 0"),
    ("seed", "4294967296", "'seed' must be <= 4294967295"),
    ("device", "gpu", "'device' must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("frame_shape", "[1, 0, 32]", "'frame_shape' must be [C, H, W] of sizes >= 1"),
    ("amp", "fp16", "'amp' is fp16, which needs a CUDA device"),
    ("loss", "l1", "'loss' must be one of"),
    ("data_options", "{1: 2}", "'data_options' must map option names (strings)"),
]


@pytest.mark.parametrize("key,value,message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_bad_value_is_one_error_naming_the_key_before_any_work(key, value, message, tiny_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--config", str(tiny_yaml), "--set", f"{key}={value}", "--out", str(out), "--quiet"])
    assert message in one_error(capsys, rc)
    assert not out.exists()  # refused before the run folder was even created
    with pytest.raises(ConfigError, match=f"'{key}"):
        make_config(TINY, {key: value})


def test_the_edges_of_each_range_are_accepted():
    cfg = make_config(TINY, {"grad_clip": "null", "min_lr": "0", "warmup_lr": "0", "steps_per_epoch": "null",
                             "max_test_batches": "1", "max_val_batches": "1", "num_workers": "0", "seed": "4294967295",
                             "sampling_start": "0", "amp": "bf16", "warmup_epochs": "0", "num_visualize": "0"})
    assert cfg.grad_clip is None and cfg.min_lr == 0.0 and cfg.seed == 2**32 - 1
    assert make_config({"amp": "fp16", "device": "auto"}).amp == "fp16"  # auto: decided at run time
    assert make_config({"device": "cuda:1"}).device == "cuda:1"  # validated as text; the GPU is looked for later


def test_a_checkpoints_stored_config_is_validated(tmp_path, capsys):
    cfg = make_config({**TINY, "frame_shape": [1, 32, 32]})
    ckpt = model_checkpoint(build_model(cfg), cfg)
    ckpt["config"]["grad_clip"] = -1.0
    path = tmp_path / "bad.pt"
    atomic_torch_save(ckpt, path)
    line = one_error(capsys, main(["eval", "--checkpoint", str(path), "--out", str(tmp_path / "out")]))
    assert "holds a config that is not valid: config key 'grad_clip' must be null or > 0, got -1" in line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- hostile input

@pytest.mark.parametrize("where", ["top", "neuron_options"])
def test_yaml_alias_bomb_is_refused_at_once(where, tmp_path, capsys):
    text = alias_bomb()
    text += "neuron_options: {alpha: *a8}\n" if where == "neuron_options" else "hidden_channels: *a8\n"
    assert len(text.encode()) < 1024
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.monotonic()
    rc = main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert time.monotonic() - start < HANG_GUARD_S
    line = one_error(capsys, rc)
    assert f"holds more than {MAX_NODES:,} values" in line and str(path) in line
    assert len(line) < 400


def test_alias_bomb_in_a_set_value_is_refused_at_once(tiny_yaml, capsys):
    start = time.monotonic()
    value = "{" + alias_bomb().strip().replace("\n", ", ") + "}"  # one flow mapping holding the bomb
    rc = main(["train", "--config", str(tiny_yaml), "--set", f"data_options.x={value}"])
    assert time.monotonic() - start < HANG_GUARD_S
    assert "holds more than" in one_error(capsys, rc)


@pytest.mark.parametrize("text,message", [
    ("a: " + "[" * 60 + "]" * 60 + "\n", "nested more than 50 levels deep"),
    ("neuron_options: &a {x: *a}\n", "contains itself"),
    ("neuron: lif\nepochs: 2\nneuron: stc_lif\n", "duplicate key 'neuron' on line 3 (first on line 1)"),
    ("data_options:\n  num_samples: 4\n  num_samples: 5\n", "duplicate key 'num_samples' on line 3"),
    ("neuron: !!python/object/apply:os.system ['echo hacked']\n", "not valid YAML"),
    ("# " + "x" * 70_000 + "\n", "larger than 65,536 bytes"),
])
def test_hostile_or_ambiguous_yaml_files(text, message, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    start = time.monotonic()
    line = one_error(capsys, main(["train", "--config", str(path), "--out", str(tmp_path / "run")]))
    assert time.monotonic() - start < HANG_GUARD_S
    assert message in line and str(path) in line


def test_merge_keys_may_still_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data_options: &base {num_samples: 4, val_samples: 2}\n"
                    "neuron_options:\n  <<: {surrogate: atan, alpha: 2.0}\n  alpha: 3.0\n")
    cfg = load_config(path)
    assert cfg.neuron_options == {"surrogate": "atan", "alpha": 3.0}


def test_checkpoint_with_a_shared_reference_bomb_is_refused_at_once(tmp_path, capsys):
    cfg = make_config({**TINY, "frame_shape": [1, 32, 32]})
    ckpt = model_checkpoint(build_model(cfg), cfg)
    ckpt["config"]["data_options"] = {"x": shared_bomb()}
    path = tmp_path / "bomb.pt"
    atomic_torch_save(ckpt, path)
    before = path.read_bytes()
    start = time.monotonic()
    rc = main(["eval", "--checkpoint", str(path), "--out", str(tmp_path / "out")])
    assert time.monotonic() - start < HANG_GUARD_S
    line = one_error(capsys, rc)
    assert "holds a config that is not valid" in line and "holds more than" in line
    assert path.read_bytes() == before and not (tmp_path / "out").exists()


def test_python_api_refuses_bombs_and_cycles():
    start = time.monotonic()
    with pytest.raises(ConfigError, match="more than"):
        make_config({"neuron_options": {"x": shared_bomb()}})
    with pytest.raises(ConfigError, match="more than"):
        make_config({}, {"data_options.x": shared_bomb()})
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ConfigError, match="contains itself"):
        make_config({"data_options": {"x": cycle}})
    deep: list = []
    for _ in range(60):
        deep = [deep]
    with pytest.raises(ConfigError, match="nested more than 50"):
        make_config({"data_options": {"x": deep}})
    assert time.monotonic() - start < HANG_GUARD_S


def test_short_is_bounded():
    start = time.monotonic()
    cycle: list = []
    cycle.append(cycle)
    for value in (shared_bomb(), "a" * 10**7, cycle, {"k": list(range(10**6))}, 10**5000, b"x" * 10**6):
        text = short(value, 60)
        assert len(text) <= 60
    assert short(shared_bomb()).endswith("...")
    assert time.monotonic() - start < HANG_GUARD_S
    assert short([1, "a", None]) == repr([1, "a", None])
    assert short({"a": (1,), "b": {2.5}}) == repr({"a": (1,), "b": {2.5}})
    assert short("x" * 100, 20) == repr("x" * 100)[:17] + "..."


def test_long_values_are_truncated_in_messages(tiny_yaml, capsys):
    for item in (f"epochs={'a' * 5000}", f"lr=[{', '.join(['1'] * 5000)}]", f"{'k' * 5000}=1",
                 f"neuron_options={{{'x' * 5000}: [1, 2}}"):
        line = one_error(capsys, main(["train", "--config", str(tiny_yaml), "--set", item]))
        assert len(line) < 400 and "..." in line, line


# ----------------------------------------------------------------------------------------------- KEY=VALUE grammar

def test_set_into_a_value_that_is_not_a_mapping(tiny_yaml, capsys):
    line = one_error(capsys, main(["train", "--config", str(tiny_yaml), "--set", "data_options.num_samples.x=1"]))
    assert "config key 'data_options.num_samples' is 8, not a mapping: cannot set 'data_options.num_samples.x'" \
        in line
    with pytest.raises(ConfigError, match="empty name"):
        make_config({}, {"data_options..x": "1"})


def test_overrides_do_not_change_the_callers_dicts():
    raw = {"data_options": {"num_samples": 4, "nested": {"a": 1}}}
    cfg = make_config(raw, {"data_options.nested.b": "2"})
    assert raw == {"data_options": {"num_samples": 4, "nested": {"a": 1}}}
    assert cfg.data_options == {"num_samples": 4, "nested": {"a": 1, "b": 2}}


def test_data_info_options_use_the_set_grammar(capsys):
    items = ["input_frames=5", " path =/a=b.npy", "split_fractions=[0.8, 0.1, 0.1]", "normalize=null", "key=x"]
    assert parse_options(items) == {k: parse_value(v) for k, v in parse_overrides(items).items()}
    assert parse_options(items) == {"input_frames": 5, "path": "/a=b.npy", "split_fractions": [0.8, 0.1, 0.1],
                                    "normalize": None, "key": "x"}
    line = one_error(capsys, main(["data", "info", "npy", "-O", "oops"]))
    assert "-O 'oops': expected KEY=VALUE" in line
    line = one_error(capsys, main(["data", "info", "npy", "-O", "path=[1, 2"]))
    assert "not valid YAML" in line


# ----------------------------------------------------------------------------------------------- eval on mmnist

@pytest.fixture
def mmnist(tmp_path) -> tuple[Path, Path]:
    """``(checkpoint, data root)``: a tiny 64x64 mmnist model, and a root holding only the fixed test set (no
    training images)."""
    root = tmp_path / "data"
    (root / "moving_mnist").mkdir(parents=True)
    frames = (np.random.default_rng(0).random((4, 6, 64, 64)) * 255).astype(np.uint8)  # (T, N, H, W)
    np.save(root / "moving_mnist" / "mnist_test_seq.npy", frames)
    cfg = make_config({"dataset": "mmnist", "data_root": str(root), "input_frames": 2, "output_frames": 2,
                       "frame_shape": [1, 64, 64], "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
                       "device": "cpu", "num_visualize": 1})
    torch.manual_seed(0)
    path = tmp_path / "ckpt" / "model.pt"
    atomic_torch_save(model_checkpoint(build_model(cfg), cfg), path)
    return path, root


def test_eval_test_split_needs_no_training_data(mmnist, tmp_path, capsys):
    ckpt, root = mmnist
    out = tmp_path / "out"
    assert main(["eval", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_samples"] == 6 and report["split"] == "test"
    assert "samples: 6, frames: 2 -> 2" in (out / "report.md").read_text()
    line = one_error(capsys, main(["eval", "--checkpoint", str(ckpt), "--split", "val", "--out", str(out)]))
    assert "train-images-idx3-ubyte.gz" in line  # the validation split is generated from the training images


def test_eval_report_states_the_samples_really_evaluated(mmnist, tmp_path, capsys):
    ckpt, _ = mmnist
    out = tmp_path / "out"
    rc = main(["eval", "--checkpoint", str(ckpt), "--out", str(out), "--set", "max_test_batches=2",
               "--set", "eval_batch_size=2", "--set", "output_frames=1"])
    assert rc == 0
    assert capsys.readouterr().out.startswith("test (4 of 6 sequences): MSE")
    report = json.loads((out / "report.json").read_text())
    assert (report["num_samples"], report["split_samples"]) == (4, 6)
    assert (report["input_frames"], report["output_frames"]) == (2, 1)
    assert len(report["per_horizon"]["mse"]) == 1
    assert "samples: 4 of 6, frames: 2 -> 1" in (out / "report.md").read_text()


REFUSED = [("neuron", "lif", "stc_lif"), ("hidden_channels", "[32]", "[16]"), ("kernel_size", "5", "3"),
           ("patch_size", "8", "4"), ("gradient_detach", "true", "False"), ("neuron_options.alpha", "2", "{}"),
           ("frame_shape", "[1, 32, 32]", "[1, 64, 64]"), ("dtype", "float64", "float32")]


@pytest.mark.parametrize("key,value,saved", REFUSED, ids=[k for k, _, _ in REFUSED])
def test_eval_refuses_overrides_that_contradict_the_model(key, value, saved, mmnist, tmp_path, capsys):
    ckpt, _ = mmnist
    before = ckpt.read_bytes()
    out = tmp_path / "out"
    line = one_error(capsys, main(["eval", "--checkpoint", str(ckpt), "--out", str(out), "--set", f"{key}={value}"]))
    top = key.split(".")[0]
    assert line == (f"error: the checkpoint's model has {top}={saved}; --set {key}={value} would mislabel it; "
                    "evaluate another checkpoint instead")
    assert ckpt.read_bytes() == before and not out.exists()


def test_model_keys_and_same_value_overrides():
    assert {"neuron", "neuron_options", "hidden_channels", "kernel_size", "patch_size", "gradient_detach",
            "norm_eps", "frame_shape", "dtype"} == set(MODEL_KEYS)
    saved = make_config({**TINY, "frame_shape": [1, 32, 32]})
    cfg = checkpoint_config(saved, {"neuron": "stc_lif", "hidden_channels": "[16]", "data_root": "/data"})
    assert cfg.neuron == "stc_lif" and cfg.data_root == "/data"
    with pytest.raises(ConfigError, match="predict with another checkpoint"):
        checkpoint_config(saved, {"kernel_size": "5"}, "predict with another checkpoint")


def test_dataloader_worker_error_is_one_line(mmnist, tmp_path, capsys):
    """A data error raised inside a DataLoader worker process prints the original one-line message."""
    ckpt, root = mmnist
    frames = (np.random.default_rng(1).random((4, 6, 64, 64)) * 255).astype(np.float32)
    frames[:, 3, 0, 0] = 300.0  # sequence 3 is corrupt; float files are checked item by item, in the worker
    np.save(root / "moving_mnist" / "mnist_test_seq.npy", frames)
    rc = main(["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--set", "num_workers=1",
               "--set", "eval_batch_size=2"])
    line = one_error(capsys, rc)
    assert line.startswith("error: ") and line.endswith("in sequence 3; the file is corrupt, download it again")
    assert "DataLoader" not in line and "Original" not in line


def test_error_line_of_a_worker_traceback():
    message = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\n    raise DataError("inner")\n'
               "stcsnn.errors.DataError: bad.npy: expected values in [0, 255], found 300\n")
    assert error_line(DataError(message)) == "bad.npy: expected values in [0, 255], found 300"
    assert error_line(DataError("two\n  lines")) == "two lines"
    assert error_line(ConfigError("plain")) == "plain"


# ----------------------------------------------------------------------------------------------- the training report

def test_training_report_states_the_samples_really_evaluated(tmp_path):
    """``Trainer.test_report`` on a trainer's state (without building an optimizer: a tiny, fast test)."""
    from types import SimpleNamespace

    from stcsnn.data import build_splits
    from stcsnn.train.loop import Trainer

    cfg = make_config({**TINY, "eval_batch_size": 2, "max_test_batches": 2, "frame_shape": [1, 32, 32]})
    splits = build_splits(cfg, ("test",))
    assert list(splits) == ["test"]
    torch.manual_seed(0)
    from stcsnn.train.evaluate import run_metrics

    state = SimpleNamespace(cfg=cfg, out=tmp_path / "run", model=build_model(cfg), splits=splits,
                            rt=SimpleNamespace(device=torch.device("cpu")), metrics=run_metrics(cfg))
    Trainer.test_report(state)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (report["num_samples"], report["split_samples"]) == (4, 5)
    assert "samples: 4 of 5" in (tmp_path / "run" / "report.md").read_text()


def test_gradient_detach_set_twice_is_an_error():
    from stcsnn.config import make_config

    with pytest.raises(ConfigError, match="gradient_detach is set twice: True in neuron_options and False"):
        make_config({"neuron": "stc_lif", "neuron_options": {"gradient_detach": True}})
    cfg = make_config({"neuron": "stc_lif", "gradient_detach": True, "neuron_options": {"gradient_detach": True}})
    assert cfg.gradient_detach
