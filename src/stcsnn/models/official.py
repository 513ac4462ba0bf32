"""Import checkpoints of the STC paper's reference implementation (OpenSTL fork ``wangtianyi1874/stclif``).

The reference saves the ``state_dict`` of its ``<Neuron>_Model`` (``openstl/models/convlif_model.py``), a
stack of cells from ``openstl/modules/convlif_modules.py`` run like PredRNN over p x p patches (PredRNN's
``reshape_patch``: channel ``(py*p + px)*C + c``, the layout of :mod:`stcsnn.models.patch`: no permutation).
Its keys, per layer ``l`` (C = that layer's hidden channels)::

    cell_list.{l}.conv_x.0.weight            (C, C_in, k, k)   synapse convolution     -> synapse.conv.weight
    cell_list.{l}.conv_x.1.{weight,bias}     (C,)              synapse GroupNorm(16)   -> synapse.norm.*
    cell_list.{l}.conv_h.{0.weight,1.*}      STC temporal pathway A (grouped conv, GN(16)) \\ fused into
    cell_list.{l}.conv_v.{0.weight,1.*}      STC spatial pathway B                         / autapse.*
    cell_list.{l}.t_m                        (1,)  PLIF / STC-PLIF: w (raw); TC-LIF: gamma (raw)
    cell_list.{l}.{s_u,s_p,d_u,d_p}          (1,)  TC-LIF (s_u, s_p), LM-H / STC-LM-H (all four), raw
    cell_list.{l}.glif.{alpha,beta,gamma,tau,Vth,leak,reVth}   (C,)   GLIF, raw (pre-sigmoid)
    cell_list.{l}.glif.conduct               (1, C)  GLIF conductance, raw; row 0 is used
    conv_last.weight                         (P, C_L, 1, 1)  readout                   -> readout.weight

Every neuron class of the reference creates all of its scalars even where its forward ignores them
(TC-LIF: ``d_u``, ``d_p``; LM-H and STC-LM-H: ``t_m``); those keys must be present (they identify the model)
and are dropped. Where stcsnn offers a choice, the import selects the reference's behaviour and records it:

* ``plif``: input gain ``1 - w`` on the *raw* parameter (``neuron_options.input_gain: raw``);
* ``stc_plif``: the reference uses ``1 - sigmoid(w)`` here (``input_gain: sigmoid``);
* ``glif``: gates alpha, beta, gamma frozen (``train_gates: false``; the reference detaches them).

The reference has no IF, STC-GLIF or STC-TC-LIF model, so those neurons cannot be imported. The keys do not
tell TC-LIF from LM-H (both cells hold ``t_m, s_u, s_p, d_u, d_p``): the config's ``neuron`` decides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from stcsnn.errors import CheckpointError, ConfigError
from stcsnn.io import safe_load
from stcsnn.models.checkpoint import FORMAT, check_tensors
from stcsnn.neurons.registry import get_spec
from stcsnn.neurons.stc import STC, fuse_pathways

#: Where the format comes from (recorded in imported checkpoints).
REFERENCE = "wangtianyi1874/stclif (OpenSTL fork), openstl/models/convlif_model.py"

#: stcsnn neuron -> the reference's model class.
REFERENCE_MODELS = {
    "lif": "LIF_Model", "plif": "PLIF_Model", "glif": "GLIF_Model", "tclif": "TCLIF_Model",
    "lmh": "LMH_Model", "stc_lif": "STCLIF_Model", "stc_plif": "STCPLIF_Model", "stc_lmh": "STCLMH_Model",
}

#: neuron -> {reference scalar key: stcsnn parameter, or None where the reference ignores it}
_SCALARS: dict[str, dict[str, str | None]] = {
    "lif": {}, "glif": {}, "stc_lif": {},
    "plif": {"t_m": "w"}, "stc_plif": {"t_m": "w"},
    "tclif": {"t_m": "gamma", "s_u": "s_u", "s_p": "s_p", "d_u": None, "d_p": None},
    "lmh": {"t_m": None, "s_u": "s_u", "s_p": "s_p", "d_u": "d_u", "d_p": "d_p"},
    "stc_lmh": {"t_m": None, "s_u": "s_u", "s_p": "s_p", "d_u": "d_u", "d_p": "d_p"},
}

#: GLIF: reference name -> stcsnn name (all raw, coefficient = sigmoid(raw))
_GLIF = {"alpha": "alpha", "beta": "beta", "gamma": "gamma", "tau": "tau", "Vth": "v_th", "leak": "leak",
         "reVth": "v_reset", "conduct": "conduct"}

#: neuron -> neuron_options the import sets (the reference's behaviour), with the reason recorded.
BEHAVIOURS: dict[str, dict[str, tuple[Any, str]]] = {
    "plif": {"input_gain": ("raw", "the reference's PLIF scales the input by 1 - w (raw w, no sigmoid)")},
    "stc_plif": {"input_gain": ("sigmoid", "the reference's STC-PLIF scales the input by 1 - sigmoid(w)")},
    "glif": {"train_gates": (False, "the reference detaches the GLIF gates alpha, beta, gamma")},
}

_CELL_KEY = re.compile(r"^cell_list\.(\d+)\.(.+)$")


# ---------------------------------------------------------------------------------------------- reading
def read_official(path: str | os.PathLike) -> dict[str, Tensor]:
    """The reference ``state_dict`` at ``path``, loaded with ``weights_only=True`` (never runs code)."""
    obj = safe_load(path, "reference checkpoint", "truncated, or not a state_dict saved by the reference?")
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: Any, where: str = "the input") -> dict[str, Tensor]:
    """A ``state_dict`` (or ``{"state_dict": ...}``), ``module.`` prefixes of DDP saves stripped."""
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        raise CheckpointError(f"{where} is already an stcsnn checkpoint: use it with `stcsnn eval`/`predict`")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        found = "an empty mapping" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{where} holds {found}, expected the state_dict of a reference <Neuron>_Model")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        name = str(key)
        while name.startswith("module."):
            name = name[len("module."):]
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{where}: entry {key!r} is a {type(value).__name__}, expected a tensor "
                                  "(not a state_dict of a reference model?)")
        if name in out:
            raise CheckpointError(f"{where}: key {name!r} appears twice (with and without 'module.')")
        out[name] = value
    # before any is converted: a sparse or meta tensor has no values to convert, and NaN weights would be
    # imported into a model that predicts nothing
    check_tensors(out, where)
    return out


# ---------------------------------------------------------------------------------------------- config
def check_importable(neuron: str) -> None:
    if neuron not in REFERENCE_MODELS:
        raise ConfigError(
            f"the reference implementation has no model for neuron {neuron!r}; importable neurons: "
            f"{', '.join(REFERENCE_MODELS)}"
        )


def reference_config(cfg):
    """``cfg`` with the neuron options that reproduce the reference (see :data:`BEHAVIOURS`)."""
    from stcsnn.config import make_config

    check_importable(cfg.neuron)
    raw = cfg.to_dict()
    options = dict(raw["neuron_options"])
    for name, (value, _) in BEHAVIOURS.get(cfg.neuron, {}).items():
        options[name] = value
    raw["neuron_options"] = options
    return make_config(raw)


def behaviours(cfg) -> dict[str, Any]:
    """The reference behaviours an import of ``cfg.neuron`` selects: ``{"neuron_options.X": value, ...}``."""
    return {f"neuron_options.{k}": v for k, (v, _) in BEHAVIOURS.get(cfg.neuron, {}).items()}


# ---------------------------------------------------------------------------------------------- mapping
def expected_keys(model) -> dict[str, tuple[tuple[int, ...], str | None]]:
    """Reference key -> (shape, stcsnn key or None for a key the reference ignores), for ``model``'s shape."""
    neuron = model.neuron
    out: dict[str, tuple[tuple[int, ...], str | None]] = {}
    for l, cell in enumerate(model.cells):
        c, cin, k = cell.hidden_channels, cell.in_channels, cell.kernel_size
        stc = isinstance(cell, STC)
        ref = f"cell_list.{l}."
        own = f"cells.{l}.base." if stc else f"cells.{l}."  # STC(base): the base neuron's parameters
        out[ref + "conv_x.0.weight"] = ((c, cin, k, k), own + "synapse.conv.weight")
        out[ref + "conv_x.1.weight"] = ((c,), own + "synapse.norm.weight")
        out[ref + "conv_x.1.bias"] = ((c,), own + "synapse.norm.bias")
        if stc:
            groups = cell.autapse.conv.groups
            for path in ("conv_h", "conv_v"):
                out[ref + f"{path}.0.weight"] = ((c, c // groups, k, k), f"cells.{l}.autapse")
                out[ref + f"{path}.1.weight"] = ((c,), f"cells.{l}.autapse")
                out[ref + f"{path}.1.bias"] = ((c,), f"cells.{l}.autapse")
        for name, target in _SCALARS[neuron].items():
            out[ref + name] = ((1,), None if target is None else own + target)
        if neuron == "glif":
            for name, target in _GLIF.items():
                shape = (1, c) if name == "conduct" else (c,)
                out[ref + f"glif.{name}"] = (shape, own + target)
    out["conv_last.weight"] = (tuple(model.readout.weight.shape), "readout.weight")
    return out


def describe_reference(state: Mapping[str, Tensor]) -> str:
    """A short guess of what a reference state_dict holds (layers, widths, neuron family), for error hints."""
    layers: dict[int, set[str]] = {}
    for key in state:
        m = _CELL_KEY.match(key)
        if m:
            layers.setdefault(int(m.group(1)), set()).add(m.group(2))
    if not layers:
        return "the file has no cell_list.* keys (not a reference <Neuron>_Model?)"
    widths = []
    for l in sorted(layers):
        w = state.get(f"cell_list.{l}.conv_x.0.weight")
        widths.append(int(w.shape[0]) if w is not None and w.dim() == 4 else "?")
    first = layers[min(layers)]
    scalars = {s for s in ("t_m", "s_u", "s_p", "d_u", "d_p") if s in first}
    candidates = [
        n for n in REFERENCE_MODELS
        if get_spec(n).is_stc == ("conv_h.0.weight" in first)
        and (n == "glif") == any(s.startswith("glif.") for s in first)
        and set(_SCALARS[n]) == scalars
    ]
    w0 = state.get("cell_list.0.conv_x.0.weight")
    extra = ""
    if w0 is not None and w0.dim() == 4:
        extra = f", kernel {w0.shape[-1]}, {w0.shape[1]} input (patch) channels"
    family = " or ".join(repr(n) for n in candidates) if candidates else "an unknown neuron"
    return f"the file looks like {family} with {len(layers)} layers, hidden {widths}{extra}"


def _listing(keys: list[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def convert_state_dict(state: Mapping[str, Tensor], model) -> tuple[dict[str, Tensor], list[str]]:
    """Reference keys -> ``model``'s state_dict; returns it and the ignored reference keys.

    Raises :class:`CheckpointError` listing every unknown, missing and mis-shaped key.
    """
    expected = expected_keys(model)
    unknown = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    misshaped = [
        f"{k} {tuple(state[k].shape)} (expected {shape})"
        for k, (shape, _) in expected.items() if k in state and tuple(state[k].shape) != shape
    ]
    not_float = [k for k in expected if k in state and not state[k].is_floating_point()]
    problems = []
    if unknown:
        problems.append(f"unknown keys: {_listing(unknown)}")
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if misshaped:
        problems.append(f"mis-shaped keys: {_listing(misshaped, 6)}")
    if not_float:
        problems.append(f"non-floating-point keys: {_listing(not_float)}")
    if problems:
        own = (f"config: {model.neuron!r} ({REFERENCE_MODELS[model.neuron]}), {len(model.cells)} layers, "
               f"hidden {model.hidden_channels}, kernel {model.cells[0].kernel_size}, "
               f"{model.readout.weight.shape[0]} patch channels")
        raise CheckpointError(f"reference checkpoint does not match the config: {'; '.join(problems)} "
                              f"({own}; {describe_reference(state)})")
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    ignored = []
    for key, (_, own) in expected.items():
        if own is None:
            ignored.append(key)
        elif not own.endswith("autapse"):
            value = state[key]
            out[own] = value.reshape(target[own].shape).to(target[own].dtype)  # (1,) -> (), (1, C) -> (C,)
    for l, cell in enumerate(model.cells):
        if not hasattr(cell, "autapse"):
            continue
        ref, own = f"cell_list.{l}.", f"cells.{l}.autapse."
        weight, norm_w, norm_b = fuse_pathways(
            state[ref + "conv_h.0.weight"], state[ref + "conv_v.0.weight"],
            (state[ref + "conv_h.1.weight"], state[ref + "conv_h.1.bias"]),
            (state[ref + "conv_v.1.weight"], state[ref + "conv_v.1.bias"]),
        )
        for name, value in (("conv.weight", weight), ("norm.weight", norm_w), ("norm.bias", norm_b)):
            out[own + name] = value.to(target[own + name].dtype)
    if set(out) != set(target):  # a neuron grew a parameter the mapping does not know: a bug, not bad input
        raise RuntimeError(f"import mapping incomplete for {model.neuron!r}: "
                           f"{sorted(set(target) ^ set(out))}")
    return out, ignored


# ---------------------------------------------------------------------------------------------- API
def import_official(source: str | os.PathLike | Mapping[str, Any], cfg) -> tuple[Any, dict[str, Any]]:
    """``model, info = import_official("best.pth", cfg)``: a reference checkpoint as a SpikingPredictor.

    ``source`` is a path (loaded with ``weights_only=True``) or an in-memory ``state_dict`` (or a dict holding
    one under ``state_dict``; ``module.`` prefixes are stripped). ``cfg`` gives the architecture (neuron,
    hidden_channels, kernel_size, patch_size, frame shape); the reference behaviours are selected on top of it
    (:func:`reference_config` gives the config to store with the model). ``info`` is plain data describing the
    import (source, key counts, behaviours chosen, ignored keys), stored as ``imported_from`` by the CLI.
    """
    from stcsnn.models import build_model

    ref_cfg = reference_config(cfg)
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        state = read_official(source)
    else:
        where = None
        state = unwrap_state_dict(source)
    model = build_model(ref_cfg)
    converted, ignored = convert_state_dict(state, model)
    model.load_state_dict(converted, strict=True)
    info = {
        "source": where,
        "reference": REFERENCE,
        "reference_model": REFERENCE_MODELS[ref_cfg.neuron],
        "source_keys": len(state),
        "ignored_keys": ignored,
        "neuron": ref_cfg.neuron,
        "behaviours": behaviours(ref_cfg),
    }
    return model.eval(), info
