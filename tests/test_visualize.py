"""stcsnn visualize: PNG grid + GIFs from a run directory and from predict outputs."""

from __future__ import annotations

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
])
def test_visualize_errors(tmp_path, capsys, args, message):
    run = _run_dir(tmp_path)
    assert main(["visualize", str(run), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
