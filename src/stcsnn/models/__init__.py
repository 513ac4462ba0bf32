"""Predictive models: the spiking predictor (and ANN baselines) built from a :class:`~stcsnn.config.Config`."""

from __future__ import annotations

from numbers import Integral

from stcsnn.config import check_memory
from stcsnn.models.patch import from_patches, to_patches
from stcsnn.models.predictor import PLAIN, ExecutionPolicy, Rollout, SpikingPredictor, choose_policy, plain_rollout

__all__ = ["PLAIN", "ExecutionPolicy", "Rollout", "SpikingPredictor", "build_model", "choose_policy", "from_patches",
           "plain_rollout", "to_patches"]


def meta_parameters(cfg, shape: tuple[int, int, int]) -> int | None:
    """The parameter count of ``cfg``'s model built on the meta device (shapes only, nothing allocated); ``None``
    when the neuron is not registered or the model cannot be built (the builder reports that itself, when the
    model is built). What :func:`stcsnn.config.memory_estimate` takes as its exact ``params``."""
    import torch

    from stcsnn.neurons.registry import NEURONS

    if cfg.neuron not in NEURONS:
        return None
    try:
        with torch.device("meta"):
            return sum(t.numel() for t in _predictor(cfg, int(shape[0])).parameters())
    except Exception:  # an option the neuron lacks, ...: not this check's to report
        return None


def _predictor(cfg, channels: int, policy: ExecutionPolicy | None = None) -> SpikingPredictor:
    return SpikingPredictor(
        cfg.neuron, channels, cfg.hidden_channels, cfg.kernel_size, cfg.patch_size, cfg.gradient_detach,
        cfg.neuron_options, checkpoint_steps=cfg.checkpoint_steps, policy=policy, norm_eps=cfg.norm_eps,
    )


def build_model(cfg, frame_shape: tuple[int, int, int] | list[int] | None = None, *,
                policy: ExecutionPolicy | None = None) -> SpikingPredictor:
    """The model a :class:`~stcsnn.config.Config` describes (weights freshly initialised from ``cfg.seed``),
    for frames of ``frame_shape`` (C, H, W), else ``cfg.frame_shape``; ``policy``: its
    :class:`ExecutionPolicy` (``None``: chosen per run by :func:`choose_policy`).

    The models layer knows no dataset: a config without a frame shape is an error here.
    ``stcsnn.build_model(cfg)`` or ``stcsnn.data.resolve_config_shape(cfg)`` fills it from the dataset spec."""
    from stcsnn.errors import ConfigError

    shape = frame_shape if frame_shape is not None else cfg.frame_shape
    if shape is None:
        raise ConfigError(
            f"the frame shape is unknown: expected frame_shape [C, H, W] in the config (dataset {cfg.dataset!r}) "
            "or as the frame_shape argument, found neither; stcsnn.build_model(cfg) or "
            "stcsnn.data.resolve_config_shape(cfg) fills it from the dataset spec")
    if len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in shape):
        raise ConfigError(f"frame_shape must be [C, H, W] of integers >= 1, found {list(shape)!r}")
    c, h, w = (int(v) for v in shape)
    if h % cfg.patch_size or w % cfg.patch_size:
        raise ConfigError(f"patch_size {cfg.patch_size} must divide the frame size {h}x{w} of {cfg.dataset!r}")
    # the weights must fit, counted exactly (on the meta device) before any is allocated: the config's own check
    # (stcsnn.config.validate) has only a lower bound, the models layer being above it
    check_memory(cfg, training=False, params=meta_parameters(cfg, (c, h, w)))
    model = _predictor(cfg, c, policy)
    return model.double() if cfg.dtype == "float64" else model
