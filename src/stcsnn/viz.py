"""Pictures of predictions that explain themselves: a PNG grid (matplotlib) and animated GIFs (Pillow).

The grid has, per sample, a block of rows labelled ``input``, ``truth``, ``prediction`` and ``|error|`` (no truth
and error rows without ground truth), frame indices as column titles (``t = 1 .. T_in`` over the inputs,
``t = T_in+1 ..`` over the future), a labelled colour bar with the error's scale (one scale for the whole
figure, up to the largest error of any sample, so the samples' error rows compare by colour; the error of the
frames as drawn, clipped to [0, 1]), a ``sample i`` header per block and an optional title (the caller's:
neuron, checkpoint, metrics).
Single-channel frames are grey levels (0 black, 1 white), three-channel frames RGB; frames with another channel
count (TaxiBJ's in/out flows) are heatmaps, one row group per channel, with a value colour bar.

Everything draws on matplotlib's Agg canvas (never a GUI, never ``pyplot``'s global state). Both libraries are
the ``viz`` extra: without them, :func:`require_viz` raises one clear :class:`~stcsnn.errors.StcsnnError`.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stcsnn.errors import StcsnnError

VIZ_INSTALL = 'pip install "stcsnn[viz]"'

FRAME_CMAP = "viridis"  # heatmaps of flow channels (TaxiBJ)
ERROR_CMAP = "inferno"  # |error|: dark is no error, bright the largest; distinct from the frames' colours

# Grid geometry in pixels at DPI (fixed, not "tight": the picture's size is a known function of its content).
DPI = 100
_LEFT, _RIGHT, _BOTTOM = 118, 78, 10
_GAP, _ROW_GAP, _T_LABEL, _HEADER, _SAMPLE_GAP = 6, 6, 16, 26, 14
_TITLE_LINE, _TITLE_PAD = 17, 14
_BORDER = np.array([170, 170, 170], np.uint8)  # a thin frame around every picture: a white frame stays visible


class VizMissingError(StcsnnError):
    """matplotlib or Pillow (the ``viz`` extra) is not installed."""


def require_viz(what: str = "drawing pictures") -> None:
    """Raise one clear error naming the ``viz`` extra when matplotlib or Pillow is missing.

    Only the absence of those two packages themselves is translated: any other import error (a broken install,
    a missing dependency of theirs) propagates unchanged, so it is never hidden behind the wrong advice."""
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("matplotlib", "PIL"):
            raise
        package = "Pillow" if exc.name.startswith("PIL") else "matplotlib"
        raise VizMissingError(f"{what} needs matplotlib and Pillow (the viz extra), but {package} is not "
                              f"installed; install it: {VIZ_INSTALL}") from None


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def heatmap(values: np.ndarray, cmap: str = FRAME_CMAP) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) through a matplotlib colormap (NaN drawn as 0)."""
    require_viz()
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    return (np.asarray(_colormap(cmap)(v))[..., :3] * 255).round().astype(np.uint8)


