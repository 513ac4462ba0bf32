"""SpikingPredictor: training signal per neuron, shapes, fast == step-by-step, no ground truth after the inputs,
the reference patch layout and scheduled-sampling masks. Tiny models (hidden 16, 32x32 frames, patch 4).

Where two different computation paths are compared (the fast path and the step-by-step one; a prefix of
T_in frames batched or stepped; another batch size) the model and the frames are float64 and the tolerance
is ``TOL``: the paths round differently (convolution kernels depend on the CPU and the shape), and in float32
one rounding difference at a threshold can flip a spike. Comparisons of one path with itself stay exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stcsnn.config import make_config
from stcsnn.data import build_dataset
from stcsnn.models import PLAIN, SpikingPredictor, build_model, from_patches, to_patches
from stcsnn.neurons import list_neurons

NEURONS = [name for name, _ in list_neurons()]
T_IN, T_OUT = 3, 3
TOL = 1e-9  # float64, two paths: they agree to ~1e-13 (tests/test_fast_path.py)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """A fixed batch of 4 real sequences (embedded moving Fashion-MNIST on a 32x32 canvas), (4, 6, 1, 32, 32)."""
    ds = build_dataset("embedded", "train", canvas_size=32, num_samples=4, input_frames=T_IN, output_frames=T_OUT)
    seqs = [np.concatenate([x, y]) for x, y in (ds[i] for i in range(4))]
    out = torch.as_tensor(np.stack(seqs)).float()
    assert out.shape == (4, T_IN + T_OUT, 1, 32, 32)
    return out


def tiny(neuron: str = "stc_lif", hidden=(16,), seed: int = 0, **kw) -> SpikingPredictor:
    torch.manual_seed(seed)
    return SpikingPredictor(neuron, 1, list(hidden), kernel_size=3, patch_size=4, **kw)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to float64 rounding (relative to the larger tensor's scale)."""
    return torch.allclose(a, b, rtol=TOL, atol=TOL * max(a.abs().max().item(), b.abs().max().item(), 1.0))


def loss_of(model: SpikingPredictor, frames: torch.Tensor) -> torch.Tensor:
    out = model.rollout(frames, T_IN, T_OUT).frames
    return F.mse_loss(out, frames[:, 1:])


# ----------------------------------------------------------------------------------------------- training signal

@pytest.mark.parametrize("neuron", NEURONS)
def test_optimizer_steps_reduce_the_loss(neuron, frames):
    """The first Adam step lowers the loss on a fixed batch, and three steps lower it clearly."""
    model = tiny(neuron)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):
        loss = loss_of(model, frames)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0, f"{neuron}: no gradient reaches the parameters"
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(loss_of(model, frames).item())
    assert losses[1] < losses[0], f"{neuron}: one step did not reduce the loss: {losses}"
    assert losses[-1] < 0.99 * losses[0], f"{neuron}: three steps did not reduce the loss: {losses}"


# ----------------------------------------------------------------------------------------------- shapes

def test_output_shapes(frames):
    model = tiny(hidden=(16, 16))
    out = model.rollout(frames, T_IN, T_OUT)
    assert out.frames.shape == (4, T_IN + T_OUT - 1, 1, 32, 32)
    assert out.rates.shape == (2,)
    assert ((out.rates >= 0) & (out.rates <= 1)).all()
    pred = model(frames[:, :T_IN], n_future=5)
    assert pred.shape == (4, 5, 1, 32, 32)
    assert pred.dtype == torch.float32
    # one input frame and one predicted frame: a single step
    assert model(frames[:, :1], n_future=1).shape == (4, 1, 1, 32, 32)


def test_build_model_from_config():
    cfg = make_config({"neuron": "stc_lif", "hidden_channels": [16, 32], "kernel_size": 3, "patch_size": 4,
                       "frame_shape": [2, 16, 16]})
    model = build_model(cfg)
    assert isinstance(model, torch.nn.Module)
    assert len(model.cells) == 2
    assert model.readout.weight.shape == (4 * 4 * 2, 32, 1, 1)
    assert model.readout.bias is None
    x = torch.rand(2, 3, 2, 16, 16)
    assert model(x, n_future=2).shape == (2, 2, 2, 16, 16)


def test_model_rejects_bad_frames(frames):
    from stcsnn.errors import StcsnnError

    model = tiny()
    with pytest.raises(StcsnnError, match="channels"):
        model(torch.rand(1, 3, 2, 32, 32), n_future=1)
    with pytest.raises(StcsnnError, match="floating point"):
        model((frames[:, :T_IN] * 255).to(torch.uint8), n_future=1)
    with pytest.raises(StcsnnError, match=r"\(B, T, C, H, W\)"):
        model(frames[0, :T_IN], n_future=1)
    with pytest.raises(StcsnnError, match="divide"):
        model(torch.rand(1, 3, 1, 30, 30), n_future=1)


# ----------------------------------------------------------------------------------------------- fast path

