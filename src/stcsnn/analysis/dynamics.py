r"""Inside the neurons: learned STC gains, firing rates over time, spike rasters.

One rollout without scheduled sampling (inference). For each layer and step ``t``:

* STC neurons: the temporal gain ``1 + tanh A[t]`` (scales the carried-over membrane) and the spatial gain
  ``1 + tanh B[t]`` (scales the input current), both computed from the previous spikes ``S[t-1]`` exactly as
  the neuron does (``cell.autapse(S[t-1])``, zeros at t = 0); distributions over neurons and samples.
* firing rate: the mean of the spikes over the batch and the neurons.
* a raster of one sample: a fixed, evenly spaced subset of each layer's neurons (channel, y, x) over time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
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


@torch.no_grad()
def trace_dynamics(model: nn.Module, frames: Tensor, cfg) -> DynamicsTrace:
    cells = list(model.cells)
    if any(is_ann(c) for c in cells):
        raise StcsnnError(f"{model.neuron} is an ANN baseline: it has no spikes or STC gains to analyse")
    spikes: list[list[Tensor]] = [[] for _ in cells]

    def observer(t: int, layer: int, s: Tensor, state) -> None:
        spikes[layer].append(s.detach())

    was_training = model.training
    model.eval()
    try:
        model.rollout(frames, cfg.input_frames, cfg.output_frames, observer=observer)
    finally:
        model.train(was_training)
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
    return DynamicsTrace(model.neuron, rates, gains, spikes)


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
        ax.axvline(input_frames - 0.5, color="tab:red", lw=0.8, ls=":")  # after this: the model's own predictions
        ax.set_title(f"layer {l} ({len(rows)} neurons)")
        ax.set_xlabel("time step t")
        ax.set_ylabel("neuron (evenly spaced subset)")
    fig.suptitle(f"{trace.neuron}: spike raster")
    fig.tight_layout()
    paths.append(save_figure(fig, out / "raster.png"))
    return paths
