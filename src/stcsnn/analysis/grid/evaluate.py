"""The cached evaluations of a grid cell, and the naive reference predictors evaluated the same way.

- ``horizon<N>.json``: the cell rolled out past its trained horizon (``T_out`` -> ``N`` frames; the data
  generate the longer truth), from the checkpoint of its test report, on the same first test sequences,
  fully autoregressive after the input frames.
- ``report.json["per_sequence"]``: every reported metric of each test sequence over the trained ``T_out``
  frames -- the unit of the two-level bootstrap. Taken from the long-horizon rollout when that runs (its first
  ``T_out`` frames are the test report's predictions), else from one pass over the test split.
- ``energy.json``: operation counts of the evaluated weights on the first test batch.
- ``<dataset>/references/<name>_h<N>.json``: :class:`~stcsnn.models.naive.MeanImage` (the mean frame of the
  training split, at most :data:`MEAN_SEQUENCES` sequences) and :class:`~stcsnn.models.naive.LastFrame`,
  through the same evaluation on the same test sequences (one "seed", no training).
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from stcsnn.analysis.common import clean_json, write_json
from stcsnn.analysis.grid.cells import ENERGY_KEYS, HORIZON_KEYS, SEQUENCE_KEYS, Cell, checkpoint, read_cell_json
from stcsnn.config import Config, make_config
from stcsnn.errors import StcsnnError
from stcsnn.metrics import MetricAccumulator

#: the naive reference predictors, rows of every grid table
REFERENCE_MODELS = ("mean_image", "last_frame")
#: the most training sequences the mean image is computed from
MEAN_SEQUENCES = 2000


def horizon_ranges(trained: int, horizon: int) -> list[tuple[int, int]]:
    """Frame ranges (1-based, inclusive) after the trained horizon, each ``trained`` frames long:
    ``(10, 30)`` -> ``[(11, 20), (21, 30)]``."""
    return [(a, min(a + trained - 1, horizon)) for a in range(trained + 1, horizon + 1, trained)]


@torch.no_grad()
def evaluate_sequences(model: torch.nn.Module, dataset: Any, cfg: Config, device: torch.device,
                       max_batches: int | None, trained: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The loop of :func:`stcsnn.train.evaluate.evaluate_model` (same loader, batches and rollout), returning
    its results over every predicted frame and the test record over the first ``trained`` frames: overall
    metrics and each sequence's value of every metric (one accumulator per sequence)."""
    from stcsnn.train.evaluate import make_loader

    model.eval()
    whole, first = MetricAccumulator(), MetricAccumulator()
    per_sequence: dict[str, list[float]] = {m: [] for m in first.metrics}
    loader = make_loader(dataset, cfg.eval_batch_size or cfg.batch_size, cfg.num_workers)
    for inputs, targets in itertools.islice(loader, max_batches):
        inputs, targets = inputs.to(device), targets.to(device)
        pred = model.rollout(inputs, inputs.shape[1], targets.shape[1]).frames[:, -targets.shape[1]:].float()
        whole.update(pred, targets)
        first.update(pred[:, :trained], targets[:, :trained])
        for i in range(pred.shape[0]):
            one = MetricAccumulator(first.metrics)
            one.update(pred[i:i + 1, :trained], targets[i:i + 1, :trained])
            values = one.compute()
            for m in per_sequence:
                per_sequence[m].append(values[m])
    results = whole.compute()
    results["num_samples"] = whole.count
    test = first.compute()
    record = {"metrics": {m: test[m] for m in first.metrics}, "per_sequence": per_sequence,
              "num_samples": first.count, "frames": trained}
    return results, record


def _long_config(saved: Config, horizon: int) -> Config:
    """``saved`` with its test split producing ``horizon`` target frames (raises when the data cannot)."""
    options = dict(saved.data_options)
    if "output_frames" in options:
        options["output_frames"] = horizon
    return make_config({**saved.to_dict(), "output_frames": horizon, "data_options": options})


def _long_payload(results: dict[str, Any], trained: int, horizon: int) -> dict[str, Any]:
    per = results["per_horizon"]
    return {"available": True, "num_samples": results["num_samples"],
            "metrics": {k: v for k, v in results.items() if k in per}, "per_horizon": per,
            "ranges": {f"{a}-{b}": statistics.fmean(per["mse"][a - 1:b]) for a, b in horizon_ranges(trained, horizon)}}


def long_horizon(cell: Cell, device: str | torch.device | None = None) -> dict[str, Any]:
    """The cell's evaluation rolled out to ``cell.horizon`` frames (cached in ``horizon<N>.json``): per-frame
    metrics and the mean MSE over each range of :func:`horizon_ranges`. The first ``max_test_batches`` batches
    are evaluated, the sequences of the test report. Data that cannot give that many frames (a fixed test file)
    are recorded as ``{"available": false, "reason": ...}``. Records the per-sequence values when missing."""
    from stcsnn.data import build_split
    from stcsnn.device import pick_device
    from stcsnn.models.loading import load_model

    path = cell.horizon_path
    if path.is_file():
        what = f"the cell's evaluation to {cell.horizon} frames"
        cached = read_cell_json(path, what, ("available",))
        return read_cell_json(path, what, ("available", *HORIZON_KEYS)) if cached["available"] else cached
    ckpt = checkpoint(cell)
    dev = pick_device(device or cell.cfg.device)
    model, saved = load_model(ckpt, dev)
    h = cell.horizon
    payload: dict[str, Any] = {"horizon": h, "input_frames": saved.input_frames,
                               "trained_output_frames": saved.output_frames, "checkpoint": ckpt.name}
    t0 = time.time()
    try:
        cfg = _long_config(saved, h)
        dataset = build_split(cfg, "test")
    except StcsnnError as exc:
        payload.update({"available": False, "reason": str(exc)})
    else:
        results, record = evaluate_sequences(model, dataset, cfg, dev, saved.max_test_batches, saved.output_frames)
        payload.update({**_long_payload(results, saved.output_frames, h), "seconds": time.time() - t0})
        if "per_sequence" not in cell.report:
            _record(cell, record, f"{path.name} (its first {saved.output_frames} frames)")
    write_json(path, clean_json(payload))
    return payload


