"""``stcsnn export``: a checkpoint as a folder anyone can load without pickle, optionally with an ONNX step.

The folder holds

* ``model.safetensors`` -- the model's state_dict (contiguous tensors, ``safetensors.torch``);
* ``config.json`` -- the model's full config (``Config.to_dict()``, without the local ``data_root``) plus
  ``format: stcsnn-export``, ``version``, ``stcsnn_version`` and, for a neuron a plugin registered,
  ``plugins`` (:data:`stcsnn.models.checkpoint.PLUGINS`);
* ``README.md`` -- a model card (neuron, data, frames, architecture, training budget, test metrics, the command
  that made it, license, how to load it), which is also what the Hugging Face Hub shows;
* ``step.onnx`` (``--onnx``) -- :meth:`SpikingPredictor.step` as an ONNX graph: inputs ``frame`` (B, C, H, W)
  and the state flattened to ``state_l{layer}_{field}`` tensors, outputs ``prediction`` and
  ``next_state_l{layer}_{field}``; a fresh state is all zeros. Traced on the plain path (the neuron modules'
  own updates, no fused autograd Functions), so a spike is a ``GreaterOrEqual`` (``Greater`` for strict
  thresholds) and a ``Cast``.

:func:`stcsnn.load_model` reads the folder (``model.safetensors`` + ``config.json`` only) and predicts exactly what
the checkpoint predicts. Every file is written atomically; an existing folder that holds files is refused
unless ``force``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stcsnn.errors import CheckpointError, StcsnnError
from stcsnn.models.checkpoint import plugins_entry, tensor_digest
from stcsnn.models.loading import (
    CONFIG_NAME,
    EXPORT_CHECKSUMS,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    WEIGHTS_NAME,
    hub_module,
    model_from_checkpoint,
    read_checkpoint,
)
from stcsnn.models.predictor import PLAIN
from stcsnn.runs import SHA_KEY, export_folder_files, file_sha256

ONNX_NAME = "step.onnx"
CARD_NAME = "README.md"
#: opset 17: the first with LayerNormalization; GroupNorm exports as InstanceNormalization + affine there
ONNX_OPSET = 17
ONNX_INSTALL = 'pip install "stcsnn[onnx]"'


# ---------------------------------------------------------------------------------------------- ONNX
def onnx_modules():
    """``(onnx, onnxruntime)``, or one clear line naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise StcsnnError(f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is not installed): "
                          f"{ONNX_INSTALL}") from None
    return onnx, onnxruntime


def state_layout(model: nn.Module) -> list[tuple[int, str, type]]:
    """``[(layer, field, State class), ...]`` in the order the ONNX graph takes and returns them."""
    return [(l, name, cell.State) for l, cell in enumerate(model.cells) for name in cell.State._fields]


def state_names(model: nn.Module, prefix: str = "state") -> list[str]:
    """The flat state's names: ``state_l0_v``, ``state_l0_s``, ``state_l1_v``, ... (``prefix`` replaced for the
    outputs: ``next_state_l0_v``, ...)."""
    return [f"{prefix}_l{l}_{name}" for l, name, _ in state_layout(model)]


def flatten_state(state: Sequence[tuple]) -> list[Tensor]:
    """A :data:`~stcsnn.models.predictor.StepState` as the flat list of tensors :func:`state_names` names."""
    return [t for layer in state for t in layer]


def unflatten_state(model: nn.Module, flat: Sequence[Tensor]) -> tuple:
    """The inverse of :func:`flatten_state` for ``model``."""
    states, i = [], 0
    for cell in model.cells:
        n = len(cell.State._fields)
        states.append(cell.State(*flat[i:i + n]))
        i += n
    return tuple(states)


