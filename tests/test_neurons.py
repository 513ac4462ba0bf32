"""The neuron library: trajectories, equations, options and bad input.

The expected values are computed *independently* of the code under test:

* literal trajectories worked out by hand (1x1 spatial input: GroupNorm of a single value per group is 0, so
  the synaptic current is exactly the GroupNorm bias, and every step is a few scalar operations);
* a plain-torch reference of every equation of the issue (``ref_*`` below), built from ``F.conv2d`` and a
  hand-written group norm, with its own surrogate spike function; trajectories on random inputs and fixed
  weights are compared step by step, and so are the gradients of a loss over all steps w.r.t. every
  parameter and the input (this checks the stop-gradients and the reset gradient too).

The STC pathways of the reference are two *separate* grouped convolutions (16 groups) each followed by
GroupNorm(16), taken out of the fused ``Autapse`` parameters with an index map written from the documented
layout (conv group g produces ``[W_h outputs of group g, W_v outputs of group g]``), independently of
``split_pathways``/``fuse_pathways`` (which ``test_stc.py`` checks against the same map).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stcsnn.errors import StcsnnError
from stcsnn.neurons import (
    GLIF,
    IF,
    LIF,
    LMH,
    PLIF,
    STC,
    TCLIF,
    GLIFState,
    MembraneState,
    TwoCompartmentState,
    build_neuron,
    get_spec,
    list_neurons,
)

DT = torch.float64
ALL_NAMES = ("if", "lif", "plif", "glif", "tclif", "lmh",
             "stc_lif", "stc_plif", "stc_lmh", "stc_glif", "stc_tclif")
BASE_OF = {"stc_lif": "if", "stc_plif": "plif", "stc_lmh": "lmh", "stc_glif": "glif", "stc_tclif": "tclif"}
FIELDS = {"if": ("v", "s"), "lif": ("v", "s"), "plif": ("v", "s"), "glif": ("u", "s"),
          "tclif": ("d", "v", "s"), "lmh": ("d", "v", "s")}
GATES = ("alpha", "beta", "gamma")



# ------------------------------------------------------------------------------------------------ reference


class RefSpike(torch.autograd.Function):
    """Heaviside forward; backward: sigmoid(alpha=4) derivative, or rectangle of width 1 (GLIF)."""

    @staticmethod
    def forward(ctx, x, kind, strict):
        ctx.save_for_backward(x)
        ctx.kind = kind
        return ((x > 0) if strict else (x >= 0)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.kind == "sigmoid":
            sg = torch.sigmoid(4.0 * x)
            d = 4.0 * sg * (1.0 - sg)
        else:
            d = (x.abs() < 0.5).to(x.dtype)
        return grad * d, None, None


def ref_spike(x, kind="sigmoid", strict=False):
    return RefSpike.apply(x, kind, strict)


def ref_group_norm(x, groups, weight, bias, eps=1e-5):
    b, c, h, w = x.shape
    xg = x.reshape(b, groups, -1)
    mean = xg.mean(-1, keepdim=True)
    var = ((xg - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as GroupNorm
    y = ((xg - mean) / torch.sqrt(var + eps)).reshape(b, c, h, w)
    return y * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def ref_current(x, P):
    """I[t] = GN16(Wx * X[t]), same padding, no bias."""
    w = P["synapse.conv.weight"]
    y = F.conv2d(x, w, padding=w.shape[-1] // 2)
    return ref_group_norm(y, 16, P["synapse.norm.weight"], P["synapse.norm.bias"])


def pathway_index(channels):
    """Rows of the fused C -> 2C conv (and its GroupNorm(32)) belonging to W_h and W_v (documented layout)."""
    m = channels // 16
    idx_h = [g * 2 * m + j for g in range(16) for j in range(m)]
    idx_v = [g * 2 * m + m + j for g in range(16) for j in range(m)]
    return idx_h, idx_v


def ref_pathways(prev_s, P):
    """A[t], B[t]: two separate grouped convs (16 groups) C -> C, each followed by GroupNorm(16)."""
    w = P["autapse.conv.weight"]
    idx_h, idx_v = pathway_index(w.shape[0] // 2)
    out = []
    for idx in (idx_h, idx_v):
        y = F.conv2d(prev_s, w[idx], padding=w.shape[-1] // 2, groups=16)
        out.append(ref_group_norm(y, 16, P["autapse.norm.weight"][idx], P["autapse.norm.bias"][idx]))
    return out[0], out[1]


def ref_gains(prev_s, P):
    a, b = ref_pathways(prev_s, P)
    return 1.0 + torch.tanh(a), 1.0 + torch.tanh(b)


def mul(x, g):
    return x if g is None else x * g


def fire_soft(h):
    s = ref_spike(h - 1.0)
    return s, {"v": h - s, "s": s}


def step_if(I, st, P, ga, gb, **_):
    return fire_soft(mul(st["v"], ga) + mul(I, gb))


def step_lif(I, st, P, ga, gb, **_):
    return fire_soft(0.5 * mul(st["v"], ga) + 0.5 * mul(I, gb))


def step_plif(I, st, P, ga, gb, input_gain="sigmoid", **_):
    k = torch.sigmoid(P["w"])
    g_in = 1.0 - k if input_gain == "sigmoid" else 1.0 - P["w"]
    return fire_soft(k * mul(st["v"], ga) + g_in * mul(I, gb))


def step_glif(I, st, P, ga, gb, train_gates=False, **_):
    def c(n):
        raw = P[n] if (train_gates or n not in GATES) else P[n].detach()
        return torch.sigmoid(raw).view(1, -1, 1, 1)

    alpha, beta, gamma, tau, v_th, leak, cond, v_reset = (
        c(n) for n in ("alpha", "beta", "gamma", "tau", "v_th", "leak", "conduct", "v_reset"))
    i_prime = I * (1.0 - beta * (1.0 - cond))
    u = (mul((1.0 - alpha * (1.0 - tau)) * st["u"] * (1.0 - gamma * st["s"]), ga)
         - (1.0 - alpha) * leak + mul(i_prime, gb) - (1.0 - gamma) * v_reset * st["s"])
    s = ref_spike(u - v_th, kind="rectangle", strict=True)
    return s, {"u": u, "s": s}


def step_tclif(I, st, P, ga, gb, detach_reset=True, **_):
    sp = st["s"].detach() if detach_reset else st["s"]
    d = st["d"] - torch.sigmoid(P["s_u"]) * st["v"] + mul(I, gb) - P["gamma"] * sp
    v = mul(st["v"], ga) + torch.sigmoid(P["s_p"]) * d - sp
    s = ref_spike(v - 1.0)
    return s, {"d": d, "v": v, "s": s}


def step_lmh(I, st, P, ga, gb, detach_reset=True, **_):
    d = (torch.sigmoid(P["d_u"]) - 0.5) * st["d"] + (torch.sigmoid(P["s_u"]) - 0.5) * st["v"] + mul(I, gb)
    h = (torch.sigmoid(P["d_p"]) + 0.5) * d + (torch.sigmoid(P["s_p"]) + 0.5) * mul(st["v"], ga)
    s = ref_spike(h - 1.0)
    return s, {"d": d, "v": h - (s.detach() if detach_reset else s), "s": s}


STEP = {"if": step_if, "lif": step_lif, "plif": step_plif, "glif": step_glif, "tclif": step_tclif,
        "lmh": step_lmh}


def ref_run(name, P, xs, gradient_detach=False, **opts):
    """Reference trajectory [(S[t], {field: value}), ...] of the named neuron."""
    base = BASE_OF.get(name, name)
    st, out = None, []
    for x in xs:
        I = ref_current(x, P)
        if st is None:
            st = {f: torch.zeros_like(I) for f in FIELDS[base]}
        ga = gb = None
        if name in BASE_OF:
            ga, gb = ref_gains(st["s"].detach() if gradient_detach else st["s"], P)
        s, st = STEP[base](I, st, P, ga, gb, **opts)
        out.append((s, st))
    return out


# ------------------------------------------------------------------------------------------------ helpers


def named_params(cell):
    """Canonical name (without the generic wrapper's ``base.``) -> Parameter."""
    return {n.removeprefix("base."): p for n, p in cell.named_parameters()}


def randomize(cell, seed=0):
    """Fixed, non-initial weights: random convs, GroupNorm affine != (1, 0), scalars moved off their init."""
    g = torch.Generator().manual_seed(seed)

    def rnd(p):
        return torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)

    with torch.no_grad():
        for n, p in named_params(cell).items():
            if n.endswith("conv.weight"):
                p.copy_(0.6 * rnd(p))
            elif n.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * rnd(p))
            elif n == "synapse.norm.bias":
                p.copy_(0.6 + 0.4 * rnd(p))
            elif n.endswith("norm.bias"):
                p.copy_(0.3 * rnd(p))
            elif n == "w":  # PLIF: k = sigmoid(-0.4) ~ 0.40, input gain 0.60 (sigmoid) or 1.4 (raw)
                p.fill_(-0.4)
            else:
                p.add_(0.5 * rnd(p))
    return cell


