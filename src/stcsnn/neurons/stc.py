"""The Spatio-Temporal Circuit (STC): two autaptic pathways driven by the neuron's own previous spikes.

.. math::
    A[t] = \\mathrm{GN}(W_h * \\tilde S[t-1]),\\qquad B[t] = \\mathrm{GN}(W_v * \\tilde S[t-1])

``W_h`` (temporal pathway) and ``W_v`` (spatial pathway) are k x k convolutions C -> C with 16 groups and no
bias, each followed by GroupNorm(16); ``S~ = sg(S)`` when ``gradient_detach`` is on, else ``S``.
The temporal gain ``1 + tanh A[t]`` scales the membrane carried over from the past, the spatial gain
``1 + tanh B[t]`` scales the input current; both lie in (0, 2).

STC is one mechanism, the wrapper :class:`STC`: the paper's neurons are registered compositions of it
(``stc_lif = STC(IF)``, ``stc_plif = STC(PLIF)``, ``stc_lmh = STC(LMH)``, and ``stc_glif``, ``stc_tclif``), and
any neuron following the cell contract gets the circuit with ``STC(MyNeuron(...))``.

Both pathways read the same spikes, so they are computed as **one** grouped convolution C -> 2C (16 groups,
group g producing ``[W_h, W_v]``'s outputs of that group) followed by GroupNorm(32): mathematically identical
to the two separate pathways, about twice as fast. :func:`fuse_pathways` / :func:`split_pathways` convert
between the fused parameters and the separate ``(W_h, GN_h, W_v, GN_v)`` of the reference implementation.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from stcsnn.errors import StcsnnError
from stcsnn.neurons.base import GROUPS, Cell, check_channels, gain
from stcsnn.neurons.glif import GLIF
from stcsnn.neurons.lif import IF, PLIF
from stcsnn.neurons.lmh import LMH
from stcsnn.neurons.registry import add_stc
from stcsnn.neurons.tclif import TCLIF

#: ``pathways`` option of every STC neuron: which autaptic pathways exist. An absent pathway's gain is fixed at
#: 1 (its signal 0) and its convolution is not built: the ablations that say what each pathway contributes.
PATHWAYS = ("both", "temporal", "spatial")
#: ``temporal_gain`` option of every STC neuron: interventions on the temporal pathway that test *why* it helps.
#: ``capped``: G_A = min(1 + tanh A, 1) (the carried-over membrane can only shrink, never grow: A -> min(A, 0));
#: ``detached``: the forward pass unchanged, no gradient through A (the pathway still gates, it is not learned
#: through its effect on the membrane). ``free`` (default): the paper's.
TEMPORAL_GAIN = ("free", "capped", "detached")

#: the autapse's kernel for spikes with ``dims`` dimensions after (B, C), as a 2-D kernel over the (B, C, H, W)
#: view a neuron layer steps in ((B, C) -> (B, C, 1, 1), (B, C, L) -> (B, C, L, 1)): 1 x 1 is a grouped linear
#: map, k x 1 a grouped conv1d with same padding, k x k the paper's conv2d
AUTAPSE_KERNELS = {0: lambda k: (1, 1), 1: lambda k: (k, 1), 2: lambda k: (k, k)}


class Autapse(nn.Module):
    """The two STC pathways, fused: ``(1 + tanh A[t], 1 + tanh B[t]) = autapse(S[t-1])``. ``dims``: the spikes'
    dimensions after (B, C) (2: the conv cells'; see :data:`AUTAPSE_KERNELS`). ``pathways``: ``both``, or only
    the ``temporal`` (A) or ``spatial`` (B) one (:data:`PATHWAYS`): the other's signal is 0, its gain exactly 1,
    and its convolution and GroupNorm are not built (GroupNorm(32) over the fused 2C channels normalises each
    pathway's groups on their own, so one pathway alone is the same computation with GroupNorm(16))."""

    def __init__(self, channels: int, kernel_size: int = 5, gradient_detach: bool = False, dims: int = 2,
                 pathways: str = "both", temporal_gain: str = "free") -> None:
        super().__init__()
        check_channels(channels, GROUPS, "hidden_channels")
        if dims not in AUTAPSE_KERNELS:
            raise StcsnnError(f"dims must be 0 (B, C), 1 (B, C, L) or 2 (B, C, H, W), got {dims!r}")
        if pathways not in PATHWAYS:
            raise StcsnnError(f"neuron option 'pathways' must be one of {', '.join(PATHWAYS)}, got {pathways!r}")
        if temporal_gain not in TEMPORAL_GAIN:
            raise StcsnnError(f"neuron option 'temporal_gain' must be one of {', '.join(TEMPORAL_GAIN)}, got "
                              f"{temporal_gain!r}")
        self.temporal_gain = temporal_gain
        self.channels = channels
        self.gradient_detach = gradient_detach
        self.dims = dims
        self.kept = pathways
        kernel = AUTAPSE_KERNELS[dims](kernel_size)
        n = 2 if pathways == "both" else 1
        self.conv = nn.Conv2d(channels, n * channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2),
                              groups=GROUPS, bias=False)
        self.norm = nn.GroupNorm(n * GROUPS, n * channels)

    def signals(self, prev_spike: Tensor, conv=None, norm=None) -> Tensor:
        """Both pathways' normalised signals before tanh, fused: ``GN32(W * S~[t-1])`` (B, 2C, H, W), conv group g
        holding ``[A of group g, B of group g]``. ``conv(module, x)`` and ``norm(module, x)``, if given, run the
        convolution and the GroupNorm (the predictor passes channels-last ones)."""
        if self.gradient_detach:
            prev_spike = prev_spike.detach()
        y = self.conv(prev_spike) if conv is None else conv(self.conv, prev_spike)
        y = self.norm(y) if norm is None else norm(self.norm, y)
        if self.kept == "both" and self.temporal_gain == "free":
            return y
        # the fused layout, conv group g holding [A of group g, B of group g]; one pathway: the other's signal 0
        b, _, h, w = y.shape
        m = self.channels // GROUPS
        if self.kept == "both":
            parts = y.reshape(b, GROUPS, 2, m, h, w)
            a, s = parts[:, :, :1], parts[:, :, 1:]
        else:
            one = y.reshape(b, GROUPS, 1, m, h, w)
            a, s = (one, torch.zeros_like(one)) if self.kept == "temporal" else (torch.zeros_like(one), one)
        if self.temporal_gain == "capped":
            a = a.clamp(max=0.0)  # tanh is increasing: 1 + tanh(min(A, 0)) = min(1 + tanh A, 1)
        elif self.temporal_gain == "detached":
            a = a.detach()
        return torch.cat((a, s), 2).reshape(b, 2 * self.channels, h, w)

    def pathways(self, prev_spike: Tensor) -> tuple[Tensor, Tensor]:
        """The normalised pathway signals ``(A[t], B[t])`` (before tanh), each (B, C, H, W)."""
        out = self.signals(prev_spike)
        b, _, h, w = out.shape
        out = out.view(b, GROUPS, 2, self.channels // GROUPS, h, w)
        return out[:, :, 0].reshape(b, self.channels, h, w), out[:, :, 1].reshape(b, self.channels, h, w)

    def forward(self, prev_spike: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.pathways(prev_spike)
        return 1.0 + torch.tanh(a), 1.0 + torch.tanh(b)


def fuse_pathways(w_h: Tensor, w_v: Tensor, norm_h: tuple[Tensor, Tensor], norm_v: tuple[Tensor, Tensor]
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Separate pathway parameters -> ``(conv.weight, norm.weight, norm.bias)`` of :class:`Autapse`."""
    c = w_h.shape[0]
    m = c // GROUPS
    weight = torch.stack([w_h.reshape(GROUPS, m, *w_h.shape[1:]), w_v.reshape(GROUPS, m, *w_v.shape[1:])], 1)
    gn = [torch.stack([h.reshape(GROUPS, m), v.reshape(GROUPS, m)], 1).reshape(2 * c) for h, v in zip(norm_h, norm_v)]
    return weight.reshape(2 * c, *w_h.shape[1:]), gn[0], gn[1]


def split_pathways(autapse: Autapse) -> dict[str, Tensor]:
    """Fused :class:`Autapse` parameters -> ``{w_h, w_v, norm_h_weight, norm_h_bias, norm_v_weight, ...}``."""
    c, m = autapse.channels, autapse.channels // GROUPS
    w = autapse.conv.weight.reshape(GROUPS, 2, m, *autapse.conv.weight.shape[1:])
    out = {"w_h": w[:, 0].reshape(c, *w.shape[3:]), "w_v": w[:, 1].reshape(c, *w.shape[3:])}
    for kind in ("weight", "bias"):
        p = getattr(autapse.norm, kind).reshape(GROUPS, 2, m)
        out[f"norm_h_{kind}"] = p[:, 0].reshape(c)
        out[f"norm_v_{kind}"] = p[:, 1].reshape(c)
    return out


class STC(Cell):
    """Generic STC: ``STC(base)`` adds the autaptic pathways to any neuron following the cell contract.

    .. math::
        (G_A, G_B) = (1 + \\tanh A[t],\\ 1 + \\tanh B[t]) = \\mathrm{autapse}(S[t-1]),\\qquad
        S[t], \\mathrm{state}[t] = \\mathrm{base.update}(I[t], \\mathrm{state}[t-1], G_A, G_B)

    ``base.update(current, state, temporal_gain, spatial_gain)`` must scale its carried-over membrane term by
    ``temporal_gain`` and its input current by ``spatial_gain``, and ``state.s`` must be the previous spikes
    (see :mod:`stcsnn.neurons.base`). State: the base neuron's. Parameters: the base's (under ``base.``) and
    the autapse's. Checkpoints written before STC-LIF/PLIF/LM-H were compositions (their base parameters at
    the top level) load unchanged.
    """

    options = ("gradient_detach", "pathways", "temporal_gain")

    def __init__(self, base: Cell, gradient_detach: bool = False, dims: int = 2, pathways: str = "both",
                 temporal_gain: str = "free") -> None:
        super().__init__()
        self.base = base
        self.in_channels = base.in_channels
        self.hidden_channels = base.hidden_channels
        self.kernel_size = base.kernel_size
        self.State = base.State
        self.membrane = base.membrane
        self.autapse = Autapse(base.hidden_channels, base.kernel_size, gradient_detach, dims, pathways, temporal_gain)
        self._register_load_state_dict_pre_hook(_nest_base_keys, with_module=True)

    @property
    def synapse(self) -> nn.Module:  # type: ignore[override]
        return self.base.synapse

    @property
    def spike_fn(self) -> nn.Module:  # type: ignore[override]
        return self.base.spike_fn

    def init_state(self, current):
        return self.base.init_state(current)

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        g_a, g_b = self.autapse(state.s)
        return self.base.update(current, state, gain(g_a, temporal_gain), gain(g_b, spatial_gain))

    def fused_update(self, current, state, pathways):
        """The base's fused update with ``pathways = autapse.signals(S[t-1])`` (computed by the caller)."""
        return self.base.fused_update(current, state, pathways)

    def has_fused_update(self) -> bool:
        return "update" not in vars(self) and type(self).update is STC.update and self.base.has_fused_update()


def _nest_base_keys(module: STC, state_dict: dict, prefix: str, *args) -> None:
    """Old layout (``synapse.*``, ``w``, ... beside ``autapse.*``) -> ``base.*``, in place."""
    own = [k for k in state_dict if k.startswith(prefix)]
    if any(k.startswith(prefix + "base.") for k in own):
        return
    for key in own:
        rest = key[len(prefix):]
        if not rest.startswith("autapse."):
            state_dict[prefix + "base." + rest] = state_dict.pop(key)


def register_stc(name: str, base: type, description: str, base_name: str | None = None,
                 pathways: str = "both", temporal_gain: str = "free") -> None:
    """Register ``STC(base(...))`` under ``name``: the STC circuit around a registered or any cell class. ``base_name``:
    the registered name of ``base`` (default: the plain neuron registered with that class), the neuron ``stcsnn
    reproduce`` compares it with; ``pathways``: the default of its ``pathways`` option (a registered ablation
    keeps one pathway, so that a grid can name it as a model); ``temporal_gain``: the default of that option (a
    registered intervention caps or detaches it). The calling module is recorded as the neuron's (a plugin that
    wraps a built-in neuron defines the composition, not the built-in module)."""
    if pathways not in PATHWAYS:
        raise StcsnnError(f"register_stc({name!r}): pathways must be one of {', '.join(PATHWAYS)}, got {pathways!r}")
    if temporal_gain not in TEMPORAL_GAIN:
        raise StcsnnError(f"register_stc({name!r}): temporal_gain must be one of {', '.join(TEMPORAL_GAIN)}, got "
                          f"{temporal_gain!r}")
    add_stc(name, base, description, STC, base_name, sys._getframe(1).f_globals.get("__name__"), pathways,
            temporal_gain)


register_stc("stc_lif", IF, "STC-LIF: autaptic temporal and spatial gains on an IF neuron (the paper)")
register_stc("stc_plif", PLIF, "STC-PLIF: the STC circuit on a parametric LIF")
register_stc("stc_lmh", LMH, "STC-LM-H: the STC circuit on an LM-H neuron")
register_stc("stc_glif", GLIF, "STC-GLIF: the STC circuit on GLIF")
register_stc("stc_tclif", TCLIF, "STC-TC-LIF: the STC circuit on TC-LIF")
# the pathway ablations of the paper's neuron (any STC neuron takes neuron_options: {pathways: ...})
register_stc("stc_lif_temporal", IF, "STC-LIF ablation: the temporal pathway only (spatial gain fixed at 1)",
             pathways="temporal")
register_stc("stc_lif_spatial", IF, "STC-LIF ablation: the spatial pathway only (temporal gain fixed at 1)",
             pathways="spatial")
# the interventions on STC-LIF's temporal gain (any STC neuron takes neuron_options: {temporal_gain: ...})
register_stc("stc_lif_capped", IF, "STC-LIF intervention: temporal gain capped at 1 (the membrane never grows)",
             temporal_gain="capped")
register_stc("stc_lif_detached", IF, "STC-LIF intervention: no gradient through the temporal gain (forward same)",
             temporal_gain="detached")

__all__ = ["PATHWAYS", "TEMPORAL_GAIN", "Autapse", "STC", "fuse_pathways", "register_stc", "split_pathways"]