def zero_state(model: nn.Module, batch: int, frame_shape: Sequence[int], dtype: torch.dtype = torch.float32
               ) -> list[Tensor]:
    """The flat fresh state for frames of ``frame_shape`` (C, H, W): zeros of (B, hidden_l, H / p, W / p)."""
    _, h, w = frame_shape
    p = model.patch_size
    return [torch.zeros(batch, model.cells[l].hidden_channels, h // p, w // p, dtype=dtype)
            for l, _, _ in state_layout(model)]


class StepGraph(nn.Module):
    """``(frame, *flat_state) -> (prediction, *flat_next_state)``: the plain-path step with its state as
    explicit tensors (what ONNX export traces)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: Tensor, *flat: Tensor) -> tuple[Tensor, ...]:
        pred, state = self.model._step(frame, unflatten_state(self.model, flat), PLAIN)
        return (pred, *flatten_state(state))


def onnx_step_bytes(model: nn.Module, frame_shape: Sequence[int], opset: int = ONNX_OPSET) -> bytes:
    """``model.step`` as a serialized ONNX model (dynamic batch axis, fixed frame size ``frame_shape``)."""
    onnx, _ = onnx_modules()
    graph = StepGraph(model).eval()
    c, h, w = frame_shape
    args = (torch.zeros(1, c, h, w), *zero_state(model, 1, frame_shape))
    inputs, outputs = ["frame", *state_names(model)], ["prediction", *state_names(model, "next_state")]
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy (TorchScript) exporter: the dynamo one needs onnxscript, which stcsnn does not require; its
        # deprecation notice and the tracer's notes on Python-level shape checks are not the user's concern
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(graph, args, buf, dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_axes={n: {0: "batch"} for n in inputs + outputs},
                          do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    # a state field the update never reads (LIF's previous spikes) is pruned from the inputs by the exporter; it
    # is declared again, typed like its output, so that every graph takes and returns the same named state
    present = {v.name for v in proto.graph.input}
    typed = {v.name: v for v in proto.graph.output}
    for name in inputs:
        if name not in present:
            value = proto.graph.input.add()
            value.CopyFrom(typed["next_" + name])
            value.name = name
    order = {n: i for i, n in enumerate(inputs)}
    declared = sorted(proto.graph.input, key=lambda v: order.get(v.name, len(order)))
    del proto.graph.input[:]
    proto.graph.input.extend(declared)
    data = proto.SerializeToString()
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as exc:  # the checker's error classes differ by onnx version
        raise StcsnnError(f"the exported ONNX graph does not pass onnx.checker ({exc}); nothing was written") from None
    return data


def onnx_session(data: bytes):
    """An onnxruntime CPU session for a serialized model."""
    _, ort = onnx_modules()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def onnx_rollout(session, model: nn.Module, frames: Tensor) -> Tensor:
    """Feed ``frames`` (B, T, C, H, W) through the ONNX step from a zero state; the forecasts (B, T, C, H, W)."""
    flat = [t.numpy() for t in zero_state(model, frames.shape[0], frames.shape[2:])]
    names = state_names(model)
    preds = []
    for t in range(frames.shape[1]):
        out = session.run(None, {"frame": frames[:, t].numpy(), **dict(zip(names, flat))})
        preds.append(torch.from_numpy(out[0]))
        flat = out[1:]
    return torch.stack(preds, 1)


def check_onnx(model: nn.Module, data: bytes, frame_shape: Sequence[int], steps: int = 3, seed: int = 0) -> float:
    """Max |ONNX - PyTorch| of the step's forecasts over ``steps`` random frames (batch 2: the batch axis is
    dynamic). A spike that rounding flips shows up here as a larger difference."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.rand(2, steps, *frame_shape, generator=gen)
    with torch.no_grad():
        state, ref = None, []
        for t in range(steps):
            pred, state = model._step(frames[:, t], state, PLAIN)
            ref.append(pred)
    got = onnx_rollout(onnx_session(data), model, frames)
    return float((got - torch.stack(ref, 1)).abs().max())


# ---------------------------------------------------------------------------------------------- model card
def _report_for(checkpoint: Path) -> tuple[dict | None, str]:
    """The test report of ``checkpoint``: ``report.json`` beside it, only when it records this checkpoint's
    sha256 (a report of another checkpoint, or one that records none, never gives the card its numbers)."""
    path = checkpoint.parent / "report.json"
    if not path.is_file():
        return None, "not evaluated (no report.json beside the checkpoint; `stcsnn eval --checkpoint CKPT` makes one)"
    try:
        if path.stat().st_size > 1 << 20:
            raise ValueError("larger than 1 MB")
        report = json.loads(path.read_bytes())
        metrics = report["metrics"]
        if not isinstance(metrics, dict):
            raise ValueError("no metrics")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        return None, f"not evaluated (report.json beside the checkpoint cannot be read: {str(exc)[:80]})"
    if report.get(SHA_KEY) != file_sha256(checkpoint):
        about = Path(str(report.get("checkpoint", ""))).name
        if about and about != checkpoint.name:
            return None, f"not evaluated (report.json beside the checkpoint is about {about}, not {checkpoint.name})"
        return None, ("not evaluated (report.json beside the checkpoint is not about this checkpoint: it records "
                      "another sha256, or none)")
    return report, ""


