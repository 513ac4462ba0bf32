"""The fast path equals the plain ones: outputs, rates, and the gradients of every parameter and of the input.

The fast path (:meth:`SpikingPredictor.rollout`: layer by layer over the observed prefix, fused pathway
convolution, fused neuron updates, channels-last convolutions, optional activation checkpointing) is compared
with the plain path (:func:`stcsnn.models.plain_rollout`: one frame at a time through the neuron modules' own
``synapse`` and ``update``), for every registered neuron, surrogate and option, without a mask, with a
scheduled-sampling mask and with a reverse (PredRNN-v2) mask.

Every comparison of two *different* computation paths runs in float64 (model and inputs) with a tolerance.
The paths round differently -- oneDNN picks convolution kernels by CPU and shape (a batch of prefix frames or
one frame, channels-last or contiguous, a checkpointed chunk), the fused backward is written by hand -- and
in a spiking network one rounding difference at a threshold flips a spike, which changes everything after it:
in float32 that happens on some CPUs (AVX-512). In float64 the paths agree to about 1e-13 relative on every
case here, so a membrane within rounding of its threshold does not occur, and the tolerance (``RTOL`` = 1e-9 on
outputs; gradients within 1e-9 of the largest gradient entry) leaves four orders of magnitude of margin while
any real error (a missing term, a wrong factor) is far larger. The firing rates are accumulated in float32 by
both paths (1e-6). Bitwise checks remain only where both sides run the same code on the same inputs.

The fused autograd functions are also checked one step at a time: against autograd through the module's own
``update`` (every surrogate and option), and with ``torch.autograd.gradcheck`` with the Heaviside swapped for
the smooth primitive of the surrogate (then the hand-written backward must be the exact derivative).

No timing here: speed is measured by ``stcsnn bench``, never asserted in tests.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from stcsnn.device import cpu_model
from stcsnn.errors import StcsnnError
from stcsnn.models import SpikingPredictor, build_model, choose_policy, plain_rollout
from stcsnn.models.predictor import CL_KINDS, END_TO_END, ExecutionPolicy
from stcsnn.neurons import LIF, STC, SURROGATES, build_neuron, get_spec, list_neurons

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_surrogate import primitive  # noqa: E402

# ------------------------------------------------------------------------------------ fused-update internals
# Every use of the fused updates' internals is in this block.
from stcsnn.neurons import fusion, glif, lif, lmh, tclif  # noqa: E402

#: the neuron modules that define fused autograd functions (each next to its neuron's equations)
FUSED_MODULES = (lif, glif, tclif, lmh)


def fused_update(cell, current, state, pathways):
    return cell.fused_update(current, state, pathways)


def has_fused(cell) -> bool:
    return cell.has_fused_update()


def fused_functions() -> list[type]:
    """Every ``torch.autograd.Function`` defined in the fused-update modules."""
    return [obj for m in FUSED_MODULES for obj in vars(m).values()
            if isinstance(obj, type) and issubclass(obj, torch.autograd.Function) and obj.__module__ == m.__name__]


def fused_pathways(cell: nn.Module, prev_spikes: torch.Tensor) -> torch.Tensor | None:
    """The pathway input of a fused STC step, ``GN(W * S[t-1])`` before tanh, as the fast path computes it."""
    autapse = getattr(cell, "autapse", None)
    return None if autapse is None else autapse.signals(prev_spikes)


def smooth_heaviside(monkeypatch: pytest.MonkeyPatch, surrogate: str, alpha: float) -> None:
    """Make the fused forwards fire ``P(x)``, the smooth primitive of the surrogate (``P' = surrogate``)."""
    def step(h, threshold, strict):
        return primitive(surrogate, h - threshold, alpha)

    monkeypatch.setattr(fusion, "heaviside", step)


# ------------------------------------------------------------------------------------------------ settings

NEURONS = [name for name, _ in list_neurons()]
B, T_IN, T_OUT, SIZE = 2, 4, 4, 16
MASKS = ("none", "scheduled", "reverse")
DT = torch.float64
RTOL = 1e-9  # float64, different paths (see the module docstring)
RATE_TOL = 1e-6  # rates are accumulated in float32


def accepts(name: str, **option) -> bool:
    """Whether the registered neuron takes this option (the registry rejects options a neuron lacks)."""
    try:
        build_neuron(name, 16, 16, 1, **option)
    except StcsnnError:
        return False
    return True


def option_cases() -> list:
    """Every registered neuron x every surrogate it takes x gradient_detach x train_gates x detach_reset (where
    accepted)."""
    cases = []
    for name in NEURONS:
        surrogates = [s for s in SURROGATES if accepts(name, surrogate=s)] or [None]
        detach = (False, True) if accepts(name, gradient_detach=True) else (None,)
        gates = (False, True) if accepts(name, train_gates=True) else (None,)
        resets = (True, False) if accepts(name, detach_reset=True) else (None,)
        for surrogate, d, g, r in itertools.product(surrogates, detach, gates, resets):
            opts = {k: v for k, v in (("surrogate", surrogate), ("gradient_detach", d), ("train_gates", g),
                                      ("detach_reset", r)) if v is not None}
            cases.append(pytest.param(name, opts, id="-".join([name, *(f"{k}={v}" for k, v in opts.items())])))
    return cases


OPTION_CASES = option_cases()


def make_model(name: str, seed: int = 0, hidden=(16, 32), **options) -> SpikingPredictor:
    torch.manual_seed(seed)
    # widths 16 and 32: one and two channels per pathway group (the fused layout interleaves both)
    return SpikingPredictor(name, 1, list(hidden), kernel_size=3, patch_size=2, neuron_options=options).to(DT)


def make_inputs(kind: str, t_in: int = T_IN, t_out: int = T_OUT):
    g = torch.Generator().manual_seed(11)
    frames = torch.rand(B, t_in + t_out, 1, SIZE, SIZE, generator=g, dtype=DT)
    mask = None
    if kind == "scheduled":
        mask = (torch.rand(B, t_out - 1, generator=g) < 0.5).to(DT)
    elif kind == "reverse":
        mask = (torch.rand(B, t_in + t_out - 2, generator=g) < 0.5).to(DT)
    return frames, mask


def run(model: nn.Module, frames, mask, kind: str, plain: bool = False, t_in: int = T_IN, t_out: int = T_OUT,
        policy: ExecutionPolicy | None = None):
    """Rollout + a fixed random-weighted loss over every output; returns (frames, rates, {name: grad}), the
    gradients of every parameter and (as ``"<input>"``) of the input frames."""
    model.zero_grad(set_to_none=True)
    frames = frames.detach().clone().requires_grad_(True)
    reverse = kind == "reverse"
    if plain:
        out = plain_rollout(model, frames, t_in, t_out, mask, reverse=reverse)
    else:
        out = model.rollout(frames, t_in, t_out, mask, reverse=reverse, policy=policy)
    g = torch.Generator().manual_seed(5)
    weights = torch.randn(out.frames.shape, generator=g, dtype=torch.float64).to(out.frames.dtype)
    (out.frames * weights).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    grads["<input>"] = frames.grad.detach().clone()
    return out.frames.detach(), out.rates.detach(), grads


def assert_grads_close(got: dict, want: dict, rel: float = RTOL) -> None:
    """Each gradient within ``rel`` relative, or ``rel`` times the largest entry of its group (the parameters,
    or the input): backpropagation through time sums terms with cancellation, so a small entry's relative
    rounding error is not bounded by its own size."""
    assert set(got) == set(want), f"parameters with gradients differ: {set(got) ^ set(want)}"
    scale = max(g.abs().max().item() for n, g in want.items() if n != "<input>")
    assert scale > 0
    for name in want:
        s = want[name].abs().max().item() if name == "<input>" else scale
        torch.testing.assert_close(got[name], want[name], rtol=rel, atol=rel * s, msg=lambda m, n=name: f"{n}: {m}")


def assert_runs_close(got, want, rel: float = RTOL) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=rel, atol=rel * want[0].abs().max().item())
    torch.testing.assert_close(got[1], want[1], rtol=RATE_TOL, atol=RATE_TOL)
    assert_grads_close(got[2], want[2], rel)