def make(name, hidden=16, in_channels=2, kernel_size=3, seed=0, **opts):
    return randomize(build_neuron(name, in_channels, hidden, kernel_size, **opts).to(DT), seed)


def run_cell(cell, xs):
    state, out = None, []
    for x in xs:
        s, state = cell(x, state)
        out.append((s, state))
    return out


def weighted_loss(traj, seed=1):
    """sum over steps of <R, S[t]> + <R', every state field>, R fixed random weights."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for s, st in traj:
        items = st._asdict().items() if hasattr(st, "_asdict") else st.items()
        for t in [s] + [v for _, v in items]:
            total = total + (t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
    return total


def inputs(T=3, B=2, C=2, H=4, W=4, seed=3, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(B, C, H, W, generator=g, dtype=DT) for _ in range(T)]


# variants: (name, options); STC neurons use 32 hidden channels so the pathway layout (2 channels a group)
# matters, and are run with and without gradient_detach
CASES = [
    ("if", {}), ("lif", {}), ("plif", {}), ("plif", {"input_gain": "raw"}), ("glif", {}),
    ("glif", {"train_gates": True}), ("tclif", {}), ("tclif", {"detach_reset": False}), ("lmh", {}),
    ("lmh", {"detach_reset": False}),
    ("stc_lif", {}), ("stc_lif", {"gradient_detach": True}), ("stc_plif", {}),
    ("stc_plif", {"input_gain": "raw", "gradient_detach": True}), ("stc_lmh", {}),
    ("stc_lmh", {"gradient_detach": True}), ("stc_lmh", {"detach_reset": False}), ("stc_glif", {}),
    ("stc_glif", {"gradient_detach": True}),
    ("stc_tclif", {}), ("stc_tclif", {"gradient_detach": True}), ("stc_tclif", {"detach_reset": False}),
]


def case_id(case):
    name, opts = case
    return name + "".join(f"-{k}={v}" for k, v in opts.items())


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lists_every_neuron():
    names = [n for n, _ in list_neurons()]
    assert set(ALL_NAMES) <= set(names)  # plus any ANN baseline cells (convlstm)
    assert all(desc.strip() for _, desc in list_neurons())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_registered_name_builds_and_steps(name):
    cell = build_neuron(name, 3, 16, 3)
    x = torch.rand(2, 3, 5, 7)
    s, state = cell(x)
    assert s.shape == (2, 16, 5, 7) and s.dtype == torch.float32
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    base = BASE_OF.get(name, name)
    assert type(state)._fields == FIELDS[base]
    assert all(t.shape == (2, 16, 5, 7) for t in state)
    s2, state2 = cell(x, state)  # and the state carries over
    assert type(state2) is type(state)


def test_registry_classes():
    expected = {"if": IF, "lif": LIF, "plif": PLIF, "glif": GLIF, "tclif": TCLIF, "lmh": LMH}
    for name, cls in expected.items():
        assert type(build_neuron(name, 1, 16, 3)) is cls
    # every STC neuron is the one STC mechanism around its base neuron (the paper's STC-LIF: around IF)
    for name, cls in (("stc_lif", IF), ("stc_plif", PLIF), ("stc_lmh", LMH), ("stc_glif", GLIF),
                      ("stc_tclif", TCLIF)):
        cell = build_neuron(name, 1, 16, 3)
        assert type(cell) is STC and type(cell.base) is cls
        assert get_spec(name).is_stc


def test_unknown_neuron_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_neuron("stc_foo", 1, 16, 3)
    msg = str(err.value)
    assert "stc_foo" in msg
    for name in ALL_NAMES:
        assert re.search(rf"\b{name}\b", msg), name


@pytest.mark.parametrize("name, option", [
    ("lif", "gradient_detach"), ("if", "input_gain"), ("glif", "gradient_detach"), ("plif", "train_gates"),
    ("tclif", "input_gain"), ("stc_lif", "train_gates"), ("stc_lmh", "input_gain"), ("lmh", "bogus")])
def test_option_the_neuron_lacks_is_an_error(name, option):
    with pytest.raises(ValueError) as err:
        build_neuron(name, 1, 16, 3, **{option: True})
    assert option in str(err.value) and name in str(err.value)


def test_valid_options_are_applied():
    cell = build_neuron("stc_glif", 1, 16, 3, gradient_detach=True, train_gates=True)
    assert cell.autapse.gradient_detach and cell.base.train_gates
    cell = build_neuron("stc_plif", 1, 16, 3, input_gain="raw", gradient_detach=True)
    assert cell.base.input_gain == "raw" and cell.autapse.gradient_detach
    cell = build_neuron("lif", 1, 16, 3, surrogate="triangle", alpha=0.5)
    assert cell.spike_fn.name == "triangle" and cell.spike_fn.alpha == 0.5
    assert not build_neuron("stc_lif", 1, 16, 3).autapse.gradient_detach  # default off


@pytest.mark.parametrize("hidden, kernel", [(24, 3), (0, 3), (16, 4)])
def test_bad_sizes_rejected(hidden, kernel):
    with pytest.raises(ValueError) as err:
        build_neuron("lif", 1, hidden, kernel)
    assert str(hidden if kernel == 3 else kernel) in str(err.value)


def test_plif_rejects_unknown_input_gain():
    with pytest.raises(ValueError, match="input_gain"):
        build_neuron("plif", 1, 16, 3, input_gain="linear")


# ------------------------------------------------------------------------------------------------ init values


def test_initial_values():
    for name in ("plif", "stc_plif"):
        assert getattr(build_neuron(name, 1, 16, 3), "base", build_neuron(name, 1, 16, 3)).w.item() == 0.0
    tc = build_neuron("tclif", 1, 16, 3)
    assert [getattr(tc, n).item() for n in ("gamma", "s_u", "s_p")] == [0.0, 0.0, 0.0]
    for name in ("lmh", "stc_lmh"):
        cell = build_neuron(name, 1, 16, 3)
        cell = getattr(cell, "base", cell)  # STC(LMH): the base neuron holds the scalars
        assert [getattr(cell, n).item() for n in ("d_u", "s_u", "d_p", "s_p")] == [0.0] * 4
    glif = build_neuron("glif", 1, 32, 3)
    init = {"alpha": 0.55, "beta": 0.65, "gamma": 0.55, "tau": 0.25, "v_th": 0.5, "leak": 0.0625,
            "conduct": 0.5, "v_reset": 0.5}
    for n, v in init.items():
        p = getattr(glif, n)
        assert p.shape == (32,)
        torch.testing.assert_close(torch.sigmoid(p), torch.full((32,), v), rtol=0, atol=1e-6)
    assert glif.spike_fn.name == "rectangle" and glif.spike_fn.alpha == 1.0 and glif.spike_fn.strict
    assert build_neuron("lif", 1, 16, 3).spike_fn.name == "sigmoid"
    assert build_neuron("lif", 1, 16, 3).spike_fn.alpha == 4.0
    assert not build_neuron("lif", 1, 16, 3).spike_fn.strict
    syn = build_neuron("lif", 3, 32, 5).synapse
    assert syn.conv.weight.shape == (32, 3, 5, 5) and syn.conv.bias is None and syn.conv.padding == (2, 2)
    assert syn.norm.num_groups == 16 and syn.norm.affine


# -------------------------------------------------------------------------------------------- hand-computed

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25
# GLIF's initial values, set in float64 (its float32 logits are only 1e-8 accurate)
GLIF_INIT = {n: math.log(v / (1.0 - v)) for n, v in {
    "alpha": 0.55, "beta": 0.65, "gamma": 0.55, "tau": 0.25, "v_th": 0.5, "leak": 0.0625, "conduct": 0.5,
    "v_reset": 0.5}.items()}
TEMPORAL, SPATIAL = 0.5, 1.2  # the STC gains 1 + tanh(A), 1 + tanh(B) set through the autapse GN biases

# name, options, parameters to set, constant current c, expected {field: [t1, t2, t3]} (incl. spikes "s")
HAND = [
    # IF, c = 0.4: H = 0.4, 0.8, 1.2 -> spike at t3, V = H - S
    ("if", {}, {}, 0.4, {"s": [0, 0, 1], "v": [0.4, 0.8, 0.2]}),
    # LIF, c = 1.2: H = 0.6, 0.3 + 0.6 = 0.9, 0.45 + 0.6 = 1.05
    ("lif", {}, {}, 1.2, {"s": [0, 0, 1], "v": [0.6, 0.9, 0.05]}),
    # PLIF w = -ln3: k = 0.25, g_in = 0.75; c = 1.2: H = 0.9, 0.225 + 0.9 = 1.125, 0.03125 + 0.9 = 0.93125
    ("plif", {}, {"w": -LN3}, 1.2, {"s": [0, 1, 0], "v": [0.9, 0.125, 0.93125]}),
    # PLIF raw: g_in = 1 - w = 1 + ln3; c = 0.4: H1 = 0.4 (1 + ln3) = 0.839444915467244,
    # H2 = 0.25 H1 + H1 = 1.049306144334055 (spike), H3 = 0.25 * 0.049306144334055 + H1
    ("plif", {"input_gain": "raw"}, {"w": -LN3}, 0.4,
     {"s": [0, 1, 0], "v": [0.839444915467244, 0.049306144334055, 0.8517714515507578]}),
    # GLIF at its init, c = 0.8: I' = 0.8 (1 - 0.65 * 0.5) = 0.54, decay 1 - 0.55 * 0.75 = 0.5875,
    # leak term 0.45 * 0.0625 = 0.028125, reset term 0.45 * 0.5 = 0.225, gamma S = 0.55 S:
    # U1 = 0.54 - 0.028125 = 0.511875 > 0.5 (spike); U2 = 0.5875 * 0.511875 * 0.45 + 0.511875 - 0.225
    # = 0.422201953125 (no spike); U3 = 0.5875 * 0.422201953125 + 0.511875 = 0.7599186474609375 (spike)
    ("glif", {}, GLIF_INIT, 0.8, {"s": [1, 0, 1], "u": [0.511875, 0.422201953125, 0.7599186474609375]}),
    # TC-LIF, gamma = 0.5, sigmoid(s_u) = sigmoid(s_p) = 0.5, c = 1:
    # D1 = 1, V1 = 0.5; D2 = 1 - 0.25 + 1 = 1.75, V2 = 0.5 + 0.875 = 1.375 (spike);
    # D3 = 1.75 - 0.6875 + 1 - 0.5 = 1.5625, V3 = 1.375 + 0.78125 - 1 = 1.15625 (spike)
    ("tclif", {}, {"gamma": 0.5}, 1.0,
     {"s": [0, 1, 1], "d": [1.0, 1.75, 1.5625], "v": [0.5, 1.375, 1.15625]}),
    # LM-H, d_u = ln3 (0.25), s_u = -ln3 (-0.25), d_p = 0 (1), s_p = ln3 (1.25), c = 0.6:
    # D1 = 0.6, H1 = 0.6; D2 = 0.15 - 0.15 + 0.6 = 0.6, H2 = 0.6 + 0.75 = 1.35 (spike), V2 = 0.35;
    # D3 = 0.15 - 0.0875 + 0.6 = 0.6625, H3 = 0.6625 + 0.4375 = 1.1 (spike), V3 = 0.1
    ("lmh", {}, {"d_u": LN3, "s_u": -LN3, "s_p": LN3}, 0.6,
     {"s": [0, 1, 1], "d": [0.6, 0.6, 0.6625], "v": [0.6, 0.35, 0.1]}),
    # STC-LIF with gains (0.5, 1.2), c = 0.5: H = 0.6, 0.3 + 0.6, 0.45 + 0.6 = 1.05
    ("stc_lif", {}, {}, 0.5, {"s": [0, 0, 1], "v": [0.6, 0.9, 0.05]}),
    # STC-PLIF w = -ln3 (k = 0.25, g_in = 0.75), gains (0.5, 1.2), c = 1: H1 = 0.75 * 1.2 = 0.9,
    # H2 = 0.25 * 0.9 * 0.5 + 0.9 = 1.0125 (spike), H3 = 0.25 * 0.0125 * 0.5 + 0.9 = 0.9015625
    ("stc_plif", {}, {"w": -LN3}, 1.0, {"s": [0, 1, 0], "v": [0.9, 0.0125, 0.9015625]}),
    # STC-LM-H at init (D = I * 1.2 = 0.6, H = D + 0.5 V[t-1]), c = 0.5: H = 0.6, 0.9, 1.05 (spike)
    ("stc_lmh", {}, {}, 0.5, {"s": [0, 0, 1], "d": [0.6, 0.6, 0.6], "v": [0.6, 0.9, 0.05]}),
    # STC-TC-LIF at init (gamma = 0), gains (0.5, 1.2) on V[t-1] (soma) and I, c = 1:
    # D1 = 1.2, V1 = 0.6; D2 = 1.2 - 0.3 + 1.2 = 2.1, V2 = 0.3 + 1.05 = 1.35 (spike);
    # D3 = 2.1 - 0.675 + 1.2 = 2.625, V3 = 0.675 + 1.3125 - 1 = 0.9875
    ("stc_tclif", {}, {}, 1.0, {"s": [0, 1, 0], "d": [1.2, 2.1, 2.625], "v": [0.6, 1.35, 0.9875]}),
]


@pytest.mark.parametrize("name, opts, params, c, expected", HAND, ids=[f"{h[0]}-{h[1]}" for h in HAND])
def test_hand_computed_trajectory(name, opts, params, c, expected):
    """1x1 input: the conv output is normalised away, so I[t] = the synapse GroupNorm bias = c exactly
    (batch of 2: GroupNorm refuses a single value per channel in training mode)."""
    cell = build_neuron(name, 1, 16, 1, **opts).to(DT)
    P = named_params(cell)
    with torch.no_grad():
        P["synapse.conv.weight"].fill_(0.7)
        P["synapse.norm.weight"].fill_(1.3)
        P["synapse.norm.bias"].fill_(c)
        for n, v in params.items():
            P[n].fill_(v)
        if "autapse.norm.bias" in P:  # documented layout: even rows W_h (temporal), odd rows W_v (spatial)
            P["autapse.norm.bias"][0::2] = math.atanh(TEMPORAL - 1.0)
            P["autapse.norm.bias"][1::2] = math.atanh(SPATIAL - 1.0)
    xs = [torch.tensor([v, -v], dtype=DT).view(2, 1, 1, 1) for v in (0.3, -2.0, 5.0)]  # irrelevant to I
    traj = run_cell(cell, xs)
    for t, (s, st) in enumerate(traj):
        values = {"s": s, **st._asdict()}
        for field, exp in expected.items():
            torch.testing.assert_close(values[field], torch.full((2, 16, 1, 1), float(exp[t]), dtype=DT),
                                       rtol=0, atol=1e-12, msg=f"{name} t={t + 1} {field}")


# ------------------------------------------------------------------------------------------------ reference


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_trajectory_and_gradients_match_reference(case):
    name, opts = case
    hidden = 32 if name.startswith("stc_") else 16
    cell = make(name, hidden=hidden, **opts)
    xs = inputs()
    xs_cell = [x.clone().requires_grad_(True) for x in xs]
    xs_ref = [x.clone().requires_grad_(True) for x in xs]
    P = {n: p.detach().clone().requires_grad_(True) for n, p in named_params(cell).items()}

    traj = run_cell(cell, xs_cell)
    ref = ref_run(name, P, xs_ref, **opts)
    base = BASE_OF.get(name, name)
    spikes = torch.stack([s for s, _ in traj])
    assert 0.05 < spikes.mean().item() < 0.95, "the trajectory must contain spikes and silences"
    for t, ((s, st), (rs, rst)) in enumerate(zip(traj, ref)):
        assert type(st)._fields == FIELDS[base]
        assert torch.equal(s, rs), f"spikes differ at step {t + 1}"
        for f in FIELDS[base]:
            torch.testing.assert_close(getattr(st, f), rst[f], rtol=0, atol=1e-12, msg=f"{f} at step {t + 1}")

    weighted_loss(traj).backward()
    weighted_loss([(s, st) for s, st in ref]).backward()
    for n, p in named_params(cell).items():
        if P[n].grad is None:
            assert p.grad is None or not p.grad.any(), f"{n} should get no gradient"
        else:
            assert p.grad is not None, f"{n} got no gradient"
            torch.testing.assert_close(p.grad, P[n].grad, rtol=1e-9, atol=1e-10, msg=f"grad of {n}")
    for xc, xr in zip(xs_cell, xs_ref):
        torch.testing.assert_close(xc.grad, xr.grad, rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradients_reach_every_parameter(case):
    name, opts = case
    cell = make(name, **opts)
    x0 = inputs()[0].requires_grad_(True)
    xs = [x0] + inputs(seed=4)[1:]
    weighted_loss(run_cell(cell, xs)).backward()
    frozen = GATES if (BASE_OF.get(name, name) == "glif" and not opts.get("train_gates")) else ()
    for n, p in named_params(cell).items():
        if n in frozen:
            assert p.grad is None or not p.grad.any(), f"GLIF gate {n} must be frozen by default"
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {n}"
    assert x0.grad.abs().sum() > 0
    expected = {"synapse.conv.weight", "synapse.norm.weight", "synapse.norm.bias"}
    if name.startswith("stc_"):
        expected |= {"autapse.conv.weight", "autapse.norm.weight", "autapse.norm.bias"}
    assert expected <= set(named_params(cell))


def test_glif_gates_train_only_when_asked():
    for train in (False, True):
        for name in ("glif", "stc_glif"):
            cell = make(name, train_gates=train)
            weighted_loss(run_cell(cell, inputs())).backward()
            for gname in GATES:
                g = named_params(cell)[gname].grad
                assert (g is not None and g.abs().sum() > 0) == train, (name, gname, train)
            for other in ("tau", "v_th", "leak", "conduct", "v_reset"):
                assert named_params(cell)[other].grad.abs().sum() > 0


def zero_state(cell, shape, **values):
    fields = cell.State._fields
    return cell.State(*[values.get(f, torch.zeros(shape, dtype=DT)) for f in fields])


def test_soft_reset_gradient_flows_for_lif_family():
    """V = H - S with the gradient through S: dV/dI = dH/dI * (1 - sigma'(H - 1))."""
    shape = (1, 16, 1, 4)
    current = torch.tensor([0.5, 1.8, 2.0, 2.6], dtype=DT).expand(shape).clone().requires_grad_(True)
    for name, dh_di in (("if", 1.0), ("lif", 0.5), ("plif", 0.5)):
        cell = build_neuron(name, 1, 16, 1).to(DT)
        s, st = cell.update(current, zero_state(cell, shape))
        (g,) = torch.autograd.grad(st.v.sum(), current)
        h = dh_di * current.detach()
        sig = torch.sigmoid(4.0 * (h - 1.0))
        torch.testing.assert_close(g, dh_di * (1.0 - 4.0 * sig * (1.0 - sig)), rtol=1e-12, atol=1e-14)


def test_lmh_reset_is_stop_gradient():
    """LM-H: V[t] = H - sg(S[t]), so dV/dI = sigmoid(d_p) + 0.5 exactly, spike or not."""
    shape = (1, 16, 1, 4)
    cell = build_neuron("lmh", 1, 16, 1).to(DT)
    with torch.no_grad():
        cell.d_p.fill_(0.3)
    current = torch.tensor([0.2, 0.9, 1.0, 3.0], dtype=DT).expand(shape).clone().requires_grad_(True)
    s, st = cell.update(current, zero_state(cell, shape))
    assert s.sum() > 0 and (s == 0).any()
    (g,) = torch.autograd.grad(st.v.sum(), current, retain_graph=True)
    torch.testing.assert_close(g, torch.full(shape, 1.0 / (1.0 + math.exp(-0.3)) + 0.5, dtype=DT),
                               rtol=1e-14, atol=0)
    (gs,) = torch.autograd.grad(s.sum(), current)  # the spike itself still has its surrogate gradient
    assert gs.abs().sum() > 0


def test_lmh_without_detached_reset_trains_like_if_at_its_initial_couplings():
    """At d_u = s_u = d_p = s_p = 0, LM-H's forward is IF's (D = I, H = D + V). With ``detach_reset=False`` its
    gradients are IF's too (IF's own code, lif.py, is the reference); the default stop-gradient reset changes
    them: the only difference between the two LM-H runs is the backward through the reset."""
    xs = inputs()
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(x.shape[0], 16, *x.shape[2:], generator=g, dtype=DT) for x in xs]

    def train_step(cell):  # a loss on the spikes alone (the two neurons' states differ in fields)
        traj = run_cell(cell, [x.clone() for x in xs])
        spikes = torch.stack([s for s, _ in traj])
        assert 0.05 < spikes.mean().item() < 0.95
        sum((w * s).sum() for w, (s, _) in zip(weights, traj)).backward()
        return spikes.detach(), cell.synapse.conv.weight.grad

    ref = make("if")
    ref_spikes, want = train_step(ref)
    grads = {}
    for detach in (True, False):
        cell = make("lmh", detach_reset=detach)
        cell.load_state_dict({**cell.state_dict(), **ref.state_dict()})
        with torch.no_grad():
            for p in (cell.d_u, cell.s_u, cell.d_p, cell.s_p):
                p.zero_()
        spikes, grads[detach] = train_step(cell)
        assert torch.equal(spikes, ref_spikes)
    torch.testing.assert_close(grads[False], want, rtol=1e-9, atol=1e-12)
    assert (grads[True] - want).abs().max() > 1e-3 * want.abs().max()


