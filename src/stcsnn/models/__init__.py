"""Predictive models: the spiking predictor (and ANN baselines) built from a :class:`~stcsnn.config.Config`."""

from __future__ import annotations

from stcsnn.models.patch import from_patches, to_patches
from stcsnn.models.predictor import Rollout, SpikingPredictor, plain_rollout

__all__ = ["Rollout", "SpikingPredictor", "build_model", "from_patches", "plain_rollout", "to_patches"]

#: (C, H, W) of the built-in datasets, used when a config does not say ``frame_shape``.
DEFAULT_FRAME_SHAPES = {
    "embedded": (1, 64, 64), "mmnist": (1, 64, 64), "mfmnist": (1, 64, 64),
    "taxibj": (2, 32, 32), "kth": (1, 128, 128),
}


def frame_shape_of(cfg) -> tuple[int, int, int]:
    from stcsnn.errors import ConfigError

    if cfg.frame_shape is not None:
        return tuple(cfg.frame_shape)
    if cfg.dataset in DEFAULT_FRAME_SHAPES and "canvas_size" not in cfg.data_options:
        return DEFAULT_FRAME_SHAPES[cfg.dataset]
    raise ConfigError(f"config must give frame_shape: [C, H, W] for dataset {cfg.dataset!r} with these options")


def build_model(cfg) -> SpikingPredictor:
    """The model a :class:`~stcsnn.config.Config` describes (weights freshly initialised from ``cfg.seed``)."""
    from stcsnn.errors import ConfigError

    c, h, w = frame_shape_of(cfg)
    if h % cfg.patch_size or w % cfg.patch_size:
        raise ConfigError(f"patch_size {cfg.patch_size} must divide the frame size {h}x{w} of {cfg.dataset!r}")
    return SpikingPredictor(
        cfg.neuron, c, cfg.hidden_channels, cfg.kernel_size, cfg.patch_size, cfg.gradient_detach,
        cfg.neuron_options, checkpoint_steps=cfg.checkpoint_steps,
    )