def _number(x: Any, digits: int) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


def _training_budget(cfg, ckpt: dict[str, Any]) -> str:
    """The card's training row: epochs, steps and best validation MSE, or where the weights came from."""
    imported = ckpt.get("imported_from")
    if "step" in ckpt and "epoch" in ckpt:
        budget = (f"{ckpt['epoch']} of {cfg.epochs} configured epochs completed"
                  + (f" (and {ckpt['batch']} batches of the next)" if ckpt.get("batch") else "")
                  + f", {ckpt['step']} optimizer steps, batch size {cfg.batch_size}, lr {cfg.lr:g}")
        if isinstance(ckpt.get("best_val_mse"), (int, float)) and math.isfinite(ckpt["best_val_mse"]):
            budget += f"; best validation MSE {ckpt['best_val_mse']:.4f}"
        return budget
    if imported:
        return (f"imported from the reference implementation ({imported.get('reference_model', '?')}); its "
                "training budget is not recorded")
    return "not recorded in the checkpoint"


def _card_summary(cfg, model: nn.Module, budget: str) -> list[str]:
    """The card's front matter, heading and summary table (neuron, dataset, frames, architecture, training)."""
    import stcsnn  # the package itself (loaded with any of its modules): its version, not its API
    from stcsnn.neurons import get_spec

    c, h, w = cfg.frame_shape
    spec = get_spec(cfg.neuron)
    params = sum(p.numel() for p in model.parameters())
    layers = len(cfg.hidden_channels)
    return [
        "---",
        "library_name: stcsnn",
        "license: mit",
        "tags: [stcsnn, spiking-neural-networks, video-prediction, spatio-temporal-forecasting]",
        "---",
        "",
        f"# stcsnn {cfg.neuron} predictor ({cfg.dataset})",
        "",
        f"A spatio-temporal predictor of {'an ANN baseline cell' if spec.is_ann else 'spiking neurons'} "
        f"exported by stcsnn {stcsnn.__version__}: `{cfg.neuron}` -- {spec.description}.",
        "",
        "| | |",
        "| --- | --- |",
        f"| neuron | `{cfg.neuron}`" + (f", options {cfg.neuron_options}" if cfg.neuron_options else "") + " |",
        f"| dataset | `{cfg.dataset}`" + (f", options {cfg.data_options}" if cfg.data_options else "") + " |",
        f"| frames | {cfg.input_frames} input -> {cfg.output_frames} predicted, {c}x{h}x{w} (C x H x W) in [0, 1] |",
        f"| architecture | {layers} layer{'s' * (layers > 1)} of {cfg.hidden_channels} channels, kernel "
        f"{cfg.kernel_size}, patch {cfg.patch_size}, gradient_detach {cfg.gradient_detach}; {params:,} parameters |",
        f"| training | {budget} |",
        "",
    ]


def _card_metrics(cfg, checkpoint: Path) -> list[str]:
    """The card's test metrics section: the table of the report beside the checkpoint, or why there is none."""
    report, why = _report_for(checkpoint)
    lines = ["## Test metrics", ""]
    if report is None:
        return lines + [why[0].upper() + why[1:] + "."]
    m = report["metrics"]
    n = report.get("num_samples", "?")
    return lines + [
        f"On the `{report.get('split', 'test')}` split of `{report.get('dataset', cfg.dataset)}` ({n} sequences; "
        "MSE and MAE are per-frame sums over channels and pixels, OpenSTL's convention):",
        "",
        "| MSE | MAE | SSIM | PSNR |",
        "|---:|---:|---:|---:|",
        f"| {_number(m.get('mse'), 4)} | {_number(m.get('mae'), 4)} | {_number(m.get('ssim'), 4)} "
        f"| {_number(m.get('psnr'), 3)} |",
    ]


def _card_files(cfg, model: nn.Module, onnx: bool) -> list[str]:
    """The card's list of the folder's files (the ONNX step with its input and state names when exported)."""
    lines = [
        "",
        "## Files",
        "",
        f"- `{WEIGHTS_NAME}`: the weights (a state_dict in safetensors: no pickle)",
        f"- `{CONFIG_NAME}`: the full stcsnn config (`format: {EXPORT_FORMAT}`)",
    ]
    if onnx:
        c, h, w = cfg.frame_shape
        names = ", ".join(f"`{n}`" for n in state_names(model))
        p = cfg.patch_size
        lines += [
            f"- `{ONNX_NAME}`: one streaming step (opset {ONNX_OPSET}, dynamic batch axis): inputs `frame` "
            f"(B, {c}, {h}, {w}) and the state {names}; outputs `prediction` (the forecast of the next frame) and "
            f"the same state names prefixed `next_`. Start from zeros shaped (B, hidden, {h // p}, {w // p}).",
        ]
    return lines


