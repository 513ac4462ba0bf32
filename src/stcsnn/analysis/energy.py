"""Operation counts and an energy estimate, measured on the real forward pass.

Every ``nn.Conv2d`` of the model gets a forward hook; a real rollout (``model.rollout``, no scheduled sampling:
the inference the model is deployed for) on real data then records, per convolution and per call, the number
of frames it processed, the dense multiply-accumulates (``k_h k_w C_in/groups C_out H_out W_out`` per frame)
and the number of nonzero input elements. Nothing is typed in by hand: a call the predictor makes time-batched
(the prefix of input frames) counts its B*T frames, a call per step counts B.

* **MACs**: the dense count of every convolution, as the same network run as an ANN would execute it.
* **SOPs** (synaptic operations) = MACs x input firing rate, for the calls whose input is spikes (every value
  in {0, 1}): an accumulate happens only where a spike arrives. This is the SNN literature's estimate; it
  ignores that zero padding makes border spikes fan out to fewer outputs.
* Counted as MACs whatever their input: the first layer's synapse (the real-valued frame, or the model's own
  real-valued prediction once it runs autoregressively), the readout (a convention of this project, although
  it reads the last layer's spikes), every convolution of an ANN cell (ConvLSTM), and any call whose input is
  not binary.
* **Energy** (45 nm, Horowitz 2014): ``E_SNN = 4.6 pJ x (MACs counted as MACs) + 0.9 pJ x SOPs``; the same
  network as an ANN: ``E_ANN = 4.6 pJ x all MACs``.

Not counted (in neither estimate): GroupNorm, the neuron updates (leak, gains, tanh/sigmoid, threshold,
reset: elementwise, listed as ``neuron_updates`` for reference; note that the STC gains are real
multiplications per neuron and step), the LSTM gate nonlinearities and products, memory access and data
movement, which often dominate real hardware. Numbers are per sequence (one sample of ``input_frames +
output_frames - 1`` steps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from stcsnn.analysis.common import is_ann

E_AC_PJ = 0.9  # pJ per accumulate (32-bit float add, 45 nm; Horowitz 2014)
E_MAC_PJ = 4.6  # pJ per multiply-accumulate (32-bit float mult + add, 45 nm; Horowitz 2014)

NOTES = (
    "MACs: dense multiply-accumulates of every nn.Conv2d, counted by forward hooks on a real rollout",
    "SOPs = MACs x input firing rate, for convolution calls whose input is binary spikes",
    "counted as MACs: the first layer's synapse (real-valued frames), the readout (by convention), "
    "ANN cells, any non-binary input",
    f"E_SNN = {E_MAC_PJ} pJ x MACs(real inputs) + {E_AC_PJ} pJ x SOPs; E_ANN = {E_MAC_PJ} pJ x all MACs "
    "(45 nm, Horowitz 2014)",
    "not counted: GroupNorm, neuron updates (gains, leak, threshold, reset), LSTM gate nonlinearities, "
    "memory access",
    "all counts are per sequence (one sample)",
)


@dataclass
class ConvCount:
    """Counts of one convolution, summed over every call of the measured rollouts (not yet per sample)."""

    module: str
    layer: str
    role: str
    in_channels: int
    out_channels: int
    kernel: str
    groups: int
    params: int
    forced_mac: bool
    calls: int = 0
    frames: int = 0
    macs: int = 0
    spike_macs: int = 0  # MACs of calls whose input was binary (and not forced to MACs)
    input_elements: int = 0
    input_nonzero: int = 0
    sops: float = 0.0

    @property
    def input_rate(self) -> float:
        return self.input_nonzero / self.input_elements if self.input_elements else float("nan")

    @property
    def mac_ops(self) -> int:
        """MACs that stay multiply-accumulates in the SNN (real-valued inputs)."""
        return self.macs - self.spike_macs

    def hook(self, module: nn.Conv2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        x = inputs[0].detach()
        n = x.shape[0]
        kh, kw = module.kernel_size
        per_frame = output.shape[-2] * output.shape[-1] * module.out_channels * \
            (module.in_channels // module.groups) * kh * kw
        macs = n * per_frame
        nonzero = int(torch.count_nonzero(x))
        self.calls += 1
        self.frames += n
        self.macs += macs
        self.input_elements += x.numel()
        self.input_nonzero += nonzero
        if not self.forced_mac and bool(((x == 0) | (x == 1)).all()):
            self.spike_macs += macs
            self.sops += macs * nonzero / x.numel()


@dataclass
class EnergyReport:
    """Per-convolution and per-layer counts, per sequence."""

    samples: int
    steps: int
    convs: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    total: dict[str, Any]
    constants: dict[str, float] = field(default_factory=lambda: {"E_AC_pJ": E_AC_PJ, "E_MAC_pJ": E_MAC_PJ})
    notes: tuple[str, ...] = NOTES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _layer_of(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "cells" and len(parts) > 1:
        return f"layer {parts[1]}"
    return parts[0]


def _role_of(name: str) -> str:
    for role in ("autapse", "recurrent", "synapse", "readout"):
        if role in name.split("."):
            return role
    return "conv"


def _energy(mac_ops: float, sops: float, macs: float) -> dict[str, float]:
    return {"energy_snn_pj": E_MAC_PJ * mac_ops + E_AC_PJ * sops, "energy_ann_pj": E_MAC_PJ * macs}


def _hook_convolutions(model: nn.Module) -> tuple[list[ConvCount], list[Any]]:
    """A :class:`ConvCount` hooked on every ``nn.Conv2d`` of ``model``, and the hooks' handles."""
    forced: set[int] = {id(m) for m in model.readout.modules()} | {id(m) for m in model.cells[0].synapse.modules()}
    if is_ann(model):
        for cell in model.cells:
            forced |= {id(m) for m in cell.modules()}
    counts: list[ConvCount] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            c = ConvCount(name, _layer_of(name), _role_of(name), module.in_channels, module.out_channels,
                          "x".join(str(k) for k in module.kernel_size), module.groups,
                          sum(p.numel() for p in module.parameters()), id(module) in forced)
            counts.append(c)
            handles.append(module.register_forward_hook(c.hook))
    return counts, handles


