"""The fast path equals the straightforward reference (issue 6): outputs and parameter gradients.

The fast path (:meth:`SpikingPredictor.rollout`: layer by layer over the observed prefix, fused pathway
convolution, fused neuron updates, channels-last convolutions, optional activation checkpointing) is compared
with :func:`stcsnn.models.reference.reference_rollout` (one step at a time, the two STC pathways as separate
grouped convolutions, plain equations) for every registered neuron, on a fixed tiny batch, without a mask,
with a scheduled-sampling mask and with a reverse (PredRNN-v2) mask:

* float32: outputs and rates within 1e-5 relative; every parameter gradient within 1e-5 relative to the
  gradient's scale (the largest gradient entry of the model) -- the two paths round differently (other
  convolution algorithms, batched vs per-step, hand-written backward), and backpropagation through time
  amplifies rounding in gradients that are sums with cancellation (the scalar time constants);
* float64: the same comparison at 1e-9 -- the equations and the hand-written backward are the same;
* activation checkpointing: the same outputs bit for bit, the same gradients up to float rounding.

No timing here: speed is measured by ``stcsnn bench``, never asserted in tests.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stcsnn.models import SpikingPredictor, build_model
from stcsnn.models.fused import fused_update, has_fused
from stcsnn.models.reference import EQUATIONS, reference_rollout
from stcsnn.neurons import LIF, list_neurons

NEURONS = [name for name, _ in list_neurons()]
B, T_IN, T_OUT, SIZE = 2, 4, 4, 16
MASKS = ("none", "scheduled", "reverse")



def make_model(name: str, dtype=torch.float32, seed: int = 0) -> SpikingPredictor:
    torch.manual_seed(seed)
    # widths 16 and 32: one and two channels per pathway group (the fused layout interleaves both)
    return SpikingPredictor(name, 1, [16, 32], kernel_size=3, patch_size=2).to(dtype)


def make_inputs(kind: str, dtype=torch.float32):
    g = torch.Generator().manual_seed(11)
    frames = torch.rand(B, T_IN + T_OUT, 1, SIZE, SIZE, generator=g, dtype=torch.float64).to(dtype)
    mask = None
    if kind == "scheduled":
        mask = (torch.rand(B, T_OUT - 1, generator=g) < 0.5).to(dtype)
    elif kind == "reverse":
        mask = (torch.rand(B, T_IN + T_OUT - 2, generator=g) < 0.5).to(dtype)
    return frames, mask


def run(model: nn.Module, frames, mask, kind: str, reference: bool = False):
    """Rollout + a fixed random-weighted loss over every output; returns (frames, rates, {name: grad})."""
    model.zero_grad(set_to_none=True)
    reverse = kind == "reverse"
    if reference:
        out = reference_rollout(model, frames, T_IN, T_OUT, mask, reverse=reverse)
    else:
        out = model.rollout(frames, T_IN, T_OUT, mask, reverse=reverse)
    g = torch.Generator().manual_seed(5)
    weights = torch.randn(out.frames.shape, generator=g, dtype=torch.float64).to(out.frames.dtype)
    (out.frames * weights).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.frames.detach(), out.rates.detach(), grads


def assert_grads_close(got: dict, want: dict, rel: float) -> None:
    assert set(got) == set(want), f"parameters with gradients differ: {set(got) ^ set(want)}"
    scale = max(g.abs().max().item() for g in want.values())
    assert scale > 0
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rel, atol=rel * scale, msg=lambda m, n=name: f"{n}: {m}")


# ------------------------------------------------------------------------------------------------ equality


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", NEURONS)
def test_fast_path_matches_reference_float32(name: str, kind: str) -> None:
    model = make_model(name)
    frames, mask = make_inputs(kind)
    ref_frames, ref_rates, ref_grads = run(model, frames, mask, kind, reference=True)
    assert ref_frames[:, -T_OUT:].std() > 1e-3  # a live network, not a trivially silent one
    fast_frames, fast_rates, fast_grads = run(model, frames, mask, kind)
    torch.testing.assert_close(fast_frames, ref_frames, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_rates, ref_rates, rtol=1e-5, atol=1e-6)
    assert_grads_close(fast_grads, ref_grads, 1e-5)


@pytest.mark.parametrize("kind", ("none", "scheduled"))
@pytest.mark.parametrize("name", NEURONS)
def test_fast_path_matches_reference_float64(name: str, kind: str) -> None:
    model = make_model(name, torch.float64)
    frames, mask = make_inputs(kind, torch.float64)
    ref_frames, ref_rates, ref_grads = run(model, frames, mask, kind, reference=True)
    fast_frames, fast_rates, fast_grads = run(model, frames, mask, kind)
    torch.testing.assert_close(fast_frames, ref_frames, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fast_rates, ref_rates, rtol=1e-6, atol=1e-7)  # rates are accumulated in float32
    assert_grads_close(fast_grads, ref_grads, 1e-9)


@pytest.mark.parametrize("name", NEURONS)
def test_module_path_matches_reference(name: str) -> None:
    """``fast=False``: frame by frame through ``cell.synapse`` + ``cell.update`` (the neuron modules)."""
    model = make_model(name)
    frames, mask = make_inputs("scheduled")
    ref = run(model, frames, mask, "scheduled", reference=True)
    model.fast = False
    slow = run(model, frames, mask, "scheduled")
    torch.testing.assert_close(slow[0], ref[0], rtol=1e-5, atol=1e-6)
    assert_grads_close(slow[2], ref[2], 1e-5)


def test_every_spiking_neuron_has_fused_update_and_equations() -> None:
    """The fused updates and the reference equations cover the library's neurons (ANN baselines and
    user-defined neurons fall back to their own ``update`` -- tested below)."""
    for name in NEURONS:
        cell = make_model(name).cells[0]
        if getattr(cell, "is_ann", False):
            continue
        assert has_fused(cell), name
        core = getattr(cell, "base", cell)
        assert type(core) in EQUATIONS, name


# ------------------------------------------------------------------------------------------------ checkpointing


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", NEURONS)
def test_checkpointing_changes_nothing(name: str, kind: str) -> None:
    model = make_model(name)
    frames, mask = make_inputs(kind)
    plain = run(model, frames, mask, kind)
    for k in (1, 3, 100):
        model.checkpoint_steps = k
        ckpt = run(model, frames, mask, kind)
        assert torch.equal(ckpt[0], plain[0]), k
        torch.testing.assert_close(ckpt[1], plain[1], rtol=1e-6, atol=1e-7)
        assert_grads_close(ckpt[2], plain[2], 1e-5)


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
    assert torch.equal(a, b)
    model.checkpoint_steps = 2
    seen = []
    model.rollout(frames, T_IN, T_OUT, observer=lambda t, l, s, st: seen.append((t, l)))
    # once per update (no recomputation); the prefix is visited layer by layer
    assert sorted(seen) == [(t, l) for t in range(T_IN + T_OUT - 1) for l in range(2)]


def test_build_model_sets_checkpoint_steps() -> None:
    from stcsnn.config import make_config

    cfg = make_config({"neuron": "stc_lif", "dataset": "embedded", "hidden_channels": [16], "checkpoint_steps": 4})
    assert build_model(cfg).checkpoint_steps == 4


def test_negative_checkpoint_steps_rejected() -> None:
    from stcsnn.errors import StcsnnError

    with pytest.raises(StcsnnError, match="checkpoint_steps"):
        SpikingPredictor("lif", 1, [16], checkpoint_steps=-1)


# ------------------------------------------------------------------------------------------------ fallbacks


def test_memory_format_does_not_change_results() -> None:
    model = make_model("stc_lif")
    frames, mask = make_inputs("scheduled")
    outs = {}
    for cl in (False, True, "all"):
        model.channels_last = cl
        outs[cl] = run(model, frames, mask, "scheduled")
    for cl in (True, "all"):
        assert torch.equal(outs[cl][0], outs[False][0])
        assert_grads_close(outs[cl][2], outs[False][2], 1e-5)


class _MyLIF(LIF):
    """A subclass with its own update: no fused version, the fast path must run its ``update``."""

    calls = 0

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        type(self).calls += 1
        return super().update(current, state, temporal_gain, spatial_gain)


def test_unknown_cells_fall_back_to_their_update() -> None:
    model = make_model("lif")
    frames, _ = make_inputs("none")
    want = run(model, frames, None, "none")
    mine = make_model("lif")
    mine.cells = nn.ModuleList(_MyLIF(c.in_channels, c.hidden_channels, c.kernel_size) for c in model.cells)
    mine.load_state_dict(model.state_dict())
    assert fused_update(mine.cells[0], torch.zeros(1, 32, 2, 2), None, None) is None
    got = run(mine, frames, None, "none")
    assert _MyLIF.calls == 2 * (T_IN + T_OUT - 1)
    assert torch.equal(got[0], want[0])
    ref = run(mine, frames, None, "none", reference=True)
    assert torch.equal(ref[0], want[0])


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
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    assert_grads_close(got[2], want[2], 1e-5)


def test_runs_under_bf16_autocast() -> None:
    """bf16 autocast (``amp: bf16``; on a GPU in practice): the fused path runs forward and backward."""
    model = make_model("stc_lif")
    frames, mask = make_inputs("scheduled")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.rollout(frames, T_IN, T_OUT, mask)
    out.frames.float().square().mean().backward()
    assert torch.isfinite(out.frames.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
