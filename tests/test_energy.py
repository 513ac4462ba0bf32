"""``stcsnn energy``: hook counts against a hand count on small models.

Hand count of a k x k convolution, stride 1, same padding: ``k*k * C_in/groups * C_out * H * W`` MACs per
frame; the predictor applies every convolution once per time step (``input_frames + n_future - 1`` steps).
"""

from __future__ import annotations

import json

import pytest
import torch

from stcsnn.analysis.energy import E_AC_PJ, E_MAC_PJ, count_operations
from stcsnn.cli import main
from stcsnn.models import PLAIN, SpikingPredictor

# frames 1 x 8 x 8, patch 2 -> 4 channels of 4 x 4; 2 input frames + 2 future -> 3 steps; batch 2
B, T_IN, N_FUT, STEPS, HW = 2, 2, 2, 3, 4 * 4


def frames(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T_IN + N_FUT, 1, 8, 8, generator=g)


def by_module(report) -> dict[str, dict]:
    return {r["module"]: r for r in report.convs}


@pytest.mark.parametrize("fast", [True, False])
def test_lif_two_layers_macs_match_hand_count(fast):
    torch.manual_seed(0)
    # time-batched prefix or step by step: the same calls per frame
    model = SpikingPredictor("lif", 1, [16, 32], kernel_size=3, patch_size=2, policy=None if fast else PLAIN)
    report = count_operations(model, [frames()], T_IN, N_FUT)
    convs = by_module(report)
    assert set(convs) == {"cells.0.synapse.conv", "cells.1.synapse.conv", "readout"}
    hand = {
        "cells.0.synapse.conv": 3 * 3 * 4 * 16 * HW * STEPS,
        "cells.1.synapse.conv": 3 * 3 * 16 * 32 * HW * STEPS,
        "readout": 1 * 1 * 32 * 4 * HW * STEPS,
    }
    for name, macs in hand.items():
        assert convs[name]["macs"] == macs, name
        assert convs[name]["frames_per_sample"] == STEPS
    assert report.total["macs"] == sum(hand.values())
    assert report.steps == STEPS and report.samples == B
    # parameters: conv weights + GroupNorm affine; the readout has no bias
    assert convs["cells.1.synapse.conv"]["params"] == 3 * 3 * 16 * 32
    layers = {r["layer"]: r for r in report.layers}
    assert layers["layer 1"]["params"] == 3 * 3 * 16 * 32 + 2 * 32
    assert layers["readout"]["params"] == 32 * 4
    assert layers["layer 0"]["neuron_updates"] == 16 * HW * STEPS
    # the first layer (real-valued frames) and the readout count as MACs; layer 1 reads spikes
    assert convs["cells.0.synapse.conv"]["sops"] == 0 and convs["cells.0.synapse.conv"]["op"] == "MAC"
    assert convs["readout"]["sops"] == 0 and convs["readout"]["op"] == "MAC"
    assert convs["cells.1.synapse.conv"]["op"] == "AC"


def test_stc_autapse_grouped_conv_hand_count():
    torch.manual_seed(0)
    model = SpikingPredictor("stc_lif", 1, [16], kernel_size=3, patch_size=2)
    convs = by_module(count_operations(model, [frames()], T_IN, N_FUT))
    # fused pathways: one conv 16 -> 32 with 16 groups: 3*3 * (16/16) * 32 per pixel
    assert convs["cells.0.autapse.conv"]["macs"] == 3 * 3 * 1 * 32 * HW * STEPS
    assert convs["cells.0.autapse.conv"]["groups"] == 16
    assert convs["cells.0.base.synapse.conv"]["macs"] == 3 * 3 * 4 * 16 * HW * STEPS  # STC(IF): the base's


def _set_current(model: SpikingPredictor, layer: int, value: float) -> None:
    """Make layer ``layer``'s synaptic current the constant ``value`` (GroupNorm weight 0, bias value)."""
    norm = model.cells[layer].synapse.norm
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.fill_(value)