def _run_rollouts(model: nn.Module, batches: list[Tensor], input_frames: int, n_future: int,
                  handles: list[Any]) -> tuple[int, list[int]]:
    """Roll ``model`` out (in eval mode) on every batch; ``(samples, neuron updates per layer)``. The hooks are
    removed and the model's training mode restored afterwards, whatever happens."""
    updates = [0] * len(model.cells)

    def observer(t: int, layer: int, spikes: Tensor, state) -> None:
        updates[layer] += spikes.numel()

    was_training = model.training
    model.eval()
    samples = 0
    try:
        for frames in batches:
            model.rollout(frames, input_frames, n_future, observer=observer)
            samples += frames.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return samples, updates


def _conv_rows(counts: list[ConvCount], samples: int) -> list[dict[str, Any]]:
    """One row per convolution, per sequence: MACs, input rate, AC/MAC kind, SOPs and energies."""
    rows = []
    for c in counts:
        row = {"layer": c.layer, "module": c.module, "role": c.role, "in_channels": c.in_channels,
               "out_channels": c.out_channels, "kernel": c.kernel, "groups": c.groups, "params": c.params,
               "calls": c.calls, "frames_per_sample": c.frames / samples, "macs": c.macs / samples,
               "input_rate": c.input_rate, "op": "MAC" if c.spike_macs == 0 else
               ("AC" if c.spike_macs == c.macs else "AC+MAC"),
               "mac_ops": c.mac_ops / samples, "sops": c.sops / samples}
        row.update(_energy(row["mac_ops"], row["sops"], row["macs"]))
        rows.append(row)
    return rows


