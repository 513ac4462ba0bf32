"""stcsnn neurons inside networks of the field's libraries.

**SpikingJelly** keeps each neuron's state inside the module, switches single-step (``step_mode="s"``: one
(B, ...) input per call) and multi-step (``"m"``: a (T, B, ...) sequence per call) with
``functional.set_step_mode``, and clears the states with ``functional.reset_net``. :class:`SpikingJellyNeuron`
wraps a :class:`~stcsnn.neurons.layer.NeuronLayer` with that protocol: it holds the layer's state between
calls and is a ``spikingjelly.activation_based.base.MemoryModule`` when SpikingJelly is installed (so
``reset_net`` and ``set_step_mode`` treat it as one of theirs); without SpikingJelly it is a plain module with
the same ``step_mode`` and ``reset()``::

    net = nn.Sequential(layer.Linear(28, 64), SpikingJellyNeuron(build_layer("stc_lif", 64)), layer.Linear(64, 10))
    functional.set_step_mode(net, "m"); y = net(x_seq); functional.reset_net(net)

**snnTorch** neurons take and return their state explicitly (``spk, mem = lif(cur, mem)``), which is the
:class:`~stcsnn.neurons.layer.NeuronLayer` convention already (``spk, state = layer(cur, state)``): no adapter.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from stcsnn.errors import StcsnnError
from stcsnn.neurons.layer import NeuronLayer

try:  # optional: the `interop` extra
    from spikingjelly.activation_based.base import MemoryModule as _Base

    HAVE_SPIKINGJELLY = True
except ImportError:
    _Base = nn.Module
    HAVE_SPIKINGJELLY = False

STEP_MODES = ("s", "m")


class SpikingJellyNeuron(_Base):
    """A :class:`NeuronLayer` with SpikingJelly's hidden-state protocol: ``y = neuron(x)`` (``step_mode`` "s": x
    (B, C, ...); "m": x (T, B, C, ...)); the state carried between calls is ``neuron.state`` (None after
    :meth:`reset`)."""

    def __init__(self, layer: NeuronLayer, step_mode: str = "s") -> None:
        if not isinstance(layer, NeuronLayer):
            raise StcsnnError(f"expected a NeuronLayer (stcsnn.neurons.build_layer), got {type(layer).__name__}")
        super().__init__()
        self.layer = layer
        if HAVE_SPIKINGJELLY:
            self.register_memory("state", None)
        else:
            self.state = None
        self.step_mode = step_mode

    @property
    def step_mode(self) -> str:
        return self._stcsnn_step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in STEP_MODES:
            raise StcsnnError(f"step_mode must be 's' (single step) or 'm' (multi step), got {value!r}")
        self._stcsnn_step_mode = value

    def supported_step_mode(self) -> tuple[str, ...]:
        return STEP_MODES

    def reset(self) -> None:
        """Forget the state: the next call starts from zeros (what ``functional.reset_net`` calls)."""
        self.state = None

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        if args:
            raise StcsnnError(f"SpikingJellyNeuron takes one input tensor, got {1 + len(args)}")
        step = self.layer if self.step_mode == "s" else self.layer.multi_step
        spikes, self.state = step(x, self.state)
        return spikes

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode!r}"


__all__ = ["HAVE_SPIKINGJELLY", "SpikingJellyNeuron"]
