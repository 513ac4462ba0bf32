"""The splits a config describes, and the frame shape they fix: one place for the trainer, eval and analyses."""

from __future__ import annotations

from typing import Any

from stcsnn.config import Config, make_config
from stcsnn.data.registry import build_dataset
from stcsnn.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


def build_splits(cfg: Config, splits: tuple[str, ...] = SPLIT_NAMES) -> dict[str, Any]:
    """``{split: dataset}`` for the named ``splits`` only (``eval --split test`` needs no training files)."""
    opts = dict(cfg.data_options)
    opts.setdefault("input_frames", cfg.input_frames)
    opts.setdefault("output_frames", cfg.output_frames)
    return {split: build_dataset(cfg.dataset, split, root=cfg.data_root, **opts) for split in splits}


def build_split(cfg: Config, split: str):
    """One split of ``cfg``'s dataset."""
    return build_splits(cfg, (split,))[split]


def resolve_frame_shape(cfg: Config, dataset, error: type[Exception] = ConfigError, what: str | None = None
                        ) -> Config:
    """``cfg`` with the dataset's frame shape recorded (so checkpoints rebuild their model without data); a
    config that already names another shape is an ``error`` (``what``: who trained on it, for the message)."""
    shape = list(dataset.frame_shape)
    if cfg.frame_shape is not None and list(cfg.frame_shape) != shape:
        if what is not None:
            raise error(f"{what} was trained on frames {list(cfg.frame_shape)}, the {cfg.dataset!r} data has "
                        f"{shape}")
        raise error(f"frame_shape {cfg.frame_shape} does not match the dataset {cfg.dataset!r}: {shape}")
    return make_config({**cfg.to_dict(), "frame_shape": shape})
