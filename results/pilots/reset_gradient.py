"""Pilot only (run before LM-H's ``detach_reset`` option existed; the option now computes the same):
LM-H with the gradient through the reset (V = H - S, not H - sg(S)), then ``neuron_lr_scale.py``:
``NEURON_LR_SCALE=0 python reset_gradient.py --threads 1 train --config <cell config.yaml> --quiet --out DIR``."""

from pathlib import Path

from stcsnn.neurons import lmh
from stcsnn.neurons.tclif import TwoCompartmentState


def update(self, current, state, temporal_gain=None, spatial_gain=None):
    d, h = lmh.lmh_charge(current, state.d, state.v, *self.coefficients(), temporal_gain, spatial_gain)
    s = self.spike_fn(h - 1.0)
    return s, TwoCompartmentState(d, h - s, s)


def fused_update(self, current, state, pathways):
    assert pathways is None
    return self.update(current, state)


lmh.LMH.update = update
lmh.LMH.fused_update = fused_update
exec(Path(__file__).with_name("neuron_lr_scale.py").read_text())
