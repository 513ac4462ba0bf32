"""The checkpoint schema: what an stcsnn ``.pt`` file holds, built and checked here and nowhere else.

Two kinds share one format (``format: stcsnn-checkpoint``, ``version``):

* the **model checkpoint** (:data:`HEADER_KEYS` + :data:`MODEL_KEYS`): the weights and the config, what
  ``import-official`` writes and every ``--checkpoint`` option reads;
* the **training checkpoint** (that + :data:`TRAINING_KEYS`, optionally :data:`OPTIONAL_TRAINING_KEYS`): also the
  optimizer, the position in the run, the history and the random states, what ``train`` writes and
  ``train --resume`` continues.

Every checkpoint written by :func:`model_checkpoint` or :func:`training_checkpoint` carries ``checksums``: the
SHA-256 of each tensor (its dtype, shape and bytes), keyed by its path in the dict (``model/readout.weight``).
:func:`read_checkpoint` recomputes them, so a byte flipped on disk or in transfer is one error naming the
tensor instead of a model that silently predicts something else; files written before checksums existed load
with a note. It also refuses weights that are not finite (NaN or inf): such a model predicts nothing useful and
NaN slips through thresholds (``NaN > x`` is False), so it is refused where it is read, naming the tensor.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from stcsnn.errors import CheckpointError
from stcsnn.io import safe_load

FORMAT = "stcsnn-checkpoint"
#: version 1 is unchanged by checksums: the ``checksums`` entry is optional, and code that predates it ignores it
VERSION = 1
#: what every stcsnn file of this kind starts with (the first checkpoints recorded no version: 1)
HEADER_KEYS = ("format", "version")
#: the entries of a model checkpoint beside the header: the config and the weights
MODEL_KEYS = ("config", "model")
#: the entries a checkpoint needs to be resumed, beside :data:`MODEL_KEYS`
TRAINING_KEYS = ("optimizer", "epoch", "batch", "step", "best_val_mse", "history", "rng")
#: entries a training checkpoint may hold (older ones lack them)
OPTIONAL_TRAINING_KEYS = ("partial", "scaler")
CHECKSUMS = "checksums"
#: the optional entry naming the plugins (modules outside stcsnn, :func:`stcsnn.neurons.registry.plugins_of`)
#: that registered the checkpoint's neuron: ``[{"module": "my_neuron", "file": "my_neuron.py"}]``; loading the
#: checkpoint where the neuron is unknown names the ``--plugin`` to pass. Also written to an export's config.json.
PLUGINS = "plugins"
HINT = "truncated or not a checkpoint saved by stcsnn?"


# ---------------------------------------------------------------------------------------------- tensors
def _tensors(obj: Any) -> Iterator[tuple[str, Tensor]]:
    """``(path, tensor)`` for every tensor in nested dicts, lists and tuples (``model/cells.0.x``).

    Each container is visited once: a hostile file may share one list a billion times over (or nest it in
    itself), which a plain recursive walk would follow for ever; the walk is iterative, so depth costs no stack."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, Tensor):
            yield path, value
            continue
        if isinstance(value, Mapping):
            items = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(value)]
        else:
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        stack.extend((f"{path}/{k}" if path else k, v) for k, v in reversed(items))


def tensor_digest(t: Tensor) -> str:
    """SHA-256 of a dense tensor's dtype, shape and bytes (in row-major order, whatever its strides)."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    flat = t.detach().cpu().contiguous().reshape(-1)
    h.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return h.hexdigest()


def checksums(obj: Mapping[str, Any]) -> dict[str, str]:
    """``{tensor path: digest}`` of every tensor in ``obj`` (its own ``checksums`` entry aside)."""
    return {path: tensor_digest(t) for path, t in _tensors({k: v for k, v in obj.items() if k != CHECKSUMS})}


def check_tensors(state: Mapping[str, Any], label: str) -> None:
    """Refuse a state_dict whose tensors cannot be weights: sparse or meta tensors (no dense values to load) and
    NaN or inf anywhere. One :class:`CheckpointError` line naming the first such tensor."""
    for name, t in _tensors(state):
        if t.layout != torch.strided or t.is_meta:
            kind = "a meta tensor (no values)" if t.is_meta else f"a {t.layout} tensor"
            raise CheckpointError(f"{label}: tensor {name!r} is {kind}; expected dense tensors of values")
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{label}: tensor {name!r} holds {bad} non-finite values (NaN or inf) of "
                                  f"{t.numel()}; expected finite weights (the model diverged, or the file is "
                                  "damaged)")


# ---------------------------------------------------------------------------------------------- building
def sealed(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``ckpt`` with the checksums of its tensors (computed now, from what is about to be saved)."""
    out = {k: v for k, v in ckpt.items() if k != CHECKSUMS}
    out[CHECKSUMS] = checksums(out)
    return out


def plugins_entry(cfg) -> dict[str, Any]:
    """``{PLUGINS: [...]}`` for a config whose neuron a plugin registered; ``{}`` for a built-in neuron."""
    from stcsnn.neurons.registry import plugins_of

    plugins = plugins_of(cfg.neuron)
    return {PLUGINS: plugins} if plugins else {}


def model_checkpoint(model: torch.nn.Module, cfg, **extra: Any) -> dict[str, Any]:
    """A model checkpoint (weights + config, the plugins its neuron needs, and ``extra`` entries such as
    ``imported_from``)."""
    return sealed({"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "model": model.state_dict(),
                   **plugins_entry(cfg), **extra})