# ------------------------------------------------------------------------------------------------ equality


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", NEURONS)
def test_fast_path_matches_plain(name: str, kind: str) -> None:
    model = make_model(name)
    frames, mask = make_inputs(kind)
    ref = run(model, frames, mask, kind, plain=True)
    assert ref[0][:, -T_OUT:].std() > 1e-3  # a live network, not a trivially silent one
    assert ref[2]["<input>"].abs().max() > 0
    assert_runs_close(run(model, frames, mask, kind), ref)


@pytest.mark.parametrize("name, options", OPTION_CASES)
def test_option_matrix_fast_path_matches_plain(name: str, options: dict) -> None:
    """Every neuron x surrogate x gradient_detach x train_gates, with a scheduled-sampling mask, 2 + 2 frames."""
    model = make_model(name, hidden=(16,), **options)
    cell = model.cells[0]
    if "surrogate" in options:  # the options reached the cells (not a sweep over defaults)
        assert cell.spike_fn.name == options["surrogate"]
    if "gradient_detach" in options:
        assert cell.autapse.gradient_detach == options["gradient_detach"]
    if "train_gates" in options:
        assert getattr(cell, "base", cell).train_gates == options["train_gates"]
    if "detach_reset" in options:
        assert getattr(cell, "base", cell).detach_reset == options["detach_reset"]
    frames, mask = make_inputs("scheduled", 2, 2)
    ref = run(model, frames, mask, "scheduled", plain=True, t_in=2, t_out=2)
    if not getattr(cell, "is_ann", False):
        assert 0 < ref[1].min() and ref[1].max() < 1  # spikes and silences: the surrogate matters
    fast = run(model, frames, mask, "scheduled", t_in=2, t_out=2)
    assert_runs_close(fast, ref)


