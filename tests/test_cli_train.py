"""``stcsnn train | eval | predict`` end to end on a tiny config, and every expected failure as one error line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import one_error

from stcsnn import __version__
from stcsnn.cli import main
from stcsnn.config import load_config, make_config
from stcsnn.models import build_model
from stcsnn.models.loading import load_model, model_checkpoint, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
T_IN, T_OUT = 3, 3

TINY = {
    "dataset": "embedded",
    "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 4, "test_samples": 4},
    "neuron": "stc_lif", "hidden_channels": [16, 16], "kernel_size": 3, "patch_size": 4,
    "input_frames": T_IN, "output_frames": T_OUT, "batch_size": 4, "epochs": 2, "warmup_epochs": 1,
    "seed": 0, "device": "cpu", "num_visualize": 2, "log_every": 1,
}




@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny training run through the CLI (2 epochs x 2 steps)."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp / "run"
    rc = main(["train", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def inputs(run) -> np.ndarray:
    """Four input sequences (N, T_in, C, H, W) float32 in [0, 1] from the run's test split."""
    from stcsnn.data import build_dataset

    ds = build_dataset("embedded", "test", canvas_size=32, test_samples=4, input_frames=T_IN, output_frames=T_OUT)
    return np.stack([ds[i][0] for i in range(4)]).astype(np.float32)


# ----------------------------------------------------------------------------------------------- train

def test_train_writes_the_run_directory(run):
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.csv", "steps.csv", "last.pt", "best.pt", "report.json", "report.md",
            "predictions.png"} <= names
    assert "tensorboard" not in names  # only with --tensorboard
    assert not [n for n in names if n.endswith(".tmp")]
    # the resolved config: loads back, frame shape filled in from the data
    cfg = load_config(run / "config.yaml")
    assert cfg.frame_shape == [1, 32, 32]
    assert cfg.hidden_channels == [16, 16] and cfg.neuron == "stc_lif"
    # metrics.csv: one row per epoch
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2
    for col in ("epoch", "train_loss", "val_mse", "val_ssim", "lr", "eta", "p_true", "rate_l0", "rate_l1",
                "seconds"):
        assert col in rows[0], col
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["train_loss"])) and float(r["train_loss"]) > 0 for r in rows)
    assert all(0 <= float(r["rate_l0"]) <= 1 for r in rows)
    assert float(rows[0]["lr"]) == pytest.approx(1e-5)  # warm-up epoch
    # the picture
    assert (run / "predictions.png").read_bytes()[:8] == PNG


def test_train_report(run):
    report = json.loads((run / "report.json").read_text())
    assert report["split"] == "test"
    assert report["checkpoint"].endswith("best.pt")
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(report["metrics"][key])
    assert report["metrics"]["mse"] >= 0 and -1 <= report["metrics"]["ssim"] <= 1
    for key in ("mse", "mae", "ssim", "psnr"):
        assert len(report["per_horizon"][key]) == T_OUT
    assert len(report["firing_rate"]) == 2
    md = (run / "report.md").read_text()
    assert "MSE" in md and "SSIM" in md and "PSNR" in md
    assert md.count("\n| ") >= 1 + T_OUT  # overall row + one per predicted frame


def test_best_is_chosen_on_validation(run):
    best, last = read_checkpoint(run / "best.pt"), read_checkpoint(run / "last.pt")
    val = [row["val_mse"] for row in last["history"]]
    assert best["best_val_mse"] == pytest.approx(min(val))
    assert best["epoch"] == 1 + int(np.argmin(val))


def test_checkpoints_load_with_weights_only(run):
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, map_location="cpu", weights_only=True)
        assert ckpt["format"] == "stcsnn-checkpoint"
        assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())
    model, cfg = load_model(run / "best.pt")
    assert isinstance(model, torch.nn.Module) and not model.training
    assert cfg.frame_shape == [1, 32, 32]


def test_progress_lines_when_not_a_terminal(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 1}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1 [1/2]" in captured.err and "epoch 1/1 [2/2]" in captured.err
    assert "\r" not in captured.err and "it/s" in captured.err
    # the scheduled-sampling probability is labelled p_true (eta reads like time left)
    assert "lr 1e-05 p_true 1 " in captured.err and " eta " not in captured.err  # 1 - 2e-5 at 4 digits
    assert "test (best.pt): MSE" in captured.out


def test_existing_run_dir_is_not_overwritten(run, capsys):
    before = (run / "last.pt").read_bytes()
    rc = main(["train", "--config", str(run / "config.yaml"), "--out", str(run), "--quiet"])
    line = one_error(capsys, rc)
    assert "already holds a run" in line and "--resume auto" in line
    assert (run / "last.pt").read_bytes() == before


