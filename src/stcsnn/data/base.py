"""What every dataset shares: the item contract, the data root, option and frame-count checks.

Every dataset is a ``torch.utils.data.Dataset`` whose item ``i`` is ``(inputs, targets)``: float32 tensors
shaped ``(T_in, C, H, W)`` and ``(T_out, C, H, W)`` with values in [0, 1]. Each has ``name``, ``split``,
``frame_shape`` (C, H, W), ``input_frames``, ``output_frames`` and ``set_epoch(epoch)`` (only datasets that
generate sequences on the fly use the epoch; for the others it does nothing, so a trainer can always call it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stcsnn.config import some
from stcsnn.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
ENV_VAR = "STCSNN_DATA"


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$STCSNN_DATA``, else ``./data`` (OpenSTL's layout)."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return Path("data")


def root_origin(root: str | os.PathLike[str] | None) -> str:
    """Where :func:`resolve_root` took the root from, for messages."""
    if root is not None and str(root) != "":
        return "given"
    return f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "default ./data"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return split


def take_options(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``options``; an option not in ``defaults`` is an error listing them."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise DataError(f"unknown option(s) {some(unknown)} for dataset {name!r}: "
                        f"expected some of {', '.join(sorted(defaults))}")
    out = dict(defaults)
    out.update(options)
    return out


def positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{what} must be an integer >= {minimum}, found {value!r}")
    return int(value)


def frame_counts(input_frames: Any, output_frames: Any, available: int, source: str) -> tuple[int, int]:
    """Validated ``(input_frames, output_frames)``; their sum must not exceed the ``available`` frames."""
    t_in = positive_int(input_frames, "input_frames")
    t_out = positive_int(output_frames, "output_frames")
    if t_in + t_out > available:
        raise DataError(f"{source}: expected sequences of at least input_frames + output_frames = "
                        f"{t_in} + {t_out} = {t_in + t_out} frames, found {available}; lower input_frames/"
                        "output_frames or provide longer sequences")
    return t_in, t_out


class SequenceDataset(Dataset):
    """Base class. Subclasses set the attributes below and implement ``__len__`` and ``frames(i)``, which
    returns the whole sequence as float32 numpy ``(T_in + T_out, C, H, W)`` in [0, 1]."""

    name: str = ""
    split: str = ""
    frame_shape: tuple[int, int, int] = (1, 1, 1)
    input_frames: int = 1
    output_frames: int = 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch for on-the-fly generation; a no-op for datasets read from files."""

    def frames(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name} {self.split}: index {index} out of range for {n} sequences")
        seq = self.frames(int(index) % n)
        seq = torch.from_numpy(np.ascontiguousarray(seq, dtype=np.float32))
        return seq[: self.input_frames], seq[self.input_frames: self.input_frames + self.output_frames]

    def __getstate__(self) -> dict:
        """Pickle (DataLoader workers under spawn) without memory-mapped arrays: they are reopened."""
        state = self.__dict__.copy()
        for key, value in self.__dict__.items():
            if isinstance(value, np.memmap):
                state[key] = ("__memmap__", value.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "__memmap__":
                state[key] = np.load(value[1], mmap_mode="r", allow_pickle=False)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        c, h, w = self.frame_shape
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, sequences={len(self)}, "
                f"frames={self.input_frames}->{self.output_frames}, frame_shape={c}x{h}x{w})")
