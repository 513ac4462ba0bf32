"""Any registered spiking neuron as a layer of your own model: the neuron stepped on a current you computed.

::

    layer = build_layer("stc_lif", 128)                 # after nn.Linear(..., 128): currents (B, 128)
    spikes, state = layer(current)                      # one step; state=None means fresh zeros
    spikes, state = layer(current, state)               # the next step
    spike_seq, state = layer.multi_step(currents)       # (T, B, 128) in one call

The layer is the neuron module of the conv cells without their synapse (``in_channels=None``), stepped by the
same :meth:`stcsnn.neurons.base.Cell.neuron_step` the conv cells and the predictor use: one copy of every
equation. A current of shape (B, C), (B, C, L) or (B, C, H, W) is stepped as the (B, C, H, W) view
(B, C, 1, 1) / (B, C, L, 1) / itself, so the per-channel coefficients, the fused updates and the STC autapse's
grouped layout are the conv cells' own. The STC autapse (``stc_*`` neurons) maps the previous spikes with a
16-group 1 x 1 (``dims=0``: a grouped linear map), k x 1 (``dims=1``: a grouped conv1d) or k x k (``dims=2``:
the paper's conv2d) kernel followed by GroupNorm(32), so an STC layer is built for one of the three ranks;
the other neurons are elementwise and take any (B, C, ...) current.

State is explicit, as everywhere in stcsnn: the neuron's NamedTuple (``MembraneState(v, s)``, ...) shaped like
the current. :mod:`stcsnn.neurons.interop` adds the hidden-state protocol of SpikingJelly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from stcsnn.errors import StcsnnError, StcsnnTypeError
from stcsnn.neurons.base import Cell, check_state
from stcsnn.neurons.registry import build_neuron, get_spec, spiking_neurons


def build_layer(name: str, channels: int, dims: int | None = None, kernel_size: int | None = None, **options: Any
                ) -> NeuronLayer:
    """The registered spiking neuron ``name`` as a :class:`NeuronLayer` of ``channels`` channels.

    ``dims``: the currents' dimensions after (B, C) -- 0 for (B, C), 1 for (B, C, L), 2 for (B, C, H, W); the
    layer then refuses other ranks. An STC neuron's autapse is built for it (default 0: a grouped linear map;
    1 and 2: grouped k x 1 / k x k convolutions, 2 being the paper's) and needs ``channels`` a multiple of 16
    (its 16 groups); the other neurons are elementwise and take any (B, C, ...) current when ``dims`` is None.
    ``kernel_size`` (STC, ``dims`` 1 or 2): the autapse's kernel, odd, default 5. ``options``: as for
    :func:`stcsnn.neurons.registry.build_neuron` (``surrogate``, ``alpha``, ``gradient_detach``,
    ``input_gain``, ``train_gates``)."""
    spec = get_spec(name)
    if spec.is_ann:
        raise StcsnnError(f"{name!r} is an ANN baseline, not a spiking neuron: a neuron layer takes one of "
                          f"{', '.join(spiking_neurons())}")
    if dims is None and spec.is_stc:
        dims = 0
    if dims is not None and dims not in (0, 1, 2):
        raise StcsnnError(f"dims must be 0 (B, C), 1 (B, C, L) or 2 (B, C, H, W), got {dims!r}")
    if kernel_size is not None and not (spec.is_stc and dims):
        raise StcsnnError("kernel_size is the STC autapse's, for dims=1 or dims=2 "
                          f"(got {name!r} with dims={dims}: no convolution to size)")
    k = 5 if kernel_size is None else kernel_size
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise StcsnnError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    neuron = build_neuron(name, None, channels, k, dims=dims or 0, **options)
    return NeuronLayer(neuron, name, dims)


#: the current's shape for each ``dims``
SHAPES = {0: "(B, C)", 1: "(B, C, L)", 2: "(B, C, H, W)"}


def _as_4d(x: Tensor) -> Tensor:
    """(B, C) -> (B, C, 1, 1), (B, C, L) -> (B, C, L, 1), (B, C, H, W) unchanged (the view a neuron steps in; any
    other rank is flattened to (B, C, N, 1): only elementwise neurons take it)."""
    return x if x.dim() == 4 else x.reshape(x.shape[0], x.shape[1], -1, 1)


class NeuronLayer(nn.Module):
    """``spikes, state = layer(current, state=None)``; ``layer.multi_step(currents, state=None)`` over the first
    dimension. Built by :func:`build_layer`. ``fast``: the neuron's fused update where it has one (the same
    function, one autograd node per step); False: its ``update`` as written."""

    def __init__(self, neuron: Cell, name: str, dims: int | None) -> None:
        super().__init__()
        self.neuron = neuron
        self.name = name
        self.channels = neuron.hidden_channels
        #: the current's dimensions after (B, C) (an STC autapse is built for them); None: any
        self.dims = dims
        self.fast = True

    @property
    def State(self) -> type:  # (capitalised: the cells' name for their state class)
        return self.neuron.State

    def check_current(self, current: Any, what: str = "current") -> None:
        if not isinstance(current, Tensor):
            raise StcsnnTypeError(f"expected a torch.Tensor {what}, got {type(current).__name__}")
        if not current.is_floating_point():
            raise StcsnnTypeError(f"expected a floating-point {what}, got dtype {current.dtype}")
        if self.dims is not None and current.dim() != 2 + self.dims:
            raise StcsnnError(f"this {self.name} layer is built for {what}s of shape {SHAPES[self.dims]} "
                              f"(dims={self.dims}), got shape {tuple(current.shape)} (build_layer(..., dims="
                              f"{min(max(current.dim() - 2, 0), 2)}) for that rank)")
        if current.dim() < 2:
            raise StcsnnError(f"expected a {what} of shape (B, C, ...), got shape {tuple(current.shape)}")
        if current.shape[1] != self.channels:
            raise StcsnnError(f"expected a {what} with {self.channels} channels (dim 1), got {current.shape[1]} "
                              f"(shape {tuple(current.shape)})")

    def _state_in(self, state: Any, shape: tuple[int, ...]) -> NamedTuple:
        cls = self.State
        if not isinstance(state, cls) and isinstance(state, (tuple, list)) and len(state) == len(cls._fields):
            state = cls(*state)
        if isinstance(state, cls) and not all(isinstance(t, Tensor) for t in state):
            raise StcsnnTypeError(f"expected a {cls.__name__} of tensors, got {[type(t).__name__ for t in state]}")
        check_state(state, shape, cls)
        return cls(*(_as_4d(t) for t in state))

    def forward(self, current: Tensor, state: NamedTuple | None = None) -> tuple[Tensor, NamedTuple]:
        """One step: ``current`` (B, C, ...) -> ``(spikes, state)``, both shaped like ``current``."""
        self.check_current(current)
        shape = tuple(current.shape)
        if state is not None:
            state = self._state_in(state, shape)
        spikes, state = self.neuron.neuron_step(_as_4d(current), state, self.fast)
        return spikes.reshape(shape), type(state)(*(t.reshape(shape) for t in state))

    def multi_step(self, currents: Tensor, state: NamedTuple | None = None) -> tuple[Tensor, NamedTuple]:
        """``currents`` (T, B, C, ...) -> ``(spikes (T, B, C, ...), state after step T)``: the steps in order."""
        want = 3 if self.dims is None else 3 + self.dims
        if not isinstance(currents, Tensor) or currents.dim() < 3 or (self.dims is not None and currents.dim() != want):
            found = tuple(currents.shape) if isinstance(currents, Tensor) else type(currents).__name__
            shape = "(T, B, C, ...)" if self.dims is None else "(T, " + SHAPES[self.dims][1:]
            raise StcsnnError(f"expected currents of shape {shape}, got {found}")
        out = []
        for current in currents.unbind(0):
            spikes, state = self(current, state)
            out.append(spikes)
        return torch.stack(out), state

    def extra_repr(self) -> str:
        dims = "" if self.dims is None else f", dims={self.dims}"
        return f"{self.name!r}, {self.channels}{dims}"


__all__ = ["NeuronLayer", "build_layer"]
