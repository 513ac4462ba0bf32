"""The splits a config describes, and the frame shape they fix: one place for the trainer, eval and analyses."""

from __future__ import annotations

from typing import Any

from stcsnn.config import Config, make_config
from stcsnn.data.registry import build_dataset, get_dataset_spec
from stcsnn.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


def frame_shape_of(cfg: Config) -> tuple[int, int, int]:
    """(C, H, W) of ``cfg``'s frames: its ``frame_shape`` if given, else the dataset spec's shape for its
    ``data_options`` (without reading data). A dataset whose shape only its data tells (``npy``) needs
    ``frame_shape`` in the config."""
    if cfg.frame_shape is not None:
        return tuple(cfg.frame_shape)
    shape = get_dataset_spec(cfg.dataset).frame_shape(dict(cfg.data_options))
    if shape is None:
        raise ConfigError(f"the frame shape of dataset {cfg.dataset!r} is unknown without its data: expected "
                          "frame_shape: [C, H, W] in the config, found none")
    return tuple(int(v) for v in shape)


def resolve_config_shape(cfg: Config) -> Config:
    """``cfg`` with ``frame_shape`` filled from the dataset spec (``cfg`` itself when it has one): what
    ``stcsnn.models.build_model`` needs."""
    if cfg.frame_shape is not None:
        return cfg
    return make_config({**cfg.to_dict(), "frame_shape": list(frame_shape_of(cfg))})


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
