"""Evaluation the way the field reports it: fully autoregressive after the inputs, OpenSTL metrics, streamed.

The model sees only the ``input_frames`` observed frames of each test sequence; the targets are used only by
the metrics. Metrics accumulate batch by batch on the model's device (see :mod:`stcsnn.metrics`). The results
record how many sequences were really evaluated (``num_samples``), which is what reports state.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stcsnn.metrics import METRICS, Metric, MetricAccumulator, reported_metrics


def run_metrics(cfg) -> tuple[str, ...]:
    """The metrics a run computes and reports: its config key ``metrics``, or the reported set of the table."""
    return tuple(cfg.metrics) if cfg.metrics else reported_metrics()


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False)


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset: Dataset, cfg, device: torch.device,
             max_batches: int | None = None, keep: int = 0, metrics: tuple[str, ...] | None = None
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics of ``model`` on ``dataset`` (the first ``max_batches`` batches when given) and the first ``keep``
    samples (inputs, truth, prediction). ``metrics``: the names to compute (default: :func:`run_metrics` of
    ``cfg``). ``results["num_samples"]`` is the number of sequences evaluated."""
    model.eval()
    acc = MetricAccumulator(run_metrics(cfg) if metrics is None else metrics)
    kept: dict[str, list[np.ndarray]] = {"inputs": [], "truth": [], "pred": []}
    rates = []
    loader = make_loader(dataset, cfg.eval_batch_size or cfg.batch_size, cfg.num_workers)
    n_kept = 0
    # islice: a capped evaluation never asks the loader for the batch after the last one it uses
    for inputs, targets in itertools.islice(loader, max_batches):
        inputs, targets = inputs.to(device), targets.to(device)
        out = model.rollout(inputs, inputs.shape[1], targets.shape[1])
        pred = out.frames[:, -targets.shape[1]:].float()
        acc.update(pred, targets)
        rates.append(out.rates.cpu())
        if n_kept < keep:
            take = min(keep - n_kept, inputs.shape[0])
            for key, t in (("inputs", inputs), ("truth", targets), ("pred", pred)):
                kept[key].append(t[:take].float().cpu().numpy())
            n_kept += take
    results = acc.compute()
    results["num_samples"] = acc.count
    results["firing_rate"] = torch.stack(rates).mean(0).tolist() if rates else []
    model.train()
    samples = {k: np.concatenate(v) for k, v in kept.items() if v}
    return results, samples


def write_report(out_dir: str | os.PathLike, results: dict[str, Any], meta: dict[str, Any],
                 samples: dict[str, np.ndarray] | None = None, stem: str = "report") -> list[Path]:
    """``report.json`` + ``report.md`` (+ ``predictions.png``) in ``out_dir``; returns the written paths.

    ``num_samples`` is taken from ``results`` (what :func:`evaluate_model` really ran) when it is there; ``meta`` may
    add ``split_samples``, the size of the whole split."""
    from stcsnn.io import atomic_write_text
    from stcsnn.viz import VizMissingError, grid_title, prediction_grid, write_png

    out_dir = Path(out_dir)
    if "num_samples" in results:
        meta = {**meta, "num_samples": results["num_samples"]}
    # the metrics of the table that were computed, in the order computed (what the run's config selected)
    payload = {**meta, "metrics": {k: results[k] for k in results if k in METRICS},
               "per_horizon": results.get("per_horizon", {}), "firing_rate": results.get("firing_rate", [])}
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    atomic_write_text(paths[0], json.dumps(payload, indent=2, default=_jsonable) + "\n")
    atomic_write_text(paths[1], report_markdown(payload))
    if samples:
        png = out_dir / ("predictions.png" if stem == "report" else f"{stem}_predictions.png")
        where = f"{meta.get('dataset', '?')} {meta.get('split', '?')}, metrics over {_samples(meta)} samples"
        title = grid_title(meta.get("neuron"), meta.get("checkpoint"), payload["metrics"], where)
        try:
            write_png(png, prediction_grid(samples["inputs"], samples["truth"], samples["pred"], title=title))
            paths.append(png)
        except VizMissingError as exc:  # the numbers are written; a missing optional extra must not fail the run
            print(f"note: no {png.name}: {exc}", file=sys.stderr)
    return paths


def _jsonable(x: Any) -> str:
    """JSON has no tensors, paths or NaN: anything ``json`` cannot encode is written as its text."""
    return str(x)


def _samples(payload: dict[str, Any]) -> str:
    """``128 of 300`` when only part of the split was evaluated, else the count."""
    n, total = payload.get("num_samples", "?"), payload.get("split_samples")
    return f"{n} of {total}" if total is not None and total != n else f"{n}"


def _row(name: str) -> Metric:
    """The table's row for ``name``; a report written with a metric no longer registered prints it plainly."""
    return METRICS.get(name) or Metric(name, name.upper(), ".4f", True, False, source=name)


def report_markdown(payload: dict[str, Any]) -> str:
    m = payload["metrics"]
    rows = [_row(name) for name in m]
    run = ""
    if "world_size" in payload or "threads" in payload:  # a training run's report (eval's reports have none)
        world = payload.get("world_size") or 1  # a config made outside a run records none
        run = (f"trained on {world} process{'es' if world != 1 else ''}"
               + (" (DDP)" if world > 1 else "") + f", {payload.get('threads', '?')} CPU thread(s) each")
    lines = [
        f"# Evaluation: {payload.get('neuron', '?')} on {payload.get('dataset', '?')} ({payload.get('split', '?')})",
        "",
        f"checkpoint: `{payload.get('checkpoint', '?')}`, samples: {_samples(payload)}"
        + (f", frames: {payload['input_frames']} -> {payload['output_frames']}"
           if "input_frames" in payload and "output_frames" in payload else ""),
        "",
        *([run, ""] if run else []),
        "| " + " | ".join(r.label for r in rows) + " |",
        "|" + "---:|" * len(rows),
        "| " + " | ".join(r.format(m[r.name]) for r in rows) + " |",
        "",
        "MSE and MAE are per-frame sums over channels and pixels (OpenSTL's convention); SSIM and PSNR are on",
        "predictions clipped to [0, 1]. See `stcsnn.metrics` for the definitions.",
        "",
    ]
    horizon = payload.get("per_horizon") or {}
    if horizon:
        shown = [r for r in rows if r.name in horizon]
        lines += ["## Per predicted frame", "", "| frame | " + " | ".join(r.label for r in shown) + " |",
                  "|---:|" + "---:|" * len(shown)]
        for t in range(len(horizon[shown[0].name]) if shown else 0):
            lines.append(f"| {t + 1} | " + " | ".join(r.format(horizon[r.name][t]) for r in shown) + " |")
        lines.append("")
    if payload.get("firing_rate"):
        lines.append("Firing rate per layer: " + ", ".join(f"{r:.3f}" for r in payload["firing_rate"]))
        lines.append("")
    return "\n".join(lines)
