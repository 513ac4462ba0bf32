"""Model files of stcsnn: checkpoints, exported folders, Hugging Face Hub repositories; reading them safely.

A **checkpoint** is a plain dict of tensors and Python scalars (``format: stcsnn-checkpoint``), loaded with
``torch.load(..., weights_only=True)`` through :func:`stcsnn.io.safe_load`: opening one never runs code from it.

An **exported folder** (``stcsnn export``, :mod:`stcsnn.models.export`) holds ``model.safetensors`` (the
state_dict) and ``config.json`` (the config plus ``format: stcsnn-export``): loading one reads no pickle at all,
only safetensors and JSON, so any tool can read the weights. ``hf://user/repo[@revision]`` is such a folder on
the Hugging Face Hub, fetched with ``huggingface_hub.snapshot_download`` (the ``hub`` extra).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from stcsnn.errors import CheckpointError, ConfigError
from stcsnn.models.checkpoint import (  # noqa: F401  (re-exported: the schema's names, imported from here too)
    FORMAT,
    PLUGINS,
    VERSION,
    check_tensors,
    lacking_model_keys,
    model_checkpoint,
    read_checkpoint,
)

EXPORT_FORMAT = "stcsnn-export"
EXPORT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: the safetensors metadata entry holding the JSON ``{tensor name: SHA-256}`` of the weights
EXPORT_CHECKSUMS = "stcsnn_checksums"
#: a safetensors header lists names, dtypes, shapes and offsets: a few kB for our models
MAX_SAFETENSORS_HEADER = 1 << 24
#: bytes per element of the safetensors dtypes
_SAFETENSORS_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
#: the keys of config.json that describe the file, not the model (everything else is the config)
EXPORT_META_KEYS = ("format", "version", "stcsnn_version", PLUGINS)
#: a config.json is a few kB; anything far larger is not one of ours (and is not read into memory)
MAX_CONFIG_BYTES = 1 << 20
HF_PREFIX = "hf://"
#: what a Hub snapshot needs: not step.onnx or other files a repository may hold
HUB_FILES = [CONFIG_NAME, WEIGHTS_NAME, "README.md"]


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``model, cfg = load_model(source)``: the model (eval mode) and its config.

    ``source``: a checkpoint file (``runs/x/best.pt``), a folder written by ``stcsnn export``, or
    ``hf://user/repo[@revision]`` (such a folder on the Hugging Face Hub)."""
    text = str(path)
    if text.startswith(HF_PREFIX):
        return load_folder(hub_snapshot(text), device, label=text)
    if Path(path).is_dir():
        return load_folder(path, device)
    model, cfg = model_from_checkpoint(read_checkpoint(path), text)
    return model.to(device).eval(), cfg


def model_from_checkpoint(ckpt: dict[str, Any], label: str):
    """``model, cfg`` of a checkpoint dict read by :func:`read_checkpoint` (``label``: its path, for messages)."""
    lacking = lacking_model_keys(ckpt)
    if lacking:
        raise CheckpointError(
            f"checkpoint {label!r} holds no {' and no '.join(repr(k) for k in lacking)} entry (it has "
            f"{', '.join(sorted(map(str, ckpt))[:8])}); expected a checkpoint with the model's weights and "
            "config, as `stcsnn train` and `stcsnn import-official` write them"
        )
    cfg = _make_config(ckpt["config"])
    require_neuron(cfg.neuron, ckpt.get(PLUGINS), f"checkpoint {label!r}")
    return _with_weights(cfg, ckpt["model"], label), cfg


def require_neuron(name: str, plugins: Any, what: str) -> None:
    """Refuse a model whose neuron is not registered here, naming the ``--plugin`` it was trained with when the
    file records one (``plugins``: its :data:`~stcsnn.models.checkpoint.PLUGINS` entry, from an untrusted file:
    only well-formed entries are shown, shortened; nothing is imported)."""
    from stcsnn.config import quoted
    from stcsnn.errors import StcsnnError
    from stcsnn.neurons.registry import get_spec

    try:
        get_spec(name)
    except StcsnnError:
        entries = [p for p in plugins if isinstance(p, dict) and isinstance(p.get("module"), str)
                   and p["module"] and isinstance(p.get("file", ""), str)] if isinstance(plugins, list) else []
        if not entries:
            raise
        ways = " and ".join(f"--plugin {quoted(p['module'], 80)[1:-1]}"
                            + (f" (or ./{quoted(p['file'], 80)[1:-1]})" if p.get("file") else "")
                            for p in entries[:4])
        raise CheckpointError(f"unknown neuron {quoted(name)}: this {what.split(' ')[0]} was trained with {ways}; "
                              f"pass it to this command ({what})") from None


