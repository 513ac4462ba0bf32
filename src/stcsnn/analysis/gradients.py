r"""Gradients through time: the numerical side of the paper's gradient-vanishing analysis.

For a model and a batch, one rollout (no scheduled sampling: after the inputs the model reads its own
predictions) and the training loss (MSE over the output frames, ``cfg.loss``), then:

The rollout runs the predictor's plain module path (``fast=False``: ``cell.synapse`` then ``cell.update``
every step, which gives the same numbers as the fused fast path) so that hooks see every step's current.

* ``grad_norm[l][t] = || dL / dV_l[t] ||_2``: the full backpropagation-through-time gradient of the loss with
  respect to layer ``l``'s membrane potential after step ``t`` (the state field ``v``; ``u`` for GLIF; the
  memory ``c`` for ConvLSTM), over the whole batch. ``V[T-1]`` of the last step influences nothing, so its
  gradient is 0.
* ``factor[l][t] = dV_l[t] / dV_l[t-1]``, elementwise, along the membrane path: the update of step ``t`` is
  replayed with its input current ``I[t]`` and the previous spikes ``S[t-1]`` (hence the STC pathway signals
  ``A[t], B[t]``) held fixed and only ``V[t-1]`` free, and differentiated by autograd. For LIF
  (``H = V/2 + I/2, S = Theta(H - 1), V = H - S``) it is ``0.5 (1 - phi'(H[t] - 1))`` with ``phi'`` the
  surrogate derivative, at most 1/2; for STC-LIF ``(1 + tanh A[t]) (1 - phi'(H[t] - 1))``, up to 2.
  Each factor equals the one inside the real computation graph (same operations on the same values).

A product of factors < 1 over many steps is a vanishing gradient; factors that can exceed 1 let the
gradient reach further back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcsnn.analysis.common import summary
from stcsnn.errors import StcsnnError


def membrane_field(cell: nn.Module) -> str:
    """The state field a cell declares as its membrane potential (``cell.membrane``, see the cell contract)."""
    name = getattr(cell, "membrane", None)
    if name not in cell.State._fields:
        raise StcsnnError(f"{type(cell).__name__} declares membrane field {name!r}, but its state has "
                          f"{', '.join(cell.State._fields)}")
    return name


def rollout_loss(model: nn.Module, frames: Tensor, cfg, observer=None) -> tuple[Tensor, Tensor]:
    """The training objective on ``frames`` without scheduled sampling: ``(loss, rates)``."""
    out = model.rollout(frames, cfg.input_frames, cfg.output_frames, observer=observer)
    pred, target = out.frames, frames[:, 1:cfg.input_frames + cfg.output_frames]
    if cfg.loss == "future":
        pred, target = pred[:, cfg.input_frames - 1:], target[:, cfg.input_frames - 1:]
    return F.mse_loss(pred.float(), target), out.rates


@dataclass
class GradientTrace:
    """Per layer and step: membrane gradient norms and (elementwise) temporal factors; ``None`` at step 0."""

    neuron: str
    membrane: str
    loss: float
    grad_norm: list[list[float]]
    factors: list[list[Tensor | None]] = field(repr=False)
    states: list[list[tuple]] = field(repr=False)
    currents: list[list[Tensor]] = field(repr=False)


class _CurrentRecorder:
    """Forward hook on a cell's synapse: the input current of every step, in time order (splits the
    predictor's time-batched calls of B*T frames back into T steps)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.steps: list[Tensor] = []

    def __call__(self, module: nn.Module, inputs, output: Tensor) -> None:
        out = output.detach()
        k = out.shape[0] // self.batch
        out = out.reshape(self.batch, k, *out.shape[1:])
        self.steps.extend(out[:, j] for j in range(k))


def trace_gradients(model: nn.Module, frames: Tensor, cfg, neuron: str | None = None) -> GradientTrace:
    """Run the rollout and measure gradient norms and per-step temporal factors (see the module docstring)."""
    cells = list(model.cells)
    fields = [membrane_field(c) for c in cells]
    states: list[list[tuple]] = [[] for _ in cells]
    recorders = [_CurrentRecorder(frames.shape[0]) for _ in cells]
    handles = [c.synapse.register_forward_hook(r) for c, r in zip(cells, recorders)]

    def observer(t: int, layer: int, spikes: Tensor, state) -> None:
        states[layer].append(state)

    fast = getattr(model, "fast", None)
    try:
        # the plain module path (``fast=False``: cell.synapse + cell.update each step, the same numbers as the
        # fast path) so that the synapse hooks see every step's current
        model.fast = False
        with torch.enable_grad():
            loss, _ = rollout_loss(model, frames, cfg, observer)
    finally:
        model.fast = fast
        for h in handles:
            h.remove()
    steps = len(states[0])
    mems = [getattr(s, f) for layer, f in zip(states, fields) for s in layer]
    wanted = [m for m in mems if m.requires_grad]
    if not wanted:
        raise StcsnnError("the membrane potentials do not require gradients (parameters frozen?)")
    grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    norms = []
    for m in mems:
        g = next(grads) if m.requires_grad else None
        norms.append(0.0 if g is None else g.norm().item())
    grad_norm = [norms[l * steps:(l + 1) * steps] for l in range(len(cells))]
    detached = [[type(s)(*(x.detach() for x in s)) for s in layer] for layer in states]
    factors: list[list[Tensor | None]] = []
    for l, cell in enumerate(cells):
        currents = recorders[l].steps
        if len(currents) != steps:
            raise RuntimeError(f"recorded {len(currents)} currents for {steps} steps in layer {l}")
        row: list[Tensor | None] = [None]
        for t in range(1, steps):
            row.append(step_factor(cell, currents[t], detached[l][t - 1], fields[l], detached[l][t]))
        factors.append(row)
    return GradientTrace(neuron or getattr(model, "neuron", "?"), fields[0], loss.item(), grad_norm, factors,
                         detached, [r.steps for r in recorders])


