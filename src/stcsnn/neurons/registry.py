"""Neurons by name: configs, the CLI, the analyses and the tests all iterate the same list.

Registration sits beside each definition (``@register_neuron("lif", "...")`` on the class, or
:func:`register_stc` for an STC composition ``STC(base)``), so adding a neuron is one file:

>>> @register_neuron("my_lif", "my leaky neuron")        # doctest: +SKIP
... class MyLIF(SpikingCell): ...
>>> cell = build_neuron("stc_lif", in_channels=4, hidden_channels=32, kernel_size=5)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stcsnn.errors import StcsnnError

COMMON_OPTIONS = ("surrogate", "alpha")


@dataclass(frozen=True)
class NeuronSpec:
    name: str
    description: str
    cls: type  # the neuron class (for an STC composition: its base neuron's class)
    is_stc: bool = False  # True: built as STC(cls(...)), the autaptic circuit around the base neuron

    @property
    def options(self) -> tuple[str, ...]:
        """The options beyond ``surrogate`` and ``alpha`` this neuron accepts."""
        extra = ("gradient_detach",) if self.is_stc else ()
        return tuple(self.cls.options) + extra

    @property
    def is_ann(self) -> bool:
        return bool(getattr(self.cls, "is_ann", False))


NEURONS: dict[str, NeuronSpec] = {}


def _add(spec: NeuronSpec) -> None:
    if spec.name in NEURONS:
        raise StcsnnError(f"neuron {spec.name!r} is already registered")
    NEURONS[spec.name] = spec


def register_neuron(name: str, description: str, cls: type | None = None) -> Callable:
    """Register a neuron class under ``name`` (also for user-defined neurons following the cell contract of
    :mod:`stcsnn.neurons.base`). Use as a class decorator, or call with ``cls``."""

    def decorate(c: type) -> type:
        _add(NeuronSpec(name, description, c))
        return c

    return decorate if cls is None else decorate(cls)


def register_stc(name: str, base: type, description: str) -> None:
    """Register ``STC(base(...))`` under ``name``: the STC circuit around a registered or any cell class."""
    _add(NeuronSpec(name, description, base, is_stc=True))


#: entry-point group through which installed packages add neurons (loaded when a name is not registered)
ENTRY_POINT_GROUP = "stcsnn.plugins"
_entry_points_loaded = False


def load_plugin(module: str) -> None:
    """Import ``module`` so that its ``@register_neuron`` / :func:`register_stc` calls run (the CLI's
    ``--plugin MODULE``). A plugin is code the user chose to run: configs only *name* neurons, they never import."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise StcsnnError(f"cannot import plugin {module!r}: {exc} (is its folder on PYTHONPATH?)") from None


def _load_entry_points() -> None:
    """Register the neurons of installed packages that declare an ``stcsnn.plugins`` entry point (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def get_spec(name: str) -> NeuronSpec:
    if name not in NEURONS:
        _load_entry_points()
    if name not in NEURONS:
        hint = difflib.get_close_matches(name, NEURONS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise StcsnnError(f"unknown neuron {name!r}{did_you_mean}: expected one of {', '.join(NEURONS)}")
    return NEURONS[name]


def list_neurons() -> list[tuple[str, str]]:
    """``[(name, one-line description), ...]`` in registration order."""
    return [(s.name, s.description) for s in NEURONS.values()]


def spiking_neurons() -> list[str]:
    """Names of the registered spiking neurons (every entry but the ANN baselines)."""
    return [s.name for s in NEURONS.values() if not s.is_ann]


def build_neuron(name: str, in_channels: int | None, hidden_channels: int, kernel_size: int = 5, *, dims: int = 2,
                 **options: Any):
    """Create a registered neuron. ``options``: ``surrogate``, ``alpha`` and the neuron's own options
    (``gradient_detach`` for STC neurons, ``input_gain`` for (STC-)PLIF, ``train_gates`` for (STC-)GLIF).
    An option the neuron does not have is an error. ``in_channels=None`` and ``dims`` (the STC autapse's
    spatial dimensions) are for :func:`stcsnn.neurons.layer.build_layer`: a spiking neuron without synapse."""
    spec = get_spec(name)
    unknown = set(options) - set(COMMON_OPTIONS) - set(spec.options)
    if unknown:
        valid = ", ".join(sorted(set(COMMON_OPTIONS) | set(spec.options)))
        raise StcsnnError(f"neuron {name!r} has no option {', '.join(sorted(unknown))}: expected one of {valid}")
    options = {k: v for k, v in options.items() if v is not None or k not in COMMON_OPTIONS}
    if spec.is_stc:
        from stcsnn.neurons.stc import STC

        detach = options.pop("gradient_detach", False)
        return STC(spec.cls(in_channels, hidden_channels, kernel_size, **options), gradient_detach=detach, dims=dims)
    return spec.cls(in_channels, hidden_channels, kernel_size, **options)