def test_sops_with_controlled_spikes():
    torch.manual_seed(0)
    model = SpikingPredictor("lif", 1, [16, 32], kernel_size=3, patch_size=2)
    layer1_macs = 3 * 3 * 16 * 32 * HW * STEPS
    # layer 0 silent (current -10 never reaches threshold): layer 1 receives all-zero spikes -> 0 SOPs
    _set_current(model, 0, -10.0)
    report = count_operations(model, [frames()], T_IN, N_FUT)
    conv = by_module(report)["cells.1.synapse.conv"]
    assert conv["input_rate"] == 0.0 and conv["sops"] == 0.0 and conv["macs"] == layer1_macs
    # layer 0 always fires (LIF: H = V/2 + 10/2 >= 1 every step): rate 1 -> SOPs = MACs
    _set_current(model, 0, 10.0)
    report = count_operations(model, [frames()], T_IN, N_FUT)
    conv = by_module(report)["cells.1.synapse.conv"]
    assert conv["input_rate"] == 1.0 and conv["sops"] == layer1_macs
    # energy: real-valued inputs as MACs, spikes as ACs; the ANN pays MACs for everything
    total = report.total
    real_macs = report.total["macs"] - layer1_macs
    assert total["energy_snn_pj"] == pytest.approx(E_MAC_PJ * real_macs + E_AC_PJ * layer1_macs)
    assert total["energy_ann_pj"] == pytest.approx(E_MAC_PJ * total["macs"])


def test_sops_follow_the_measured_rate():
    torch.manual_seed(0)
    model = SpikingPredictor("lif", 1, [16, 16], kernel_size=3, patch_size=2)
    spikes = []
    model.rollout(frames(), T_IN, N_FUT, observer=lambda t, l, s, st: spikes.append(s) if l == 0 else None)
    report = count_operations(model, [frames()], T_IN, N_FUT)
    conv = by_module(report)["cells.1.synapse.conv"]
    rate = torch.stack(spikes).mean().item()
    assert 0 < rate < 1
    assert conv["input_rate"] == pytest.approx(rate)
    assert conv["sops"] == pytest.approx(conv["macs"] * rate)


def test_convlstm_counts_every_conv_as_mac():
    torch.manual_seed(0)
    model = SpikingPredictor("convlstm", 1, [16], kernel_size=3, patch_size=2)
    report = count_operations(model, [frames()], T_IN, N_FUT)
    convs = by_module(report)
    assert convs["cells.0.synapse"]["macs"] == 3 * 3 * 4 * 64 * HW * STEPS
    assert convs["cells.0.recurrent"]["macs"] == 3 * 3 * 16 * 64 * HW * STEPS
    assert report.total["sops"] == 0
    assert report.total["energy_snn_pj"] == pytest.approx(report.total["energy_ann_pj"])


CONFIG = """\
dataset: embedded
data_options: {canvas_size: 32, test_samples: 2}
neuron: lif
hidden_channels: [16]
input_frames: 2
output_frames: 2
"""


def test_cli_writes_csv_and_json(tmp_path, capsys):
    out = tmp_path / "e"
    (tmp_path / "c.yaml").write_text(CONFIG)
    rc = main(["energy", "--config", str(tmp_path / "c.yaml"), "--batch-size", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "E_ANN / E_SNN" in text
    data = json.loads((out / "energy.json").read_text())
    # 32x32 frames, patch 4 -> 16 channels of 8x8; 3 steps; kernel 5
    syn = next(r for r in data["convs"] if r["module"] == "cells.0.synapse.conv")
    assert syn["macs"] == 5 * 5 * 16 * 16 * 64 * 3
    assert (out / "energy.csv").read_text().splitlines()[0].startswith("layer,module,role")
    assert (out / "energy_layers.csv").is_file()


def test_cli_needs_config_or_checkpoint(capsys):
    assert main(["energy"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
