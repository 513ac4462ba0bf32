r"""Inside the neurons: learned STC gains, how they depend on the input, firing rates over time, spike rasters.

One rollout without scheduled sampling (inference). For each layer and step ``t``:

* STC neurons: the temporal gain ``1 + tanh A[t]`` (scales the carried-over membrane) and the spatial gain
  ``1 + tanh B[t]`` (scales the input current), both computed from the previous spikes ``S[t-1]`` exactly as
  the neuron does (``cell.autapse(S[t-1])``, zeros at t = 0); distributions over neurons and samples.
* the same gains split by the input: every neuron sits at a patch position of the frame (the predictor works
  on p x p patches; all layers keep that grid); it counts as a *moving-object* neuron at step ``t`` where the
  frame the model reads at step ``t`` (an observed frame, after the inputs its own previous prediction)
  exceeds ``threshold`` (0.1) anywhere in its patch, else as *background*. Step 0 (no previous spikes, the
  gains do not depend on the data) is left out of these pooled distributions.
* firing rate: the mean of the spikes over the batch and the neurons.
* a raster of one sample: a fixed, evenly spaced subset of each layer's neurons (channel, y, x) over time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcsnn.analysis.common import is_ann, summary
from stcsnn.errors import StcsnnError

GAINS = ("temporal", "spatial")


@dataclass
class DynamicsTrace:
    neuron: str
    rates: list[list[float]]  # [layer][step]
    gains: list[dict[str, list[Tensor]] | None] = field(repr=False)  # [layer] -> {"temporal": [step] ...}
    spikes: list[list[Tensor]] = field(repr=False)  # [layer][step] (B, C, H, W)
    inputs: list[Tensor] = field(default_factory=list, repr=False)  # [step] the frame read (B, C, H, W)
    patch_size: int = 1


@torch.no_grad()
def trace_dynamics(model: nn.Module, frames: Tensor, cfg) -> DynamicsTrace:
    cells = list(model.cells)
    if is_ann(model):
        raise StcsnnError(f"{model.neuron} is an ANN baseline: it has no spikes or STC gains to analyse")
    spikes: list[list[Tensor]] = [[] for _ in cells]

    def observer(t: int, layer: int, s: Tensor, state) -> None:
        spikes[layer].append(s.detach())

    was_training = model.training
    model.eval()
    try:
        out = model.rollout(frames, cfg.input_frames, cfg.output_frames, observer=observer)
    finally:
        model.train(was_training)
    # step t reads observed frame t, after the inputs the prediction of step t - 1 (output t predicts frame t+1)
    steps = cfg.input_frames + cfg.output_frames - 1
    inputs = [frames[:, t] if t < cfg.input_frames else out.frames[:, t - 1] for t in range(steps)]
    rates = [[s.float().mean().item() for s in layer] for layer in spikes]
    gains: list[dict[str, list[Tensor]] | None] = []
    for l, cell in enumerate(cells):
        autapse = getattr(cell, "autapse", None)
        if autapse is None:
            gains.append(None)
            continue
        g: dict[str, list[Tensor]] = {k: [] for k in GAINS}
        for t, s in enumerate(spikes[l]):
            prev = spikes[l][t - 1] if t else torch.zeros_like(s)
            g_a, g_b = autapse(prev)
            g["temporal"].append(g_a)
            g["spatial"].append(g_b)
        gains.append(g)
    return DynamicsTrace(model.neuron, rates, gains, spikes, [x.detach() for x in inputs],
                         int(getattr(model, "patch_size", 1)))


def rate_rows(trace: DynamicsTrace) -> list[dict]:
    return [{"neuron": trace.neuron, "layer": l, "step": t, "firing_rate": r}
            for l, layer in enumerate(trace.rates) for t, r in enumerate(layer)]


def gain_rows(trace: DynamicsTrace) -> list[dict]:
    """Per layer, gain and step (and ``step = all``): the distribution over neurons and samples."""
    rows = []
    for l, g in enumerate(trace.gains):
        if g is None:
            continue
        for kind in GAINS:
            for t, x in enumerate(g[kind]):
                rows.append({"layer": l, "gain": kind, "step": t, **summary(x, "gain")})
            rows.append({"layer": l, "gain": kind, "step": "all", **summary(torch.stack(g[kind]), "gain")})
    return rows


def gain_histogram_rows(trace: DynamicsTrace, bins: int = 50) -> list[dict]:
    """Histograms of each gain per layer over (0, 2), all steps together."""
    rows = []
    for l, g in enumerate(trace.gains):
        if g is None:
            continue
        for kind in GAINS:
            x = torch.stack(g[kind]).flatten().float()
            counts = torch.histc(x, bins=bins, min=0.0, max=2.0)
            for i in range(bins):
                rows.append({"layer": l, "gain": kind, "bin_lo": 2.0 * i / bins, "bin_hi": 2.0 * (i + 1) / bins,
                             "count": int(counts[i].item()), "fraction": counts[i].item() / max(x.numel(), 1)})
    return rows


REGIONS = ("object", "background")


def object_masks(trace: DynamicsTrace, threshold: float = 0.1) -> list[Tensor]:
    """Per step, (B, 1, h, w) booleans on the neurons' patch grid: the frame read at that step exceeds
    ``threshold`` somewhere in the patch (any channel)."""
    p = trace.patch_size
    return [F.max_pool2d(x.float().amax(1, keepdim=True), p) > threshold for x in trace.inputs]


def _region_values(trace: DynamicsTrace, masks: list[Tensor], layer: int, kind: str, region: str,
                   step: int | None) -> Tensor:
    """The gains of ``layer`` and ``kind`` on ``region`` at ``step`` (None: every step >= 1), flattened."""
    g = trace.gains[layer]
    steps = range(1, len(g[kind])) if step is None else [step]
    parts = []
    for t in steps:
        x = g[kind][t]
        m = masks[t].expand_as(x)
        parts.append(x[m if region == "object" else ~m])
    # an empty region lives where the gains do: histograms of several traces are added up
    return torch.cat(parts) if parts else g[kind][0].new_empty(0)


def region_rows(trace: DynamicsTrace, threshold: float = 0.1) -> list[dict]:
    """Per layer, gain, region (object / background) and step (and ``step = all``: steps >= 1): the
    distribution of the gain, with the share of neurons in that region."""
    if not trace.inputs:
        raise StcsnnError("this trace has no recorded inputs; run trace_dynamics again")
    masks = object_masks(trace, threshold)
    rows = []
    for l, g in enumerate(trace.gains):
        if g is None:
            continue
        steps = len(g["temporal"])
        for kind in GAINS:
            for step in [*range(1, steps), None]:
                total = sum(g[kind][t].numel() for t in (range(1, steps) if step is None else [step]))
                for region in REGIONS:
                    x = _region_values(trace, masks, l, kind, region, step)
                    rows.append({"layer": l, "gain": kind, "region": region, "step": "all" if step is None else step,
                                 "count": x.numel(), "share": x.numel() / max(total, 1), **summary(x, "gain")})
    return rows


def region_histograms(trace: DynamicsTrace, threshold: float = 0.1, bins: int = 50) -> dict[tuple, Tensor]:
    """``{(layer, gain, region): counts}`` over (0, 2) in ``bins`` bins, steps >= 1 pooled (counts of several
    traces add up)."""
    masks = object_masks(trace, threshold)
    out = {}
    for l, g in enumerate(trace.gains):
        if g is None:
            continue
        for kind in GAINS:
            for region in REGIONS:
                x = _region_values(trace, masks, l, kind, region, None).float()
                out[(l, kind, region)] = (torch.histc(x, bins=bins, min=0.0, max=2.0) if x.numel()
                                          else x.new_zeros(bins))
    return out


def plot_regions(hists: dict[str, dict[tuple, Tensor]], path, title: str) -> object:
    """One row per model (``hists``: name -> :func:`region_histograms`), one column per layer: the densities of
    both gains on object (solid) and background (dashed) neurons. Returns ``path`` or None."""
    from stcsnn.analysis.common import pyplot, save_figure

    plt = pyplot()
    if plt is None or not hists:
        return None
    layers = 1 + max(k[0] for h in hists.values() for k in h)
    fig, axes = plt.subplots(len(hists), layers, figsize=(max(4.5 * layers, 8.0), 3.4 * len(hists)), squeeze=False)
    for row, (name, h) in zip(axes, hists.items()):
        for l, ax in enumerate(row):
            for kind, color in (("temporal", "tab:blue"), ("spatial", "tab:orange")):
                for region, style in (("object", "-"), ("background", "--")):
                    counts = h.get((l, kind, region))
                    if counts is None or counts.sum() == 0:
                        continue
                    bins = counts.numel()
                    centers = [(i + 0.5) * 2.0 / bins for i in range(bins)]
                    density = (counts / counts.sum() / (2.0 / bins)).tolist()
                    label = f"{kind} ({'1 + tanh A' if kind == 'temporal' else '1 + tanh B'}), {region}"
                    ax.plot(centers, density, style, color=color, label=label)
            ax.axvline(1.0, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{name}, layer {l}")
            ax.set_xlabel("gain")
            ax.set_ylabel("density")
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def raster_neurons(shape: tuple[int, ...], count: int) -> list[int]:
    """``count`` evenly spaced flat neuron indices of a (C, H, W) layer."""
    n = 1
    for d in shape:
        n *= d
    count = max(1, min(count, n))
    return sorted({int(i * n / count) for i in range(count)})


def raster_rows(trace: DynamicsTrace, sample: int, per_layer: int) -> list[dict]:
    """One row per plotted neuron: layer, flat index, (channel, y, x), then ``s0 .. s{T-1}``."""
    rows = []
    for l, layer in enumerate(trace.spikes):
        seq = torch.stack([s[sample] for s in layer])  # (T, C, H, W)
        c, h, w = seq.shape[1:]
        flat = seq.reshape(seq.shape[0], -1)
        for i in raster_neurons((c, h, w), per_layer):
            row = {"layer": l, "neuron": i, "channel": i // (h * w), "y": (i // w) % h, "x": i % w}
            row.update({f"s{t}": int(flat[t, i].item()) for t in range(flat.shape[0])})
            rows.append(row)
    return rows


def plot_dynamics(trace: DynamicsTrace, raster: list[dict], out, input_frames: int) -> list:
    """``gains.png`` (STC only), ``rates.png`` and ``raster.png`` in ``out``; returns the written paths."""
    from stcsnn.analysis.common import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return []
    paths = []
    layers = len(trace.rates)
    if any(g is not None for g in trace.gains):
        fig, axes = plt.subplots(1, layers, figsize=(4.5 * layers, 3.6), squeeze=False)
        for l, g in enumerate(trace.gains):
            ax = axes[0, l]
            if g is None:
                ax.set_visible(False)
                continue
            for kind in GAINS:
                x = torch.stack(g[kind]).flatten().float().numpy()
                ax.hist(x, bins=50, range=(0, 2), histtype="step", density=True,
                        label=f"{kind}: 1 + tanh {'A' if kind == 'temporal' else 'B'}")
            ax.axvline(1.0, color="grey", lw=0.8, ls=":")
            ax.set_title(f"layer {l}")
            ax.set_xlabel("gain")
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
        fig.suptitle(f"{trace.neuron}: STC gains over neurons, samples and steps")
        fig.tight_layout()
        paths.append(save_figure(fig, out / "gains.png"))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for l, r in enumerate(trace.rates):
        ax.plot(range(len(r)), r, marker="o", ms=3, label=f"layer {l}")
    ax.axvline(input_frames - 0.5, color="grey", lw=0.8, ls=":")
    ax.text(input_frames - 0.5, 1.0, " own predictions ->", transform=ax.get_xaxis_transform(), fontsize=7,
            va="bottom")
    ax.set_xlabel("time step t")
    ax.set_ylabel("firing rate")
    ax.set_title(f"{trace.neuron}: firing rate per layer and step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "rates.png"))
    fig, axes = plt.subplots(1, layers, figsize=(4 * layers, 5), squeeze=False)
    for l in range(layers):
        rows = [r for r in raster if r["layer"] == l]
        steps = len(trace.rates[l])
        img = [[r[f"s{t}"] for t in range(steps)] for r in rows]
        ax = axes[0, l]
        ax.imshow(img, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1)
        ax.axvline(input_frames - 0.5, color="tab:red", lw=0.8, ls=":",
                   label="right of it: the model's own predictions as input")
        ax.set_title(f"layer {l} ({len(rows)} neurons)")
        ax.set_xlabel("time step t")
        ax.set_ylabel("neuron (evenly spaced subset)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.suptitle(f"{trace.neuron}: spike raster")
    fig.tight_layout()
    paths.append(save_figure(fig, out / "raster.png"))
    return paths
