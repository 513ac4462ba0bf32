"""The STC circuit: fused pathways, generic ``STC(base)``, gradient_detach.

References come from ``test_neurons.py`` (plain-torch equations, separate pathway convolutions taken out of
the fused weights with an index map written from the documented layout). Two different computations of the
same quantity (fused vs separate pathways, the generic wrapper vs a dedicated neuron, the wrapper with unit
gains vs the bare neuron) are compared in float64 with a tolerance (``TOL``): they round differently, and in
float32 one rounding difference at a threshold can flip a spike.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcsnn.neurons import (
    GLIF,
    IF,
    LMH,
    NEURONS,
    PLIF,
    STC,
    TCLIF,
    Autapse,
    SpikingCell,
    build_neuron,
    fuse_pathways,
    register_neuron,
    register_stc,
    split_pathways,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_neurons import (  # noqa: E402
    BASE_OF,
    DT,
    FIELDS,
    STEP,
    inputs,
    named_params,
    pathway_index,
    randomize,
    ref_current,
    ref_gains,
    ref_run,
    run_cell,
    weighted_loss,
)

STC_NAMES = ("stc_lif", "stc_plif", "stc_lmh", "stc_glif", "stc_tclif")
TOL = 1e-12  # float64, two computations of the same values (they agree to ~1e-15)



# ------------------------------------------------------------------------------------------------ fusion


def random_autapse(channels=32, k=3, seed=0):
    a = Autapse(channels, k)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in a.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return a


def test_autapse_structure():
    a = Autapse(32, 5)
    assert a.conv.in_channels == 32 and a.conv.out_channels == 64 and a.conv.groups == 16
    assert a.conv.bias is None and a.conv.kernel_size == (5, 5) and a.conv.padding == (2, 2)
    assert a.norm.num_groups == 32 and a.norm.num_channels == 64 and a.norm.affine


def test_split_pathways_follows_documented_layout():
    a = random_autapse()
    idx_h, idx_v = pathway_index(32)
    parts = split_pathways(a)
    assert torch.equal(parts["w_h"], a.conv.weight[idx_h]) and torch.equal(parts["w_v"], a.conv.weight[idx_v])
    for kind in ("weight", "bias"):
        full = getattr(a.norm, kind)
        assert torch.equal(parts[f"norm_h_{kind}"], full[idx_h])
        assert torch.equal(parts[f"norm_v_{kind}"], full[idx_v])


def test_fuse_split_roundtrip():
    g = torch.Generator().manual_seed(1)
    w_h, w_v = (torch.randn(32, 2, 3, 3, generator=g) for _ in range(2))
    nh, nv = ((torch.randn(32, generator=g), torch.randn(32, generator=g)) for _ in range(2))
    weight, nw, nb = fuse_pathways(w_h, w_v, nh, nv)
    idx_h, idx_v = pathway_index(32)
    assert weight.shape == (64, 2, 3, 3)
    assert torch.equal(weight[idx_h], w_h) and torch.equal(weight[idx_v], w_v)
    assert torch.equal(nw[idx_h], nh[0]) and torch.equal(nb[idx_v], nv[1])
    a = Autapse(32, 3)
    with torch.no_grad():
        a.conv.weight.copy_(weight)
        a.norm.weight.copy_(nw)
        a.norm.bias.copy_(nb)
    parts = split_pathways(a)
    for key, ref in (("w_h", w_h), ("w_v", w_v), ("norm_h_weight", nh[0]), ("norm_h_bias", nh[1]),
                     ("norm_v_weight", nv[0]), ("norm_v_bias", nv[1])):
        assert torch.equal(parts[key], ref), key


@pytest.mark.parametrize("channels", [16, 32, 48])
def test_fused_autapse_equals_two_separate_pathways(channels):
    """One grouped conv C -> 2C + GroupNorm(32) == W_h, W_v (C -> C, 16 groups) each + GroupNorm(16): the
    gains, and the gradients of the autapse parameters and of the input spikes (float64, to rounding)."""
    a = random_autapse(channels, 3, seed=channels).double()
    s = (torch.rand(2, channels, 5, 5, dtype=DT) > 0.6).to(DT).requires_grad_(True)

    def separate():
        parts = split_pathways(a)  # differentiable views of the fused parameters
        ref = []
        for p in ("h", "v"):
            y = F.conv2d(s, parts[f"w_{p}"], padding=1, groups=16)
            ref.append(F.group_norm(y, 16, parts[f"norm_{p}_weight"], parts[f"norm_{p}_bias"], eps=1e-5))
        return ref

    ref = separate()
    A, B = a.pathways(s)
    torch.testing.assert_close(A, ref[0], rtol=0, atol=TOL)
    torch.testing.assert_close(B, ref[1], rtol=0, atol=TOL)
    ga, gb = a(s)
    torch.testing.assert_close(ga, 1.0 + torch.tanh(ref[0]), rtol=0, atol=TOL)
    torch.testing.assert_close(gb, 1.0 + torch.tanh(ref[1]), rtol=0, atol=TOL)
    # and the test suite's own (hand group norm, index-map) reference agrees
    P = {"autapse.conv.weight": a.conv.weight, "autapse.norm.weight": a.norm.weight,
         "autapse.norm.bias": a.norm.bias}
    rga, rgb = ref_gains(s, P)
    torch.testing.assert_close(ga, rga, rtol=0, atol=TOL)
    torch.testing.assert_close(gb, rgb, rtol=0, atol=TOL)
    assert ((ga > 0) & (ga < 2)).all() and ((gb > 0) & (gb < 2)).all()

    # backward: a fixed random-weighted loss of both gains, through each computation
    g = torch.Generator().manual_seed(channels)
    wa, wb = (torch.randn(ga.shape, generator=g, dtype=DT) for _ in range(2))
    leaves = [s, *a.parameters()]

    def grads(gain_a, gain_b):
        return torch.autograd.grad((gain_a * wa).sum() + (gain_b * wb).sum(), leaves)

    fused = grads(*a(s))
    for want in (grads(*(1.0 + torch.tanh(x) for x in separate())), grads(*ref_gains(s, P))):
        for name, got, exp in zip(("spikes", "conv.weight", "norm.weight", "norm.bias"), fused, want):
            assert exp.abs().max() > 0, name
            torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-10 * exp.abs().max(), msg=name)


# --------------------------------------------------------------------------------------------- equivalences

@pytest.mark.parametrize("base_cls, opts", [(IF, {}), (PLIF, {"input_gain": "raw"}), (LMH, {}), (GLIF, {})],
                         ids=["if", "plif-raw", "lmh", "glif"])
def test_checkpoints_of_the_former_dedicated_cells_load(base_cls, opts):
    """stc_lif/stc_plif/stc_lmh used to be classes with the base parameters at the top level (``synapse.*``,
    ``w``, ... beside ``autapse.*``); such state dicts load into ``STC(base)`` unchanged, to the same values."""
    cell = randomize(STC(base_cls(2, 32, 3, **opts)).to(DT), seed=7)
    old_layout = {k.removeprefix("base."): v for k, v in cell.state_dict().items()}
    assert "synapse.conv.weight" in old_layout and not any(k.startswith("base.") for k in old_layout)
    fresh = STC(base_cls(2, 32, 3, **opts)).to(DT)
    fresh.load_state_dict(old_layout, strict=True)
    for k, v in cell.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    xs = inputs(T=3, seed=11)
    for (s, st), (rs, rst) in zip(run_cell(fresh, xs), run_cell(cell, xs)):
        assert torch.equal(s, rs) and all(torch.equal(a, b) for a, b in zip(st, rst))


def assert_trajectories_close(got, want):
    """Same spikes and states at every step, to float64 rounding."""
    for t, ((s, st), (rs, rst)) in enumerate(zip(got, want, strict=True)):
        assert type(st) is type(rst)
        torch.testing.assert_close(s, rs, rtol=0, atol=0, msg=f"spikes differ at step {t + 1}")
        for f in st._fields:
            torch.testing.assert_close(getattr(st, f), getattr(rst, f), rtol=TOL, atol=TOL,
                                       msg=f"{f} differs at step {t + 1}")


def test_registry_stc_names_are_compositions():
    for name, base in (("stc_lif", IF), ("stc_plif", PLIF), ("stc_lmh", LMH)):
        cell = build_neuron(name, 1, 16, 3, gradient_detach=True)
        assert type(cell) is STC and type(cell.base) is base and cell.autapse.gradient_detach


@pytest.mark.parametrize("base_cls", [IF, PLIF, LMH, GLIF, TCLIF])
def test_unit_gains_reduce_to_the_base_neuron(base_cls):
    """With A = B = 0 (zero autapse GroupNorm affine) both gains are 1: STC(base) is the base neuron."""
    stc = randomize(STC(base_cls(2, 16, 3)).to(DT), seed=2)
    with torch.no_grad():
        stc.autapse.norm.weight.zero_()
        stc.autapse.norm.bias.zero_()
    traj_stc = run_cell(stc, inputs())
    traj_base = run_cell(stc.base, inputs())
    assert_trajectories_close(traj_stc, traj_base)


@pytest.mark.parametrize("name, base_cls", [("stc_glif", GLIF), ("stc_tclif", TCLIF)])
def test_new_stc_neurons_work(name, base_cls):
    cell = build_neuron(name, 2, 32, 3)
    assert isinstance(cell, STC) and type(cell.base) is base_cls
    randomize(cell, seed=3)
    x0 = torch.randn(2, 2, 6, 6, requires_grad=True)
    xs = [x0] + [1.5 * torch.randn(2, 2, 6, 6) for _ in range(4)]
    traj = run_cell(cell, xs)
    spikes = torch.stack([s for s, _ in traj])
    assert set(spikes.unique().tolist()) == {0.0, 1.0}
    assert type(traj[-1][1]) is base_cls.State
    # the autapse changes the dynamics compared with the same base neuron alone
    plain = torch.stack([s for s, _ in run_cell(cell.base, [x.detach() for x in xs])])
    assert not torch.equal(plain, spikes)
    weighted_loss(traj).backward()
    for n in ("autapse.conv.weight", "autapse.norm.weight", "autapse.norm.bias", "base.synapse.conv.weight"):
        g = dict(cell.named_parameters())[n].grad
        assert g is not None and g.abs().sum() > 0, n
    assert x0.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ detach


def two_step_grad_x0(name, P, xs, autapse_live, base_live, **opts):
    """Reference d L / d x[0], L a weighted sum of the step-2 outputs, with S[1] -> autapse and the step-1
    state -> base neuron each optionally cut (to split the gradient into its two paths)."""
    base = BASE_OF[name]
    x0 = xs[0].clone().requires_grad_(True)
    I = ref_current(x0, P)
    st = {f: torch.zeros_like(I) for f in FIELDS[base]}
    ga, gb = ref_gains(st["s"], P)
    _, st = STEP[base](I, st, P, ga, gb, **opts)
    ga, gb = ref_gains(st["s"] if autapse_live else st["s"].detach(), P)
    st_base = st if base_live else {k: v.detach() for k, v in st.items()}
    s2, st2 = STEP[base](ref_current(xs[1], P), st_base, P, ga, gb, **opts)
    (g,) = torch.autograd.grad(weighted_loss([(s2, st2)]), x0, allow_unused=True)
    return torch.zeros_like(x0) if g is None else g


def cell_grad_x0(cell, xs):
    x0 = xs[0].clone().requires_grad_(True)
    s1, st1 = cell(x0)
    s2, st2 = cell(xs[1], st1)
    (g,) = torch.autograd.grad(weighted_loss([(s2, st2)]), x0)
    return g, (s1, st1, s2, st2)


@pytest.mark.parametrize("name", STC_NAMES)
def test_gradient_detach_cuts_exactly_the_pathway_input(name):
    """d L/d x[0] = (membrane / reset / base-neuron path) + (S[1] -> autapse path). gradient_detach must
    remove the second term and keep the first: it would fail if detach cut nothing (g_on == g_off), or also
    cut the base neuron's use of S[1] or of its membrane (g_on != membrane term)."""
    opts = {"train_gates": True} if name == "stc_glif" else {}
    off = randomize(build_neuron(name, 2, 32, 3, gradient_detach=False, **opts).to(DT), seed=5)
    on = build_neuron(name, 2, 32, 3, gradient_detach=True, **opts).to(DT)
    on.load_state_dict(off.state_dict())
    xs = inputs(T=2, seed=9)
    g_off, out_off = cell_grad_x0(off, xs)
    g_on, out_on = cell_grad_x0(on, xs)
    for a, b in zip(out_off, out_on):  # the forward pass is unchanged: the same ops, bit for bit
        assert all(torch.equal(u, v) for u, v in zip(a, b)) if isinstance(a, tuple) else torch.equal(a, b)
    assert 0 < out_off[0].mean() < 1

    P = {n: p.detach() for n, p in named_params(off).items()}
    membrane = two_step_grad_x0(name, P, xs, autapse_live=False, base_live=True, **opts)
    pathway = two_step_grad_x0(name, P, xs, autapse_live=True, base_live=False, **opts)
    assert membrane.abs().max() > 1e-3 and pathway.abs().max() > 1e-3
    torch.testing.assert_close(g_on, membrane, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(g_off, membrane + pathway, rtol=1e-9, atol=1e-11)
    assert (g_off - g_on).abs().max() > 1e-3


@pytest.mark.parametrize("name", STC_NAMES)
def test_gradient_detach_keeps_autapse_weights_trainable(name):
    cell = randomize(build_neuron(name, 2, 32, 3, gradient_detach=True).to(DT), seed=6)
    weighted_loss(run_cell(cell, inputs())).backward()
    for n in ("autapse.conv.weight", "autapse.norm.weight", "autapse.norm.bias"):
        assert dict(cell.named_parameters())[n].grad.abs().sum() > 0, n


def test_gradient_detach_matches_reference_over_three_steps():
    """All parameters, both settings (complements test_neurons' reference comparison)."""
    for detach in (False, True):
        cell = randomize(build_neuron("stc_lif", 2, 32, 3, gradient_detach=detach).to(DT), seed=8)
        P = {n: p.detach().clone().requires_grad_(True) for n, p in named_params(cell).items()}
        weighted_loss(run_cell(cell, inputs())).backward()
        weighted_loss(ref_run("stc_lif", P, inputs(), gradient_detach=detach)).backward()
        for n, p in named_params(cell).items():
            torch.testing.assert_close(p.grad, P[n].grad, rtol=1e-9, atol=1e-10, msg=n)


# ------------------------------------------------------------------------------------------------ user neuron


class LeakyState(NamedTuple):
    v: Tensor
    s: Tensor


class MyLeaky(SpikingCell):
    """A user-defined neuron following the documented contract: H = sigmoid(k) V[t-1] + I, soft reset."""

    State = LeakyState

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.k = nn.Parameter(torch.tensor(0.4))

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        carried = torch.sigmoid(self.k) * state.v
        if temporal_gain is not None:
            carried = carried * temporal_gain
        if spatial_gain is not None:
            current = current * spatial_gain
        s = self.spike_fn(carried + current - 1.0)
        return s, LeakyState(carried + current - s, s)


def ref_my_leaky(P, xs, detach=False):
    st, out = {"v": None, "s": None}, []
    for x in xs:
        I = ref_current(x, P)
        if st["v"] is None:
            st = {"v": torch.zeros_like(I), "s": torch.zeros_like(I)}
        ga, gb = ref_gains(st["s"].detach() if detach else st["s"], P)
        h = torch.sigmoid(P["k"]) * st["v"] * ga + I * gb
        s = (h >= 1.0).to(h.dtype)
        st = {"v": h - s, "s": s}
        out.append((s, st))
    return out


@pytest.mark.parametrize("detach", [False, True])
def test_user_defined_neuron_under_stc(detach):
    base = MyLeaky(2, 32, 3)
    cell = randomize(STC(base, gradient_detach=detach).to(DT), seed=4)
    xs = inputs(T=4)
    traj = run_cell(cell, xs)
    P = {n: p.detach() for n, p in named_params(cell).items()}
    ref = ref_my_leaky(P, xs, detach)
    for (s, st), (rs, rst) in zip(traj, ref):
        assert type(st) is LeakyState
        assert torch.equal(s, rs)
        torch.testing.assert_close(st.v, rst["v"], rtol=0, atol=1e-12)
    assert 0 < torch.stack([s for s, _ in traj]).mean() < 1
    weighted_loss(traj).backward()
    for n in ("base.k", "base.synapse.conv.weight", "autapse.conv.weight", "autapse.norm.bias"):
        assert dict(cell.named_parameters())[n].grad.abs().sum() > 0, n
    # the state and input checks of the contract apply to the wrapped neuron too
    with pytest.raises(ValueError):
        cell(torch.zeros(1, 3, 4, 4, dtype=DT))
    with pytest.raises(ValueError):
        cell(torch.zeros(2, 2, 5, 5, dtype=DT), traj[-1][1])


def test_user_defined_neuron_in_the_registry():
    register_stc("stc_myleaky_test", MyLeaky, "test-only user neuron")
    try:
        cell = build_neuron("stc_myleaky_test", 2, 16, 3, gradient_detach=True)
        assert isinstance(cell, STC) and isinstance(cell.base, MyLeaky) and cell.autapse.gradient_detach
        s, st = cell(torch.randn(1, 2, 4, 4))
        assert type(st) is LeakyState and s.shape == (1, 16, 4, 4)
        with pytest.raises(ValueError, match="already registered"):
            register_neuron("stc_myleaky_test", "again", MyLeaky)
    finally:
        NEURONS.pop("stc_myleaky_test", None)