def _card_usage(cfg, command: str) -> list[str]:
    """The card's closing sections: how to load the folder, the command that made it, the license."""
    c, h, w = cfg.frame_shape
    return [
        "",
        "## How to load",
        "",
        "```python",
        "import stcsnn",
        'model, cfg = stcsnn.load_model("THIS_FOLDER")  # or "hf://USER/REPO" (pip install "stcsnn[hub]")',
        f"pred = model(inputs, n_future={cfg.output_frames})  # inputs (B, {cfg.input_frames}, {c}, {h}, {w}), [0, 1]",
        "pred1, state = model.step(frame, None)  # streaming: one (B, C, H, W) frame at a time",
        "```",
        "",
        "Every stcsnn command's `--checkpoint` option accepts the folder too (`stcsnn predict --checkpoint "
        "THIS_FOLDER ...`). Without stcsnn: `safetensors.torch.load_file(\"model.safetensors\")`.",
        "",
        "## How it was made",
        "",
        "```bash",
        command,
        "```",
        "",
        "## License",
        "",
        "stcsnn is MIT-licensed, and this folder is published under the MIT license by default. The weights were "
        f"trained on `{cfg.dataset}`, whose own terms may apply to them"
        + (" (the embedded data is a Fashion-MNIST subset, MIT, Zalando SE)" if cfg.dataset == "embedded" else "")
        + ": check them before redistributing.",
        "",
    ]


def model_card(cfg, model: nn.Module, ckpt: dict[str, Any], checkpoint: Path, command: str, onnx: bool) -> str:
    """The README.md of an export (Hugging Face model card front matter included); ``cfg`` has its frame_shape."""
    lines = (_card_summary(cfg, model, _training_budget(cfg, ckpt)) + _card_metrics(cfg, checkpoint)
             + _card_files(cfg, model, onnx) + _card_usage(cfg, command))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- export