@pytest.mark.parametrize("name", ["lmh", "tclif", "stc_lmh", "stc_tclif"])
def test_detach_reset_must_be_a_bool(name):
    with pytest.raises(StcsnnError, match="detach_reset must be true or false, got 'no'"):
        build_neuron(name, 1, 16, 1, detach_reset="no")


def test_tclif_previous_spike_is_stop_gradient():
    shape = (1, 16, 2, 2)
    cell = build_neuron("tclif", 1, 16, 1).to(DT)
    with torch.no_grad():
        cell.gamma.fill_(0.5)
    prev_s = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=DT).view(1, 1, 2, 2).expand(shape).clone()
    prev_s.requires_grad_(True)
    d0 = torch.full(shape, 0.3, dtype=DT)
    v0 = torch.full(shape, 0.8, dtype=DT, requires_grad=True)
    current = torch.full(shape, 0.4, dtype=DT)
    s, st = cell.update(current, TwoCompartmentState(d0, v0, prev_s))
    # values do depend on S[t-1]: D -= gamma S, V -= S + sigmoid(s_p) gamma S = 1.25 S
    torch.testing.assert_close(st.d, 0.3 - 0.5 * 0.8 + 0.4 - 0.5 * prev_s.detach())
    torch.testing.assert_close(st.v, 0.8 + 0.5 * (0.3 - 0.4 + 0.4 - 0.5 * prev_s.detach()) - prev_s.detach())
    g_s, g_v = torch.autograd.grad(st.d.sum() + st.v.sum() + s.sum(), (prev_s, v0), allow_unused=True)
    assert g_s is None or not g_s.any(), "TC-LIF must stop the gradient through S[t-1]"
    assert g_v.abs().sum() > 0


