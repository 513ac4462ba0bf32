"""Predictions outside training: a model run over arrays of frames (whole rollouts or a running forecast, frame
by frame), and the samples a picture of predictions shows (``stcsnn predict`` and ``stcsnn visualize``).

Frames come from :func:`stcsnn.data.formats.open_frames` / :func:`~stcsnn.data.formats.load_frames` as
(N, T, C, H, W) arrays; predictions are float32 numpy arrays of the same layout. ``stcsnn predict`` reads its
input memory-mapped, batch by batch, and writes its output batch by batch (:func:`forecast_batches`,
:func:`write_prediction`): its memory is one batch's, whatever the files' sizes, and a prediction that would not
fit (one batch in memory, the output on disk) is refused before it starts (:func:`check_fits`).
"""

from __future__ import annotations

import math
import mmap
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stcsnn.errors import CheckpointError, DataError, StcsnnError
from stcsnn.machine import available_memory as host_available_memory

#: model(x, n_future) holds about this many float32 copies of its T_in + n_future - 1 output frames at its peak
#: (each step's output, their stacked and concatenated copies, the frames cut back from patches): measured 4.7
#: on the CPU (one STC-LIF layer, 64x64 frames, 5000 and 10000 predicted frames)
ROLLOUT_COPIES = 5
#: the prefix of input frames runs layer by layer: about this many copies of a layer's activations over all of
#: them (synaptic currents, spikes, their stacked copy) live at once
PREFIX_COPIES = 3


def open_inputs(path: str, channels: int) -> np.ndarray:
    """The frames to predict from, memory-mapped (nothing read yet) as (N, T, C, H, W): every layout the ``npy``
    dataset reads ((N, T, C, H, W), and (N, T, H, W) for one channel: :func:`stcsnn.data.arrays.as_videos`), and
    (T, C, H, W), one sequence. A 4-dimensional array whose second axis is the model's channel count is one
    sequence (T, C, H, W), as before; otherwise, for a one-channel model, it is (N, T, H, W)."""
    from stcsnn.data import formats
    from stcsnn.data.arrays import as_videos

    arr = formats.open_frames(path, None)  # checks the file, its header, dtype and empty axes
    if len(formats.npy_header(path)[0]) == 4 and arr.shape[2] != channels:
        if channels != 1:
            raise DataError(f"input file {path!r} has shape {arr.shape[1:]}; expected (T, C, H, W) with the "
                            f"model's {channels} channels, or (N, T, C, H, W)")
        arr = as_videos(arr[0])
    if arr.shape[2] != channels:
        raise DataError(f"input file {path!r} has {arr.shape[2]} channels (shape {arr.shape}); the model expects "
                        f"{channels}")
    return arr


