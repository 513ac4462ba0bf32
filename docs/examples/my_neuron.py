"""An example of a user-defined neuron, outside the stcsnn package: one file, one registration.

Train it with ``stcsnn --plugin my_neuron train --config my.yaml`` (the folder of this file on PYTHONPATH) where
``my.yaml`` says ``neuron: my_lif`` (or ``stc_my_lif``, the STC circuit around it).
"""

from __future__ import annotations

from torch import Tensor

from stcsnn.neurons import MembraneState, SpikingCell, register_neuron, register_stc
from stcsnn.neurons.base import gain


def my_lif_step(current: Tensor, state: MembraneState, spike_fn, decay: float = 0.75,
                temporal_gain: Tensor | None = None, spatial_gain: Tensor | None = None
                ) -> tuple[Tensor, MembraneState]:
    """H[t] = decay V[t-1] G_A + (1 - decay) I[t] G_B;  S[t] = Theta(H[t] - 1);  V[t] = H[t] - S[t]."""
    h = decay * gain(state.v, temporal_gain) + (1.0 - decay) * gain(current, spatial_gain)
    s = spike_fn(h - 1.0)
    return s, MembraneState(h - s, s)


@register_neuron("my_lif", "example user neuron: a LIF with decay 0.75")
class MyLIF(SpikingCell):
    """The cell contract: ``State`` (with the previous spikes in ``s``) and ``update`` scaling the carried-over
    membrane by ``temporal_gain`` and the input by ``spatial_gain`` (so ``STC(MyLIF(...))`` works)."""

    State = MembraneState

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        return my_lif_step(current, state, self.spike_fn, 0.75, temporal_gain, spatial_gain)


register_stc("stc_my_lif", MyLIF, "example: the STC circuit around my_lif")