def _encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 (H, W) grey or (H, W, 3) RGB image as PNG, atomically (:mod:`stcsnn.io`)."""
    from stcsnn.io import atomic_write_bytes

    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise StcsnnError(f"write_png expects a (H, W) or (H, W, 3) uint8 image, got {img.dtype} of shape "
                          f"{img.shape}")
    require_viz("writing a PNG picture")
    atomic_write_bytes(path, _encode_png(img))


def grid_title(neuron: str | None = None, checkpoint: str | os.PathLike | None = None,
               metrics: Mapping[str, Any] | None = None, where: str | None = None) -> str:
    """The usual title of a grid: ``"stc_lif · runs/x/best.pt · embedded test"`` and a metrics line."""
    head = " · ".join(str(p) for p in (neuron, checkpoint, where) if p)
    from stcsnn.metrics import METRICS  # labels and formats from the metric table

    scores = [f"{METRICS[key].label} {METRICS[key].format(value)}" for key, value in (metrics or {}).items()
              if key in METRICS and isinstance(value, (int, float))]
    return "\n".join(line for line in (head, "  ".join(scores)) if line)


# --------------------------------------------------------------------------------------------------- the grid


def _scale(h: int, w: int, target: int) -> int:
    """Integer upscaling so a frame is about ``target`` px: nearest-neighbour at an integer factor stays crisp."""
    return max(1, math.ceil(target / max(h, w)))


def _frame_rgb(frame: np.ndarray, channel: int | None) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) uint8: grey for C=1, RGB for C=3 (``channel=None``), else a heatmap of
    one channel. Values outside [0, 1] are drawn clipped (callers say so), NaN as 0."""
    if channel is None:
        f = np.clip(np.nan_to_num(frame.astype(np.float64)), 0.0, 1.0)
        if f.shape[0] == 3:
            return (f.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        grey = (f[0] * 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return heatmap(frame[channel])


def _row_image(frames: Sequence[np.ndarray], cols: int, k: int) -> np.ndarray:
    """Frames (H, W, 3) upscaled by ``k``, each in a 1 px border, side by side with white gaps."""
    h, w = frames[0].shape[0] * k + 2, frames[0].shape[1] * k + 2
    row = np.full((h, cols * w + (cols - 1) * _GAP, 3), 255, np.uint8)
    for j, f in enumerate(frames):
        x = j * (w + _GAP)
        row[:, x:x + w] = _BORDER
        row[1:-1, x + 1:x + w - 1] = f.repeat(k, 0).repeat(k, 1)
    return row


def _check_arrays(inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray) -> None:
    if inputs.ndim != 5 or pred.ndim != 5 or inputs.shape[2:] != pred.shape[2:] or len(inputs) != len(pred):
        raise StcsnnError(f"a prediction grid needs inputs (N, T_in, C, H, W) and predictions (N, T_out, C, H, W) "
                          f"of the same N, C, H, W; got {inputs.shape} and {pred.shape}")
    if truth is not None and truth.shape != pred.shape:
        raise StcsnnError(f"a prediction grid needs the truth shaped like the prediction {pred.shape}, got "
                          f"{truth.shape}")


@dataclass
class _Grid:
    """The figure of a prediction grid and its geometry in pixels (see :func:`grid_figure`)."""

    fig: Any
    width: int
    height: int
    cols: int  # frame columns: max(T_in, T_out)
    k: int  # integer upscaling of every frame
    cell_h: int  # a frame with its 1 px border
    cell_w: int
    row_w: int  # a full row of frames with their gaps
    t_out: int
    channels: list[int | None]  # [None]: grey/RGB frames; else one row group per channel (heatmaps)
    c: int

    def axes(self, x: float, y: float, ww: float, hh: float):
        """Axes at pixel box (x, y from the top-left corner, width, height)."""
        return self.fig.add_axes((x / self.width, 1 - (y + hh) / self.height, ww / self.width, hh / self.height))


def _grid_rows(channels: list[int | None], t_in: int, t_out: int, has_truth: bool
               ) -> list[tuple[str, int | None, range | None]]:
    """The rows of one sample's block: (kind, channel, label times); the times label the first row of each time
    range."""
    block: list[tuple[str, int | None, range | None]] = []
    for ch in channels:
        block.append(("input", ch, range(1, t_in + 1)))
        future = range(t_in + 1, t_in + t_out + 1)
        if has_truth:
            block.append(("truth", ch, future))
        block.append(("prediction", ch, None if has_truth else future))
    if has_truth:
        block.append(("|error|", None, None))
    return block


def _sample_error(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """One sample's |error| per frame (T, H, W): max over channels."""
    # the error of what is drawn (values clipped to [0, 1], as SSIM and PSNR see them): an overshoot
    # drawn as plain black or white must not light up the error row; max over channels
    return np.abs(np.clip(truth, 0, 1).astype(np.float64) - np.clip(pred, 0, 1)).max(axis=1)


def _error_top(errors: Sequence[np.ndarray]) -> float:
    """The top of the figure's one error colour scale: the largest finite error of any sample (1.0 when there is
    none), so that the same colour means the same error in every sample's row."""
    finite = np.concatenate([e[np.isfinite(e)] for e in errors]) if errors else np.zeros(0)
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _draw_row(grid: _Grid, y: float, kind: str, ch: int | None, times: range | None, imgs: list[np.ndarray]) -> None:
    """One row of frames at height ``y``, labelled with its kind (and channel) and its frames' times."""
    ax = grid.axes(_LEFT, y, grid.row_w, grid.cell_h)
    ax.set_label("grid row")  # a handle for tests and callers: rows vs. colour bars
    ax.imshow(_row_image(imgs, grid.cols, grid.k), interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    label = kind
    if ch is not None:
        label += f"\nchannel {ch}"
    elif kind == "|error|" and grid.c > 1:
        label += "\nmax over\nchannels"
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10, labelpad=8)
    for j, t in enumerate(times or ()):
        ax.text(j * (grid.cell_w + _GAP) + grid.cell_w / 2, -3, f"t = {t}", ha="center", va="bottom", fontsize=8)


def _error_colour_bar(grid: _Grid, y: float, emax: float) -> None:
    """The error row's colour bar, from 0 to ``emax``, the largest error of the whole figure."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    # next to the error row's own frames (it may be shorter than the input row)
    cax = grid.axes(_LEFT + grid.t_out * (grid.cell_w + _GAP) + 4, y, 10, grid.cell_h)
    cax.set_label("error colour bar")
    bar = grid.fig.colorbar(ScalarMappable(Normalize(0.0, emax), _colormap(ERROR_CMAP)), cax=cax)
    bar.set_ticks([0.0, emax / 2, emax])
    bar.ax.set_yticklabels([f"{v:.2g}" for v in (0.0, emax / 2, emax)])
    bar.ax.tick_params(labelsize=7, length=2)
    bar.ax.set_ylabel("|error|, one scale\nfor all samples", fontsize=7)


def _value_colour_bar(grid: _Grid, frames_top: float, bottom: float) -> None:
    """The heatmaps' value scale beside a sample's frame rows, from ``frames_top`` (its first time labels) to
    ``bottom``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = grid.axes(_LEFT + grid.row_w + 10, frames_top + _T_LABEL, 10, bottom - frames_top - _T_LABEL)
    cax.set_label("value colour bar")
    bar = grid.fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), _colormap(FRAME_CMAP)), cax=cax)
    bar.set_ticks([0.0, 0.5, 1.0])
    bar.ax.tick_params(labelsize=7, length=2)
    bar.ax.set_ylabel("value", fontsize=7)