def test_every_built_in_spiking_neuron_has_a_fused_update() -> None:
    """A fused update is optional (a speed choice): the library gives one to each of its own spiking neurons. A
    neuron without one -- an ANN baseline, a user's neuron (tests/test_plugins.py trains docs/examples/my_neuron.py,
    which has none) -- runs its own ``update`` on the fast path (tested below)."""
    for name in NEURONS:
        if not get_spec(name).built_in:
            continue
        cell = make_model(name).cells[0]
        if getattr(cell, "is_ann", False):
            continue
        assert has_fused(cell), name


# ------------------------------------------------------------------------------------------------ one step


def step_inputs(cell: nn.Module, seed: int = 3, requires_grad: bool = True, batch: int = 2, size: int = 4):
    """A random current and previous state (binary spikes, membranes near the threshold)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, cell.hidden_channels, size, size)
    current = 1.5 * torch.randn(shape, generator=g, dtype=DT)
    fields = {f: 0.6 * torch.randn(shape, generator=g, dtype=DT) for f in cell.State._fields}
    fields["s"] = (torch.rand(shape, generator=g, dtype=DT) < 0.4).to(DT)
    leaves = [current, *fields.values()]
    for t in leaves:
        t.requires_grad_(requires_grad)
    return current, cell.State(**fields), leaves


def random_step_loss(outputs, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outputs)


@pytest.mark.parametrize("name, options", [c for c in OPTION_CASES if c.values[0] != "convlstm"])
def test_fused_step_matches_module_update(name: str, options: dict) -> None:
    """One fused step against autograd through the module's own ``update`` (plain torch ops, the same surrogate
    autograd function): spikes, state, and the gradients of the current, every state field and parameter."""
    torch.manual_seed(0)
    cell = build_neuron(name, 16, 32, 3, **options).to(DT)
    assert has_fused(cell)
    results = []
    for fused in (True, False):
        cell.zero_grad(set_to_none=True)
        current, state, leaves = step_inputs(cell)
        if fused:
            s, new = fused_update(cell, current, state, fused_pathways(cell, state.s))
        else:
            s, new = cell.update(current, state)
        outputs = (s, *new)
        random_step_loss(outputs).backward()
        grads = {n: p.grad for n, p in cell.named_parameters() if p.grad is not None}
        grads.update({f"<{f}>": t.grad for f, t in zip(("current", *state._fields), leaves) if t.grad is not None})
        results.append(([t.detach() for t in outputs], grads))
    (got, got_grads), (want, want_grads) = results
    assert 0 < want[0].mean() < 1
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=RTOL)
    assert got_grads.keys() == want_grads.keys() and "<current>" in want_grads
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], rtol=RTOL, atol=RTOL * want_grads[n].abs().max(),
                                   msg=lambda m, n=n: f"{n}: {m}")


class _FusedStep(nn.Module):
    """``fused_update`` as a module call, so that ``functional_call`` can substitute the cell's parameters."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, current, state, pathways):
        return fused_update(self.cell, current, state, pathways)