def step_factor(cell: nn.Module, current: Tensor, prev, membrane: str, expected=None) -> Tensor:
    """Elementwise ``d membrane[t] / d membrane[t-1]`` of ``cell.update(current, prev)`` with everything but the
    previous membrane held fixed. ``expected`` (the recorded new state) checks the replay is faithful."""
    with torch.enable_grad():
        leaf = getattr(prev, membrane).detach().requires_grad_(True)
        _, new = cell.update(current, prev._replace(**{membrane: leaf}))
        out = getattr(new, membrane)
        (g,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
    if expected is not None and not torch.allclose(out.detach(), getattr(expected, membrane), atol=1e-5, rtol=1e-4):
        raise RuntimeError(f"replaying {type(cell).__name__}.update did not reproduce the recorded state")
    return torch.zeros_like(leaf) if g is None else g.detach()


def gradient_rows(trace: GradientTrace) -> list[dict]:
    """One row per (layer, step): gradient norm and the distribution of the temporal factor."""
    rows = []
    for l, (norms, factors) in enumerate(zip(trace.grad_norm, trace.factors)):
        for t, (norm, factor) in enumerate(zip(norms, factors)):
            row = {"neuron": trace.neuron, "layer": l, "step": t, "membrane": trace.membrane, "grad_norm": norm}
            if factor is None:
                row.update(summary(torch.empty(0), "factor"))
                row["factor_gt1"] = float("nan")
            else:
                row.update(summary(factor, "factor"))
                row["factor_gt1"] = (factor > 1).float().mean().item()
            rows.append(row)
    return rows


def all_factors(trace: GradientTrace, limit: int = 1 << 20) -> Tensor:
    """Every measured factor of the trace (steps >= 1, all layers), flattened, evenly subsampled to ``limit``."""
    parts = [f.flatten() for row in trace.factors for f in row if f is not None]
    x = torch.cat(parts) if parts else torch.empty(0)
    if x.numel() > limit:
        x = x[:: -(-x.numel() // limit)]
    return x.float().cpu()


def histogram_rows(traces: list[GradientTrace], bins: int = 80) -> tuple[list[dict], list[float]]:
    """Histogram of the factors of each trace on common bin edges: rows ``neuron, bin_lo, bin_hi, count,
    density`` and the edges."""
    data = {t.neuron: all_factors(t) for t in traces}
    values = [x for x in data.values() if x.numel()]
    lo = min([0.0] + [x.min().item() for x in values])
    hi = max([2.0] + [x.max().item() for x in values])
    edges = torch.linspace(lo, hi, bins + 1)
    rows = []
    for name, x in data.items():
        counts = torch.histc(x, bins=bins, min=lo, max=hi) if x.numel() else torch.zeros(bins)
        width = (hi - lo) / bins
        total = max(x.numel(), 1)
        for i in range(bins):
            rows.append({"neuron": name, "bin_lo": edges[i].item(), "bin_hi": edges[i + 1].item(),
                         "count": int(counts[i].item()), "density": counts[i].item() / total / width})
    return rows, edges.tolist()


FIELDS = ["neuron", "layer", "step", "membrane", "grad_norm", "factor_mean", "factor_std", "factor_min",
          "factor_p05", "factor_median", "factor_p95", "factor_max", "factor_gt1"]


def plot_gradients(traces: list[GradientTrace], hist_rows: list[dict], path) -> None:
    """Left: gradient norm over time (log scale), one colour per neuron, one line style per layer.
    Right: distribution of the per-step temporal factor per neuron."""
    from stcsnn.analysis.common import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, trace in enumerate(traces):
        color = colors[i % len(colors)]
        for l, norms in enumerate(trace.grad_norm):
            steps = [t for t, g in enumerate(norms) if g > 0]
            ax1.plot(steps, [norms[t] for t in steps], styles[l % len(styles)], color=color, marker="o", ms=3,
                     label=f"{trace.neuron} layer {l}")
        rows = [r for r in hist_rows if r["neuron"] == trace.neuron]
        if rows:
            centers = [(r["bin_lo"] + r["bin_hi"]) / 2 for r in rows]
            ax2.plot(centers, [r["density"] for r in rows], color=color, label=trace.neuron)
    ax1.set_yscale("log")
    ax1.set_xlabel("time step t")
    ax1.set_ylabel(r"$\|\partial L / \partial V_l[t]\|_2$")
    ax1.set_title("loss gradient w.r.t. the membrane potential (BPTT)")
    ax1.legend(fontsize=7)
    for x, label in ((0.5, "1/2"), (1.0, "1")):
        ax2.axvline(x, color="grey", lw=0.8, ls=":")
        ax2.text(x, 1.0, label, transform=ax2.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    ax2.set_yscale("log")
    ax2.set_xlabel(r"per-step factor $\partial V[t] / \partial V[t-1]$ (membrane path)")
    ax2.set_ylabel("density")
    ax2.set_title("distribution over neurons, layers and steps")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path