@pytest.mark.parametrize("fused", [False, True])
def test_tclif_reset_gradient_without_detach_reset(fused):
    """``detach_reset=False``: the same values, and S[t-1] gets its gradient through the charge, by hand:
    dD/dS = -gamma = -0.5, dV/dS = -1 + sigmoid(s_p) dD/dS = -1.25 (module update and fused function alike)."""
    shape = (1, 16, 2, 2)
    cells = {d: build_neuron("tclif", 1, 16, 1, detach_reset=d).to(DT) for d in (True, False)}
    out = {}
    for detach, cell in cells.items():
        with torch.no_grad():
            cell.gamma.fill_(0.5)
        prev_s = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=DT).view(1, 1, 2, 2).expand(shape).clone()
        prev_s.requires_grad_(True)
        state = TwoCompartmentState(torch.full(shape, 0.3, dtype=DT), torch.full(shape, 0.8, dtype=DT), prev_s)
        current = torch.full(shape, 0.4, dtype=DT)
        s, st = cell.fused_update(current, state, None) if fused else cell.update(current, state)
        (g,) = torch.autograd.grad(st.d.sum() + st.v.sum(), prev_s, allow_unused=True)
        out[detach] = (s.detach(), st.d.detach(), st.v.detach(), g)
    for a, b in zip(out[True][:3], out[False][:3]):
        assert torch.equal(a, b)
    assert out[True][3] is None or not out[True][3].any()
    torch.testing.assert_close(out[False][3], torch.full(shape, -0.5 - 1.25, dtype=DT))