def training_checkpoint(cfg, model: Mapping[str, Tensor], *, optimizer: dict, epoch: int, batch: int, step: int,
                        best_val_mse: float, history: list, rng: dict, partial: dict | None = None,
                        scaler: dict | None = None) -> dict[str, Any]:
    """A training checkpoint: the model checkpoint plus everything ``train --resume`` needs."""
    return sealed({
        "format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "model": model, "optimizer": optimizer,
        "epoch": epoch, "batch": batch, "step": step, "best_val_mse": best_val_mse, "history": history,
        "partial": partial, "rng": rng, "scaler": scaler, **plugins_entry(cfg),
    })


# ---------------------------------------------------------------------------------------------- reading
def check_header(ckpt: Any, label: str) -> dict[str, Any]:
    """``ckpt`` if it is an stcsnn checkpoint of a version this code reads; else one line saying what it is."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{label!r} is not an stcsnn checkpoint (format {found!r}); "
            "for the paper's reference checkpoints use `stcsnn import-official`"
        )
    version = ckpt.get("version", 1)  # the first checkpoints recorded none
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise CheckpointError(f"{label!r} is checkpoint version {version!r}; this stcsnn reads versions "
                              f"1..{VERSION} (a newer stcsnn wrote it? upgrade stcsnn)")
    return ckpt


def verify(ckpt: dict[str, Any], label: str) -> None:
    """Compare the tensors with the checksums written with them; a checkpoint without any gets a note."""
    expected = ckpt.get(CHECKSUMS)
    if expected is None:
        print(f"note: checkpoint {label!r} carries no checksums (written by an older stcsnn); its tensors "
              "cannot be verified", file=sys.stderr)
        return
    if not isinstance(expected, dict):
        raise CheckpointError(f"checkpoint {label!r} is corrupt: its checksums entry is a "
                              f"{type(expected).__name__}, expected a mapping of tensor paths to digests")
    found = {}
    for path, t in _tensors({k: v for k, v in ckpt.items() if k != CHECKSUMS}):
        if t.layout != torch.strided or t.is_meta:
            raise CheckpointError(f"checkpoint {label!r} is corrupt, tensor {path}: a {t.layout} tensor, "
                                  "expected a dense one")
        found[path] = tensor_digest(t)
        if path not in expected or expected[path] != found[path]:
            raise CheckpointError(f"checkpoint {label!r} is corrupt, tensor {path}: its bytes do not match the "
                                  "checksum written with it (damaged on disk or in transfer?)")
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(f"checkpoint {label!r} is corrupt, tensor {missing[0]}: listed in its checksums "
                              "but absent")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict safely (never runs code from it) and check it: format and version, the checksums of
    its tensors, finite weights. One :class:`CheckpointError` line for each kind of bad file."""
    label = str(path)
    ckpt = check_header(safe_load(path, "checkpoint", HINT), label)
    verify(ckpt, label)
    if isinstance(ckpt.get("model"), Mapping):
        check_tensors(ckpt["model"], f"checkpoint {label!r}")
    return ckpt


def lacking_model_keys(ckpt: Mapping[str, Any]) -> list[str]:
    """The entries :data:`MODEL_KEYS` that ``ckpt`` lacks: empty for a checkpoint a model can be built from."""
    return [k for k in MODEL_KEYS if k not in ckpt]


def lacking_training_keys(ckpt: Mapping[str, Any]) -> list[str]:
    """The entries :data:`TRAINING_KEYS` (and ``model``) that ``ckpt`` lacks: empty for a resumable checkpoint
    (the config is not listed: a checkpoint without one is refused before, when its config is read)."""
    return [k for k in ("model", *TRAINING_KEYS) if k not in ckpt]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_training(ckpt: Mapping[str, Any], label: str) -> None:
    """Refuse a training checkpoint whose entries are not what :func:`training_checkpoint` writes (before any is
    used: a resume must not fail halfway through restoring its state)."""
    problems = []
    for key in ("epoch", "batch", "step"):
        if not _count(ckpt.get(key)):
            problems.append(f"{key} {ckpt.get(key)!r} (expected a count >= 0)")
    best = ckpt.get("best_val_mse")
    if not isinstance(best, (int, float)) or isinstance(best, bool) or math.isnan(best):
        problems.append(f"best_val_mse {best!r} (expected a number)")
    history = ckpt.get("history")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        problems.append(f"history of type {type(history).__name__} (expected a list of per-epoch dicts)")
    optimizer = ckpt.get("optimizer")
    if (not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict)
            or not isinstance(optimizer.get("param_groups"), list)):
        problems.append(f"optimizer of type {type(optimizer).__name__} (expected an optimizer state_dict with "
                        "state and param_groups)")
    rng = ckpt.get("rng")
    if not (isinstance(rng, dict) and all(isinstance(rng.get(k), Tensor) and rng[k].dtype == torch.uint8
                                          and rng[k].dim() == 1 for k in ("torch", "mask"))):
        problems.append(f"rng {type(rng).__name__} (expected the byte tensors 'torch' and 'mask' of random "
                        "generator states)")
    for key in OPTIONAL_TRAINING_KEYS:
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            problems.append(f"{key} of type {type(ckpt[key]).__name__} (expected a dict or none)")
    if problems:
        raise CheckpointError(f"checkpoint {label!r} cannot be resumed, its training state is malformed: "
                              f"{'; '.join(problems)}")
