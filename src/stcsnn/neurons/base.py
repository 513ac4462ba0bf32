"""The cell interface every neuron implements, and the pieces they share.

A cell maps one time step of input ``x`` (B, C_in, H, W) and its state to spikes and a new state::

    spike, state = cell(x, state)        # state=None means fresh zeros

which is ``current = cell.synapse(x)`` followed by ``cell.neuron_step(current, state)`` (the neuron's
``update``, or its fused update). Nothing is hidden in the module: the state is a NamedTuple the caller carries,
so there is no ``reset_net`` to forget. Built with ``in_channels=None`` a spiking neuron has no synapse and is
stepped on currents the caller computed (:func:`stcsnn.neurons.layer.build_layer`).

The generic STC wrapper (:class:`stcsnn.neurons.stc.STC`) relies on one more contract of ``update``:
``update(current, state, temporal_gain, spatial_gain)`` multiplies the membrane term carried over from the
past by ``temporal_gain`` and the input current by ``spatial_gain`` (both ``None`` means 1). Every state has a
field ``s``, the spikes of the previous step (the autapse's input). A user-defined neuron that follows this
contract becomes an STC neuron with ``STC(MyNeuron(...))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from stcsnn.errors import StcsnnError, StcsnnTypeError
from stcsnn.neurons.surrogate import Surrogate

#: GroupNorm groups used by every synapse and pathway (the reference implementation's choice).
GROUPS = 16


def gain(x: Tensor, g: Tensor | None) -> Tensor:
    """``x * g``, or ``x`` itself when there is no gain (keeps the plain neuron bit-exact)."""
    return x if g is None else x * g


class Synapse(nn.Module):
    """``I[t] = GN(Wx * X[t])``: a k x k convolution (stride 1, same padding, no bias) and GroupNorm(16)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, groups: int = GROUPS) -> None:
        super().__init__()
        check_channels(out_channels, groups, "hidden_channels")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise StcsnnError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(groups, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


def bool_option(name: str, value: Any) -> bool:
    """A neuron option that must be ``true`` or ``false`` (YAML booleans), else one clear error."""
    if not isinstance(value, bool):
        raise StcsnnError(f"{name} must be true or false, got {value!r}")
    return value


def check_channels(channels: int, groups: int, what: str) -> None:
    if channels <= 0 or channels % groups:
        raise StcsnnError(f"{what} must be a positive multiple of {groups} (GroupNorm groups), got {channels}")


def check_input(x: Any, in_channels: int) -> None:
    """Raise a clear error unless ``x`` is a floating (B, in_channels, H, W) tensor."""
    if not isinstance(x, Tensor):
        raise StcsnnTypeError(f"expected a torch.Tensor input, got {type(x).__name__}")
    if not x.is_floating_point():
        raise StcsnnTypeError(f"expected a floating-point input tensor, got dtype {x.dtype}")
    if x.dim() != 4:
        raise StcsnnError(f"expected input of shape (B, C, H, W) (rank 4), got rank {x.dim()} {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise StcsnnError(f"expected input with {in_channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")


def check_state(state: NamedTuple, expected_shape: tuple[int, ...], cls: type) -> None:
    if not isinstance(state, cls):
        raise StcsnnTypeError(f"expected a {cls.__name__} state, got {type(state).__name__}")
    for name, t in zip(state._fields, state):
        if tuple(t.shape) != expected_shape:
            raise StcsnnError(
                f"state field {name!r} has shape {tuple(t.shape)}, expected {expected_shape} "
                "(a state from another input size or another cell?)"
            )


class Cell(nn.Module):
    """The contract every cell of the predictor follows (spiking neurons and the ANN baselines alike).

    A subclass sets ``in_channels``, ``hidden_channels``, ``kernel_size``, a ``synapse`` module (input ->
    current), ``State`` (a NamedTuple with a field ``s``: the output passed to the next layer) and ``update``.
    """

    State: type = NamedTuple  # overridden by subclasses
    #: Options a subclass accepts beyond the common ones (used by the registry to validate configs).
    options: tuple[str, ...] = ()
    #: The state field that is "the membrane potential" (read by the gradient and dynamics analyses).
    membrane: str = "v"
    #: True for cells that do not spike (ANN baselines): the analyses and energy counter check this.
    is_ann: bool = False

    def init_state(self, current: Tensor) -> NamedTuple:
        """Fresh zero state shaped like ``current`` (B, hidden, H, W)."""
        zero = torch.zeros_like(current)
        return self.State(*([zero] * len(self.State._fields)))

    def update(
        self,
        current: Tensor,
        state: NamedTuple,
        temporal_gain: Tensor | None = None,
        spatial_gain: Tensor | None = None,
    ) -> tuple[Tensor, NamedTuple]:
        raise NotImplementedError

    def fused_update(self, current: Tensor, state: NamedTuple, pathways: Tensor | None
                     ) -> tuple[Tensor, NamedTuple]:
        """Optional: ``update`` as one autograd node with a hand-written backward (see
        :mod:`stcsnn.neurons.fusion`); ``pathways`` is an STC wrapper's autapse output before tanh (else None).
        A neuron that defines it must compute exactly what its ``update`` computes."""
        raise NotImplementedError(f"{type(self).__name__} has no fused update")

    def has_fused_update(self) -> bool:
        """True when :meth:`fused_update` computes what :meth:`update` does: the class that defines the fused
        update also defines the update in use. A subclass that overrides ``update`` only, or an instance whose
        ``update`` was replaced (``torch.compile``), runs its own ``update``."""
        if "update" in vars(self):
            return False
        mro = type(self).__mro__
        fused_owner = next(k for k in mro if "fused_update" in vars(k))
        update_owner = next(k for k in mro if "update" in vars(k))
        return fused_owner is update_owner and fused_owner is not Cell

    def neuron_step(self, current: Tensor, state: NamedTuple | None, fast: bool = False, conv=None, norm=None
                    ) -> tuple[Tensor, NamedTuple]:
        """The neuron applied to a current (B, hidden, H, W) it did not compute: ``update``, or with ``fast`` the
        fused update where the cell has one (an STC cell's pathways computed here, ``conv``/``norm`` passed to
        :meth:`stcsnn.neurons.stc.Autapse.signals`). The one place a step is taken: :meth:`forward` (after the
        synapse), the predictor's paths and :class:`stcsnn.neurons.layer.NeuronLayer` all call it."""
        if state is None:
            state = self.init_state(current)
        if fast and self.has_fused_update():
            autapse = getattr(self, "autapse", None)
            pathways = None if autapse is None else autapse.signals(state.s, conv, norm)
            return self.fused_update(current, state, pathways)
        return self.update(current, state)

    def forward(self, x: Tensor, state: NamedTuple | None = None) -> tuple[Tensor, NamedTuple]:
        if self.synapse is None:
            raise StcsnnError(f"this {type(self).__name__} has no synapse (a neuron layer): call it through "
                              "stcsnn.neurons.build_layer with a current")
        check_input(x, self.in_channels)
        current = self.synapse(x)
        if state is not None:
            b, _, h, w = current.shape
            check_state(state, (b, self.hidden_channels, h, w), self.State)
        return self.neuron_step(current, state)

    def extra_repr(self) -> str:
        if self.in_channels is None:
            return f"{self.hidden_channels}, no synapse"
        return f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}"


class SpikingCell(Cell):
    """Base class of the spiking neurons: owns the synapse and the surrogate; subclasses define ``State`` and
    ``update`` (and optionally ``fused_update``). ``in_channels=None``: no synapse -- the neuron alone, stepped
    on a current the caller computed (what :func:`stcsnn.neurons.layer.build_layer` wraps)."""

    def __init__(
        self,
        in_channels: int | None,
        hidden_channels: int,
        kernel_size: int = 5,
        surrogate: str = "sigmoid",
        alpha: float | None = None,
        strict_threshold: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        if in_channels is None:
            if not isinstance(hidden_channels, int) or hidden_channels < 1:
                raise StcsnnError(f"channels must be a positive integer, got {hidden_channels!r}")
            self.synapse = None
        else:
            self.synapse = Synapse(in_channels, hidden_channels, kernel_size)
        self.spike_fn = Surrogate(surrogate, alpha, strict=strict_threshold)
