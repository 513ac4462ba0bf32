"""Pictures of predictions: PNG grids (no dependency: a tiny PNG encoder) and animated GIFs (Pillow).

Rows of a grid, per sample: input frames, true future, predicted future, absolute error. Single-channel frames
are grey levels; frames with another channel count (TaxiBJ's in/out flows) are drawn as heatmaps, one row
group per channel; the error row is always a heatmap.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from stcsnn.errors import StcsnnError

# A perceptually ordered colormap (viridis' anchor colours), interpolated linearly.
_ANCHORS = np.array([
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
], dtype=np.float64)


def heatmap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3)."""
    v = np.clip(np.nan_to_num(values), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (v - lo)[..., None]
    return (_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).round().astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 (H, W) grey or (H, W, 3) RGB image as PNG (atomically)."""
    from stcsnn.io import atomic_write_bytes

    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim == 2:
        color = 0
    elif img.ndim == 3 and img.shape[2] == 3:
        color = 2
    else:
        raise StcsnnError(f"write_png expects (H, W) or (H, W, 3) uint8, got shape {img.shape}")
    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    atomic_write_bytes(path, png)


def _frame_rgb(frame: np.ndarray, channel: int | None) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) uint8: grey for C=1, RGB for C=3, heatmap of one channel else."""
    if channel is None:
        if frame.shape[0] == 3:
            return (np.clip(frame.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
        grey = (np.clip(frame[0], 0, 1) * 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return heatmap(frame[channel])


def prediction_grid(inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, gap: int = 2) -> np.ndarray:
    """(N, T_in, C, H, W), (N, T_out, C, H, W) x2 -> one RGB image; rows per sample: input, truth, prediction,
    |error| (heatmap scaled to the largest error of the sample). ``truth=None`` (a prediction without ground
    truth): rows input and prediction only."""
    n, t_in, c, h, w = inputs.shape
    t_out = pred.shape[1]
    cols = max(t_in, t_out)
    channels = [None] if c in (1, 3) else list(range(c))
    rows: list[list[np.ndarray]] = []
    for i in range(n):
        for ch in channels:
            rows.append([_frame_rgb(f, ch) for f in inputs[i]])
            if truth is not None:
                rows.append([_frame_rgb(f, ch) for f in truth[i]])
            rows.append([_frame_rgb(f, ch) for f in pred[i]])
        if truth is not None:
            err = np.abs(truth[i] - pred[i]).max(axis=1, keepdims=True)  # (T, 1, H, W)
            err = err / max(float(err.max()), 1e-8)
            rows.append([heatmap(f[0]) for f in err])
    canvas = np.full(((h + gap) * len(rows) + gap, (w + gap) * cols + gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for k, img in enumerate(row):
            y, x = gap + r * (h + gap), gap + k * (w + gap)
            canvas[y:y + h, x:x + w] = img
    return canvas


def write_gif(path: str | os.PathLike, inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray,
              duration_ms: int = 200) -> None:
    """Animated GIF of one sample: left the true sequence, right the input followed by the prediction
    (``truth=None``: the input followed by the prediction alone)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise StcsnnError(f"animated GIFs need Pillow ({exc}); install it: pip install 'stcsnn[viz]'") from None
    ch = None if inputs.shape[1] in (1, 3) else 0
    frames = []
    for seq_true, seq_pred in ((inputs, inputs), (truth, pred)):
        for a, b in zip(seq_pred if seq_true is None else seq_true, seq_pred):
            panels = [_frame_rgb(b, ch)] if truth is None else [
                _frame_rgb(a, ch), np.full((a.shape[1], 2, 3), 255, np.uint8), _frame_rgb(b, ch)]
            pair = np.concatenate(panels, 1)
            frames.append(Image.fromarray(pair).resize((pair.shape[1] * 3, pair.shape[0] * 3), Image.NEAREST))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: no half-written temporary file left behind
        tmp.unlink(missing_ok=True)
        raise