def export(checkpoint: str | Path, out: str | Path, *, onnx: bool = False, force: bool = False,
           command: str | None = None, frame_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Write the export folder ``out`` for ``checkpoint``; returns ``{"files": [paths written], "onnx_max_diff":
    float or None, "config": the exported Config, "onnx_regenerated": bool}``.

    Everything (weights, config, card, ONNX graph and its onnxruntime check) is computed before the first write,
    then committed by :func:`_commit`. ``out`` may be new or empty; one that holds files needs ``force`` (files
    that are not the export's are left alone; a ``step.onnx`` there is regenerated for the new weights, as with
    ``onnx``)."""
    import stcsnn
    from stcsnn.config import make_config
    from stcsnn.io import RunLock

    src, out = Path(checkpoint), Path(out)
    if src.is_dir():
        raise CheckpointError(f"{str(src)!r} is a folder; expected a checkpoint file such as "
                              f"{str(src / 'best.pt')!r}")
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {str(out)!r} is a file; expected a folder to write the export into")
    # a forced export into a folder that holds a graph (of the weights being replaced) regenerates it: leaving it
    # would serve old weights beside the new ones, and deleting it would drop a file the user had
    regenerate = force and not onnx and os.path.lexists(out / ONNX_NAME)
    if onnx or regenerate:
        try:
            onnx_modules()  # before any work: a missing package is one line, not a failure after minutes
        except StcsnnError as exc:
            if not regenerate:
                raise
            raise StcsnnError(f"--out {str(out)!r} holds {ONNX_NAME} of an earlier export, which must be "
                              f"regenerated for the new weights: {exc}; or remove {ONNX_NAME} first (nothing was "
                              "changed)") from None
        onnx = True
    ckpt = read_checkpoint(src)
    model, cfg = model_from_checkpoint(ckpt, str(src))
    model.eval()
    # recorded, so that the folder rebuilds its model without knowing the dataset; the models layer knows no
    # dataset, so a checkpoint that records no frame shape (written before they were) needs it given
    if frame_shape is not None:
        if int(frame_shape[0]) != model.frame_channels:  # the folder would not load: say so before writing it
            raise CheckpointError(f"frame_shape {list(frame_shape)} has {frame_shape[0]} channel(s), the model in "
                                  f"{str(src)!r} reads {model.frame_channels}; expected [{model.frame_channels}, H, W]")
        cfg = make_config({**cfg.to_dict(), "frame_shape": [int(v) for v in frame_shape]})
    elif cfg.frame_shape is None:
        raise CheckpointError(f"checkpoint {str(src)!r} records no frame_shape (written by an older stcsnn); "
                              "expected one, to record in the export: give it (frame_shape=[C, H, W]), or "
                              "re-save the checkpoint with its config's frame_shape set")
    command = command or shlex.join(["stcsnn", "export", str(src), "--out", str(out)] + (["--onnx"] if onnx else []))
    with RunLock(out, "stcsnn export"):
        existing = export_folder_files(out)  # a training run's folder is refused there
        if existing and not force:
            shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
            raise CheckpointError(f"--out {str(out)!r} already holds files ({shown}); expected a new or empty "
                                  "folder (or --force to replace the export's files; nothing was changed)")
        from safetensors.torch import save as safetensors_bytes

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        # the checksums let load_model tell a damaged file from a model (stcsnn.models.loading.read_weights)
        sums = json.dumps({k: tensor_digest(v) for k, v in tensors.items()}, sort_keys=True)
        weights = safetensors_bytes(tensors, metadata={"format": "pt", "stcsnn_format": EXPORT_FORMAT,
                                                       EXPORT_CHECKSUMS: sums})
        # data_root is where this machine keeps the data: a local path means nothing elsewhere and would be
        # published with --push, so the folder leaves it out (eval/predict on another machine pass their own)
        config = {**cfg.to_dict(), "data_root": None, "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
                  "stcsnn_version": stcsnn.__version__, **plugins_entry(cfg)}
        files: dict[str, bytes] = {WEIGHTS_NAME: weights,
                                   CONFIG_NAME: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()}
        diff = None
        if onnx:
            shape = tuple(cfg.frame_shape)
            # the ONNX step is float32 (what runtimes serve); a dtype: float64 model is exported as its float32 copy
            step_model = model if model.readout.weight.dtype == torch.float32 else copy.deepcopy(model).float()
            files[ONNX_NAME] = onnx_step_bytes(step_model, shape)
            diff = check_onnx(step_model, files[ONNX_NAME], shape)
            if not math.isfinite(diff):
                raise StcsnnError(f"the ONNX step predicts non-finite values (max difference {diff}); nothing "
                                  "was written")
        files[CARD_NAME] = model_card(cfg, model, ckpt, src, command, onnx).encode()
        written = _commit(out, files)
    return {"files": written, "onnx_max_diff": diff, "config": cfg, "onnx_regenerated": regenerate}


def _commit(out: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` into ``out`` so that a failed write never mixes two exports: each is first written in full
    (atomically) under a hidden staging name -- a full disk stops the export here, the previous files untouched --
    then all are renamed into place, config.json last (only a crash within those few renames could leave a mix).
    Nothing else in ``out`` is deleted."""
    from stcsnn.io import atomic_write_bytes, remove_stale_temporaries

    remove_stale_temporaries(out)  # an interrupted export's leftovers (we hold the folder's lock)
    for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, ONNX_NAME):
        with contextlib.suppress(FileNotFoundError):
            (out / f".{name}.staged").unlink()
    order = sorted(files, key=lambda n: n == CONFIG_NAME)
    staged = {name: out / f".{name}.staged" for name in order}
    try:
        for name in order:
            atomic_write_bytes(staged[name], files[name])
        for name in order:
            os.replace(staged[name], out / name)
    finally:
        for path in staged.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return [out / name for name in order]


def push(folder: str | Path, repo: str, files: Sequence[Path]) -> str:
    """Upload ``files`` of ``folder`` to the Hugging Face Hub model repository ``repo`` (created if needed);
    returns the repository's URL."""
    from stcsnn.models.loading import HF_PREFIX, parse_hub_source

    repo_id, _ = parse_hub_source(HF_PREFIX + repo)
    hub = hub_module()
    try:
        api = hub.HfApi()
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          allow_patterns=[Path(f).name for f in files],
                          commit_message="Upload stcsnn export")
    except Exception as exc:  # the Hub's errors (HTTP, auth, validation) differ by version
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise StcsnnError(f"the export in {str(folder)!r} is complete, but uploading it to {repo_id!r} failed: "
                          f"{type(exc).__name__}: {text}") from None
    return str(url)