#: V = H - sg(S): the soft reset does not pass the spike's gradient (not a smooth function of H)
STOP_GRADIENT_RESET = ("lmh", "stc_lmh")



def gradcheck_cases() -> list:
    """Every neuron with its default surrogate (GLIF's gates frozen and trained), and every surrogate on one
    neuron with the STC pathways: the fused functions share one surrogate derivative helper, and the full
    matrix is compared with the module's update above."""
    cases = []
    for c in OPTION_CASES:
        name, opts = c.values
        if name == "convlstm" or opts.get("gradient_detach"):
            continue
        if "surrogate" not in opts or opts["surrogate"] == build_neuron(name, 16, 16, 1).spike_fn.name or (
                name == "stc_lif"):
            cases.append(c)
    return cases


GRADCHECK_CASES = gradcheck_cases()


@pytest.mark.parametrize("name, options", GRADCHECK_CASES)
def test_fused_functions_pass_gradcheck(name: str, options: dict, monkeypatch) -> None:
    """float64 gradcheck of one fused step w.r.t. the current, the previous state, the pathways and the
    neuron's trainable parameters, with the Heaviside swapped for the surrogate's smooth primitive ``P`` (then
    the hand-written backward, which uses ``P'``, must be the true derivative). S[t-1] is an input where the
    step passes it a gradient (GLIF), a constant where it is a stop-gradient (TC-LIF) or unused; LM-H's
    V = H - sg(S) (its default ``detach_reset``) is left out of the outputs (not the derivative of a smooth
    function of H); with ``detach_reset=False`` V = H - S is checked too."""
    cell = build_neuron(name, 16, 16, 1, **options).to(DT)
    with torch.no_grad():  # move the neuron's scalars off their initial values
        for n, p in cell.named_parameters():
            if not n.startswith(("synapse.", "base.synapse.", "autapse.")):
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n)), dtype=DT))
    step = _FusedStep(cell)
    params = {n: p.detach().clone() for n, p in step.named_parameters()
              if p.requires_grad and not n.startswith(("cell.synapse.", "cell.base.synapse.", "cell.autapse."))}
    current, state, _ = step_inputs(cell, seed=7, requires_grad=False, size=1)
    pathways = fused_pathways(cell, state.s)
    pathways = None if pathways is None else torch.randn(pathways.shape, generator=torch.Generator().manual_seed(8),
                                                         dtype=DT)
    probe = state.s.clone().requires_grad_(True)
    s, new = fused_update(cell, current, state._replace(s=probe), pathways)
    outs = [t for t in (s, *new) if t.requires_grad]
    s_has_grad = bool(outs) and torch.autograd.grad([t.sum() for t in outs], probe, allow_unused=True)[0] is not None
    fields = [f for f in state._fields if f != "s" or s_has_grad]
    detached = name in STOP_GRADIENT_RESET and getattr(getattr(cell, "base", cell), "detach_reset", True)
    keep = [f for f in state._fields if not (detached and f == "v")]
    smooth_heaviside(monkeypatch, cell.spike_fn.name, cell.spike_fn.alpha)

    def f(current, paths, *args):
        values = dict(zip(params, args[: len(params)]))
        st = state._replace(**dict(zip(fields, args[len(params):])))
        s, new = torch.func.functional_call(step, values, (current, st, paths))
        return (s, *[getattr(new, k) for k in keep])

    inputs = [current, pathways, *params.values(), *(getattr(state, f) for f in fields)]
    for t in inputs:
        if t is not None:
            t.requires_grad_(True)
    # the full Jacobians (fast_mode's random projections can hide a 1% error in one block), tight tolerances:
    # central differences in float64 are good to ~1e-9 here
    assert torch.autograd.gradcheck(f, tuple(inputs), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_every_fused_function_is_gradchecked() -> None:
    """The gradcheck above covers every fused autograd function: each is reached by a registered neuron."""
    seen = set()
    for name in NEURONS:
        cell = build_neuron(name, 16, 16, 1).to(DT)
        if not has_fused(cell):
            continue
        current, state, _ = step_inputs(cell)
        s, _ = fused_update(cell, current, state, fused_pathways(cell, state.s))
        seen.add(type(s.grad_fn).__name__)
    functions = fused_functions()
    assert functions
    missing = [fn.__name__ for fn in functions if f"{fn.__name__}Backward" not in seen]
    assert not missing, f"fused functions no registered neuron uses: {missing}"


# ------------------------------------------------------------------------------------------------ checkpointing


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", NEURONS)
def test_checkpointing_changes_nothing(name: str, kind: str) -> None:
    """Chunks of K steps: the prefix is batched per chunk (other convolution shapes), so to rounding."""
    model = make_model(name)
    frames, mask = make_inputs(kind)
    plain = run(model, frames, mask, kind)
    for k in (1, 3, 100):
        model.checkpoint_steps = k
        assert_runs_close(run(model, frames, mask, kind), plain)


def test_checkpointing_is_used_and_frees_activations() -> None:
    """With K = 1 the autograd graph keeps only chunk boundaries: far fewer saved tensors than without."""
    model = make_model("stc_lif")
    frames, _ = make_inputs("none")

    def saved_bytes(k: int) -> int:
        model.checkpoint_steps = k
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.rollout(frames, T_IN, T_OUT)
        return total

    assert saved_bytes(1) < 0.5 * saved_bytes(0)


def test_checkpointing_off_without_gradients_and_with_an_observer() -> None:
    model = make_model("stc_lif")
    model.checkpoint_steps = 2
    frames, _ = make_inputs("none")
    with torch.no_grad():
        a = model.rollout(frames, T_IN, T_OUT).frames
    model.checkpoint_steps = 0
    with torch.no_grad():
        b = model.rollout(frames, T_IN, T_OUT).frames
    assert torch.equal(a, b)  # checkpointing off: the very same computation, bit for bit
    model.checkpoint_steps = 2
    seen = []
    model.rollout(frames, T_IN, T_OUT, observer=lambda t, l, s, st: seen.append((t, l)))
    # once per update (no recomputation); the prefix is visited layer by layer
    assert sorted(seen) == [(t, l) for t in range(T_IN + T_OUT - 1) for l in range(2)]


def test_build_model_sets_checkpoint_steps() -> None:
    from stcsnn.config import make_config

    cfg = make_config({"neuron": "stc_lif", "dataset": "embedded", "hidden_channels": [16], "checkpoint_steps": 4,
                       "frame_shape": [1, 64, 64]})
    assert build_model(cfg).checkpoint_steps == 4


def test_negative_checkpoint_steps_rejected() -> None:
    with pytest.raises(StcsnnError, match="checkpoint_steps"):
        SpikingPredictor("lif", 1, [16], checkpoint_steps=-1)


# ------------------------------------------------------------------------------------------------ fallbacks


@pytest.mark.parametrize("kind", ("none", "scheduled"))
@pytest.mark.parametrize("name", ("stc_lif", "stc_glif", "convlstm"))
def test_memory_format_does_not_change_results(name: str, kind: str) -> None:
    model = make_model(name)
    frames, mask = make_inputs(kind)
    outs = {}
    # False: no convolution channels-last; True: the per-run choice (choose_policy); "all": every kind
    policies = {False: ExecutionPolicy(channels_last=()), True: None, "all": ExecutionPolicy(channels_last=CL_KINDS)}
    for cl in (False, True, "all"):
        outs[cl] = run(model, frames, mask, kind, policy=policies[cl])
    for cl in (True, "all"):
        assert_runs_close(outs[cl], outs[False])


class _MyLIF(LIF):
    """A subclass with its own update: no fused version, the fast path must run its ``update``."""

    calls = 0

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        type(self).calls += 1
        return super().update(current, state, temporal_gain, spatial_gain)


def test_unknown_cells_fall_back_to_their_update() -> None:
    model = make_model("lif")
    replaced = make_model("lif").cells[0]
    replaced.update = replaced.update  # an update replaced on the instance (what --compile does)
    assert not has_fused(replaced)
    frames, _ = make_inputs("none")
    want = run(model, frames, None, "none")
    mine = make_model("lif")
    mine.cells = nn.ModuleList(_MyLIF(c.in_channels, c.hidden_channels, c.kernel_size) for c in model.cells)
    mine.load_state_dict(model.state_dict())
    mine.to(DT)
    assert not has_fused(mine.cells[0])  # its class overrides update only: the fused update would skip it
    _MyLIF.calls = 0
    got = run(mine, frames, None, "none")
    assert _MyLIF.calls == 2 * (T_IN + T_OUT - 1)
    assert_runs_close(got, want)
    assert_runs_close(run(mine, frames, None, "none", plain=True), want)


def test_generic_stc_of_an_unknown_neuron_falls_back() -> None:
    """``STC(user neuron)``: no fused update -- both paths run its ``update``
    with the pathway gains, and agree."""
    model = make_model("stc_lif")
    model.cells = nn.ModuleList(STC(_MyLIF(c.in_channels, c.hidden_channels, c.kernel_size)) for c in model.cells)
    model.to(DT)
    assert not has_fused(model.cells[0])
    frames, mask = make_inputs("scheduled")
    assert_runs_close(run(model, frames, mask, "scheduled"), run(model, frames, mask, "scheduled", plain=True))


def test_update_replaced_on_the_instance_is_respected() -> None:
    """``cell.update = torch.compile(cell.update)`` (the trainer's --compile) must not be bypassed."""
    model = make_model("stc_lif")
    frames, _ = make_inputs("none")
    want = run(model, frames, None, "none")
    calls = []
    for cell in model.cells:
        original = cell.update

        def wrapped(*args, _f=original, **kwargs):
            calls.append(1)
            return _f(*args, **kwargs)

        cell.update = wrapped
    got = run(model, frames, None, "none")
    assert len(calls) == 2 * (T_IN + T_OUT - 1)
    assert_runs_close(got, want)


def test_runs_under_bf16_autocast() -> None:
    """bf16 autocast (``amp: bf16``; on a GPU in practice): the fused path runs forward and backward."""
    model = make_model("stc_lif").float()
    frames, mask = make_inputs("scheduled")
    frames, mask = frames.float(), mask.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.rollout(frames, T_IN, T_OUT, mask)
    out.frames.float().square().mean().backward()
    assert torch.isfinite(out.frames.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ channels-last


@pytest.mark.parametrize("name", NEURONS)
def test_end_to_end_channels_last_matches_plain(name: str) -> None:
    """``channels_last="end_to_end"`` (every tensor NHWC; STC inference's default on most CPUs): outputs, rates
    and every gradient equal the plain path's; and the default no-grad rollout equals it too."""
    model = make_model(name)
    frames, mask = make_inputs("scheduled")
    ref = run(model, frames, mask, "scheduled", plain=True)
    assert_runs_close(run(model, frames, mask, "scheduled", policy=ExecutionPolicy(channels_last=END_TO_END)), ref)
    layouts = []
    with torch.no_grad():
        got = model.rollout(frames, T_IN, T_OUT, observer=lambda t, l, s, st: layouts.append(
            fusion.is_channels_last(s) and not s.is_contiguous()))
        want = plain_rollout(model, frames, T_IN, T_OUT)
    # the default without gradients on CPU: NHWC throughout for STC models (measured faster for them only), on
    # the CPUs where it measured faster (choose_policy)
    stc = hasattr(model.cells[0], "autapse")
    end_to_end = choose_policy("cpu", stc=stc, training=False, cpu=cpu_model()).end_to_end
    assert layouts and (all(layouts) if end_to_end else not any(layouts))
    torch.testing.assert_close(got.frames, want.frames, rtol=RTOL, atol=RTOL * want.frames.abs().max().item())


@pytest.mark.parametrize("affine", [True, False])
def test_channels_last_group_norm_is_group_norm(affine: bool) -> None:
    """The channels-last GroupNorm of the end-to-end path: GroupNorm's values (also on a frame sliced out of a
    sequence) and, by gradcheck, its exact derivative w.r.t. input, weight and bias."""
    g = torch.Generator().manual_seed(2)
    norm = nn.GroupNorm(4, 8, affine=affine).to(DT)
    if affine:
        with torch.no_grad():
            norm.weight.normal_(generator=g)
            norm.bias.normal_(generator=g)
    seq = (3 * torch.randn(2, 3, 5, 4, 8, generator=g, dtype=DT) + 1).requires_grad_(True)
    x = seq.permute(0, 1, 4, 2, 3)[:, 1]  # a frame of a channels-last (B, T, C, H, W) sequence
    assert fusion.is_channels_last(x) and not x.is_contiguous()
    y = fusion.group_norm(norm, x)
    assert y.grad_fn is not None and type(y.grad_fn).__name__ == "GroupNormChannelsLastBackward"
    torch.testing.assert_close(y, norm(x.contiguous()), rtol=1e-12, atol=1e-12)
    assert fusion.group_norm(norm, x.contiguous()).grad_fn.name() != y.grad_fn.name()  # NCHW: the native one
    params = (norm.weight, norm.bias) if affine else ()

    def f(x, *p):
        return fusion.GroupNormChannelsLast.apply(x, *(p or (None, None)), 4, norm.eps)

    x = x.detach().clone(memory_format=torch.channels_last).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ the policy


def test_choose_policy_is_a_pure_function_of_device_and_run() -> None:
    assert choose_policy("cpu", stc=True, training=True) == ExecutionPolicy(True, ("batched", "grouped"))
    assert choose_policy("cpu", stc=False, training=True) == ExecutionPolicy(True, ("batched", "grouped"))
    assert choose_policy("cpu", stc=True, training=False) == ExecutionPolicy(True, END_TO_END)
    assert choose_policy(torch.device("cpu"), stc=False, training=False) == ExecutionPolicy(True, ("batched",))
    assert choose_policy("meta", stc=True, training=False) == ExecutionPolicy(True, ("batched",))  # not a CPU
    # STC inference by CPU (oneDNN's kernels differ): end to end measured faster on an AMD EPYC, batched on an
    # Intel Xeon; training does not depend on it
    amd, intel = "AMD EPYC 9B14", "Intel(R) Xeon(R) Processor"
    assert choose_policy("cpu", stc=True, training=False, cpu=amd) == ExecutionPolicy(True, END_TO_END)
    assert choose_policy("cpu", stc=True, training=False, cpu=intel) == ExecutionPolicy(True, ("batched",))
    assert choose_policy("cpu", stc=False, training=False, cpu=amd) == ExecutionPolicy(True, ("batched",))
    assert choose_policy("cpu", stc=True, training=True, cpu=intel) == ExecutionPolicy(True, ("batched", "grouped"))


def test_the_policy_is_frozen_and_given_not_poked() -> None:
    import dataclasses

    from stcsnn.errors import StcsnnError
    from stcsnn.models import PLAIN

    policy = ExecutionPolicy(channels_last=["batched"])
    assert policy.channels_last == ("batched",) and hash(policy) == hash(ExecutionPolicy(True, ("batched",)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.fast = False
    with pytest.raises(StcsnnError, match="channels_last must be"):
        ExecutionPolicy(channels_last=("nhwc",))
    with pytest.raises(StcsnnError, match="fast path"):
        ExecutionPolicy(fast=False, channels_last=("batched",))
    model = make_model("stc_lif")
    with pytest.raises(AttributeError):
        model.fast = False  # the old knob: refused loudly instead of silently ignored
    assert model.policy is None and model.fast
    plain = SpikingPredictor("lif", 1, [16], kernel_size=3, patch_size=2, policy=PLAIN)
    assert plain.policy is PLAIN and not plain.fast
    x = torch.rand(1, 2, 1, 4, 4)
    assert plain.run_policy(x) is PLAIN and plain.run_policy(x, policy=policy) is policy
    with pytest.raises(StcsnnError, match="contradicts"):
        model.run_policy(x, fast=False, policy=policy)
    with torch.no_grad():  # this machine's CPU decides STC inference's layout
        assert model.run_policy(x) == choose_policy("cpu", stc=True, training=False, cpu=cpu_model())


# ------------------------------------------------------------------------------------------- norm_eps


@pytest.mark.parametrize("name", ["lif", "stc_lif", "lmh"])
def test_norm_eps_reaches_every_group_norm_and_both_paths(name: str) -> None:
    """``norm_eps`` (config key) is the epsilon of every GroupNorm of the model, on the fast and the plain path
    alike: both paths equal ``F.group_norm`` with that epsilon (checked by the float64 equality, whose plain
    path is torch's own GroupNorm) and differ from the default-epsilon model on the same weights."""
    from stcsnn.config import make_config

    cfg = make_config({"neuron": name, "hidden_channels": [16, 32], "kernel_size": 3, "patch_size": 2,
                       "frame_shape": [1, SIZE, SIZE], "norm_eps": 0.5})
    torch.manual_seed(0)
    model = build_model(cfg).to(DT)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.eps == 0.5 for m in norms)
    frames, mask = make_inputs("scheduled")
    ref = run(model, frames, mask, "scheduled", plain=True)
    assert_runs_close(run(model, frames, mask, "scheduled"), ref)
    default = build_model(make_config({**cfg.__dict__, "norm_eps": 1e-5})).to(DT)
    default.load_state_dict(model.state_dict())
    other = run(default, frames, mask, "scheduled", plain=True)
    assert (other[0] - ref[0]).abs().max() > 1e-3


def test_group_norm_of_an_all_zero_group_amplifies_gradients_by_one_over_sqrt_eps() -> None:
    """Why ``norm_eps`` exists: GroupNorm's input gradient is ``(dy - mean dy - xhat mean(dy xhat)) / sqrt(var +
    eps)``; over an all-zero group (a blank frame's convolution, a silent layer's spikes) xhat = 0 and var = 0,
    so the gradient is ``(dy - mean dy) / sqrt(eps)``: 316x at PyTorch's 1e-5 (hand-computed), 10x at 1e-2."""
    dy = torch.tensor([[[[1.0, -1.0]], [[3.0, -3.0]]]], dtype=DT)  # (1, 2, 1, 2), one group, mean 0
    for eps in (1e-5, 1e-2):
        x = torch.zeros(1, 2, 1, 2, dtype=DT, requires_grad=True)
        torch.nn.functional.group_norm(x, 1, eps=eps).backward(dy)
        torch.testing.assert_close(x.grad, dy / eps ** 0.5, rtol=1e-12, atol=0)
    assert round(1 / 1e-5 ** 0.5) == 316