def test_glif_previous_spike_carries_gradient():
    """GLIF's equations have no stop-gradient on S[t-1] (contrast with TC-LIF)."""
    shape = (1, 16, 1, 2)
    cell = build_neuron("glif", 1, 16, 1).to(DT)
    prev_s = torch.tensor([0.0, 1.0], dtype=DT).expand(shape).clone().requires_grad_(True)
    u0 = torch.full(shape, 0.4, dtype=DT)
    s, st = cell.update(torch.full(shape, 0.5, dtype=DT), GLIFState(u0, prev_s))
    (g,) = torch.autograd.grad(st.u.sum(), prev_s)
    # dU/dS[t-1] = -(1 - alpha(1 - tau)) U gamma - (1 - gamma) V_reset = -0.5875 * 0.4 * 0.55 - 0.45 * 0.5
    expected = torch.full(shape, -0.5875 * 0.4 * 0.55 - 0.225, dtype=DT)
    torch.testing.assert_close(g, expected, rtol=1e-6, atol=1e-7)


def test_glif_strict_threshold_and_rectangle_surrogate():
    """Gates driven to 1 / 0 (raw +-40 -> sigmoid 1.0 / ~4e-18), V_th = sigmoid(0) = 0.5: U[1] = I exactly."""
    cell = build_neuron("glif", 1, 16, 1).to(DT)
    with torch.no_grad():
        cell.alpha.fill_(40.0)  # (1 - alpha) * leak = 0
        cell.beta.fill_(-40.0)  # I' = I (1 - ~4e-18 * 0.5) = I exactly in float64
        cell.v_th.fill_(0.0)  # V_th = 0.5
    values = [0.5, 0.5 + 2**-30, 0.5 - 2**-30, 0.9, 1.0, 1.1, 0.0, -0.2]
    shape = (1, 16, 1, len(values))
    current = torch.tensor(values, dtype=DT).expand(shape).clone().requires_grad_(True)
    s, st = cell.update(current, zero_state(cell, shape))
    assert torch.equal(st.u, current.detach())
    assert s[0, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # U - V_th > 0, strictly
    (g,) = torch.autograd.grad(s.sum(), current)
    # rectangle of width 1 around V_th: |U - 0.5| < 0.5
    assert g[0, 0, 0].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # the same value exactly at threshold spikes for a non-strict neuron
    lif = build_neuron("if", 1, 16, 1).to(DT)
    s_if, _ = lif.update(torch.ones(shape, dtype=DT), zero_state(lif, shape))
    assert s_if.all()


# ------------------------------------------------------------------------------------------------ gradcheck


class SmoothSpike(nn.Module):
    """The smooth primitive of the sigmoid surrogate: sigmoid(4x). Swapped in for the Heaviside so the
    cell becomes a smooth function that ``gradcheck`` can compare against finite differences."""

    def forward(self, x):
        return torch.sigmoid(4.0 * x)


@pytest.mark.parametrize("case", [
    ("if", {}), ("lif", {}), ("plif", {"input_gain": "raw"}), ("glif", {}), ("glif", {"train_gates": True}),
    ("tclif", {}), ("lmh", {}), ("stc_lif", {}), ("stc_plif", {}), ("stc_lmh", {}), ("stc_glif", {}),
    ("stc_tclif", {})], ids=case_id)
def test_gradcheck_continuous_parts(case):
    """float64 gradcheck of one step (synapse conv + GN, autapse conv + GN + tanh gains, the neuron equations,
    every learnable parameter) with the spike replaced by its smooth primitive. S[t-1] is a constant input,
    so TC-LIF's sg(S[t-1]) and gradient_detach are no-ops here; GLIF's frozen gates are held constant
    (they are not gradchecked unless ``train_gates``); LM-H's V = H - sg(S) is left out of the outputs
    (its stop-gradient is checked in ``test_lmh_reset_is_stop_gradient``)."""
    name, opts = case
    cell = make(name, **opts)
    (cell.base if isinstance(cell, STC) else cell).spike_fn = SmoothSpike()
    base = BASE_OF.get(name, name)
    frozen = GATES if base == "glif" and not opts.get("train_gates") else ()
    pnames = [n for n, _ in cell.named_parameters() if n.removeprefix("base.") not in frozen]
    pvals = [dict(cell.named_parameters())[n].detach().clone().requires_grad_(True) for n in pnames]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 3, 3, generator=g, dtype=DT, requires_grad=True)
    floats = [f for f in FIELDS[base] if f != "s"]
    svals = [(0.5 * torch.randn(1, 16, 3, 3, generator=g, dtype=DT)).requires_grad_(True) for _ in floats]
    prev_s = (torch.rand(1, 16, 3, 3, generator=g, dtype=DT) > 0.5).to(DT)
    keep = [f for f in FIELDS[base] if not (base == "lmh" and f == "v")]

    def f(x, *args):
        params = dict(zip(pnames, args[: len(pnames)]))
        state = cell.State(**dict(zip(floats, args[len(pnames):])), s=prev_s)
        s, st = torch.func.functional_call(cell, params, (x, state))
        return (s, *[getattr(st, k) for k in keep])

    assert torch.autograd.gradcheck(f, (x, *pvals, *svals), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bad_input_rank(name):
    cell = build_neuron(name, 2, 16, 3)
    with pytest.raises(ValueError) as err:
        cell(torch.zeros(1, 3, 2, 6, 6))  # (B, T, C, H, W): rank 5
    msg = str(err.value)
    assert re.search(r"\b4\b", msg) and re.search(r"\b5\b", msg), msg
    with pytest.raises(ValueError) as err:
        cell(torch.zeros(2, 6, 6))
    assert re.search(r"\b3\b", str(err.value)) and re.search(r"\b4\b", str(err.value))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bad_channel_count(name):
    cell = build_neuron(name, 2, 16, 3)
    with pytest.raises(ValueError) as err:
        cell(torch.zeros(1, 3, 6, 6))
    msg = str(err.value)
    assert re.search(r"\b2\b", msg) and re.search(r"\b3\b", msg), msg


@pytest.mark.parametrize("name", ALL_NAMES)
def test_state_from_another_shape(name):
    cell = build_neuron(name, 2, 16, 3)
    _, state = cell(torch.zeros(1, 2, 6, 6))
    with pytest.raises(ValueError) as err:
        cell(torch.zeros(1, 2, 5, 5), state)
    msg = str(err.value)
    assert "(1, 16, 6, 6)" in msg and "(1, 16, 5, 5)" in msg, msg
    with pytest.raises(ValueError) as err:  # no silent broadcasting over the batch either
        cell(torch.zeros(2, 2, 6, 6), state)
    assert "(1, 16, 6, 6)" in str(err.value) and "(2, 16, 6, 6)" in str(err.value)


def test_state_of_another_cell_type():
    _, glif_state = build_neuron("glif", 2, 16, 3)(torch.zeros(1, 2, 4, 4))
    with pytest.raises(TypeError) as err:
        build_neuron("lif", 2, 16, 3)(torch.zeros(1, 2, 4, 4), glif_state)
    assert "MembraneState" in str(err.value) and "GLIFState" in str(err.value)
    with pytest.raises(TypeError):
        build_neuron("lif", 2, 16, 3)(torch.zeros(1, 2, 4, 4), (torch.zeros(1, 16, 4, 4),) * 2)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_non_floating_dtype(name, dtype):
    cell = build_neuron(name, 2, 16, 3)
    with pytest.raises(TypeError) as err:
        cell(torch.zeros(1, 2, 4, 4, dtype=dtype))
    msg = str(err.value)
    assert str(dtype) in msg and "float" in msg, msg


def test_non_tensor_input():
    with pytest.raises(TypeError, match="ndarray"):
        build_neuron("lif", 2, 16, 3)(torch.zeros(1, 2, 4, 4).numpy())


def test_float32_and_float64_agree():
    cell = make("stc_lmh", hidden=32)
    xs = inputs()
    ref = run_cell(cell, xs)
    out = run_cell(cell.float(), [x.float() for x in xs])
    for (s64, _), (s32, _) in zip(ref, out):
        assert s32.dtype == torch.float32
        assert (s64 != s32).float().mean() < 0.01
    assert isinstance(out[0][1], TwoCompartmentState)


# ------------------------------------------------------------------------------------------------ compile


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_NAMES)
def test_torch_compile_matches_eager(name):
    """Compiled code is another computation (fused kernels, other rounding): float64, so that no spike flips."""
    torch._dynamo.reset()
    cell = make(name)
    xs = inputs(T=3, B=1)
    compiled = torch.compile(cell)
    shape = (1, 16, 4, 4)
    state_e = state_c = cell.State(*[torch.zeros(shape, dtype=DT)] * len(cell.State._fields))  # no None: one graph
    total = 0.0
    for x in xs:
        s_e, state_e = cell(x, state_e)
        s_c, state_c = compiled(x, state_c)
        assert torch.equal(s_e, s_c)
        for a, b in zip(state_e, state_c):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        state_c = state_e  # compare step by step from the same state
        total += s_e.sum().item()
    assert total > 0


def test_state_types():
    assert issubclass(MembraneState, tuple) and MembraneState._fields == ("v", "s")
    assert GLIFState._fields == ("u", "s") and TwoCompartmentState._fields == ("d", "v", "s")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stc_lif", "glif"])
def test_torch_compile_backward_matches_eager(name):
    """Training through the compiled cell: the surrogate backward survives compilation (float64, see above)."""
    torch._dynamo.reset()
    cell = make(name)
    xs = inputs(T=3, B=1)
    zero = cell.State(*[torch.zeros(1, 16, 4, 4, dtype=DT)] * len(cell.State._fields))
    grads = []
    for fn in (cell, torch.compile(cell)):
        cell.zero_grad()
        state, traj = zero, []
        for x in xs:
            s, state = fn(x, state)
            traj.append((s, state))
        weighted_loss(traj).backward()
        grads.append({n: p.grad.clone() for n, p in cell.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        scale = grads[0][n].abs().max()
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-10, atol=1e-10 * scale, msg=n)