@pytest.mark.parametrize("neuron", NEURONS)
def test_fast_prefix_equals_step_by_step(neuron, frames):
    model = tiny(neuron, hidden=(16, 16)).double()
    results = []
    for fast in (True, False):
        model.zero_grad()
        x = frames.double().requires_grad_(True)
        out = model.rollout(x, T_IN, T_OUT, policy=None if fast else PLAIN)
        loss = F.mse_loss(out.frames, x.detach()[:, 1:])
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        grads["<input>"] = x.grad
        results.append((out.frames.detach(), out.rates, grads))
    (fa, ra, ga), (fb, rb, gb) = results
    assert close(fa, fb)
    assert torch.allclose(ra, rb, rtol=0, atol=1e-6)  # rates are accumulated in float32
    assert ga.keys() == gb.keys() and ga
    scale = max(g.abs().max().item() for g in gb.values())
    for name in ga:
        assert torch.allclose(ga[name], gb[name], rtol=TOL, atol=TOL * scale), name


def test_fast_equals_slow_with_masks(frames):
    """Also with scheduled-sampling masks (the reverse one uses a prefix of a single frame)."""
    model = tiny(hidden=(16, 16)).double()
    frames = frames.double()
    g = torch.Generator().manual_seed(3)
    for reverse, width in ((False, T_OUT - 1), (True, T_IN + T_OUT - 2)):
        mask = (torch.rand(4, width, generator=g) < 0.5).double()
        outs = []
        for fast in (True, False):
            outs.append(model.rollout(frames, T_IN, T_OUT, mask=mask, reverse=reverse,
                                      policy=None if fast else PLAIN).frames.detach())
        assert close(outs[0], outs[1]), f"reverse={reverse}"


# ----------------------------------------------------------------------------------------------- no ground truth

def test_rollout_without_mask_never_reads_future_frames(frames):
    model = tiny(hidden=(16, 16)).double()
    frames = frames.double()
    ref = model.rollout(frames, T_IN, T_OUT).frames
    garbage = frames.clone()
    garbage[:, T_IN:] = float("nan")
    out = model.rollout(garbage, T_IN, T_OUT).frames
    assert torch.isfinite(out).all()
    assert torch.equal(out, ref)  # the same path on the same observed frames
    # the same with the slow path (another path: to rounding), and with random garbage instead of NaN
    garbage[:, T_IN:] = torch.rand_like(garbage[:, T_IN:]) * 100
    assert close(model.rollout(garbage, T_IN, T_OUT, policy=PLAIN).frames, ref)
    # and with no future frames at all: model(inputs, n_future) gives the predicted part
    pred = model(frames[:, :T_IN], n_future=T_OUT)
    assert torch.equal(pred, ref[:, -T_OUT:])


def test_prediction_depends_on_the_inputs(frames):
    """Sanity for the test above: the model does read its inputs (changing an input frame changes the output)."""
    model = tiny(hidden=(16, 16))
    a = model(frames[:, :T_IN], n_future=2)
    changed = frames[:, :T_IN].clone()
    changed[:, -1] = changed[:, -1].flip(-1)
    assert not torch.equal(a, model(changed, n_future=2))


def test_model_forward_is_differentiable(frames):
    model = tiny()
    inputs = frames[:, :T_IN].clone().requires_grad_(True)
    pred = model(inputs, n_future=2)
    pred.sum().backward()
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0
    assert model.readout.weight.grad is not None