def check_input_values(frames: np.ndarray, path: str, chunk_bytes: int = 1 << 20) -> None:
    """Check every input value (uint8, or finite float in [0, 1]) before the work starts, reading the memory-mapped
    ``frames`` about ``chunk_bytes`` of float32 at a time: a bad value is one line naming the file before any
    output is checked or written, not after hours of predicting."""
    from stcsnn.data.formats import float_frames

    per_sequence = math.prod(frames.shape[1:]) * 4
    step = max(1, chunk_bytes // per_sequence)
    for i in range(0, len(frames), step):
        float_frames(frames[i:i + step], path, "input", True)
        _release_pages(frames)


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``: the GPU's free memory, else the host's
    (:func:`stcsnn.machine.available_memory`); None where it cannot be known."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return host_available_memory()


def batch_bytes(model: torch.nn.Module, frames_shape: tuple[int, ...], n_future: int | None, batch: int) -> int:
    """An estimate of the memory one batch of ``batch`` sequences takes: the float32 inputs, the frames the
    rollout holds (T_in + n_future - 1 outputs, ``ROLLOUT_COPIES`` times), the activations of the layer-by-layer
    prefix; ``n_future=None``: running forecasts, one step at a time, all T_in forecasts kept for the batch."""
    _, t_in, c, h, w = frames_shape
    frame = c * h * w * 4
    hidden = max(model.hidden_channels) * (h // model.patch_size) * (w // model.patch_size) * 4
    if n_future is None:
        return batch * (2 * t_in * frame + 2 * frame + PREFIX_COPIES * hidden)
    return batch * (t_in * frame + ROLLOUT_COPIES * (t_in + n_future) * frame + PREFIX_COPIES * t_in * hidden)


def check_fits(model: torch.nn.Module, frames_shape: tuple[int, ...], n_future: int | None, batch_size: int,
               device: torch.device, output: str) -> tuple[int, ...]:
    """Refuse, before anything is allocated or written, a prediction whose batch would not fit in the memory
    available or whose output would not fit on the disk; returns the output's shape."""
    from stcsnn.data.formats import human_bytes

    n, t_in = frames_shape[:2]
    shape = (n, t_in if n_future is None else n_future, *frames_shape[2:])
    batch = min(batch_size, n)
    need, one = batch_bytes(model, frames_shape, n_future, batch), batch_bytes(model, frames_shape, n_future, 1)
    free = available_memory(device)
    if free is not None and need > free:
        what = f"{t_in} input frames" if n_future is None else f"{t_in} input -> {n_future} predicted frames"
        if one <= free:
            fix = f"lower --batch-size (about {free // one} sequences fit)"
        elif n_future is not None:
            fix = "lower --frames"
        else:
            fix = "split the sequences into shorter ones"
        raise StcsnnError(f"predicting {batch} sequence{'s' * (batch > 1)} at a time ({what} of "
                          f"{'x'.join(map(str, frames_shape[2:]))}) needs about {human_bytes(need)} of memory; "
                          f"{human_bytes(free)} is available on {device}: {fix}; nothing was written")
    size = math.prod(shape) * 4
    folder = Path(output).absolute().parent
    while not folder.exists() and folder.parent != folder:  # the first folder there is (the rest is made)
        folder = folder.parent
    try:
        disk = shutil.disk_usage(folder).free
    except OSError:
        return shape
    if size > disk:
        raise StcsnnError(f"the prediction {shape} float32 needs {human_bytes(size)} on disk; {human_bytes(disk)} "
                          f"is free in {str(folder)!r}; nothing was written")
    return shape


def forecast_batches(model: torch.nn.Module, frames: np.ndarray, path: str, n_future: int | None,
                     batch_size: int, device: torch.device) -> Iterator[np.ndarray]:
    """The predictions for ``frames`` (memory-mapped, :func:`open_inputs`), ``batch_size`` sequences at a time,
    each batch read and converted to float32 only when its turn comes (``path`` names the file in messages):
    ``model(x, n_future)`` (B, n_future, C, H, W); ``n_future=None``: running forecasts (B, T_in, C, H, W), the
    input frames one at a time through ``model.step``, ``[n, t]`` the forecast of frame t+1 after frames 0..t
    (only one frame per sequence of the batch read at a time)."""
    from stcsnn.data.formats import float_frames

    n, t_in = frames.shape[:2]
    with torch.no_grad():
        for i in range(0, n, batch_size):
            if n_future is None:
                state, preds = None, []
                for t in range(t_in):
                    x = float_frames(frames[i:i + batch_size, t], path, "input", True)
                    pred, state = model.step(torch.from_numpy(x).to(device), state)
                    preds.append(pred.float().cpu().numpy())
                out = np.stack(preds, 1)
            else:
                x = torch.from_numpy(float_frames(frames[i:i + batch_size], path, "input", True)).to(device)
                out = model(x, n_future=n_future).float().cpu().numpy()
            _release_pages(frames)
            yield out


def _release_pages(arr: np.ndarray) -> None:
    """Drop the pages of a memory-mapped file this process has read from its resident memory (they stay in the
    page cache): reading a file larger than memory batch by batch keeps the process's footprint at one batch."""
    mapping = getattr(arr, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def write_prediction(path: str | os.PathLike, shape: tuple[int, ...], batches: Iterable[np.ndarray], source: str,
                     clip: bool) -> tuple[float, float]:
    """Write the float32 .npy ``shape`` of ``batches`` (consecutive sequences), batch by batch, atomically: a
    failure (a write error, NaN or infinite values from the model) leaves no file, and the previous one, if any,
    as it was. With ``clip`` the values are clipped to [0, 1] (the range of frames; the raw overshoot only
    matters for metrics, which `eval` computes itself). Returns the raw (min, max)."""
    from stcsnn.io import _atomic_write

    bounds = [math.inf, -math.inf]

    def write(f) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        written = 0
        for out in batches:
            if not np.isfinite(out).all():  # a diverged model: refuse rather than write garbage
                raise StcsnnError(f"the model predicted NaN or infinite values for {source!r}; nothing was "
                                  "written (is the checkpoint from a diverged run?)")
            bounds[0], bounds[1] = min(bounds[0], float(out.min())), max(bounds[1], float(out.max()))
            if clip:
                np.clip(out, 0.0, 1.0, out=out)
            f.write(np.ascontiguousarray(out, np.float32).data)
            written += len(out)
        if written != shape[0]:
            raise AssertionError(f"wrote {written} sequences of {shape}")

    _atomic_write(path, write)
    return bounds[0], bounds[1]


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
    from stcsnn.data.formats import float_frames, load_frames

    pred = load_frames(pred_path, what="prediction", strict_range=False)
    if not inputs_path:
        raise StcsnnError("visualizing a predict output needs --input FRAMES.npy (the frames it was made from)")
    # the inputs and truth in every layout predict reads (open_inputs: (N, T, H, W) for one channel too)
    inputs = float_frames(open_inputs(inputs_path, pred.shape[2]), inputs_path)
    truth = float_frames(open_inputs(truth_path, pred.shape[2]), truth_path, "truth") if truth_path else None
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
    """What ``stcsnn visualize SOURCE`` loads: a folder written by ``stcsnn export`` itself (it holds
    ``config.json``), a run folder's checkpoint (its ``best.pt``, else its ``last.pt``), or ``source`` itself;
    a folder that holds neither is returned as it is (loading it says what it lacks)."""
    from stcsnn.models.loading import CONFIG_NAME

    src = Path(source)
    if not src.is_dir() or (src / CONFIG_NAME).exists():
        return src
    for name in ("best.pt", "last.pt"):
        ckpt = src / name
        if ckpt.is_dir():
            raise CheckpointError(f"{str(ckpt)!r} is a folder, not a checkpoint file; expected the file "
                                  "`stcsnn train` writes")
        if ckpt.exists():
            return ckpt
    return src


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