def test_resume_auto_of_a_finished_run_does_nothing_more(run, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in run.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    before = read_checkpoint(copy / "last.pt")
    assert main(["train", "--config", str(run / "config.yaml"), "--out", str(copy), "--resume", "auto",
                 "--quiet"]) == 0
    after = read_checkpoint(copy / "last.pt")
    assert after["step"] == before["step"]
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])


def test_resume_a_run_directory_without_its_config_file(run, tmp_path, capsys):
    """`stcsnn train --out DIR --resume auto` continues from DIR/last.pt's own config (here: more epochs)."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in run.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    before = read_checkpoint(copy / "last.pt")
    assert main(["train", "--out", str(copy), "--resume", "auto", "--set", "epochs=3", "--quiet"]) == 0
    after = read_checkpoint(copy / "last.pt")
    assert after["epoch"] == 3 and after["step"] == before["step"] * 3 // 2
    assert after["config"]["neuron"] == TINY["neuron"]
    capsys.readouterr()
    assert "--resume auto" in one_error(capsys, main(["train", "--out", str(tmp_path / "none"), "--resume", "auto"]))


# ----------------------------------------------------------------------------------------------- eval

def test_eval_writes_a_report(run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(out), "--device", "cpu"]) == 0
    stdout = capsys.readouterr().out
    assert "test: MSE" in stdout
    report = json.loads((out / "report.json").read_text())
    trained = json.loads((run / "report.json").read_text())
    assert report["metrics"]["mse"] == pytest.approx(trained["metrics"]["mse"], rel=1e-6)
    assert (out / "report.md").is_file()
    assert (out / "predictions.png").read_bytes()[:8] == PNG


def test_eval_into_a_folder_a_train_is_running_in_is_refused(run, tmp_path, capsys):
    from stcsnn.io import RunLock

    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with RunLock(folder, "stcsnn train"):
        line = one_error(capsys, main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(folder),
                                       "--device", "cpu"]))
        assert f"is in use by `stcsnn train` (PID {os.getpid()})" in line
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"
    # once the folder is free, eval writes there and leaves no lock file behind
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(folder), "--device", "cpu"]) == 0
    assert (folder / "report.json").is_file() and not (folder / ".stcsnn.lock").exists()


def test_eval_on_the_validation_split(run, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--split", "val", "--out", str(out),
                 "--device", "cpu"]) == 0
    report = json.loads((out / "report_val.json").read_text())
    assert report["split"] == "val"
    assert report["metrics"]["mse"] == pytest.approx(read_checkpoint(run / "best.pt")["best_val_mse"], rel=1e-6)


# ----------------------------------------------------------------------------------------------- predict

def predict(run, inp, out, *extra) -> int:
    return main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(inp), "--output", str(out),
                 "--device", "cpu", *extra])


def test_predict_float_and_uint8(run, inputs, tmp_path):
    np.save(tmp_path / "f.npy", inputs)
    u8 = np.round(inputs * 255).astype(np.uint8)
    np.save(tmp_path / "u.npy", u8)
    assert predict(run, tmp_path / "f.npy", tmp_path / "pf.npy") == 0
    assert predict(run, tmp_path / "u.npy", tmp_path / "pu.npy", "--batch-size", "3") == 0
    pf, pu = np.load(tmp_path / "pf.npy"), np.load(tmp_path / "pu.npy")
    assert pf.shape == (4, T_OUT, 1, 32, 32) and pf.dtype == np.float32
    assert pu.shape == pf.shape and pu.dtype == np.float32
    # uint8 input is scaled /255: the same prediction as the float frames it came from
    model, _ = load_model(run / "best.pt")
    with torch.no_grad():  # the same batches as predict (3 + 1 with --batch-size 3): the same computation
        x_u = torch.from_numpy(u8.astype(np.float32) / 255)
        want_u = torch.cat([model(x_u[:3], n_future=T_OUT), model(x_u[3:], n_future=T_OUT)]).clamp(0, 1).numpy()
        want_f = model(torch.from_numpy(inputs), n_future=T_OUT).clamp(0, 1).numpy()  # predict clips by default
    assert np.array_equal(pu, want_u)
    assert np.array_equal(pf, want_f)


def test_predict_a_single_sequence_and_a_longer_horizon(run, inputs, tmp_path):
    np.save(tmp_path / "one.npy", inputs[1])  # (T, C, H, W)
    assert predict(run, tmp_path / "one.npy", tmp_path / "p1.npy") == 0
    p1 = np.load(tmp_path / "p1.npy")
    assert p1.shape == (1, T_OUT, 1, 32, 32)
    assert predict(run, tmp_path / "one.npy", tmp_path / "p7.npy", "--frames", "7") == 0
    p7 = np.load(tmp_path / "p7.npy")
    assert p7.shape == (1, 7, 1, 32, 32)
    assert np.isfinite(p7).all()
    assert np.allclose(p7[:, :T_OUT], p1, atol=1e-5)  # rolling out further extends the same prediction


def test_predict_needs_no_future_frames(run, inputs, tmp_path):
    """Inputs with only T_in frames (no ground truth at all); also fewer frames than trained on."""
    np.save(tmp_path / "short.npy", inputs[:, :2])
    assert predict(run, tmp_path / "short.npy", tmp_path / "p.npy", "--frames", "2") == 0
    assert np.load(tmp_path / "p.npy").shape == (4, 2, 1, 32, 32)


# ----------------------------------------------------------------------------------------------- error paths

@pytest.mark.parametrize("content,match", [
    ("epochs: ten\n", "'epochs' expects int"),
    ("hidden_channels: 16\n", "'hidden_channels' expects a list"),
    ("neuron: stc_lif\nepoch: 3\n", "did you mean 'epochs'"),
    ("lr: [1\n", "not valid YAML"),
    ("hidden_channels: [20]\n", "multiple of 16"),
    ("neuron: stc_lyf\ndevice: cpu\n", "did you mean 'stc_lif'"),
])
def test_train_bad_config(tmp_path, capsys, content, match):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"])
    assert match in one_error(capsys, rc)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_train_bad_set(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    for item, match in (("hidden_channels=abc", "expects a list"), ("batchsize=3", "did you mean 'batch_size'"),
                        ("epochs", "key=value"), ("patch_size=5", "patch_size 5 must divide")):
        rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--set", item, "--quiet"])
        assert match in one_error(capsys, rc), item


def test_train_missing_config(tmp_path, capsys):
    rc = main(["train", "--config", str(tmp_path / "nope.yaml"), "--quiet"])
    assert "not found" in one_error(capsys, rc)
    rc = main(["train", "--quiet"])
    assert "--config" in one_error(capsys, rc)


def test_train_out_that_cannot_be_written(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for out in (afile, afile / "run"):
        rc = main(["train", "--config", str(cfg), "--out", str(out), "--quiet"])
        one_error(capsys, rc)
    assert afile.read_text() == "keep me"


def test_resume_from_a_model_only_checkpoint(run, tmp_path, capsys):
    """A weights-only checkpoint (as import-official writes) cannot resume training: a clear error."""
    model, cfg = load_model(run / "best.pt")
    torch.save(model_checkpoint(model, cfg), tmp_path / "weights.pt")
    rc = main(["train", "--resume", str(tmp_path / "weights.pt"), "--out", str(tmp_path / "run"), "--quiet"])
    one_error(capsys, rc)


@pytest.fixture
def truncated(run, tmp_path) -> Path:
    data = (run / "best.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 3])
    return path


def foreign_checkpoints(run, tmp_path) -> dict[str, Path]:
    """Checkpoints whose weights do not fit the model their config describes."""
    _, cfg = load_model(run / "best.pt")
    out = {}
    # other keys: an LIF model's weights under an STC-LIF config
    lif = build_model(make_config({**cfg.to_dict(), "neuron": "lif"}))
    out["keys"] = tmp_path / "keys.pt"
    torch.save(model_checkpoint(lif, cfg), out["keys"])
    # the same keys, other shapes: hidden 32 weights under a hidden-16 config
    wide = build_model(make_config({**cfg.to_dict(), "hidden_channels": [32, 32]}))
    out["shapes"] = tmp_path / "shapes.pt"
    torch.save(model_checkpoint(wide, cfg), out["shapes"])
    # a plain state_dict, not an stcsnn checkpoint
    out["plain"] = tmp_path / "plain.pt"
    torch.save(lif.state_dict(), out["plain"])
    # a pickle with code in it: refused by weights_only loading
    out["pickle"] = tmp_path / "pickle.pt"
    torch.save({"format": "stcsnn-checkpoint", "obj": Path("x")}, out["pickle"])
    return out


@pytest.mark.parametrize("kind", ["truncated", "keys", "shapes", "plain", "pickle", "missing"])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_bad_checkpoints(run, inputs, tmp_path, capsys, kind, command, truncated):
    paths = {"truncated": truncated, "missing": tmp_path / "missing.pt", **foreign_checkpoints(run, tmp_path)}
    capsys.readouterr()
    ckpt = str(paths[kind])
    if command == "eval":
        rc = main(["eval", "--checkpoint", ckpt, "--out", str(tmp_path / "ev"), "--device", "cpu"])
    else:
        np.save(tmp_path / "in.npy", inputs)
        rc = main(["predict", "--checkpoint", ckpt, "--input", str(tmp_path / "in.npy"), "--output",
                   str(tmp_path / "p.npy"), "--device", "cpu"])
    line = one_error(capsys, rc)
    assert ckpt in line or "checkpoint" in line
    assert not (tmp_path / "p.npy").exists() and not (tmp_path / "ev" / "report.json").exists()


def test_mismatched_checkpoint_names_the_keys(run, tmp_path, capsys):
    paths = foreign_checkpoints(run, tmp_path)
    rc = main(["eval", "--checkpoint", str(paths["keys"]), "--device", "cpu"])
    line = one_error(capsys, rc)
    assert "missing" in line and "unexpected" in line


BAD_INPUTS = {
    "rank3": lambda x: x[0, 0],  # (C, H, W)
    "rank6": lambda x: x[None],
    "channels": lambda x: np.concatenate([x, x], axis=2),
    "above_one": lambda x: x * 2 + 0.5,
    "negative": lambda x: x - 0.5,
    "nan": lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x).astype(np.float32),
    "inf": lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.inf, x).astype(np.float32),
    "int16": lambda x: (x * 255).astype(np.int16),
    "bool": lambda x: x > 0.5,
    "object": lambda x: np.array([{"a": 1}], dtype=object),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_predict_bad_input(run, inputs, tmp_path, capsys, kind):
    arr = BAD_INPUTS[kind](inputs.copy())
    np.save(tmp_path / "bad.npy", arr, allow_pickle=True)
    good = tmp_path / "good.npy"  # an existing good output must survive the failure
    np.save(good, np.zeros((1, 1), np.float32))
    before = good.read_bytes()
    rc = predict(run, tmp_path / "bad.npy", good)
    line = one_error(capsys, rc)
    assert "bad.npy" in line
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "good.npy"]


def test_predict_bad_input_files(run, tmp_path, capsys):
    out = tmp_path / "p.npy"
    rc = predict(run, tmp_path / "missing.npy", out)
    assert "not found" in one_error(capsys, rc)
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    rc = predict(run, tmp_path / "junk.npy", out)
    assert "junk.npy" in one_error(capsys, rc)
    np.savez(tmp_path / "arch.npz", a=np.zeros((1, 3, 1, 32, 32), np.float32))
    rc = predict(run, tmp_path / "arch.npz", out)
    one_error(capsys, rc)
    assert not out.exists()


def test_predict_bad_options(run, inputs, tmp_path, capsys):
    np.save(tmp_path / "in.npy", inputs)
    out = tmp_path / "p.npy"
    for extra in (["--frames", "0"], ["--frames", "-2"], ["--batch-size", "0"]):
        rc = predict(run, tmp_path / "in.npy", out, *extra)
        one_error(capsys, rc)
    rc = predict(run, tmp_path / "in.npy", tmp_path / "p.txt")
    assert ".npy" in one_error(capsys, rc)
    assert not out.exists() and not (tmp_path / "p.txt").exists()


def test_predict_output_that_cannot_be_written(run, inputs, tmp_path, capsys):
    np.save(tmp_path / "in.npy", inputs)
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    rc = predict(run, tmp_path / "in.npy", afile / "p.npy")
    one_error(capsys, rc)
    assert afile.read_text() == "keep me"
    adir = tmp_path / "adir.npy"
    adir.mkdir()
    rc = predict(run, tmp_path / "in.npy", adir)
    one_error(capsys, rc)
    assert adir.is_dir() and list(adir.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_predict_does_not_overwrite_a_good_output_on_a_late_failure(run, inputs, tmp_path, capsys, monkeypatch):
    """A failure while the prediction is being written leaves the previous file as it was."""
    import stcsnn.io as ck

    np.save(tmp_path / "in.npy", inputs)
    good = tmp_path / "p.npy"
    assert predict(run, tmp_path / "in.npy", good) == 0
    before = good.read_bytes()
    capsys.readouterr()

    def full_disk(self, data):  # every atomic write's file (predict writes its output batch by batch)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck._RecordingFile, "write", full_disk)
    rc = predict(run, tmp_path / "in.npy", good, "--frames", "5", "--force")
    assert "No space left on device" in one_error(capsys, rc)
    assert good.read_bytes() == before


def test_eval_out_that_cannot_be_written(run, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    rc = main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(afile / "sub"), "--device", "cpu"])
    one_error(capsys, rc)
    assert afile.read_text() == "keep me"


# ----------------------------------------------------------------------------------------------- the module

def test_python_m_stcsnn_version():
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "stcsnn", "--version"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0
    assert res.stdout.strip() == f"stcsnn {__version__}"
    res = subprocess.run([sys.executable, "-m", "stcsnn", "predict", "--checkpoint", "/nonexistent.pt", "--input",
                          "/nonexistent.npy", "--output", "/tmp/x.npy", "--device", "cpu"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
