"""Predictions outside training: a model run over arrays of frames (whole rollouts or a running forecast, frame
by frame), and the samples a picture of predictions shows (``stcsnn predict`` and ``stcsnn visualize``).

Frames come from :func:`stcsnn.data.formats.open_frames` / :func:`~stcsnn.data.formats.load_frames` as
(N, T, C, H, W) arrays; predictions are float32 numpy arrays of the same layout.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stcsnn.errors import DataError, StcsnnError


def predict_frames(model: torch.nn.Module, frames: np.ndarray, n_future: int, batch_size: int,
                   device: torch.device) -> np.ndarray:
    """``model(x, n_future)`` over float32 frames (N, T_in, C, H, W), ``batch_size`` sequences at a time:
    (N, n_future, C, H, W) float32."""
    preds = []
    with torch.no_grad():
        for i in range(0, len(frames), batch_size):
            x = torch.from_numpy(frames[i:i + batch_size]).to(device)
            preds.append(model(x, n_future=n_future).float().cpu().numpy())
    return np.concatenate(preds).astype(np.float32)


def stream_forecasts(model: torch.nn.Module, frames: np.ndarray, path: str, batch_size: int,
                     device: torch.device) -> np.ndarray:
    """Running forecasts: per batch of sequences, the input frames one at a time through ``model.step``;
    ``out[n, t]`` is the forecast of frame t+1 after frames 0..t. ``frames`` is the memory-mapped (N, T, C, H, W)
    array of :func:`~stcsnn.data.formats.open_frames` (``path`` names it in messages): only one frame per
    sequence of a batch is read and converted at a time."""
    from stcsnn.data.formats import float_frames

    n, t_in = frames.shape[:2]
    out = np.empty(frames.shape, np.float32)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            state = None
            for t in range(t_in):
                x = float_frames(frames[i:i + batch_size, t], path, "input", True)
                pred, state = model.step(torch.from_numpy(x).to(device), state)
                out[i:i + batch_size, t] = pred.float().cpu().numpy()
    return out


def finish_prediction(out: np.ndarray, source: str, clip: bool) -> tuple[float, float]:
    """Refuse a prediction holding NaN or infinite values (of the frames in ``source``); with ``clip``, clip it
    to [0, 1] in place. Returns the raw (min, max)."""
    if not np.isfinite(out).all():  # a diverged model: refuse rather than write garbage
        raise StcsnnError(f"the model predicted NaN or infinite values for {source!r}; nothing was written "
                          "(is the checkpoint from a diverged run?)")
    lo, hi = float(out.min()), float(out.max())
    if clip:
        # frames live in [0, 1]; the raw overshoot only matters for metrics, which `eval` computes itself
        np.clip(out, 0.0, 1.0, out=out)
    return lo, hi


def write_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    """``arr`` as a .npy file, written atomically: on failure the previous file, if any, is left as it was."""
    from stcsnn.io import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, arr)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise StcsnnError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------- samples to show
@dataclass
class Samples:
    """Frames to draw, (N, T, C, H, W) each: inputs, the true future (or None) and the prediction; ``notes``
    says what was adapted on the way (one line each)."""

    inputs: np.ndarray
    truth: np.ndarray | None
    pred: np.ndarray
    notes: list[str] = field(default_factory=list)
    scores: dict[str, Any] | None = None  # metrics of the samples shown, on the values as predicted


def read_predict_output(pred_path: str, inputs_path: str | None, truth_path: str | None = None) -> Samples:
    """A ``stcsnn predict`` output, the input frames it was made from and optionally the true future, checked
    to be frames of the same shape; a truth of another length is cut to the common number of frames."""
    from stcsnn.data.formats import load_frames

    pred = load_frames(pred_path, what="prediction", strict_range=False)
    if not inputs_path:
        raise StcsnnError("visualizing a predict output needs --input FRAMES.npy (the frames it was made from)")
    inputs = load_frames(inputs_path)
    truth = load_frames(truth_path, what="truth") if truth_path else None
    for name, arr in (("input", inputs), ("truth", truth)):
        if arr is not None and arr.shape[2:] != pred.shape[2:]:
            raise DataError(f"{name} frames are {arr.shape[2:]} (C, H, W) but the prediction's are "
                            f"{pred.shape[2:]}; expected frames of the same shape")
    notes = []
    if truth is not None and truth.shape[1] != pred.shape[1]:
        t = min(truth.shape[1], pred.shape[1])
        notes.append(f"note: truth has {truth.shape[1]} frames, the prediction {pred.shape[1]}: comparing the "
                     f"first {t}")
        truth, pred = truth[:, :t], pred[:, :t]
    return Samples(inputs, truth, pred, notes)


def run_checkpoint(source: str | os.PathLike) -> Path:
    """The checkpoint a run folder stands for (its ``best.pt``, else its ``last.pt``), or ``source`` itself."""
    src = Path(source)
    ckpt = src / "best.pt" if src.is_dir() else src
    if src.is_dir() and not ckpt.exists():
        ckpt = src / "last.pt"
    return ckpt


def first_test_samples(model: torch.nn.Module, cfg, device: torch.device, count: int) -> Samples:
    """The model's predictions of the first ``count`` sequences of its config's test split (fewer if the split
    is shorter), with their inputs and truth."""
    from stcsnn.data import build_splits
    from stcsnn.train.evaluate import evaluate_model

    test = build_splits(cfg, ("test",))["test"]
    _, samples = evaluate_model(model, torch.utils.data.Subset(test, range(min(count, len(test)))), cfg, device,
                          keep=count)
    return Samples(samples["inputs"], samples["truth"], samples["pred"])


def select_samples(samples: Samples, idx: list[int]) -> Samples:
    """The samples ``idx`` (each checked to exist), scored against the truth on the values as predicted, the
    prediction then clipped to [0, 1] for display (with a note when that changes it)."""
    from stcsnn.metrics import evaluate as score

    inputs, truth, pred = samples.inputs, samples.truth, samples.pred
    n = min(len(pred), len(inputs), len(truth) if truth is not None else len(pred))
    bad = [i for i in idx if i >= n]
    if bad:
        raise StcsnnError(f"sample index {bad[0]} out of range: there are {n} samples")
    scores = score(pred[idx], truth[idx]) if truth is not None else None  # on the values as predicted, unclipped
    notes = list(samples.notes)
    lo, hi = float(pred[idx].min()), float(pred[idx].max())
    if lo < 0.0 or hi > 1.0:  # drawn clipped, and said so: the picture must not hide an overshoot silently
        notes.append(f"note: prediction values in [{lo:.3g}, {hi:.3g}] clipped to [0, 1] for display")
        pred = np.clip(pred[idx], 0.0, 1.0)
    else:
        pred = pred[idx]
    return Samples(inputs[idx], truth[idx] if truth is not None else None, pred, notes, scores)
