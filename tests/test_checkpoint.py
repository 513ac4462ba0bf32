"""The checkpoint schema (stcsnn.models.checkpoint) against broken, corrupt and hostile files: non-finite weights,
flipped bytes, malformed training state, newer versions, memory bombs and pickles that would run code. Each is
refused by the real command with one error line, and leaves every file that was there byte-identical."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY, one_error, tiny_cfg

import stcsnn
from stcsnn.cli import main
from stcsnn.errors import CheckpointError
from stcsnn.io import atomic_torch_save, available_memory
from stcsnn.models import checkpoint as schema
from stcsnn.models.loading import FORMAT, load_model, model_checkpoint

NAN_TENSOR = "cells.0.autapse.conv.weight"  # TINY is an STC-LIF: its first cell has an autapse


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (what a refused command must leave as it was)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real one-epoch training run (best.pt, last.pt written by the trainer)."""
    folder = tmp_path_factory.mktemp("run")
    cfg = folder / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 1}))
    assert main(["train", "--config", str(cfg), "--out", str(folder / "r"), "--quiet"]) == 0
    return folder / "r"


@pytest.fixture
def nan_checkpoint(tmp_path) -> Path:
    cfg = tiny_cfg()
    model = stcsnn.build_model(cfg)
    with torch.no_grad():
        dict(model.named_parameters())[NAN_TENSOR][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    atomic_torch_save(model_checkpoint(model, cfg), path)  # checksums of the NaN weights: only the NaN is wrong
    return path


@pytest.fixture
def nan_folder(tmp_path, run) -> Path:
    """An export folder (from `stcsnn export`) whose weights were replaced by NaN ones, checksums kept valid."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nanexp"
    assert main(["export", str(run / "best.pt"), "--out", str(folder)]) == 0
    weights = load_file(folder / "model.safetensors")
    weights[NAN_TENSOR][0, 0, 0, 0] = float("nan")
    sums = {k: schema.tensor_digest(v) for k, v in weights.items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt", "stcsnn_checksums": json.dumps(sums)})
    return folder


def _commands(source: Path, tmp_path: Path) -> dict[str, list[str]]:
    frames = tmp_path / "in.npy"
    np.save(frames, np.zeros((1, TINY["input_frames"], 1, 32, 32), np.float32))
    return {
        "eval": ["eval", "--checkpoint", str(source), "--out", str(tmp_path / "evalout")],
        "predict": ["predict", "--checkpoint", str(source), "--input", str(frames), "--output",
                    str(tmp_path / "pred.npy")],
        "export": ["export", str(source), "--out", str(tmp_path / "exported")],
        "analyze": ["analyze", "dynamics", "--checkpoint", str(source), "--out", str(tmp_path / "dyn")],
        "energy": ["energy", "--checkpoint", str(source), "--out", str(tmp_path / "energy")],
    }


# ---------------------------------------------------------------------------------------------- non-finite weights
# export reads checkpoint files, not folders (a folder is refused for that: test_export)
@pytest.mark.parametrize(("kind", "command"), [("checkpoint", c) for c in ("eval", "predict", "export", "analyze",
                                                                           "energy")]
                         + [("folder", c) for c in ("eval", "predict", "analyze", "energy")])
def test_nan_weights_are_refused_by_every_command(kind, command, request, tmp_path, capsys, monkeypatch):
    source = request.getfixturevalue("nan_checkpoint" if kind == "checkpoint" else "nan_folder")
    argv = _commands(source, tmp_path)[command]
    monkeypatch.chdir(tmp_path)  # a default output folder (runs/...) would land here
    before = snapshot(tmp_path)
    line = one_error(capsys, main(argv))
    assert NAN_TENSOR in line and "non-finite" in line, line
    assert snapshot(tmp_path) == before


def test_nan_weights_are_refused_by_load_model(nan_checkpoint, nan_folder):
    for source in (nan_checkpoint, nan_folder):
        with pytest.raises(CheckpointError, match=f"tensor '{NAN_TENSOR}' holds 1 non-finite"):
            load_model(source)


def test_inf_weight_is_refused(tmp_path):
    """inf as well as NaN (the models hold no buffers; check_tensors walks the whole state_dict all the same)."""
    cfg = tiny_cfg()
    model = stcsnn.build_model(cfg)
    with torch.no_grad():
        model.readout.weight[0].fill_(float("-inf"))
    atomic_torch_save(model_checkpoint(model, cfg), tmp_path / "inf.pt")
    n = model.readout.weight.shape[1:].numel()
    with pytest.raises(CheckpointError, match=f"tensor 'readout.weight' holds {n} non-finite"):
        load_model(tmp_path / "inf.pt")


# ---------------------------------------------------------------------------------------------- checksums
def _flip_in_zip(path: Path, tensor: torch.Tensor) -> None:
    """Flip the lowest bit of the first byte of ``tensor``'s storage inside torch's zip (stored uncompressed)."""
    data = bytearray(path.read_bytes())
    want = tensor.contiguous().view(torch.uint8).reshape(-1).numpy().tobytes()
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and z.read(i) == want)
        assert info.compress_type == zipfile.ZIP_STORED
    start = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])  # the local file header
    offset = start + 30 + name_len + extra_len
    assert bytes(data[offset:offset + len(want)]) == want
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_in_best_pt_is_refused_naming_the_tensor(run, tmp_path, capsys):
    best = tmp_path / "best.pt"
    best.write_bytes((run / "best.pt").read_bytes())
    assert "checksums" in torch.load(best, weights_only=True)
    _flip_in_zip(best, torch.load(best, weights_only=True)["model"][NAN_TENSOR])
    before = snapshot(tmp_path)
    line = one_error(capsys, main(["eval", "--checkpoint", str(best)]))
    assert f"is corrupt, tensor model/{NAN_TENSOR}" in line, line
    assert snapshot(tmp_path) == before
    with pytest.raises(CheckpointError, match=f"corrupt, tensor model/{NAN_TENSOR}"):
        load_model(best)


def test_flipped_byte_in_an_export_folder_is_refused_naming_the_tensor(run, tmp_path, capsys):
    folder = tmp_path / "exp"
    assert main(["export", str(run / "best.pt"), "--out", str(folder)]) == 0
    capsys.readouterr()
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    n = int.from_bytes(data[:8], "little")
    begin, _ = json.loads(data[8:8 + n])["readout.weight"]["data_offsets"]
    data[8 + n + begin] ^= 0x01
    weights.write_bytes(bytes(data))
    line = one_error(capsys, main(["predict", "--checkpoint", str(folder), "--input", str(tmp_path / "x.npy"),
                                   "--output", str(tmp_path / "p.npy")]))
    assert "model.safetensors is corrupt, tensor readout.weight" in line, line


def test_checkpoint_without_checksums_loads_with_a_note(tmp_path, capsys):
    cfg = tiny_cfg()
    model = stcsnn.build_model(cfg)
    old = {k: v for k, v in model_checkpoint(model, cfg).items() if k != "checksums"}
    torch.save(old, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    err = capsys.readouterr().err
    assert err.startswith("note: ") and "no checksums" in err and len(err.splitlines()) == 1


def test_checksums_cover_every_tensor_of_a_training_checkpoint(run):
    ckpt = torch.load(run / "last.pt", weights_only=True)
    paths = set(ckpt["checksums"])
    assert {f"model/{k}" for k in ckpt["model"]} <= paths
    assert {"rng/torch", "rng/mask"} <= paths and any(p.startswith("optimizer/state/") for p in paths)


def test_newer_version_is_one_line_naming_both_versions(tmp_path, capsys):
    cfg = tiny_cfg()
    ckpt = model_checkpoint(stcsnn.build_model(cfg), cfg)
    ckpt["version"] = schema.VERSION + 1
    atomic_torch_save(ckpt, tmp_path / "new.pt")
    line = one_error(capsys, main(["eval", "--checkpoint", str(tmp_path / "new.pt")]))
    assert f"version {schema.VERSION + 1}" in line and f"versions 1..{schema.VERSION}" in line, line


# ---------------------------------------------------------------------------------------------- resume
def _copy_files(run: Path, folder: Path) -> Path:
    """The files of the finished run ``run`` copied into the new ``folder``."""
    folder.mkdir()
    for p in run.iterdir():
        if p.is_file():
            (folder / p.name).write_bytes(p.read_bytes())
    return folder


@pytest.mark.parametrize(("key", "value"), [("step", "x"), ("rng", {}), ("history", 5), ("optimizer", []),
                                            ("epoch", -1), ("batch", 1.5), ("best_val_mse", "low")])
def test_resume_of_malformed_training_state_is_one_line(run, tmp_path, capsys, key, value):
    folder = _copy_files(run, tmp_path / "r")
    ckpt = torch.load(folder / "last.pt", weights_only=True)
    ckpt[key] = value
    torch.save(schema.sealed(ckpt), folder / "last.pt")  # sealed: the schema's check, not the checksum, refuses it
    before = snapshot(tmp_path)
    line = one_error(capsys, main(["train", "--resume", str(folder / "last.pt"), "--out", str(folder), "--quiet"]))
    assert line.split("its training state is malformed: ")[1].startswith(f"{key} "), line  # that key alone
    assert snapshot(tmp_path) == before


def test_resume_lacking_keys_come_from_the_schema(run, tmp_path, capsys):
    keep = schema.HEADER_KEYS + schema.MODEL_KEYS
    weights = {k: v for k, v in torch.load(run / "last.pt", weights_only=True).items() if k in keep}
    torch.save(schema.sealed(weights), tmp_path / "w.pt")
    line = one_error(capsys, main(["train", "--resume", str(tmp_path / "w.pt"), "--out", str(tmp_path / "o")]))
    assert ", ".join(schema.TRAINING_KEYS) in line, line


# ---------------------------------------------------------------------------------------------- memory bombs
@pytest.mark.parametrize("head", [b"", b"PK\x03\x04"])
def test_huge_sparse_file_is_refused_without_reading_it(tmp_path, capsys, head):
    free = available_memory()
    assert free is not None
    size = max(20 << 30, 2 * free)  # larger than memory: reading it whole would exhaust the machine
    path = tmp_path / "huge.pt"
    with open(path, "wb") as f:
        f.write(head)
    os.truncate(path, size)  # sparse: no block of it is written
    assert path.stat().st_blocks * 512 < 1 << 20
    line = one_error(capsys, main(["eval", "--checkpoint", str(path)]))
    assert str(size) in line, line
    if not head:
        assert "memory" in line, line


def test_safetensors_header_declaring_40_gb_is_refused(run, tmp_path, capsys):
    folder = tmp_path / "exp"
    assert main(["export", str(run / "best.pt"), "--out", str(folder)]) == 0
    capsys.readouterr()
    header = json.dumps({"readout.weight": {"dtype": "F32", "shape": [10_000_000_000],
                                            "data_offsets": [0, 40_000_000_000]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    line = one_error(capsys, main(["eval", "--checkpoint", str(folder)]))
    assert "'readout.weight' of 40000000000 bytes" in line and "holds 64 bytes" in line, line


# ---------------------------------------------------------------------------------------------- code in pickles
class _System:
    """Unpickling this would call os.system (torch names it posix.system): a shell command creating a marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_calling_os_system_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": 1, "payload": _System(marker)}, path)
    for argv in (["eval", "--checkpoint", str(path)], ["export", str(path), "--out", str(tmp_path / "x")]):
        line = one_error(capsys, main(argv))
        assert "weights_only loading refuses (GLOBAL posix.system)" in line or "(GLOBAL nt.system)" in line, line
        assert "truncated" not in line, line
    assert not marker.exists()


def test_resume_without_config_reads_its_checkpoint_once(run, tmp_path, capsys):
    """``train --resume PATH`` without ``--config`` reads the checkpoint for its config and the trainer continues
    from that same read: an older checkpoint without checksums is noted once, not once per read."""
    folder = _copy_files(run, tmp_path / "r")
    ckpt = torch.load(folder / "last.pt", weights_only=True)
    ckpt.pop(schema.CHECKSUMS)
    torch.save(ckpt, folder / "last.pt")  # as an older stcsnn wrote it
    for name in ("report.json", "report.md", "predictions.png"):  # stopped before its test report: not
        (folder / name).unlink(missing_ok=True)  # complete, so the trainer continues and writes it
    capsys.readouterr()
    assert main(["train", "--resume", str(folder / "last.pt"), "--out", str(folder), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count(f"checkpoint {str(folder / 'last.pt')!r} carries no checksums") == 1, err