def _make_config(raw: Any):
    from stcsnn.config import make_config

    return make_config(raw)


def _with_weights(cfg, state_dict: Any, label: str) -> torch.nn.Module:
    """``cfg``'s model holding ``state_dict``; one CheckpointError line for weights that do not fit it."""
    from stcsnn.models import build_model

    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{label!r} holds weights of type {type(state_dict).__name__}; expected a state_dict "
                              "(a mapping of names to tensors)")
    model = build_model(cfg, cfg.frame_shape or _frame_shape_from_weights(cfg, state_dict))
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # same keys, other shapes
        sizes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise CheckpointError(
            f"checkpoint {label!r} does not match its model ({cfg.neuron}, hidden {cfg.hidden_channels}): "
            f"{'; '.join(sizes[:3]) or str(exc).splitlines()[0]}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {label!r} does not match its model ({cfg.neuron}, hidden {cfg.hidden_channels}): "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model


def _frame_shape_from_weights(cfg, state_dict: dict) -> tuple[int, int, int]:
    """A frame shape for building the model of a checkpoint whose config records none (checkpoints written
    before frame shapes were recorded). The model's layers depend on the frames' channels only, not on their
    height and width, and the readout's weight (p*p*C, hidden, 1, 1) holds the channels: the shape is
    (C, p, p). The dataset's real frame size is the data layer's to know (``stcsnn.data.resolve_config_shape``);
    weights that do not fit are reported by the load that follows."""
    p = cfg.patch_size
    readout = state_dict.get("readout.weight")
    rows = readout.shape[0] if isinstance(readout, torch.Tensor) and readout.dim() == 4 else 0
    return (rows // (p * p) if rows and rows % (p * p) == 0 else 1, p, p)


def read_export_config(folder: str | os.PathLike, label: str | None = None):
    """The :class:`~stcsnn.config.Config` of an exported folder's ``config.json`` (JSON only, size-checked)."""
    folder = Path(folder)
    label = label or str(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        runs = [n for n in ("best.pt", "last.pt") if (folder / n).is_file()]
        hint = (f"; for the run folder's checkpoint use {str(folder / runs[0])!r}" if runs
                else " (or a checkpoint file, e.g. runs/NAME/best.pt)")
        raise CheckpointError(f"{label!r} is a folder without {CONFIG_NAME}; expected a folder written by "
                              f"`stcsnn export` ({CONFIG_NAME} + {WEIGHTS_NAME}){hint}")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{label!r}: {CONFIG_NAME} is {size} bytes; expected an stcsnn export config "
                                  f"(a few kB, at most {MAX_CONFIG_BYTES})")
        raw = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
        raise CheckpointError(f"{label!r}: {CONFIG_NAME} cannot be read as JSON ({reason}); expected the "
                              "config.json written by `stcsnn export`") from None
    if not isinstance(raw, dict) or raw.get("format") != EXPORT_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{label!r}: {CONFIG_NAME} has format {found!r}; expected {EXPORT_FORMAT!r} (a "
                              "folder written by `stcsnn export`)")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= EXPORT_VERSION:
        raise CheckpointError(f"{label!r}: {CONFIG_NAME} has export version {version!r}; this stcsnn reads "
                              f"versions 1..{EXPORT_VERSION} (a newer stcsnn wrote it? upgrade stcsnn)")
    try:
        cfg = _make_config({k: v for k, v in raw.items() if k not in EXPORT_META_KEYS})
    except ConfigError as exc:
        raise CheckpointError(f"{label!r}: {CONFIG_NAME} holds a config that is not valid: {exc}") from None
    require_neuron(cfg.neuron, raw.get(PLUGINS), f"export {label!r}")
    return cfg


def load_folder(folder: str | os.PathLike, device: str | torch.device = "cpu", label: str | None = None):
    """``model, cfg`` of a folder written by ``stcsnn export``: reads only ``config.json`` and
    ``model.safetensors`` (no pickle)."""
    folder = Path(folder)
    label = label or str(folder)
    cfg = read_export_config(folder, label)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{label!r} holds {CONFIG_NAME} but no {WEIGHTS_NAME}; expected both (copy the "
                              "whole folder that `stcsnn export` wrote)")
    state_dict = read_weights(weights, label)
    return _with_weights(cfg, state_dict, label).to(device).eval(), cfg


def _check_safetensors_header(path: Path, label: str) -> None:
    """Check ``path``'s header against its size before anything is read or mapped: every tensor must lie inside
    the file and fill exactly its shape (a header may declare 40 GB in a 1 kB file)."""
    def refused(why: str) -> CheckpointError:
        return CheckpointError(f"{label!r}: {WEIGHTS_NAME} cannot be read ({why}); truncated or not a safetensors "
                               "file?")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= min(size - 8, MAX_SAFETENSORS_HEADER):
                raise refused(f"it declares a header of {n} bytes in a file of {size}")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise refused(f"its header is not JSON: {str(exc)[:100]}") from None
    except OSError as exc:
        raise refused(exc.strerror or str(exc)) from None
    if not isinstance(header, dict):
        raise refused(f"its header is a {type(header).__name__}, not a JSON object")
    room = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(v) for v in entry["data_offsets"])
            numel = math.prod(int(v) for v in entry["shape"])
            width = _SAFETENSORS_SIZES[entry["dtype"]]
        except (TypeError, ValueError, KeyError) as exc:
            raise refused(f"tensor {name!r} is described incompletely: {exc!r}") from None
        if not 0 <= begin <= end <= room or end - begin != numel * width:
            raise refused(f"it declares tensor {name!r} of {numel * width} bytes at {begin}..{end}, but holds "
                          f"{room} bytes of data")


def read_weights(path: str | os.PathLike, label: str) -> dict[str, torch.Tensor]:
    """The state_dict in an export's ``model.safetensors``: header checked against the file size, tensors checked
    against the checksums the export wrote (a note where an older export wrote none), weights finite."""
    from safetensors import SafetensorError, safe_open

    from stcsnn.models.checkpoint import tensor_digest

    path = Path(path)
    _check_safetensors_header(path, label)  # its own one-line errors, before the library reads anything
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state_dict = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{label!r}: {WEIGHTS_NAME} cannot be read ({str(exc).splitlines()[0][:200]}); "
                              "truncated or not a safetensors file?") from None
    raw = metadata.get(EXPORT_CHECKSUMS)
    if raw is None:
        print(f"note: {label!r}: {WEIGHTS_NAME} carries no checksums (written by an older stcsnn); its tensors "
              "cannot be verified", file=sys.stderr)
    else:
        try:
            expected = json.loads(raw)
        except ValueError:
            expected = None
        if not isinstance(expected, dict):
            raise CheckpointError(f"{label!r}: {WEIGHTS_NAME} is corrupt: its checksums are not a JSON object")
        for name in sorted(set(state_dict) | set(expected)):
            if name not in state_dict or expected.get(name) != tensor_digest(state_dict[name]):
                raise CheckpointError(f"{label!r}: {WEIGHTS_NAME} is corrupt, tensor {name}: its bytes do not match "
                                      "the checksum written with it (damaged on disk or in transfer?)")
    check_tensors(state_dict, f"{label!r}: {WEIGHTS_NAME}")
    return state_dict


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``"hf://user/repo@rev"`` -> ``("user/repo", "rev")`` (revision None when not given)."""
    rest = source[len(HF_PREFIX):]
    repo, sep, revision = rest.partition("@")
    repo = repo.strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")) or (sep and not revision):
        raise CheckpointError(f"{source!r}: expected hf://USER/REPO or hf://USER/REPO@REVISION (a branch, tag or "
                              "commit)")
    return repo, (revision or None)


def hub_module():
    """``huggingface_hub``, or one clear line saying how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointError('the Hugging Face Hub needs the huggingface_hub package, which is not installed: '
                              'pip install "stcsnn[hub]"') from None
    return huggingface_hub


def hub_snapshot(source: str) -> Path:
    """The local folder of ``hf://user/repo[@revision]`` (downloaded, or from the cache; ``HF_HUB_OFFLINE=1``
    uses the cache only)."""
    repo, revision = parse_hub_source(source)
    hub = hub_module()
    try:
        folder = hub.snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES)
    except Exception as exc:  # the Hub's errors (HTTP, offline, validation) differ by version
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise CheckpointError(f"cannot fetch {source!r} from the Hugging Face Hub: {type(exc).__name__}: "
                              f"{text}") from None
    return Path(folder)