def test_evaluate_uses_no_ground_truth(frames):
    """``evaluate`` gives the same predictions whatever the targets hold (only the metrics change)."""
    from stcsnn.train.evaluate import evaluate_model

    cfg = make_config({"hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "input_frames": T_IN,
                       "output_frames": T_OUT, "batch_size": 2})
    model = tiny().double()  # evaluate batches by 2, the direct call by 4: other kernels, float64
    frames = frames.double()
    inputs, targets = frames[:, :T_IN], frames[:, T_IN:]
    true_set = torch.utils.data.TensorDataset(inputs, targets)
    fake_set = torch.utils.data.TensorDataset(inputs, torch.rand_like(targets))
    res_true, s_true = evaluate_model(model, true_set, cfg, torch.device("cpu"), keep=4)
    res_fake, s_fake = evaluate_model(model, fake_set, cfg, torch.device("cpu"), keep=4)
    assert np.array_equal(s_true["pred"], s_fake["pred"])
    assert s_true["pred"].shape == (4, T_OUT, 1, 32, 32)
    assert res_true["mse"] != res_fake["mse"]
    expected = model(inputs, n_future=T_OUT).detach().float().numpy()
    assert np.allclose(s_true["pred"], expected, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------- patch layout

@pytest.mark.parametrize("p,c", [(2, 1), (4, 2), (1, 3)])
def test_patch_layout_matches_the_reference_loop(p, c):
    b, t, h, w = 2, 3, 8, 12
    frames = torch.randn(b, t, c, h, w)
    patches = to_patches(frames, p)
    assert patches.shape == (b, t, p * p * c, h // p, w // p)
    expected = torch.empty_like(patches)
    for py in range(p):
        for px in range(p):
            for ch in range(c):
                for y in range(h // p):
                    for x in range(w // p):
                        expected[:, :, (py * p + px) * c + ch, y, x] = frames[:, :, ch, y * p + py, x * p + px]
    assert torch.equal(patches, expected)
    assert torch.equal(from_patches(patches, p), frames)


def test_patch_layout_is_not_pixel_unshuffle():
    frames = torch.randn(1, 1, 2, 4, 4)
    ours = to_patches(frames, 2)[0, 0]
    theirs = F.pixel_unshuffle(frames[0], 2)[0]
    assert not torch.equal(ours, theirs)
    # the same values, permuted: (py, px, c) here, (c, py, px) in pixel_unshuffle
    assert torch.equal(ours.reshape(2, 2, 2, 2, 2).permute(2, 0, 1, 3, 4).reshape(8, 2, 2), theirs)


# ----------------------------------------------------------------------------------------------- scheduled sampling

def test_mask_of_ones_feeds_the_true_frames(frames):
    """All ones: every step reads the true frame, i.e. the same as treating all frames as inputs (a longer
    batched prefix: another path, float64)."""
    model = tiny(hidden=(16, 16)).double()
    frames = frames.double()
    ones = torch.ones(4, T_OUT - 1, dtype=torch.float64)
    got = model.rollout(frames, T_IN, T_OUT, mask=ones).frames
    steps = T_IN + T_OUT - 1
    teacher = model.rollout(frames, steps, 1).frames  # all frames but the last are inputs
    assert got.shape == teacher.shape
    assert close(got, teacher)
    # and it differs from the autoregressive rollout (the test can tell the two apart)
    free = model.rollout(frames, T_IN, T_OUT).frames
    assert not torch.allclose(got[:, T_IN:], free[:, T_IN:], atol=1e-4)


def test_mask_of_zeros_feeds_the_predictions(frames):
    model = tiny(hidden=(16, 16))
    zeros = torch.zeros(4, T_OUT - 1)
    got = model.rollout(frames, T_IN, T_OUT, mask=zeros).frames
    free = model.rollout(frames, T_IN, T_OUT).frames
    assert torch.allclose(got, free, rtol=0, atol=1e-6)
    garbage = frames.clone()
    garbage[:, T_IN:] = torch.rand_like(garbage[:, T_IN:]) * 100  # never read where the mask is 0
    assert torch.allclose(model.rollout(garbage, T_IN, T_OUT, mask=zeros).frames, free, rtol=0, atol=1e-6)


def test_mask_selects_per_sample_and_per_step(frames):
    model = tiny(hidden=(16, 16)).double()
    frames = frames.double()
    steps = T_IN + T_OUT - 1
    teacher = model.rollout(frames, steps, 1).frames
    free = model.rollout(frames, T_IN, T_OUT).frames
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    got = model.rollout(frames, T_IN, T_OUT, mask=mask).frames
    assert close(got[0], teacher[0])
    assert close(got[1], free[1])
    # sample 2 reads the true frame at step T_IN only: equal to teacher forcing up to the output of step T_IN
    assert close(got[2, :T_IN + 1], teacher[2, :T_IN + 1])
    # sample 3 reads its own prediction at step T_IN: equal to the free run up to the output of step T_IN
    assert close(got[3, :T_IN + 1], free[3, :T_IN + 1])
    assert not torch.allclose(got[3], free[3], atol=1e-4)


def test_reverse_mask_covers_the_input_frames_too(frames):
    """PredRNN-v2: the mask also covers steps 1..T_in-1; all ones = teacher forcing, zeros at an input step
    feed the prediction instead of the observed frame."""
    model = tiny(hidden=(16, 16)).double()
    frames = frames.double()
    steps = T_IN + T_OUT - 1
    teacher = model.rollout(frames, steps, 1).frames
    ones = torch.ones(4, steps - 1, dtype=torch.float64)
    assert close(model.rollout(frames, T_IN, T_OUT, mask=ones, reverse=True).frames, teacher)
    mask = ones.clone()
    mask[:, 0] = 0  # step 1 (an input step) reads the prediction of frame 2
    got = model.rollout(frames, T_IN, T_OUT, mask=mask, reverse=True).frames
    assert close(got[:, 0], teacher[:, 0])  # step 0 always reads frame 1
    assert not torch.allclose(got[:, 1], teacher[:, 1], atol=1e-4)
    # the reverse mask has T_in + T_out - 2 columns; the plain one T_out - 1
    from stcsnn.errors import StcsnnError

    with pytest.raises(StcsnnError, match="mask"):
        model.rollout(frames, T_IN, T_OUT, mask=torch.ones(4, T_OUT - 1, dtype=torch.float64), reverse=True)
