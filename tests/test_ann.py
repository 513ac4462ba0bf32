"""The ConvLSTM baseline: OpenSTL's equations, the cell contract, the same predictor.

The reference below is written from OpenSTL's ``ConvLSTMCell.forward`` / ``ConvLSTM_Model.forward``
(``openstl/modules/convlstm_modules.py``, ``openstl/models/convlstm_model.py``, layer_norm=0) with plain
``F.conv2d``, independently of :mod:`stcsnn.neurons.convlstm`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.errors import StcsnnError
from stcsnn.io import atomic_torch_save
from stcsnn.models import PLAIN, SpikingPredictor, build_model, from_patches, to_patches
from stcsnn.models.loading import load_model, model_checkpoint
from stcsnn.neurons import build_neuron, get_spec, list_neurons
from stcsnn.neurons.convlstm import ConvLSTMCell, LSTMState

DT = torch.float64



def ref_cell(x, h, c, w_x, w_h, forget_bias=0.0):
    """OpenSTL ConvLSTMCell.forward (no layer norm)."""
    pad = w_x.shape[-1] // 2
    n = h.shape[1]
    i_x, f_x, g_x, o_x = torch.split(F.conv2d(x, w_x, padding=pad), n, dim=1)
    i_h, f_h, g_h, o_h = torch.split(F.conv2d(h, w_h, padding=pad), n, dim=1)
    i_t = torch.sigmoid(i_x + i_h)
    f_t = torch.sigmoid(f_x + f_h + forget_bias)
    g_t = torch.tanh(g_x + g_h)
    c_new = f_t * c + i_t * g_t
    o_t = torch.sigmoid(o_x + o_h)
    return o_t * torch.tanh(c_new), c_new


def ref_model(frames, weights, w_last, t_in, n_future, patch, mask=None):
    """OpenSTL ConvLSTM_Model.forward over patches (scheduled sampling mask as there)."""
    x = to_patches(frames, patch)
    b, _, _, hh, ww = x.shape
    hs = [torch.zeros(b, wh.shape[1], hh, ww, dtype=x.dtype) for _, wh in weights]
    cs = [h.clone() for h in hs]
    outs, x_gen = [], None
    for t in range(t_in + n_future - 1):
        if t < t_in:
            net = x[:, t]
        elif mask is None:
            net = x_gen
        else:
            m = mask[:, t - t_in].view(-1, 1, 1, 1).to(x.dtype)
            net = m * x[:, t] + (1 - m) * x_gen
        for l, (w_x, w_h) in enumerate(weights):
            hs[l], cs[l] = ref_cell(net if l == 0 else hs[l - 1], hs[l], cs[l], w_x, w_h)
            net = hs[l]
        x_gen = F.conv2d(hs[-1], w_last)
        outs.append(x_gen)
    return from_patches(torch.stack(outs, 1), patch)


def test_registered_as_ann_baseline(capsys):
    names = [n for n, _ in list_neurons()]
    assert "convlstm" in names
    desc = dict(list_neurons())["convlstm"]
    assert "ANN baseline" in desc
    assert getattr(get_spec("convlstm").cls, "is_ann", False)
    assert not get_spec("convlstm").is_stc
    assert main(["neurons"]) == 0
    assert "convlstm" in capsys.readouterr().out


def test_cell_matches_openstl_equations():
    torch.manual_seed(0)
    cell = build_neuron("convlstm", 3, 16, 3).to(DT)
    assert isinstance(cell, ConvLSTMCell)
    x = torch.randn(2, 3, 5, 6, dtype=DT)
    h, state = cell(x)
    assert type(state) is LSTMState and state.s is h and h.shape == (2, 16, 5, 6)
    zero = torch.zeros(2, 16, 5, 6, dtype=DT)
    rh, rc = ref_cell(x, zero, zero, cell.synapse.weight, cell.recurrent.weight)
    torch.testing.assert_close(h, rh)
    torch.testing.assert_close(state.c, rc)
    h2, state2 = cell(x * 0.5, state)
    rh2, rc2 = ref_cell(x * 0.5, rh, rc, cell.synapse.weight, cell.recurrent.weight)
    torch.testing.assert_close(h2, rh2)
    torch.testing.assert_close(state2.c, rc2)
    # the contract: synapse then update
    cur = cell.synapse(x)
    h3, _ = cell.update(cur, cell.init_state(cur))
    torch.testing.assert_close(h3, rh)


def test_forget_bias_option_and_bad_options():
    torch.manual_seed(0)
    cell = build_neuron("convlstm", 3, 16, 3, forget_bias=1.0).to(DT)
    x = torch.randn(1, 3, 4, 4, dtype=DT)
    _, s1 = cell(x)
    _, s2 = cell(x, s1)
    rh, rc = ref_cell(x, s1.s, s1.c, cell.synapse.weight, cell.recurrent.weight, forget_bias=1.0)
    torch.testing.assert_close(s2.c, rc)
    with pytest.raises(StcsnnError, match="surrogate"):
        build_neuron("convlstm", 3, 16, 3, surrogate="atan")
    with pytest.raises(StcsnnError, match="gradient_detach"):
        build_neuron("convlstm", 3, 16, 3, gradient_detach=True)
    with pytest.raises(StcsnnError, match="STC"):
        cell.update(cell.synapse(x), s1, temporal_gain=torch.ones(1))
    with pytest.raises(StcsnnError):
        cell(x, LSTMState(torch.zeros(1, 16, 3, 3), torch.zeros(1, 16, 3, 3)))


@pytest.mark.parametrize("fast", [True, False])
def test_predictor_stacks_convlstm_like_openstl(fast):
    torch.manual_seed(0)
    model = SpikingPredictor("convlstm", 1, [16, 16], kernel_size=3, patch_size=2,
                             policy=None if fast else PLAIN).to(DT)
    frames = torch.rand(2, 6, 1, 8, 8, dtype=DT)
    weights = [(c.synapse.weight, c.recurrent.weight) for c in model.cells]
    out = model.rollout(frames, 3, 3).frames
    torch.testing.assert_close(out, ref_model(frames, weights, model.readout.weight, 3, 3, 2))
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)
    out = model.rollout(frames, 3, 3, mask).frames
    torch.testing.assert_close(out, ref_model(frames, weights, model.readout.weight, 3, 3, 2, mask))


def test_build_model_and_checkpoint_round_trip(tmp_path):
    cfg = make_config({"neuron": "convlstm", "hidden_channels": [16], "kernel_size": 3, "frame_shape": [1, 8, 8],
                       "patch_size": 2, "neuron_options": {"forget_bias": 1.0}})
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.cells[0].forget_bias == 1.0
    atomic_torch_save(model_checkpoint(model, cfg), tmp_path / "m.pt")
    loaded, cfg2 = load_model(tmp_path / "m.pt")
    assert cfg2.neuron == "convlstm"
    x = torch.rand(1, 3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 2), model.eval()(x, 2))