def _draw_sample(grid: _Grid, y: float, label: str, block: list[tuple[str, int | None, range | None]],
                 inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, err: np.ndarray | None,
                 emax: float) -> float:
    """One sample's block (header, rows, colour bars) from height ``y``; ``err`` is its |error| (None without
    truth), drawn on the figure's error scale 0 .. ``emax``. Returns the height below the block."""
    fig = grid.fig
    fig.text(8 / grid.width, 1 - (y + 4) / grid.height, label, ha="left", va="top", fontsize=10, fontweight="bold")
    y += _HEADER
    frames_top = y
    for kind, ch, times in block:
        if times:
            y += _T_LABEL
        if kind == "|error|":
            imgs = [heatmap(e / emax, ERROR_CMAP) for e in err]
        else:
            seq = {"input": inputs, "truth": truth, "prediction": pred}[kind]
            imgs = [_frame_rgb(f, ch) for f in seq]
        _draw_row(grid, y, kind, ch, times, imgs)
        if kind == "|error|":
            _error_colour_bar(grid, y, emax)
        y += grid.cell_h + _ROW_GAP
        if kind == "prediction" and ch == grid.channels[-1] and grid.channels[0] is not None:
            # heatmap frames: one value scale for every channel row of this sample
            # (ending short of the error row, so the two bars' tick labels never touch)
            _value_colour_bar(grid, frames_top, y - (16 if err is not None else _ROW_GAP))
    return y


