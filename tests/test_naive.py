"""The naive reference rows (mean image, last frame), scored by the one evaluation loop, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stcsnn.config import make_config
from stcsnn.data import build_splits
from stcsnn.models.naive import LastFrame, MeanImage, mean_frame
from stcsnn.train.evaluate import evaluate_model

CFG = make_config({"dataset": "embedded", "input_frames": 4, "output_frames": 3, "batch_size": 4,
                   "data_options": {"canvas_size": 32, "num_samples": 12, "val_samples": 2, "test_samples": 10}})


def _arrays(ds):
    seqs = [torch.cat(ds[i]).numpy().astype(np.float64) for i in range(len(ds))]
    return np.stack(seqs)  # (N, T, C, H, W)


def _numpy_metrics(pred, true):
    mse = ((pred - true) ** 2).sum(axis=(2, 3, 4)).mean()
    mae = np.abs(pred - true).sum(axis=(2, 3, 4)).mean()
    per_pixel = ((np.clip(pred, 0, 1) - true) ** 2).mean(axis=(2, 3, 4))
    psnr = np.mean(np.minimum(-10 * np.log10(np.maximum(per_pixel, 1e-10)), 100.0))
    return {"mse": mse, "mae": mae, "psnr": psnr}


@pytest.mark.parametrize("kind", ["mean_image", "last_frame"])
def test_naive_rows_equal_a_direct_numpy_computation(kind):
    splits = build_splits(CFG, ("train", "test"))
    train, test = _arrays(splits["train"]), _arrays(splits["test"])
    t_in = CFG.input_frames
    true = test[:, t_in:]
    if kind == "mean_image":
        mean = train.mean(axis=(0, 1))  # over every frame of every training sequence
        np.testing.assert_allclose(mean_frame(splits["train"]).numpy(), mean, rtol=0, atol=1e-12)
        model = MeanImage(mean_frame(splits["train"]))
        pred = np.broadcast_to(mean, true.shape)
    else:
        model = LastFrame()
        pred = np.repeat(test[:, t_in - 1:t_in], CFG.output_frames, axis=1)
    results, _ = evaluate_model(model, splits["test"], CFG, torch.device("cpu"))
    expected = _numpy_metrics(pred, true)
    assert results["num_samples"] == len(test)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-5), key  # the loop feeds float32 frames


def test_the_rollout_has_the_predictors_shape_and_the_forecast_in_its_last_frames():
    frames = torch.rand(2, 5, 1, 8, 8)
    out = LastFrame().rollout(frames, 3, 2)
    assert out.frames.shape == (2, 4, 1, 8, 8)  # input_frames + n_future - 1 outputs
    assert torch.equal(out.frames[:, -2:], frames[:, 2:3].expand(-1, 2, -1, -1, -1))
    assert torch.equal(LastFrame()(frames[:, :3], 2), out.frames[:, -2:])
