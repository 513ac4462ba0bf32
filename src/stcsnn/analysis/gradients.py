r"""Gradients through time: the numerical side of the paper's gradient-vanishing analysis.

For a model (fresh and seeded, or trained: a checkpoint, or every cell of a finished ``stcsnn reproduce`` grid)
and a batch, one rollout (no scheduled sampling: after the inputs the model reads its own predictions) and the
training objective :func:`stcsnn.train.objective.rollout_loss` (``cfg.loss``), then:

The rollout runs the predictor's plain module path (``fast=False``: ``cell.synapse`` then ``cell.update``
every step, which gives the same numbers as the fused fast path) so that hooks see every step's current.

* ``grad_norm[l][t] = || dL / dV_l[t] ||_2``: the full backpropagation-through-time gradient of the loss with
  respect to layer ``l``'s membrane potential after step ``t`` (the state field the cell declares as
  ``cell.membrane``: ``v``; ``u`` for GLIF; the memory ``c`` for ConvLSTM), over the whole batch. ``V[T-1]``
  of the last step influences nothing, so its gradient is 0.
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

import math
from dataclasses import dataclass, field

import torch
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
    """The training objective on ``frames`` without scheduled sampling, on the plain path: ``(loss, rates)``."""
    from stcsnn.train.objective import rollout_loss as objective

    return objective(model, frames, cfg, observer=observer, fast=False)


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
    label: str = ""  # how plots and summaries name it (default: the neuron)

    @property
    def name(self) -> str:
        return self.label or self.neuron


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

    try:
        # the plain module path (cell.synapse + cell.update each step, the same numbers as the fast path) so
        # that the synapse hooks see every step's current
        with torch.enable_grad():
            loss, _ = rollout_loss(model, frames, cfg, observer)
    finally:
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


def compact(trace: GradientTrace, per_step: int = 1 << 15) -> GradientTrace:
    """``trace`` without its recorded states and currents and with each step's factors evenly subsampled to
    ``per_step`` values: enough for the pooled distributions, small enough to keep a whole grid in memory."""
    factors = [[None if f is None else f.flatten()[:: max(1, -(-f.numel() // per_step))].clone() for f in row]
               for row in trace.factors]
    return GradientTrace(trace.neuron, trace.membrane, trace.loss, trace.grad_norm, factors, [], [], trace.label)


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


def all_factors(trace: GradientTrace, limit: int = 1 << 20, layer: int | None = None) -> Tensor:
    """Every measured factor of the trace (steps >= 1; all layers or ``layer``), flattened, evenly subsampled
    to ``limit``."""
    rows = trace.factors if layer is None else trace.factors[layer:layer + 1]
    parts = [f.flatten() for row in rows for f in row if f is not None]
    x = torch.cat(parts) if parts else torch.empty(0)
    if x.numel() > limit:
        x = x[:: -(-x.numel() // limit)]
    return x.float().cpu()


Groups = dict[str, list[GradientTrace]]


def as_groups(traces: list[GradientTrace] | Groups) -> Groups:
    """``{name: [traces]}``: a list becomes one group per trace (by :attr:`GradientTrace.name`)."""
    if isinstance(traces, dict):
        return traces
    groups: Groups = {}
    for t in traces:
        groups.setdefault(t.name, []).append(t)
    return groups


def pooled_factors(traces: list[GradientTrace], layer: int | None = None, limit: int = 1 << 20) -> Tensor:
    """The factors of several traces (e.g. the seeds of one model) together, each subsampled to an equal share."""
    parts = [all_factors(t, limit // max(len(traces), 1), layer) for t in traces]
    return torch.cat(parts) if parts else torch.empty(0)


def histogram_rows(traces: list[GradientTrace] | Groups, bins: int = 80) -> tuple[list[dict], list[float]]:
    """Histogram of the factors of each group (a trace, or the seeds of one model pooled) on common bin edges:
    rows ``neuron, bin_lo, bin_hi, count, density`` and the edges."""
    data = {name: pooled_factors(ts) for name, ts in as_groups(traces).items()}
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


def factor_summary_rows(groups: Groups) -> list[dict]:
    """Per group and layer (and ``layer = all``): the distribution of the per-step factor pooled over the
    group's traces, the share above 1 and above 1/2 (LIF's bound), and the mean ``|dL/dV[0]|``."""
    rows = []
    for name, traces in groups.items():
        layers = len(traces[0].factors)
        for layer in [*range(layers), None]:
            x = pooled_factors(traces, layer)
            row = {"neuron": name, "traces": len(traces), "layer": "all" if layer is None else layer,
                   **summary(x, "factor"),
                   "factor_gt1": (x > 1).float().mean().item() if x.numel() else float("nan"),
                   "factor_gt_half": (x > 0.5).float().mean().item() if x.numel() else float("nan")}
            if layer is not None:
                row["grad_norm_step0_mean"] = sum(t.grad_norm[layer][0] for t in traces) / len(traces)
            rows.append(row)
    return rows


FIELDS = ["neuron", "layer", "step", "membrane", "grad_norm", "factor_mean", "factor_std", "factor_min",
          "factor_p05", "factor_median", "factor_p95", "factor_max", "factor_gt1"]


def plot_gradients(traces: list[GradientTrace] | Groups, hist_rows: list[dict], path, title: str | None = None):
    """Left: gradient norm over time (log scale), one colour per group, one line style per layer; a group of
    several traces (seeds) is drawn as its mean with a min-max band. Right: distribution of the per-step
    membrane factor per group. Returns ``path``, or None without matplotlib."""
    from stcsnn.analysis.common import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    groups = as_groups(traces)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, group) in enumerate(groups.items()):
        color = colors[i % len(colors)]
        for l in range(len(group[0].grad_norm)):
            series = [t.grad_norm[l] for t in group]
            steps = [s for s in range(len(series[0])) if all(x[s] > 0 for x in series)]
            mean = [sum(x[s] for x in series) / len(series) for s in steps]
            ax1.plot(steps, mean, styles[l % len(styles)], color=color, marker="o", ms=3,
                     label=f"{name} layer {l}" + (f" (mean of {len(group)})" if len(group) > 1 else ""))
            if len(group) > 1:
                ax1.fill_between(steps, [min(x[s] for x in series) for s in steps],
                                 [max(x[s] for x in series) for s in steps], color=color, alpha=0.15, lw=0)
        rows = [r for r in hist_rows if r["neuron"] == name]
        if rows:
            centers = [(r["bin_lo"] + r["bin_hi"]) / 2 for r in rows]
            ax2.plot(centers, [r["density"] for r in rows], color=color, label=name)
    ax1.set_yscale("log")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))  # time steps are whole numbers
    ax1.set_xlabel("time step t")
    ax1.set_ylabel(r"$\|\partial L / \partial V_l[t]\|_2$")
    ax1.set_title("loss gradient w.r.t. the membrane potential (BPTT)")
    ax1.legend(fontsize=7)
    # named in the legend, not by text at the top of the axes, where it ran into the title
    for x in (0.5, 1.0):
        ax2.axvline(x, color="grey", lw=0.8, ls=":", label="factor 1/2 (LIF's bound) and 1" if x == 0.5 else None)
    ax2.set_yscale("log")
    ax2.set_xlabel(r"per-step factor $\partial V[t] / \partial V[t-1]$ (membrane path)")
    ax2.set_ylabel("density")
    ax2.set_title("distribution over neurons, layers and steps")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return path


# ----------------------------------------------------------------------------------------- per-lag sensitivity
# How far back does a prediction depend on its input? For an autoregressive rollout (after the inputs the model
# reads its own predictions), the input-output Jacobian d x_hat[s] / d x[t] of output s (the prediction of frame
# s + 1) with respect to input frame t, at lag k = s + 1 - t, summarised by its Frobenius norm (mean over the
# batch of each sample's norm squared, then the root). A model that keeps information longer has a slower decay
# of this norm with k. ``lag_profile`` averages over the (t, s) pairs of each lag and also divides by the lag-1
# value, so that models with different output scales are comparable by the shape of their decay.


def lag_jacobian(model: nn.Module, inputs: Tensor, n_future: int, probes: int | None = None,
                 seed: int = 0) -> list[dict]:
    """Rows ``{input_t, output_s, lag, jac_norm}`` for every input frame t and output s >= t of a rollout of
    ``inputs`` (B, T_in, C, H, W) and ``n_future`` predicted frames.

    ``probes=None``: exact, one backward pass per output element (C*H*W per output frame: small frames only).
    ``probes=R``: Hutchinson's estimate ``||J||_F^2 = E ||J^T v||^2`` over R standard normal probes v per
    output frame (seeded), for real frame sizes."""
    model.eval()
    t_in = inputs.shape[1]
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        outputs = model.rollout(x, t_in, n_future).frames
        b, steps = outputs.shape[:2]
        gen = torch.Generator(device="cpu").manual_seed(seed)
        rows = []
        for s in range(steps):
            y = outputs[:, s].reshape(b, -1)
            if probes is None:
                directions = [torch.zeros_like(y).index_fill_(1, torch.tensor([j], device=y.device), 1.0)
                              for j in range(y.shape[1])]
            else:
                directions = [torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
                              for _ in range(probes)]
            squares = torch.zeros(t_in, dtype=torch.float64, device=x.device)
            for v in directions:
                (g,) = torch.autograd.grad(y, x, grad_outputs=v, retain_graph=True, allow_unused=True)
                if g is not None:
                    squares += g.double().square().sum(dim=(0, 2, 3, 4))
            squares = squares / (b * (1 if probes is None else probes))
            for t in range(min(s + 1, t_in)):
                rows.append({"input_t": t, "output_s": s, "lag": s + 1 - t, "jac_norm": squares[t].sqrt().item()})
    model.train()
    return rows


def lag_profile(rows: list[dict]) -> list[dict]:
    """Per lag k: the mean Jacobian norm over its (t, s) pairs, and that divided by the lag-1 mean."""
    by_lag: dict[int, list[float]] = {}
    for r in rows:
        by_lag.setdefault(r["lag"], []).append(r["jac_norm"])
    means = {k: sum(v) / len(v) for k, v in sorted(by_lag.items())}
    first = means.get(1, float("nan"))
    return [{"lag": k, "pairs": len(by_lag[k]), "jac_norm": m,
             "relative": m / first if first and first == first else float("nan")} for k, m in means.items()]


# ---------------------------------------------------------------------------------------------- per-lag, grids
#
# Over a grid (``analyze gradients --grid DIR --lags``) each cell gives two profiles: its trained weights and a
# fresh model of the same config and seed (the initialisation it started from). A profile is compared in log10
# of its relative norm (lag k over lag 1): a decay by a factor is a difference of logs, and the seeds' values are
# averaged there. Pairs (STC neuron - its base, same seed) are summarised with the paired t interval.

LAG_STATES = ("fresh", "trained")


def lag_summary_rows(rows: list[dict], confidence: float = 0.95) -> list[dict]:
    """Per (dataset, model, state, lag) over seeds: the mean of ``log10(relative)`` with its ``confidence`` t
    interval (NaN bounds for one seed) and the geometric-mean relative norm ``10 ** mean``. ``rows``: the cells'
    profile rows ``{dataset, model, seed, state, lag, relative, ...}``."""
    from stcsnn.analysis.stats import t_interval

    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["state"], r["lag"]), []).append(math.log10(r["relative"]))
    out = []
    for (d, m, state, lag), logs in groups.items():
        mean, low, high = t_interval(logs, confidence)
        out.append({"dataset": d, "model": m, "state": state, "lag": lag, "seeds": len(logs), "log10_relative": mean,
                    "ci_low": low, "ci_high": high, "relative_geomean": 10 ** mean})
    return out


def lag_pair_rows(rows: list[dict], pairs: list[tuple[str, str]], confidence: float = 0.95) -> list[dict]:
    """Per (dataset, STC neuron, its base, state, lag): the paired difference of ``log10(relative)`` (STC minus
    base, same seed) over the seeds both have, its mean, ``confidence`` t interval, paired t-test p and whether
    the interval excludes 0 (``shown``). Positive: the STC neuron's output depends relatively more on inputs
    that far back."""
    from stcsnn.analysis.stats import paired_summary

    value = {(r["dataset"], r["model"], r["seed"], r["state"], r["lag"]): math.log10(r["relative"]) for r in rows}
    out = []
    for d in dict.fromkeys(r["dataset"] for r in rows):
        for stc, base in pairs:
            for state in LAG_STATES:
                lags = sorted({k[4] for k in value if k[0] == d and k[1] == stc and k[3] == state})
                for lag in lags:
                    seeds = sorted(s for (dd, m, s, st, k) in value if (dd, m, st, k) == (d, stc, state, lag)
                                   and (d, base, s, state, lag) in value)
                    if len(seeds) < 2:
                        continue
                    diffs = [value[(d, stc, s, state, lag)] - value[(d, base, s, state, lag)] for s in seeds]
                    summary = paired_summary(diffs, confidence, n_boot=1000)
                    low, high = summary["ci_t"]
                    out.append({"dataset": d, "stc": stc, "base": base, "state": state, "lag": lag,
                                "seeds": len(seeds), "diff_log10": summary["mean"], "ci_low": low, "ci_high": high,
                                "p": summary["p_t"], "shown": low > 0 or high < 0})
    return out


def plot_lags(summary: list[dict], path, title: str):
    """Relative Jacobian norm against the lag, per model: trained solid, fresh dashed, a 95% t band (log scale)."""
    from stcsnn.analysis.common import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    models = list(dict.fromkeys(r["model"] for r in summary))
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for m in models:
        for state, style in (("trained", "-"), ("fresh", "--")):
            rs = sorted((r for r in summary if r["model"] == m and r["state"] == state), key=lambda r: r["lag"])
            if not rs:
                continue
            x = [r["lag"] for r in rs]
            ax.plot(x, [r["relative_geomean"] for r in rs], style, marker="o", ms=2.5, color=colors[m],
                    label=f"{m} ({state})")
            if all(math.isfinite(r["ci_low"]) for r in rs):
                ax.fill_between(x, [10 ** r["ci_low"] for r in rs], [10 ** r["ci_high"] for r in rs],
                                color=colors[m], alpha=0.12, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("lag k (frames between the input and the prediction)")
    ax.set_ylabel("|d x_hat[t+k] / d x[t]|, relative to lag 1")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