def _record(cell: Cell, record: dict[str, Any], source: str) -> None:
    """Add the per-sequence record to the cell's ``report.json`` (the training loop's file, which the grid
    completes; every other key is left as it was)."""
    report = cell.report
    report["per_sequence"] = {**record, "checkpoint": checkpoint(cell).name, "source": source}
    write_json(cell.run_dir / "report.json", clean_json(report))


def sequence_record(cell: Cell, device: str | torch.device | None = None) -> dict[str, Any]:
    """The cell's per-test-sequence metrics (``report.json["per_sequence"]``), evaluated now when missing."""
    from stcsnn.data import build_split
    from stcsnn.device import pick_device
    from stcsnn.models.loading import load_model

    report = cell.report
    if "per_sequence" not in report:
        dev = pick_device(device or cell.cfg.device)
        model, saved = load_model(checkpoint(cell), dev)
        _, record = evaluate_sequences(model, build_split(saved, "test"), saved, dev, saved.max_test_batches,
                                       saved.output_frames)
        _record(cell, record, "the test split")
    return read_cell_json(cell.run_dir / "report.json", "the cell's test report",
                          tuple(f"per_sequence.{k}" for k in SEQUENCE_KEYS))["per_sequence"]


def cell_energy(cell: Cell, max_samples: int = 16) -> dict[str, Any]:
    """Operation counts of the cell's evaluated weights on its first test batch (cached in energy.json)."""
    from stcsnn.analysis.common import batch_indices, get_batch
    from stcsnn.analysis.energy import count_operations
    from stcsnn.data import build_split
    from stcsnn.models.loading import load_model

    cache = cell.run_dir / "energy.json"
    if cache.is_file():
        return read_cell_json(cache, "the cell's operation counts", ENERGY_KEYS)
    ckpt = checkpoint(cell)
    model, cfg = load_model(ckpt, "cpu")
    dataset = build_split(cfg, "test")
    frames = get_batch(dataset, batch_indices(dataset, min(max_samples, cfg.eval_batch_size or cfg.batch_size)),
                       torch.device("cpu"))
    report = count_operations(model, [frames], cfg.input_frames, cfg.output_frames).to_dict()
    report["checkpoint"] = ckpt.name
    write_json(cache, clean_json(report))
    return report


def reference_path(root: Path, dataset: str, name: str, horizon: int) -> Path:
    return root / dataset / "references" / f"{name}_h{horizon}.json"


def reference_model(name: str, cfg: Config) -> torch.nn.Module:
    """The naive predictor ``name`` for ``cfg``'s data (the mean image from its training split)."""
    from stcsnn.data import build_split
    from stcsnn.models.naive import LastFrame, MeanImage, mean_frame

    if name == "mean_image":
        return MeanImage(mean_frame(build_split(cfg, "train"), MEAN_SEQUENCES))
    return LastFrame()


def reference_evaluation(root: Path, cell: Cell, name: str) -> dict[str, Any]:
    """The naive predictor ``name`` on ``cell``'s test sequences (the data do not depend on the seed): the test
    record over ``T_out`` frames and, with a horizon, the long-horizon payload; cached per dataset."""
    from stcsnn.data import build_split

    path = reference_path(root, cell.dataset, name, cell.horizon)
    if path.is_file():
        return read_cell_json(path, f"the {name} reference evaluation", ("test", "long"))
    cfg, trained, dev = cell.cfg, cell.cfg.output_frames, torch.device("cpu")
    model = reference_model(name, cfg)
    long: dict[str, Any] = {"available": False, "reason": ""}
    if cell.horizon:
        try:
            long_cfg = _long_config(cfg, cell.horizon)
            dataset = build_split(long_cfg, "test")
        except StcsnnError as exc:
            long = {"available": False, "reason": str(exc)}
        else:
            results, test = evaluate_sequences(model, dataset, long_cfg, dev, cfg.max_test_batches, trained)
            long = {**_long_payload(results, trained, cell.horizon), "horizon": cell.horizon,
                    "trained_output_frames": trained}
    if not long.get("available"):
        results, test = evaluate_sequences(model, build_split(cfg, "test"), cfg, dev, cfg.max_test_batches, trained)
    test["per_horizon"] = {m: v[:trained] for m, v in results["per_horizon"].items()}
    payload = {"model": name, "dataset": cell.dataset, "test": test, "long": long}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, clean_json(payload))
    return payload
