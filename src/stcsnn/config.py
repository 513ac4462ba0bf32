"""Run configuration: every key, its default and its meaning in one place (``Config`` below).

Configs are YAML files of plain data, read with ``yaml.safe_load`` (never executed), validated against the
fields of :class:`Config`: an unknown key is an error that suggests the nearest valid one, a value of the
wrong type is an error naming the key, the expected type and the value found. Any key can be overridden as
``key=value`` (dotted for nested dicts, e.g. ``data_options.num_samples=200``); values are parsed as YAML, so
``hidden_channels=[64,64,64]`` gives a list.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stcsnn.errors import ConfigError


@dataclass
class Config:
    # --- data ---
    dataset: str = "embedded"  # registered dataset name: embedded, mmnist, mfmnist, taxibj, kth, npy
    data_root: str | None = None  # None: $STCSNN_DATA, else ./data
    data_options: dict = field(default_factory=dict)  # extra build_dataset options (num_samples, path, ...)
    input_frames: int = 10
    output_frames: int = 10
    frame_shape: list[int] | None = None  # (C, H, W); None: taken from the dataset
    # --- model ---
    neuron: str = "stc_lif"  # any registered neuron (`stcsnn neurons`) or ANN cell
    neuron_options: dict = field(default_factory=dict)  # surrogate, alpha, input_gain, train_gates
    hidden_channels: list[int] = field(default_factory=lambda: [64, 64, 64])
    kernel_size: int = 5
    patch_size: int = 4
    gradient_detach: bool = False  # STC neurons: stop the gradient through S[t-1] into the pathways
    # --- optimisation (the reference: Adam, lr 1e-3, cosine with 10 warm-up epochs, min lr 1e-5) ---
    batch_size: int = 16  # global batch (split evenly across DDP ranks)
    eval_batch_size: int | None = None  # None: batch_size
    epochs: int = 500
    steps_per_epoch: int | None = None  # None: the whole training split each epoch
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: int = 10
    warmup_lr: float = 1e-5
    weight_decay: float = 0.0
    grad_clip: float | None = None
    loss: str = "all"  # all: MSE over every output frame 2..T (the reference); future: predicted frames only
    # --- scheduled sampling (PredRNN / the reference) ---
    sampling: str = "scheduled"  # scheduled | reverse | teacher (always true frames) | autoregressive (never)
    sampling_start: float = 1.0
    sampling_changing_rate: float = 2e-5
    sampling_stop_iter: int = 50000
    r_sampling_step_1: int = 25000
    r_sampling_step_2: int = 50000
    r_exp_alpha: float = 5000.0
    # --- run ---
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str | None = None  # None | bf16 | fp16
    compile: bool = False
    checkpoint_steps: int = 0  # >0: activation checkpointing over chunks of this many time steps
    num_workers: int = 0
    val_every: int = 1  # validate every N epochs
    save_every_steps: int = 0  # >0: also write last.pt every N optimizer steps (mid-epoch resume)
    log_every: int = 20  # plain log line every N steps when not on a terminal
    max_val_batches: int | None = None  # cap validation cost per epoch (None: the whole split)
    max_test_batches: int | None = None
    num_visualize: int = 4  # samples in the end-of-run picture

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)

CHOICES = {
    "loss": ("all", "future"),
    "sampling": ("scheduled", "reverse", "teacher", "autoregressive"),
    "amp": (None, "bf16", "fp16"),
}


def _yaml():
    try:
        import yaml
    except ImportError as exc:  # the neuron library needs no YAML; configs do
        raise ConfigError(f"reading YAML configs needs PyYAML ({exc}); install it: pip install 'stcsnn[cli]'") from None
    return yaml


def parse_value(text: str) -> Any:
    """Parse one ``--set`` value as YAML (``[64,64]`` -> list, ``1e-3`` -> float, ``null`` -> None)."""
    try:
        value = _yaml().safe_load(text)
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"cannot parse value {text!r}: {exc}") from None
    return value


def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner)
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, str):
        # PyYAML follows YAML 1.1, where '1e-3' (no dot) is a string; accept the float everyone means.
        try:
            return float(value)
        except ValueError:
            pass
    if expected is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r} ({type(value).__name__})")
        (item,) = args or (Any,)
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)] if item is not Any else value
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"config key {key!r} expects int, got {value!r} (bool)")
    if expected is not Any and not isinstance(value, expected):
        name = getattr(expected, "__name__", expected)
        raise ConfigError(f"config key {key!r} expects {name}, got {value!r} ({type(value).__name__})")
    return value


def _unknown_key(key: str, valid: typing.Iterable[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, list(valid), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"unknown config key {key!r}{suggestion}")


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    top, *rest = dotted.split(".")
    if top not in FIELDS:
        raise _unknown_key(top, FIELDS)
    if not rest:
        raw[top] = value
        return
    if _HINTS[top] is not dict:
        raise ConfigError(f"config key {top!r} is not a mapping, cannot set {dotted!r}")
    node = raw.setdefault(top, {})
    for part in rest[:-1]:
        node = node.setdefault(part, {})
    node[rest[-1]] = value


def make_config(raw: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Validate a mapping (plus dotted ``overrides``) into a :class:`Config`."""
    raw = dict(raw or {})
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, parse_value(value) if isinstance(value, str) else value)
    kwargs = {}
    for key, value in raw.items():
        if key not in FIELDS:
            raise _unknown_key(key, FIELDS)
        kwargs[key] = _check_type(key, value, _HINTS[key])
    cfg = Config(**kwargs)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that do not need the data (those that do live in the trainer / model builder)."""
    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"config key {key!r} must be one of {list(choices)}, got {getattr(cfg, key)!r}")
    positive = ["input_frames", "output_frames", "kernel_size", "patch_size", "batch_size", "epochs"]
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key {key!r} must be >= 1, got {getattr(cfg, key)}")
    if not cfg.hidden_channels:
        raise ConfigError("config key 'hidden_channels' must list at least one layer width, got []")
    for i, c in enumerate(cfg.hidden_channels):
        if c < 16 or c % 16:
            raise ConfigError(
                f"hidden_channels[{i}] must be a positive multiple of 16 (GroupNorm with 16 groups), got {c}"
            )
    if cfg.kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size must be odd (same padding), got {cfg.kernel_size}")
    if cfg.frame_shape is not None:
        if len(cfg.frame_shape) != 3:
            raise ConfigError(f"frame_shape must be [C, H, W], got {cfg.frame_shape}")
        _, h, w = cfg.frame_shape
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ConfigError(
                f"patch_size {cfg.patch_size} must divide the frame size {h}x{w} (frame_shape {cfg.frame_shape})"
            )
    if cfg.sampling == "reverse" and cfg.r_sampling_step_2 <= cfg.r_sampling_step_1:
        raise ConfigError("r_sampling_step_2 must be larger than r_sampling_step_1")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (expected a YAML file, e.g. configs/quickstart.yaml)")
    try:
        raw = _yaml().safe_load(path.read_text())
    except Exception as exc:  # yaml.YAMLError, UnicodeDecodeError
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, found {type(raw).__name__}")
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """``load_config("configs/mmnist/stc_lif.yaml", overrides={"epochs": 1})`` -> :class:`Config`.

    ``path=None`` starts from the defaults. ``overrides`` keys may be dotted; string values are parsed as YAML.
    """
    raw = read_yaml(path) if path is not None else {}
    try:
        return make_config(raw, overrides)
    except ConfigError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{exc}{where}") from None


def parse_overrides(items: typing.Sequence[str] | None) -> dict[str, str]:
    """``["a=1", "b.c=[1,2]"]`` -> ``{"a": "1", "b.c": "[1,2]"}`` (values parsed later as YAML)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def dump_config(cfg: Config, path: str | os.PathLike) -> None:
    from stcsnn.io import atomic_write_text

    atomic_write_text(path, _yaml().safe_dump(cfg.to_dict(), sort_keys=False))
