"""A user's own videos (``npy``): arrays (N, T, C, H, W) or (N, T, H, W) in .npy or .npz files.

Options:

- ``path``: one .npy/.npz file split into train/val/test by ``split_fractions`` (default (0.8, 0.1, 0.1),
  contiguous blocks in file order: the first videos train, then val, then test). An .npz holding arrays named
  ``train``, ``val`` and ``test`` gives the splits directly; another .npz must hold a single array or name it
  with ``key``.
- ``train_path``, ``val_path``, ``test_path``: one file per split instead.
- ``input_frames``, ``output_frames``: the frame split (default: the first half of T in, the rest out).
- ``stride``: ``None`` (default) takes one sequence per video, its first input + output frames; an integer
  takes every window of input + output frames starting at 0, stride, 2*stride, ...
- ``normalize``: uint8 is always scaled /255. Other data must already lie in [0, 1] unless
  ``normalize="minmax"`` (mapped with the training part's min and max, the same mapping for every split,
  clipped to [0, 1]) or ``normalize="255"`` (divided by 255). NaN or infinite values are refused.

.npy files are memory-mapped; values are checked when the dataset is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stcsnn.data.base import SequenceDataset, check_split, frame_counts, positive_int, take_options
from stcsnn.data.formats import check_values, load_npy, load_npz, npz_keys, require_file
from stcsnn.data.registry import DatasetSpec, register_dataset
from stcsnn.errors import DataError

DEFAULTS: dict[str, Any] = {"path": None, "train_path": None, "val_path": None, "test_path": None,
                            "key": None, "input_frames": None, "output_frames": None, "stride": None,
                            "normalize": None, "split_fractions": (0.8, 0.1, 0.1)}
NORMALIZE = (None, "minmax", "255")


def load_videos(path: str | Path, key: str | None = None) -> np.ndarray:
    """The video array in ``path`` (.npy memory-mapped, or one array of an .npz), shape-checked."""
    path = require_file(Path(path), "a .npy or .npz array of videos (N, T, C, H, W) or (N, T, H, W)",
                        "check the path option")
    if path.suffix == ".npz":
        keys = npz_keys(path)
        if key is None and len(keys) != 1:
            raise DataError(f"{path}: expected a single array or the option key naming one, found arrays "
                            f"{', '.join(keys)}; set key=<name>")
        arr = load_npz(path, [key or keys[0]])[key or keys[0]]
    else:
        arr = load_npy(path)
    return check_videos(arr, str(path))


def check_videos(arr: np.ndarray, source: str) -> np.ndarray:
    if arr.ndim not in (4, 5) or arr.dtype.kind not in "uif" or 0 in arr.shape:
        raise DataError(f"{source}: expected a numeric array of videos (N, T, C, H, W) or (N, T, H, W), "
                        f"found {arr.dtype} {arr.shape}; reshape or convert the data (e.g. to float32)")
    return arr


def as_videos(arr: np.ndarray) -> np.ndarray:
    """A videos array of :func:`check_videos` as (N, T, C, H, W): the 4-dimensional layout (N, T, H, W) is one
    channel. A view: nothing is copied or read (a memory-mapped array stays memory-mapped)."""
    return arr if arr.ndim == 5 else arr[:, :, None]


class VideoArrays(SequenceDataset):
    """Sequences from ``arr`` (N, T, [C,] H, W) rows ``rows``, scaled as ``(x - offset) / denom``."""

    def __init__(self, split: str, arr: np.ndarray, rows: range, windows: list[tuple[int, int]],
                 offset: float, denom: float, clip: bool, input_frames: int, output_frames: int) -> None:
        self.name, self.split, self.arr, self.rows, self.windows = "npy", split, as_videos(arr), rows, windows
        self.offset, self.denom, self.clip = offset, denom, clip
        self.input_frames, self.output_frames = input_frames, output_frames
        self.frame_shape = tuple(self.arr.shape[2:])

    def __len__(self) -> int:
        return len(self.windows)

    def frames(self, index: int) -> np.ndarray:
        row, start = self.windows[index]
        seq = np.asarray(self.arr[self.rows[row], start: start + self.input_frames + self.output_frames],
                         dtype=np.float32)
        seq = (seq - np.float32(self.offset)) / np.float32(self.denom)
        if self.clip:
            seq = np.clip(seq, 0.0, 1.0)
        return seq


def _fraction_rows(n: int, fractions: Any, source: str) -> dict[str, range]:
    try:
        f = [float(v) for v in fractions]
    except (TypeError, ValueError):
        f = []
    if len(f) != 3 or min(f) <= 0 or abs(sum(f) - 1) > 1e-6:
        raise DataError(f"npy: split_fractions must be three positive numbers (train, val, test) summing to "
                        f"1, found {fractions!r}")
    n_val, n_test = round(n * f[1]), round(n * f[2])
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        raise DataError(f"{source}: expected enough videos for train/val/test fractions {tuple(f)}, found "
                        f"{n} (giving {n_train}/{n_val}/{n_test}); provide more videos or separate files "
                        "(train_path, val_path, test_path)")
    return {"train": range(0, n_train), "val": range(n_train, n_train + n_val),
            "test": range(n_train + n_val, n)}


def build_npy(split: str, root: str | None = None, **options: Any) -> VideoArrays:
    """User arrays; ``root`` is unused (paths are given as options). See the module docstring."""
    check_split(split)
    opt = take_options("npy", options, DEFAULTS)
    if opt["normalize"] in ("none", "None"):
        opt["normalize"] = None
    if opt["normalize"] not in NORMALIZE:
        raise DataError(f"npy: normalize must be one of None, 'minmax', '255', found {opt['normalize']!r}")
    per_split = {s: opt[f"{s}_path"] for s in ("train", "val", "test")}
    sources: dict[str, tuple[np.ndarray, range, str]] = {}
    if any(per_split.values()):
        if opt["path"]:
            raise DataError("npy: give either path or train_path/val_path/test_path, found both")
        need = {split, "train"} if opt["normalize"] == "minmax" else {split}
        for s in need:
            if not per_split[s]:
                raise DataError(f"npy: the {s} split needs the option {s}_path (a .npy/.npz file), "
                                "found none")
            arr = load_videos(per_split[s], opt["key"])
            sources[s] = (arr, range(len(arr)), str(per_split[s]))
    elif opt["path"]:
        path = Path(opt["path"])
        keys = npz_keys(path) if path.suffix == ".npz" and path.is_file() else []
        if opt["key"] is None and set(SPLIT_KEYS) <= set(keys):
            arrays = load_npz(path, SPLIT_KEYS)
            for s in SPLIT_KEYS:
                arr = check_videos(arrays[s], f"{path}[{s}]")
                sources[s] = (arr, range(len(arr)), f"{path}[{s}]")
        else:
            arr = load_videos(path, opt["key"])
            for s, rows in _fraction_rows(len(arr), opt["split_fractions"], str(path)).items():
                sources[s] = (arr, rows, str(path))
    else:
        raise DataError("npy: expected the option path (or train_path, val_path, test_path) naming your "
                        ".npy/.npz videos, found none; set data_options.path in the config")
    arr, rows, source = sources[split]
    n_frames = arr.shape[1]
    t_in = opt["input_frames"] if opt["input_frames"] is not None else n_frames // 2
    t_out = opt["output_frames"] if opt["output_frames"] is not None else n_frames - t_in
    t_in, t_out = frame_counts(t_in, t_out, n_frames, source)
    length = t_in + t_out
    if opt["stride"] is None:
        windows = [(r, 0) for r in range(len(rows))]
    else:
        stride = positive_int(opt["stride"], "stride")
        windows = [(r, s) for r in range(len(rows)) for s in range(0, n_frames - length + 1, stride)]
    offset, denom, clip = _scaling(arr, rows, source, opt["normalize"], sources.get("train"))
    return VideoArrays(split, arr, rows, windows, offset, denom, clip, t_in, t_out)


SPLIT_KEYS = ["train", "val", "test"]


def _scaling(arr: np.ndarray, rows: range, source: str, normalize: str | None,
             train: tuple[np.ndarray, range, str] | None) -> tuple[float, float, bool]:
    """``(offset, denom, clip)`` mapping the data to [0, 1], after checking the values of this split."""
    part = arr[rows.start: rows.stop]
    what = f"{source} (videos {rows.start}..{rows.stop - 1})"
    if arr.dtype == np.uint8 and normalize != "minmax":
        return 0.0, 255.0, False
    if normalize == "255":
        check_values(part, 0.0, 255.0, what, "normalize='255' needs values in [0, 255]; use 'minmax'")
        return 0.0, 255.0, False
    if normalize == "minmax":
        check_values(part, -np.inf, np.inf, what, "")
        t_arr, t_rows, t_source = train
        lo, hi = check_values(t_arr[t_rows.start: t_rows.stop], -np.inf, np.inf, t_source, "")
        if not hi > lo:
            raise DataError(f"{t_source}: expected varying values for normalize='minmax', found all equal to "
                            f"{lo:g}; this data cannot be min-max scaled")
        return lo, hi - lo, True
    check_values(part, 0.0, 1.0, what,
                 "set normalize='minmax' (or '255' for 0..255 data) or rescale the data")
    return 0.0, 1.0, False


register_dataset(DatasetSpec(
    "npy", "your own videos: .npy/.npz arrays (N, T, C, H, W) or (N, T, H, W)", build_npy,
    describe_files=lambda root: ["files    given by the options path or train_path/val_path/test_path "
                                 "(-O path=videos.npy)"],
    local="reads your own arrays (option path)"))