def grid_figure(inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, title: str | None = None,
                sample_labels: Sequence[str] | None = None, frame_px: int = 80):
    """The prediction grid as a matplotlib ``Figure`` (on an Agg canvas), see the module docstring.

    ``inputs`` (N, T_in, C, H, W), ``truth`` and ``pred`` (N, T_out, C, H, W) in [0, 1]; ``truth=None`` for a
    prediction without ground truth. ``sample_labels`` names the blocks (default ``sample 0`` ...); frames are
    upscaled by an integer factor to about ``frame_px`` pixels."""
    require_viz("a prediction grid")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    inputs, pred = np.asarray(inputs), np.asarray(pred)
    truth = None if truth is None else np.asarray(truth)
    _check_arrays(inputs, truth, pred)
    n, t_in, c, h, w = inputs.shape
    t_out = pred.shape[1]
    cols = max(t_in, t_out)
    k = _scale(h, w, frame_px)
    cell_h, cell_w = h * k + 2, w * k + 2
    row_w = cols * cell_w + (cols - 1) * _GAP
    channels: list[int | None] = [None] if c in (1, 3) else list(range(c))
    labels = list(sample_labels) if sample_labels is not None else [f"sample {i}" for i in range(n)]
    if len(labels) != n:
        raise StcsnnError(f"sample_labels names {len(labels)} samples, the arrays hold {n}")
    block = _grid_rows(channels, t_in, t_out, truth is not None)
    block_h = _HEADER + sum(cell_h + _ROW_GAP + (_T_LABEL if times else 0) for _, _, times in block)

    width = max(_LEFT + row_w + _RIGHT, 360)
    # the caller's lines, each wrapped to the figure's width (about 7 px per character at 10 pt)
    title_lines = [part for line in (title or "").splitlines() for part in textwrap.wrap(line, max(30, width // 7))]
    top = len(title_lines) * _TITLE_LINE + _TITLE_PAD if title_lines else 6
    height = top + n * block_h + (n - 1) * _SAMPLE_GAP + _BOTTOM
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    grid = _Grid(fig, width, height, cols, k, cell_h, cell_w, row_w, t_out, channels, c)
    if title_lines:
        fig.text(0.5, 1 - 6 / height, "\n".join(title_lines), ha="center", va="top", fontsize=10,
                 linespacing=1.3)
    errors = [None] * n if truth is None else [_sample_error(truth[i], pred[i]) for i in range(n)]
    emax = _error_top([e for e in errors if e is not None])
    y = top
    for i in range(n):
        if i:  # a rule between samples: blocks never read as one
            rule = y - _SAMPLE_GAP / 2
            fig.add_artist(Line2D([0.01, 0.99], [1 - rule / height] * 2, color="0.6", linewidth=0.8))
        y = _draw_sample(grid, y, labels[i], block, inputs[i], None if truth is None else truth[i], pred[i],
                         errors[i], emax)
        y += _SAMPLE_GAP
    return fig


def figure_rgb(fig) -> np.ndarray:
    """A matplotlib figure rendered by Agg -> RGB uint8 (H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def prediction_grid(inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, title: str | None = None,
                    sample_labels: Sequence[str] | None = None) -> np.ndarray:
    """The grid of :func:`grid_figure` as an RGB uint8 array (H, W, 3), e.g. for TensorBoard's ``add_image``
    (``dataformats="HWC"``) or :func:`write_png`."""
    return figure_rgb(grid_figure(inputs, truth, pred, title=title, sample_labels=sample_labels))


def sample_paths(out: str | os.PathLike, stem: str, indices: Sequence[int]) -> list[Path]:
    """The files :func:`write_samples` writes: ``OUT/STEM_grid.png``, then ``OUT/STEM_sample{i}.gif`` per index."""
    return [Path(out) / f"{stem}_grid.png"] + [Path(out) / f"{stem}_sample{i}.gif" for i in indices]


def write_samples(out: str | os.PathLike, stem: str, inputs: np.ndarray, truth: np.ndarray | None,
                  pred: np.ndarray, indices: Sequence[int], title: str | None = None) -> list[Path]:
    """The grid of some samples and one GIF per sample (:func:`sample_paths`; ``indices`` labels the arrays'
    samples), each written atomically; returns the paths written. An OSError propagates."""
    png, *gifs = sample_paths(out, stem, indices)
    write_png(png, prediction_grid(inputs, truth, pred, title=title, sample_labels=[f"sample {i}" for i in indices]))
    for k, (i, gif) in enumerate(zip(indices, gifs)):
        write_gif(gif, inputs[k], None if truth is None else truth[k], pred[k], title=f"sample {i}")
    return [png, *gifs]


# ---------------------------------------------------------------------------------------------------- the GIF


def gif_frames(inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, frame_px: int = 160,
               title: str | None = None) -> list[np.ndarray]:
    """One sample's animation as RGB frames: per time step the left panel shows the true sequence (``input``,
    then ``truth``), the right one what the model sees and makes (``input``, then ``prediction``), each titled,
    with ``t = k of T`` on top. ``truth=None``: one panel, input then prediction."""
    require_viz("an animated GIF")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t_in, c, h, w = inputs.shape
    t_out = pred.shape[0]
    k = _scale(h, w, frame_px)
    channels: list[int | None] = [None] if c in (1, 3) else list(range(c))
    sides = ["truth", "prediction"] if truth is not None else ["prediction"]
    pw, ph = w * k, h * k
    left, gap, title_h, bottom = (70 if channels[0] is not None else 12), 12, 22, 8
    head = 6 + (16 if title else 0)  # the caller's title line, then "t = k of T" and the phase under it
    top = head + 40
    width = max(left + len(sides) * pw + (len(sides) - 1) * gap + 12, 240)
    height = top + len(channels) * (ph + title_h) + bottom
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    if title:
        fig.text(0.5, 1 - 6 / height, title, ha="center", va="top", fontsize=9)
    header = fig.text(0.5, 1 - head / height, "", ha="center", va="top", fontsize=11, fontweight="bold")
    phase = fig.text(0.5, 1 - (head + 18) / height, "", ha="center", va="top", fontsize=8, color="0.3")
    panels = []
    for r, ch in enumerate(channels):
        for s, side in enumerate(sides):
            x, y = left + s * (pw + gap), top + r * (ph + title_h) + title_h
            ax = fig.add_axes((x / width, 1 - (y + ph) / height, pw / width, ph / height))
            ax.set_xticks([])
            ax.set_yticks([])
            if ch is not None and s == 0:
                ax.set_ylabel(f"channel {ch}", fontsize=9)
            image = ax.imshow(np.zeros((ph, pw, 3), np.uint8), interpolation="nearest", aspect="auto")
            panels.append((side, ch, image, ax.set_title("", fontsize=10, pad=4)))
    out = []
    for t in range(t_in + t_out):
        future = t >= t_in
        header.set_text(f"t = {t + 1} of {t_in + t_out}")
        phase.set_text("future: predicted by the model" if future else "input: given to the model")
        for side, ch, image, label in panels:
            if not future:
                frame, name = inputs[t], "input"
            elif side == "truth":
                frame, name = truth[t - t_in], "truth"
            else:
                frame, name = pred[t - t_in], "prediction"
            image.set_data(_frame_rgb(frame, ch).repeat(k, 0).repeat(k, 1))
            label.set_text(name)
        canvas.draw()
        out.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return out


def write_gif(path: str | os.PathLike, inputs: np.ndarray, truth: np.ndarray | None, pred: np.ndarray,
              duration_ms: int = 300, title: str | None = None) -> None:
    """Animated GIF of one sample (``inputs`` (T_in, C, H, W), ``truth``/``pred`` (T_out, C, H, W)), written
    atomically; see :func:`gif_frames`. The last frame is held longer so the final prediction can be read."""
    from PIL import Image

    from stcsnn.io import atomic_write_bytes

    frames = [Image.fromarray(f) for f in gif_frames(inputs, truth, pred, title=title)]
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 4]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    atomic_write_bytes(path, buf.getvalue())
