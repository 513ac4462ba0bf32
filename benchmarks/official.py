"""Time the paper's reference implementation against stcsnn, interleaved in one process.

    python benchmarks/official.py --official /work/.mirror/wangtianyi1874+stclif/repo [--neurons lif,stc_lif]
        [--threads 1,2] [--repeats 10] [--warmup 2] [--config small] [--set KEY=VALUE ...] [--out DIR]

``--official`` is the reference code (the OpenSTL fork ``wangtianyi1874/stclif``): a checkout folder or its
git directory (read with ``git show REV:path``, ``--rev``, default ``HEAD``). Only its two spiking files are
used, ``openstl/models/convlif_model.py`` and ``openstl/modules/convlif_modules.py``: they are copied at run
time into a temporary package ``openstl`` whose ``__init__`` files expose nothing but those (so OpenSTL's other
heavy imports are not needed) and imported from there. Nothing of the reference is stored in this repository.
This script *runs* the reference code it is given: point it at a copy you trust. The reference cells need
``spikingjelly`` (``pip install --no-deps spikingjelly``; without ``--no-deps`` pip may replace torch).

For each neuron (``lif`` <-> ``LIF_Model``, ``stc_lif`` <-> ``STCLIF_Model``, ...) at one configuration
(default ``small``, the CPU configuration of ``stcsnn bench``: hidden 64,64,64, kernel 5, patch 4, batch 4,
10 -> 10 frames of 1x64x64; ``--set`` changes any config key) it builds the reference ``<Neuron>_Model`` (seed
0) and the stcsnn model (``stcsnn.build_model`` with the reference's behaviours, :mod:`stcsnn.models.official`)
**with the reference model's weights imported**, so both compute on identical weights. It then

* **checks** that they compute the same thing: parameter counts of both (a difference is explained by the
  reference's unused scalars), then on the same frames one training forward (scheduled-sampling mask) +
  backward and one inference of each, on copies in float64 (the verdict) and in float32: the largest
  prediction difference, both losses, the largest gradient difference and stcsnn's firing rates (see
  :func:`check_pair` for why float32 alone cannot decide);
* **times** the training step as each code defines it -- reference: patching (its ``reshape_patch``, done in
  its training loop), ``model(frames, mask)`` which returns its MSE over frames 2..T, backward, Adam step;
  stcsnn: :func:`stcsnn.train.objective.rollout_loss` (the trainer's objective: the same frames, the same MSE),
  backward, Adam step -- and inference (the reference's test path: a mask of zeros, ``return_loss=False``;
  stcsnn: the autoregressive rollout; both 10 future frames from 10, no grad). Both sides run **interleaved in
  this one process** at each ``--threads`` count: warm-up steps, then ``--repeats`` rounds of one step of each
  side (rounds alternate which side goes first); medians are reported;
* **peak memory** of two training steps, each side in a fresh subprocess (``--no-memory`` skips it): CPU --
  growth of the peak resident set over the resident set just before the first step (the quantity ``ru_maxrss``
  reports, read as ``VmHWM`` after resetting it there: Linux carries ``ru_maxrss`` across ``exec``, so a child
  of this process, which holds models, would report the parent's resident set as its own peak); CUDA --
  ``torch.cuda.max_memory_allocated`` over the memory allocated before the first step.

Both sides get the same frames (uniform random in [0, 1], seed 1) and the same scheduled-sampling mask (each
sample and future step fed the true frame with probability 0.5, as ``stcsnn bench``). Not timed on either side:
making the mask (the reference makes it with numpy in its loop, stcsnn's trainer outside the objective) and
spikingjelly's ``functional.reset_net`` (the reference's models hold no spikingjelly state to reset).

Results: a Markdown table on stdout; with ``--out DIR`` also ``official.json`` and ``official.md`` (machine: CPU
model, torch, threads, load average and the other running processes at the start and the end). Nothing here
asserts a time. Expected failures print one line ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import torch

import stcsnn
from stcsnn.config import Config, make_config, parse_assignments
from stcsnn.device import pick_device
from stcsnn.errors import CheckpointError, ConfigError, StcsnnError
from stcsnn.io import atomic_write_text
from stcsnn.models import from_patches, to_patches
from stcsnn.models.official import REFERENCE_MODELS, convert_state_dict, reference_config
from stcsnn.perf.measure import memory_mark, peak_growth
from stcsnn.train.objective import rollout_loss

#: the two reference files used, relative to the reference repository's root
MODEL_FILE = "openstl/models/convlif_model.py"
MODULES_FILE = "openstl/modules/convlif_modules.py"
#: the CPU configuration of ``stcsnn bench`` (``stcsnn.perf.bench.CONFIGS["small"]``) and the paper's; copied
#: here rather than imported so that this script keeps working while the benchmark module changes
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"hidden_channels": [64, 64, 64], "kernel_size": 5, "patch_size": 4, "batch_size": 4,
              "input_frames": 10, "output_frames": 10, "frame_shape": [1, 64, 64]},
    "paper": {"hidden_channels": [256, 256, 256], "kernel_size": 5, "patch_size": 2, "batch_size": 16,
              "input_frames": 10, "output_frames": 10, "frame_shape": [1, 64, 64]},
}
#: what the reference trains: MSE over every output frame 2..T, PredRNN's (not reverse) scheduled sampling
OBJECTIVE = {"loss": "all", "sampling": "scheduled"}
DEFAULT_NEURONS = ("lif", "stc_lif")
#: largest float64 prediction difference still called "same" (rounding; one flipped spike moves far more)
SAME_TOLERANCE = 1e-4
#: largest gradient difference, relative to the largest gradient, still called "same"
GRAD_TOLERANCE = 1e-3
SIDES = ("reference", "stcsnn")
#: how the peak memory of the training step was measured (each side in a fresh subprocess)
MEMORY_METHODS = {
    "VmHWM": "growth of the peak resident set (VmHWM, reset just before the first step) over the resident set "
             "then, each side in a fresh subprocess",
    "ru_maxrss": "growth of ru_maxrss over the resident set before the first step, each side in a fresh "
                 "subprocess (the peak could not be reset: it may include the parent's resident set)",
    "cuda": "torch.cuda.max_memory_allocated over the memory allocated before the first step, each side in a "
            "fresh subprocess",
}


# ---------------------------------------------------------------------------------------------- the reference


def _git(git_dir: Path, *args: str) -> bytes:
    try:
        proc = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True)
    except OSError as exc:
        raise ConfigError(f"reading the reference git directory {git_dir} needs git: {exc}") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(f"git {' '.join(args)} in {git_dir} failed: {msg[-1] if msg else 'no message'}")
    return proc.stdout


def read_reference_files(path: str | os.PathLike, rev: str = "HEAD") -> tuple[dict[str, bytes], dict[str, Any]]:
    """The two reference files from a checkout folder or a git directory: ``({relative path: bytes}, source
    description)``."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"--official {root}: expected the reference checkout or its git directory, found nothing "
                          "at that path")
    if (root / MODEL_FILE).is_file() or (root / MODULES_FILE).is_file():
        files = {}
        for rel in (MODEL_FILE, MODULES_FILE):
            if not (root / rel).is_file():
                raise ConfigError(f"--official {root}: expected {rel} in the reference checkout, it is missing")
            files[rel] = (root / rel).read_bytes()
        return files, {"path": str(root), "kind": "checkout", "rev": None}
    if not ((root / "HEAD").is_file() and (root / "objects").is_dir()):
        raise ConfigError(f"--official {root}: expected a reference checkout (a folder holding {MODEL_FILE}) or its "
                          "git directory, found neither")
    commit = _git(root, "rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
    files = {rel: _git(root, "show", f"{commit}:{rel}") for rel in (MODEL_FILE, MODULES_FILE)}
    return files, {"path": str(root), "kind": "git", "rev": rev, "commit": commit}


#: the temporary package's ``__init__`` files: only the spiking cells, none of OpenSTL's other modules
_PACKAGE_INIT = '"""Temporary package: the reference\'s spiking files only (written by benchmarks/official.py)."""\n'
_MODULES_INIT = _PACKAGE_INIT + "from .convlif_modules import *  # noqa: F401,F403\n"


@contextmanager
def reference_package(files: dict[str, bytes]) -> Iterator[ModuleType]:
    """Write the reference files into a temporary ``openstl`` package and import its model module; yields it.

    The reference imports ``openstl.modules`` by that absolute name, so the package must be called ``openstl``:
    any ``openstl`` modules already imported are set aside meanwhile and put back afterwards."""
    saved = {name: mod for name, mod in sys.modules.items() if name == "openstl" or name.startswith("openstl.")}
    for name in saved:
        del sys.modules[name]
    tmp = Path(tempfile.mkdtemp(prefix="stcsnn-official-"))
    try:
        for folder in ("openstl", "openstl/models", "openstl/modules"):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        (tmp / "openstl/__init__.py").write_text(_PACKAGE_INIT)
        (tmp / "openstl/models/__init__.py").write_text(_PACKAGE_INIT)
        (tmp / "openstl/modules/__init__.py").write_text(_MODULES_INIT)
        for rel, data in files.items():
            (tmp / rel).write_bytes(data)
        sys.path.insert(0, str(tmp))
        importlib.invalidate_caches()
        try:
            module = importlib.import_module("openstl.models.convlif_model")
        except ModuleNotFoundError as exc:
            hint = " (pip install --no-deps spikingjelly)" if exc.name and exc.name.startswith("spikingjelly") else ""
            raise ConfigError(f"importing the reference code failed: it needs the module {exc.name!r}, which is "
                              f"not installed{hint}") from None
        except Exception as exc:  # foreign code: whatever it raises on import is a bad --official, not our bug
            raise ConfigError(f"importing the reference code failed: {type(exc).__name__}: {exc}") from None
        yield module
    finally:
        if str(tmp) in sys.path:
            sys.path.remove(str(tmp))
        for name in [n for n in sys.modules if n == "openstl" or n.startswith("openstl.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)


def reference_configs(cfg: Config, device: torch.device) -> SimpleNamespace:
    """The ``configs`` object the reference's ``<Neuron>_Model(num_layers, num_hidden, configs)`` reads (the
    attributes OpenSTL's argument parser and config files would give it)."""
    c, h, w = cfg.frame_shape
    t = cfg.input_frames + cfg.output_frames
    return SimpleNamespace(
        in_shape=(t, c, h, w), patch_size=cfg.patch_size, filter_size=cfg.kernel_size, stride=1, layer_norm=1,
        pre_seq_length=cfg.input_frames, aft_seq_length=cfg.output_frames, total_length=t,
        reverse_scheduled_sampling=0, gradient_detach=int(cfg.gradient_detach), device=device,
    )


# ---------------------------------------------------------------------------------------------- one pair


def bench_config(settings: dict[str, Any], neuron: str, device: torch.device,
                 overrides: dict[str, str] | None = None) -> Config:
    """The stcsnn config of one neuron: the configuration, the reference's objective, ``--set`` overrides and
    the reference's behaviours (:func:`stcsnn.models.official.reference_config`)."""
    cfg = make_config({**settings, **OBJECTIVE, "neuron": neuron, "device": str(device)}, overrides)
    if cfg.frame_shape is None:
        raise ConfigError("the benchmark needs frame_shape [C, H, W] (--set frame_shape=[1,64,64]), found none")
    return reference_config(cfg)


def _numel(params: Any) -> int:
    return sum(p.numel() for p in params)


def build_pair(module: ModuleType, neuron: str, cfg: Config, device: torch.device) -> dict[str, Any]:
    """The reference model (seed 0) and the stcsnn model carrying its weights, with the parameter check."""
    name = REFERENCE_MODELS[neuron]
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError(f"the reference code has no {name} (for neuron {neuron!r}) in {MODEL_FILE}")
    torch.manual_seed(0)
    hidden = list(cfg.hidden_channels)
    try:
        ref = cls(len(hidden), hidden, reference_configs(cfg, device)).to(device)
    except Exception as exc:  # foreign code
        raise ConfigError(f"building the reference {name} failed: {type(exc).__name__}: {exc}") from None
    torch.manual_seed(0)
    model = stcsnn.build_model(cfg).to(device)
    state = {k: v.detach().cpu() for k, v in ref.state_dict().items()}
    try:
        converted, ignored = convert_state_dict(state, model)
        model.load_state_dict(converted, strict=True)
        shared, reason = True, None
    except (CheckpointError, RuntimeError) as exc:  # a reference the importer does not know: time it anyway
        ignored, shared, reason = [], False, str(exc)
    ref_params, own_params = _numel(ref.parameters()), _numel(model.parameters())
    unused = sum(state[k].numel() for k in ignored)
    if not shared:
        why = f"weights not shared (the import failed: {reason})"
    elif ref_params == own_params:
        why = "equal"
    elif ref_params - own_params == unused:
        why = (f"the reference's {unused} extra value(s) are scalars its cells create but its forward never reads: "
               f"{', '.join(ignored)}")
    else:
        why = (f"differ by {ref_params - own_params} (unexplained; unused reference keys: "
               f"{', '.join(ignored) or 'none'})")
    return {"neuron": neuron, "reference_model": name, "reference": ref, "model": model,
            "weights_shared": shared, "ref_params": ref_params, "stcsnn_params": own_params,
            "unused_reference_keys": ignored, "params_note": why}


def make_inputs(cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (B, T_in + T_out, C, H, W) and the scheduled-sampling mask (B, T_out - 1), seeded."""
    c, h, w = cfg.frame_shape
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(cfg.batch_size, cfg.input_frames + cfg.output_frames, c, h, w, generator=g)
    mask = (torch.rand(cfg.batch_size, cfg.output_frames - 1, generator=g) < 0.5).float()
    return frames.to(device), mask.to(device)


def reference_layout(frames: torch.Tensor, p: int) -> torch.Tensor:
    """(B, T, C, H, W) -> the reference's input (B, T, H/p, W/p, p*p*C): OpenSTL's ``reshape_patch`` of its
    (B, T, H, W, C) frames, whose channel layout is stcsnn's :func:`~stcsnn.models.to_patches`."""
    return to_patches(frames, p).permute(0, 1, 3, 4, 2).contiguous()


def reference_mask(mask: torch.Tensor, cfg: Config) -> torch.Tensor:
    """(B, T_out - 1) -> the reference's ``real_input_flag`` (B, T_out - 1, H/p, W/p, p*p*C), materialised as
    its ``schedule_sampling`` makes it."""
    c, h, w = cfg.frame_shape
    p = cfg.patch_size
    return mask[:, :, None, None, None].expand(*mask.shape, h // p, w // p, p * p * c).contiguous()


def step_functions(pair: dict[str, Any], cfg: Config, frames: torch.Tensor,
                   mask: torch.Tensor) -> dict[str, dict[str, Callable[[], None]]]:
    """``{side: {"train": step, "infer": prediction}}`` for the reference and stcsnn."""
    ref, model = pair["reference"], pair["model"]
    p, t_in, t_out = cfg.patch_size, cfg.input_frames, cfg.output_frames
    ref_opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ref_flag = reference_mask(mask, cfg)
    zeros = torch.zeros_like(ref_flag)

    def ref_train() -> None:
        ref_opt.zero_grad()
        _, loss = ref(reference_layout(frames, p), ref_flag)
        loss.backward()
        ref_opt.step()

    def ref_infer() -> None:
        with torch.no_grad():
            ref(reference_layout(frames, p), zeros, return_loss=False)

    def own_train() -> None:
        loss, _ = rollout_loss(model, frames, cfg, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def own_infer() -> None:
        with torch.no_grad():
            model.rollout(frames[:, :t_in], t_in, t_out)

    return {"reference": {"train": ref_train, "infer": ref_infer}, "stcsnn": {"train": own_train, "infer": own_infer}}


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient (zeros where none reached it: unused or detached parameters)."""
    return {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu()
            for k, p in module.named_parameters()}


def _cast_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: floating inputs cast to the module's weight dtype."""
    dtype = module.weight.dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def compare(pair: dict[str, Any], cfg: Config, frames: torch.Tensor, mask: torch.Tensor,
            dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """How far apart the two models are on the same frames and mask, computed in ``dtype`` on copies: the
    largest prediction difference (training forward and inference), both losses, the largest gradient
    difference (the reference's gradients mapped like its weights, relative to its largest gradient) and
    stcsnn's firing rate per layer (where nothing fires, zeros would be compared with zeros)."""
    ref = copy.deepcopy(pair["reference"]).to(dtype)
    model = copy.deepcopy(pair["model"]).to(dtype)
    if dtype != torch.float32:  # the reference's GLIF returns its spikes as `.float()`: 0/1, so casting is exact
        for conv in (m for m in ref.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.register_forward_pre_hook(_cast_input)
    frames, mask = frames.to(dtype), mask.to(dtype)
    p, t_in, t_out = cfg.patch_size, cfg.input_frames, cfg.output_frames
    flag = reference_mask(mask, cfg)
    ref_pred, ref_loss = ref(reference_layout(frames, p), flag)
    ref_loss.backward()
    own_loss, rates = rollout_loss(model, frames, cfg, mask)
    own_loss.backward()
    ref_grads, _ = convert_state_dict(_grads(ref), model)
    own_grads = _grads(model)
    grad_diff = max((ref_grads[k] - g).abs().max().item() for k, g in own_grads.items())
    grad_scale = max(ref_grads[k].abs().max().item() for k in own_grads)
    with torch.no_grad():
        ref_pred = from_patches(ref_pred.detach().permute(0, 1, 4, 2, 3), p)
        own_pred = model.rollout(frames, t_in, t_out, mask).frames
        ref_inf, _ = ref(reference_layout(frames, p), torch.zeros_like(flag), return_loss=False)
        ref_inf = from_patches(ref_inf.permute(0, 1, 4, 2, 3), p)[:, -t_out:]
        own_inf = model.rollout(frames[:, :t_in], t_in, t_out).frames[:, -t_out:]
    if ref_pred.shape != own_pred.shape:
        raise ConfigError(f"the reference {pair['reference_model']} predicts {tuple(ref_pred.shape)} frames, "
                          f"stcsnn {tuple(own_pred.shape)}: expected the same shape")
    out = {"dtype": str(dtype).removeprefix("torch."),
           "train_max_abs_diff": (ref_pred - own_pred).abs().max().item(),
           "infer_max_abs_diff": (ref_inf - own_inf).abs().max().item(),
           "ref_loss": ref_loss.item(), "stcsnn_loss": own_loss.item(),
           "grad_rel_diff": grad_diff / grad_scale if grad_scale > 0 else float(grad_diff > 0),
           "firing_rates": [r.item() for r in rates]}
    out["same"] = (max(out["train_max_abs_diff"], out["infer_max_abs_diff"]) <= SAME_TOLERANCE
                   and out["grad_rel_diff"] <= GRAD_TOLERANCE)
    return out


def check_pair(pair: dict[str, Any], cfg: Config, frames: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """:func:`compare` in float64 (the verdict: do they compute the same function?) and in float32 (what the
    timed models do). In float32 the two codes sum their convolutions in different orders; a membrane within
    rounding of the threshold then spikes on one side only and the difference travels on through time, so
    float32 predictions can differ by whole spikes' worth while computing the same function."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the reference makes its initial states with torch.zeros(...)
    try:
        high = compare(pair, cfg, frames, mask, torch.float64)
    except RuntimeError as exc:  # reference code that hard-codes float32 (GLIF's spikes are `.float()`)
        high = {"dtype": "float64", "error": " ".join(str(exc).split())[:200]}
    finally:
        torch.set_default_dtype(previous)
    low = compare(pair, cfg, frames, mask, torch.float32)
    return {"float64": high, "float32": low, "same": high.get("same", low["same"]),
            "verdict_from": "float64" if "error" not in high else "float32"}


# ---------------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], None]], warmup: int, repeats: int,
                device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function: ``warmup`` untimed calls each (interleaved), then ``repeats`` rounds
    of one timed call each, the first side of a round alternating."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: peak-memory growth of two training steps of one side (the first allocates Adam's
    state, the second is a steady one)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = pick_device(spec["device"])
    files, _ = read_reference_files(spec["official"], spec.get("rev", "HEAD"))
    cfg = bench_config(spec["settings"], spec["neuron"], device, spec.get("overrides"))
    with reference_package(files) as module:
        pair = build_pair(module, spec["neuron"], cfg, device)
        frames, mask = make_inputs(cfg, device)
        step = step_functions(pair, cfg, frames, mask)[spec["side"]]["train"]
        pair.pop("model" if spec["side"] == "reference" else "reference")  # only this side stays resident
        gc.collect()
        hwm = device.type == "cpu" and _reset_peak_rss()
        mark = _status_bytes("VmRSS") if hwm else memory_mark(device)
        step()
        step()
        _sync(device)
        peak = _status_bytes("VmHWM") - mark if hwm else peak_growth(device, mark)
        method = "VmHWM" if hwm else ("cuda" if device.type == "cuda" else "ru_maxrss")
        return {"side": spec["side"], "neuron": spec["neuron"], "peak_bytes": peak, "method": method}


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux: ``5`` into ``/proc/self/clear_refs``); False where that is
    not possible. Needed because Linux carries ``ru_maxrss`` across ``exec``: a fresh child of a parent holding
    two models would otherwise report the parent's resident set as its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_bytes("VmHWM")
    except (OSError, ValueError):
        return False
    return True


def _status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/self/status has no {field}")


def run_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`memory_child` in a fresh subprocess: ``{"peak_bytes", "method", ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-memory", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise StcsnnError(f"memory subprocess for {spec['side']} {spec['neuron']} failed (status {proc.returncode}): "
                          f"{tail[-1] if tail else 'no output'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- machine


def _running_processes() -> list[str]:
    """Names of the other processes that are running (state R) right now: what competes for the CPUs."""
    names = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, _, rest = stat.rpartition(")")
        if rest.split()[:1] == ["R"]:
            names.append(comm.partition("(")[2])
    return sorted(names)


def load_snapshot() -> dict[str, Any]:
    """Load averages and the other running processes, at one moment."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": load, "running": _running_processes()}


def machine_info(device: torch.device) -> dict[str, Any]:
    """``stcsnn bench``'s machine record (CPU model, Python, torch, platform, threads, GPU), plus the stcsnn and
    spikingjelly versions."""
    from stcsnn.perf.bench import machine_info as bench_machine_info

    info = {**bench_machine_info(str(device)), "stcsnn": stcsnn.__version__}
    info.setdefault("cpu", info["processor"])  # no /proc/cpuinfo model name: the platform's processor string
    try:  # recorded only: the version the reference cells ran with
        info["spikingjelly"] = importlib.metadata.version("spikingjelly")
    except importlib.metadata.PackageNotFoundError:
        info["spikingjelly"] = None
    return info


# ---------------------------------------------------------------------------------------------- orchestrating


def _threads(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--threads: expected thread counts >= 1 separated by commas (1 or 1,2), got {text!r}")
    return counts


def _neurons(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in REFERENCE_MODELS]
    if not names or bad:
        raise ConfigError(f"--neurons: expected names from {', '.join(REFERENCE_MODELS)} (the neurons the reference "
                          f"has), got {text!r}")
    return names


def run(args: argparse.Namespace, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """The whole benchmark; returns the JSON-able results."""
    if args.config not in CONFIGS:
        raise ConfigError(f"--config: expected one of {', '.join(CONFIGS)}, got {args.config!r}")
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError(f"expected --repeats >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    neurons, threads = _neurons(args.neurons), _threads(args.threads)
    overrides = parse_assignments(args.set)
    device = pick_device(args.device)
    files, source = read_reference_files(args.official, args.rev)
    source["sha256"] = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    cfg0 = bench_config(CONFIGS[args.config], neurons[0], device, overrides)  # fails early on a bad --set
    settings = {k: getattr(cfg0, k) for k in CONFIGS[args.config]}
    results: dict[str, Any] = {
        "machine": machine_info(device), "reference": source, "config": args.config, "settings": settings,
        "overrides": overrides, "threads": threads, "repeats": args.repeats, "warmup": args.warmup,
        "memory": None if args.no_memory else MEMORY_METHODS["cuda" if device.type == "cuda" else "VmHWM"],
        "load_start": load_snapshot(), "checks": [], "rows": [],
    }
    initial_threads = torch.get_num_threads()
    try:
        with reference_package(files) as module:
            for neuron in neurons:
                cfg = bench_config(CONFIGS[args.config], neuron, device, overrides)
                pair = build_pair(module, neuron, cfg, device)
                frames, mask = make_inputs(cfg, device)
                check = {k: v for k, v in pair.items() if k not in ("reference", "model")}
                if pair["weights_shared"]:
                    check.update(check_pair(pair, cfg, frames, mask))
                results["checks"].append(check)
                log(f"{neuron:<9} {pair['reference_model']:<14} params {pair['ref_params']:,} vs "
                    f"{pair['stcsnn_params']:,} ({pair['params_note']})")
                for kind in ("float64", "float32"):
                    c = check.get(kind)
                    if c is not None and "error" in c:
                        log(f"{neuron:<9} {kind}: not compared: {c['error']}")
                    elif c is not None:
                        log(f"{neuron:<9} {kind}: max |pred diff| train {c['train_max_abs_diff']:.2e}, inference "
                            f"{c['infer_max_abs_diff']:.2e}; grad diff {c['grad_rel_diff']:.2e} (relative); loss "
                            f"{c['ref_loss']:.6f} vs {c['stcsnn_loss']:.6f}; firing rates {_rates(c['firing_rates'])}")
                fns = step_functions(pair, cfg, frames, mask)
                for n in threads:
                    torch.set_num_threads(n)
                    train = interleaved({s: fns[s]["train"] for s in SIDES}, args.warmup, args.repeats, device)
                    infer = interleaved({s: fns[s]["infer"] for s in SIDES}, min(args.warmup, 1), args.repeats,
                                        device)
                    row: dict[str, Any] = {"neuron": neuron, "reference_model": pair["reference_model"],
                                           "threads": n}
                    for side in SIDES:
                        row[f"{side}_train_s"] = statistics.median(train[side])
                        row[f"{side}_infer_s"] = statistics.median(infer[side])
                        row[f"{side}_train_times_s"] = train[side]
                        row[f"{side}_infer_times_s"] = infer[side]
                    row["train_speedup"] = row["reference_train_s"] / row["stcsnn_train_s"]
                    row["infer_speedup"] = row["reference_infer_s"] / row["stcsnn_infer_s"]
                    results["rows"].append(row)
                    log(f"{neuron:<9} threads {n}: train {row['reference_train_s'] * 1e3:.1f} vs "
                        f"{row['stcsnn_train_s'] * 1e3:.1f} ms ({row['train_speedup']:.2f}x), infer "
                        f"{row['reference_infer_s'] * 1e3:.1f} vs {row['stcsnn_infer_s'] * 1e3:.1f} ms "
                        f"({row['infer_speedup']:.2f}x)")
                del pair, fns
                if not args.no_memory:  # one fresh process per side, at the first thread count
                    for side in SIDES:
                        spec = {"official": args.official, "rev": args.rev, "neuron": neuron, "side": side,
                                "settings": CONFIGS[args.config], "overrides": overrides, "device": str(device),
                                "threads": threads[0]}
                        got = run_memory(spec)
                        check[f"{side}_peak_bytes"], check["memory_method"] = got["peak_bytes"], got["method"]
                    results["memory"] = MEMORY_METHODS[check["memory_method"]]
                    log(f"{neuron:<9} peak memory (threads {threads[0]}): reference "
                        f"{check['reference_peak_bytes'] / 2**20:.1f} MiB, stcsnn "
                        f"{check['stcsnn_peak_bytes'] / 2**20:.1f} MiB")
    finally:
        torch.set_num_threads(initial_threads)
    results["load_end"] = load_snapshot()
    return results


# ---------------------------------------------------------------------------------------------- reporting


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _rates(rates: list[float]) -> str:
    return " ".join(f"{r:.3f}" for r in rates)


def _load(snap: dict[str, Any]) -> str:
    load = "unknown" if snap["loadavg"] is None else " ".join(f"{x:.2f}" for x in snap["loadavg"])
    running = ", ".join(snap["running"]) or "none"
    return f"load average {load}; other running processes: {running}"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: machine and source, the check table, the timing table, what was measured."""
    m, s, src = results["machine"], results["settings"], results["reference"]
    where = m.get("gpu") or m.get("cpu")
    rev = f" at {src['commit'][:12]}" if src.get("commit") else ""
    lines = [
        f"Machine: {where} ({m['device']}, {m['cpu_count']} CPUs), Python {m['python']}, torch {m['torch']}, "
        f"stcsnn {m['stcsnn']}, spikingjelly {m.get('spikingjelly') or '-'}; threads {results['threads']}.",
        f"Reference: {src['path']}{rev} ({src['kind']}).",
        f"Start {results['load_start']['time']}: {_load(results['load_start'])}.",
        f"End {results['load_end']['time']}: {_load(results['load_end'])}.", "",
        f"### `{results['config']}`: hidden {s['hidden_channels']}, kernel {s['kernel_size']}, patch "
        f"{s['patch_size']}, batch {s['batch_size']}, {s['input_frames']} -> {s['output_frames']} frames of "
        f"{'x'.join(map(str, s['frame_shape']))}" + (f" (--set {results['overrides']})" if results["overrides"]
                                                     else ""), "",
        "Same computation? Both models hold the same weights (the reference's, imported); one training forward "
        "and backward and one inference on the same frames and mask, in float64 and in float32:", "",
        "| neuron | reference model | params (reference) | params (stcsnn) | float64: max pred diff, train / "
        "inference | float64: grad diff | float32: max pred diff, train / inference | float32: grad diff | "
        "float32 loss, reference / stcsnn | firing rate per layer | same | peak mem reference (MiB) | "
        "peak mem stcsnn (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    notes = []
    for c in results["checks"]:
        cells = ["-"] * 7
        if "float64" in c:
            d, f = c["float64"], c["float32"]
            high = (["- (failed)", "-"] if "error" in d else
                    [f"{d['train_max_abs_diff']:.1e} / {d['infer_max_abs_diff']:.1e}", f"{d['grad_rel_diff']:.1e}"])
            verdict = "yes" if c["same"] else "**no**"
            cells = [*high, f"{f['train_max_abs_diff']:.1e} / {f['infer_max_abs_diff']:.1e}",
                     f"{f['grad_rel_diff']:.1e}", f"{f['ref_loss']:.6f} / {f['stcsnn_loss']:.6f}",
                     _rates(f["firing_rates"]), verdict if c["verdict_from"] == "float64" else f"{verdict} (float32)"]
            if "error" in d:
                notes.append(f"- {c['neuron']}: the float64 comparison failed in the reference code ({d['error']}); "
                             "the verdict is the float32 one.")
        lines.append(f"| {c['neuron']} | {c['reference_model']} | {c['ref_params']:,} | {c['stcsnn_params']:,} | "
                     + " | ".join(cells)
                     + f" | {_mib(c.get('reference_peak_bytes'))} | {_mib(c.get('stcsnn_peak_bytes'))} |")
        if c["params_note"] != "equal":
            notes.append(f"- {c['neuron']}: parameters {c['params_note']}.")
    lines += ["", *notes, *([""] if notes else []),
              "Time (median ms; speed-up = reference / stcsnn):", "",
              "| neuron | threads | train step, reference | train step, stcsnn | speed-up | inference, reference | "
              "inference, stcsnn | speed-up |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['neuron']} | {r['threads']} | {r['reference_train_s'] * 1e3:.1f} | "
                     f"{r['stcsnn_train_s'] * 1e3:.1f} | {r['train_speedup']:.2f}x | "
                     f"{r['reference_infer_s'] * 1e3:.1f} | {r['stcsnn_infer_s'] * 1e3:.1f} | "
                     f"{r['infer_speedup']:.2f}x |")
    memory = results["memory"] or "not measured (--no-memory)"
    lines += ["", f"Both sides ran interleaved in one process: {results['warmup']} warm-up step(s) each, then "
              f"{results['repeats']} rounds of one step each (the first side alternating). Training step: "
              "forward with the same scheduled-sampling mask, MSE over frames 2..T, backward, Adam; the reference's "
              f"includes its patching of the frames. Inference: {s['input_frames']} -> {s['output_frames']} frames, "
              "no grad (the reference: its test path, a mask of zeros). Peak memory of two training steps: "
              f"{memory}, at threads {results['threads'][0]}.",
              "",
              "Max pred diff: largest |reference - stcsnn| over every predicted pixel; grad diff: largest "
              "|reference - stcsnn| over every parameter's gradient of the training loss, over the largest "
              f"reference gradient; same: float64 pred diffs <= {SAME_TOLERANCE:g} and grad diff <= "
              f"{GRAD_TOLERANCE:g}. In float32 the two codes sum their convolutions in different orders, a "
              "membrane within rounding of the threshold spikes on one side only, and that difference travels on "
              "through time: float32 predictions may differ by whole spikes while the function is the same. "
              "Firing rate: stcsnn's mean spike rate per layer in the float32 forward (were it 0, the comparison "
              "would compare zeros).", ""]
    return "\n".join(lines)


def write_results(results: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """``official.json`` and ``official.md`` in ``out`` (each written atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "official.json", out / "official.md"
    atomic_write_text(js, json.dumps(results, indent=1) + "\n")
    atomic_write_text(md, markdown(results))
    return js, md


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/official.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=False, help="the reference checkout or its git directory")
    p.add_argument("--rev", default="HEAD", help="revision to read from a git directory (default HEAD)")
    p.add_argument("--neurons", default=",".join(DEFAULT_NEURONS),
                   help=f"comma-separated, from {', '.join(REFERENCE_MODELS)} (default lif,stc_lif)")
    p.add_argument("--config", default="small", help=f"{' | '.join(CONFIGS)} (default small)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (YAML value)")
    p.add_argument("--threads", default="1", help="thread counts, comma-separated (default 1; e.g. 1,2)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first (default 2)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", help="write official.json and official.md into this folder")
    p.add_argument("--child-memory", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.child_memory:
            print(json.dumps(memory_child(json.loads(args.child_memory))))
            return 0
        if not args.official:
            raise ConfigError("--official: expected the reference checkout or its git directory, found no option")
        results = run(args, log=lambda msg: print(msg, file=sys.stderr))
        text = markdown(results)
        print(text)
        if args.out:
            js, md = write_results(results, args.out)
            print(f"wrote {js} and {md}", file=sys.stderr)
    except StcsnnError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
