"""Neurons by name: configs, the CLI and the tests all iterate the same list.

>>> cell = build_neuron("stc_lif", in_channels=4, hidden_channels=32, kernel_size=5)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stcsnn.errors import StcsnnError
from stcsnn.neurons.base import SpikingCell
from stcsnn.neurons.convlstm import ConvLSTMCell
from stcsnn.neurons.glif import GLIF
from stcsnn.neurons.lif import IF, LIF, PLIF
from stcsnn.neurons.lmh import LMH
from stcsnn.neurons.stc import STC, STCLIF, STCLMH, STCPLIF
from stcsnn.neurons.tclif import TCLIF


@dataclass(frozen=True)
class NeuronSpec:
    name: str
    description: str
    cls: type[SpikingCell]  # the neuron class (the base neuron for generic STC entries)
    generic_stc: bool = False  # True: built as STC(cls(...))

    @property
    def is_stc(self) -> bool:
        return self.generic_stc or self.name.startswith("stc_")

    @property
    def options(self) -> tuple[str, ...]:
        extra = ("gradient_detach",) if self.generic_stc else ()
        return tuple(self.cls.options) + extra


NEURONS: dict[str, NeuronSpec] = {}


def register_neuron(name: str, cls: type[SpikingCell], description: str, generic_stc: bool = False) -> None:
    """Add a neuron to the registry (also for user-defined neurons following the cell contract)."""
    if name in NEURONS:
        raise StcsnnError(f"neuron {name!r} is already registered")
    NEURONS[name] = NeuronSpec(name, description, cls, generic_stc)


register_neuron("if", IF, "integrate-and-fire: H = V[t-1] + I[t], soft reset")
register_neuron("lif", LIF, "leaky integrate-and-fire, tau = 2: H = 0.5 V[t-1] + 0.5 I[t]")
register_neuron("plif", PLIF, "parametric LIF: learnable scalar time constant sigmoid(w)")
register_neuron("glif", GLIF, "gated LIF (Yao et al. 2022): per-channel gates, leak, threshold, reset")
register_neuron("tclif", TCLIF, "two-compartment LIF (Zhang et al. 2024): dendrite + soma")
register_neuron("lmh", LMH, "learnable multi-hierarchical neuron (Hao et al. 2024)")
register_neuron("stc_lif", STCLIF, "STC-LIF: autaptic temporal and spatial gains on an IF neuron (the paper)")
register_neuron("stc_plif", STCPLIF, "STC-PLIF: the STC circuit on a parametric LIF")
register_neuron("stc_lmh", STCLMH, "STC-LM-H: the STC circuit on an LM-H neuron")
register_neuron("stc_glif", GLIF, "STC-GLIF: generic STC wrapper over GLIF", generic_stc=True)
register_neuron("stc_tclif", TCLIF, "STC-TC-LIF: generic STC wrapper over TC-LIF", generic_stc=True)
register_neuron("convlstm", ConvLSTMCell, "ANN baseline: ConvLSTM (Shi et al. 2015, as in OpenSTL), not spiking")


def get_spec(name: str) -> NeuronSpec:
    if name not in NEURONS:
        hint = difflib.get_close_matches(name, NEURONS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise StcsnnError(f"unknown neuron {name!r}{did_you_mean}: expected one of {', '.join(NEURONS)}")
    return NEURONS[name]


def list_neurons() -> list[tuple[str, str]]:
    """``[(name, one-line description), ...]`` in registration order."""
    return [(s.name, s.description) for s in NEURONS.values()]


def build_neuron(name: str, in_channels: int, hidden_channels: int, kernel_size: int = 5,
                 **options: Any) -> SpikingCell:
    """Create a registered neuron. ``options``: ``surrogate``, ``alpha`` and the neuron's own options
    (``gradient_detach`` for STC neurons, ``input_gain`` for (STC-)PLIF, ``train_gates`` for (STC-)GLIF).
    An option the neuron does not have is an error."""
    spec = get_spec(name)
    common = {"surrogate", "alpha"}
    unknown = set(options) - common - set(spec.options)
    if unknown:
        valid = ", ".join(sorted(common | set(spec.options)))
        raise StcsnnError(f"neuron {name!r} has no option {', '.join(sorted(unknown))}: expected one of {valid}")
    options = {k: v for k, v in options.items() if v is not None or k not in common}
    if spec.generic_stc:
        detach = options.pop("gradient_detach", False)
        return STC(spec.cls(in_channels, hidden_channels, kernel_size, **options), gradient_detach=detach)
    return spec.cls(in_channels, hidden_channels, kernel_size, **options)


def neuron_factory(name: str) -> Callable[..., SpikingCell]:
    """``neuron_factory("lif")(in_channels, hidden_channels, kernel_size, **options)``."""
    get_spec(name)
    return lambda *args, **kwargs: build_neuron(name, *args, **kwargs)
