"""Run configuration: every key, its default and its meaning in one place (``Config`` below).

Configs are YAML files of plain data, read with ``yaml.safe_load``'s rules (never executed; a duplicate key is
an error naming it and its line), validated against the fields of :class:`Config`: an unknown key is an error
that suggests the nearest valid one, a value of the wrong type or out of range is an error naming the key, what
is allowed and the value found. Any key can be overridden as ``key=value`` (dotted for nested dicts, e.g.
``data_options.num_samples=200``); values are parsed as YAML, so ``hidden_channels=[64,64,64]`` gives a list.

Every path into a :class:`Config` (a YAML file, ``--set``, a checkpoint's stored config, the Python API) goes
through :func:`make_config`, which checks everything (:func:`validate`) before any work starts. Hostile input is
refused at once: a config is measured before it is built, printed or copied (at most ``MAX_NODES`` values,
counting an alias or a shared reference each time it is used, and ``MAX_DEPTH`` levels), a model or training
step that cannot fit the machine's available memory is refused before anything is allocated (:func:`check_memory`),
and a message quotes at most a short prefix of a value (:func:`stcsnn.errors.short`, :func:`stcsnn.errors.quoted`
with its length). YAML is read by :mod:`stcsnn.safe_yaml`. An error
caused by an override names the ``--set`` item, not the config file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stcsnn.errors import ConfigError, quoted, short, some  # noqa: F401  (short, quoted, some: re-exported)
from stcsnn.machine import available_memory
from stcsnn.safe_yaml import MAX_DEPTH, MAX_NODES, MAX_YAML_CHARS, check_size, dump_yaml, load_yaml, parse_value  # noqa: F401


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
    # every GroupNorm's epsilon (synapses, STC pathways; ConvLSTM has none); 1e-5: PyTorch's and the reference's.
    # Its backward multiplies by 1/sqrt(var + eps): over an all-zero group (blank frames, a silent layer) that is
    # 316x at 1e-5, and a rollout of silent steps compounds it (why the grids raise it: analysis/scales.py)
    norm_eps: float = 1e-5
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
    # the parameters' and the computation's dtype: float64 makes two computation paths (1 vs N DDP processes,
    # batched vs per-frame) agree to ~1e-15 instead of float32 rounding, which can flip a spike
    dtype: str = "float32"  # float32 | float64
    compile: bool = False
    checkpoint_steps: int = 0  # >0: activation checkpointing over chunks of this many time steps
    num_workers: int = 0
    val_every: int = 1  # validate every N epochs
    save_every_steps: int = 0  # >0: also write last.pt every N optimizer steps (mid-epoch resume)
    # on this signal train writes last.pt after the current step and goes on (Slurm's --signal=USR1@90 warning)
    save_on_signal: str | None = "SIGUSR1"  # a signal name (SIGUSR1, SIGUSR2, SIGHUP, ...); null: none
    log_every: int = 20  # plain log line every N steps when not on a terminal
    max_val_batches: int | None = None  # cap validation cost per epoch (None: the whole split)
    max_test_batches: int | None = None
    num_visualize: int = 4  # samples in the end-of-run picture
    # also write TensorBoard event files under RUN/tensorboard/ (needs the tb extra: pip install "stcsnn[tb]")
    tensorboard: bool = False
    # the metrics validation computes and reports show (names of stcsnn.metrics.METRICS); null: the reported set
    # (stcsnn.metrics.REPORTED when the run validates). best.pt is chosen by MSE whatever is listed.
    metrics: list[str] | None = None
    # CPU threads of the run: train records the count it starts with (null in a config: --threads / auto decide;
    # an explicit --threads N or OMP_NUM_THREADS wins, and a resume restores it otherwise)
    threads: int | None = None
    # re-time an automatic thread count during training (opt-in: a thread count changes float rounding, so a
    # re-tuned run is not reproducible from its seed and config; the changes are in steps.csv's threads column)
    retune_threads: bool = False
    # a record written by train: the processes the run trains on (DDP under torchrun; 1 otherwise)
    world_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)

CHOICES = {
    "loss": ("all", "future"),
    "sampling": ("scheduled", "reverse", "teacher", "autoregressive"),
    "amp": (None, "bf16", "fp16"),
    "dtype": ("float32", "float64"),
}

#: Keys that define a trained model (its architecture and the frames it was built for): evaluating or predicting
#: with a checkpoint may change the data keys, never these (see :func:`checkpoint_config`).
MODEL_KEYS: tuple[str, ...] = ("neuron", "neuron_options", "hidden_channels", "kernel_size", "patch_size",
                               "gradient_detach", "norm_eps", "frame_shape", "dtype")

#: Integer keys and the least value each takes (keys typed ``int | None`` may also be null).
INT_MINIMUM: dict[str, int] = {
    "input_frames": 1, "output_frames": 1, "kernel_size": 1, "patch_size": 1, "batch_size": 1,
    "eval_batch_size": 1, "epochs": 1, "steps_per_epoch": 1, "warmup_epochs": 0, "sampling_stop_iter": 0,
    "r_sampling_step_1": 0, "r_sampling_step_2": 0, "seed": 0, "checkpoint_steps": 0, "num_workers": 0,
    "val_every": 1, "save_every_steps": 0, "log_every": 1, "max_val_batches": 1, "max_test_batches": 1,
    "num_visualize": 0, "threads": 1, "world_size": 1,
}
#: Float keys: (lowest value, whether the lowest value itself is allowed, highest value or None); all finite.
#: min_lr and warmup_lr may be 0 (a cosine down to zero, a warm-up from zero); lr must be > 0.
FLOAT_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "lr": (0.0, False, None), "min_lr": (0.0, True, None), "warmup_lr": (0.0, True, None),
    "weight_decay": (0.0, True, None), "grad_clip": (0.0, False, None), "sampling_start": (0.0, True, 1.0),
    "sampling_changing_rate": (0.0, True, None), "r_exp_alpha": (0.0, False, None), "norm_eps": (0.0, False, None),
}
#: The highest learning rate (lr, min_lr, warmup_lr): a step of more than 10x the gradient's scale diverges at
#: once, and 1e300 overflows inside Adam.
MAX_LR = 10.0
MAX_SEED = 2**32 - 1  # the trainer derives per-epoch seeds as seed * 1_000_003 + epoch, which must fit 64 bits
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")

def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner)
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"config key {key!r} expects float, got an integer too large for one "
                              f"({short(value)})") from None
    if expected is float and isinstance(value, str):
        # PyYAML follows YAML 1.1, where '1e-3' (no dot) is a string; accept the float everyone means.
        try:
            return float(value)
        except ValueError:
            pass
    if expected is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} expects a list, got {short(value)} ({type(value).__name__})")
        (item,) = args or (Any,)
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)] if item is not Any else value
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"config key {key!r} expects int, got {value!r} (bool)")
    if expected is not Any and not isinstance(value, expected):
        name = getattr(expected, "__name__", expected)
        raise ConfigError(f"config key {key!r} expects {name}, got {short(value)} ({type(value).__name__})")
    if expected is dict:
        for k in value:
            if not isinstance(k, str):  # they become keyword arguments of the dataset or neuron
                raise ConfigError(f"config key {key!r} must map option names (strings) to values, found the key "
                                  f"{short(k)} ({type(k).__name__})")
    return value


def _unknown_key(key: str, valid: typing.Iterable[str]) -> ConfigError:
    hint = difflib.get_close_matches(key[:100], list(valid), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"unknown config key {quoted(key)}{suggestion}")


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """``raw[a][b][c] = value`` for ``dotted == "a.b.c"``, copying each mapping on the way (the caller's nested
    dicts are left untouched)."""
    if not isinstance(dotted, str):
        raise ConfigError(f"override keys must be names (strings), found {short(dotted)} ({type(dotted).__name__})")
    parts = dotted.split(".")
    top = parts[0]
    if top not in FIELDS:
        raise _unknown_key(top, FIELDS)
    if len(parts) == 1:
        raw[top] = value
        return
    if _HINTS[top] is not dict:
        raise ConfigError(f"config key {top!r} is not a mapping, cannot set {short(dotted)}")
    if not all(parts):
        raise ConfigError(f"override key {short(dotted)} has an empty name between dots")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part, {})
        if not isinstance(child, Mapping):
            raise ConfigError(f"config key {'.'.join(parts[:i + 1])!r} is {short(child)}, not a mapping: cannot "
                              f"set {short(dotted)}")
        node[part] = child = dict(child)
        node = child
    node[parts[-1]] = value


def make_config(raw: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Validate a mapping (plus dotted ``overrides``) into a :class:`Config`; every check runs here, before any
    work (see :func:`validate`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping of keys to values, found {type(raw).__name__}")
    check_size(raw)  # before anything copies or prints it
    raw = dict(raw)
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        try:
            if isinstance(value, str):
                value = parse_value(value)
            else:
                check_size(value, f"the value of {short(key)}")
            _set_dotted(raw, key, value)
        except ConfigError as exc:
            raise SetError(f"--set {_cut(str(key))}: {exc}") from None
    kwargs = {}
    try:
        for key, value in raw.items():
            if not isinstance(key, str):
                raise ConfigError(f"config keys must be names (strings), found {short(key)} "
                                  f"({type(key).__name__})")
            if key not in FIELDS:
                raise _unknown_key(key, FIELDS)
            kwargs[key] = _check_type(key, value, _HINTS[key])
        cfg = Config(**kwargs)
        validate(cfg)
    except ConfigError as exc:
        raise _blame_override(exc, overrides) from None
    return cfg


class SetError(ConfigError):
    """A ConfigError caused by an override (``--set KEY=VALUE``): its message names the ``--set`` item, and
    :func:`load_config` does not blame the config file for it."""


def _blame_override(exc: ConfigError, overrides: Mapping[str, Any]) -> ConfigError:
    """``exc`` naming the overrides (``--set`` items) it is about: a :class:`SetError` when its message is about
    the one key an override set (``config key 'lr' ...``), the items appended when it names override keys among
    others (a combination, e.g. the memory estimate), else ``exc`` unchanged."""
    message = str(exc)
    named = []
    for dotted, text in overrides.items():
        top = str(dotted).split(".")[0]
        item = f"--set {_cut(str(dotted))}={_cut(text if isinstance(text, str) else short(text))}"
        if re.match(rf"config key '{re.escape(top)}['\[.]", message):
            return SetError(f"{item}: {message}")
        if top in FIELDS and re.search(rf"(?<![\w.]){re.escape(top)}\b", message):  # 'lr' is not in 'min_lr'
            named.append(item)
    return ConfigError(f"{message} (with {', '.join(named)})") if named else exc


def check_training(cfg: Config, overrides: Mapping[str, Any] | None = None, source: str | None = None,
                   params: int | None = None) -> None:
    """:func:`check_memory` of a training step (``params``: the exact parameter count, where the caller has it),
    its error naming the ``--set`` items (and the config file ``source``) as :func:`load_config`'s errors do:
    ``stcsnn train`` calls it before anything is built."""
    try:
        check_memory(cfg, params=params)
    except ConfigError as exc:
        blamed = _blame_override(exc, overrides or {})
        if isinstance(blamed, SetError) or source is None:
            raise blamed from None
        raise ConfigError(f"{blamed} in {source}") from None


def _cut(text: str, limit: int = 40) -> str:
    """``text`` unquoted if short, else its first characters and its length."""
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text):,} characters)"


def _optional(key: str) -> bool:
    return type(None) in typing.get_args(_HINTS[key])


def _number(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else short(v)


def validate(cfg: Config) -> None:
    """Every check that does not need the data (those that do live in the trainer and the model builder): the
    type of every key, the choices of the string keys, the range of every number, and combinations."""
    for key in FIELDS:
        value = getattr(cfg, key)
        if isinstance(value, (dict, list)):
            check_size(value, f"config key {key!r}")
        _check_type(key, value, _HINTS[key])
    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"config key {key!r} must be one of {list(choices)}, got {short(getattr(cfg, key))}")
    for key, least in INT_MINIMUM.items():
        value = getattr(cfg, key)
        if value is not None and value < least:
            null = "null or " if _optional(key) else ""
            raise ConfigError(f"config key {key!r} must be {null}>= {least}, got {_number(value)}")
    for key, (low, inclusive, high) in FLOAT_RANGES.items():
        value = getattr(cfg, key)
        if value is None:
            continue
        null = "null or " if _optional(key) else ""
        bound = (">= " if inclusive else "> ") + f"{low:g}" + (f" and <= {high:g}" if high is not None else "")
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be {null}a finite number {bound}, got {value:g}")
        if value < low or (value == low and not inclusive) or (high is not None and value > high):
            raise ConfigError(f"config key {key!r} must be {null}{bound}, got {value:g}")
    for key in ("lr", "min_lr", "warmup_lr"):
        if getattr(cfg, key) > MAX_LR:
            raise ConfigError(f"config key {key!r} must be <= {MAX_LR:g} (a learning rate, e.g. 1e-3), got "
                              f"{getattr(cfg, key):g}")
    if cfg.seed > MAX_SEED:
        raise ConfigError(f"config key 'seed' must be <= {MAX_SEED}, got {_number(cfg.seed)}")
    if not cfg.hidden_channels:
        raise ConfigError("config key 'hidden_channels' must list at least one layer width, got []")
    for i, c in enumerate(cfg.hidden_channels):
        if c < 16 or c % 16:
            raise ConfigError(f"config key 'hidden_channels[{i}]' must be a positive multiple of 16 (GroupNorm "
                              f"with 16 groups), got {_number(c)}")
    if cfg.kernel_size % 2 == 0:
        raise ConfigError(f"config key 'kernel_size' must be odd (same padding), got {cfg.kernel_size}")
    if cfg.frame_shape is not None:
        if len(cfg.frame_shape) != 3 or min(cfg.frame_shape) < 1:
            raise ConfigError(f"config key 'frame_shape' must be [C, H, W] of sizes >= 1, got "
                              f"{short(cfg.frame_shape)}")
        _, h, w = cfg.frame_shape
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ConfigError(
                f"patch_size {cfg.patch_size} must divide the frame size {h}x{w} (frame_shape {cfg.frame_shape})"
            )
        # the convolutions run on the patched frames (H/p x W/p): a kernel wider than the frame itself sees mostly
        # zero padding, and its k*k weights are how a typo (kernel_size: 99999) becomes a memory bomb
        if cfg.kernel_size > max(h, w):
            raise ConfigError(f"config key 'kernel_size' must be <= {max(h, w)}, the larger side of the "
                              f"{h}x{w} frames, got {_number(cfg.kernel_size)}")
    if cfg.data_root is not None:
        check_path(cfg.data_root, "config key 'data_root'")
    check_memory(cfg, training=False)
    if cfg.sampling == "reverse" and cfg.r_sampling_step_2 <= cfg.r_sampling_step_1:
        raise ConfigError(f"r_sampling_step_2 must be larger than r_sampling_step_1, got {cfg.r_sampling_step_2} "
                          f"<= {cfg.r_sampling_step_1}")
    if not DEVICE_PATTERN.fullmatch(cfg.device):
        raise ConfigError(f"config key 'device' must be auto, cpu, cuda or cuda:N, got {short(cfg.device)}")
    if cfg.amp == "fp16" and cfg.device == "cpu":
        raise ConfigError("config key 'amp' is fp16, which needs a CUDA device (its gradient scaler exists only "
                          "there), but device is 'cpu'; use amp: bf16 or null on the CPU")
    if cfg.amp is not None and cfg.dtype == "float64":
        raise ConfigError(f"config key 'amp' is {cfg.amp}, which computes in half precision, but dtype is float64; "
                          "use amp: null with float64, or dtype: float32 with amp")
    if cfg.metrics is not None:
        _check_metric_names(cfg.metrics)
    inner = cfg.neuron_options.get("gradient_detach", cfg.gradient_detach)
    if inner != cfg.gradient_detach:  # two keys for one setting: say which one counts instead of picking one
        raise ConfigError(f"gradient_detach is set twice: {short(inner)} in neuron_options and "
                          f"{short(cfg.gradient_detach)} at the top level; set only the top-level key")


def _check_metric_names(names: list[str]) -> None:
    """The config key ``metrics`` names rows of the metric table (imported here, not at the top: the table needs
    torch, and this module does not)."""
    from stcsnn.metrics import METRICS

    if not names:
        raise ConfigError(f"config key 'metrics' must list at least one metric (or be null for the reported set); "
                          f"choose among: {', '.join(METRICS)}")
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"config key 'metrics' names an unknown metric {short(name)}; expected names of "
                              f"the metric table: {', '.join(METRICS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'metrics' lists a metric twice: {short(names)}")


#: Longest path and path component the OS takes (Linux: PATH_MAX 4096 bytes, NAME_MAX 255), for when
#: ``os.pathconf`` cannot tell.
PATH_MAX, NAME_MAX = 4096, 255


def check_path(path: str | os.PathLike, what: str) -> None:
    """Refuse a path the OS would refuse as too long (ENAMETOOLONG), before anything opens it."""
    raw = os.fsencode(path)
    try:
        path_max, name_max = os.pathconf("/", "PC_PATH_MAX"), os.pathconf("/", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        path_max, name_max = PATH_MAX, NAME_MAX
    if len(raw) >= path_max:
        raise ConfigError(f"{what} is a path of {len(raw):,} bytes ({quoted(os.fsdecode(raw), 40)}); expected "
                          f"fewer than {path_max:,}")
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > name_max:
        raise ConfigError(f"{what} has a path component of {len(longest):,} bytes "
                          f"({quoted(os.fsdecode(longest), 40)}); expected at most {name_max:,}")


def memory_estimate(cfg: Config, training: bool = True, batch: int | None = None, params: int | None = None
                    ) -> tuple[int, int]:
    """``(parameters, bytes)``: the parameters of ``cfg``'s model and a lower bound on the memory its use needs,
    so that a config it refuses cannot run.

    Parameters: ``params`` when the caller counted them (:func:`stcsnn.models.meta_parameters`, which builds the
    model on PyTorch's ``meta`` device: the models layer sits above this one), else a lower bound, each layer's
    synaptic convolution (k x k x in x out, which every neuron has) and the readout. Bytes, ``training``: one
    training step of ``batch`` (default ``cfg.batch_size``) sequences -- the weights, their gradients and Adam's two
    moments (4 copies); one map per layer and time step kept for the backward (``checkpoint_steps`` K > 0 keeps K
    steps); the batch's frames (inputs and targets, predictions). Not ``training``: the weights alone plus the
    frames of ``batch`` sequences (default 0), what loading the model to evaluate or predict needs -- a checkpoint
    trained with a large batch on a large machine stays usable for inference on a small one. An unknown frame shape
    counts as one channel of one patch."""
    c, h, w = cfg.frame_shape if cfg.frame_shape is not None else (1, cfg.patch_size, cfg.patch_size)
    p, k = cfg.patch_size, cfg.kernel_size
    widths = [c * p * p, *cfg.hidden_channels]
    bound = sum(k * k * a * b for a, b in zip(widths, widths[1:])) + widths[-1] * c * p * p
    if params is not None:
        bound = max(bound, params)
    params = bound
    weight_size = 8 if cfg.dtype == "float64" else 4
    steps = cfg.input_frames + cfg.output_frames
    frames_per_sequence = 2 * steps * c * h * w * weight_size
    if not training:
        return params, params * weight_size + (batch or 0) * frames_per_sequence
    batch = cfg.batch_size if batch is None else batch
    size = 2 if cfg.amp else weight_size
    kept = min(steps, cfg.checkpoint_steps) if cfg.checkpoint_steps else steps
    activations = batch * kept * sum(cfg.hidden_channels) * (h // p) * (w // p) * size
    return params, 4 * params * weight_size + activations + batch * frames_per_sequence


def _gib(n: int) -> str:
    # a hostile config's estimate may pass any float's range: name its power of two instead
    return f"{n / 2**30:,.1f} GiB" if n < 2**80 else f"more than 2^{n.bit_length() - 31} GiB"


def check_memory(cfg: Config, training: bool = True, batch: int | None = None, params: int | None = None) -> None:
    """Refuse ``cfg`` when its use cannot fit this machine's available memory (:func:`memory_estimate`: a training
    step, or with ``training=False`` the model plus ``batch`` sequences' frames), before anything is allocated.
    Every config is checked as a model when it is made (:func:`validate`), with the lower bound of its parameters
    (which also keeps absurd sizes such as hidden_channels: [10**400] away from the model builder); ``stcsnn
    train`` checks the training step, ``eval`` its batches; ``params``: the exact parameter count where the caller
    has it (never below the bound)."""
    limit = available_memory()
    if limit is None:
        return
    params, need = memory_estimate(cfg, training, batch, params)
    if need > limit:
        use = "for one training step" if training else "for the model and its frames"
        raise ConfigError(
            f"this config needs at least {_gib(need)} of memory ({_number(params)} parameters; "
            f"input_frames {_number(cfg.input_frames)}, output_frames {_number(cfg.output_frames)}, batch_size "
            f"{_number(cfg.batch_size if batch is None else batch)}, hidden_channels "
            f"{short(cfg.hidden_channels, 40)}, kernel_size {_number(cfg.kernel_size)}), more than the "
            f"{_gib(limit)} available on this machine ({use}); use a smaller model, batch or number of frames")


#: The one config per dataset with the reference hyper-parameters (``configs/<dataset>/reference.yaml``, written by
#: scripts/make_configs.py); another neuron is the same file with ``--set neuron=NAME``.
REFERENCE_CONFIG = "reference.yaml"


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML config file, read with :func:`load_yaml`'s checks (at most MAX_YAML_CHARS)."""
    path = Path(path)
    what = f"config file {short(str(path), 200)}"
    if not path.is_file():
        reference = path.parent / REFERENCE_CONFIG
        if not path.exists() and path.suffix == ".yaml" and reference.is_file():
            raise ConfigError(f"{what} not found: the per-neuron configs were replaced by one per dataset; use "
                              f"--config {reference} --set neuron={_cut(path.stem)}")
        raise ConfigError(f"{what} not found (expected a YAML file, e.g. configs/quickstart.yaml)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_CHARS + 1)  # never more: a huge file is refused without being read
    except OSError as exc:
        raise ConfigError(f"{what} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_CHARS:
        raise ConfigError(f"{what} is larger than {MAX_YAML_CHARS:,} bytes; expected a config (settings, not "
                          "data)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} is not valid YAML: not UTF-8 text (byte {exc.start})") from None
    raw = load_yaml(text, what)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} must hold a mapping of keys, found {type(raw).__name__}")
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """``load_config("configs/mmnist/reference.yaml", overrides={"epochs": 1})`` -> :class:`Config`.

    ``path=None`` starts from the defaults. ``overrides`` keys may be dotted; string values are parsed as YAML.
    """
    raw = read_yaml(path) if path is not None else {}
    try:
        return make_config(raw, overrides)
    except SetError:
        raise  # the --set item is to blame, not the file
    except ConfigError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{exc}{where}") from None


def parse_assignments(items: typing.Sequence[str] | None, flag: str = "--set",
                      example: str = "epochs=2") -> dict[str, str]:
    """The command line's one KEY=VALUE grammar (``--set``, ``stcsnn data info -O``): split at the first ``=``,
    the key stripped of spaces (dotted for nested mappings), the value kept as text and parsed later as YAML by
    :func:`parse_value`. ``["a=1", "b.c=[1,2]"]`` -> ``{"a": "1", "b.c": "[1,2]"}``; the last of a repeated key
    wins."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {short(item)}: expected KEY=VALUE (key=value, the value in YAML), e.g. "
                              f"{flag} {example}")
        out[key] = value
    return out


#: Extra ``--set`` items for every command, from the environment (``;``-separated, e.g.
#: ``STCSNN_SET="epochs=1;steps_per_epoch=2"``), like pytest's PYTEST_ADDOPTS: a whole session of commands (a CI
#: job, a smoke test of the README) shrunk without editing them. The command line's ``--set`` wins; a command that
#: applies them says so on stderr.
ENV_SET = "STCSNN_SET"


def parse_overrides(items: typing.Sequence[str] | None, environ: Mapping[str, str] | None = None
                    ) -> dict[str, str]:
    """``--set`` items -> ``{dotted key: YAML text}`` (see :func:`parse_assignments`), after the items of
    ``$STCSNN_SET`` (:data:`ENV_SET`; ``environ`` defaults to ``os.environ``)."""
    text = (os.environ if environ is None else environ).get(ENV_SET, "")
    extra = [item for item in text.split(";") if item.strip()]
    out = parse_assignments(extra, f"${ENV_SET}") if extra else {}
    if out:
        print(f"note: ${ENV_SET} adds --set {'; '.join(f'{k}={v}' for k, v in out.items())}"[:500],
              file=sys.stderr)
    out.update(parse_assignments(items, "--set"))
    return out


def _plain(value: Any) -> str:
    return short(value) if not isinstance(value, str) else value if len(value) <= 60 else value[:57] + "..."


def checkpoint_config(saved: Config, overrides: Mapping[str, Any] | None,
                      instead: str = "evaluate another checkpoint instead") -> Config:
    """A checkpoint's config ``saved`` with ``--set`` ``overrides`` (data keys, batch sizes, ...) applied.

    An override that changes a key of :data:`MODEL_KEYS` is refused: the weights were trained for the saved value,
    so a report or prediction labelled with the new one would be false. ``instead`` ends the message."""
    cfg = make_config(saved.to_dict(), overrides)
    for dotted, text in (overrides or {}).items():
        key = str(dotted).split(".")[0]
        if key in MODEL_KEYS and getattr(cfg, key) != getattr(saved, key):
            raise ConfigError(f"the checkpoint's model has {key}={_plain(getattr(saved, key))}; --set "
                              f"{_plain(str(dotted))}={_plain(text)} would mislabel it; {instead}")
    return cfg


def dump_config(cfg: Config, path: str | os.PathLike) -> None:
    from stcsnn.io import atomic_write_text

    atomic_write_text(path, dump_yaml(cfg.to_dict()))
