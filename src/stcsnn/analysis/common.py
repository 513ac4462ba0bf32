"""Shared pieces of the analysis commands: model + config resolution, one batch of data, CSV/JSON, plots."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stcsnn.config import MODEL_KEYS, Config, checkpoint_config, load_config, make_config, parse_overrides
from stcsnn.data import build_split, resolve_frame_shape
from stcsnn.errors import CheckpointError, StcsnnError

#: Config keys that define the architecture: a checkpoint and a config given together must agree on them (the
#: frame shape is compared separately: a config may leave it to the data).
ARCHITECTURE_KEYS = tuple(k for k in MODEL_KEYS if k != "frame_shape")


def is_ann(model: nn.Module) -> bool:
    """Whether ``model``'s neuron is an ANN baseline (real-valued outputs, no spikes): the registry's ``kind``."""
    from stcsnn.neurons.registry import get_spec

    return get_spec(model.neuron).is_ann


def resolve_model(config: str | None, overrides: Sequence[str] | None, checkpoint: str | None,
                  device: torch.device, split: str = "test", neuron: str | None = None):
    """``(model, cfg, dataset)``: the model of ``checkpoint`` (weights) or a fresh one seeded by ``cfg.seed``,
    the config (the checkpoint's architecture, the config's data settings) and the ``split`` dataset.

    ``neuron`` replaces the config's neuron for a fresh model (neuron options it does not take are dropped).
    A checkpoint whose architecture differs from the config is an error naming the first differing key.
    """
    from stcsnn.models.loading import load_model

    if config is None and checkpoint is None:
        raise StcsnnError("give --config FILE (a fresh, seeded model) or --checkpoint CKPT (trained weights)")
    cfg = load_config(config, parse_overrides(overrides)) if config is not None else None
    if checkpoint is not None:
        if neuron is not None:
            raise StcsnnError("a checkpoint fixes the neuron; give --neurons only for fresh models")
        model, saved = load_model(checkpoint, device)
        if cfg is None:  # --set may change data keys, not the keys that define the checkpoint's model
            cfg = checkpoint_config(saved, parse_overrides(overrides), "analyze another checkpoint instead")
        else:
            for key in ARCHITECTURE_KEYS:
                a, b = getattr(saved, key), getattr(cfg, key)
                if a != b:
                    raise CheckpointError(f"checkpoint {checkpoint!r} does not match config {config!r}: {key} is "
                                          f"{a!r} in the checkpoint, {b!r} in the config")
            if cfg.frame_shape is not None and saved.frame_shape is not None and \
                    list(cfg.frame_shape) != list(saved.frame_shape):
                raise CheckpointError(f"checkpoint {checkpoint!r} does not match config {config!r}: frame_shape "
                                      f"is {saved.frame_shape} in the checkpoint, {cfg.frame_shape} in the config")
            cfg = make_config({**cfg.to_dict(), "frame_shape": saved.frame_shape})
        dataset = build_split(cfg, split)
        resolve_frame_shape(cfg, dataset, CheckpointError, f"checkpoint {checkpoint!r}")
        return model, cfg, dataset
    if neuron is not None:
        cfg = with_neuron(cfg, neuron)
    dataset = build_split(cfg, split)
    cfg = resolve_frame_shape(cfg, dataset)
    model = fresh_model(cfg).to(device)
    return model, cfg, dataset


def fresh_model(cfg: Config) -> nn.Module:
    from stcsnn.data import resolve_config_shape  # fills a missing frame shape from the dataset spec
    from stcsnn.models import build_model

    torch.manual_seed(cfg.seed)
    return build_model(resolve_config_shape(cfg))


def with_neuron(cfg: Config, neuron: str) -> Config:
    """``cfg`` with another neuron; neuron options the new neuron does not take are dropped."""
    from stcsnn.neurons.registry import get_spec

    spec = get_spec(neuron)
    common = () if spec.is_ann else ("surrogate", "alpha")
    keep = {k: v for k, v in cfg.neuron_options.items() if k in common or k in spec.options}
    return make_config({**cfg.to_dict(), "neuron": neuron, "neuron_options": keep})


def get_batch(dataset, indices: Iterable[int], device: torch.device) -> torch.Tensor:
    """Frames ``(B, T_in + T_out, C, H, W)`` of the dataset items ``indices``."""
    indices = list(indices)
    n = len(dataset)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise StcsnnError(f"sample index {bad[0]} out of range: the split has {n} sequences")
    if not indices:
        raise StcsnnError("the split holds no sequences")
    items = [dataset[i] for i in indices]
    frames = torch.stack([torch.cat([x, y], 0) for x, y in items])
    return frames.to(device)


def batch_indices(dataset, batch_size: int, batch: int = 0) -> list[int]:
    if batch_size < 1:
        raise StcsnnError(f"--batch-size must be >= 1, got {batch_size}")
    start = batch * batch_size
    return list(range(start, min(start + batch_size, len(dataset))))


# ---------------------------------------------------------------------------------------------- output


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], fields: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV (atomically); floats with full precision."""
    from stcsnn.io import atomic_write_text

    fields = list(fields or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return "" if v is None else v


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    from stcsnn.io import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default, allow_nan=False) + "\n")
    return Path(path)


def _json_default(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return str(x)


def clean_json(x: Any) -> Any:
    """NaN / inf -> None, recursively (JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    return x


def pyplot():
    """``matplotlib.pyplot`` with the Agg backend, or None (with a one-line note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed, so no PNG plots (the CSV files hold every number); "
              "install the viz extra: pip install 'stcsnn[viz]'", file=sys.stderr)
        return None
    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG (atomically) and close it."""
    from stcsnn.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def quantiles(x: torch.Tensor, qs: Sequence[float] = (0.05, 0.5, 0.95)) -> list[float]:
    """Quantiles of a flat tensor (subsampled evenly above 2^24 elements, torch.quantile's limit)."""
    x = x.detach().flatten().float()
    limit = 1 << 24
    if x.numel() > limit:
        x = x[:: math.ceil(x.numel() / limit)]
    # q on x's device: torch.quantile refuses a CPU q beside a CUDA input
    return torch.quantile(x, torch.tensor(list(qs), dtype=x.dtype, device=x.device)).tolist()


def summary(x: torch.Tensor, prefix: str) -> dict[str, float]:
    """mean, std, min, p05, median, p95, max of a tensor as ``{prefix_mean: ...}``."""
    x = x.detach().flatten().float()
    if x.numel() == 0:
        return {f"{prefix}_{k}": float("nan") for k in ("mean", "std", "min", "p05", "median", "p95", "max")}
    p05, med, p95 = quantiles(x)
    return {f"{prefix}_mean": x.mean().item(), f"{prefix}_std": x.std(unbiased=False).item(),
            f"{prefix}_min": x.min().item(), f"{prefix}_p05": p05, f"{prefix}_median": med,
            f"{prefix}_p95": p95, f"{prefix}_max": x.max().item()}


def out_dir(path: str | None, default: str) -> Path:
    from stcsnn.io import check_writable

    out = Path(path or default)
    check_writable(out / "x")
    return out