def _layer_rows(model: nn.Module, counts: list[ConvCount], conv_rows: list[dict[str, Any]], updates: list[int],
                samples: int) -> list[dict[str, Any]]:
    """One row per layer (each cell, then the readout): its convolutions summed, its parameters, the firing
    rate its convolutions receive and its neuron updates, per sequence."""
    layer_rows = []
    names = [f"layer {l}" for l in range(len(model.cells))] + ["readout"]
    modules = list(model.cells) + [model.readout]
    for l, (name, module) in enumerate(zip(names, modules)):
        rows = [r for r in conv_rows if r["layer"] == name]
        elems = sum(c.input_elements for c in counts if c.layer == name and not c.forced_mac)
        nonzero = sum(c.input_nonzero for c in counts if c.layer == name and not c.forced_mac)
        row = {"layer": name, "params": sum(p.numel() for p in module.parameters()),
               "macs": sum(r["macs"] for r in rows), "mac_ops": sum(r["mac_ops"] for r in rows),
               "sops": sum(r["sops"] for r in rows),
               # firing rate of the spikes this layer's convolutions receive (spiking inputs only)
               "input_rate": nonzero / elems if elems else float("nan"),
               "neuron_updates": updates[l] / samples if l < len(updates) else 0.0}
        row.update(_energy(row["mac_ops"], row["sops"], row["macs"]))
        layer_rows.append(row)
    return layer_rows


@torch.no_grad()
def count_operations(model: nn.Module, batches: list[Tensor], input_frames: int, n_future: int) -> EnergyReport:
    """Hook every ``nn.Conv2d`` of ``model`` (a :class:`~stcsnn.models.SpikingPredictor`), run a real rollout
    on each batch of frames ``(B, T, C, H, W)`` and return the counts per sequence."""
    counts, handles = _hook_convolutions(model)
    samples, updates = _run_rollouts(model, batches, input_frames, n_future, handles)
    if samples == 0:
        from stcsnn.errors import StcsnnError

        raise StcsnnError("no data to count operations on (empty split?)")
    conv_rows = _conv_rows(counts, samples)
    layer_rows = _layer_rows(model, counts, conv_rows, updates, samples)
    total = {"layer": "total", "params": sum(p.numel() for p in model.parameters()),
             **{k: sum(r[k] for r in layer_rows) for k in ("macs", "mac_ops", "sops", "neuron_updates",
                                                             "energy_snn_pj", "energy_ann_pj")}}
    return EnergyReport(samples, input_frames + n_future - 1, conv_rows, layer_rows, total)


def format_table(report: EnergyReport) -> str:
    """A fixed-width table: one row per convolution, a subtotal per layer, the total."""
    head = (f"{'layer':<9} {'module':<26} {'op':<6} {'params':>9} {'MACs':>12} {'in rate':>8} {'SOPs':>12} "
            f"{'E_SNN uJ':>10} {'E_ANN uJ':>10}")
    lines = [head, "-" * len(head)]

    def fmt(layer: str, module: str, op: str, params: float, macs: float, rate: float, sops: float,
            e_snn: float, e_ann: float) -> str:
        rate_s = "-" if rate != rate else f"{rate:.4f}"
        return (f"{layer:<9} {module:<26} {op:<6} {int(params):>9,d} {macs:>12.4g} {rate_s:>8} {sops:>12.4g} "
                f"{e_snn / 1e6:>10.4g} {e_ann / 1e6:>10.4g}")

    for lrow in report.layers:
        for r in (r for r in report.convs if r["layer"] == lrow["layer"]):
            lines.append(fmt(r["layer"], r["module"], r["op"], r["params"], r["macs"], r["input_rate"], r["sops"],
                             r["energy_snn_pj"], r["energy_ann_pj"]))
        lines.append(fmt(lrow["layer"], "(layer, all parameters)", "", lrow["params"], lrow["macs"],
                         lrow["input_rate"], lrow["sops"], lrow["energy_snn_pj"], lrow["energy_ann_pj"]))
    t = report.total
    lines.append("-" * len(head))
    lines.append(fmt("total", "", "", t["params"], t["macs"], float("nan"), t["sops"], t["energy_snn_pj"],
                     t["energy_ann_pj"]))
    ratio = t["energy_ann_pj"] / t["energy_snn_pj"] if t["energy_snn_pj"] else float("inf")
    lines.append(f"per sequence of {report.steps} steps, averaged over {report.samples} samples; "
                 f"E_ANN / E_SNN = {ratio:.3g}")
    return "\n".join(lines)
