"""stcsnn visualize: PNG grid + GIFs from a run directory and from predict outputs."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.io import atomic_torch_save
from stcsnn.models import build_model
from stcsnn.models.loading import model_checkpoint
from stcsnn.viz import heatmap, prediction_grid

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    w, h = struct.unpack(">II", Path(path).read_bytes()[16:24])
    return h, w


@contextlib.contextmanager
def read_only_folder(path: Path, monkeypatch) -> Iterator[str]:
    """``path`` as a folder nothing can be written into; yields how. Root ignores permission bits, so as root
    it is a read-only tmpfs mount (where ``mount`` works), else the OS call that probes it is made to fail."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield "chmod"
        finally:
            path.chmod(0o755)
        return
    if shutil.which("mount") and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                                                capture_output=True).returncode == 0:
        try:
            yield "mount"
        finally:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        return
    real = tempfile.TemporaryFile

    def refuse(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's own keyword)
        if dir is not None and Path(dir).resolve() == path.resolve():
            raise OSError(30, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    yield "monkeypatch"


def one_error(capsys, rc: int) -> str:
    out = capsys.readouterr()
    assert rc == 2, out
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.err
    assert "Traceback" not in out.err + out.out
    return lines[0]


def _run_dir(tmp_path):
    cfg = make_config({
        "dataset": "embedded", "neuron": "stc_lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
        "frame_shape": [1, 32, 32], "input_frames": 3, "output_frames": 2, "eval_batch_size": 4,
        "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 4, "test_samples": 4},
    })
    torch.manual_seed(0)
    atomic_torch_save(model_checkpoint(build_model(cfg), cfg), tmp_path / "run" / "best.pt")
    return tmp_path / "run"


def test_visualize_run_directory(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert main(["visualize", str(run), "--samples", "0,2"]) == 0
    png = (run / "visualize_grid.png").read_bytes()
    assert png.startswith(PNG)
    for i in (0, 2):
        assert (run / f"visualize_sample{i}.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert (run / "visualize_grid.png").stat().st_mode & 0o044  # readable by others, like any output file


def test_visualize_predict_output_with_two_channel_heatmaps(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.random((2, 4, 2, 16, 16), dtype=np.float32)
    np.save(tmp_path / "in.npy", inputs)
    np.save(tmp_path / "pred.npy", inputs[:, ::-1].copy())
    assert main(["visualize", str(tmp_path / "pred.npy"), "--input", str(tmp_path / "in.npy"), "--samples", "1"]) == 0
    assert (tmp_path / "pred_grid.png").read_bytes().startswith(PNG)
    assert (tmp_path / "pred_sample1.gif").exists()


def test_grid_layout_rows_and_heatmap_ends():
    inputs = np.zeros((1, 3, 1, 8, 8), np.float32)
    truth = np.ones((1, 2, 1, 8, 8), np.float32)
    grid = prediction_grid(inputs, truth, truth * 0.5, gap=2)
    # 4 rows (input, truth, prediction, error) of 8 px + gaps; 3 columns (the longer of T_in, T_out)
    assert grid.shape == (4 * 10 + 2, 3 * 10 + 2, 3)
    assert (grid[2 + 10:2 + 18, 2:10] == 255).all()  # the truth row is white
    assert (grid[2 + 20:2 + 28, 2:10] == 128).all()  # the prediction row is mid grey (0.5 * 255 rounded)
    np.testing.assert_array_equal(heatmap(np.array([0.0, 1.0])), [[68, 1, 84], [253, 231, 37]])


@pytest.mark.parametrize("args, message", [
    (["--samples", "9"], "out of range"),
    (["--samples", "a,b"], "comma-separated integers"),
    (["--samples", ","], "comma-separated integers"),
    (["--samples", ""], "comma-separated integers"),
    (["--samples", "-1"], "indices >= 0"),
    (["--samples", "1,1"], "distinct"),
])
def test_visualize_errors(tmp_path, capsys, args, message):
    run = _run_dir(tmp_path)
    assert main(["visualize", str(run), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


# --- predict outputs: unclipped, other lengths, no truth -------------------------------------------------------

@pytest.fixture
def frames(tmp_path):
    """in.npy (2, 3, 1, 16, 16) in [0, 1], and ``save(name, arr)`` for more files next to it."""
    rng = np.random.default_rng(1)
    np.save(tmp_path / "in.npy", rng.random((2, 3, 1, 16, 16), dtype=np.float32))

    def save(name, arr):
        np.save(tmp_path / name, arr)
        return str(tmp_path / name)
    save.rng = rng
    return save


def visualize(tmp_path, pred, *extra):
    return main(["visualize", pred, "--input", str(tmp_path / "in.npy"), *extra])


def test_visualize_accepts_unclipped_predictions_and_says_so(tmp_path, frames, capsys):
    pred = frames.rng.random((2, 2, 1, 16, 16), dtype=np.float32) * 1.5 - 0.25
    pred[0, 0, 0, 0, :2] = [-0.25, 1.3]
    truth = frames("truth.npy", np.clip(pred, 0, 1))
    assert visualize(tmp_path, frames("pred.npy", pred), "--truth", truth, "--samples", "0,1") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "note: prediction values in [-0.25, 1.3] clipped to [0, 1] for display" in out[0]
    assert png_size(tmp_path / "pred_grid.png") == (2 * 4 * 18 + 2, 3 * 18 + 2)  # 2 samples x 4 rows, 3 columns
    # drawn clipped: the prediction rows equal the truth rows (the truth is the clipped prediction)
    from PIL import Image

    grid = np.asarray(Image.open(tmp_path / "pred_grid.png"))
    assert np.array_equal(grid[20:36, 2:36], grid[38:54, 2:36])
    assert (grid[56:72, 2:18] == [68, 1, 84]).all()  # |truth - clipped prediction| = 0: the error row is flat
    for bad in (np.nan, np.inf):
        pred[1, 1, 0, 3, 3] = bad
        rc = visualize(tmp_path, frames("nan.npy", pred))
        assert "NaN or infinite" in one_error(capsys, rc)


def test_visualize_inputs_and_truth_keep_the_strict_range(tmp_path, frames, capsys):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    truth = frames("truth.npy", np.full((2, 2, 1, 16, 16), 1.5, np.float32))
    line = one_error(capsys, visualize(tmp_path, pred, "--truth", truth))
    assert "truth.npy" in line and "expected [0, 1]" in line
    frames("in.npy", np.full((2, 3, 1, 16, 16), -0.5, np.float32))
    assert "in.npy" in one_error(capsys, visualize(tmp_path, pred))
    assert not (tmp_path / "pred_grid.png").exists()


@pytest.mark.parametrize("t_truth", [1, 4])
def test_visualize_truth_of_another_length_compares_the_overlap(tmp_path, frames, capsys, t_truth):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    truth = frames("truth.npy", np.ones((2, t_truth, 1, 16, 16), np.float32))
    assert visualize(tmp_path, pred, "--truth", truth, "--samples", "1") == 0
    t = min(2, t_truth)
    assert f"truth has {t_truth} frames, the prediction 2: comparing the first {t}" in capsys.readouterr().out
    assert png_size(tmp_path / "pred_grid.png") == (4 * 18 + 2, 3 * 18 + 2)  # 4 rows; 3 columns (T_in = 3)
    assert (tmp_path / "pred_sample1.gif").exists()


def test_visualize_truth_of_another_frame_shape_is_one_line(tmp_path, frames, capsys):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    truth = frames("truth.npy", np.ones((2, 2, 1, 8, 8), np.float32))
    assert "same shape" in one_error(capsys, visualize(tmp_path, pred, "--truth", truth))


def test_visualize_without_truth_has_no_truth_or_error_rows(tmp_path, frames, capsys):
    pred = frames("pred.npy", np.full((2, 4, 1, 16, 16), 0.5, np.float32))
    assert visualize(tmp_path, pred, "--samples", "0,1") == 0
    assert "note:" not in capsys.readouterr().out  # values in [0, 1]: nothing clipped, nothing to say
    assert png_size(tmp_path / "pred_grid.png") == (2 * 2 * 18 + 2, 4 * 18 + 2)  # input + prediction rows only
    grid = prediction_grid(np.zeros((1, 3, 1, 8, 8)), None, np.ones((1, 2, 1, 8, 8)), gap=2)
    assert grid.shape == (2 * 10 + 2, 3 * 10 + 2, 3)
    assert (grid[12:20, 2:10] == 255).all() and (grid[2:10, 2:10] == 0).all()  # prediction white, input black


def test_visualize_into_a_read_only_folder_is_one_line(tmp_path, frames, capsys, monkeypatch):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    ro = tmp_path / "ro"
    with read_only_folder(ro, monkeypatch):
        line = one_error(capsys, visualize(tmp_path, pred, "--out", str(ro)))
        assert str(ro) in line and "cannot write" in line
        assert list(ro.iterdir()) == []


def test_visualize_run_directory_read_only_and_empty_samples(tmp_path, capsys, monkeypatch):
    run = _run_dir(tmp_path)
    before = (run / "best.pt").read_bytes()
    assert "comma-separated integers" in one_error(capsys, main(["visualize", str(run), "--samples", ","]))
    with read_only_folder(tmp_path / "ro", monkeypatch):
        one_error(capsys, main(["visualize", str(run), "--out", str(tmp_path / "ro"), "--samples", "0"]))
    assert (run / "best.pt").read_bytes() == before
